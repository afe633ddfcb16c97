"""pgBackRest 2.45 against the harness's S3 endpoint (s3rver over TLS on 127.0.0.1).

The proof that S3Server stands in for a real S3 repository in the system tests of the modules
to come: stanza-create, archive-push from PostgreSQL's archive_command, a full backup encrypted
with aes-256-cbc and compressed with zstd, `info`, and the errors of a wrong cipher pass, a
wrong secret key and an unknown certificate authority. pgBackRest runs as postgres with a 0640
config file of the test's own; the credentials are only ever in that file, and no output shows
a secret (the access key only where S3 itself names it).

Each step is a module-scoped fixture that depends on the one before, so a test runs only the
steps it needs and each step runs once per module.
"""

import json
import os
import shutil
import subprocess
import time

import pytest

from harness import Cluster, S3Server, canary, free_port, scratch_dir

STANZA = "main"
CIPHER = "aes-256-cbc"
ARCHIVE_PREFIX = f"pgbackrest/archive/{STANZA}/15-1/"
BACKUP_PREFIX = f"pgbackrest/backup/{STANZA}/"
OPENSSL_ENCRYPTED = b"Salted__"  # pgBackRest's aes-256-cbc files use OpenSSL's salted format


class Repo:
    """A cluster archiving to the S3 endpoint, its pgBackRest config files, and every output."""

    def __init__(self, base, s3, cluster):
        self.base, self.s3, self.cluster = base, s3, cluster
        self.cipher_pass = canary("s3-cipher")
        self.wrong_cipher_pass = canary("s3-wrong-cipher")
        self.wrong_secret_key = canary("s3-wrong-secret-key", 13)
        self.config = self.write_config("pgbackrest.conf")
        self.outputs = []  # (command, stdout + stderr) of every pgBackRest run

    def secret_values(self):
        """The values that must appear in no output at all."""
        return [self.s3.secret_key, self.cipher_pass, self.wrong_cipher_pass, self.wrong_secret_key]

    def write_config(self, name, **override):
        """A pgBackRest config file readable by postgres only (0640 root:postgres)."""
        options = {
            **self.s3.pgbackrest_options(),
            "repo1-cipher-type": CIPHER,
            "repo1-cipher-pass": self.cipher_pass,
            "repo1-retention-full": "2",
            "compress-type": "zst",
            # Small files go into bundle objects instead of one PUT each: the full backup of a
            # fresh cluster takes about 4 s here instead of 9 to 15 s.
            "repo1-bundle": "y",
            **S3Server.PGBACKREST_TIMEOUTS,
            # A broken archive_command would otherwise hold the backup for the default 60 s.
            "archive-timeout": "30",
            "start-fast": "y",
            "lock-path": str(self.base / "lock"),
            "log-level-console": "info",
            "log-level-file": "off",
            **override,
        }
        text = ("[global]\n" + "".join(f"{k}={v}\n" for k, v in options.items())
                + f"\n[{STANZA}]\npg1-path={self.cluster.pgdata}\npg1-port={self.cluster.port}\n"
                f"pg1-socket-path={self.cluster.socket_dir}\n")
        path = self.base / name
        # Created 0600, so that the secrets are never readable by others, even for a moment.
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(text)
        shutil.chown(path, "root", "postgres")
        path.chmod(0o640)
        return path

    def pgbackrest(self, *args, config=None):
        """pgBackRest as postgres with --config; (rc, stdout, stderr) as bytes, recorded.

        Bytes: with a wrong cipher pass, pgBackRest quotes the undecryptable file in its message.
        """
        cmd = ["runuser", "-u", "postgres", "--", "pgbackrest", f"--config={config or self.config}",
               f"--stanza={STANZA}", *args]
        proc = subprocess.run(cmd, capture_output=True, timeout=300)
        self.outputs.append((" ".join(args), proc.stdout + proc.stderr))
        return proc.returncode, proc.stdout, proc.stderr

    def info(self, config=None):
        """`info --output=json` for the stanza: its one JSON object.

        Leniently decoded: with a wrong cipher pass, the repo's status message quotes the
        wrongly decrypted file as is, so the output is not UTF-8 and in most runs holds raw
        control characters that strict JSON refuses (27 of 40 random passes here).
        """
        rc, out, err = self.pgbackrest("info", "--output=json", config=config)
        assert rc == 0, err.decode(errors="replace")
        [stanza] = json.loads(out.decode(errors="replace"), strict=False)
        return stanza


def check(result):
    rc, out, err = result
    assert rc == 0, f"rc={rc}\n{(out + err).decode(errors='replace')}"


@pytest.fixture(scope="module")
def repo():
    base = scratch_dir("vz-s3-")
    try:
        with S3Server(base / "s3") as s3:
            cluster = Cluster(base, "pg", free_port()).initdb()
            r = Repo(base, s3, cluster)
            # archive_mode needs a restart: set it before the first start.
            with open(cluster.pgdata / "postgresql.conf", "a") as conf:
                conf.write(f"archive_mode = on\n"
                           f"archive_command = 'pgbackrest --config={r.config} --stanza={STANZA} archive-push %p'\n")
            try:
                cluster.start()
                yield r
            finally:
                cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def stanza(repo):
    check(repo.pgbackrest("stanza-create"))


