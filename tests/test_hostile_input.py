"""Hostile input, table-driven: every module binary, run as Ansible runs it (argv[1] = an arguments
file), against one real PostgreSQL and one real pgBackRest repository shared by all cases.

Each case must be refused cleanly: exit code 1 and one line of failure JSON (never a panic), a
message naming the option and the value (a secret's value never), nothing changed on disk (hash
and stat of every managed path), in PostgreSQL (`pg_settings`, postgresql.auto.conf) or in the
repository, and an answer within 2 seconds (the bound issue #15 asks for).

The cases are of two kinds: one wrong type per option of each module, taken from the module's own
documentation (collection/plugins/modules/NAME.yml), so a new option gets its cases without a line
here; and the hand-written ones below: ranges, lengths, control characters, injection, paths,
symlinks, owners, modes, malformed arguments files.
"""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time

import pytest
import yaml

from harness import CANARIES, REPO, Cluster, as_postgres, canary, free_port, scratch_dir, write_pgbackrest_config

BOUND = 2.0  # seconds per case
CIPHER = canary("hostile-cipher")
PASSWORD = canary("hostile-password")
NEAR_MISS = canary("hostile-near-miss")
ROOT_ONLY = CANARIES.register("canary-root-only-content-Pq7", "root-only-file")
MODULES = ["dr_drill", "pg_alter_system", "pg_role_detect", "pgbackrest_archive_health",
           "pgbackrest_config", "pgbackrest_info", "pgbackrest_schedule", "pgbackrest_stanza"]


def base_args(module):
    """Arguments a module accepts (placeholders filled in per run): a case changes one thing."""
    login = {"login_unix_socket": "{socket}", "login_port": "{port}"}
    return {
        "dr_drill": {"stanza": "main", "config": "{conf}", "sandbox": "host", "metrics_dir": "{base}/metrics",
                     "lock_dir": "{base}/drill-lock"},
        "pg_alter_system": {"settings": {"work_mem": "4MB"}, **login},
        "pg_role_detect": {"source": "sql", **login},
        "pgbackrest_config": {"path": "{base}/cfg/pgbackrest.conf", "owner": "root", "group": "root",
                              "mode": "0600",
                              "global": {"repo1-path": "{base}/repo", "repo1-cipher-type": "aes-256-cbc",
                                         "repo1-cipher-pass": CIPHER},
                              "stanzas": {"main": {"pg1-path": "{pgdata}"}}},
        "pgbackrest_info": {"stanza": "main", "config": "{conf}", "metrics_dir": "{base}/metrics"},
        "pgbackrest_archive_health": {"stanza": "main", "config": "{conf}", "source": "sql",
                                      "metrics_dir": "{base}/metrics", **login},
        "pgbackrest_stanza": {"stanza": "main", "config": "{conf}", "source": "sql", "pgdata": "{pgdata}", **login},
        # Files only, in the managed cfg directory: no systemd on this machine.
        "pgbackrest_schedule": {"systemd_dir": "{base}/cfg/units", "manage_services": False,
                                "units": [{"name": "vz-hostile.timer", "content": "[Timer]\nOnCalendar=daily\n"}],
                                "files": [{"path": "{base}/cfg/schedule.json", "content": "{}\n"}]},
    }[module]


def docs(module):
    return yaml.safe_load((REPO / "collection/plugins/modules" / f"{module}.yml").read_text())["DOCUMENTATION"]


# Values of the wrong type for each documented type, with how the message shows them.
WRONG = {
    "str": [([], "[]"), ({"a": 1}, '{"a":1}')],
    "path": [([], "[]"), ({"a": 1}, '{"a":1}')],
    "int": [("abc", "abc"), (1.5, "1.5"), ([], "[]"), ({}, "{}")],
    "bool": [("maybe", "maybe"), (2, "2"), ([], "[]")],
    "list": [({"a": 1}, '{"a":1}')],
    "dict": [([], "[]"), (5, "5")],
}


