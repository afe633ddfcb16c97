"""pgbackrest_archive_health against real clusters and a real posix repository: a healthy primary
(its counters, position and repository agree, the archive is whole), a streaming standby (it
records that it is not the primary and fails nothing), a segment removed from a copy of the
repository (a lost segment, named), archiving broken for real (the repository's archive directory
unwritable: failures newer than the last success) and repaired, and the pgbackrest role's units
run as systemd would. `promtool check metrics` accepts every file written."""

import json
import re
import shutil
import subprocess
import time

import pytest

from harness import (PGBIN, REPO, BackedUpCluster, Cluster, as_postgres, free_port, repository_copy, run_module,
                     scratch_dir, write_pgbackrest_config)

STANZA = BackedUpCluster.STANZA
SAMPLE = re.compile(r"^(veza_archive_\w+)(\{[^}]*\})? (\S+)$", re.M)


def samples(text):
    """{'name{labels}': value} of a metrics file."""
    return {name + (labels or ""): float(value) for name, labels, value in SAMPLE.findall(text)}


def promtool_accepts(text):
    check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr + text


@pytest.fixture
def textfile():
    d = scratch_dir("vz-arch-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def health(module_bin, cluster, conf, textfile=None, **extra):
    """Run the module as the timers do (a program, settings on stdin, as root becoming postgres)."""
    args = {"stanza": STANZA, "config": str(conf), "source": "sql", "pgdata": str(cluster.pgdata),
            "continuity_grace": 0, **extra}
    if textfile is not None:
        args["metrics_dir"] = str(textfile)
    rc, out = run_module(module_bin("pgbackrest_archive_health"), args, stdin_mode=True)
    assert rc == 0, out
    assert out["changed"] is False
    return out


def files(textfile):
    return {p.name: p.read_text() for p in sorted(textfile.iterdir())}


def switch_and_archive(cluster, conf):
    """Write something, switch WAL and wait until it is archived (`pgbackrest check`)."""
    cluster.psql("INSERT INTO users (name) VALUES ('w')")
    as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "check")


def test_a_healthy_primary_reports_counters_position_and_a_whole_archive(module_bin, repo_setup, textfile):
    cluster, conf = repo_setup["cluster"], repo_setup["conf"]
    switch_and_archive(cluster, conf)
    out = health(module_bin, cluster, conf, textfile, continuity=True)
    assert out["primary"] is True and out["role"] == "primary", out
    assert out["archiving_failing"] is False
    a, repo = out["archiver"], out["repo"]
    assert a["archived_count"] >= 2 and a["failed_count"] == 0, a
    assert repo["status_code"] == 0 and repo["newest_segment"] == a["last_archived_wal"], out
    assert out["behind_segments"] == 0, out
    cont = out["continuity"]
    assert cont["missing"] == [] and cont["checked_segments"] >= 2, cont
    assert cont["to"] == a["last_archived_wal"]
    written = files(textfile)
    assert set(written) == {f"veza_archive_{STANZA}.prom", f"veza_archive-continuity_{STANZA}.prom"}
    assert all((textfile / n).stat().st_mode & 0o7777 == 0o644 for n in written)
    for text in written.values():
        promtool_accepts(text)
    s = samples(written[f"veza_archive_{STANZA}.prom"])
    st = f'{{stanza="{STANZA}"}}'
    assert s[f"veza_archive_primary{st}"] == 1
    assert s[f"veza_archive_archived_total{st}"] == a["archived_count"]
    assert s[f"veza_archive_failed_total{st}"] == 0
    assert s[f"veza_archive_behind_segments{st}"] == 0
    assert s[f"veza_archive_segment_size_bytes{st}"] == 16 * 1024 * 1024
    assert s[f"veza_archive_current_segment{st}"] == s[f"veza_archive_repo_newest_segment{st}"] + 1
    assert abs(s[f"veza_archive_repo_newest_timestamp_seconds{st}"] - time.time()) < 600
    assert "# TYPE veza_archive_failed_total counter" in written[f"veza_archive_{STANZA}.prom"]
    c = samples(written[f"veza_archive-continuity_{STANZA}.prom"])
    for cls in ("lost", "delayed", "uploading"):
        assert c[f'veza_archive_continuity_missing_segments{{stanza="{STANZA}",class="{cls}"}}'] == 0
    assert not [k for k in c if "first_missing" in k]


def test_check_mode_reads_everything_and_writes_nothing(module_bin, repo_setup, textfile):
    out = health(module_bin, repo_setup["cluster"], repo_setup["conf"], textfile, continuity=True,
                 _ansible_check_mode=True)
    assert out["primary"] is True and out["continuity"] is not None
    assert list(textfile.iterdir()) == []
    assert "check mode: 2 metrics file(s) not written" in out["msg"]


