"""Every ansible-core release the collection claims (tests/ansible-core-versions.txt, which
meta/runtime.yml's requires_ansible states), each in its own cached venv (scripts/ansible-venv):

- the collection installed from the tarball with that release's ansible-galaxy;
- the transport's version shims as that release resolves them (binary_transport.py);
- one play over SSH (the loopback `sshd`) that runs every module on the fast path and on
  Ansible's own binary-module path, in check and diff mode, against a real PostgreSQL with a
  pgBackRest stanza and a backup (harness.BackedUpCluster);
- ansible-test sanity on the installed collection (the offline tests; see SANITY_SKIPPED).

2.20 and later need Python 3.12, which these machines lack: they are not in the list.
"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import REPO, BackedUpCluster, scratch_dir
from test_transport import RESULT_LOG_PLUGIN

VERSIONS = [line.strip() for line in (REPO / "tests/ansible-core-versions.txt").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
MODULES = ["pg_role_detect", "pg_alter_system", "pgbackrest_config", "pgbackrest_info",
           "pgbackrest_stanza", "dr_drill", "pgbackrest_archive_health",
           "pgbackrest_schedule"]
COLLECTION = "ansible_collections/veza/pgbackrest"


def minor(version):
    return tuple(int(p) for p in version.split(".")[:2])


@pytest.fixture(scope="module")
def backed_up():
    """One cluster with a stanza and a full backup for every release's play (read-only use)."""
    with BackedUpCluster() as b:
        yield b


@pytest.fixture(scope="module", params=VERSIONS)
def release(request, tarball, tmp_path_factory):
    """(version, venv bin dir, collections path): the venv (made once, cached by its pin) and the
    tarball installed with that release's own ansible-galaxy."""
    version = request.param
    out = subprocess.run([REPO / "scripts/ansible-venv", version], check=True, capture_output=True, text=True)
    bindir = Path(out.stdout.strip().splitlines()[-1]) / "bin"
    path = tmp_path_factory.mktemp(f"collections-{version}")
    subprocess.run([bindir / "ansible-galaxy", "collection", "install", str(tarball), "-p", str(path)],
                   check=True, capture_output=True, text=True)
    return version, bindir, path


SHIMS = r'''
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("bt", sys.argv[1])
bt = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bt)
from ansible.plugins.action.normal import ActionModule
action = object.__new__(bt.ActionModule)
action._used_interpreter = None
failure = bt.parse_returned_data(action, {"stdout": "not json", "stderr": "boom", "rc": 3})
json.dump({"encoder": bt.ENCODER and bt.ENCODER.__name__,
           "remove_internal_keys": bt.remove_internal_keys.__module__,
           "fast_path_missing": bt.FAST_PATH_MISSING,
           "failure": {k: failure.get(k) for k in ("failed", "module_stdout", "module_stderr", "rc")},
           "ansible_module": issubclass(bt.ActionModule, ActionModule)}, sys.stdout)
'''


def test_the_transport_shims_resolve_on_each_release(release):
    version, bindir, path = release
    plugin = path / COLLECTION / "plugins/plugin_utils/binary_transport.py"
    out = subprocess.run([bindir / "python", "-c", SHIMS, plugin], check=True, capture_output=True, text=True)
    shims = json.loads(out.stdout)
    # 2.19 added module serialization profiles; before, binary modules get plain json.dumps.
    assert (shims["encoder"] is not None) == (minor(version) >= (2, 19)), shims
    assert shims["remove_internal_keys"] == "ansible.vars.clean", "Ansible's own on every tested release"
    assert shims["fast_path_missing"] == [], "every tested release has the fast path's methods"
    assert shims["failure"] == {"failed": True, "module_stdout": "not json", "module_stderr": "boom", "rc": 3}
    assert shims["ansible_module"]


def play_text(b, work):
    """Every module once, in check and diff mode (the play's own), on hosts `fast` and `normal`."""
    c = b.cluster
    login = f"login_unix_socket: {c.socket_dir}\n        login_port: {c.port}"
    return f"""
- hosts: fast:normal
  gather_facts: false
  check_mode: true
  diff: true
  tasks:
    - name: pg_role_detect
      veza.pgbackrest.pg_role_detect:
        source: sql
        {login}
    - name: pg_alter_system
      veza.pgbackrest.pg_alter_system:
        settings: {{work_mem: 7MB}}
        {login}
    - name: pgbackrest_config
      veza.pgbackrest.pgbackrest_config:
        path: {work}/{{{{ inventory_hostname }}}}/pgbackrest.conf
        global: {{repo1-path: {b.repo}, repo1-retention-full: 2}}
        stanzas: {{{b.STANZA}: {{pg1-path: {c.pgdata}, pg1-port: {c.port}}}}}
    - name: pgbackrest_info
      veza.pgbackrest.pgbackrest_info:
        stanza: {b.STANZA}
        config: {b.conf}
    - name: pgbackrest_stanza
      veza.pgbackrest.pgbackrest_stanza:
        stanza: {b.STANZA}
        config: {b.conf}
        pgdata: {c.pgdata}
        source: sql
        {login}
    - name: dr_drill
      veza.pgbackrest.dr_drill:
        stanza: {b.STANZA}
        config: {b.conf}
        sandbox: host
        metrics_dir: {work}/metrics
        lock_dir: {work}/lock
    - name: pgbackrest_archive_health
      veza.pgbackrest.pgbackrest_archive_health:
        stanza: {b.STANZA}
        config: {b.conf}
        source: sql
        metrics_dir: {work}/metrics
        {login}
    - name: pgbackrest_schedule
      veza.pgbackrest.pgbackrest_schedule:
        manage_services: false
        systemd_dir: {work}/{{{{ inventory_hostname }}}}/units
        units:
          - name: vz-versions.timer
            content: "[Timer]\\nOnCalendar=daily\\n"
        # From the target's cache on the fast path, from the task's upload on the normal one.
        files:
          - path: {work}/{{{{ inventory_hostname }}}}/bin/pg_role_detect
            src_build: pg_role_detect
            mode: "0755"
"""


