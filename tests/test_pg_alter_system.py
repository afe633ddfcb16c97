"""pg_alter_system against a real PostgreSQL 15: ALTER SYSTEM, reload, pending_restart, refusals.

One cluster for the whole file. Each test states what it needs first (through psql or the module)
and proves its outcome with psql and postgresql.auto.conf, never with the module's word alone.
"""

import shutil
import time

import pytest
import yaml

from harness import PGBIN, REPO, Cluster, canary, free_port, run_module, scratch_dir

MODULE = "pg_alter_system"
ARCHIVE_COMMAND = "pgbackrest --stanza=main archive-push %p"
CANARY = canary("alter-pw")


@pytest.fixture(scope="module")
def cluster():
    base = scratch_dir("vz-alter-")
    c = Cluster(base, "pg", free_port()).initdb().start()
    c.psql(f"CREATE ROLE alter_admin SUPERUSER LOGIN PASSWORD '{CANARY}'")
    yield c
    c.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def binary(module_bin):
    return module_bin(MODULE)


def args(cluster, **extra):
    return {"login_unix_socket": str(cluster.socket_dir), "login_port": cluster.port, **extra}


def auto_conf(cluster):
    return (cluster.pgdata / "postgresql.auto.conf").read_text()


def postmaster_pid(cluster):
    return (cluster.pgdata / "postmaster.pid").read_text().splitlines()[0]