@pytest.fixture(scope="module")
def archived_wal(repo, stanza):
    """A segment switched out by PostgreSQL and pushed by its archive_command: its name."""
    pg = repo.cluster
    segment = pg.psql("CREATE TABLE s3_probe AS SELECT generate_series(1, 1000) AS n; "
                      "SELECT pg_walfile_name(pg_switch_wal())")
    deadline = time.monotonic() + 60
    while True:
        archived, failed = pg.psql("SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver").split("|")
        if archived >= segment:
            return segment
        if time.monotonic() > deadline:
            log = (pg.base / f"{pg.name}.log").read_text()[-3000:]
            pytest.fail(f"{segment} not archived (last {archived!r}, {failed} failures):\n{log}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def full_backup(repo, archived_wal):
    check(repo.pgbackrest("backup", "--type=full"))


@pytest.fixture(scope="module")
def wrong_cipher_pass_info(repo, stanza):
    return repo.info(repo.write_config("wrong-cipher-pass.conf", **{"repo1-cipher-pass": repo.wrong_cipher_pass}))


@pytest.fixture(scope="module")
def wrong_secret_key_info(repo):
    return repo.info(repo.write_config("wrong-secret-key.conf", **{"repo1-s3-key-secret": repo.wrong_secret_key}))


@pytest.fixture(scope="module")
def system_ca_info(repo):
    """info with the system's CAs instead of the test CA: the certificate must not verify."""
    return repo.info(repo.write_config("system-ca.conf", **{"repo1-storage-ca-file": "/etc/ssl/certs/ca-certificates.crt"}))


def test_stanza_create_over_tls_leaves_a_stanza_without_backups(repo, stanza):
    info = repo.info()
    assert info["status"]["code"] == 2, info["status"]  # 2: no valid backups
    assert info["cipher"] == CIPHER
    assert set(repo.s3.object_files(BACKUP_PREFIX)) >= {BACKUP_PREFIX + "backup.info",
                                                         BACKUP_PREFIX + "backup.info.copy"}


def test_switched_wal_is_archived_to_s3_encrypted_and_compressed(repo, archived_wal):
    pushed = {key: f for key, f in repo.s3.object_files(ARCHIVE_PREFIX).items()
              if key.rsplit("/", 1)[-1].startswith(archived_wal + "-")}
    assert len(pushed) == 1, sorted(repo.s3.object_files(ARCHIVE_PREFIX))
    [(key, path)] = pushed.items()
    assert key.endswith(".zst")
    assert path.read_bytes().startswith(OPENSSL_ENCRYPTED)
    assert repo.cluster.psql("SELECT failed_count FROM pg_stat_archiver") == "0"


def test_backup_to_s3_over_tls_is_listed_by_info(repo, full_backup):
    info = repo.info()
    assert info["status"]["code"] == 0, info["status"]
    assert [r["status"]["code"] for r in info["repo"]] == [0]
    assert [b["type"] for b in info["backup"]] == ["full"]
    assert info["cipher"] == CIPHER
    label = info["backup"][0]["label"]
    files = repo.s3.object_files(f"{BACKUP_PREFIX}{label}/")
    bundles = [f for key, f in files.items() if key.startswith(f"{BACKUP_PREFIX}{label}/bundle/")]
    assert bundles, sorted(files)
    for f in [files[f"{BACKUP_PREFIX}{label}/backup.manifest"], *bundles]:
        assert f.read_bytes().startswith(OPENSSL_ENCRYPTED), f


def test_wrong_cipher_pass_makes_info_report_an_error(wrong_cipher_pass_info):
    info = wrong_cipher_pass_info
    assert info["status"]["code"] == 99, info["status"]
    [repo_status] = [r["status"] for r in info["repo"]]
    assert repo_status["code"] == 99
    # [FormatError] or [CryptoError] (the garbage decides which) on backup.info, with the hint.
    message = repo_status["message"]
    assert "unable to load info file" in message and "backup.info cannot be opened" in message, message[:300]
    assert info["backup"] == []


def test_wrong_secret_key_is_refused_by_the_endpoint(repo, wrong_secret_key_info):
    info = wrong_secret_key_info
    [repo_status] = [r["status"] for r in info["repo"]]
    assert repo_status["code"] == 99, repo_status
    assert "403" in repo_status["message"] and "SignatureDoesNotMatch" in repo_status["message"], repo_status
    # As from S3: pgBackRest quotes the response, which names the access key (never the secret).
    # A module that hides the access key must scrub pgBackRest's messages itself.
    named = f"<AWSAccessKeyId>{repo.s3.access_key}</AWSAccessKeyId>" in repo_status["message"]
    assert named, "the refusal does not name the access key as S3 does"


def test_endpoint_certificate_is_verified_against_the_given_ca(system_ca_info):
    [repo_status] = [r["status"] for r in system_ca_info["repo"]]
    assert repo_status["code"] == 99, repo_status
    assert "unable to verify certificate presented by 'localhost:" in repo_status["message"], repo_status


def test_credentials_never_appear_in_any_output(repo, full_backup, wrong_cipher_pass_info, wrong_secret_key_info,
                                                system_ca_info):
    repo.info()
    # archive-push runs under PostgreSQL, which logs its output; s3rver logs every request.
    logs = [("postgresql log", (repo.cluster.base / f"{repo.cluster.name}.log").read_bytes()),
            ("s3rver log", repo.s3.log_file.read_bytes())]
    commands = {command for command, _ in repo.outputs}
    assert {"stanza-create", "backup --type=full", "info --output=json"} <= commands
    for name, output in repo.outputs + logs:
        leaked = [i for i, secret in enumerate(repo.secret_values()) if secret.encode() in output]
        # Indexes only: the message must not print what it looks for.
        assert not leaked, f"secret #{leaked} appears in the output of {name}"
        # The access key too, except where S3 itself names it (test_wrong_secret_key_...).
        if b"SignatureDoesNotMatch" not in output:
            assert repo.s3.access_key.encode() not in output, f"the access key appears in the output of {name}"
