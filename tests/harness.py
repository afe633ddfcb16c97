"""Real services for the system tests and the benchmarks: PostgreSQL clusters, a pgBackRest
repository with a backup to restore, sshd, an S3 endpoint, node_exporter and Prometheus, module runs.

Plain classes and functions (no pytest) so that scripts/bench uses exactly what the tests use.
Everything listens on 127.0.0.1 or on unix sockets in temporary directories.
"""

import contextlib
import hashlib
import json
import os
import secrets
import selectors
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PGBIN = Path("/usr/lib/postgresql/15/bin")
CACHE = Path(os.environ.get("VEZA_CACHE_DIR", "/var/cache/veza-pgbackrest"))


def free_port():
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*cmd, check=True, scan=True, **kw):
    """Run a command as the postgres OS user. Its output is scanned for secret canaries unless
    `scan=False` (reading back a file that holds a secret on purpose)."""
    proc = subprocess.run(["runuser", "-u", "postgres", "--", *map(str, cmd)], check=check, text=True,
                          capture_output=True, **kw)
    if scan:
        CANARIES.scan(f"{proc.stdout}{proc.stderr}", f"as_postgres {Path(str(cmd[0])).name}")
    return proc


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

    def initdb(self, *options):
        """initdb, then the loopback settings; `options` go to initdb (e.g. --data-checksums)."""
        as_postgres(PGBIN / "initdb", "-D", self.pgdata, "--auth-local=peer", "--auth-host=scram-sha-256",
                    "-U", "postgres", "--no-sync", *options)
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


def write_pgbackrest_config(path: Path, base: Path, repo: Path, cluster: Cluster, stanza: str):
    """A pgBackRest config for `stanza` of `cluster` with a posix repository at `repo`; locks and
    logs under `base`. Readable by postgres only (0640), as a real one holding secrets would be."""
    path.write_text(f"""[global]
repo1-path={repo}
lock-path={base}/lock
log-path={base}/log
log-level-file=off
start-fast=y

[{stanza}]
pg1-path={cluster.pgdata}
pg1-socket-path={cluster.socket_dir}
pg1-port={cluster.port}
""")
    shutil.chown(path, "postgres", "postgres")
    path.chmod(0o640)


@contextlib.contextmanager
def repository_copy(repo: Path, cluster: Cluster, stanza: str):
    """A copy of a posix repository and a config for it (yields (repo, conf)): tests damage the
    copy, never the original. Removed afterwards."""
    base = scratch_dir("vz-repo-copy-")
    try:
        copy = base / "repo"
        shutil.copytree(repo, copy, symlinks=True)
        subprocess.run(["chown", "-R", "postgres:postgres", str(copy)], check=True)
        conf = base / "pgbackrest.conf"
        write_pgbackrest_config(conf, base, copy, cluster, stanza)
        yield copy, conf
    finally:
        shutil.rmtree(base, ignore_errors=True)


class BackedUpCluster:
    """What a restore drill restores (a context manager): a PostgreSQL 15 cluster archiving into a
    posix pgBackRest repository, with a full backup and later WAL.

    After the full backup (ROWS_IN_BACKUP rows in `users`), batch A (ROWS_A rows) commits, then
    `target` is recorded, then batch B (ROWS_B rows), all only in WAL. So a latest restore counts
    TOTAL users (the later ones from WAL replay alone) and one to `target` exactly
    ROWS_IN_BACKUP + ROWS_A. Attributes once entered: base, conf, repo, cluster, target.
    """

    STANZA = "drill"
    ROWS_IN_BACKUP, ROWS_A, ROWS_B = 3, 2, 3
    TOTAL = ROWS_IN_BACKUP + ROWS_A + ROWS_B

    def __init__(self):
        self.base = self.conf = self.repo = self.cluster = self.target = None

    def __enter__(self):
        self.base = scratch_dir("vz-drill-")
        try:
            self._build()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _build(self):
        base = self.base
        self.repo = base / "repo"
        self.repo.mkdir()
        shutil.chown(self.repo, "postgres", "postgres")
        self.conf = conf = base / "pgbackrest.conf"
        self.cluster = cluster = Cluster(base, "pg", free_port()).initdb()
        write_pgbackrest_config(conf, base, self.repo, cluster, self.STANZA)
        with open(cluster.pgdata / "postgresql.conf", "a") as f:
            f.write(f"archive_mode = on\narchive_command = "
                    f"'pgbackrest --config={conf} --stanza={self.STANZA} archive-push %p'\n")
        cluster.start()
        pgb = lambda *a: as_postgres("pgbackrest", f"--config={conf}", f"--stanza={self.STANZA}", *a)
        pgb("stanza-create")
        cluster.psql(f"CREATE TABLE users (id serial PRIMARY KEY, name text); "
                     f"INSERT INTO users (name) SELECT 'b' || g FROM generate_series(1, {self.ROWS_IN_BACKUP}) g")
        pgb("--type=full", "backup")
        cluster.psql(f"INSERT INTO users (name) SELECT 'a' || g FROM generate_series(1, {self.ROWS_A}) g")
        time.sleep(1.1)
        self.target = cluster.psql("SELECT now()")
        time.sleep(1.1)
        cluster.psql(f"INSERT INTO users (name) SELECT 'c' || g FROM generate_series(1, {self.ROWS_B}) g")
        pgb("check")  # switches WAL and waits until it is archived

    def __exit__(self, *exc):
        if self.cluster is not None:
            self.cluster.stop()
        shutil.rmtree(self.base, ignore_errors=True)


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
    CANARIES.scan(proc.stdout + proc.stderr, f"module {Path(str(binary)).name}")
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


