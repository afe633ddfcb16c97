"""The action groups of meta/runtime.yml: `module_defaults: {group/veza.pgbackrest.NAME: ...}` with
the options the group is documented for is accepted by every member (a member refuses an option
it does not take, so a group whose members do not share its options breaks every play using it),
against a real PostgreSQL and pgBackRest repository. The same runs check that every key a module
returns (through the collection's action plugin, `veza_transport` included) is in its RETURN."""

import json

import yaml

from conftest import MODULES
from harness import REPO

# What each group is for: the options every member takes (README.md and meta/runtime.yml say so).
GROUP_OPTIONS = {
    "postgresql": {"become_user", "login_user", "login_password", "login_host", "login_unix_socket",
                   "login_port", "login_db", "connect_timeout"},
    "pgbackrest": {"config", "stanza"},
}
# Keys Ansible itself documents for every module (common return values), not each module's RETURN.
COMMON_RETURN = {"changed", "failed", "msg", "invocation", "warnings", "deprecations", "diff", "skipped"}


def _groups():
    return yaml.safe_load((REPO / "collection/meta/runtime.yml").read_text())["action_groups"]


def _docs(module):
    return yaml.safe_load((REPO / "collection/plugins/modules" / f"{module}.yml").read_text())


def test_every_member_takes_every_option_of_its_group():
    groups = _groups()
    assert groups.keys() == GROUP_OPTIONS.keys()
    assert {m for members in groups.values() for m in members} <= set(MODULES)
    for group, members in groups.items():
        for m in members:
            options = _docs(m)["DOCUMENTATION"]["options"]
            assert GROUP_OPTIONS[group] <= options.keys(), f"{group}: {m} lacks {GROUP_OPTIONS[group] - options.keys()}"
        # And the group is not narrower than its members allow: the options they all share.
        shared = set.intersection(*(set(_docs(m)["DOCUMENTATION"]["options"]) for m in members))
        assert shared == GROUP_OPTIONS[group], f"{group}: its members share {sorted(shared)}"


def test_module_defaults_of_each_group_reach_every_member(ansible, repo_setup, tmp_path):
    """One play per group, each member given nothing its group's defaults provide: the postgresql
    members reach the test's server only through the defaults' socket and port (the built-in ones
    point elsewhere), the pgbackrest members read the test's repository only through `config`."""
    tmp_path.chmod(0o755)
    cluster, conf = repo_setup["cluster"], repo_setup["conf"]
    stanza = "drill"
    out = tmp_path / "results.json"
    defaults = {
        "postgresql": {"become_user": "postgres", "login_user": "postgres", "login_db": "postgres",
                       "login_unix_socket": str(cluster.socket_dir), "login_port": cluster.port,
                       "connect_timeout": 5},
        "pgbackrest": {"config": str(conf), "stanza": stanza},
    }
    # pgbackrest_stanza gets its pgdata (for the login and the role) from the configuration given
    # by the other group; the postgresql play gives it both, as an operator would.
    tasks = {
        "postgresql": [
            ("pg_alter_system", {"settings": {"work_mem": "8MB"}}, True),
            ("pg_role_detect", {"source": "sql"}, True),
            ("pgbackrest_stanza", {"stanza": stanza, "config": str(conf), "source": "sql"}, True),
            ("pgbackrest_archive_health", {"stanza": stanza, "config": str(conf), "source": "sql"},
             True),
        ],
        "pgbackrest": [
            ("pgbackrest_info", {}, True),
            ("pgbackrest_stanza", {"source": "sql"}, True),
            ("pgbackrest_archive_health", {"source": "sql", "become_user": "postgres",
                                           "login_unix_socket": str(cluster.socket_dir),
                                           "login_port": cluster.port}, True),
            # A real drill (on the host, no Incus): its result has every key a drill returns.
            ("dr_drill", {"sandbox": "host", "metrics_dir": str(tmp_path / "metrics"),
                          "lock_dir": str(tmp_path / "lock"), "checks": ["verify", "dump"]}, False),
        ],
    }
    (tmp_path / "metrics").mkdir()
    plays = []
    for group, members in _groups().items():
        assert sorted(m for m, _, _ in tasks[group]) == sorted(members), group
        plays.append({
            "name": f"Group {group}", "hosts": "localhost", "connection": "local", "gather_facts": False,
            "module_defaults": {f"group/veza.pgbackrest.{group}": defaults[group]},
            "tasks": [
                *({"name": f"Run {m}", f"veza.pgbackrest.{m}": args, "check_mode": check,
                   "register": f"r_{m}"} for m, args, check in tasks[group]),
                {"name": "Keep the results", "ansible.builtin.copy": {
                    "dest": f"{out}.{group}", "mode": "0600",
                    "content": "{{ {%s} | to_json }}" % ", ".join(f"'{m}': r_{m}" for m, _, _ in tasks[group])}},
            ],
        })
    rc, output = ansible.playbook(yaml.safe_dump(plays, sort_keys=False))
    assert rc == 0, output
    assert "Unsupported parameters" not in output
    pg = json.loads(open(f"{out}.postgresql").read())
    assert pg["pg_role_detect"]["role"] == "primary" and pg["pg_role_detect"]["server_version_num"] >= 150000
    assert pg["pg_alter_system"]["changed"] and pg["pg_alter_system"]["queries"], pg["pg_alter_system"]
    assert pg["pgbackrest_stanza"]["role"] == "primary" and pg["pgbackrest_stanza"]["action"] == "none"
    assert pg["pgbackrest_archive_health"]["primary"] is True, pg["pgbackrest_archive_health"]
    brs = json.loads(open(f"{out}.pgbackrest").read())
    assert brs["pgbackrest_info"]["ok"] and [s["name"] for s in brs["pgbackrest_info"]["stanzas"]] == [stanza]
    assert brs["pgbackrest_stanza"]["action"] == "none"
    assert brs["pgbackrest_archive_health"]["primary"] is True, brs["pgbackrest_archive_health"]
    assert brs["dr_drill"]["passed"] and brs["dr_drill"]["stanza"] == stanza, brs["dr_drill"].get("msg")
    for results in (pg, brs):
        for m, result in results.items():
            documented = _docs(m)["RETURN"].keys()
            undocumented = {k for k in result if not k.startswith("_ansible")} - COMMON_RETURN - documented
            assert not undocumented, f"{m} returns {sorted(undocumented)}, which its RETURN does not document"
            assert result["veza_transport"]["path"] == "fast"