def test_a_play_runs_every_module_on_both_paths_in_check_and_diff_mode(release, backed_up, sshd, ansible):
    version, bindir, path = release
    work = scratch_dir(f"vz-versions-{version}-")
    (work / "callback").mkdir()
    (work / "callback/result_log.py").write_text(RESULT_LOG_PLUGIN)
    (work / "lock").mkdir()
    inventory = work / "inventory"
    inventory.write_text(f"fast {sshd}\nnormal {sshd} veza_pgbackrest_fast_path=false\n")
    (work / "play.yml").write_text(play_text(backed_up, work))
    log = work / "results.json"
    proc = subprocess.run(
        [bindir / "ansible-playbook", "-i", inventory, work / "play.yml"], capture_output=True, text=True,
        cwd=work, env={**ansible.env, "PATH": f"{bindir}:{os.environ['PATH']}",
                       "ANSIBLE_COLLECTIONS_PATH": str(path), "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
                       "ANSIBLE_CALLBACK_PLUGINS": str(work / "callback"),
                       "ANSIBLE_CALLBACKS_ENABLED": "result_log", "RESULT_LOG": str(log)})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    rows = json.loads(log.read_text())
    results = {(r["host"], r["task"]): r["result"] for r in rows}
    assert sorted(results) == sorted((h, m) for h in ("fast", "normal") for m in MODULES), output
    for (host, module), r in results.items():
        assert r["veza_transport"]["path"] == host, (module, r)

    for host in ("fast", "normal"):
        r = lambda m: results[(host, m)]  # noqa: E731
        assert r("pg_role_detect")["role"] == "primary"
        # Predicted, with its diff, and not applied.
        assert r("pg_alter_system")["changed"] is True
        assert "work_mem" in json.dumps(r("pg_alter_system")["diff"])
        assert r("pgbackrest_config")["changed"] is True
        assert "repo1-retention-full=2" in r("pgbackrest_config")["diff"]["after"]
        assert not (work / host / "pgbackrest.conf").exists()
        [stanza] = r("pgbackrest_info")["stanzas"]
        assert stanza["name"] == backed_up.STANZA and stanza["status"]["code"] == 0
        assert r("pgbackrest_stanza")["changed"] is False
        assert r("dr_drill")["changed"] is False and "would restore" in r("dr_drill")["msg"]
        assert r("pgbackrest_archive_health")["primary"] is True
        assert r("pgbackrest_schedule")["changed"] is True
        diffs = r("pgbackrest_schedule")["diff"]
        assert "OnCalendar=daily" in diffs[-1]["after"]
        assert not (work / host / "units").exists()
        assert diffs[0]["after"].startswith("build pg_role_detect: "), diffs
    assert backed_up.cluster.psql("SHOW work_mem") == "4MB", "check mode changed nothing"
    assert not (work / "metrics").exists() or not any((work / "metrics").iterdir())


#: Sanity tests that cannot run here, and why: none has to be skipped (pslint has no PowerShell
#: file to read; the rest run offline once scripts/sanity stands in for the pip bootstrap).
SANITY_SKIPPED = {}


def test_ansible_test_sanity_passes_on_the_built_collection(release, tarball):
    version, _, _ = release
    proc = subprocess.run([REPO / "scripts/sanity", version, tarball], capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    ran = set(re.findall(r'^Running sanity test "([^"]+)"', output, re.M))
    assert {"validate-modules", "pylint", "pep8", "yamllint", "ansible-doc", "import", "compile",
            "runtime-metadata", "shellcheck", "symlinks", "action-plugin-docs"} <= ran, output
    assert "Required program" not in output, "a sanity test skipped itself for a missing tool"
    assert not ran & SANITY_SKIPPED.keys()


def test_sanity_ignore_entries_each_give_a_reason_and_skip_nothing():
    """ansible-test's tests/sanity/ignore-X.Y.txt in the collection (none needed today): an entry
    is `path test[:code]  # reason`, and never a `!skip`, which would hide a whole test."""
    for ignore in sorted((REPO / "collection/tests/sanity").glob("ignore-*.txt")):
        for line in ignore.read_text().splitlines():
            entry, _, reason = line.partition("#")
            assert not entry.strip() or reason.strip(), f"{ignore.name}: {line!r} gives no reason"
            assert "!skip" not in entry, f"{ignore.name}: {line!r}"


def test_requires_ansible_is_the_oldest_tested_release():
    runtime = yaml.safe_load((REPO / "collection/meta/runtime.yml").read_text())
    oldest = min(VERSIONS, key=lambda v: tuple(map(int, v.split("."))))
    assert runtime["requires_ansible"] == f">={minor_floor(oldest)}"


def minor_floor(version):
    """2.15.13 -> 2.15.0: every patch release of the oldest tested minor is claimed."""
    major, minor_, _ = version.split(".")
    return f"{major}.{minor_}.0"
