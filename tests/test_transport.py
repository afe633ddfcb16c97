"""The fast transport (plugins/plugin_utils/binary_transport.py) over a real SSH connection to 127.0.0.1.

The target logs in as root (the `sshd` fixture), so its cache is /root/.ansible/veza-bin and, when
becoming postgres, /var/lib/postgresql/.ansible/veza-bin. Each task's result, as the callbacks see
it, is recorded by a small callback (RESULT_LOG) so the tests read `veza_transport` (which path ran,
which binary, whether it was uploaded) instead of parsing the screen output.
"""

import hashlib
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from harness import canary as new_canary, scratch_dir

CACHES = [Path("/root/.ansible/veza-bin"), Path("/var/lib/postgresql/.ansible/veza-bin")]
# The target's Ansible temp and cache directories (the controller's temp is moved elsewhere).
SCANNED = [Path("/root/.ansible/tmp"), Path("/var/lib/postgresql/.ansible/tmp"), *CACHES]
BUILD = "x86_64-unknown-linux-gnu.2.17"

RESULT_LOG_PLUGIN = '''
import json, os
from ansible.plugins.callback import CallbackBase

class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "result_log"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.rows = []

    def _record(self, result, status):
        self.rows.append({"task": result._task.get_name(), "host": result._host.get_name(), "status": status,
                          "result": json.loads(json.dumps(result._result, default=str))})

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "failed")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        with open(os.environ["RESULT_LOG"], "w") as out:
            json.dump(self.rows, out)
'''


@pytest.fixture(scope="module")
def target(sshd, ansible):
    """Runs plays against `t1` and `t2`, two inventory names for the same loopback sshd."""
    work = ansible.workdir / "transport"
    (work / "callback").mkdir(parents=True, exist_ok=True)
    (work / "callback" / "result_log.py").write_text(RESULT_LOG_PLUGIN)
    inventory = work / "inventory"
    inventory.write_text(f"t1 {sshd}\nt2 {sshd}\n")

    def play(tasks, hosts="t1", extra=(), env=None, name="transport.yml"):
        """Run `tasks` (YAML text, indented for a play) on `hosts`; returns (rc, output, rows)."""
        log = work / "results.json"
        log.unlink(missing_ok=True)
        text = f"- hosts: {hosts}\n  gather_facts: false\n  tasks:\n{tasks}"
        rc, output = ansible.playbook(text, inventory=inventory, extra=extra, name=name, env={
            "ANSIBLE_CALLBACK_PLUGINS": str(work / "callback"), "ANSIBLE_CALLBACKS_ENABLED": "result_log",
            "RESULT_LOG": str(log), "ANSIBLE_LOCAL_TEMP": str(work / "controller-tmp"), **(env or {})})
        rows = json.loads(log.read_text()) if log.exists() else []
        return rc, output, rows

    return play


@pytest.fixture
def fresh_cache():
    for cache in CACHES:
        shutil.rmtree(cache, ignore_errors=True)


def role_detect(name, password="", extra=""):
    """A pg_role_detect task that needs no server (PostgreSQL down -> role unknown, not a failure)."""
    return (f"    - name: {name}\n      veza.pgbackrest.pg_role_detect:\n        source: sql\n"
            f"        login_unix_socket: /nonexistent\n        login_password: '{password}'\n{extra}")


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def transports(rows):
    return [(r["host"], r["result"].get("veza_transport", {})) for r in rows]


def test_first_task_uploads_later_tasks_do_not(target, module_bin, fresh_cache):
    digest = sha256(module_bin("pg_role_detect"))
    tasks = "".join(role_detect(f"detect {i}") for i in range(3))
    rc, output, rows = target(tasks, extra=["-vvv"])
    assert rc == 0, output
    seen = [t for _, t in transports(rows)]
    assert [(t["path"], t["uploaded"], t["binary"], t["build"]) for t in seen] == \
        [("fast", True, digest, BUILD)] + [("fast", False, digest, BUILD)] * 2
    assert all(r["result"]["role"] == "unknown" for r in rows)
    cached = CACHES[0] / digest
    assert sha256(cached) == digest and cached.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in CACHES[0].iterdir()) == [digest], "no temporary files left behind"
    before = cached.stat()

    # A new run: the platform is detected again (facts live for one run), the binary is not sent again,
    # and each task is one SSH command once the platform is known.
    rc, output, rows = target(tasks, extra=["-vvv"])
    assert rc == 0, output
    assert [t["uploaded"] for _, t in transports(rows)] == [False] * 3
    after = cached.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert output.count("SSH: EXEC") == 1 + 3, "one probe, then one command per task"


