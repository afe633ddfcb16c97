"""pgbackrest_info against real repositories: a posix one with full + diff + incr backups (and its
node_exporter metrics), a stanza that is not there, and S3 over TLS with an aes-256-cbc cipher,
read with the right and a wrong cipher pass. No secret of the configuration may appear in any
result."""

import json
import re
import shutil
import subprocess
import time

import pytest

from harness import as_postgres, run_module, scratch_dir
from test_harness_s3 import STANZA as S3_STANZA
# The S3 repository's fixtures (an endpoint over TLS, a cipher, a full backup): shared code, each
# test module gets its own instances.
from test_harness_s3 import archived_wal, full_backup, repo, stanza

__all__ = ["archived_wal", "full_backup", "repo", "stanza"]


@pytest.fixture(scope="module")
def chain(repo_setup):
    """The shared drill repository (a full backup) with a diff and an incr on top."""
    conf, name = repo_setup["conf"], "drill"
    pgb = lambda *a: as_postgres("pgbackrest", f"--config={conf}", f"--stanza={name}", *a)  # noqa: E731
    repo_setup["cluster"].psql("INSERT INTO users (name) VALUES ('d')")
    pgb("--type=diff", "backup")
    repo_setup["cluster"].psql("INSERT INTO users (name) VALUES ('i')")
    pgb("--type=incr", "backup")
    return repo_setup


def info(module_bin, stdin_mode=False, **args):
    rc, out = run_module(module_bin("pgbackrest_info"), args, stdin_mode=stdin_mode)
    assert rc == 0, out
    assert out["changed"] is False
    return out


def test_a_full_diff_incr_chain_is_reported_with_its_dependencies(module_bin, chain):
    out = info(module_bin, config=str(chain["conf"]), stanza="drill", set_facts=True)
    assert out["ok"] is True
    [s] = out["stanzas"]
    assert s["status"] == {"code": 0, "message": "ok", "meaning": "ok"}
    types = [b["type"] for b in s["backups"]]
    assert types == ["full", "diff", "incr"], types
    full, diff, incr = s["backups"]
    assert diff["prior"] == full["label"] and incr["prior"] == diff["label"]
    assert (s["last_full"], s["last_diff"], s["last_incr"]) == (full["label"], diff["label"], incr["label"])
    assert all(b["stop"] >= b["start"] > 0 and b["size"] > 0 and not b["error"] for b in s["backups"])
    assert s["archives"][0]["min"] <= full["wal_start"] <= s["archives"][0]["max"]
    assert out["ansible_facts"]["pgbackrest_info"]["stanzas"][0]["name"] == "drill"


def test_metrics_give_each_type_s_newest_stop_time_and_promtool_accepts_them(module_bin, chain):
    # Run as the backup service runs it: a program, its settings on stdin; as root it becomes
    # postgres, who writes the file.
    prom = scratch_dir("vz-prom-")
    try:
        before = int(time.time())
        out = info(module_bin, stdin_mode=True, config=str(chain["conf"]), stanza="drill", metrics_dir=str(prom))
        after = int(time.time())
        path = prom / "veza_backup_drill.prom"
        assert out["metrics_files"] == [str(path)]
        assert "1 metrics file(s) written" in out["msg"]
        assert [p.name for p in prom.iterdir()] == [path.name], "no temporary file left"
        assert path.stat().st_mode & 0o7777 == 0o644
        text = path.read_text()
        check = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True)
        assert check.returncode == 0, check.stdout + check.stderr + text
    finally:
        shutil.rmtree(prom)
    samples = {name: int(value) for name, value in re.findall(r"^(veza_backup_\S+) (\S+)$", text, re.M)}
    [s] = out["stanzas"]
    st = 'stanza="drill"'
    assert samples[f"veza_backup_status_code{{{st}}}"] == 0
    assert before <= samples[f"veza_backup_info_timestamp_seconds{{{st}}}"] <= after
    for b in s["backups"]:
        t = f'{st},type="{b["type"]}"'
        assert samples[f"veza_backup_last_timestamp_seconds{{{t}}}"] == b["stop"], text
        assert samples[f"veza_backup_last_size_bytes{{{t}}}"] == b["size"]
        assert samples[f"veza_backup_last_repo_size_bytes{{{t}}}"] == b["repo_size"]
        assert samples[f"veza_backup_sets{{{t}}}"] == 1
        assert samples[f"veza_backup_error{{{t}}}"] == 0
        assert samples[f"veza_backup_last_duration_seconds{{{t}}}"] == b["stop"] - b["start"]
        assert samples[f'veza_backup_last_label_info{{{t},label="{b["label"]}"}}'] == 1
    newest = max(a["max"] for a in s["archives"])
    assert samples[f'veza_backup_archive_max_info{{{st},segment="{newest}"}}'] == 1
    assert len([k for k in samples if k.startswith("veza_backup_archive_max_info")]) == 1