def test_a_standby_records_that_it_is_not_the_primary_and_fails_nothing(module_bin, repo_setup, pair, textfile):
    _, standby = pair
    out = health(module_bin, standby, repo_setup["conf"], textfile, continuity=True,
                 login_unix_socket=str(standby.socket_dir), login_port=standby.port)
    assert out["primary"] is False and out["role"] == "standby", out
    assert out["archiver"] is None and out["repo"] is None and out["continuity"] is None
    assert not any("pgbackrest" in c for c in out["commands"]), "a standby does not read the repository"
    written = files(textfile)
    for text in written.values():
        promtool_accepts(text)
    s = samples(written[f"veza_archive_{STANZA}.prom"])
    assert set(s) == {f'veza_archive_{m}{{stanza="{STANZA}"}}' for m in
                      ("primary", "postgres_up", "collect_timestamp_seconds")}, s
    assert s[f'veza_archive_primary{{stanza="{STANZA}"}}'] == 0
    c = samples(written[f"veza_archive-continuity_{STANZA}.prom"])
    assert list(c) == [f'veza_archive_continuity_timestamp_seconds{{stanza="{STANZA}"}}']


def test_a_segment_removed_from_the_repository_is_a_lost_segment_named_by_its_name(module_bin, repo_setup,
                                                                                   textfile):
    cluster, conf = repo_setup["cluster"], repo_setup["conf"]
    for _ in range(3):
        switch_and_archive(cluster, conf)
    with repository_copy(repo_setup["repo"], cluster, STANZA) as (copy, copy_conf):
        segments = sorted(p for p in (copy / "archive" / STANZA).rglob("*") if re.match(r"^[0-9A-F]{24}-", p.name))
        assert len(segments) >= 4, segments
        victim = segments[-2]
        victim.unlink()
        out = health(module_bin, cluster, copy_conf, textfile, continuity=True)
    missing = {m["class"]: m for m in out["continuity"]["missing"]}
    assert missing["lost"] == {"class": "lost", "count": 1, "first": victim.name[:24]}, out["continuity"]
    assert "continuity: 1 segment(s) lost" in out["msg"]
    text = (textfile / f"veza_archive-continuity_{STANZA}.prom").read_text()
    promtool_accepts(text)
    s = samples(text)
    assert s[f'veza_archive_continuity_missing_segments{{stanza="{STANZA}",class="lost"}}'] == 1
    first = f'veza_archive_continuity_first_missing_info{{stanza="{STANZA}",class="lost",segment="{victim.name[:24]}"}}'
    assert s[first] == 1, text


