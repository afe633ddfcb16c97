"""The fast transport for this collection's binary modules, shared by every action plugin.

Ansible runs a binary module with five SSH commands and two uploads per task, sends the binary
every time and writes the task's arguments (secrets included) to a file on the target; binary
modules cannot be pipelined. This action plugin instead:

- detects the target's architecture and libc once per host (kept for the rest of the run as the
  host fact ``veza_pgbackrest_platform``) and picks the build made for it from
  ``files/bin/<rust target>/NAME`` (``x86_64-unknown-linux-gnu.2.17`` = x86_64, glibc 2.17 or
  newer), failing clearly when none fits;
- keeps the binary on the target in ``~/.ansible/veza-bin/<sha256>`` of the user that runs it (the
  become user when becoming), uploading it only when missing, to a temporary name then renamed,
  so concurrent first uploads cannot leave a partial file under the final name;
- runs it in one command, through the become plugin, with the arguments (and the
  ``_ansible_check_mode``/``_diff``/``_no_log``/``_verbosity``/... internals) on stdin: they never
  touch the target's disk, and the target needs no Python.

Ansible's normal binary-module path (``ansible.builtin.normal``) is used instead, with a warning
at -v, for ``async`` tasks (Ansible's async_wrapper needs the module as a file), for connections
that cannot feed stdin to a command or whose shell is not POSIX, and when the target's platform
cannot be detected. ``veza_pgbackrest_fast_path: false`` (a variable) selects the normal path on
purpose, without a warning. ``veza_pgbackrest_platform`` set as a variable overrides detection
(``{arch: aarch64, libc: glibc, libc_version: "2.31"}``), for targets where detection is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

import inspect

from ansible import constants as C
from ansible.errors import AnsibleError
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.plugins.action.normal import ActionModule as NormalActionModule
from ansible.release import __version__ as ansible_version
from ansible.utils.display import Display

display = Display()

#: Where the binaries live on the target, relative to the running user's home.
CACHE_DIR = ".ansible/veza-bin"
#: The host fact holding the detected platform.
PLATFORM_FACT = "veza_pgbackrest_platform"
#: Printed by the run command when the cached binary is not there.
MISSING = "VEZA-BINARY-MISSING"
#: Binary modules are built and fed with Ansible's legacy serialization profile (2.19+).
PROFILE = "legacy"


# -- ansible-core version shims ------------------------------------------------------------------
#
# The plugin is tested with ansible-core 2.15 to 2.19 (tests/ansible-core-versions.txt). What it
# needs beyond ActionBase's documented methods is looked up here, once, by feature rather than by
# version number, each with a fallback, so a release that moves or drops one (2.20 and later need
# Python 3.12 and cannot run on the test machines) degrades to the nearest older behaviour or to
# Ansible's own binary-module path instead of failing on import.

def module_args_encoder():
    """The JSON encoder Ansible itself uses for a binary module's arguments.

    2.19+: the module serialization profile's (ansible.module_utils.common.json, where 2.19 added
    profiles). 2.15-2.18: none, ActionBase._execute_module writes plain ``json.dumps``. Looked up
    at import: this module is imported by the controller before it forks the workers, so they
    inherit it rather than each importing the profile again (about 2 ms a task).
    """
    try:
        from ansible.module_utils.common.json import Direction, get_module_encoder
    except ImportError:
        return None
    try:
        return get_module_encoder(PROFILE, Direction.CONTROLLER_TO_MODULE)
    except Exception:  # a profile registry that changed shape: Ansible's generic encoder, if any
        try:
            from ansible.module_utils.common.json import AnsibleJSONEncoder
        except ImportError:
            return None
        return AnsibleJSONEncoder


ENCODER = module_args_encoder()


def parse_returned_data(action, res):
    """ActionBase._parse_returned_data: Ansible's reading of a module's output that is not one
    JSON object (its MODULE FAILURE result). It takes the serialization profile since 2.19, not
    before; without it (a release that renamed it), a failure result of the same shape."""
    parse = getattr(action, "_parse_returned_data", None)
    if parse is None:
        return {"failed": True, "msg": "MODULE FAILURE: the module's output is not a JSON object",
                "module_stdout": res.get("stdout", ""), "module_stderr": res.get("stderr", ""),
                "rc": res.get("rc"), "_ansible_parsed": False}
    try:
        takes_profile = "profile" in inspect.signature(parse).parameters
    except (TypeError, ValueError):
        takes_profile = False
    return parse(res, PROFILE) if takes_profile else parse(res)


def _own_remove_internal_keys(data):
    """ansible.vars.clean.remove_internal_keys as 2.15 to 2.19 have it, for a release without."""
    for key in list(data):
        if key.startswith("_ansible_") and key != "_ansible_parsed" or key in ("add_host", "add_group"):
            display.warning(f"Removed unexpected internal key in module return: {key} = {data[key]}")
            del data[key]
    for key in ("warnings", "deprecations"):
        if key in data and not data[key]:
            del data[key]
    facts = data.get("ansible_facts")
    if isinstance(facts, dict):
        for key in [k for k in facts if "discovered_interpreter_" in k]:
            del facts[key]


try:
    # What ActionBase._execute_module applies to every module's result (2.15 to 2.19).
    from ansible.vars.clean import remove_internal_keys
except ImportError:
    remove_internal_keys = _own_remove_internal_keys

#: The ActionBase methods the fast path runs commands with (what ansible.builtin.raw and the
#: other action plugins use; no public API does it): in 2.15 to 2.19. A release without one of
#: them takes Ansible's own path.
FAST_PATH_MISSING = [name for name in ("_low_level_execute_command", "_compute_environment_string")
                     if not callable(getattr(ActionBase, name, None))]

#: Where the builds are, relative to the collection's root: outside plugins/modules, where
#: ansible-test's validate-modules would read every file as a module's source.
BUILDS = os.path.join("files", "bin")
# Rust target directory names under BUILDS: ARCH-VENDOR-linux-LIBC[.MIN_GLIBC]
BUILD_DIR = re.compile(r"^(?P<arch>[^-]+)-[^-]+-linux-(?P<libc>gnu|musl)(?:\.(?P<min>[0-9.]+))?$")
# Compiled here, in the controller, rather than in every worker.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# What `uname -m` may say for an architecture, mapped to Rust's name for it.
ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64", "armv8l": "aarch64", "i686": "i686"}

#: The platform probe, the sh script files/platform-probe.sh that the roles send too; read once,
#: here in the controller, and sent without its comment lines.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "files",
                       "platform-probe.sh")) as _probe:
    PROBE = "".join(line for line in _probe if not line.startswith("#"))


def _version(text):
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def parse_probe(stdout):
    """The platform from the probe's output: {arch, libc, libc_version}, or None if unknown."""
    seen = dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)
    arch = seen.get("arch", "").strip()
    if not re.fullmatch(r"[A-Za-z0-9_]+", arch):
        return None
    arch = ARCH_ALIASES.get(arch, arch)
    glibc = re.search(r"glibc\s+([0-9.]+)", seen.get("glibc", ""))
    if glibc:
        return {"arch": arch, "libc": "glibc", "libc_version": glibc.group(1)}
    musl = re.search(r"musl libc.*?Version\s+([0-9.]+)", seen.get("ldd", ""), re.I)
    if musl:
        return {"arch": arch, "libc": "musl", "libc_version": musl.group(1)}
    return None