def type_cases():
    cases = []
    for module in MODULES:
        for option, spec in docs(module)["options"].items():
            wrong = list(WRONG.get(spec.get("type", "str"), []))
            if spec.get("choices"):
                wrong.append(("no-such-choice", "no-such-choice"))
            for value, shown in wrong:
                args = {**base_args(module), option: value}
                cases.append((f"{module}-{option}-{type(value).__name__}-{shown[:12]}", module, args,
                               [option, shown]))
    return cases


LONG = "x" * 1_000_000
HAND = [
    # pgbackrest_config: option values by type, range and list; names; injection; modes; owners
    ("cfg-retention-negative", "pgbackrest_config", {"global": {"repo1-retention-full": -1}},
     ["repo1-retention-full", "'-1'", "[global]"]),
    ("cfg-compress-level-99", "pgbackrest_config", {"global": {"compress-level": 99}}, ["compress-level", "'99'"]),
    ("cfg-log-level-unknown", "pgbackrest_config", {"global": {"log-level-console": "loud"}},
     ["log-level-console", "'loud'"]),
    ("cfg-buffer-size-not-listed", "pgbackrest_config", {"global": {"buffer-size": "3MiB"}},
     ["buffer-size", "'3MiB'"]),
    ("cfg-chunk-size-syntax", "pgbackrest_config", {"global": {"repo1-storage-upload-chunk-size": "5 megs"}},
     ["repo1-storage-upload-chunk-size", "'5 megs'"]),
    ("cfg-time-not-a-number", "pgbackrest_config", {"global": {"archive-timeout": "1h"}},
     ["archive-timeout", "'1h'"]),
    ("cfg-bool-maybe", "pgbackrest_config", {"global": {"start-fast": "maybe"}}, ["start-fast", "'maybe'"]),
    ("cfg-relative-path", "pgbackrest_config", {"global": {"log-path": "var/log"}}, ["log-path", "'var/log'"]),
    ("cfg-port-out-of-range", "pgbackrest_config", {"stanzas": {"main": {"pg1-path": "/x", "pg1-port": 0.5}}},
     ["pg1-port", "'0.5'", "[main]"]),
    ("cfg-unknown-option", "pgbackrest_config", {"global": {"repo1-retention-ful": 2}},
     ["repo1-retention-ful", "repo1-retention-full"]),
    ("cfg-1mb-option-name", "pgbackrest_config", {"global": {LONG: 1}}, ["global", "x" * 64]),
    ("cfg-1mb-value", "pgbackrest_config", {"global": {"repo1-path": "/" + LONG + "\n"}}, ["repo1-path"]),
    ("cfg-newline-injection", "pgbackrest_config", {"global": {"repo1-path": "/r\n[evil]\npg1-host=x"}},
     ["repo1-path", "\\n[evil]"]),
    ("cfg-nul-in-value", "pgbackrest_config", {"global": {"repo1-path": "/r\u0000x"}}, ["repo1-path", "\\u{0}"]),
    ("cfg-equals-in-key", "pgbackrest_config", {"global": {"log-path=/x\nlog-level-file": "y"}},
     ["global", "log-path=/x"]),
    ("cfg-stanza-bracket", "pgbackrest_config", {"stanzas": {"m]\n[global": {"pg1-path": "/x"}}},
     ["stanza", "m]\\n[global"]),
    ("cfg-stanza-global", "pgbackrest_config", {"stanzas": {"global": {"pg1-path": "/x"}}}, ["stanza", "global"]),
    ("cfg-command-section-bogus", "pgbackrest_config", {"command_sections": {"main:bogus": {"process-max": 2}}},
     ["command_sections.main:bogus"]),
    ("cfg-secret-near-miss-echo", "pgbackrest_config", {"global": {"repo1-cipher-pas": NEAR_MISS}},
     ["repo1-cipher-pas"]),
    ("cfg-placeholder-secret", "pgbackrest_config", {"global": {"repo1-cipher-pass": "CHANGEME"}},
     ["repo1-cipher-pass", "placeholder"]),
    ("cfg-cipher-without-pass", "pgbackrest_config",
     {"global": {"repo1-path": "/r", "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": None}},
     ["repo1-cipher-type=aes-256-cbc", "repo1-cipher-pass"]),
    ("cfg-mode-0777", "pgbackrest_config", {"mode": "0777"}, ["mode", "0777"]),
    ("cfg-mode-0666", "pgbackrest_config", {"mode": "0666"}, ["mode", "0666"]),
    ("cfg-mode-0644-secret", "pgbackrest_config", {"mode": "0644"}, ["mode", "0644"]),
    ("cfg-mode-0604-secret", "pgbackrest_config", {"mode": "0604"}, ["mode", "0604"]),
    ("cfg-mode-symbolic", "pgbackrest_config", {"mode": "u=rw"}, ["mode", "u=rw"]),
    ("cfg-mode-not-octal", "pgbackrest_config", {"mode": "0999"}, ["mode", "0999"]),
    ("cfg-mode-too-big", "pgbackrest_config", {"mode": "077777"}, ["mode", "077777"]),
    ("cfg-mode-list", "pgbackrest_config", {"mode": []}, ["mode"]),
    ("cfg-owner-max-uid", "pgbackrest_config", {"owner": "4294967295"}, ["owner", "4294967295"]),
    ("cfg-owner-unknown", "pgbackrest_config", {"owner": "no-such-user-x9"}, ["owner", "no-such-user-x9"]),
    ("cfg-owner-newline", "pgbackrest_config", {"owner": "root\nx"}, ["owner"]),
    ("cfg-group-max-gid", "pgbackrest_config", {"group": "4294967295"}, ["group", "4294967295"]),
    ("cfg-group-unknown", "pgbackrest_config", {"group": "no-such-group-x9"}, ["group", "no-such-group-x9"]),
    ("cfg-min-pass-negative", "pgbackrest_config", {"min_cipher_pass_length": -1}, ["min_cipher_pass_length", "-1"]),
    ("cfg-vars-newline", "pgbackrest_config", {"template": "{base}/tpl", "vars": {"team": "a\n[evil]"}},
     ["vars.team"]),
    ("cfg-template-missing", "pgbackrest_config", {"template": "{base}/no-such-template"},
     ["template", "no-such-template"]),
    ("cfg-template-directory", "pgbackrest_config", {"template": "{base}"}, ["template"]),
    ("cfg-path-directory", "pgbackrest_config", {"path": "{base}/cfg"}, ["path", "/cfg"]),
    ("cfg-path-relative", "pgbackrest_config", {"path": "pgbackrest.conf"}, ["path", "pgbackrest.conf"]),
    ("cfg-path-empty", "pgbackrest_config", {"path": ""}, ["path"]),
    ("cfg-path-symlink-by-postgres", "pgbackrest_config", {"path": "{base}/hostile/pg-owned/pgbackrest.conf"},
     ["path", "pgbackrest.conf", "symbolic link"]),
    ("cfg-state-bogus", "pgbackrest_config", {"state": "gone"}, ["state", "gone"]),
    ("cfg-version-injection", "pgbackrest_config", {"pgbackrest_version": "2.55\n[evil]"},
     ["pgbackrest_version", "2.55\\n[evil]"]),
    ("cfg-version-long", "pgbackrest_config", {"pgbackrest_version": "2." + "9" * 10_000}, ["pgbackrest_version"]),
    ("cfg-version-option-newer", "pgbackrest_config", {"global": {"repo1-s3-requester-pays": True}},
     ["repo1-s3-requester-pays", "needs pgBackRest 2.55 or later", "the target has 2.45"]),
    ("cfg-pgbackrest-path-missing", "pgbackrest_config", {"pgbackrest_path": "{base}/no-such-pgbackrest"},
     ["pgbackrest_path", "no-such-pgbackrest"]),
    # pgbackrest_stanza and pgbackrest_info: stanza names, timeouts, paths
    *[(f"{m}-stanza-{i}", m, {"stanza": name}, ["stanza", shown])
      for m in ("pgbackrest_stanza", "pgbackrest_info", "dr_drill")
      for i, (name, shown) in enumerate([("", "''"), ("a b", "a b"), ("../etc", "../etc"), ("x/y", "x/y"),
                                         ("-x", "-x"), ("a" * 65, "a" * 65), ("x\ny", "x\\ny"),
                                         ("m]", "m]"), ("global", "global")])],
    *[(f"{m}-{opt}-{v}", m, {opt: v}, [opt, str(v)])
      for m, opt in [("pgbackrest_stanza", "io_timeout"), ("pgbackrest_stanza", "db_timeout"),
                     ("pgbackrest_info", "io_timeout")]
      for v in (0, -1, 86401, 2**63 - 1)],
    ("stanza-pgdata-missing", "pgbackrest_stanza", {"pgdata": "{base}/no-such-pgdata"}, ["pgdata", "no-such-pgdata"]),
    ("stanza-pgdata-file", "pgbackrest_stanza", {"pgdata": "{conf}"}, ["pgdata", "pgbackrest.conf"]),
    ("stanza-config-missing", "pgbackrest_stanza", {"config": "{base}/no-such.conf"}, ["config", "no-such.conf"]),
    ("stanza-role-bogus", "pgbackrest_stanza", {"role": "leader"}, ["role", "leader"]),
    ("stanza-login-port-0", "pgbackrest_stanza", {"login_port": 0}, ["login_port", "0"]),
    ("stanza-login-host-nul", "pgbackrest_stanza", {"login_host": "127.0.0.1\u0000x"}, ["login_host", "\\u{0}"]),
    ("stanza-become-unknown", "pgbackrest_stanza", {"become_user": "no-such-user-x9"}, ["no-such-user-x9"]),
    ("info-config-missing", "pgbackrest_info", {"config": "{base}/no-such.conf"}, ["config", "no-such.conf"]),
    ("info-metrics-prefix-space", "pgbackrest_info", {"metrics_prefix": "bad prefix"}, ["metrics_prefix", "bad prefix"]),
    ("info-metrics-prefix-digit", "pgbackrest_info", {"metrics_prefix": "0abc"}, ["metrics_prefix", "0abc"]),
    ("info-metrics-prefix-newline", "pgbackrest_info", {"metrics_prefix": "a\nb"}, ["metrics_prefix"]),
    ("info-metrics-dir-relative", "pgbackrest_info", {"metrics_dir": "metrics"}, ["metrics_dir", "metrics"]),
    ("info-become-unknown", "pgbackrest_info", {"become_user": "no-such-user-x9"}, ["no-such-user-x9"]),
    # pg_alter_system: names and values PostgreSQL would refuse, injection, login
    ("alter-unknown-setting", "pg_alter_system", {"settings": {"no_such_setting": "1"}}, ["no_such_setting"]),
    ("alter-bad-memory", "pg_alter_system", {"settings": {"work_mem": "lots"}}, ["work_mem", "lots"]),
    ("alter-bad-unit", "pg_alter_system", {"settings": {"shared_buffers": "1XB"}}, ["shared_buffers", "1XB"]),
    ("alter-out-of-range", "pg_alter_system", {"settings": {"max_connections": 10**9}},
     ["max_connections", "1000000000"]),
    ("alter-negative", "pg_alter_system", {"settings": {"work_mem": "-1"}}, ["work_mem", "-1"]),
    ("alter-enum", "pg_alter_system", {"settings": {"wal_level": "ultra"}}, ["wal_level", "ultra"]),
    ("alter-bool", "pg_alter_system", {"settings": {"fsync": "maybe"}}, ["fsync", "maybe"]),
    ("alter-name-injection", "pg_alter_system", {"settings": {"work_mem = 1; DROP TABLE x; --": "1"}},
     ["work_mem = 1; DROP TABLE x; --"]),
    ("alter-name-quote", "pg_alter_system", {"settings": {'work_mem"': "1MB"}}, ['work_mem"']),
    ("alter-name-empty", "pg_alter_system", {"settings": {"": "1"}}, ["settings"]),
    ("alter-value-list", "pg_alter_system", {"settings": {"work_mem": ["1MB"]}}, ["work_mem"]),
    ("alter-value-dict", "pg_alter_system", {"settings": {"work_mem": {"a": 1}}}, ["work_mem"]),
    ("alter-value-newline", "pg_alter_system", {"settings": {"archive_command": "true\nx"}}, ["archive_command"]),
    ("alter-reset-unknown", "pg_alter_system", {"settings": {}, "reset": ["no_such_setting"]}, ["no_such_setting"]),
    ("alter-readonly", "pg_alter_system", {"settings": {"data_directory": "/tmp"}}, ["data_directory"]),
    ("alter-internal", "pg_alter_system", {"settings": {"server_version": "99"}}, ["server_version"]),
    ("alter-set-and-reset", "pg_alter_system", {"settings": {"work_mem": "4MB"}, "reset": ["work_mem"]},
     ["work_mem"]),
    ("alter-login-port-big", "pg_alter_system", {"login_port": 70000}, ["login_port", "70000"]),
    ("alter-connect-timeout-0", "pg_alter_system", {"connect_timeout": 0}, ["connect_timeout", "0"]),
    ("alter-connect-timeout-huge", "pg_alter_system", {"connect_timeout": 2**63 - 1},
     ["connect_timeout", str(2**63 - 1)]),
    ("alter-login-socket-newline", "pg_alter_system", {"login_unix_socket": "/tmp\nx"}, ["login_unix_socket"]),
    ("alter-wrong-password", "pg_alter_system", {"login_host": "127.0.0.1", "login_password": PASSWORD},
     ["postgres@127.0.0.1"]),
    # pg_role_detect
    ("role-pgdata-missing", "pg_role_detect", {"pgdata": "{base}/no-such-pgdata"}, ["pgdata", "no-such-pgdata"]),
    ("role-pgdata-file", "pg_role_detect", {"pgdata": "{conf}"}, ["pgdata", "pgbackrest.conf"]),
    ("role-login-db-nul", "pg_role_detect", {"login_db": "post\u0000gres"}, ["login_db", "\\u{0}"]),
    ("role-login-user-newline", "pg_role_detect", {"login_user": "postgres\nx"}, ["login_user"]),
    ("role-connect-timeout-negative", "pg_role_detect", {"connect_timeout": -5}, ["connect_timeout", "-5"]),
    ("role-login-port-negative", "pg_role_detect", {"login_port": -1}, ["login_port", "-1"]),
    # dr_drill: ranges, names, paths
    *[(f"drill-{opt}-{v}", "dr_drill", {opt: v}, [opt, str(v)])
      for opt in ("jobs", "max_check_seconds", "max_backup_age", "max_restore_seconds", "start_timeout",
                  "recovery_timeout", "min_users_expected", "max_data_loss")
      for v in (-1,)],
    ("drill-jobs-0", "dr_drill", {"jobs": 0}, ["jobs", "0"]),
    ("drill-checks-bogus", "dr_drill", {"checks": ["verify", "bogus"]}, ["checks", "bogus"]),
    ("drill-target-type-bogus", "dr_drill", {"target_type": "epoch"}, ["target_type", "epoch"]),
    ("drill-metrics-prefix", "dr_drill", {"metrics_prefix": "bad-prefix!"}, ["metrics_prefix", "bad-prefix!"]),
    ("drill-metrics-dir-relative", "dr_drill", {"metrics_dir": "rel/metrics"}, ["metrics_dir", "rel/metrics"]),
    ("drill-lock-dir-relative", "dr_drill", {"lock_dir": "rel/lock"}, ["lock_dir", "rel/lock"]),
    ("drill-container-name", "dr_drill", {"container_name": "bad name;rm"}, ["container_name", "bad name;rm"]),
    ("drill-sandbox-bogus", "dr_drill", {"sandbox": "docker"}, ["sandbox", "docker"]),
    ("drill-target-action", "dr_drill", {"target_action": "pause"}, ["target_action", "pause"]),
    ("drill-set-injection", "dr_drill", {"set": "20250101-000000F; rm -rf /"}, ["set", "rm -rf"]),
    # pgbackrest_schedule: unit names, contents, paths, modes, owners, links, builds
    *[(f"sched-unit-name-{i}", "pgbackrest_schedule", {"units": [{"name": name, "content": "x"}]},
       ["units[0].name", shown])
      for i, (name, shown) in enumerate([("a b.timer", "a b.timer"), ("../../etc/x.service", "../../etc/x.service"),
                                         ("x.conf", "x.conf"), ("-x.timer", "-x.timer"), ("", "''"),
                                         ("x\n.timer", "x\n.timer")])],
    ("sched-unit-content-nul", "pgbackrest_schedule", {"units": [{"name": "a.timer", "content": "a\u0000b"}]},
     ["units[0].content", "control character"]),
    ("sched-unit-content-missing", "pgbackrest_schedule", {"units": [{"name": "a.timer"}]},
     ["units[0].content", "a.timer"]),
    ("sched-unit-twice", "pgbackrest_schedule",
     {"units": [{"name": "a.timer", "content": ""}, {"name": "a.timer", "content": ""}]}, ["units[1].name", "a.timer"]),
    ("sched-unit-unknown-key", "pgbackrest_schedule", {"units": [{"name": "a.timer", "content": "", "enable": True}]},
     ["units[0]", "enable"]),
    ("sched-unit-enabled-maybe", "pgbackrest_schedule",
     {"units": [{"name": "a.timer", "content": "", "enabled": "maybe"}]}, ["units[0].enabled", "maybe"]),
    ("sched-unit-not-a-dict", "pgbackrest_schedule", {"units": ["a.timer"]}, ["units"]),
    ("sched-file-mode-0777", "pgbackrest_schedule", {"files": [{"path": "{base}/cfg/x", "content": "", "mode": "0777"}]},
     ["files[0].mode", "0777"]),
    ("sched-file-mode-setuid", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "content": "", "mode": "4755"}]}, ["files[0].mode", "4755"]),
    ("sched-file-mode-symbolic", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "content": "", "mode": "u+x"}]}, ["files[0].mode", "u+x"]),
    ("sched-file-relative", "pgbackrest_schedule", {"files": [{"path": "rel/x", "content": ""}]},
     ["files[0].path", "rel/x"]),
    ("sched-file-dotdot", "pgbackrest_schedule", {"files": [{"path": "{base}/cfg/../etc/x", "content": ""}]},
     ["files[0].path", "/../etc/x"]),
    ("sched-file-directory", "pgbackrest_schedule", {"files": [{"path": "{base}/cfg", "content": ""}]},
     ["files[0]", "/cfg"]),
    ("sched-file-symlink-by-postgres", "pgbackrest_schedule",
     {"files": [{"path": "{base}/hostile/pg-owned/pgbackrest.conf", "content": ""}]},
     ["files[0]", "pgbackrest.conf", "symbolic link"]),
    ("sched-file-owner-unknown", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "content": "", "owner": "no-such-user-x9"}]},
     ["files[0].owner", "no-such-user-x9"]),
    ("sched-file-group-max-gid", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "content": "", "group": "4294967295"}]}, ["files[0].group", "4294967295"]),
    ("sched-file-content-and-build", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "content": "", "src_build": "pg_role_detect"}]}, ["files[0]", "src_build"]),
    ("sched-file-build-without-plugin", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "src_build": "pg_role_detect"}]}, ["files[0].src_build", "pg_role_detect"]),
    ("sched-file-build-bad-digest", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/x", "src_build": "pg_role_detect", "sha256": "abc"}]}, ["files[0].sha256", "abc"]),
    ("sched-file-is-a-unit", "pgbackrest_schedule",
     {"files": [{"path": "{base}/cfg/units/vz-hostile.timer", "content": ""}]}, ["files[0].path", "vz-hostile.timer"]),
    ("sched-directory-symlink-by-postgres", "pgbackrest_schedule", {"directories": [{"path": "{base}/hostile/pg-owned/pgbackrest.conf"}]},
     ["directories[0]", "pgbackrest.conf", "symbolic link"]),
    ("sched-directory-is-a-file", "pgbackrest_schedule", {"directories": [{"path": "{conf}"}]},
     ["directories[0]", "pgbackrest.conf", "not a directory"]),
    ("sched-directory-mode-1777", "pgbackrest_schedule", {"directories": [{"path": "{base}/cfg/d", "mode": "1777"}]},
     ["directories[0].mode", "1777"]),
    ("sched-systemd-dir-relative", "pgbackrest_schedule", {"systemd_dir": "rel/units"}, ["systemd_dir", "rel/units"]),
    # An internal flag that is no boolean: read as false, it would turn a check into a real run.
    *[(f"{m}-check-mode-not-bool", m, {"_ansible_check_mode": "perhaps"}, ["_ansible_check_mode", "perhaps"])
      for m in MODULES],
]


