"""pgbackrest_stanza on real PostgreSQL, pgBackRest 2.45, the S3 endpoint and a pg_auto_failover formation.

Each test writes its own pgBackRest config (0640 root:postgres) and repository, so the tests do
not depend on each other; the clusters (`pair`, `formation`) are shared per module.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from harness import Cluster, S3Server, as_postgres, canary, free_port, run_module, scratch_dir

MODULE = "pgbackrest_stanza"
FQCN = f"veza.pgbackrest.{MODULE}"
STANZA = "main"


@pytest.fixture(scope="module")
def binary(module_bin):
    return module_bin(MODULE)


@pytest.fixture
def work():
    base = scratch_dir("vz-stz-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def write_conf(path: Path, pgdata, port, socket_dir, repo=None, **options):
    """A pgBackRest config readable by postgres only; a posix repository at `repo` unless options say otherwise."""
    glob = {"lock-path": str(path.parent / "lock"), "log-level-file": "off", **options}
    if repo is not None:
        glob = {"repo1-path": str(repo), **glob}
        Path(repo).mkdir(parents=True, exist_ok=True)
        shutil.chown(repo, "postgres", "postgres")
    text = ("[global]\n" + "".join(f"{k}={v}\n" for k, v in glob.items())
            + f"\n[{STANZA}]\npg1-path={pgdata}\npg1-port={port}\npg1-socket-path={socket_dir}\n")
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text)
    shutil.chown(path, "root", "postgres")
    path.chmod(0o640)
    return path


def cluster_conf(work, cluster, name="pgbackrest.conf", repo="repo", **options):
    return write_conf(work / name, cluster.pgdata, cluster.port, cluster.socket_dir,
                      None if repo is None else work / repo, **options)


def stanza(binary, conf, pgdata, env=None, **extra):
    return run_module(binary, {"stanza": STANZA, "config": str(conf), "pgdata": str(pgdata), **extra}, env=env)


def created(repo):
    return (Path(repo) / "backup" / STANZA / "backup.info").exists()


# -- posix repository on a primary/standby pair ------------------------------------------------

def test_create_then_second_run_reports_no_change(binary, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    rc, out = stanza(binary, conf, primary.pgdata, source="sql")
    assert rc == 0 and out["changed"] is True, out
    assert (out["action"], out["role"], out["skipped_reason"]) == ("create", "primary", None)
    assert out["status_before"]["code"] == 1 and out["status"]["code"] == 2
    assert out["status"]["repos"][0]["key"] == 1 and out["status"]["repos"][0]["db"]["version"] == "15"
    assert any(c.endswith(" stanza-create") for c in out["commands"]), out["commands"]
    assert not any(" check" in c for c in out["commands"])
    assert created(work / "repo")

    rc, out = stanza(binary, conf, primary.pgdata, source="sql")
    assert rc == 0 and out["changed"] is False and out["action"] == "none", out
    assert [c.split()[-1] for c in out["commands"]] == ["--output=json"]


def test_check_mode_on_a_fresh_repository_predicts_and_creates_nothing(binary, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    rc, out = stanza(binary, conf, primary.pgdata, source="sql", _ansible_check_mode=True, _ansible_diff=True)
    assert rc == 0 and out["changed"] is True and out["action"] == "create", out
    assert out["diff"]["before"]["state"] == "absent" and out["diff"]["after"]["state"] == "present"
    assert any(c.endswith(" stanza-create") for c in out["commands"])
    assert not created(work / "repo") and list((work / "repo").iterdir()) == []


def test_a_streaming_standby_is_skipped_with_the_reason(binary, pair, work):
    _, standby = pair
    conf = cluster_conf(work, standby)
    rc, out = stanza(binary, conf, standby.pgdata, source="sql")
    assert rc == 0 and out["changed"] is False and "failed" not in out, out
    assert out["role"] == "standby"
    assert "not the writable primary" in out["skipped_reason"]
    assert not any("pgbackrest" in c for c in out["commands"])
    assert not created(work / "repo")


def test_a_role_given_by_the_caller_is_trusted(binary, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    rc, out = stanza(binary, conf, primary.pgdata, role="standby")
    assert rc == 0 and out["changed"] is False and out["skipped_reason"] and out["queries"] == [], out


def test_absent_needs_force_then_stops_deletes_and_starts(binary, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    assert stanza(binary, conf, primary.pgdata, source="sql")[1]["changed"] is True
    rc, out = stanza(binary, conf, primary.pgdata, source="sql", state="absent")
    assert rc == 1 and out["failed"] is True and out["msg"].startswith("force: "), out
    assert created(work / "repo")

    rc, out = stanza(binary, conf, primary.pgdata, source="sql", state="absent", force=True)
    assert rc == 0 and out["changed"] is True and out["action"] == "delete", out
    verbs = [c.split()[c.split().index("--log-level-stderr=warn") + 1] for c in out["commands"] if "pgbackrest" in c]
    assert verbs == ["info", "stop", "stanza-delete", "start", "info"], out["commands"]
    assert out["status"]["code"] == 1 and not created(work / "repo")
    assert not list((work / "lock").glob("*.stop")), "the stop file must be removed again"

    rc, out = stanza(binary, conf, primary.pgdata, source="sql", state="absent", force=True)
    assert rc == 0 and out["changed"] is False, out


def test_two_concurrent_runs_create_once(binary, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    procs = []
    for i in range(2):
        args = work / f"args{i}.json"
        args.write_text(json.dumps({"stanza": STANZA, "config": str(conf), "pgdata": str(primary.pgdata), "source": "sql"}))
        procs.append(subprocess.Popen([str(binary), str(args)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL))
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(r["changed"] for r in results) == [False, True], results
    assert created(work / "repo")


# -- a new cluster under an existing stanza: mismatch, then upgrade ------------------------------

@pytest.fixture
def reinitialized(work):
    """A cluster with a stanza, then re-created by initdb (a new system id) under the same config."""
    cluster = Cluster(work, "pg", free_port()).initdb().start()
    yield cluster
    cluster.stop()


def test_database_mismatch_fails_clearly_and_upgraded_fixes_it(binary, reinitialized, work):
    cluster = reinitialized
    conf = cluster_conf(work, cluster)
    rc, out = stanza(binary, conf, cluster.pgdata, source="sql")
    assert out["changed"] is True, out
    old_id = out["status"]["repos"][0]["db"]["system_id"]
    cluster.stop()
    shutil.rmtree(cluster.pgdata)
    time.sleep(1)  # initdb's system id has second resolution
    cluster.initdb().start()

    rc, out = stanza(binary, conf, cluster.pgdata, source="sql")
    assert rc == 28 and out["failed"] is True and out["rc"] == 28, out
    assert out["msg"].startswith("database mismatch: repo1 records system-id " + old_id), out["msg"]
    assert "state=upgraded" in out["msg"]

    rc, out = stanza(binary, conf, cluster.pgdata, source="sql", state="upgraded", _ansible_check_mode=True)
    assert rc == 0 and out["changed"] is True and out["action"] == "upgrade", out
    assert out["status"]["repos"][0]["db"]["system_id"] == old_id
    rc, out = stanza(binary, conf, cluster.pgdata, source="sql", state="upgraded")
    assert rc == 0 and out["changed"] is True and out["action"] == "upgrade", out
    assert out["status"]["repos"][0]["db"]["system_id"] != old_id
    for state in ("upgraded", "present"):
        rc, out = stanza(binary, conf, cluster.pgdata, source="sql", state=state)
        assert rc == 0 and out["changed"] is False, out


def test_pgbackrest_errors_keep_their_exit_code(binary, reinitialized, work):
    """PostgreSQL down while the role is given: stanza-create fails with pgBackRest's [056]."""
    cluster = reinitialized
    conf = cluster_conf(work, cluster, **{"db-timeout": "5"})
    cluster.stop()
    rc, out = stanza(binary, conf, cluster.pgdata, role="primary")
    cluster.start()
    assert rc == 56 and out["rc"] == 56 and out["failed"] is True, out
    assert out["msg"].startswith(f"creating stanza '{STANZA}': `pgbackrest ") and "exited with code 56" in out["msg"], out


