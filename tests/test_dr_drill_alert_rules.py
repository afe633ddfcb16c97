"""The collection's Prometheus alert rules (the restore drill's and the backups' own): valid, and
each alert fires exactly when it should (promtool's unit tests in
tests/prometheus/veza_backup.test.yml)."""

import subprocess

from harness import REPO

RULES = REPO / "collection/files/prometheus/veza_backup.rules.yml"


def test_rules_are_valid():
    proc = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 19 rules found" in proc.stdout


def test_alerts_fire_when_they_should_and_not_otherwise():
    proc = subprocess.run(["promtool", "test", "rules", "veza_backup.test.yml"], cwd=REPO / "tests/prometheus",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_links_a_runbook_section_that_exists():
    import re
    import yaml
    runbook = (REPO / "collection/docs/runbook.md").read_text()
    anchors = {re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-")) for h in re.findall(r"^## (.+)$", runbook, re.M)}
    for rule in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]:
        assert rule["annotations"]["runbook_url"].rsplit("#", 1)[1] in anchors, rule["alert"]