def case_list():
    return [*type_cases(), *[(cid, m, {**base_args(m), **a}, exp) for cid, m, a, exp in HAND]]


CASES = case_list()

# Arguments files that are not arguments: each module must fail with its failure JSON.
MALFORMED = [
    ("not-json", b"this is not json"),
    ("empty", b""),
    ("array", b"[1, 2, 3]"),
    ("string", b'"stanza"'),
    ("number", b"42"),
    ("null", b"null"),
    ("truncated", b'{"stanza": "main"'),
    ("invalid-utf8", b'{"stanza": "\xff\xfe"}'),
    ("deep-nesting", b"[" * 200_000),
    ("duplicate-keys-huge", b"{" + b",".join(b'"k%d": 1' % i for i in range(20000)) + b"}"),
]


def fill(value, env):
    if isinstance(value, str):
        if value == "{port}":
            return env["port"]
        for k, v in env.items():
            value = value.replace("{" + k + "}", str(v))
        return value
    if isinstance(value, list):
        return [fill(v, env) for v in value]
    if isinstance(value, dict):
        return {fill(k, env): fill(v, env) for k, v in value.items()}
    return value


def snapshot(paths):
    """Hash and stat of every managed path (recursively, links not followed)."""
    seen = {}
    for top in paths:
        for path in [top, *(sorted(top.rglob("*")) if top.is_dir() and not top.is_symlink() else [])]:
            try:
                st = path.lstat()
            except FileNotFoundError:
                seen[str(path)] = None
                continue
            entry = (stat.S_IFMT(st.st_mode), st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns)
            if stat.S_ISREG(st.st_mode):
                entry += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            elif stat.S_ISLNK(st.st_mode):
                entry += (os.readlink(path),)
            seen[str(path)] = entry
    return seen


