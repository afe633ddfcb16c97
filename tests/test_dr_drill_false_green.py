"""dr_drill must never be green on a backup that loses data: the silent failures, each a case that
must fail with its own reason, against real pgBackRest repositories and real restores.

The shared cluster (`wal_repo`, no data checksums) has a full backup and then four batches of
rows, each in its own archived WAL segment (a WAL switch after each, waited for), so that a
segment can be removed or damaged in a copy of the repository. Its `events` rows carry their
own times: the backup's and the first three batches' are hours old, the last batch's is now, and
`veza_heartbeat` is updated in the last batch, so the freshness of what a restore brought back is
known. The corruption cases have clusters of their own (the damage is done to the cluster's files
before the backup is taken, as a failing disk would).
"""

import contextlib
import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import Cluster, as_postgres, canary, free_port, repository_copy, run_module, scratch_dir, write_pgbackrest_config

STANZA = "fg"
BATCHES = 4
ROWS_PER_BATCH = 5
TOTAL = 3 + BATCHES * ROWS_PER_BATCH


def incus(*args):
    return subprocess.run(["incus", *map(str, args)], capture_output=True, text=True)


def pgbackrest(conf, *args, check=True, stanza=STANZA):
    return as_postgres("pgbackrest", f"--config={conf}", f"--stanza={stanza}", *args, check=check)


def archiving_cluster(base, stanza=STANZA, initdb=(), extra_conf=""):
    """A cluster archiving into a posix repository under `base`, with its stanza created."""
    repo = base / "repo"
    repo.mkdir()
    shutil.chown(repo, "postgres", "postgres")
    conf = base / "pgbackrest.conf"
    cluster = Cluster(base, "pg", free_port()).initdb(*initdb)
    write_pgbackrest_config(conf, base, repo, cluster, stanza)
    if extra_conf:
        text = conf.read_text().replace("[global]\n", "[global]\n" + extra_conf, 1)
        conf.write_text(text)
    with open(cluster.pgdata / "postgresql.conf", "a") as f:
        f.write(f"archive_mode = on\narchive_command = "
                f"'pgbackrest --config={conf} --stanza={stanza} archive-push %p'\n")
    cluster.start()
    pgbackrest(conf, "stanza-create", stanza=stanza)
    return cluster, conf, repo


@pytest.fixture(scope="module")
def wal_repo():
    base = scratch_dir("vz-fg-")
    cluster, conf, repo = archiving_cluster(base)
    cluster.psql("CREATE TABLE users (id serial PRIMARY KEY, name text);"
                 "CREATE TABLE empty_table (id int);"
                 "CREATE TABLE events (id serial PRIMARY KEY, created_at timestamptz NOT NULL);"
                 "CREATE TABLE veza_heartbeat (id int PRIMARY KEY, beat_at timestamptz NOT NULL);"
                 "INSERT INTO users (name) SELECT 'b' || g FROM generate_series(1, 3) g;"
                 "INSERT INTO events (created_at) VALUES (now() - interval '3 hours');"
                 "INSERT INTO veza_heartbeat VALUES (1, now() - interval '3 hours')")
    pgbackrest(conf, "--type=full", "backup")
    for batch in range(1, BATCHES + 1):
        at = "now()" if batch == BATCHES else f"now() - interval '{4 - batch} hours'"
        cluster.psql(f"INSERT INTO users (name) SELECT 'w{batch}-' || g FROM generate_series(1, {ROWS_PER_BATCH}) g;"
                     f"INSERT INTO events (created_at) VALUES ({at});"
                     f"UPDATE veza_heartbeat SET beat_at = {at}")
        pgbackrest(conf, "check")  # a WAL switch, waited for until archived
    info = json.loads(pgbackrest(conf, "--output=json", "info").stdout)[0]
    yield {"base": base, "conf": conf, "repo": repo, "cluster": cluster, "info": info}
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def segments_after_backup(repo, info):
    """The archived segment files after the backup's stop segment, oldest first."""
    stop = info["backup"][-1]["archive"]["stop"]
    files = sorted(p for p in repo.glob(f"archive/{STANZA}/*/*/*") if len(p.name) > 24 and p.name[24] == "-")
    return [p for p in files if p.name[:24] > stop]


