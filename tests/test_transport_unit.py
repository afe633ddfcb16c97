"""The fast transport's own logic, without a play, root or sshd: how it reads the platform probe,
picks a build from files/bin, remembers a build's digest, decides between the fast and the normal
path, and what the commands it sends to the target do when a real /bin/sh runs them here.

collection/plugins/plugin_utils/binary_transport.py is imported by path (it needs ansible-core,
not an installed collection). The transport's methods run on an ActionModule made without
Ansible's constructor: they use only the attributes set here, and `_low_level_execute_command`
is replaced by /bin/sh -c on this machine with HOME pointing into the test's temp dir.
"""

import ast
import hashlib
import importlib.util
import json
import os
import platform
import stat
import subprocess
import sys
import time
import types
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleError
from ansible.release import __version__ as ansible_version

from harness import REPO

PLUGINS = REPO / "collection/plugins"


def _load_transport():
    spec = importlib.util.spec_from_file_location("veza_binary_transport",
                                                  PLUGINS / "plugin_utils/binary_transport.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bt = _load_transport()

GNU_2_17 = "x86_64-unknown-linux-gnu.2.17"
GNU_2_28 = "x86_64-unknown-linux-gnu.2.28"
ARM_2_17 = "aarch64-unknown-linux-gnu.2.17"
MUSL = "x86_64-unknown-linux-musl"


def glibc(version, arch="x86_64"):
    return {"arch": arch, "libc": "glibc", "libc_version": version}


def builds(*entries):
    """{build directory: path} as available_builds returns it (the path names the build)."""
    return {e: f"/c/files/bin/{e}/mod" for e in entries}


def picked(found):
    return None if found is None else found.split("/")[-2]


# -- the platform probe -------------------------------------------------------------------------

def test_probe_of_a_glibc_target():
    out = "arch=x86_64\nglibc=glibc 2.36\nldd=ldd (Debian GLIBC 2.36-9+deb12u4) 2.36 Copyright \n"
    assert bt.parse_probe(out) == glibc("2.36")


def test_probe_of_a_musl_target_reads_ldd():
    out = "arch=aarch64\nglibc=\nldd=musl libc (aarch64) Version 1.2.4 Dynamic Program Loader \n"
    assert bt.parse_probe(out) == {"arch": "aarch64", "libc": "musl", "libc_version": "1.2.4"}


@pytest.mark.parametrize("uname, arch", [("amd64", "x86_64"), ("arm64", "aarch64"), ("riscv64", "riscv64")])
def test_uname_names_become_rust_target_names(uname, arch):
    assert bt.parse_probe(f"arch={uname}\nglibc=glibc 2.31\n")["arch"] == arch


@pytest.mark.parametrize("out", [
    "glibc=glibc 2.36\n",                              # no arch line
    "arch=\nglibc=glibc 2.36\n",                       # uname failed
    "arch=x86_64; rm -rf ~\nglibc=glibc 2.36\n",       # not a name: never used in a path
    "arch=x86_64\nglibc=\nldd=sh: ldd: not found \n",  # neither glibc nor musl
])
def test_probe_without_a_clear_answer_gives_no_platform(out):
    assert bt.parse_probe(out) is None


def test_probe_run_by_sh_here_finds_this_machine():
    """The probe as the transport sends it, run by this machine's /bin/sh."""
    proc = subprocess.run(["/bin/sh", "-c", bt.PROBE.strip()], capture_output=True, text=True, check=True)
    libc_version = os.confstr("CS_GNU_LIBC_VERSION").split()[1]
    assert bt.parse_probe(proc.stdout) == glibc(libc_version, arch=platform.machine())


# -- which build a target gets ------------------------------------------------------------------

@pytest.mark.parametrize("version, build", [("2.17", GNU_2_17), ("2.27", GNU_2_17), ("2.28", GNU_2_28),
                                            ("2.36", GNU_2_28), ("2.16", None)])
def test_newest_glibc_requirement_the_target_meets_wins(version, build):
    assert picked(bt.pick_build(builds(GNU_2_17, GNU_2_28, ARM_2_17), glibc(version))) == build


def test_glibc_versions_compare_as_numbers_not_as_text():
    old = "x86_64-unknown-linux-gnu.2.9"
    assert picked(bt.pick_build(builds(old, GNU_2_17), glibc("2.10"))) == old
    assert picked(bt.pick_build(builds(old, GNU_2_17), glibc("2.31"))) == GNU_2_17


def test_a_build_for_another_architecture_is_never_picked():
    assert picked(bt.pick_build(builds(GNU_2_17, ARM_2_17), glibc("2.31", arch="aarch64"))) == ARM_2_17
    assert bt.pick_build(builds(GNU_2_17, ARM_2_17), glibc("2.31", arch="riscv64")) is None


def test_a_static_musl_build_runs_anywhere_on_its_arch_but_a_fitting_glibc_build_is_preferred():
    assert picked(bt.pick_build(builds(MUSL, GNU_2_17), glibc("2.12"))) == MUSL
    assert picked(bt.pick_build(builds(MUSL, GNU_2_17), glibc("2.31"))) == GNU_2_17
    musl_target = {"arch": "x86_64", "libc": "musl", "libc_version": "1.2.4"}
    assert picked(bt.pick_build(builds(MUSL, GNU_2_17), musl_target)) == MUSL
    assert bt.pick_build(builds(GNU_2_17), musl_target) is None


def test_a_gnu_build_without_a_glibc_suffix_fits_any_glibc():
    assert picked(bt.pick_build(builds("x86_64-unknown-linux-gnu"), glibc("2.3"))) == "x86_64-unknown-linux-gnu"


def test_available_builds_are_the_target_directories_holding_the_module(tmp_path):
    bin_dir = tmp_path / "bin"
    for entry, name in [(GNU_2_17, "mod"), (ARM_2_17, "other"), ("not-a-target", "mod"),
                        ("x86_64-apple-darwin", "mod")]:
        (bin_dir / entry).mkdir(parents=True)
        (bin_dir / entry / name).write_bytes(b"\x7fELF")
    (bin_dir / MUSL / "mod").mkdir(parents=True)  # a directory, not a build
    assert bt.available_builds(str(bin_dir), "mod") == {GNU_2_17: str(bin_dir / GNU_2_17 / "mod")}
    assert bt.available_builds(str(bin_dir), "other") == {ARM_2_17: str(bin_dir / ARM_2_17 / "other")}
    assert bt.available_builds(str(tmp_path / "nowhere"), "mod") == {}


def test_the_collections_default_build_is_picked_for_this_machine(tmp_path):
    """The layout build-collection stages, with this machine's probe answer."""
    target = tmp_path / "files/bin" / GNU_2_17 / "pg_role_detect"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x7fELF")
    here = bt.parse_probe(subprocess.run(["/bin/sh", "-c", bt.PROBE], capture_output=True, text=True).stdout)
    module = tmp_path / "plugins/modules/pg_role_detect"
    assert bt.builds_dir(str(module)) == str(tmp_path / "files/bin")
    assert bt.pick_build(bt.available_builds(bt.builds_dir(str(module)), "pg_role_detect"), here) == str(target)


# -- the build's digest, once per run -----------------------------------------------------------

@pytest.fixture
def local_tmp(tmp_path, monkeypatch):
    """The run's local temp directory (Ansible's DEFAULT_LOCAL_TMP) for build_digest's memo."""
    path = tmp_path / "local-tmp"
    path.mkdir()
    monkeypatch.setattr(bt.C, "DEFAULT_LOCAL_TMP", str(path))
    return path


@pytest.fixture
def build(tmp_path):
    path = tmp_path / "build"
    path.write_bytes(os.urandom((5 << 20) // 2))  # 2.5 MiB: more than one of sha256_file's blocks
    return path


def test_build_digest_is_the_sha256_of_the_file(local_tmp, build):
    assert bt.build_digest(str(build)) == hashlib.sha256(build.read_bytes()).hexdigest()


def test_build_digest_is_hashed_once_then_read_from_the_run_temp(local_tmp, build, monkeypatch):
    digest = bt.build_digest(str(build))
    [memo] = local_tmp.iterdir()
    assert memo.read_text() == digest
    monkeypatch.setattr(bt, "sha256_file", lambda path: pytest.fail("hashed again"))
    assert bt.build_digest(str(build)) == digest


def test_a_build_changed_during_the_run_is_hashed_again(local_tmp, build):
    first = bt.build_digest(str(build))
    data = os.urandom(build.stat().st_size)  # same size: only the times and content tell
    build.write_bytes(data)
    st = build.stat()
    os.utime(build, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    second = bt.build_digest(str(build))
    assert second == hashlib.sha256(data).hexdigest() != first


def test_a_memo_that_is_not_a_digest_is_not_trusted(local_tmp, build):
    bt.build_digest(str(build))
    [memo] = local_tmp.iterdir()
    memo.write_text("0" * 63 + "\n")
    assert bt.build_digest(str(build)) == hashlib.sha256(build.read_bytes()).hexdigest()


def test_an_unwritable_run_temp_only_costs_the_memo(build, monkeypatch, tmp_path):
    monkeypatch.setattr(bt.C, "DEFAULT_LOCAL_TMP", str(tmp_path / "gone"))
    assert bt.build_digest(str(build)) == hashlib.sha256(build.read_bytes()).hexdigest()


# -- the action plugin's decisions --------------------------------------------------------------

def action(task=None, connection=None):
    """An ActionModule without Ansible's constructor: only the attributes the tested methods use."""
    am = object.__new__(bt.ActionModule)
    am._task = SimpleNamespace(**{"async_val": 0, "delegate_to": None, "args": {}, "check_mode": False,
                                  "diff": False, "no_log": False, "action": "veza.pgbackrest.pg_role_detect",
                                  **(task or {})})
    am._connection = SimpleNamespace(**{"_shell": SimpleNamespace(SHELL_FAMILY="sh"), "has_pipelining": True,
                                        "always_pipeline_modules": False, "transport": "ssh", **(connection or {})})
    return am


def test_fast_path_serves_a_plain_task_over_a_pipelining_posix_connection():
    assert action()._fast_path_unavailable({}) is None
    assert action()._fast_path_unavailable({"veza_pgbackrest_fast_path": "yes"}) is None


@pytest.mark.parametrize("value", [False, "false", "no", 0])
def test_fast_path_false_selects_the_normal_path_without_a_reason(value):
    assert action()._fast_path_unavailable({"veza_pgbackrest_fast_path": value}) == ""


@pytest.mark.parametrize("task, connection, reason", [
    ({"async_val": 30}, {}, "async"),
    ({}, {"_shell": SimpleNamespace(SHELL_FAMILY="powershell")}, "'powershell' is not POSIX"),
    ({}, {"has_pipelining": False, "transport": "winrm"}, "winrm connection cannot feed"),
    ({}, {"always_pipeline_modules": True, "transport": "psrp"}, "psrp connection cannot feed"),
])
def test_fast_path_refuses_what_it_cannot_serve_and_says_why(task, connection, reason):
    assert reason in action(task, connection)._fast_path_unavailable({})


def test_known_platform_from_a_variable_wins_over_the_fact_and_is_text():
    given = {"arch": "aarch64", "libc": "glibc", "libc_version": 2.31}  # YAML reads 2.31 as a float
    task_vars = {"veza_pgbackrest_platform": given, "ansible_facts": {"veza_pgbackrest_platform": glibc("2.36")}}
    assert action()._known_platform(task_vars) == glibc("2.31", arch="aarch64")


def test_known_platform_from_the_fact_of_an_earlier_task():
    assert action()._known_platform({"ansible_facts": {"veza_pgbackrest_platform": glibc("2.36")}}) == glibc("2.36")


@pytest.mark.parametrize("given", [None, "x86_64", {"arch": "x86_64", "libc": "glibc"}])
def test_an_incomplete_platform_means_detect_again(given):
    assert action()._known_platform({"veza_pgbackrest_platform": given}) is None


def test_module_args_carry_the_internals_the_binaries_read_without_touching_the_task():
    task_args = {"stanza": "main", "config": "/etc/pgbackrest/pgbackrest.conf"}
    am = action({"args": task_args, "check_mode": True, "diff": True, "no_log": True,
                 "action": "veza.pgbackrest.pgbackrest_stanza"})
    args = am._module_args()
    assert args == {**task_args, "_ansible_check_mode": True, "_ansible_diff": True, "_ansible_no_log": True,
                    "_ansible_verbosity": bt.display.verbosity, "_ansible_version": ansible_version,
                    "_ansible_module_name": "veza.pgbackrest.pgbackrest_stanza"}
    assert task_args == {"stanza": "main", "config": "/etc/pgbackrest/pgbackrest.conf"}
    assert json.loads(json.dumps(args, cls=bt.ENCODER)) == args


def test_an_ansible_core_without_the_command_methods_takes_the_normal_path(monkeypatch):
    monkeypatch.setattr(bt, "FAST_PATH_MISSING", ["_low_level_execute_command"])
    assert "has no ActionBase._low_level_execute_command" in action()._fast_path_unavailable({})


# -- the ansible-core version shims (tests/test_ansible_versions.py runs them on each release) --

@pytest.mark.parametrize("members, expected", [
    ({}, None),  # 2.15-2.18: no profiles, plain json.dumps
    ({"Direction": SimpleNamespace(CONTROLLER_TO_MODULE=1),
      "get_module_encoder": lambda name, direction: f"{name}/{direction}"}, "legacy/1"),  # 2.19
    ({"Direction": None, "get_module_encoder": lambda *a: 1 / 0, "AnsibleJSONEncoder": "generic"},
     "generic"),  # profiles that changed shape
    ({"Direction": None, "get_module_encoder": lambda *a: 1 / 0}, None),
])
def test_the_module_args_encoder_follows_what_the_release_has(monkeypatch, members, expected):
    fake = types.ModuleType("ansible.module_utils.common.json")
    fake.__dict__.update(members)
    monkeypatch.setitem(sys.modules, "ansible.module_utils.common.json", fake)
    assert bt.module_args_encoder() == expected


def test_parse_returned_data_gives_the_profile_only_to_a_release_that_takes_it():
    class Since219:
        def _parse_returned_data(self, res, profile):
            return {"profile": profile, **res}

    class Before219:
        def _parse_returned_data(self, res):
            return dict(res)
    assert bt.parse_returned_data(Since219(), {"stdout": "x"}) == {"profile": "legacy", "stdout": "x"}
    assert bt.parse_returned_data(Before219(), {"stdout": "x"}) == {"stdout": "x"}


def test_parse_returned_data_without_ansibles_parser_is_a_module_failure():
    data = bt.parse_returned_data(object(), {"stdout": "not json", "stderr": "boom", "rc": 2})
    assert data["failed"] is True and data["_ansible_parsed"] is False
    assert (data["module_stdout"], data["module_stderr"], data["rc"]) == ("not json", "boom", 2)


def test_the_own_remove_internal_keys_does_what_ansibles_does():
    from ansible.vars.clean import remove_internal_keys

    def sample():
        return {"changed": True, "_ansible_no_log": True, "add_host": {"host_name": "x"}, "_ansible_parsed": True, "warnings": [],
                "deprecations": ["kept"], "ansible_facts": {"discovered_interpreter_python": "/p",
                                                            "veza_pgbackrest_platform": {}}}
    ours, theirs = sample(), sample()
    bt._own_remove_internal_keys(ours)
    remove_internal_keys(theirs)
    assert ours == theirs == {"changed": True, "_ansible_parsed": True, "deprecations": ["kept"],
                              "ansible_facts": {"veza_pgbackrest_platform": {}}}


# -- the commands sent to the target, run by /bin/sh here ---------------------------------------

@pytest.fixture
def target(tmp_path):
    """An action whose target is /bin/sh on this machine with HOME=<tmp>/home; `.sent` lists
    (command, stdin) of what was sent."""
    home = tmp_path / "home"
    home.mkdir()
    am = action()
    am.home, am.sent = home, []

    def execute(cmd, sudoable=True, in_data=None):
        am.sent.append((cmd, in_data))
        proc = subprocess.run(["/bin/sh", "-c", cmd], input=in_data or b"", capture_output=True,
                              env={"HOME": str(home), "PATH": os.environ["PATH"]})
        return {"rc": proc.returncode, "stdout": proc.stdout.decode(), "stderr": proc.stderr.decode()}
    am._low_level_execute_command = execute
    am._compute_environment_string = lambda: "VEZA_TASK_ENV=from-the-task"
    return am


def cached(target, digest, script, mode=0o700):
    path = target.home / bt.CACHE_DIR / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(mode)
    return path


DIGEST = "ab" * 32


def test_cached_binary_runs_once_with_the_arguments_on_stdin_and_the_task_environment(target):
    cached(target, DIGEST, '#!/bin/sh\necho "env=$VEZA_TASK_ENV"; cat\nexit 3\n')
    res = target._run_cached(DIGEST, b'{"stanza": "main"}')
    assert res == {"rc": 3, "stdout": 'env=from-the-task\n{"stanza": "main"}', "stderr": ""}
    [(cmd, stdin)] = target.sent
    assert stdin == b'{"stanza": "main"}' and "main" not in cmd, "arguments go on stdin only"


@pytest.mark.parametrize("mode", [None, 0o600])
def test_a_missing_or_non_executable_cached_binary_is_reported_missing(target, mode):
    if mode is not None:
        cached(target, DIGEST, "#!/bin/sh\necho ran\n", mode=mode)
    res = target._run_cached(DIGEST, b"{}")
    assert res["rc"] == 0 and res["stdout"].strip() == bt.MISSING


def test_upload_puts_the_binary_under_its_digest_readable_by_its_user_only(target, tmp_path):
    binary = tmp_path / "pg_role_detect"
    binary.write_bytes(b"#!/bin/sh\necho uploaded\n")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    target._upload(str(binary), digest)
    cache = target.home / bt.CACHE_DIR
    assert [p.name for p in cache.iterdir()] == [digest], "no temporary file left"
    assert (cache / digest).read_bytes() == binary.read_bytes()
    assert stat.S_IMODE((cache / digest).stat().st_mode) == 0o700
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert target._run_cached(digest, b"")["stdout"] == "uploaded\n"


def test_upload_that_does_not_match_its_digest_fails_and_leaves_nothing(target, tmp_path):
    binary = tmp_path / "pg_role_detect"
    binary.write_bytes(b"#!/bin/sh\necho truncated or altered\n")
    with pytest.raises(AnsibleError, match="checksum mismatch"):
        target._upload(str(binary), DIGEST)
    assert list((target.home / bt.CACHE_DIR).iterdir()) == []
    assert target._run_cached(DIGEST, b"")["stdout"].strip() == bt.MISSING


def test_an_upload_prunes_old_builds_this_version_does_not_ship_and_nothing_else(target, tmp_path):
    binary = tmp_path / "pg_role_detect"
    binary.write_bytes(b"#!/bin/sh\necho new\n")
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    hour_and_more = time.time() - (bt.PRUNE_AFTER_MINUTES + 5) * 60
    files = {"old_release": ("cd" * 32, hour_and_more), "shipped_sibling": ("ef" * 32, hour_and_more),
             "just_uploaded_by_another_version": ("12" * 32, None),
             "old_partial_upload": (f".{'34' * 32}.4242", hour_and_more),
             "not_ours": ("notes.txt", hour_and_more)}
    for name, mtime in files.values():
        path = cached(target, name, "#!/bin/sh\n")
        if mtime:
            os.utime(path, (mtime, mtime))
    target._upload(str(binary), digest, keep={"ef" * 32})
    left = {p.name for p in (target.home / bt.CACHE_DIR).iterdir()}
    assert left == {digest, "ef" * 32, "12" * 32, "notes.txt"}


def test_a_binary_pruned_between_the_test_and_the_start_is_reported_missing(target):
    """Another version's prune removing the file after `[ -x ]`: stood for by a file that is
    executable but cannot be started, and goes (the shell's 127 with the file gone)."""
    path = cached(target, DIGEST, "#!/nonexistent/interpreter\n")
    target._compute_environment_string = lambda: f"rm -f {path};"
    res = target._run_cached(DIGEST, b"{}")
    assert res["stdout"].strip() == bt.MISSING and not path.exists()


def test_a_module_exiting_127_is_not_mistaken_for_a_missing_binary(target):
    cached(target, DIGEST, '#!/bin/sh\necho \'{"failed": true}\'\nexit 127\n')
    res = target._run_cached(DIGEST, b"{}")
    assert res["rc"] == 127 and res["stdout"].strip() == '{"failed": true}'


def test_shipped_digests_are_every_build_of_every_module(tmp_path):
    for entry, name, body in [(GNU_2_17, "a", b"1"), (GNU_2_17, "b", b"2"), (ARM_2_17, "a", b"3"),
                              ("not-a-build", "a", b"4")]:
        (tmp_path / entry).mkdir(parents=True, exist_ok=True)
        (tmp_path / entry / name).write_bytes(body)
    assert bt.shipped_digests(str(tmp_path)) == {hashlib.sha256(b).hexdigest() for b in (b"1", b"2", b"3")}


# -- one action plugin per module, each the transport --------------------------------------------

def test_every_module_has_an_action_plugin_that_is_only_the_transport():
    modules = {p.stem for p in (PLUGINS / "modules").glob("*.yml")}
    assert {p.stem for p in (PLUGINS / "action").glob("*.py")} == modules
    for name in sorted(modules):
        tree = ast.parse((PLUGINS / "action" / f"{name}.py").read_text())
        [imported] = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert imported.module == "ansible_collections.veza.pgbackrest.plugins.plugin_utils.binary_transport"
        assert [a.name for a in imported.names] == ["ActionModule"], name


def test_no_build_message_names_the_target_and_every_build_there_is():
    message = bt.no_build_message("veza.pgbackrest.dr_drill", glibc("2.12"), builds(GNU_2_17, ARM_2_17))
    assert message == ("veza.pgbackrest.dr_drill: no build for this target (x86_64, glibc 2.12); "
                       f"the collection has {GNU_2_17}, {ARM_2_17}")
    assert bt.no_build_message("m", glibc("2.36"), {}).endswith("the collection has none")


def test_the_probe_sent_is_the_shipped_probe_script_without_its_comments():
    script = (REPO / "collection/files/platform-probe.sh").read_text().splitlines()
    assert bt.PROBE.splitlines() == [line for line in script if not line.startswith("#")]
    assert len(bt.PROBE.splitlines()) == 3