def test_an_upload_prunes_the_old_builds_of_other_versions_over_ssh(target, module_bin, fresh_cache):
    """The per-user cache on a target keeps what this version ships and what another version
    uploaded in the last hour; an older build of another version goes, once, at this upload."""
    CACHES[0].mkdir(parents=True)
    old, recent = CACHES[0] / ("0f" * 32), CACHES[0] / ("1e" * 32)
    for path in (old, recent):
        path.write_bytes(b"\x7fELF another version's build")
        path.chmod(0o700)
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    rc, output, rows = target(role_detect("prune"))
    assert rc == 0, output
    [(_, t)] = transports(rows)
    assert t["uploaded"] and t["binary"] == sha256(module_bin("pg_role_detect"))
    assert sorted(p.name for p in CACHES[0].iterdir()) == sorted([t["binary"], recent.name])


def test_changed_binary_is_uploaded_again(target, ansible, module_bin, tmp_path, fresh_cache):
    rc, output, rows = target(role_detect("original"))
    assert rc == 0 and transports(rows)[0][1]["uploaded"], output
    original = transports(rows)[0][1]["binary"]
    # A copy of the installed collection whose pg_role_detect differs by one trailing byte (ELF
    # files ignore it): a new checksum, so a new upload.
    src = Path(ansible.env["ANSIBLE_COLLECTIONS_PATH"])
    shutil.copytree(src, tmp_path / "collections", symlinks=True)
    binary = tmp_path / "collections/ansible_collections/veza/pgbackrest/files/bin" / BUILD / "pg_role_detect"
    with open(binary, "ab") as f:
        f.write(b"\0")
    rc, output, rows = target(role_detect("changed") + role_detect("changed again"),
                              env={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert rc == 0, output
    (_, first), (_, second) = transports(rows)
    assert first["binary"] == sha256(binary) != original and first["uploaded"] and not second["uploaded"]
    assert (CACHES[0] / original).exists() and (CACHES[0] / first["binary"]).exists()


def test_a_binary_changed_during_the_run_is_hashed_and_uploaded_again(target, ansible, tmp_path, fresh_cache):
    """The plugin hashes each build once per run and remembers it by the file's identity and
    times: a binary replaced between two tasks of the same run is not mistaken for the first."""
    src = Path(ansible.env["ANSIBLE_COLLECTIONS_PATH"])
    shutil.copytree(src, tmp_path / "collections", symlinks=True)
    binary = tmp_path / "collections/ansible_collections/veza/pgbackrest/files/bin" / BUILD / "pg_role_detect"
    first_digest = sha256(binary)
    change = f"    - name: change the build\n      ansible.builtin.raw: printf '\\000' >> {binary}\n"
    rc, output, rows = target(role_detect("before") + role_detect("same build") + change + role_detect("after"),
                              env={"ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections")})
    assert rc == 0, output
    (_, before), (_, same), (_, after) = transports([r for r in rows if r["task"] != "change the build"])
    assert sha256(binary) != first_digest, "the build did change"
    assert (before["binary"], before["uploaded"]) == (first_digest, True)
    assert (same["binary"], same["uploaded"]) == (first_digest, False)
    assert (after["binary"], after["uploaded"]) == (sha256(binary), True)


@pytest.mark.parametrize("method", ["ansible.builtin.su", "ansible.builtin.sudo"])
def test_become_postgres_runs_from_the_postgres_users_cache(method, target, module_bin, fresh_cache):
    work = scratch_dir("vz-become-")
    conf = work / "pgbackrest.conf"
    tasks = f"""    - name: as postgres
      veza.pgbackrest.pgbackrest_config:
        path: {conf}
        global: {{repo1-path: /var/lib/pgbackrest, repo1-cipher-type: aes-256-cbc, repo1-cipher-pass: {new_canary("become-cipher")}}}
        owner: postgres
        group: postgres
      become: true
      become_method: {method}
      become_user: postgres
    - name: whoami as postgres
      ansible.builtin.raw: id -un
      become: true
      become_method: {method}
      become_user: postgres
"""
    try:
        rc, output, rows = target(tasks)
        assert rc == 0, output
        transport = rows[0]["result"]["veza_transport"]
        assert transport["path"] == "fast" and transport["uploaded"]
        assert rows[1]["result"]["stdout"].strip() == "postgres", f"{method} works on this machine"
        # The binary ran as postgres, from postgres's own cache (root's home is closed to it).
        cached = CACHES[1] / transport["binary"]
        assert cached.owner() == "postgres" and not (CACHES[0] / transport["binary"]).exists()
        assert conf.owner() == "postgres" and rows[0]["result"]["changed"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


class CanaryScanner:
    """Reads every file under the target's Ansible temp and cache directories, over and over while a
    play runs, and remembers where a secret showed up."""

    def __init__(self, canary: str):
        self.canary = canary.encode()
        self.found = set()
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.scan()  # and once more after the play

    def _loop(self):
        while not self._stop.is_set():
            self.scan()
            time.sleep(0.005)

    def scan(self):
        for top in SCANNED:
            for root, _, files in os.walk(top):
                for name in files:
                    path = os.path.join(root, name)
                    try:
                        with open(path, "rb") as f:
                            if self.canary in f.read():
                                self.found.add(path)
                    except OSError:
                        pass  # gone already, or a socket
        self.passes += 1


def config_play(conf, canary, flags=""):
    return f"""    - name: configure
      veza.pgbackrest.pgbackrest_config:
        path: {conf}
        global: {{repo1-path: /var/lib/pgbackrest, repo1-cipher-type: aes-256-cbc, repo1-cipher-pass: "{canary}"}}
{flags}"""


def test_check_diff_no_log_and_the_secret_never_touches_the_targets_disk(target, tmp_path):
    canary = new_canary("transport")
    conf = tmp_path / "etc" / "pgbackrest.conf"
    tasks = (config_play(conf, canary, "      check_mode: true\n      diff: true\n")
             + config_play(conf, canary, "      diff: true\n")
             + config_play(conf, canary, "      no_log: true\n")
             + role_detect("detect with a password", canary))
    with CanaryScanner(canary) as scanner:
        rc, output, rows = target(tasks, extra=["-v"])
    assert rc == 0, output
    assert scanner.found == set() and scanner.passes > 3
    assert canary not in output and canary not in json.dumps(rows)
    check, real, quiet, detect = (r["result"] for r in rows)
    assert all(r["veza_transport"]["path"] == "fast" for r in (check, real, detect))
    assert check["changed"] and "repo1-cipher-pass=********" in check["diff"]["after"]
    assert real["changed"] and real["diff"] == check["diff"], "the diff is the same in check mode"
    assert not quiet["changed"] and quiet.get("censored"), "no_log hides the result"
    assert detect["invocation"]["module_args"]["login_password"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    assert canary in conf.read_text()


def test_the_canary_scanner_sees_arguments_written_by_the_normal_path(target, tmp_path):
    """The control for the test above: Ansible's own binary-module path writes the arguments file."""
    canary = new_canary("transport-control")
    conf = tmp_path / "pgbackrest.conf"
    with CanaryScanner(canary) as scanner:
        rc, output, rows = target(config_play(conf, canary, "      vars: {veza_pgbackrest_fast_path: false}\n"))
    assert rc == 0, output
    assert rows[0]["result"]["veza_transport"] == {"path": "normal"}
    assert any(path.startswith("/root/.ansible/tmp/") for path in scanner.found), scanner.found


def test_async_uses_the_normal_path_and_warns_at_v(target):
    # async_wrapper is a Python module: async tasks need Python on the target (pyenv's shims in
    # root's PATH here would be discovered first, without a version selected).
    tasks = role_detect("in the background", extra="      async: 30\n      poll: 1\n"
                        "      vars: {ansible_python_interpreter: /usr/bin/python3}\n")
    rc, output, rows = target(tasks, extra=["-v"])
    assert rc == 0, output
    # The result is async_status's, polled from the job's file: the module ran to completion.
    assert rows[0]["result"]["role"] == "unknown" and rows[0]["result"]["finished"]
    assert "transport is used because async tasks run through Ansible's async_wrapper" in output
    rc, output, rows = target(tasks)
    assert rc == 0 and "async_wrapper" not in output, "the warning is for -v only"


def test_two_hosts_racing_the_first_upload_both_succeed(target, module_bin, fresh_cache):
    digest = sha256(module_bin("pg_role_detect"))
    rc, output, rows = target(role_detect("race"), hosts="t1,t2", extra=["--forks", "2"])
    assert rc == 0, output
    assert sorted(host for host, t in transports(rows) if t["path"] == "fast") == ["t1", "t2"]
    assert any(t["uploaded"] for _, t in transports(rows))
    assert sha256(CACHES[0] / digest) == digest
    assert [p.name for p in CACHES[0].iterdir()] == [digest]


def test_a_target_without_a_matching_build_fails_clearly(target):
    platform = "      vars: {veza_pgbackrest_platform: {arch: riscv64, libc: glibc, libc_version: '2.36'}}\n"
    rc, output, rows = target(role_detect("riscv", extra=platform))
    assert rc != 0
    assert rows[0]["status"] == "failed"
    assert rows[0]["result"]["msg"] == ("veza.pgbackrest.pg_role_detect: no build for this target (riscv64, glibc 2.36); "
                                        f"the collection has {BUILD}")
