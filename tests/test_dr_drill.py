"""dr_drill on real services: a PostgreSQL 15 cluster archiving into a posix pgBackRest repository
with a full backup and later WAL, restored into Incus containers (image from scripts/drill-image)
and into host directories.

One cluster, repository and backup serve every test (module-scoped; the checksums test has its
own, a cluster initialised with data checksums): after the full backup, batch A (2 rows) commits, then a recorded time, then batch B (3 rows), all only in WAL. So a
latest drill must count 3 + 2 + 3 = 8 users (the 5 later ones from WAL replay alone) and a
point-in-time drill to the recorded time exactly 5.
"""

import json
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import (BackedUpCluster, Cluster, as_postgres, free_port, repository_copy, run_module, scratch_dir,
                     write_pgbackrest_config)

# The shared cluster, repository and backup: the `repo_setup` fixture (conftest.py).
STANZA = BackedUpCluster.STANZA
ROWS_IN_BACKUP, ROWS_A, ROWS_B, TOTAL = (BackedUpCluster.ROWS_IN_BACKUP, BackedUpCluster.ROWS_A,
                                         BackedUpCluster.ROWS_B, BackedUpCluster.TOTAL)


def incus(*args, check=False):
    return subprocess.run(["incus", *map(str, args)], check=check, capture_output=True, text=True)


@pytest.fixture
def drill(repo_setup, module_bin, drill_image, tmp_path):
    """Run dr_drill with the shared repository; per test metrics and lock directories."""
    tmp_path.chmod(0o755)

    def run(stdin_mode=False, **overrides):
        args = {"stanza": STANZA, "config": str(repo_setup["conf"]), "image": drill_image,
                "metrics_dir": str(tmp_path / "metrics"), "lock_dir": str(tmp_path / "lock"),
                "min_users_expected": 1, "start_timeout": 60, "recovery_timeout": 120, **overrides}
        rc, out = run_module(module_bin("dr_drill"), args, stdin_mode=stdin_mode)
        return rc, out
    run.metrics = lambda: (tmp_path / "metrics" / f"veza_backup_drill_{STANZA}.prom").read_text()
    run.tmp = tmp_path
    return run


def no_container(name=f"pg-restore-drill-{STANZA}"):
    return incus("info", name).returncode != 0


def metric(text, name, labels=None):
    for line in text.splitlines():
        if line.startswith(f"veza_backup_drill_{name}{{") and (labels is None or labels in line):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_incus_drill_passes_and_counts_rows_only_wal_replay_brings(drill):
    rc, out = drill(smoke_queries=[{"sql": "SELECT count(*) FROM users", "min": TOTAL}],
                    checks=["verify", "dump", "amcheck"])
    assert rc == 0, out.get("msg")
    assert out["passed"] and out["changed"] and not out.get("failed")
    assert out["checks"]["smoke"]["detail"].startswith(f"{TOTAL} >= ")
    assert all(c["success"] for c in out["checks"].values()), out["checks"]
    assert any("--archive-mode=off" in c for c in out["commands"])
    assert no_container()
    text = drill.metrics()
    assert metric(text, "last_success") == 1
    assert metric(text, "restore_seconds") > 0
    assert metric(text, "backup_label", out["backup_label"]) == 1
    subprocess.run(["promtool", "check", "metrics"], input=text, text=True, check=True, capture_output=True)


def test_pitr_drill_counts_exactly_the_earlier_rows(drill, repo_setup):
    rc, out = drill(target=repo_setup["target"],
                    smoke_queries=[{"sql": "SELECT count(*) FROM users", "min": 0}])
    assert rc == 0, out.get("msg")
    assert out["checks"]["smoke"]["detail"] == f"{ROWS_IN_BACKUP + ROWS_A} >= 0"


def test_host_drill_passes(drill):
    rc, out = drill(sandbox="host", smoke_queries=[{"sql": "SELECT count(*) FROM users", "min": TOTAL}],
                    checks=["dump", "checksums"])
    assert rc == 0, out.get("msg")
    # This cluster has no data checksums: the check says so and is skipped, never passed.
    assert out["checks"]["checksums"] == {"success": False, "state": "skipped",
                                          "detail": "the cluster has no data checksums"}
    assert not Path(out["commands"][-1]).exists()
    assert not list(Path("/tmp").glob(f"dr-drill-{STANZA}-*"))



def test_a_metrics_reader_never_sees_a_partial_file(drill):
    """node_exporter reads the file whenever it is scraped: while drills rewrite it (a pass, a
    failure, a pass), a reader polling it sees only whole files, each of which promtool accepts."""
    path = drill.tmp / "metrics" / f"veza_backup_drill_{STANZA}.prom"
    seen, done = set(), threading.Event()

    def read():
        while not done.is_set():
            try:
                seen.add(path.read_text())
            except FileNotFoundError:
                pass

    reader = threading.Thread(target=read)
    reader.start()
    try:
        outcomes = [drill(sandbox="host", min_users_expected=minimum)[0] for minimum in (1, TOTAL + 1, 1)]
    finally:
        done.set()
        reader.join()
    assert outcomes == [0, 1, 0]
    assert len(seen) >= 3, "the reader saw fewer versions than the drills wrote"
    for text in seen:
        assert text.endswith("\n") and metric(text, "last_success") in (0, 1), text
        subprocess.run(["promtool", "check", "metrics"], input=text, text=True, check=True, capture_output=True)