def test_an_unwritable_archive_is_failing_archiving_until_repaired(module_bin, repo_setup, textfile):
    cluster, conf = repo_setup["cluster"], repo_setup["conf"]
    archive = repo_setup["repo"] / "archive" / STANZA
    dirs = [archive, *[p for p in archive.rglob("*") if p.is_dir()]]
    before = health(module_bin, cluster, conf)["archiver"]
    try:
        for d in dirs:
            d.chmod(0o555)
        cluster.psql("INSERT INTO users (name) VALUES ('f'); SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while True:
            out = health(module_bin, cluster, conf, textfile)
            if out["archiving_failing"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert out["archiving_failing"] is True, out
        assert out["archiver"]["failed_count"] > before["failed_count"]
        assert out["msg"].startswith("archiving is failing"), out["msg"]
        text = (textfile / f"veza_archive_{STANZA}.prom").read_text()
        promtool_accepts(text)
        s = samples(text)
        st = f'{{stanza="{STANZA}"}}'
        assert s[f"veza_archive_last_failed_timestamp_seconds{st}"] > s[f"veza_archive_last_archived_timestamp_seconds{st}"]
    finally:
        for d in dirs:
            d.chmod(0o750)
    switch_and_archive(cluster, conf)
    out = health(module_bin, cluster, conf, textfile)
    assert out["archiving_failing"] is False, out
    assert out["behind_segments"] == 0, out


def test_continuity_follows_a_promotion_through_the_history_file_to_the_new_timeline(module_bin, textfile):
    """A standby of a backed-up primary, archiving into the same repository once promoted: the
    old primary stops, the standby is promoted to timeline 2 (pgBackRest stores 00000002.history
    and the old timeline's last segment as .partial), and the check reads the history file to
    expect timeline 1 up to the switch, then timeline 2: nothing missing."""
    with BackedUpCluster() as b:
        standby = Cluster(b.base, "standby", free_port()).basebackup_from(b.cluster)
        conf = b.base / "pgbackrest-standby.conf"
        write_pgbackrest_config(conf, b.base, b.repo, standby, STANZA)
        with open(standby.pgdata / "postgresql.conf", "a") as f:
            f.write(f"archive_command = 'pgbackrest --config={conf} --stanza={STANZA} archive-push %p'\n")
        standby.start()
        try:
            b.cluster.psql("INSERT INTO users (name) VALUES ('before the failover')")
            b.cluster.stop()
            as_postgres(PGBIN / "pg_ctl", "-D", standby.pgdata, "-w", "promote")
            deadline = time.monotonic() + 60
            while standby.psql("SELECT pg_is_in_recovery()") != "f":
                assert time.monotonic() < deadline, "the standby was not promoted"
                time.sleep(0.2)
            for _ in range(2):
                standby.psql("INSERT INTO users (name) VALUES ('after the failover')")
                as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "check")
            out = health(module_bin, standby, conf, textfile, continuity=True,
                         login_unix_socket=str(standby.socket_dir), login_port=standby.port)
        finally:
            standby.stop()
    assert out["primary"] is True, out
    assert out["archiver"]["current_segment"].startswith("00000002"), out
    cont = out["continuity"]
    assert cont["missing"] == [], out
    assert cont["from"].startswith("00000001") and cont["to"].startswith("00000002"), cont
    assert any("00000002.history" in c and "repo-get" in c for c in out["commands"]), out["commands"]


PLAY = """- hosts: db
  gather_facts: false
  roles:
    - role: veza.pgbackrest.pgbackrest
"""


def test_the_role_s_units_write_the_metrics_on_every_node(ansible, repo_setup, pair):
    """The role converged on the shared backed-up cluster (the primary) and on the standby of
    `pair`, each with its own configuration and units; run-unit runs the rendered services as
    systemd would. Last in this file: the primary's ALTER SYSTEM settings are reset afterwards."""
    base = scratch_dir("vz-arch-role-")
    try:
        _, standby = pair
        runs = {}
        for name, cluster in (("primary", repo_setup["cluster"]), ("standby", standby)):
            host = base / name
            variables = {
                "ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3",
                "pgbackrest_stanza": STANZA,
                "pgbackrest_pgdata": str(cluster.pgdata), "pgbackrest_pg_socket_path": str(cluster.socket_dir),
                "pgbackrest_pg_port": cluster.port, "pgbackrest_role_source": "sql", "pgbackrest_install": False,
                "pgbackrest_manage_services": False, "pgbackrest_repo_type": "posix",
                "pgbackrest_repo_path": str(repo_setup["repo"]), "pgbackrest_cipher_type": "none",
                "pgbackrest_config_path": str(host / "pgbackrest.conf"), "pgbackrest_bin_dir": str(host / "bin"),
                "pgbackrest_systemd_dir": str(host / "systemd"), "pgbackrest_metrics_dir": str(host / "metrics"),
                "pgbackrest_heartbeat": False, "pgbackrest_archive_timeout": 60,
                "pgbackrest_global_extra": {"lock-path": str(base / "lock"), "log-path": str(base / "log"),
                                            "log-level-file": "off"},
            }
            inventory = ansible.workdir / f"archive-{name}-inventory.json"
            inventory.write_text(json.dumps({"db": {"hosts": {name: variables}}}))
            rc, output = ansible.playbook(PLAY, inventory=inventory, name=f"archive-{name}.yml")
            assert rc == 0, output
            for unit in ("health", "continuity"):
                path = host / "systemd" / f"pgbackrest-archive-{unit}.service"
                timer = (host / "systemd" / f"pgbackrest-archive-{unit}.timer").read_text()
                assert "\nOnCalendar=" in timer and "\nExecCondition=" not in path.read_text()
                proc = subprocess.run([REPO / "scripts" / "run-unit", path], capture_output=True, text=True)
                assert proc.returncode == 0 and "done" in proc.stderr, proc.stdout + proc.stderr
                runs[name, unit] = json.loads(proc.stdout.strip().splitlines()[-1])
            written = files(host / "metrics")
            for text in written.values():
                promtool_accepts(text)
            s = samples(written[f"veza_archive_{STANZA}.prom"])
            assert s[f'veza_archive_primary{{stanza="{STANZA}"}}'] == (1 if name == "primary" else 0), written
            assert f"veza_archive-continuity_{STANZA}.prom" in written
        assert runs["primary", "continuity"]["continuity"]["missing"] == [], runs
        assert runs["standby", "health"]["primary"] is False
    finally:
        # Back to the archive_command of postgresql.conf (the role's points into `base`).
        repo_setup["cluster"].psql("ALTER SYSTEM RESET ALL")
        repo_setup["cluster"].psql("SELECT pg_reload_conf()")
        shutil.rmtree(base, ignore_errors=True)
