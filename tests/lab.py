"""The lab of real hosts (scripts/lab) for the tests: one lab per test session, brought up by the
`lab` fixture of conftest.py and shared by the files that use it (test_lab_hosts.py, then
test_lab_network.py, whose last test destroys it and checks for leftovers)."""

import shlex
import subprocess
from pathlib import Path

from harness import REPO

LAB = REPO / "scripts" / "lab"
NAMES = ["vz-lab-monitor", "vz-lab-node1", "vz-lab-node2"]
NODES = ["vz-lab-node1", "vz-lab-node2"]
ADDR = {"vz-lab-monitor": "198.18.0.10", "vz-lab-node1": "198.18.0.11",
        "vz-lab-node2": "198.18.0.12"}
INVENTORY = REPO / "playbooks" / "inventories" / "lab-hosts"
MONITOR_PGDATA = "/var/lib/postgresql/15/monitor"


def run(*args, check=True, timeout=600, **kw):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True,
                          timeout=timeout, **kw)


def incus(*args, check=True):
    return run("incus", *args, check=check)


def parse_env(text):
    """`scripts/lab env` output (NAME='value' lines) as a dict."""
    env = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 1 and "=" in words[0]:
            name, value = words[0].split("=", 1)
            env[name] = value
    return env


class Lab:
    """A lab that `scripts/lab up` brought up in `dir`."""

    def __init__(self, work: Path, ip_forward_before: str):
        self.work = work
        self.dir = work / "lab"
        self.ip_forward_before = ip_forward_before
        self.up_result = run(LAB, "up", self.dir, check=False, timeout=1200)
        self.env = parse_env(self.up_result.stdout) if self.up_result.returncode == 0 else {}

    def ssh(self, host, command, check=True, timeout=120):
        return run("ssh", "-F", self.env["LAB_SSH_CONFIG"], host, command, check=check,
                   timeout=timeout)

    def as_postgres(self, host, *argv, check=True, timeout=300):
        """argv as postgres on a lab host, through Incus (no shell)."""
        uid, gid = (run("id", flag, "postgres").stdout.strip() for flag in ("-u", "-g"))
        return incus("exec", host, "--user", uid, "--group", gid, "--cwd", "/var/lib/postgresql",
                     "--env", "HOME=/var/lib/postgresql", "--", *argv, check=check)

    def destroy(self):
        return run(LAB, "destroy", self.dir, check=False)
