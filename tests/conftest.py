"""System tests: real PostgreSQL, pg_auto_failover, sshd and ansible-playbook on this machine.

Expensive things (the installed collection, the formation, sshd) are session- or module-scoped
and shared by the tests that only read them; tests that change them (switchover, stopping the
monitor) run in order in one module and put things back. The services themselves are in harness.py.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import CANARIES, MONITOR_PASSWORD, REPO, BackedUpCluster, Cluster, SshServer, free_port, scratch_dir
from lab import Lab

MODULES = ["dr_drill", "pg_alter_system", "pg_role_detect", "pgbackrest_archive_health", "pgbackrest_config",
           "pgbackrest_info", "pgbackrest_schedule", "pgbackrest_stanza"]


# The secret canaries (harness.CANARIES): the wrappers above and in harness scan what modules,
# ansible and commands print; these hooks scan what each test printed or logged (pytest's capture)
# and its failure report, fail the test on a hit, and end the session with the totals.
@pytest.fixture(autouse=True)
def secret_canaries():
    """Fails the test when an output scanned during it held a canary."""
    before = len(CANARIES.hits)
    yield
    hits = CANARIES.hits[before:]
    assert not hits, f"secret canaries in outputs (where, which): {hits}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    text = "".join(content for _, content in report.sections) + (report.longreprtext or "")
    hits = CANARIES.scan(text, f"{item.nodeid} ({report.when}: captured output and report)")
    if hits:
        report.outcome = "failed"
        report.longrepr = f"secret canaries {hits} in the captured output or the report of {item.nodeid}"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(
        f"secret canaries: {len(CANARIES.values)} canaries, {CANARIES.scanned} outputs scanned, "
        f"{len(CANARIES.hits)} hits" + "".join(f"\n  hit: {w} ({label})" for w, label in CANARIES.hits))


def pytest_sessionfinish(session):
    if CANARIES.hits:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def tarball():
    """The collection tarball: built by scripts/build-collection (once per run)."""
    given = os.environ.get("VEZA_COLLECTION_TARBALL")
    if given:
        return Path(given)
    out = subprocess.run([REPO / "scripts" / "build-collection"], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def collections_path(tarball, tmp_path_factory):
    """The tarball installed offline into a fresh collections path."""
    path = tmp_path_factory.mktemp("collections")
    subprocess.run(["ansible-galaxy", "collection", "install", str(tarball), "-p", str(path)], check=True,
                   capture_output=True, text=True)
    return path


@pytest.fixture(scope="session")
def module_bin(collections_path):
    """Path of an installed module binary (the release build for this machine, as shipped): the
    file that plugins/modules/NAME points to."""
    def path(name):
        return (collections_path / "ansible_collections/veza/pgbackrest/plugins/modules" / name).resolve()
    return path


class Ansible:
    """ansible / ansible-playbook with the installed collection and a quiet, parseable setup."""

    def __init__(self, collections_path: Path, workdir: Path):
        self.workdir = workdir
        self.env = {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_LOCALHOST_WARNING": "False",
            "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
            # This run's own SSH control sockets, not a shared ~/.ansible/cp.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp"),
        }

    def adhoc(self, module, args="", extra=(), env=None):
        """`ansible localhost -m MODULE -a ARGS`: returns (rc, {host: result}, output)."""
        cmd = ["ansible", "localhost", "-m", module, *(["-a", args] if args else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=self.workdir)
        CANARIES.scan(proc.stdout + proc.stderr, f"ansible -m {module}")
        return proc.returncode, parse_minimal(proc.stdout), proc.stdout + proc.stderr

    def run(self, *args, env=None):
        """Any ansible command line (ansible-playbook PATH ...); returns (rc, output)."""
        proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              env={**self.env, **(env or {})}, cwd=self.workdir)
        CANARIES.scan(proc.stdout + proc.stderr, str(args[0]))
        return proc.returncode, proc.stdout + proc.stderr

    def playbook(self, playbook: str, inventory=None, extra=(), env=None, name="play.yml"):
        """Run a playbook given as YAML text; returns (rc, output)."""
        path = self.workdir / name
        path.write_text(playbook)
        cmd = ["ansible-playbook", str(path), *(["-i", str(inventory)] if inventory else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=self.workdir)
        CANARIES.scan(proc.stdout + proc.stderr, f"ansible-playbook {name}")
        return proc.returncode, proc.stdout + proc.stderr


HOST_RESULT = re.compile(r"^(\S+) \| (SUCCESS|CHANGED|FAILED!|UNREACHABLE!|SKIPPED) => ", re.M)


def parse_minimal(stdout):
    """Results of the `minimal` callback (ad-hoc default): `host | STATUS => {json}` blocks."""
    results = {}
    matches = list(HOST_RESULT.finditer(stdout))
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(stdout)
        block = stdout[m.end():end]
        results[m.group(1)] = json.JSONDecoder().raw_decode(block.lstrip())[0]
    return results


@pytest.fixture(scope="session")
def ansible(collections_path, tmp_path_factory):
    return Ansible(collections_path, tmp_path_factory.mktemp("ansible"))


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on a loopback port; yields the inventory variables to log in as root."""
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server.inventory_vars("root")