def as_platform(given):
    """A platform given as a variable or kept as a fact, as {arch, libc, libc_version} of strings,
    or None when it is not a complete one."""
    if isinstance(given, dict) and {"arch", "libc", "libc_version"} <= given.keys():
        return {k: str(given[k]) for k in ("arch", "libc", "libc_version")}
    return None


def builds_dir(module_path):
    """The builds directory of the collection whose plugins/modules/NAME is `module_path`."""
    return os.path.normpath(os.path.join(os.path.dirname(module_path), "..", "..", BUILDS))


def available_builds(bin_dir, name):
    """{build directory: path} of the builds of module `name` under `bin_dir` (builds_dir)."""
    builds = {}
    for entry in sorted(os.listdir(bin_dir)) if os.path.isdir(bin_dir) else ():
        path = os.path.join(bin_dir, entry, name)
        if BUILD_DIR.match(entry) and os.path.isfile(path):
            builds[entry] = path
    return builds


def pick_build(builds, platform):
    """The build for `platform` (newest libc requirement that the target meets), or None."""
    fits = []
    for entry, path in builds.items():
        m = BUILD_DIR.match(entry)
        libc = "glibc" if m["libc"] == "gnu" else "musl"
        if m["arch"] != platform["arch"]:
            continue
        if libc == "musl":
            fits.append(((), path))  # a musl build is static: it runs on any Linux of its arch
        elif libc == platform["libc"] and _version(m["min"] or "0") <= _version(platform["libc_version"]):
            fits.append((_version(m["min"] or "0"), path))
    return max(fits)[1] if fits else None


