"""System tests: real PostgreSQL, pg_auto_failover, sshd and ansible-playbook on this machine.

Everything listens on 127.0.0.1 or on unix sockets in temporary directories. Expensive things
(the installed collection, the formation, sshd) are session- or module-scoped and shared by the
tests that only read them; tests that change them (switchover, stopping the monitor) run in order
in one module and put things back.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PGBIN = Path("/usr/lib/postgresql/15/bin")
MODULES = ["pg_role_detect"]


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*cmd, check=True, **kw):
    """Run a command as the postgres OS user."""
    return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=check, text=True,
                          capture_output=True, **kw)


def scratch_dir(prefix):
    """A temporary directory the postgres user can use (short path: unix sockets live there)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    shutil.chown(path, "postgres", "postgres")
    path.chmod(0o755)
    return path


class Cluster:
    """A PostgreSQL 15 server run by the test: data dir and socket in a temp dir, loopback port."""

    def __init__(self, base: Path, name: str, port: int):
        self.base, self.name, self.port = base, name, port
        self.pgdata = base / name
        self.socket_dir = base

    def initdb(self):
        as_postgres(PGBIN / "initdb", "-D", self.pgdata, "--auth-local=peer", "--auth-host=scram-sha-256",
                    "-U", "postgres", "--no-sync")
        self._configure()
        return self

    def _configure(self):
        with open(self.pgdata / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.socket_dir}'\nfsync = off\n")

    def basebackup_from(self, primary: "Cluster"):
        """A streaming standby of `primary` (pg_basebackup -R)."""
        as_postgres(PGBIN / "pg_basebackup", "-D", self.pgdata, "-h", primary.socket_dir, "-p", primary.port,
                    "-U", "postgres", "-R", "--no-sync", "-c", "fast")
        self._configure()
        return self

    def start(self):
        as_postgres(PGBIN / "pg_ctl", "-D", self.pgdata, "-l", self.base / f"{self.name}.log", "-w", "start")
        return self

    def stop(self):
        as_postgres(PGBIN / "pg_ctl", "-D", self.pgdata, "-m", "fast", "-w", "stop", check=False)

    def psql(self, sql):
        return as_postgres(PGBIN / "psql", "-h", self.socket_dir, "-p", self.port, "-U", "postgres", "-d", "postgres",
                           "-XAtqc", sql).stdout.strip()


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
    """Path of an installed module binary (the release build, as shipped)."""
    def path(name):
        return collections_path / "ansible_collections/veza/pgbackrest/plugins/modules/__bin" / name
    return path


def run_module(binary, args, env=None, stdin_mode=False):
    """Run a module binary as Ansible does (argv[1] = arguments file); returns (rc, result)."""
    full_env = {**os.environ, **(env or {})}
    if stdin_mode:
        proc = subprocess.run([str(binary)], input=json.dumps(args), capture_output=True, text=True, env=full_env)
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(args, f)
            f.flush()
            proc = subprocess.run([str(binary), f.name], capture_output=True, text=True, env=full_env,
                                  stdin=subprocess.DEVNULL)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected, got stdout={proc.stdout!r} stderr={proc.stderr!r}"
    return proc.returncode, json.loads(lines[0])


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
        }

    def adhoc(self, module, args="", extra=(), env=None):
        """`ansible localhost -m MODULE -a ARGS`: returns (rc, {host: result}, output)."""
        cmd = ["ansible", "localhost", "-m", module, *(["-a", args] if args else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=self.workdir)
        return proc.returncode, parse_minimal(proc.stdout), proc.stdout + proc.stderr

    def playbook(self, playbook: str, inventory=None, extra=(), env=None, name="play.yml"):
        """Run a playbook given as YAML text; returns (rc, output)."""
        path = self.workdir / name
        path.write_text(playbook)
        cmd = ["ansible-playbook", str(path), *(["-i", str(inventory)] if inventory else []), *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**self.env, **(env or {})}, cwd=self.workdir)
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
    """A real OpenSSH server on a loopback port, key authentication for root; yields an inventory line."""
    d = tmp_path_factory.mktemp("sshd")
    port = free_port()
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    shutil.copy(d / "client_key.pub", d / "authorized_keys")
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, (d / "sshd.log").read_text()
            time.sleep(0.1)
    yield (f"ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
           f"ansible_ssh_private_key_file={d}/client_key "
           "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'")
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def pair():
    """A plain primary and its streaming standby (pg_basebackup -R), peer auth on the socket."""
    base = scratch_dir("vz-pair-")
    primary = Cluster(base, "primary", free_port()).initdb().start()
    primary.psql("CREATE ROLE monitor LOGIN PASSWORD 'monitor-pw-canary-4b1d'")
    standby = Cluster(base, "standby", free_port()).basebackup_from(primary).start()
    yield primary, standby
    standby.stop()
    primary.stop()
    shutil.rmtree(base, ignore_errors=True)


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