@pytest.fixture(scope="module")
def env(module_bin):
    base = scratch_dir("vz-hostile-")
    cluster = Cluster(base, "pg", free_port()).initdb().start()
    try:
        (base / "etc").mkdir()
        conf = base / "etc" / "pgbackrest.conf"
        repo = base / "repo"
        write_pgbackrest_config(conf, base, repo, cluster, "main")
        for d in ("lock", "log", "metrics", "drill-lock", "cfg", "hostile"):
            (base / d).mkdir()
        for d in ("lock", "log"):
            shutil.chown(base / d, "postgres", "postgres")
        as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", "--no-online", "stanza-create")
        (base / "tpl").write_text("{% for s in sections %}[{{ s.name }}]\n{% for l in s.lines %}{{ l }}\n"
                                  "{% endfor %}{% endfor %}# {{ vars.team }}\n")
        # A configuration the module wrote, which every pgbackrest_config case must leave as it is.
        values = {"base": base, "pgdata": cluster.pgdata, "conf": conf, "socket": cluster.socket_dir,
                  "port": cluster.port}
        args_file = base / "good.json"
        args_file.write_text(json.dumps(fill(base_args("pgbackrest_config"), values)))
        proc = subprocess.run([module_bin("pgbackrest_config"), args_file], capture_output=True, text=True)
        assert json.loads(proc.stdout)["changed"] is True, proc.stdout
        # postgres owns a directory of an older install and plants the file as a link to root's.
        victim = base / "hostile" / "root-only"
        victim.write_text(ROOT_ONLY + "\n")
        victim.chmod(0o600)
        owned = base / "hostile" / "pg-owned"
        owned.mkdir()
        shutil.chown(owned, "postgres", "postgres")
        as_postgres("ln", "-s", victim, owned / "pgbackrest.conf")
        managed = [base / d for d in ("etc", "repo", "metrics", "drill-lock", "cfg", "hostile", "lock", "tpl")]
        managed.append(cluster.pgdata / "postgresql.auto.conf")
        yield {"values": values, "managed": managed, "cluster": cluster, "bin": module_bin, "base": base}
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def pg_state(cluster):
    return cluster.psql("SELECT md5(string_agg(name || '=' || setting || ':' || source, ',' ORDER BY name)) "
                        "FROM pg_settings WHERE source <> 'client'")