def no_build_message(module, platform, builds):
    """The failure when no build of `module` fits `platform`: the target's platform and the builds."""
    return (f"{module}: no build for this target ({platform['arch']}, {platform['libc']} "
            f"{platform['libc_version']}); the collection has {', '.join(builds) or 'none'}")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_digest(path):
    """The build's SHA-256, hashed once per run rather than on every task (about 2 ms per MB).

    Remembered in the run's local temp directory, which the controller creates before it forks
    the workers that run tasks, under a name made of the file's device, inode, size, mtime and
    ctime: a binary changed in any way, even during the run, is hashed again.
    """
    st = os.stat(path)
    memo = os.path.join(C.DEFAULT_LOCAL_TMP, "veza-pgbackrest-sha256-" + "-".join(
        str(v) for v in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)))
    try:
        with open(memo) as f:
            digest = f.read()
        if SHA256_HEX.fullmatch(digest):
            return digest
    except OSError:
        pass
    digest = sha256_file(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(memo))
        with os.fdopen(fd, "w") as f:
            f.write(digest)
        os.replace(tmp, memo)
    except OSError:
        pass  # only a cache
    return digest


def shipped_digests(bin_dir):
    """The SHA-256 of every build of every module this collection ships (under `bin_dir`,
    builds_dir), which the target's cache keeps; hashed once per run (build_digest)."""
    found = set()
    for entry in sorted(os.listdir(bin_dir)) if os.path.isdir(bin_dir) else ():
        if BUILD_DIR.match(entry):
            for name in sorted(os.listdir(os.path.join(bin_dir, entry))):
                path = os.path.join(bin_dir, entry, name)
                if os.path.isfile(path):
                    found.add(build_digest(path))
    return found


#: Minutes a cached binary this version does not ship is kept after its upload: another version
#: of the collection (another controller, mid-rollout) may have uploaded it just now and be about
#: to run it.
PRUNE_AFTER_MINUTES = 60
_HEX64 = "[0-9a-f]" * 64


def prune_command(cache_dir, keep):
    """A sh command removing from the cache the binaries (``<sha256>``) and leftover temporary
    uploads (``.<sha256>.<pid>``) not in `keep` and older than PRUNE_AFTER_MINUTES. Run after an
    upload, so once per new release per user and host; never fails the task.

    Safe while other runs use the cache: a running binary keeps running when its name goes (Linux
    frees the file when it exits); a binary uploaded in the last hour by another version stays;
    this version's run command reports a binary removed between its test and its start as
    missing, and uploads it again.
    """
    spare = " ".join(f"! -name {k}" for k in sorted(keep) if SHA256_HEX.fullmatch(k))
    return (f"find {cache_dir} -maxdepth 1 -type f \\( -name '{_HEX64}' -o -name '.{_HEX64}.*' \\) "
            f"{spare} -mmin +{PRUNE_AFTER_MINUTES} -exec rm -f {{}} + 2>/dev/null || true")


