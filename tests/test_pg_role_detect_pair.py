"""pg_role_detect against a plain primary and its streaming standby (no pg_auto_failover)."""

import pytest

from harness import MONITOR_PASSWORD, Cluster, free_port, run_module, scratch_dir

MODULE = "pg_role_detect"


@pytest.fixture(scope="module")
def binary(module_bin):
    return module_bin(MODULE)


def sql_args(cluster, **extra):
    return {"source": "sql", "login_unix_socket": str(cluster.socket_dir), "login_port": cluster.port, **extra}


def test_primary_is_primary(pair, binary):
    primary, _ = pair
    rc, out = run_module(binary, sql_args(primary))
    assert rc == 0, out
    assert (out["role"], out["is_primary"], out["in_recovery"], out["source"]) == ("primary", True, False, "sql")
    assert out["changed"] is False
    assert out["server_version_num"] >= 150000
    assert out["ansible_facts"]["pg_role"] == "primary" and out["ansible_facts"]["pg_is_primary"] is True
    assert out["queries"] and "pg_is_in_recovery()" in out["queries"][0]


def test_streaming_standby_is_standby(pair, binary):
    _, standby = pair
    rc, out = run_module(binary, sql_args(standby))
    assert rc == 0, out
    assert (out["role"], out["is_primary"], out["in_recovery"]) == ("standby", False, True)


def test_check_mode_gives_the_same_answer(pair, binary):
    primary, standby = pair
    for cluster, role in ((primary, "primary"), (standby, "standby")):
        rc, out = run_module(binary, {**sql_args(cluster), "_ansible_check_mode": True})
        assert rc == 0 and out["role"] == role and out["changed"] is False


def test_auto_without_keeper_reads_port_and_socket_from_postmaster_pid(pair, binary):
    primary, standby = pair
    # No login_port / login_unix_socket: both come from the running server's postmaster.pid.
    rc, out = run_module(binary, {"pgdata": str(standby.pgdata)})
    assert rc == 0, out
    assert (out["role"], out["source"], out["sources_agree"], out["monitor_reachable"]) == ("standby", "sql", None, None)
    rc, out = run_module(binary, {"pgdata": str(primary.pgdata)})
    assert out["role"] == "primary"


def test_source_pg_autoctl_without_keeper_fails_clearly(pair, binary):
    primary, _ = pair
    rc, out = run_module(binary, {"source": "pg_autoctl", "pgdata": str(primary.pgdata)})
    assert rc == 1 and out["failed"] is True
    assert out["msg"].startswith(f"source=pg_autoctl but no pg_auto_failover keeper configuration was found for pgdata {primary.pgdata}")


def test_root_without_become_user_fails_peer_authentication(pair, binary):
    primary, _ = pair
    # An authentication error is a configuration problem, never "unknown".
    rc, out = run_module(binary, sql_args(primary, become_user=""))
    assert rc == 1 and out["failed"] is True
    assert "Peer authentication failed" in out["msg"], out["msg"]


def test_password_over_tcp_and_secret_never_shown(pair, binary):
    primary, _ = pair
    canary = MONITOR_PASSWORD
    rc, out = run_module(binary, {"source": "sql", "login_host": "127.0.0.1", "login_port": primary.port,
                                  "login_user": "monitor", "login_password": canary})
    assert rc == 0 and out["role"] == "primary", out
    assert canary not in str(out)
    assert out["invocation"]["module_args"]["login_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    rc, out = run_module(binary, {"source": "sql", "login_host": "127.0.0.1", "login_port": primary.port,
                                  "login_user": "monitor", "login_password": canary + "-wrong"})
    assert rc == 1 and "password authentication failed for user \"monitor\"" in out["msg"], out
    assert canary not in str(out)


def test_stopped_postgres_is_unknown_and_fail_on_unknown_fails(binary):
    base = scratch_dir("vz-down-")
    cluster = Cluster(base, "gone", free_port()).initdb()  # created, never started
    rc, out = run_module(binary, {"pgdata": str(cluster.pgdata), "login_unix_socket": str(base), "login_port": cluster.port})
    assert rc == 0 and out["role"] == "unknown" and out["is_primary"] is False and out["source"] == "none"
    assert any("the role of this node is unknown" in w for w in out["warnings"]), out
    rc, out = run_module(binary, {"pgdata": str(cluster.pgdata), "login_unix_socket": str(base), "login_port": cluster.port,
                                  "fail_on_unknown": "true"})
    assert rc == 1 and out["failed"] is True
    assert out["msg"].startswith(f"the role of this node is unknown: connecting to PostgreSQL at postgres@{base}:{cluster.port}/postgres")


def test_runs_as_a_program_reading_stdin(pair, binary):
    primary, _ = pair
    rc, out = run_module(binary, sql_args(primary), stdin_mode=True)
    assert rc == 0 and out["role"] == "primary"


def test_result_fields_match_the_documented_return_values(pair, binary):
    import yaml
    from harness import REPO
    doc = yaml.safe_load((REPO / "collection/plugins/modules/pg_role_detect.yml").read_text())
    primary, _ = pair
    _, out = run_module(binary, sql_args(primary))
    protocol = {"changed", "invocation", "msg", "warnings", "failed"}
    # The binary run directly: what the action plugin adds (veza_transport, the platform fact) is
    # documented but not here.
    documented = set(doc["RETURN"]) - {"veza_transport"}
    assert set(out) - protocol == documented, set(out) ^ documented
    facts = set(doc["RETURN"]["ansible_facts"]["contains"]) - {"veza_pgbackrest_platform"}
    assert set(out["ansible_facts"]) == facts


def test_require_primary_exit_codes_suit_systemd_exec_condition(pair, binary):
    """1 (skip quietly) on a standby, 255 (fail loudly) when the check is broken, 0 on the primary."""
    primary, standby = pair
    rc, out = run_module(binary, sql_args(primary, require_primary=True))
    assert rc == 0 and out["role"] == "primary"
    rc, out = run_module(binary, sql_args(standby, require_primary=True))
    assert rc == 1 and out["failed"] is True and out["msg"] == "require_primary: this node is not the writable primary"
    rc, out = run_module(binary, {"source": "sql", "login_host": "127.0.0.1", "login_port": free_port(), "require_primary": True})
    assert rc == 255 and out["msg"].startswith("require_primary: the role of this node is unknown: connecting to PostgreSQL")
    rc, out = run_module(binary, sql_args(primary, require_primary=True, become_user="no-such-user-x"))
    assert rc == 255 and out["msg"] == "become_user: user 'no-such-user-x' does not exist"