@pytest.fixture(scope="session")
def drill_image():
    """Incus up (scripts/incus-up) and the drill image imported (scripts/drill-image, cached by
    its inputs): returns the image alias."""
    subprocess.run([REPO / "scripts" / "incus-up"], check=True, capture_output=True, text=True)
    out = subprocess.run([REPO / "scripts" / "drill-image"], check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def lab_work():
    """The session's scratch directory for the lab of real hosts (one lab per machine: the lab
    tests and the molecule scenarios take turns in it); the lab is destroyed at the end."""
    work = Path(tempfile.mkdtemp(prefix="vz-lab-", dir="/tmp"))
    yield work
    subprocess.run([REPO / "scripts" / "lab", "destroy", work / "lab"], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_dir(lab_work):
    """The lab's DIR (scripts/lab up DIR)."""
    return lab_work / "lab"


@pytest.fixture(scope="session")
def lab(lab_work):
    """The lab of real hosts (scripts/lab up), once per session (test_lab_network.py destroys it
    itself and checks for leftovers)."""
    the_lab = Lab(lab_work, Path("/proc/sys/net/ipv4/ip_forward").read_text().strip())
    up = the_lab.up_result
    assert up.returncode == 0, f"scripts/lab up failed:\n{up.stderr}"
    return the_lab


@pytest.fixture(scope="module")
def pair():
    """A plain primary and its streaming standby (pg_basebackup -R), peer auth on the socket."""
    base = scratch_dir("vz-pair-")
    primary = Cluster(base, "primary", free_port()).initdb().start()
    primary.psql(f"CREATE ROLE monitor LOGIN PASSWORD '{MONITOR_PASSWORD}'")
    standby = Cluster(base, "standby", free_port()).basebackup_from(primary).start()
    yield primary, standby
    standby.stop()
    primary.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def repo_setup():
    """A cluster with a posix pgBackRest repository, a full backup and later WAL, for restore
    drills (harness.BackedUpCluster: stanza, row counts): a dict of base, conf, repo, cluster and
    target (the recorded point in time)."""
    with BackedUpCluster() as b:
        yield {"base": b.base, "conf": b.conf, "repo": b.repo, "cluster": b.cluster, "target": b.target}


class Formation:
    """A pg_auto_failover formation made by scripts/lab-formation (monitor + node1 + node2)."""

    def __init__(self, base: Path):
        self.base = base
        self.script = REPO / "scripts" / "lab-formation"

    def __call__(self, *args, check=True):
        return subprocess.run([str(self.script), *map(str, args)], check=check, capture_output=True, text=True)

    def env(self):
        """The formation's variables (lab-formation env)."""
        out = self("env", self.base).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line and not line.startswith("#"))

    def pgdata(self, n):
        return str(self.base / f"node{n}")

    def xdg(self):
        """pg_autoctl keeps the lab's keeper configs here: modules need the same environment."""
        return {k[len("LAB_"):]: v.strip("'\"") for k, v in self.env().items() if k.startswith("LAB_XDG_")}

    def switchover(self):
        self("exec", self.base, "pg_autoctl", "perform", "switchover", "--pgdata", self.pgdata(1))


@pytest.fixture(scope="module")
def formation():
    base = scratch_dir("vz-fmn-")
    f = Formation(base)
    f("up", base, free_port_block())
    yield f
    f("destroy", base, check=False)


def free_port_block(size=3, start=6100, stop=6900):
    """A base port with `size` consecutive free loopback ports after it."""
    for base in range(start, stop, 10):
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError("no free port block")


def _port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