def repo_copy(setup):
    """A copy of the shared repository and a config for it: tests damage the copy."""
    return repository_copy(setup["repo"], setup["cluster"], STANZA)


@pytest.fixture
def drill(module_bin, tmp_path):
    """dr_drill on a host sandbox by default, per-test metrics and lock directories."""
    tmp_path.chmod(0o755)

    def run(conf, stanza=STANZA, **overrides):
        args = {"stanza": stanza, "config": str(conf), "sandbox": "host",
                "metrics_dir": str(tmp_path / "metrics"), "lock_dir": str(tmp_path / "lock"),
                "smoke_queries": [{"sql": "SELECT count(*) FROM users", "min": 1}],
                "start_timeout": 60, "recovery_timeout": 120, **overrides}
        return run_module(module_bin("dr_drill"), args)
    run.metrics = lambda stanza=STANZA: (tmp_path / "metrics" / f"veza_backup_drill_{stanza}.prom").read_text()
    run.tmp = tmp_path
    return run


def metric(text, name, labels=None):
    for line in text.splitlines():
        if line.startswith(f"veza_backup_drill_{name}{{") and (labels is None or labels in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def assert_red(drill, rc, out, reason, stanza=STANZA):
    assert rc == 1, out
    assert out["failed"] and not out["passed"] and out["reason"] == reason, out
    text = drill.metrics(stanza)
    assert metric(text, "last_success") == 0
    assert metric(text, "failure_reason", f'reason="{reason}"') == 1
    assert not list(Path("/tmp").glob(f"dr-drill-{stanza}-*")), "a sandbox was left behind"


# -- no false red ---------------------------------------------------------------------------------

def test_a_healthy_backup_passes_every_default_check_and_replays_to_the_end(drill, wal_repo):
    rc, out = drill(wal_repo["conf"], smoke_queries=[{"sql": "SELECT count(*) FROM users", "min": TOTAL}])
    assert rc == 0, out.get("msg")
    assert set(out["checks"]) >= {"archive", "smoke", "verify", "amcheck", "dump", "checksums", "freshness"}
    assert out["checks"]["archive"]["state"] == "pass", out["checks"]
    assert "end of the archive" in out["checks"]["archive"]["detail"]
    # No data checksums on this cluster: skipped, never a pass.
    assert out["checks"]["checksums"]["state"] == "skipped" and not out["checks"]["checksums"]["success"]
    text = drill.metrics()
    assert metric(text, "check_skipped", 'check="checksums"') == 1
    assert metric(text, "check_success", 'check="checksums"') is None
    assert metric(text, "check_success", 'check="archive"') == 1
    subprocess.run(["promtool", "check", "metrics"], input=text, text=True, check=True, capture_output=True)


def test_an_idle_database_with_a_current_heartbeat_is_within_the_rpo_budget(drill, wal_repo):
    # The application's newest row is hours old only in batches 1-3; the heartbeat of the last
    # batch is current: by the heartbeat (the default marker) nothing is lost.
    rc, out = drill(wal_repo["conf"], max_data_loss=600, checks=[])
    assert rc == 0, out.get("msg")
    assert 0 <= out["data_loss_seconds"] < 600, out
    assert metric(drill.metrics(), "data_loss_seconds") < 600
    assert metric(drill.metrics(), "max_data_loss_seconds") == 600


# -- WAL lost or unusable after the backup --------------------------------------------------------

@pytest.mark.parametrize("sandbox", ["host", "incus"])
def test_a_segment_missing_after_the_backup_is_a_wal_gap(drill, wal_repo, sandbox, request):
    extra = {}
    if sandbox == "incus":
        extra = {"sandbox": "incus", "image": request.getfixturevalue("drill_image")}
    with repo_copy(wal_repo) as (repo, conf):
        after = segments_after_backup(repo, wal_repo["info"])
        assert len(after) >= BATCHES, after
        victim = after[1]
        victim.unlink()
        rc, out = drill(conf, checks=[], **extra)
        assert_red(drill, rc, out, "wal_gap")
        assert victim.name[:24] in out["msg"], out["msg"]
        assert "are lost" in out["msg"]
        assert out["checks"]["archive"]["state"] == "fail"
        if sandbox == "incus":
            assert incus("info", f"pg-restore-drill-{STANZA}").returncode != 0


def test_an_unreadable_segment_is_wal_unreadable(drill, wal_repo):
    with repo_copy(wal_repo) as (repo, conf):
        victim = segments_after_backup(repo, wal_repo["info"])[1]
        victim.write_bytes(b"\x1f\x8b" + b"not a segment" * 100)
        rc, out = drill(conf, checks=[])
        assert_red(drill, rc, out, "wal_unreadable")
        assert victim.name[:24] in out["msg"], out["msg"]


def test_the_newest_segment_missing_breaks_the_data_loss_budget(drill, wal_repo):
    # No listing can see a segment gone from the end: the freshness marker does.
    with repo_copy(wal_repo) as (repo, conf):
        segments_after_backup(repo, wal_repo["info"])[-1].unlink()
        rc, out = drill(conf, checks=[], max_data_loss=600,
                        freshness_query="SELECT max(created_at) FROM events")
        assert_red(drill, rc, out, "data_loss_exceeded")
        assert out["data_loss_seconds"] > 3000, out


def test_an_unfollowed_newer_timeline_is_a_wal_gap(drill, wal_repo):
    # The archive says a timeline 2 exists (its first segment), but its history file is gone.
    with repo_copy(wal_repo) as (repo, conf):
        last = segments_after_backup(repo, wal_repo["info"])[-1]
        fake = last.with_name("00000002" + last.name[8:])
        shutil.copy2(last, fake)
        rc, out = drill(conf, checks=[])
        assert_red(drill, rc, out, "wal_gap")
        assert "timeline 2" in out["msg"], out["msg"]


# -- what the operator holds cannot restore: exit 1, not 2 ----------------------------------------

def test_an_empty_smoke_table_without_a_minimum_fails(drill, wal_repo):
    rc, out = drill(wal_repo["conf"], checks=[], smoke_queries=[{"sql": "SELECT count(*) FROM empty_table"}])
    assert_red(drill, rc, out, "smoke_failed")
    assert "below the minimum 1" in out["msg"]


def test_a_null_smoke_answer_fails(drill, wal_repo):
    rc, out = drill(wal_repo["conf"], checks=[], smoke_queries=[{"sql": "SELECT NULL::int", "min": 0}])
    assert_red(drill, rc, out, "smoke_failed")
    assert "NULL" in out["msg"]


def test_a_stanza_without_a_backup_and_a_missing_stanza_exit_1(drill, wal_repo):
    base = scratch_dir("vz-fg-nobk-")
    try:
        conf = base / "pgbackrest.conf"
        repo = base / "repo"
        repo.mkdir()
        shutil.chown(repo, "postgres", "postgres")
        write_pgbackrest_config(conf, base, repo, wal_repo["cluster"], "fgempty")
        rc, out = drill(conf, stanza="fgempty")
        assert_red(drill, rc, out, "no_stanza", stanza="fgempty")
        pgbackrest(conf, "stanza-create", stanza="fgempty")
        rc, out = drill(conf, stanza="fgempty")
        assert_red(drill, rc, out, "no_backup", stanza="fgempty")
        assert "has no backup" in out["msg"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def cipher_repo():
    base = scratch_dir("vz-fg-ciph-")
    good = canary("drill-cipher")
    cluster, conf, repo = archiving_cluster(
        base, stanza="fgc", extra_conf=f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={good}\n")
    cluster.psql("CREATE TABLE users (id int); INSERT INTO users VALUES (1)")
    pgbackrest(conf, "--type=full", "backup", stanza="fgc")
    yield {"base": base, "conf": conf, "good": good}
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_a_wrong_cipher_pass_exits_1_says_so_and_shows_no_pass(drill, cipher_repo):
    wrong = canary("drill-wrong-cipher")
    bad = cipher_repo["base"] / "wrong.conf"
    bad.write_text(cipher_repo["conf"].read_text().replace(cipher_repo["good"], wrong))
    shutil.chown(bad, "postgres", "postgres")
    bad.chmod(0o640)
    rc, out = drill(bad, stanza="fgc", checks=[])
    assert_red(drill, rc, out, "repo_unreadable", stanza="fgc")
    assert "wrong cipher pass" in out["msg"], out["msg"]
    text = json.dumps(out) + drill.metrics("fgc")
    assert wrong not in text and cipher_repo["good"] not in text
    # The right pass restores: the drill is green and shows no pass either.
    rc, out = drill(cipher_repo["conf"], stanza="fgc")
    assert rc == 0, out.get("msg")
    assert cipher_repo["good"] not in json.dumps(out)


# -- corrupt pages nobody's smoke query reads ----------------------------------------------------

def corrupt_block(cluster, relation, block=1):
    """Overwrite the page header of `block` of `relation` on disk (the cluster stopped), as a
    failing disk would; the smoke table is untouched."""
    path = cluster.pgdata / cluster.psql(f"SELECT pg_relation_filepath('{relation}')")
    cluster.stop()
    with open(path, "r+b") as f:
        f.seek(block * 8192)
        f.write(b"\xde\xad\xbe\xef" * 6)
    cluster.start()


@contextlib.contextmanager
def corrupt_backup(relation, checksums):
    base = scratch_dir("vz-fg-corrupt-")
    cluster, conf, _ = archiving_cluster(base, stanza="fgx", initdb=("--data-checksums",) if checksums else ())
    try:
        cluster.psql("CREATE TABLE users (id int); INSERT INTO users VALUES (1);"
                     "CREATE TABLE ledger (id int PRIMARY KEY, note text);"
                     "INSERT INTO ledger SELECT g, repeat('x', 40) FROM generate_series(1, 3000) g;"
                     "CHECKPOINT")
        corrupt_block(cluster, relation)
        pgbackrest(conf, "--type=full", "backup", stanza="fgx", check=False)
        yield conf
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("sandbox", ["host", "incus"])
def test_heap_corruption_outside_the_smoke_table_fails_amcheck_and_dump(drill, sandbox, request):
    extra = {}
    if sandbox == "incus":
        extra = {"sandbox": "incus", "image": request.getfixturevalue("drill_image")}
    with corrupt_backup("ledger", checksums=False) as conf:
        rc, out = drill(conf, stanza="fgx", checks=["amcheck", "dump", "checksums"], **extra)
        assert_red(drill, rc, out, "amcheck_failed", stanza="fgx")
        assert out["checks"]["smoke"]["state"] == "pass"
        assert out["checks"]["dump"]["state"] == "fail", out["checks"]


def test_index_corruption_fails_amcheck(drill):
    with corrupt_backup("ledger_pkey", checksums=False) as conf:
        rc, out = drill(conf, stanza="fgx", checks=["amcheck", "dump"])
        assert_red(drill, rc, out, "amcheck_failed", stanza="fgx")
        assert "ledger_pkey" in out["msg"] or "ledger" in out["msg"], out["msg"]


def test_a_backup_pgbackrest_found_page_errors_in_fails_before_restoring(drill):
    with corrupt_backup("ledger", checksums=True) as conf:
        rc, out = drill(conf, stanza="fgx")
        assert_red(drill, rc, out, "backup_has_errors", stanza="fgx")
        assert "restore" not in out["stages"], out["stages"]
        # The damaged file is named, with its page: block 1 of ledger.
        assert "pg_data/base/" in out["msg"] and "(pages [1])" in out["msg"], out["msg"]


# -- a drill killed with SIGKILL ------------------------------------------------------------------

@pytest.mark.parametrize("sandbox", ["host", "incus"])
def test_after_a_drill_killed_mid_restore_the_next_passes_and_leaves_nothing(drill, wal_repo, module_bin,
                                                                            sandbox, request):
    args = {"stanza": STANZA, "config": str(wal_repo["conf"]), "sandbox": sandbox, "checks": [],
            "metrics_dir": str(drill.tmp / "metrics"), "lock_dir": str(drill.tmp / "lock")}
    if sandbox == "incus":
        args["image"] = request.getfixturevalue("drill_image")
    proc = subprocess.Popen([str(module_bin("dr_drill"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    for line in proc.stderr:
        if "restore ..." in line:
            break
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    left = Path(f"/tmp/dr-drill-{STANZA}-{proc.pid}")
    if sandbox == "host":
        assert left.is_dir(), "the killed drill left no directory: the test proves nothing"
    else:
        assert incus("info", f"pg-restore-drill-{STANZA}").returncode == 0, "no container was left"
    rc, out = drill(wal_repo["conf"], checks=[], **({"sandbox": "incus", "image": args["image"]}
                                                    if sandbox == "incus" else {}))
    assert rc == 0, out.get("msg")
    assert out["recovered"], out
    assert not left.exists()
    assert not list(Path("/tmp").glob(f"dr-drill-{STANZA}-*"))
    assert incus("info", f"pg-restore-drill-{STANZA}").returncode != 0
    # No PostgreSQL of a drill runs any more.
    ps = subprocess.run(["pgrep", "-f", f"dr-drill-{STANZA}-"], capture_output=True, text=True)
    assert ps.stdout.strip() == "", ps.stdout


# -- a failover: a newer timeline in the archive --------------------------------------------------

def test_a_drill_after_a_failover_follows_the_new_timeline_to_its_end(drill, wal_repo):
    """The latest backup was taken on timeline 1; then a new primary was promoted from it (as a
    failover does) and archived on timeline 2. A drill must follow timeline 2 to its end."""
    with repo_copy(wal_repo) as (repo, conf):
        base = conf.parent
        promoted = Cluster(base, "pg2", free_port())
        write_pgbackrest_config(conf, base, repo, promoted, STANZA)
        # A restore that archives (no --archive-mode=off): the promoted node pushes timeline 2 into
        # this copy of the repository, as the new primary of a failover does.
        as_postgres("mkdir", "-m", "0700", promoted.pgdata)
        pgbackrest(conf, f"--pg1-path={promoted.pgdata}", "restore")
        promoted._configure()
        with open(promoted.pgdata / "postgresql.conf", "a") as f:
            f.write(f"archive_mode = on\narchive_command = "
                    f"'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'\n")
        promoted.start()
        for _ in range(100):
            if promoted.psql("SELECT pg_is_in_recovery()") == "f":
                break
            time.sleep(0.2)
        promoted.psql("INSERT INTO users (name) SELECT 't2-' || g FROM generate_series(1, 7) g")
        pgbackrest(conf, "check")
        promoted.stop()
        assert list(repo.glob(f"archive/{STANZA}/*/00000002.history*")), "no timeline 2 in the archive"
        rc, out = drill(conf, checks=[], smoke_queries=[{"sql": "SELECT count(*) FROM users", "min": TOTAL + 7}])
        assert rc == 0, out.get("msg")
        assert out["checks"]["archive"]["state"] == "pass"
        assert "00000002" in out["checks"]["archive"]["detail"], out["checks"]["archive"]