def test_present_never_skips_the_database_match_when_the_cluster_does_not_answer(binary, reinitialized, work):
    """An existing stanza, PostgreSQL down, the role given: the module cannot compare the stanza
    with the running cluster, so it fails (56) instead of reporting the stanza fine."""
    cluster = reinitialized
    conf = cluster_conf(work, cluster, **{"db-timeout": "5"})
    rc, out = stanza(binary, conf, cluster.pgdata, source="sql")
    assert rc == 0, out
    cluster.stop()
    try:
        rc, out = stanza(binary, conf, cluster.pgdata, role="primary", connect_timeout=3)
    finally:
        cluster.start()
    assert rc == 56 and out["failed"] is True and out["changed"] is False, out
    assert "cannot be checked" in out["msg"], out["msg"]


# -- S3 over TLS, aes-256-cbc + zstd -------------------------------------------------------------

@pytest.fixture(scope="module")
def s3repo():
    base = scratch_dir("vz-stz-s3-")
    try:
        with S3Server(base / "s3") as s3:
            cluster = Cluster(base, "pg", free_port()).initdb()
            cipher = canary("stanza-cipher")
            opts = {**s3.pgbackrest_options(), "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": cipher,
                    "compress-type": "zst", "repo1-bundle": "y", "archive-timeout": "30", "start-fast": "y",
                    **S3Server.PGBACKREST_TIMEOUTS}
            conf = write_conf(base / "pgbackrest.conf", cluster.pgdata, cluster.port, cluster.socket_dir, **opts)
            wrong = canary("stanza-wrong-cipher")
            bad = write_conf(base / "wrong.conf", cluster.pgdata, cluster.port, cluster.socket_dir,
                             **{**opts, "repo1-cipher-pass": wrong})
            with open(cluster.pgdata / "postgresql.conf", "a") as f:
                f.write(f"archive_mode = on\narchive_command = 'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'\n")
            cluster.start()
            try:
                yield {"cluster": cluster, "conf": conf, "bad": bad, "s3": s3,
                       "secrets": [cipher, wrong, s3.secret_key, s3.access_key]}
            finally:
                cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_s3_create_backup_and_info_ok(binary, s3repo):
    c, conf = s3repo["cluster"], s3repo["conf"]
    rc, out = stanza(binary, conf, c.pgdata, source="sql", io_timeout=3)
    assert rc == 0 and out["changed"] is True, out
    assert out["status"]["repos"][0]["cipher"] == "aes-256-cbc"
    assert any("--io-timeout=3" in c for c in out["commands"])
    assert s3repo["s3"].object_files(f"pgbackrest/backup/{STANZA}/")
    proc = as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "--type=full", "backup", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rc, out = stanza(binary, conf, c.pgdata, source="sql")
    assert rc == 0 and out["changed"] is False and out["status"]["code"] == 0, out
    assert out["status"]["message"] == "ok"
    text = json.dumps(out)
    assert not any(s in text for s in s3repo["secrets"])


