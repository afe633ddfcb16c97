"""The drill's metrics reach monitoring for real: Debian's prometheus-node-exporter serves the
textfile directory a real dr_drill writes to, and Debian's Prometheus scrapes it with the
collection's alert rules loaded, so a failed drill makes `BackupRestoreDrillFailed` fire and a
passing one resolves it.

The rules are the collection's file with only its `for:` durations shortened (a copy rewritten
here, never a second hand-written set), and Prometheus scrapes and evaluates every second. The
drills run the installed module binary as a program (JSON on stdin, `sandbox: host`) against the
shared cluster and posix repository of conftest's `repo_setup`.
"""

import re
import shutil
import time

import pytest
import yaml

from harness import REPO, BackedUpCluster, NodeExporter, PrometheusServer, run_module, scratch_dir

RULES = REPO / "collection/files/prometheus/veza_backup.rules.yml"

STANZA = BackedUpCluster.STANZA
ALERT = "BackupRestoreDrillFailed"
SHORT_FOR_SECONDS = 2
WAIT = 120  # seconds: a generous bound for scrape + evaluation + `for:`, with the two cores busy


def shortened_rules(path):
    """The collection's rule file with every `for:` set to SHORT_FOR_SECONDS, as a new file at `path`;
    returns {alert: original for}."""
    doc = yaml.safe_load(RULES.read_text())
    original = {}
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                original[rule["alert"]] = rule["for"]
                rule["for"] = f"{SHORT_FOR_SECONDS}s"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return original


@pytest.fixture(scope="module")
def monitoring():
    """node_exporter reading a textfile directory, and Prometheus scraping it with the shortened
    rules; yields (textfile_dir, node_exporter, prometheus). Stopped and removed on every path."""
    base = scratch_dir("vz-mon-")
    try:
        textfile = base / "textfile"
        textfile.mkdir(mode=0o755)
        rules = base / "veza_backup.rules.yml"
        assert shortened_rules(rules)[ALERT] == "5m"
        with NodeExporter(base / "node_exporter", textfile) as node, \
                PrometheusServer(base / "prometheus", [node.address], [rules]) as prom:
            yield textfile, node, prom
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def drill(repo_setup, module_bin, monitoring):
    """Run a host drill of the shared stanza, its metrics into node_exporter's textfile directory."""
    textfile = monitoring[0]

    def run(min_users):
        args = {"stanza": STANZA, "config": str(repo_setup["conf"]),
                "sandbox": "host", "metrics_dir": str(textfile), "lock_dir": str(textfile.parent / "lock"),
                "min_users_expected": min_users, "start_timeout": 60, "recovery_timeout": 120}
        return run_module(module_bin("dr_drill"), args, stdin_mode=True)
    return run


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def served(text, name):
    """{frozenset of (label, value): sample value} of the metric `name` in a scrape."""
    samples = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name):].rsplit(" ", 1)
            samples[frozenset(LABEL.findall(labels))] = float(value)
    return samples


def labels(**pairs):
    return frozenset(pairs.items())


def drill_alerts(prom):
    """This stanza's BackupRestoreDrillFailed alerts (pending or firing)."""
    return [a for a in prom.alerts() if a["labels"].get("alertname") == ALERT and a["labels"].get("stanza") == STANZA]


def wait_for(what, probe):
    """Poll `probe` until it returns something true (returned), for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {WAIT} s (last: {last!r})")
        time.sleep(0.5)


def test_rules_are_loaded_with_shortened_for(monitoring):
    _, _, prom = monitoring
    rules = {r["name"]: r for g in prom.api("rules")["groups"] if g["name"] == "veza_backup" for r in g["rules"]}
    assert set(rules) == {r["alert"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]}
    assert {r["duration"] for r in rules.values()} == {SHORT_FOR_SECONDS}
    assert all(r["health"] != "err" for r in rules.values()), rules


def test_failed_drill_fires_the_alert_and_a_passing_one_resolves_it(monitoring, drill):
    _, node, prom = monitoring
    stanza = labels(stanza=STANZA)
    assert not drill_alerts(prom)

    rc, out = drill(min_users=BackedUpCluster.TOTAL + 1)
    assert rc == 1 and out["reason"] == "smoke_failed", out
    scrape = node.metrics()
    assert served(scrape, "veza_backup_drill_last_success") == {stanza: 0}, scrape
    reason = labels(stanza=STANZA, reason="smoke_failed")
    assert served(scrape, "veza_backup_drill_failure_reason") == {reason: 1}, scrape
    assert stanza in served(scrape, "veza_backup_drill_last_run_timestamp_seconds"), scrape
    assert "node_textfile_scrape_error 0" in scrape.splitlines(), scrape

    # Both views: the alert (/api/v1/alerts) and its ALERTS series, appended after the same evaluation.
    def firing():
        alerts = [a for a in drill_alerts(prom) if a["state"] == "firing"]
        series = prom.query(f'ALERTS{{alertname="{ALERT}",alertstate="firing",stanza="{STANZA}"}}')
        return alerts if alerts and series else None
    alert, = wait_for(f"{ALERT} firing for stanza {STANZA}", firing)
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["instance"] == node.address
    assert STANZA in alert["annotations"]["summary"]
    assert alert["annotations"]["runbook_url"].endswith("#backuprestoredrillfailed")

    rc, out = drill(min_users=BackedUpCluster.TOTAL)
    assert rc == 0 and out["passed"], out
    scrape = node.metrics()
    assert served(scrape, "veza_backup_drill_last_success") == {stanza: 1}, scrape
    assert not served(scrape, "veza_backup_drill_failure_reason"), scrape

    # Resolved once Prometheus has scraped the passing drill and evaluated the rule since.
    def resolved():
        scraped = prom.query(f'veza_backup_drill_last_success{{stanza="{STANZA}"}} == 1')
        series = prom.query(f'ALERTS{{alertname="{ALERT}",stanza="{STANZA}"}}')
        return scraped and not drill_alerts(prom) and not series
    wait_for(f"{ALERT} resolved for stanza {STANZA}", resolved)