def run_raw(binary, args_path):
    start = time.monotonic()
    proc = subprocess.run([str(binary), str(args_path)], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - start


RESULTS = {"cases": 0, "refused": 0}


def check_refused(proc, elapsed, before, after, expect, secrets=()):
    output = proc.stdout + proc.stderr
    assert "panicked" not in output and "RUST_BACKTRACE" not in output, output
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"one JSON line expected: {proc.stdout!r} {proc.stderr!r}"
    result = json.loads(lines[0])
    assert proc.returncode == 1 and result.get("failed") is True, result
    msg = result["msg"]
    # The option first, then the value (or, for a hidden option, the mask in its place).
    for i, text in enumerate(expect):
        assert text in msg or i > 0 and "********" in msg, (text, msg)
    for secret in secrets:
        assert secret not in output
    assert after == before, "changed on disk or in PostgreSQL"
    assert elapsed < BOUND, f"{elapsed:.2f}s"


@pytest.mark.parametrize("cid,module,args,expect", CASES, ids=[c[0] for c in CASES])
def test_hostile_argument_is_refused_cleanly(env, tmp_path, cid, module, args, expect):
    RESULTS["cases"] += 1
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps(fill(args, env["values"])))
    before = (snapshot(env["managed"]), pg_state(env["cluster"]))
    proc, elapsed = run_raw(env["bin"](module), args_file)
    after = (snapshot(env["managed"]), pg_state(env["cluster"]))
    check_refused(proc, elapsed, before, after, [fill(e, env["values"]) for e in expect],
                  secrets=(CIPHER, PASSWORD, NEAR_MISS, ROOT_ONLY))
    RESULTS["refused"] += 1


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name,content", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_arguments_file_is_refused_cleanly(env, tmp_path, module, name, content):
    RESULTS["cases"] += 1
    args_file = tmp_path / "args.json"
    args_file.write_bytes(content)
    before = (snapshot(env["managed"]), pg_state(env["cluster"]))
    proc, elapsed = run_raw(env["bin"](module), args_file)
    after = (snapshot(env["managed"]), pg_state(env["cluster"]))
    check_refused(proc, elapsed, before, after, [])
    RESULTS["refused"] += 1


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("name", ["missing", "directory", "symlink-to-root-only"])
def test_an_arguments_path_that_is_not_a_file_is_refused_cleanly(env, tmp_path, module, name):
    RESULTS["cases"] += 1
    path = {"missing": tmp_path / "no-such.json", "directory": tmp_path,
            "symlink-to-root-only": env["base"] / "hostile" / "pg-owned" / "pgbackrest.conf"}[name]
    before = (snapshot(env["managed"]), pg_state(env["cluster"]))
    proc, elapsed = run_raw(env["bin"](module), path)
    after = (snapshot(env["managed"]), pg_state(env["cluster"]))
    check_refused(proc, elapsed, before, after, ["arguments"], secrets=(ROOT_ONLY,))
    RESULTS["refused"] += 1


def test_zz_hostile_totals(capsys):
    """Prints the totals (runs last in this file)."""
    with capsys.disabled():
        print(f"\nhostile input: {RESULTS['cases']} cases, {RESULTS['refused']} refused cleanly")
