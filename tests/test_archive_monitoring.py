"""WAL archiving health reaches monitoring for real: two of Debian's prometheus-node-exporter, one
per data node (the shared backed-up primary and the standby of `pair`), serve the textfile
directory pgbackrest_archive_health writes to, and Debian's Prometheus scrapes both with the
collection's rules loaded (their `for:` shortened, as in test_dr_drill_monitoring.py). A healthy
primary and a standby raise no archiving alert; an archive directory made unwritable (real
archive-push failures) makes `ArchiveFailing` fire for the primary only, and repairing it
resolves the alert.
"""

import shutil
import time
from datetime import datetime

import pytest

from harness import BackedUpCluster, NodeExporter, PrometheusServer, as_postgres, run_module, scratch_dir
from test_dr_drill_monitoring import WAIT, shortened_rules

STANZA = BackedUpCluster.STANZA


@pytest.fixture(scope="module")
def monitoring():
    """Two node_exporters (primary, standby), each with its textfile directory, and Prometheus
    scraping both; yields {"primary": (dir, node), "standby": (dir, node)}, prometheus."""
    base = scratch_dir("vz-archmon-")
    try:
        dirs = {name: base / f"textfile-{name}" for name in ("primary", "standby")}
        for d in dirs.values():
            d.mkdir(mode=0o755)
            shutil.chown(d, "postgres", "postgres")
        rules = base / "veza_backup.rules.yml"
        assert shortened_rules(rules)["ArchiveFailing"] == "5m"
        with NodeExporter(base / "ne-primary", dirs["primary"]) as p, \
                NodeExporter(base / "ne-standby", dirs["standby"]) as s, \
                PrometheusServer(base / "prometheus", [p.address, s.address], [rules]) as prom:
            yield {"primary": (dirs["primary"], p), "standby": (dirs["standby"], s)}, prom
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def collect(module_bin, repo_setup, pair, monitoring):
    """Run the minute's check on both nodes, as their timers do; returns the primary's result."""
    nodes, _ = monitoring
    _, standby = pair
    clusters = {"primary": repo_setup["cluster"], "standby": standby}

    def run():
        results = {}
        for name, cluster in clusters.items():
            args = {"stanza": STANZA, "config": str(repo_setup["conf"]), "source": "sql",
                    "pgdata": str(cluster.pgdata), "login_unix_socket": str(cluster.socket_dir),
                    "login_port": cluster.port, "metrics_dir": str(nodes[name][0])}
            rc, out = run_module(module_bin("pgbackrest_archive_health"), args, stdin_mode=True)
            assert rc == 0, out
            results[name] = out
        assert results["standby"]["primary"] is False
        return results["primary"]
    return run


def archive_alerts(prom):
    """Active (pending or firing) Archive* alerts: [(alertname, instance, state)]."""
    return [(a["labels"]["alertname"], a["labels"].get("instance"), a["state"]) for a in prom.alerts()
            if a["labels"]["alertname"].startswith("Archive")]


def poll(what, probe, between=None, wait=WAIT):
    """Call `between` (when given) then `probe` until `probe` returns something true, for at most
    `wait` seconds."""
    deadline = time.monotonic() + wait
    while True:
        if between:
            between()
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {wait} s (last: {last!r})")
        time.sleep(0.5)


def evaluated_since(prom, moment):
    """Whether the veza_backup group was evaluated after `moment` (seconds since the epoch) plus
    the shortened `for:`: every alert its data can raise is pending or firing by then."""
    group, = [g for g in prom.api("rules")["groups"] if g["name"] == "veza_backup"]
    last = datetime.fromisoformat(group["lastEvaluation"][:26].rstrip("Z") + "+00:00").timestamp()
    return last > moment + 3


def test_a_healthy_primary_and_a_standby_raise_no_archiving_alert_and_a_broken_archive_does(
        monitoring, collect, repo_setup):
    nodes, prom = monitoring
    primary_addr, standby_addr = nodes["primary"][1].address, nodes["standby"][1].address
    cluster, conf = repo_setup["cluster"], repo_setup["conf"]
    as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "check")
    out = collect()
    assert out["primary"] is True and out["archiving_failing"] is False, out
    for _, node in nodes.values():
        assert "node_textfile_scrape_error 0" in node.metrics().splitlines()

    # Both nodes scraped, then an evaluation the shortened `for:` later: no archiving alert.
    def scraped():
        got = {r["metric"]["instance"]: r["value"][1] for r in prom.query(f'veza_archive_primary{{stanza="{STANZA}"}}')}
        return got == {primary_addr: "1", standby_addr: "0"}
    poll("both nodes' veza_archive_primary scraped", scraped)
    seen = time.time()
    poll("an evaluation after the data arrived", lambda: evaluated_since(prom, seen), between=collect)
    assert archive_alerts(prom) == [], archive_alerts(prom)

    archive = repo_setup["repo"] / "archive" / STANZA
    dirs = [archive, *[p for p in archive.rglob("*") if p.is_dir()]]
    try:
        for d in dirs:
            d.chmod(0o555)
        cluster.psql("INSERT INTO users (name) VALUES ('m'); SELECT pg_switch_wal()")

        def failing():
            return [a for a in archive_alerts(prom) if a[0] == "ArchiveFailing" and a[2] == "firing"]
        fired = poll("ArchiveFailing firing", failing, between=collect)
        assert fired == [("ArchiveFailing", primary_addr, "firing")], fired
        alert, = [a for a in prom.alerts() if a["labels"]["alertname"] == "ArchiveFailing"]
        assert alert["labels"]["stanza"] == STANZA and alert["labels"]["severity"] == "critical"
        assert alert["annotations"]["runbook_url"].endswith("#archivefailing")
    finally:
        for d in dirs:
            d.chmod(0o750)

    as_postgres("pgbackrest", f"--config={conf}", f"--stanza={STANZA}", "check")

    def resolved():
        return not [a for a in archive_alerts(prom) if a[0] == "ArchiveFailing"] and \
            not prom.query(f'ALERTS{{alertname="ArchiveFailing",stanza="{STANZA}"}}')
    poll("ArchiveFailing resolved", resolved, between=collect)
    assert collect()["archiving_failing"] is False
    assert not [a for a in archive_alerts(prom) if a[1] == standby_addr], archive_alerts(prom)