def assert_failed(drill, rc, out, reason, code=1):
    assert rc == code, out
    assert out["failed"] and not out["passed"] and out["reason"] == reason, out
    assert no_container()
    text = drill.metrics()
    assert metric(text, "last_success") == 0
    assert metric(text, "failure_reason", f'reason="{reason}"') == 1
    subprocess.run(["promtool", "check", "metrics"], input=text, text=True, check=True, capture_output=True)


def test_smoke_minimum_not_met_fails(drill):
    rc, out = drill(min_users_expected=TOTAL + 1)
    assert_failed(drill, rc, out, "smoke_failed")


def test_missing_image_is_an_environment_problem(drill):
    rc, out = drill(image="veza-no-such-image")
    assert_failed(drill, rc, out, "image_missing", code=2)


def test_postgres_that_cannot_start_fails_the_drill(drill, repo_setup):
    # The WAL segment the backup starts in is gone from a copy of the repository: the restore
    # succeeds, PostgreSQL cannot find its checkpoint and exits.
    with repo_copy(repo_setup) as (repo, conf):
        info = json.loads(as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}",
                                      "--output=json", "info").stdout)
        first = info[0]["backup"][-1]["archive"]["start"]
        victims = list(repo.glob(f"archive/{STANZA}/*/*/{first}-*"))
        assert victims
        for v in victims:
            v.unlink()
        rc, out = drill(config=str(conf), smoke_queries=[{"sql": "SELECT 1", "min": 0}], checks=[])
        assert_failed(drill, rc, out, "start_failed")


def repo_copy(repo_setup):
    """A copy of the shared repository and a config for it: tests damage the copy."""
    return repository_copy(repo_setup["repo"], repo_setup["cluster"], STANZA)


def test_corrupted_backup_file_fails_the_drill(drill, repo_setup):
    with repo_copy(repo_setup) as (repo, conf):
        victim = max((p for p in repo.glob("backup/*/*F/pg_data/base/*/*") if p.is_file()),
                     key=lambda p: p.stat().st_size)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        rc, out = drill(config=str(conf), checks=["verify"])
        assert_failed(drill, rc, out, "verify_failed")


