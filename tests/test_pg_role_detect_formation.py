"""pg_role_detect on a real pg_auto_failover formation (monitor + 2 nodes on loopback).

The tests run in file order on one formation: roles, Ansible by FQCN (ad hoc, check mode, -e
strings, module_defaults), over SSH, then a switchover, then the monitor stopped, then a node's
PostgreSQL stopped. Each test that breaks something puts it back.
"""

import time

import pytest

from harness import run_module

MODULE = "pg_role_detect"
FQCN = f"veza.pgbackrest.{MODULE}"


@pytest.fixture(scope="module")
def binary(module_bin):
    return module_bin(MODULE)


def detect(binary, formation, n, **extra):
    return run_module(binary, {"pgdata": formation.pgdata(n), **extra}, env=formation.xdg())


def wait_roles(binary, formation, want, timeout=60):
    """Poll until nodes 1 and 2 report `want` (a formation converges after a switchover)."""
    deadline = time.monotonic() + timeout
    while True:
        got = tuple(detect(binary, formation, n)[1]["role"] for n in (1, 2))
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.5)


def test_primary_and_secondary_are_told_apart(formation, binary):
    for n, role, state in ((1, "primary", "primary"), (2, "standby", "secondary")):
        rc, out = detect(binary, formation, n)
        assert rc == 0, out
        assert out["role"] == role and out["is_primary"] is (role == "primary")
        assert (out["source"], out["sources_agree"], out["monitor_reachable"]) == ("pg_autoctl+sql", True, True)
        assert (out["node_name"], out["current_state"], out["assigned_state"]) == (f"node{n}", state, state)
        assert out["health"] == 1 and out["timeline"] >= 1 and out["pgdata"] == formation.pgdata(n)
        assert out["commands"][0].startswith("pg_autoctl show state --pgdata ")
        assert out["ansible_facts"]["pg_autoctl_node_name"] == f"node{n}"


def test_several_keepers_without_pgdata_is_refused(formation, binary):
    rc, out = run_module(binary, {}, env=formation.xdg())
    assert rc == 1
    assert out["msg"].startswith("several pg_auto_failover keepers are configured on this host")
    assert formation.pgdata(1) in out["msg"] and "set pgdata" in out["msg"]


def test_adhoc_by_fqcn_and_check_mode_agree(formation, ansible):
    for n, role in ((1, "primary"), (2, "standby")):
        for extra in ((), ("--check",)):
            rc, results, output = ansible.adhoc(FQCN, f"pgdata={formation.pgdata(n)}", extra, env=formation.xdg())
            assert rc == 0, output
            assert results["localhost"]["role"] == role, output
            assert results["localhost"]["ansible_facts"]["pg_is_primary"] is (role == "primary")
            assert results["localhost"]["changed"] is False


def test_adhoc_errors_name_the_option(formation, ansible):
    rc, results, output = ansible.adhoc(FQCN, "pgdata=/x sorce=sql")
    assert rc != 0 and "Unsupported parameters for (pg_role_detect) module: sorce" in results["localhost"]["msg"], output
    rc, results, output = ansible.adhoc(FQCN, "source=sql port=five")
    assert rc != 0 and "argument 'login_port' is of type str ('five')" in results["localhost"]["msg"], output


def test_playbook_with_string_extra_vars_and_module_defaults(formation, ansible):
    env = formation.xdg()
    play = f"""
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/veza.pgbackrest.postgresql:
      login_unix_socket: {formation.base}
    {FQCN}:
      source: sql
  tasks:
    - name: port and boolean arrive as strings from -e and are coerced
      {FQCN}:
        login_port: "{{{{ node_port }}}}"
        fail_on_unknown: "{{{{ strict }}}}"
      register: r
    - ansible.builtin.assert:
        that:
          - r.role == 'primary'
          - r.source == 'sql'
          - not r.changed
          - pg_role == 'primary'
"""
    port = formation.env()["NODE1_PORT"].strip("'")
    rc, output = ansible.playbook(play, extra=["-e", f"node_port={port}", "-e", "strict=yes"], env=env)
    assert rc == 0, output


def test_over_ssh_to_loopback(formation, ansible, sshd):
    inventory = ansible.workdir / "ssh_inventory"
    inventory.write_text(f"[nodes]\nnode1 pgdata={formation.pgdata(1)} {sshd}\nnode2 pgdata={formation.pgdata(2)} {sshd}\n")
    xdg = formation.xdg()
    play = f"""
- hosts: nodes
  gather_facts: false
  environment:
    XDG_CONFIG_HOME: {xdg['XDG_CONFIG_HOME']}
    XDG_DATA_HOME: {xdg['XDG_DATA_HOME']}
  tasks:
    - {FQCN}:
        pgdata: "{{{{ pgdata }}}}"
      register: r
    - ansible.builtin.assert:
        that:
          - r.role == ('primary' if inventory_hostname == 'node1' else 'standby')
          - r.node_name == inventory_hostname
          - r.source == 'pg_autoctl+sql'
    - name: check mode over SSH gives the same answer
      {FQCN}:
        pgdata: "{{{{ pgdata }}}}"
      check_mode: true
      register: c
    - ansible.builtin.assert:
        that: c.role == r.role and not c.changed
"""
    rc, output = ansible.playbook(play, inventory=inventory, name="ssh.yml")
    assert rc == 0, output
    assert "node1" in output and "ok=4" in output


def test_switchover_swaps_the_answers(formation, binary, ansible):
    formation.switchover()
    assert wait_roles(binary, formation, ("standby", "primary")) == ("standby", "primary")
    for n, role in ((1, "standby"), (2, "primary")):
        rc, results, output = ansible.adhoc(FQCN, f"pgdata={formation.pgdata(n)}", ("--check",), env=formation.xdg())
        assert rc == 0 and results["localhost"]["role"] == role, output


def test_monitor_down_auto_falls_back_to_local_state_and_sql(formation, binary):
    formation("stop-monitor", formation.base)
    try:
        rc, out = detect(binary, formation, 2)
        assert rc == 0, out
        assert (out["role"], out["source"], out["monitor_reachable"], out["sources_agree"]) == \
            ("primary", "pg_autoctl_local+sql", False, True)
        assert out["health"] is None
        assert any("monitor is unreachable" in w for w in out["warnings"]), out
        rc, out = detect(binary, formation, 1)
        assert out["role"] == "standby"

        rc, out = detect(binary, formation, 2, source="pg_autoctl")
        assert rc == 1 and out["failed"] is True
        assert out["msg"].startswith("the pg_auto_failover monitor is unreachable (pg_autoctl exit code 6)"), out["msg"]
    finally:
        formation("start-monitor", formation.base)


def test_postgres_down_is_unknown(formation, binary):
    # Stop the secondary (node1 after the switchover): stopping a primary would trigger a failover.
    formation("stop-node", formation.base, 1)
    try:
        rc, out = detect(binary, formation, 1)
        assert rc == 0, out
        assert out["role"] == "unknown" and out["is_primary"] is False
        assert out["monitor_reachable"] is True and out["node_name"] == "node1"
        rc, out = detect(binary, formation, 1, fail_on_unknown=True)
        assert rc == 1 and out["msg"].startswith("the role of this node is unknown: connecting to PostgreSQL at ")
        # The monitor alone still answers when asked alone.
        rc, out = detect(binary, formation, 1, source="pg_autoctl")
        assert rc == 0 and out["role"] == "standby" and out["source"] == "pg_autoctl"
    finally:
        formation("start-node", formation.base, 1)