def reload(cluster):
    """pg_reload_conf(), then wait until a new session sees the files re-read (it is asynchronous)."""
    loaded = cluster.psql("SELECT pg_conf_load_time()")
    cluster.psql("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while cluster.psql("SELECT pg_conf_load_time()") == loaded:
        assert time.monotonic() < deadline, "the server did not reload"
        time.sleep(0.05)


def run_ok(binary, cluster, **extra):
    rc, out = run_module(binary, args(cluster, **extra))
    assert rc == 0 and not out.get("failed"), out
    return out


def test_archive_command_needs_only_a_reload_and_second_run_is_unchanged(cluster, binary):
    out = run_ok(binary, cluster, settings={"archive_command": ARCHIVE_COMMAND})
    assert out["changed"] is True
    assert out["queries"] == [f"ALTER SYSTEM SET \"archive_command\" = '{ARCHIVE_COMMAND}'", "SELECT pg_reload_conf()"]
    item = out["settings"]["archive_command"]
    assert (item["before"], item["after"], item["context"], item["pending_restart"]) == ("", ARCHIVE_COMMAND, "sighup", False)
    assert out["pending_restart"] == [] and out["restart_required"] is False
    assert f"archive_command = '{ARCHIVE_COMMAND}'" in auto_conf(cluster)
    # Reloaded: a new session's reset value is the command (SHOW says "(disabled)" while archive_mode is off).
    assert cluster.psql("SELECT reset_val, pending_restart FROM pg_settings WHERE name = 'archive_command'") == f"{ARCHIVE_COMMAND}|f"

    again = run_ok(binary, cluster, settings={"archive_command": ARCHIVE_COMMAND})
    assert (again["changed"], again["queries"], again["settings"]["archive_command"]["changed"]) == (False, [], False)


def test_an_empty_list_setting_is_unchanged_on_the_second_run(cluster, binary):
    # PostgreSQL shows an empty search_path as "": that is what '' asked for, not a change.
    out = run_ok(binary, cluster, settings={"search_path": ""})
    assert out["changed"] is True, out
    again = run_ok(binary, cluster, settings={"search_path": ""})
    assert (again["changed"], again["queries"]) == (False, []), again
    run_ok(binary, cluster, reset=["search_path"])


def test_archive_mode_waits_for_a_restart_and_second_run_is_unchanged(cluster, binary):
    pid = postmaster_pid(cluster)
    out = run_ok(binary, cluster, settings={"archive_mode": "on"})
    assert out["changed"] is True and out["restart_required"] is True
    assert out["pending_restart"] == ["archive_mode"]
    assert out["settings"]["archive_mode"] == {"action": "set", "before": "off", "after": "on", "changed": True,
                                               "context": "postmaster", "pending_restart": True}
    assert "restart is required for archive_mode" in out["msg"]
    # Written and reloaded, not restarted.
    assert postmaster_pid(cluster) == pid
    assert cluster.psql("SELECT setting, pending_restart FROM pg_settings WHERE name = 'archive_mode'") == "off|t"

    # The value in postgresql.auto.conf counts although the server still runs with off.
    again = run_ok(binary, cluster, settings={"archive_mode": True})
    assert (again["changed"], again["queries"]) == (False, [])
    assert again["restart_required"] is True and again["pending_restart"] == ["archive_mode"]
    assert postmaster_pid(cluster) == pid

    cluster.stop()
    cluster.start()
    after_restart = run_ok(binary, cluster, settings={"archive_mode": "on"})
    assert (after_restart["changed"], after_restart["restart_required"], after_restart["pending_restart"]) == (False, False, [])
    assert cluster.psql("SHOW archive_mode") == "on"


def test_equal_values_in_another_unit_or_spelling_are_not_a_change(cluster, binary):
    cluster.psql("ALTER SYSTEM SET archive_timeout = 60")
    reload(cluster)
    assert cluster.psql("SHOW archive_timeout") == "1min"
    for value in ("1min", 60, "60s", "60000ms", " 1 min"):
        out = run_ok(binary, cluster, settings={"archive_timeout": value})
        assert (out["changed"], out["queries"]) == (False, []), (value, out)
        assert out["settings"]["archive_timeout"]["before"] == "1min"
    # Booleans, memory units, enums in any case; defaults of PostgreSQL 15.
    out = run_ok(binary, cluster, settings={"log_checkpoints": "yes", "work_mem": "4MB", "wal_level": "REPLICA",
                                            "shared_buffers": "128MB", "synchronous_commit": True})
    assert (out["changed"], out["queries"]) == (False, []), out
    assert out["settings"]["work_mem"]["before"] == "4MB" and out["settings"]["log_checkpoints"]["before"] == "on"
    assert "archive_timeout = '60'" in auto_conf(cluster)


def test_reset_removes_the_line_and_second_reset_is_unchanged(cluster, binary):
    run_ok(binary, cluster, settings={"archive_timeout": "2min"})
    assert cluster.psql("SHOW archive_timeout") == "2min"
    out = run_ok(binary, cluster, reset=["archive_timeout"])
    assert out["changed"] is True
    assert out["queries"] == ['ALTER SYSTEM RESET "archive_timeout"', "SELECT pg_reload_conf()"]
    assert out["settings"]["archive_timeout"] == {"action": "reset", "before": "2min", "after": "0", "changed": True,
                                                       "context": "sighup", "pending_restart": False}
    assert "archive_timeout" not in auto_conf(cluster)
    assert cluster.psql("SHOW archive_timeout") == "0"
    again = run_ok(binary, cluster, reset=["archive_timeout"])
    assert (again["changed"], again["queries"]) == (False, [])


def refused(binary, cluster, settings):
    """Run with settings the module must refuse; prove the server's configuration did not move."""
    before = (auto_conf(cluster), cluster.psql("SHOW archive_timeout"), cluster.psql("SELECT pg_conf_load_time()"))
    rc, out = run_module(binary, args(cluster, settings=settings))
    assert rc == 1 and out["failed"] is True, out
    assert out["changed"] is False
    assert (auto_conf(cluster), cluster.psql("SHOW archive_timeout"),
            cluster.psql("SELECT pg_conf_load_time()")) == before
    return out


def test_unknown_setting_fails_naming_it_and_changes_nothing(cluster, binary):
    out = refused(binary, cluster, {"archive_timeout": "5min", "archive_timout": 60})
    assert out["msg"] == 'settings: unrecognized configuration parameter "archive_timout"; nothing was changed'
    out = refused(binary, cluster, {"archive_timeout": "5min", "server_version": "16"})
    assert out["msg"] == 'settings: parameter "server_version" cannot be changed; nothing was changed'


def test_bad_values_fail_with_postgres_wording_and_change_nothing(cluster, binary):
    out = refused(binary, cluster, {"archive_timeout": "soon", "archive_mode": "maybe", "max_connections": -3})
    assert out["msg"] == (
        'settings: invalid value for parameter "archive_timeout": "soon"; '
        'settings: invalid value for parameter "archive_mode": "maybe" (available values: always, on, off); '
        'settings: -3 is outside the valid range for parameter "max_connections" (1 .. 262143); nothing was changed')
    out = refused(binary, cluster, {"archive_timeout": "5 parsecs"})
    assert 'valid units for this parameter are "us", "ms", "s", "min", "h", and "d"' in out["msg"]
    out = refused(binary, cluster, {"log_checkpoints": "sometimes"})
    assert out["msg"].startswith('settings: parameter "log_checkpoints" requires a Boolean value')


def test_a_value_only_the_server_refuses_is_undone(cluster, binary):
    # Only PostgreSQL knows its time zones: archive_timeout is written first, then put back.
    out = refused(binary, cluster, {"archive_timeout": "5min", "TimeZone": "Mars/Olympus"})
    assert out["msg"].startswith("ALTER SYSTEM SET \"TimeZone\" = 'Mars/Olympus' failed: "
                                 'invalid value for parameter "TimeZone": "Mars/Olympus"'), out["msg"]
    assert out["msg"].endswith("the settings already altered were put back, nothing was changed")
    assert out["queries"] == ["ALTER SYSTEM SET \"archive_timeout\" = '5min'", "ALTER SYSTEM SET \"TimeZone\" = 'Mars/Olympus'",
                              'ALTER SYSTEM RESET "archive_timeout"']
    assert out["settings"]["archive_timeout"]["changed"] is False


def test_check_mode_runs_only_selects_and_predicts_the_restart(cluster, binary):
    before = (auto_conf(cluster), cluster.psql("SELECT pg_conf_load_time()"), cluster.psql("SHOW max_connections"))
    out = run_ok(binary, cluster, settings={"max_connections": 50, "archive_timeout": "7min"}, _ansible_check_mode=True)
    assert out["changed"] is True
    assert out["queries"] == ["ALTER SYSTEM SET \"max_connections\" = '50'", "ALTER SYSTEM SET \"archive_timeout\" = '7min'",
                              "SELECT pg_reload_conf()"]
    assert out["restart_required"] is True and out["pending_restart"] == ["max_connections"]
    assert out["settings"]["archive_timeout"]["pending_restart"] is False
    assert "would change max_connections, archive_timeout" in out["msg"]
    assert (auto_conf(cluster), cluster.psql("SELECT pg_conf_load_time()"), cluster.psql("SHOW max_connections")) == before
    unchanged = run_ok(binary, cluster, settings={"max_connections": 100}, _ansible_check_mode=True)
    assert (unchanged["changed"], unchanged["queries"], unchanged["restart_required"]) == (False, [], False)


def test_diff_is_the_same_in_check_mode_and_for_real(cluster, binary):
    run_ok(binary, cluster, reset=["archive_timeout"])
    wanted = {"before": "archive_timeout = '0'\n", "after": "archive_timeout = '3min'\n"}
    checked = run_ok(binary, cluster, settings={"archive_timeout": 180}, _ansible_diff=True, _ansible_check_mode=True)
    real = run_ok(binary, cluster, settings={"archive_timeout": 180}, _ansible_diff=True)
    for out in (checked, real):
        assert {k: out["diff"][k] for k in ("before", "after")} == wanted
    assert cluster.psql("SHOW archive_timeout") == "3min"
    assert "diff" not in run_ok(binary, cluster, settings={"archive_timeout": 180})


def test_result_fields_match_the_documented_return_values(cluster, binary):
    doc = yaml.safe_load((REPO / "collection/plugins/modules/pg_alter_system.yml").read_text())
    out = run_ok(binary, cluster, settings={"archive_timeout": 180})
    protocol = {"changed", "invocation", "msg", "warnings", "failed"}
    # The binary run directly: what the action plugin adds (veza_transport, and the platform fact,
    # this module's only ansible_facts) is documented but not here.
    documented = set(doc["RETURN"]) - {"veza_transport", "ansible_facts"}
    assert set(out) - protocol == documented, set(out) ^ documented
    assert set(out["settings"]["archive_timeout"]) == set(doc["RETURN"]["settings"]["contains"])


def test_playbook_check_diff_never_shows_the_password(cluster, ansible):
    cluster.psql("ALTER SYSTEM SET archive_timeout = '3min'")
    cluster.psql("ALTER SYSTEM RESET wal_keep_size")
    reload(cluster)
    before = (auto_conf(cluster), cluster.psql("SELECT pg_conf_load_time()"))
    login = f"""
        become_user: ""
        login_host: 127.0.0.1
        login_port: {cluster.port}
        login_user: alter_admin
        login_password: "{CANARY}\""""
    rc, output = ansible.playbook(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Archive WAL with pgBackRest
      veza.pgbackrest.pg_alter_system:
        settings:
          archive_mode: "on"
          archive_command: {ARCHIVE_COMMAND}
          archive_timeout: 60
          wal_keep_size: 1GB{login}
      register: archiving

    - name: A refused value fails without showing the password
      veza.pgbackrest.pg_alter_system:
        settings:
          archive_timeout: "{CANARY}"{login}
      ignore_errors: true
      register: refused

    - ansible.builtin.assert:
        that:
          - archiving is changed
          - archiving.settings.archive_timeout.changed
          - archiving.queries[-1] == 'SELECT pg_reload_conf()'
          - refused is failed
""", extra=["--check", "--diff", "-vvv"], name="alter-check.yml")
    assert rc == 0, output
    assert CANARY not in output
    assert "+archive_timeout = '1min'" in output and "+wal_keep_size = '1GB'" in output, output
    assert "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output
    assert (auto_conf(cluster), cluster.psql("SELECT pg_conf_load_time()")) == before


@pytest.fixture
def own_cluster():
    """A cluster of the test's own, for restarts."""
    base = scratch_dir("vz-alter-restart-")
    c = Cluster(base, "pg", free_port()).initdb().start()
    yield c
    c.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_restart_command_runs_only_when_needed_and_must_clear_the_pending_restart(own_cluster, binary):
    c = own_cluster
    pg_ctl = [str(PGBIN / "pg_ctl"), "restart", "-D", str(c.pgdata), "-m", "fast", "-w"]
    pid = postmaster_pid(c)
    # A command that restarts nothing: the setting still waits, so the module fails, saying so.
    rc, out = run_module(binary, args(c, settings={"archive_mode": "on"}, restart_command=["true"]))
    assert rc == 1 and out["changed"] is True and out["restarted"] is False, out
    assert "`true` succeeded, but archive_mode still wait for a restart" in out["msg"], out
    # Check mode predicts the restart and runs nothing.
    checked = run_ok(binary, c, settings={"archive_mode": "on"}, restart_command=pg_ctl,
                     _ansible_check_mode=True)
    assert (checked["changed"], checked["restarted"]) == (True, True), checked
    assert checked["commands"] == [" ".join(pg_ctl)] and postmaster_pid(c) == pid
    # For real: restarted (the new postmaster holds pg_ctl's output, the module returns anyway).
    out = run_ok(binary, c, settings={"archive_mode": "on"}, restart_command=pg_ctl)
    assert (out["changed"], out["restarted"], out["restart_required"]) == (True, True, False), out
    assert out["pending_restart"] == [] and "restarted PostgreSQL with" in out["msg"], out
    assert postmaster_pid(c) != pid and c.psql("SHOW archive_mode") == "on"
    # Nothing waits: nothing runs.
    again = run_ok(binary, c, settings={"archive_mode": "on"}, restart_command=["false"])
    assert (again["changed"], again["restarted"], again["commands"]) == (False, False, []), again
    # A failing command fails the task with its exit code and message; the change stays reported.
    rc, out = run_module(binary, args(c, settings={"max_connections": 90},
                                      restart_command=["sh", "-c", "echo no restart today >&2; exit 3"]))
    assert rc == 1 and out["changed"] is True and out["restarted"] is False, out
    assert "exited with code 3: no restart today; max_connections still wait for a restart" in out["msg"], out
    rc, out = run_module(binary, args(c, settings={"archive_mode": "on"}, restart_command=[]))
    assert rc == 1 and out["msg"] == "restart_command: [] names no program", out
