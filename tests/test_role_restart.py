"""The pgbackrest role on a plain PostgreSQL cluster whose archive_mode is off: WAL archiving needs a
restart, which the role reports and leaves alone by default, and performs (as postgres, through
pg_alter_system's restart_command) only with pgbackrest_restart_allowed. The formation of the molecule scenarios starts with
archive_mode on, so this is where the restart path runs."""

import json
import re
import shutil

import pytest

from harness import PGBIN, Cluster, as_postgres, free_port, scratch_dir

PLAY = """- hosts: db
  gather_facts: false
  roles:
    - role: veza.pgbackrest.pgbackrest
"""


@pytest.fixture
def cluster():
    base = scratch_dir("vz-restart-")
    (base / "repo").mkdir()
    shutil.chown(base / "repo", "postgres", "postgres")
    c = Cluster(base, "pg", free_port()).initdb().start()
    yield c
    c.stop()
    shutil.rmtree(base, ignore_errors=True)


def converge(ansible, cluster, **extra):
    base = cluster.base
    variables = {
        "ansible_connection": "local",
        "pgbackrest_pgdata": str(cluster.pgdata), "pgbackrest_pg_socket_path": str(cluster.socket_dir),
        "pgbackrest_pg_port": cluster.port, "pgbackrest_role_source": "sql", "pgbackrest_install": False,
        "pgbackrest_manage_services": False, "pgbackrest_repo_type": "posix",
        "pgbackrest_repo_path": str(base / "repo"), "pgbackrest_cipher_type": "none",
        "pgbackrest_config_path": str(base / "host/pgbackrest.conf"), "pgbackrest_bin_dir": str(base / "host/bin"),
        "pgbackrest_systemd_dir": str(base / "host/systemd"), "pgbackrest_metrics_dir": str(base / "host/metrics"),
        "pgbackrest_global_extra": {"lock-path": str(base / "lock"), "log-path": str(base / "log"), "log-level-file": "off"},
        **extra,
    }
    inventory = ansible.workdir / "restart-inventory.json"
    inventory.write_text(json.dumps({"db": {"hosts": {"pg": variables}}}))
    return ansible.playbook(PLAY, inventory=inventory, name="restart.yml")


def changed(output):
    return int(re.search(r"^pg\s+: ok=\d+\s+changed=(\d+)", output, re.M).group(1))


def show(cluster, name):
    return cluster.psql(f"SHOW {name}")


def test_restart_is_reported_and_not_performed_by_default(ansible, cluster):
    started = as_postgres(PGBIN / "psql", "-h", cluster.socket_dir, "-p", cluster.port, "-XAtc",
                          "SELECT pg_postmaster_start_time()").stdout
    rc, output = converge(ansible, cluster)
    assert rc == 0, output
    assert "PostgreSQL must be restarted for archive_mode to take effect" in output, output
    assert show(cluster, "archive_mode") == "off"
    assert cluster.psql("SELECT pending_restart FROM pg_settings WHERE name = 'archive_mode'") == "t"
    assert cluster.psql("SELECT pg_postmaster_start_time()") == started.strip()


def test_restart_is_performed_when_allowed_then_nothing_changes(ansible, cluster):
    restart = [f"{PGBIN}/pg_ctl", "restart", "-D", str(cluster.pgdata), "-m", "fast", "-w"]
    rc, output = converge(ansible, cluster, pgbackrest_restart_allowed=True, pgbackrest_restart_command=restart)
    assert rc == 0, output
    assert show(cluster, "archive_mode") == "on"
    assert show(cluster, "archive_command").endswith("--stanza=main archive-push %p")
    # Archiving works end to end after the restart: the stanza exists and `check` pushes a segment.
    conf = cluster.base / "host/pgbackrest.conf"
    as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", "check")

    rc, output = converge(ansible, cluster, pgbackrest_restart_allowed=True, pgbackrest_restart_command=restart)
    assert rc == 0 and changed(output) == 0, output