def test_s3_wrong_cipher_pass_fails_with_the_error_surfaced(binary, s3repo):
    c = s3repo["cluster"]
    stanza(binary, s3repo["conf"], c.pgdata, source="sql")  # exists whatever ran before
    rc, out = stanza(binary, s3repo["bad"], c.pgdata, source="sql")
    assert rc != 0 and out["failed"] is True, out
    assert out["msg"].startswith("pgBackRest reports a problem with the stanza"), out["msg"]
    assert "repo1: status 99" in out["msg"]
    assert out["status"]["repos"][0]["code"] == 99
    text = json.dumps(out)
    assert not any(s in text for s in s3repo["secrets"]), "a secret leaked"


# -- pg_auto_failover formation ------------------------------------------------------------------

def node_conf(formation, n, work, repo):
    lines = (Path(formation.pgdata(n)) / "postmaster.pid").read_text().splitlines()
    return write_conf(work / f"node{n}.conf", formation.pgdata(n), lines[3].strip(), lines[4].strip(), repo)


def test_formation_creates_once_and_follows_a_switchover(binary, module_bin, formation, work):
    repo = work / "repo"
    confs = {n: node_conf(formation, n, work, repo) for n in (1, 2)}
    outs = {n: stanza(binary, confs[n], formation.pgdata(n), env=formation.xdg()) for n in (1, 2)}
    assert all(rc == 0 for rc, _ in outs.values()), outs
    assert outs[1][1]["changed"] is True and outs[1][1]["role"] == "primary", outs[1]
    assert outs[2][1]["changed"] is False and "not the writable primary" in outs[2][1]["skipped_reason"], outs[2]

    formation.switchover()
    detect = module_bin("pg_role_detect")
    deadline = time.monotonic() + 90
    while True:
        roles = [run_module(detect, {"pgdata": formation.pgdata(n)}, env=formation.xdg())[1]["role"] for n in (1, 2)]
        if roles == ["standby", "primary"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert roles == ["standby", "primary"]
    rc, out = stanza(binary, confs[2], formation.pgdata(2), env=formation.xdg())
    assert rc == 0 and out["changed"] is False and out["role"] == "primary" and out["skipped_reason"] is None, out
    rc, out = stanza(binary, confs[1], formation.pgdata(1), env=formation.xdg())
    assert rc == 0 and out["changed"] is False and out["skipped_reason"], out


# -- through ansible-playbook from the installed collection -------------------------------------

def test_playbook_check_then_apply_then_no_change(ansible, pair, work):
    primary, _ = pair
    conf = cluster_conf(work, primary)
    play = f"""
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - {FQCN}:
        stanza: {STANZA}
        config: {conf}
        pgdata: {primary.pgdata}
        source: sql
      register: result
    - ansible.builtin.assert:
        that: result.action == 'create' or (result.action == 'none' and not result.changed)
"""
    rc, output = ansible.playbook(play, extra=("--check",))
    assert rc == 0 and "changed=1" in output, output
    assert not created(work / "repo")
    rc, output = ansible.playbook(play)
    assert rc == 0 and "changed=1" in output, output
    assert created(work / "repo")
    rc, output = ansible.playbook(play)
    assert rc == 0 and "changed=0" in output, output