class Secret(str):
    """A credential: the plain value for files and f-strings, masked by repr().

    repr() is what pytest's assertion messages and tracebacks show, so a failed assert on a
    secret, or on a dict holding one, does not print it.
    """

    def __repr__(self):
        return "Secret('********')"


class Canaries:
    """Every secret the tests use, and every output scanned for them (the secret-canary check of
    the whole suite, issue #15). A secret is made here (`canary`) or registered here (`register`);
    run_module, as_postgres and conftest's Ansible runner pass what they capture to `scan`, and
    conftest scans each test's captured output and failure report too. A hit fails the test it
    happened in; the session ends with the totals."""

    def __init__(self):
        self.values = set()
        self.scanned = 0
        self.hits = []  # (where, which canary's label), never the value itself
        self.labels = {}

    def canary(self, label, size=12):
        """A new secret: `canary-LABEL-` and random hex (distinctive, and no placeholder word)."""
        return self.register(f"canary-{label}-{secrets.token_hex(size)}", label)

    def register(self, value, label="registered"):
        value = Secret(value)
        self.values.add(str(value))
        self.labels[str(value)] = label
        return value

    def scan(self, text, where):
        """Count one output and record the canaries it holds; returns the labels of the hits."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.scanned += 1
        found = [self.labels[v] for v in self.values if v in (text or "")]
        self.hits.extend((where, label) for label in found)
        return found


CANARIES = Canaries()
canary = CANARIES.canary

# The monitor role's password on the test clusters (conftest's `pair`, test_collection_build).
MONITOR_PASSWORD = canary("monitor-pw")


def s3rver_modules():
    """The node_modules of the s3rver pinned by tests/s3, as scripts/setup installs it (same key)."""
    lock = REPO / "tests" / "s3"
    key = hashlib.sha256((lock / "package.json").read_bytes() + (lock / "package-lock.json").read_bytes())
    path = CACHE / "npm" / f"s3rver-{key.hexdigest()[:16]}" / "node_modules"
    if not (path / "s3rver" / "package.json").is_file():
        raise RuntimeError(f"s3rver is not installed at {path}: run scripts/setup")
    return path


class S3Server:
    """An S3 endpoint over TLS on 127.0.0.1: s3rver (tests/s3/serve.js), a context manager.

    In `workdir` it makes a throwaway CA and a certificate for DNS:localhost signed by it, the
    server's data directory and its request log (s3rver.log). The buckets exist when `with`
    enters. The key pair is random per instance and reaches the server on its stdin; the
    server checks SigV4 signatures and the region, and refuses anonymous requests.
    pgBackRest reads `ca_file` as the postgres user: `workdir` must be traversable by it
    (harness.scratch_dir). Nothing here prints the keys; `access_key` and `secret_key` are
    `Secret`s, masked by repr().
    """

    host = "localhost"  # pgBackRest ignores IP SANs: the endpoint must be a DNS name

    # Global options (pgBackRest has no per-repository timeout; they may also go in a stanza
    # section). pgBackRest tries an unreachable endpoint for 4 x io-timeout (default 60 s:
    # 240 s for an `info`); 3 s makes that 12 s and is still far above s3rver's answer times
    # here, even with the two cores busy.
    PGBACKREST_TIMEOUTS = {"io-timeout": "3"}

    def __init__(self, workdir: Path, buckets=("pgbackrest",), region="us-east-1"):
        self.dir = Path(workdir)
        self.buckets = tuple(buckets)
        self.bucket = self.buckets[0]
        self.region = region
        # 20 characters, like AWS's; pgBackRest treats it as secure: a canary like the secret key.
        self.access_key = CANARIES.register("VZ" + secrets.token_hex(9).upper(), "s3-access-key")
        self.secret_key = canary("s3-secret-key", 13)  # 40 characters, like AWS's
        self.ca_file = self.dir / "ca.crt"
        self.data_dir = self.dir / "data"
        self.log_file = self.dir / "s3rver.log"
        self.port = None
        self.proc = None

    @property
    def endpoint(self):
        """https://localhost:PORT"""
        return f"https://{self.host}:{self.port}"

    def __enter__(self):
        modules = s3rver_modules()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self._make_certificates()
        self.data_dir.mkdir(exist_ok=True)
        args = ["node", str(REPO / "tests" / "s3" / "serve.js"), "--directory", str(self.data_dir),
                "--cert", str(self.dir / "server.crt"), "--key", str(self.dir / "server.key"),
                "--region", self.region, "--port", "0"]
        for bucket in self.buckets:
            args += ["--bucket", bucket]
        with open(self.log_file, "ab") as log:
            # Port 0: the server picks a free port and reports it, so no other process can take it
            # between our choice and its bind. stdin stays open: its end stops the server, also
            # when this process dies without calling stop().
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env={**os.environ, "NODE_PATH": str(modules)})
        try:
            self.proc.stdin.write(json.dumps({"accessKeyId": self.access_key,
                                              "secretAccessKey": self.secret_key}).encode() + b"\n")
            self.proc.stdin.flush()
            self.port = json.loads(self._ready_line(timeout=30))["port"]
            self._check_tls()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Stop the server (closing its stdin) and reap it; safe to call twice."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc = None

    def pgbackrest_options(self, repo=1, path="/pgbackrest"):
        """The `repoN-*` options for this endpoint, secrets included: write them to a 0640
        config file, never to a command line (pgBackRest refuses that with error 031).

        Timeouts are not among them: pgBackRest has no per-repository timeout; add
        PGBACKREST_TIMEOUTS to the global (or stanza) section.
        """
        r = f"repo{repo}"
        return {
            f"{r}-type": "s3",
            f"{r}-s3-endpoint": self.host,
            f"{r}-storage-port": str(self.port),
            f"{r}-s3-uri-style": "path",
            f"{r}-storage-verify-tls": "y",
            f"{r}-storage-ca-file": str(self.ca_file),
            f"{r}-s3-region": self.region,
            f"{r}-s3-bucket": self.bucket,
            f"{r}-s3-key": self.access_key,
            f"{r}-s3-key-secret": self.secret_key,
            f"{r}-path": path,
        }

    def object_files(self, prefix="", bucket=None):
        """{key: file holding the object's bytes} for the keys starting with `prefix`, read from
        the server's data directory (no request, no credentials)."""
        root = self.data_dir / (bucket or self.bucket)
        suffix = "._S3rver_object"  # s3rver's filesystem store: KEY._S3rver_object
        return {key: f for f in root.rglob("*" + suffix)
                if (key := str(f.relative_to(root))[:-len(suffix)]).startswith(prefix)}

    def _make_certificates(self):
        d = self.dir
        (d / "server.ext").write_text("basicConstraints = critical, CA:FALSE\n"
                                      "keyUsage = critical, digitalSignature\n"
                                      "extendedKeyUsage = serverAuth\n"
                                      "subjectAltName = DNS:localhost\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for cmd in (
            ["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "2",
             "-subj", "/CN=veza.pgbackrest test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["openssl", "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost"],
            ["openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", d / "server.ext", "-out", d / "server.crt"],
        ):
            subprocess.run(list(map(str, cmd)), check=True, capture_output=True)
        (d / "ca.key").chmod(0o600)
        (d / "server.key").chmod(0o600)
        self.ca_file.chmod(0o644)

    def _ready_line(self, timeout):
        """The server's first stdout line; its log if it exits or stays silent."""
        buf = b""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                chunk = os.read(self.proc.stdout.fileno(), 4096) if left > 0 and sel.select(left) else None
                if not chunk:
                    raise RuntimeError(f"s3rver did not start: {self.log_file.read_text()[-2000:]}")
                buf += chunk
        return buf.split(b"\n", 1)[0]

    def _check_tls(self):
        """One HTTPS request as pgBackRest will make it: CA file, name localhost. Anonymous, so 403."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=self.host) as tls:
                tls.sendall(f"GET /{self.bucket} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                            "Connection: close\r\n\r\n".encode())
                status = tls.makefile("rb").readline().rstrip()
        if status != b"HTTP/1.1 403 Forbidden":
            raise RuntimeError(f"unexpected answer from s3rver: {status!r}")


# Loopback HTTP without any proxy from the environment (http_proxy would route 127.0.0.1 through it).
_LOOPBACK_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url, timeout=10):
    """The body of a GET to a loopback URL, as text."""
    with _LOOPBACK_HTTP.open(url, timeout=timeout) as response:
        return response.read().decode()


class _Daemon:
    """A server process run as the packaged services' user, logging to a file, on 127.0.0.1:port;
    a context manager that waits until `ready_path` answers and always stops the process."""

    user = "prometheus"  # what Debian's prometheus and prometheus-node-exporter units run as
    ready_path = "/"

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.port = free_port()
        self.log_file = self.dir / f"{self.name}.log"
        self.proc = None

    @property
    def address(self):
        """127.0.0.1:PORT"""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"http://{self.address}"

    def argv(self):
        raise NotImplementedError

    def __enter__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir, user=self.user, group=self.user, extra_groups=[])
        deadline = time.monotonic() + 60
        while True:
            try:
                http_get(self.url + self.ready_path, timeout=2)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{self.name} did not start: {self.log_file.read_text()[-2000:]}")
                time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        """Stop the process and reap it; safe to call twice."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class NodeExporter(_Daemon):
    """Debian's prometheus-node-exporter on a loopback port with only the textfile collector (the
    others would only add noise and scrape time), reading `textfile_dir`; a context manager.
    It runs as the packaged service's user, so the drill's files must be readable by it."""

    name = "node_exporter"
    ready_path = "/metrics"

    def __init__(self, workdir: Path, textfile_dir: Path):
        super().__init__(workdir)
        self.textfile_dir = Path(textfile_dir)

    def argv(self):
        return ["/usr/bin/prometheus-node-exporter", f"--web.listen-address={self.address}",
                "--collector.disable-defaults", "--collector.textfile",
                f"--collector.textfile.directory={self.textfile_dir}", "--web.disable-exporter-metrics"]

    def metrics(self):
        """What a scrape gets: the Prometheus text format."""
        return http_get(self.url + "/metrics")


class PrometheusServer(_Daemon):
    """Debian's prometheus on a loopback port (a context manager): its storage in `workdir`,
    scraping `targets` and evaluating `rule_files` every `interval`."""

    name = "prometheus"
    ready_path = "/-/ready"

    def __init__(self, workdir: Path, targets, rule_files, interval="1s"):
        super().__init__(workdir)
        self.storage = self.dir / "data"
        self.config_file = self.dir / "prometheus.yml"
        self.targets, self.rule_files, self.interval = list(targets), [str(f) for f in rule_files], interval

    def argv(self):
        return ["/usr/bin/prometheus", f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self.storage}", f"--web.listen-address={self.address}",
                "--storage.tsdb.retention.time=1h"]

    def __enter__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        shutil.chown(self.storage, self.user, self.user)
        self.config_file.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": self.interval, "scrape_timeout": self.interval,
                       "evaluation_interval": self.interval},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": "node", "static_configs": [{"targets": self.targets}]}],
        }, indent=2))
        return super().__enter__()

    def api(self, path, **params):
        """GET /api/v1/PATH: the `data` of a successful answer."""
        query = urllib.parse.urlencode(params)
        answer = json.loads(http_get(f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")))
        if answer.get("status") != "success":
            raise RuntimeError(f"prometheus /api/v1/{path}: {answer}")
        return answer["data"]

    def alerts(self):
        """The active (pending or firing) alerts."""
        return self.api("alerts")["alerts"]

    def query(self, expr):
        """An instant query's vector: [{"metric": {...}, "value": [time, "value"]}]."""
        return self.api("query", query=expr)["result"]
