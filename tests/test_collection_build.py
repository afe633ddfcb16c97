"""The galaxy tarball: what it contains, what ansible-doc shows from it once installed offline,
and that a module binary built by the build step runs on an older glibc (Debian bullseye)."""

import json
import os
import shutil
import subprocess
import tarfile
import uuid

import pytest
import yaml

from conftest import MODULES
from harness import MONITOR_PASSWORD, REPO


def test_tarball_holds_binaries_docs_and_no_sources(tarball):
    with tarfile.open(tarball) as tar:
        names = {m.name: m for m in tar.getmembers()}
    for m in MODULES:
        binary = names[f"files/bin/x86_64-unknown-linux-gnu.2.17/{m}"]
        assert binary.isfile() and binary.mode & 0o111, "binary must be executable"
        link = names[f"plugins/modules/{m}"]
        assert link.issym() and link.linkname == f"../../files/bin/x86_64-unknown-linux-gnu.2.17/{m}"
        assert f"plugins/modules/{m}.yml" in names and f"plugins/modules/{m}.py" in names
        assert names[f"plugins/action/{m}.py"].isfile(), "every module has its action plugin"
    assert "plugins/plugin_utils/binary_transport.py" in names
    assert not [n for n in names if n.endswith((".rs", "Cargo.toml", "Cargo.lock")) or n.startswith("target")]


def test_ansible_doc_lists_and_shows_every_module(ansible):
    listed = subprocess.run(["ansible-doc", "-l", "veza.pgbackrest"], env=ansible.env, capture_output=True, text=True)
    assert listed.returncode == 0 and "WARNING" not in listed.stderr, listed.stderr
    assert sorted(line.split()[0] for line in listed.stdout.splitlines()) == sorted(f"veza.pgbackrest.{m}" for m in MODULES)
    for m in MODULES:
        shown = subprocess.run(["ansible-doc", "--json", f"veza.pgbackrest.{m}"], env=ansible.env, capture_output=True, text=True)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)[f"veza.pgbackrest.{m}"]
        sidecar = yaml.safe_load((REPO / "collection/plugins/modules" / f"{m}.yml").read_text())
        assert doc["doc"]["options"].keys() == sidecar["DOCUMENTATION"]["options"].keys()
        assert doc["doc"]["attributes"]["check_mode"]["support"] == "full"
        assert doc["doc"]["attributes"]["platform"]["platforms"] == "posix"
        for name, attribute in doc["doc"]["attributes"].items():
            assert attribute.get("support") and attribute.get("description"), f"{m}: attribute {name}"
        assert doc["doc"]["requirements"] and doc["doc"]["seealso"], f"{m} lists no requirements or seealso"
        # The action plugin adds veza_transport (and the platform fact) to results: documented
        # alike everywhere.
        transport, platform = _transport_doc()
        assert sidecar["RETURN"]["veza_transport"] == transport, m
        assert sidecar["RETURN"]["ansible_facts"]["contains"]["veza_pgbackrest_platform"] == platform, m
        used = list(_example_modules(doc["examples"]))
        assert f"veza.pgbackrest.{m}" in used and all(u.count(".") == 2 for u in used), used
        # The text an operator reads renders too (a `: ` in a plain YAML note once made it a
        # mapping, which only the text renderer chokes on).
        text = subprocess.run(["ansible-doc", f"veza.pgbackrest.{m}"], env=ansible.env, capture_output=True,
                              text=True)
        assert text.returncode == 0 and "ERROR" not in text.stderr, text.stderr
        assert "OPTIONS" in text.stdout and "EXAMPLES" in text.stdout, text.stdout[:500]


def _transport_doc():
    """The RETURN entries of what the action plugin adds (veza_transport, the platform fact), as
    the first module (sorted) documents them."""
    ret = yaml.safe_load((REPO / "collection/plugins/modules" / f"{sorted(MODULES)[0]}.yml").read_text())["RETURN"]
    return ret["veza_transport"], ret["ansible_facts"]["contains"]["veza_pgbackrest_platform"]


def _example_modules(examples):
    """The module keys of each example task (FQCN expected)."""
    for task in yaml.safe_load(examples):
        yield next(k for k in task if k not in ("name", "register", "when", "check_mode", "become", "vars"))


@pytest.fixture(scope="module")
def bullseye():
    """A Debian bullseye (glibc 2.31) root filesystem, built once and cached (scripts/old-glibc-rootfs)."""
    out = subprocess.run([REPO / "scripts" / "old-glibc-rootfs"], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_built_binary_runs_on_glibc_2_31(bullseye, module_bin, pair):
    """pg_role_detect from the tarball answers a real query from inside bullseye's userland."""
    primary, _ = pair
    libc = subprocess.run(["chroot", bullseye, "ldd", "--version"], capture_output=True, text=True).stdout
    assert "2.31" in libc.splitlines()[0], libc
    name = f"/tmp/pg_role_detect-{uuid.uuid4().hex}"
    shutil.copy(module_bin("pg_role_detect"), bullseye + name)
    try:
        # The chroot shares the loopback network, so the module reaches the test's server over TCP.
        args = {"source": "sql", "become_user": "", "login_host": "127.0.0.1", "login_port": primary.port,
                "login_user": "monitor", "login_password": MONITOR_PASSWORD}
        proc = subprocess.run(["chroot", bullseye, name], capture_output=True, text=True, input=json.dumps(args))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert json.loads(proc.stdout)["role"] == "primary"
    finally:
        os.unlink(bullseye + name)


def test_role_argument_specs_document_every_default_exactly():
    for role in sorted((REPO / "collection/roles").iterdir()):
        defaults = yaml.safe_load((role / "defaults/main.yml").read_text())
        options = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
        assert set(options) == set(defaults), f"{role.name}: {set(options) ^ set(defaults)}"
        for name, spec in options.items():
            assert spec.get("default") == defaults[name], f"{role.name}: {name}"
            assert spec.get("description"), f"{role.name}: {name} has no description"


def test_ansible_doc_shows_the_roles(ansible):
    listed = subprocess.run(["ansible-doc", "-t", "role", "-l", "veza.pgbackrest"], env=ansible.env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    for role in (REPO / "collection/roles").iterdir():
        assert f"veza.pgbackrest.{role.name}:" in listed.stdout
        # The text view (what `ansible-doc -t role` prints) renders every option of the spec.
        text = subprocess.run(["ansible-doc", "-t", "role", f"veza.pgbackrest.{role.name}"], env=ansible.env,
                              capture_output=True, text=True)
        assert text.returncode == 0 and "ERROR" not in text.stderr and "WARNING" not in text.stderr, text.stderr
        spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]
        assert "ENTRY POINT: *main*" in text.stdout, text.stdout[:500]
        assert all(name in text.stdout for name in spec["options"]), text.stdout[:500]
