"""The lab of real hosts (scripts/lab) for the tests: one lab per test session, brought up by the
`lab` fixture of conftest.py and shared by the files that use it (test_lab_hosts.py, then
test_lab_network.py, whose last test destroys it and checks for leftovers)."""

import shlex
import subprocess
from pathlib import Path

import yaml

from harness import CANARIES, REPO

LAB = REPO / "scripts" / "lab"
NAMES = ["vz-lab-monitor", "vz-lab-node1", "vz-lab-node2"]
NODES = ["vz-lab-node1", "vz-lab-node2"]
ADDR = {"vz-lab-monitor": "198.18.0.10", "vz-lab-node1": "198.18.0.11",
        "vz-lab-node2": "198.18.0.12"}
INVENTORY = REPO / "playbooks" / "inventories" / "lab-hosts"
MONITOR_PGDATA = "/var/lib/postgresql/15/monitor"


def vault_secrets(inventory):
    """The values of an inventory's vault.yml, registered as secret canaries: no output of the
    suite may hold them (this read itself is not scanned: it prints them by design)."""
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file",
                          inventory / "vault-password", inventory / "group_vars/all/vault.yml"],
                         check=True, capture_output=True, text=True).stdout
    values = list(yaml.safe_load(out).values())
    assert values and all(len(v) >= 16 for v in values), "the vault holds real-looking secrets"
    return [CANARIES.register(v, f"vault {inventory.name}") for v in values]


#: The lab's secrets (cipher pass, S3 key pair).
LAB_SECRETS = vault_secrets(INVENTORY)


def run(*args, check=True, timeout=600, **kw):
    """A command; what it prints is scanned for the secret canaries."""
    proc = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True,
                          timeout=timeout, **kw)
    CANARIES.scan(proc.stdout + proc.stderr, f"lab: {Path(str(args[0])).name}")
    if check:
        proc.check_returncode()
    return proc


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