class ActionModule(NormalActionModule):
    """Runs a veza.pgbackrest binary module over the fast transport (see the module docstring)."""

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        why_not = self._fast_path_unavailable(task_vars)
        if why_not is not None:
            return self._fallback(tmp, task_vars, why_not)

        result = ActionBase.run(self, tmp, task_vars)
        module_path, module_fqcn = self._find_module()
        builds = available_builds(builds_dir(module_path), module_fqcn.rsplit(".", 1)[-1])

        facts = {}
        # A delegated task runs on another host than the one whose variables and facts it sees.
        platform = None if self._task.delegate_to else self._known_platform(task_vars)
        if platform is None:
            platform = self._detect()
            if platform is None:
                return self._fallback(tmp, task_vars, "the target's architecture and libc could not be detected")
            if not self._task.delegate_to:
                facts[PLATFORM_FACT] = platform

        binary = pick_build(builds, platform)
        if binary is None:
            result.update(failed=True, msg=no_build_message(self._task.action, platform, builds))
            if facts:
                result["ansible_facts"] = facts
            return result

        digest = build_digest(binary)
        args, wanted_builds = self._with_builds(self._module_args(), builds_dir(module_path), platform)
        in_data = json.dumps(args, cls=ENCODER).encode()

        uploaded = False
        res = self._run_cached(digest, in_data)
        if res["stdout"].strip() == MISSING:
            self._upload(binary, digest, keep=shipped_digests(builds_dir(module_path)))
            uploaded = True
            res = self._run_cached(digest, in_data)
            if res["stdout"].strip() == MISSING:
                raise AnsibleError(f"the uploaded binary {self._cache_path(digest)} is not executable on the target")

        data = self._decode(res)
        # Builds the module copies from the cache (_with_builds) and did not find there: it failed
        # before changing anything; upload them (as the module's own binary) and run it once more.
        missing = [d for d in data.get("missing_builds") or () if d in wanted_builds]
        if data.get("failed") and missing:
            for build in missing:
                self._upload(wanted_builds[build], build, keep=shipped_digests(builds_dir(module_path)))
            uploaded = True
            data = self._decode(self._run_cached(digest, in_data))
        remove_internal_keys(data)
        for stream in ("stdout", "stderr"):
            if stream in data and f"{stream}_lines" not in data:
                data[f"{stream}_lines"] = (data.get(stream) or "").splitlines()
        if facts:
            data["ansible_facts"] = {**(data.get("ansible_facts") or {}), **facts}
        data["veza_transport"] = {"path": "fast", "binary": digest, "uploaded": uploaded,
                                  "build": os.path.basename(os.path.dirname(binary))}
        result.update(data)
        return result

    def _decode(self, res):
        """The module's result from its command's output."""
        try:
            # The module prints exactly one JSON object: plain strings come back untrusted, as
            # Ansible's decoder would leave them. Anything else takes Ansible's parser and errors.
            data = json.loads(res["stdout"])
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError:
            data = parse_returned_data(self, res)
        return data

    def _with_builds(self, args, bin_dir, platform):
        """(arguments, {sha256: local path}) for a module that installs builds of this
        collection's modules as programs (pgbackrest_schedule's ``files[].src_build``, such as the
        primary check ``pg_role_detect``): each one's build for the target's platform, picked as
        the module's own is, named by its SHA-256 (``files[].sha256``), so that the module copies
        it from the target's cache (``~/.ansible/veza-bin/<sha256>``) instead of it being sent
        again; the local paths, to upload those the module reports missing. Other modules have
        no ``files`` option: their arguments are returned as they are."""
        files = args.get("files")
        if not isinstance(files, list):
            return args, {}
        wanted, resolved = {}, []
        for item in files:
            name = item.get("src_build") if isinstance(item, dict) else None
            if not isinstance(name, str) or not name:
                resolved.append(item)
                continue
            builds = available_builds(bin_dir, name)
            if not builds:
                raise AnsibleError(f"{self._task.action}: files: src_build '{name}' is not a module of "
                                   "this collection")
            path = pick_build(builds, platform)
            if path is None:
                raise AnsibleError(no_build_message(name, platform, builds))
            digest = build_digest(path)
            wanted[digest] = path
            resolved.append({**item, "sha256": digest})
        if not wanted:
            return args, {}
        return {**args, "files": resolved}, wanted

    def _module_args(self):
        """The task's arguments and the internals these binaries read (ansible_module's Context).

        ActionBase._update_module_args would add more (syslog, selinux, traceback settings) at
        about 10 ms per task on this controller, for values the binaries ignore. Check mode needs
        no gate here: ActionBase.run skips the task when the action does not support it, and the
        binaries support it.
        """
        return {**self._task.args,
                "_ansible_check_mode": bool(self._task.check_mode),
                "_ansible_diff": bool(self._task.diff),
                "_ansible_no_log": bool(self._task.no_log),
                "_ansible_verbosity": display.verbosity,
                "_ansible_version": ansible_version,
                "_ansible_module_name": self._task.action}

    # -- choosing the path ---------------------------------------------------------------------

    def _fast_path_unavailable(self, task_vars):
        """Why the fast path cannot serve this task, or None."""
        if not boolean(task_vars.get("veza_pgbackrest_fast_path", True), strict=False):
            return ""  # asked for: no warning
        if FAST_PATH_MISSING:
            return f"this ansible-core ({ansible_version}) has no ActionBase.{FAST_PATH_MISSING[0]}"
        if self._task.async_val:
            return "async tasks run through Ansible's async_wrapper, which needs the module as a file"
        if getattr(getattr(self._connection, "_shell", None), "SHELL_FAMILY", "") != "sh":
            return f"the target shell {self._connection._shell.SHELL_FAMILY!r} is not POSIX"
        if not getattr(self._connection, "has_pipelining", False) or \
                getattr(self._connection, "always_pipeline_modules", False):
            return f"the {self._connection.transport} connection cannot feed a command's stdin"
        return None

    def _fallback(self, tmp, task_vars, why):
        if why and display.verbosity >= 1:
            display.warning(f"{self._task.action}: Ansible's binary-module transport is used because {why}")
        given = self._task.args
        try:
            self._task.args = self._with_uploaded_builds(given, task_vars)
            result = super().run(tmp, task_vars)
        finally:
            self._task.args = given
        result["veza_transport"] = {"path": "normal"}
        return result

    def _with_uploaded_builds(self, args, task_vars):
        """On Ansible's own path, the builds a module installs (_with_builds) are put in the
        task's temporary directory on the target, which that path removes afterwards, and named
        there (``files[].src``): the transport's cache is the fast path's. When the target's
        platform is unknown, the arguments as they are (the module then refuses ``src_build``)."""
        files = args.get("files")
        if not isinstance(files, list) or not any(isinstance(f, dict) and f.get("src_build") for f in files):
            return args
        platform = None if self._task.delegate_to else self._known_platform(task_vars)
        platform = platform or self._detect()
        if platform is None:
            return args
        module_path = self._find_module()[0]
        args, wanted = self._with_builds(args, builds_dir(module_path), platform)
        if not wanted:
            return args
        tmpdir = self._connection._shell.tmpdir or self._make_tmp_path()
        remote = {digest: self._transfer_file(path, self._connection._shell.join_path(tmpdir, f"build-{digest}"))
                  for digest, path in wanted.items()}
        self._fixup_perms2(list(remote.values()))
        return {**args, "files": [{**f, "src": remote[f["sha256"]]}
                                  if isinstance(f, dict) and f.get("sha256") in remote else f
                                  for f in args["files"]]}

    def _find_module(self):
        """(path of plugins/modules/NAME, FQCN) of the module this task runs."""
        found = self._shared_loader_obj.module_loader.find_plugin_with_context(
            self._task.action, collection_list=self._task.collections)
        if not found.resolved:
            raise AnsibleError(f"module {self._task.action} not found")
        return found.plugin_resolved_path, found.plugin_resolved_name

    def _known_platform(self, task_vars):
        return as_platform(task_vars.get(PLATFORM_FACT) or (task_vars.get("ansible_facts") or {}).get(PLATFORM_FACT))

    # -- commands on the target ------------------------------------------------------------------

    def _cache_path(self, digest):
        return f'"$HOME"/{CACHE_DIR}/{digest}'

    def _detect(self):
        res = self._low_level_execute_command(PROBE.strip(), sudoable=True)
        return parse_probe(res.get("stdout", "")) if res.get("rc") == 0 else None

    def _run_cached(self, digest, in_data):
        """One command: run the cached binary with the arguments on stdin, or say it is missing."""
        env = self._compute_environment_string()
        # A binary that went between the test and the run (pruned by another version's upload)
        # is missing too: the shell's 127 with the file gone.
        cmd = (f'f={self._cache_path(digest)}; if [ -x "$f" ]; then {env} "$f"; rc=$?; '
               f'[ $rc -ne 127 ] || [ -e "$f" ] || {{ echo {MISSING}; exit 0; }}; exit $rc; fi; '
               f'echo {MISSING}')
        return self._low_level_execute_command(cmd, sudoable=True, in_data=in_data)

    def _upload(self, binary, digest, keep=()):
        """Write the binary to a temporary name next to its final one, check it, rename it; then
        prune the cache (prune_command) of what this version of the collection does not ship."""
        with open(binary, "rb") as f:
            data = f.read()
        d = f'"$HOME"/{CACHE_DIR}'
        cmd = (f'umask 077 && mkdir -p {d} && t={d}/.{digest}.$$ && cat > "$t" && '
               f'if command -v sha256sum >/dev/null 2>&1; then '
               f'[ "$(sha256sum < "$t" | cut -c1-64)" = {digest} ] || {{ rm -f "$t"; echo checksum mismatch >&2; exit 1; }}; fi && '
               f'chmod 0700 "$t" && mv -f "$t" {d}/{digest} && {{ {prune_command(d, {digest, *keep})}; }}')
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=data)
        if res.get("rc") != 0:
            raise AnsibleError(f"uploading {os.path.basename(binary)} to {d}/{digest} failed "
                               f"(rc={res.get('rc')}): {res.get('stderr', '').strip()}")
