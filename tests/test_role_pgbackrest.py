"""The pgbackrest role through playbooks/postgres_ha.yml on a real pg_auto_failover formation,
with the lab inventory (posix repository, secrets in an ansible-vault file)."""

import json
import re
import subprocess

import pytest

from harness import REPO, as_postgres

LAB = REPO / "playbooks/inventories/lab"
PLAYBOOK = REPO / "playbooks/postgres_ha.yml"


@pytest.fixture(scope="module")
def lab(formation):
    return {"dir": formation.base, "port": int(formation.env()["MONITOR_PORT"].strip("'"))}


def converge(ansible, lab, *extra):
    return ansible.run("ansible-playbook", "-i", LAB, PLAYBOOK, "--vault-password-file", LAB / "vault-password",
                       "-e", f"lab_dir={lab['dir']}", "-e", f"lab_base_port={lab['port']}", *extra)


def recap(output):
    """host -> {ok, changed, failed, ...} from the PLAY RECAP."""
    return {m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", output, re.M)}


def cipher_pass():
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file", LAB / "vault-password",
                          LAB / "group_vars/all/vault.yml"], check=True, capture_output=True, text=True).stdout
    return out.split(":", 1)[1].strip()


def node_conf(lab, node):
    return lab["dir"] / node / "pgbackrest.conf"


def test_placeholder_secret_fails_before_any_change(ansible, lab):
    rc, output = converge(ansible, lab, "-e", "vault_pgbackrest_cipher_pass=CHANGEME")
    assert rc != 0 and "pgbackrest_cipher_pass is still a placeholder" in output, output
    assert not node_conf(lab, "node1").exists() and not node_conf(lab, "node2").exists()
    assert recap(output)["node1"]["changed"] == 0


def test_converge_configures_archiving_and_creates_the_stanza_once(ansible, lab, formation):
    rc, output = converge(ansible, lab)
    assert rc == 0, output
    assert recap(output)["node1"]["failed"] == 0 and recap(output)["node2"]["failed"] == 0
    for n in (1, 2):
        conf = node_conf(lab, f"node{n}")
        assert conf.stat().st_mode & 0o777 == 0o640 and f"pg1-path={formation.pgdata(n)}" in conf.read_text()
        command = as_postgres("psql", "-h", lab["dir"], "-p", lab["port"] + n, "-XAtc", "SHOW archive_command").stdout.strip()
        assert command == f"pgbackrest --config={conf} --stanza=main archive-push %p"
    info = json.loads(as_postgres("pgbackrest", f"--config={node_conf(lab, 'node1')}", "--stanza=main", "info", "--output=json").stdout)
    assert info[0]["status"]["code"] == 2, info  # the stanza exists, no backup yet


def test_second_converge_changes_nothing(ansible, lab):
    rc, output = converge(ansible, lab)
    assert rc == 0, output
    assert recap(output)["node1"]["changed"] == 0 and recap(output)["node2"]["changed"] == 0, output


def test_units_pass_systemd_analyze_verify(lab):
    for node in ("node1", "node2"):
        units = sorted((lab["dir"] / node / "systemd").iterdir())
        assert [u.name for u in units] == ["pgbackrest-diff.service", "pgbackrest-diff.timer",
                                           "pgbackrest-full.service", "pgbackrest-full.timer"]
        proc = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        timer = (lab["dir"] / node / "systemd/pgbackrest-full.timer").read_text()
        assert "OnCalendar=Sun *-*-* 02:00:00 UTC" in timer and "RandomizedDelaySec=30min" in timer


def test_backup_service_backs_up_on_the_primary_only(lab):
    """Timers cannot fire without systemd as PID 1: scripts/run-unit runs each service as systemd would."""
    outcomes = {}
    for node in ("node1", "node2"):
        proc = subprocess.run([REPO / "scripts/run-unit", lab["dir"] / node / "systemd/pgbackrest-full.service"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outcomes[node] = "skipped" if "condition not met (exit 1), skipped" in proc.stderr else "ran"
    assert outcomes == {"node1": "ran", "node2": "skipped"}, outcomes
    info = json.loads(as_postgres("pgbackrest", f"--config={node_conf(lab, 'node1')}", "--stanza=main", "info", "--output=json").stdout)
    assert info[0]["status"]["code"] == 0 and [b["type"] for b in info[0]["backup"]] == ["full"]


def test_check_diff_converge_changes_nothing_and_prints_no_secret(ansible, lab):
    rc, output = converge(ansible, lab, "--check", "--diff")
    assert rc == 0, output
    assert recap(output)["node1"]["changed"] == 0 and recap(output)["node2"]["changed"] == 0, output
    assert cipher_pass() not in output
