"""Real services for the system tests and the benchmarks: PostgreSQL clusters, sshd, module runs.

Plain classes and functions (no pytest) so that scripts/bench uses exactly what the tests use.
Everything listens on 127.0.0.1 or on unix sockets in temporary directories.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PGBIN = Path("/usr/lib/postgresql/15/bin")
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



class SshServer:
    """OpenSSH's sshd on a loopback port with key authentication (a context manager)."""

    def __init__(self, workdir: Path, use_pam=False):
        # PAM lets a locked system account (postgres: '!' password) log in with a key; without
        # PAM, sshd refuses locked accounts.
        self.use_pam = use_pam
        self.dir = Path(workdir)
        self.port = free_port()
        self.proc = None

    def __enter__(self):
        d = self.dir
        for key in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
        shutil.copy(d / "client_key.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {d}/host_key
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM {"yes" if self.use_pam else "no"}
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
""")
        # The key files must be readable by sshd only; the directory by any user logging in.
        d.chmod(0o755)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((d / "sshd.log").read_text())
                time.sleep(0.1)

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def inventory_vars(self, user):
        return (f"ansible_host=127.0.0.1 ansible_port={self.port} ansible_user={user} "
                f"ansible_ssh_private_key_file={self.dir}/client_key "
                "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'")