def test_sigterm_mid_restore_tears_down(drill, repo_setup, module_bin, drill_image):
    args = {"stanza": STANZA, "config": str(repo_setup["conf"]), "image": drill_image,
            "metrics_dir": str(drill.tmp / "metrics"), "lock_dir": str(drill.tmp / "lock")}
    proc = subprocess.Popen([str(module_bin("dr_drill"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    # Wait for the restore stage to begin (progress lines on stderr), then SIGTERM.
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "restore ..." in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = json.loads(proc.stdout.read())
    proc.wait(timeout=60)
    assert "restore ..." in "".join(seen), seen
    assert_failed(drill, proc.returncode, out, "interrupted")


def test_sigterm_while_the_container_is_made_leaves_no_container(drill, repo_setup, module_bin,
                                                                  drill_image):
    # The signal stops the incus client, not the server's create or start operation: the
    # teardown must wait for it to end and delete what it made, not give up on "busy".
    args = {"stanza": STANZA, "config": str(repo_setup["conf"]), "image": drill_image,
            "metrics_dir": str(drill.tmp / "metrics"), "lock_dir": str(drill.tmp / "lock")}
    proc = subprocess.Popen([str(module_bin("dr_drill"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    for line in proc.stderr:
        if "sandbox ..." in line:
            break
    time.sleep(0.3)  # into `incus init`
    proc.send_signal(signal.SIGTERM)
    out = json.loads(proc.stdout.read())
    proc.wait(timeout=180)
    assert out["failed"] and out["reason"] in ("interrupted", "launch_failed"), out
    # Whatever the server's operation was doing when the drill exited, nothing appears later.
    time.sleep(5)
    assert no_container(), out


def test_restore_beyond_max_restore_seconds_is_stopped_as_rto_exceeded(drill):
    # One second is less than this restore needs in a container: the restore itself is stopped at
    # the budget (not left to run on), the drill fails with rto_exceeded and still writes metrics.
    rc, out = drill(max_restore_seconds=1, smoke_queries=[{"sql": "SELECT 1", "min": 0}])
    assert_failed(drill, rc, out, "rto_exceeded")
    # The budget runs out in the restore, or (a restore faster than a second) in the start that
    # it includes; either way the stage is stopped at the budget, and nothing after it runs.
    stopped = re.search(r"the (restore|start) stopped", out["msg"])
    assert stopped and "max_restore_seconds 1" in out["msg"], out["msg"]
    assert out["stages"][stopped.group(1)] < 5, out["stages"]
    assert not {"recovery", "archive_proof", "checks"} & set(out["stages"]), out["stages"]
    assert 1 <= out["restore_seconds"] < 10, out
    assert metric(drill.metrics(), "restore_seconds") >= 1


def test_sigterm_mid_restore_of_a_host_drill_removes_its_directory(drill, repo_setup, module_bin):
    args = {"stanza": STANZA, "config": str(repo_setup["conf"]), "sandbox": "host",
            "metrics_dir": str(drill.tmp / "metrics"), "lock_dir": str(drill.tmp / "lock")}
    proc = subprocess.Popen([str(module_bin("dr_drill"))], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps(args))
    proc.stdin.close()
    sandbox = Path(f"/tmp/dr-drill-{STANZA}-{proc.pid}")
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "restore ..." in line:
            break
    assert sandbox.is_dir(), seen
    proc.send_signal(signal.SIGTERM)
    out = json.loads(proc.stdout.read())
    proc.wait(timeout=60)
    assert "restore ..." in "".join(seen), seen
    assert_failed(drill, proc.returncode, out, "interrupted")
    assert "start" not in out["stages"], out["stages"]  # it stopped in the restore
    assert not sandbox.exists()
    assert not list(Path("/tmp").glob(f"dr-drill-{STANZA}-*"))
    # No PostgreSQL of the drill is left running on its socket.
    assert not list(Path("/tmp").glob(f"dr-drill-{STANZA}-*/.s.PGSQL.*"))


@pytest.fixture(scope="module")
def checksum_repo():
    """A cluster initialised with data checksums, its own stanza and a full backup."""
    base = scratch_dir("vz-drill-ck-")
    repo = base / "repo"
    repo.mkdir()
    shutil.chown(repo, "postgres", "postgres")
    conf = base / "pgbackrest.conf"
    cluster = Cluster(base, "pg", free_port()).initdb("--data-checksums")
    write_pgbackrest_config(conf, base, repo, cluster, STANZA)
    with open(cluster.pgdata / "postgresql.conf", "a") as f:
        f.write(f"archive_mode = on\narchive_command = 'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'\n")
    cluster.start()
    assert cluster.psql("SHOW data_checksums") == "on"
    pgb = lambda *a: as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", *a)
    pgb("stanza-create")
    cluster.psql("CREATE TABLE users (id serial PRIMARY KEY, name text); INSERT INTO users (name) VALUES ('x')")
    pgb("--type=full", "backup")
    yield conf
    cluster.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_checksums_check_passes_on_a_cluster_with_data_checksums(drill, checksum_repo):
    rc, out = drill(config=str(checksum_repo), sandbox="host", checks=["checksums"])
    assert rc == 0, out.get("msg")
    assert out["checks"]["checksums"] == {"success": True, "state": "pass",
                                          "detail": "no checksum failure"}, out["checks"]
    assert any("pg_checksums" in c and "--check" in c for c in out["commands"]), out["commands"]
    assert metric(drill.metrics(), "check_success", 'check="checksums"') == 1


def test_keep_leaves_the_container(drill):
    name = "pg-restore-drill-keep"
    try:
        rc, out = drill(keep=True, container_name=name)
        assert rc == 0, out.get("msg")
        assert out["kept"] and out["container"] == name
        assert incus("info", name).returncode == 0
    finally:
        incus("delete", "--force", name)


def test_second_drill_of_a_stanza_is_refused(drill):
    results = {}

    def first():
        results["first"] = drill(sandbox="host")

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.5)  # the first holds the lock from its start
    rc, out = drill(sandbox="host")
    t.join()
    assert results["first"][0] == 0, results["first"]
    assert rc == 2 and out["reason"] == "locked", out
    assert "another drill" in out["msg"]


def test_program_mode_reads_stdin_and_reports_progress(drill):
    rc, out = drill(stdin_mode=True, sandbox="host")
    assert rc == 0 and out["passed"], out


def test_through_ansible_playbook(ansible, repo_setup, drill_image, tmp_path):
    tmp_path.chmod(0o755)
    rc, output = ansible.playbook(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: check mode is pre-flight only
      veza.pgbackrest.dr_drill:
        stanza: {STANZA}
        config: {repo_setup['conf']}
        image: {drill_image}
        metrics_dir: {tmp_path}/m
        lock_dir: {tmp_path}/l
      check_mode: true
      register: pre
    - assert:
        that: [not pre.changed, "'would restore' in pre.msg"]
    - veza.pgbackrest.dr_drill:
        stanza: {STANZA}
        config: {repo_setup['conf']}
        image: {drill_image}
        metrics_dir: {tmp_path}/m
        lock_dir: {tmp_path}/l
        smoke_queries: [{{sql: "SELECT count(*) FROM users", min: {TOTAL}}}]
      register: d
    - assert:
        that: [d.changed, d.passed]
""", extra=["-i", "localhost,", "-c", "local"])
    assert rc == 0, output