def test_each_run_is_recorded_a_failure_and_a_skip_without_reading_the_repository(module_bin, chain):
    """As the backup services' ExecStopPost= runs it: $SERVICE_RESULT says how the backup ended.
    A failed or skipped run leaves the repository's file as the last backup wrote it."""
    prom = scratch_dir("vz-prom-")
    try:
        base = {"config": str(chain["conf"]), "stanza": "drill", "metrics_dir": str(prom),
                "run_result": "systemd"}
        recorded = {}
        for run_type, result in (("full", "success"), ("diff", "exit-code"), ("incr", "exec-condition")):
            before = int(time.time())
            rc, out = run_module(module_bin("pgbackrest_info"), {**base, "run_type": run_type},
                                 env={"SERVICE_RESULT": result}, stdin_mode=True)
            assert rc == 0, out
            text = (prom / f"veza_backup_drill@{run_type}.prom").read_text()
            recorded[run_type] = (out, text, before)
            if run_type == "full":
                repo_file = (prom / "veza_backup_drill.prom").read_text()
        names = sorted(p.name for p in prom.iterdir())
        checks = {n: subprocess.run(["promtool", "check", "metrics"], input=(prom / n).read_text(),
                                    text=True, capture_output=True) for n in names}
        after_all = (prom / "veza_backup_drill.prom").read_text()
    finally:
        shutil.rmtree(prom)
    assert names == ["veza_backup_drill.prom", "veza_backup_drill@diff.prom",
                     "veza_backup_drill@full.prom", "veza_backup_drill@incr.prom"], names
    for name, check in checks.items():
        assert check.returncode == 0, (name, check.stdout + check.stderr)
    expected = {"full": "success", "diff": "failed", "incr": "skipped"}
    for run_type, (out, text, before) in recorded.items():
        assert out["run"]["result"] == expected[run_type], out
        results = dict(re.findall(r'^veza_backup_run_result\{stanza="drill",type="' + run_type
                                  + r'",result="(\w+)"\} (\d)$', text, re.M))
        assert results == {r: str(int(r == expected[run_type])) for r in ("success", "failed", "skipped")}, text
        [stamp] = re.findall(r'^veza_backup_run_timestamp_seconds\{stanza="drill",type="' + run_type
                             + r'"\} (\d+)$', text, re.M)
        assert before <= int(stamp) <= time.time(), text
    assert recorded["full"][0]["stanzas"][0]["status"]["code"] == 0
    assert recorded["diff"][0]["commands"] == [] and recorded["incr"][0]["commands"] == []
    assert recorded["diff"][0]["ok"] is False and recorded["incr"][0]["ok"] is True
    assert after_all == repo_file, "a failed or skipped run rewrote the repository's file"


def test_check_mode_writes_no_metrics(module_bin, chain):
    prom = scratch_dir("vz-prom-")
    try:
        out = info(module_bin, config=str(chain["conf"]), stanza="drill", metrics_dir=str(prom),
                   _ansible_check_mode=True)
        assert list(prom.iterdir()) == []
    finally:
        shutil.rmtree(prom)
    assert out["metrics_files"] == [str(prom / "veza_backup_drill.prom")]
    assert "check mode: 1 metrics file(s) not written" in out["msg"]


def test_check_mode_reports_the_same_and_every_stanza_is_listed_without_one(module_bin, chain):
    out = info(module_bin, config=str(chain["conf"]), _ansible_check_mode=True)
    assert [s["name"] for s in out["stanzas"]] == ["drill"]
    assert "--stanza" not in out["commands"][0]


def test_a_missing_stanza_is_status_1(module_bin, chain):
    out = info(module_bin, config=str(chain["conf"]), stanza="nosuch")
    assert out["ok"] is False
    assert out["stanzas"][0]["status"]["code"] == 1
    assert out["stanzas"][0]["status"]["meaning"] == "missing stanza path"


def test_s3_over_tls_with_the_right_and_a_wrong_cipher_pass(module_bin, repo, full_backup):
    out = info(module_bin, config=str(repo.config), stanza=S3_STANZA, io_timeout=10)
    assert out["ok"] is True, out
    [s] = out["stanzas"]
    assert s["repos"][0]["cipher"] == "aes-256-cbc"
    assert [b["type"] for b in s["backups"]] == ["full"]
    wrong = repo.write_config("pgbackrest-wrong-pass.conf", **{"repo1-cipher-pass": repo.wrong_cipher_pass})
    bad = info(module_bin, config=str(wrong), stanza=S3_STANZA, io_timeout=10)
    assert bad["ok"] is False
    assert bad["stanzas"][0]["status"]["code"] == 99, bad
    text = json.dumps(out) + json.dumps(bad)
    for secret in repo.secret_values() + [repo.s3.access_key]:
        assert str(secret) not in text
