"""What a collection reviewer runs: antsibull-docs' collection docs lint on the installed tarball,
ansible-lint's production profile over the whole repository, antsibull-changelog's lint and a
changelog in step with its fragments, the licence text and changelog in the tarball, metadata
without placeholder addresses, and a collection README that covers every module, role and group."""

import os
import shutil
import subprocess
import tarfile

import yaml

from conftest import MODULES
from harness import REPO

COLLECTION = REPO / "collection"
ROLES = sorted(p.name for p in (COLLECTION / "roles").iterdir())


def test_antsibull_docs_lint_passes_on_the_installed_collection(collections_path):
    installed = collections_path / "ansible_collections/veza/pgbackrest"
    # Every reference checked (to this collection and to others, ansible.builtin included).
    proc = subprocess.run(["antsibull-docs", "lint-collection-docs", "--plugin-docs", "--validate-collection-refs",
                           "all", "--disallow-unknown-collection-refs", str(installed)],
                          env={**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path)},
                          capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_ansible_lint_production_profile_finds_nothing(collections_path):
    """Roles, playbooks, molecule, the benchmark's legacy play, the collection's metadata: with the
    collection's own modules and roles resolved from the installed tarball and the labs' vaults
    readable (its password is committed: it is a lab)."""
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path),
           # The lab inventory's vault (its password is committed: it is a lab).
           "ANSIBLE_VAULT_IDENTITY_LIST":
               f"lab-hosts@{REPO / 'playbooks/inventories/lab-hosts/vault-password'}",
           "NO_COLOR": "1"}
    proc = subprocess.run(["ansible-lint", "--nocolor", "-f", "pep8"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "'production'" in proc.stderr, proc.stderr
    config = yaml.safe_load((REPO / ".ansible-lint").read_text())
    assert config["profile"] == "production" and not config.get("warn_list")
    # The one skip, and why (see .ansible-lint): no repository address exists to put in galaxy.yml.
    assert config.get("skip_list") == ["galaxy[no-repository]"]
    assert "repository" not in yaml.safe_load((COLLECTION / "galaxy.yml").read_text())


def test_changelog_fragments_lint_and_are_all_released():
    proc = subprocess.run(["antsibull-changelog", "lint"], cwd=COLLECTION, capture_output=True, text=True)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr
    changelog = yaml.safe_load((COLLECTION / "changelogs/changelog.yaml").read_text())
    released = {f for r in changelog["releases"].values() for f in r.get("fragments", [])}
    fragments = {p.name for p in (COLLECTION / "changelogs/fragments").glob("*.yml")}
    assert fragments <= released, f"not in changelog.yaml yet (scripts/changelog): {sorted(fragments - released)}"
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    assert galaxy["version"] in changelog["releases"], "the version galaxy.yml builds has no changelog entry"
    # Every module and role of the release is listed as new in it.
    first = changelog["releases"][min(changelog["releases"])]
    assert sorted(m["name"] for m in first["modules"]) == sorted(MODULES)
    assert sorted(r["name"] for r in first["objects"]["role"]) == ROLES


def test_changelog_md_is_what_the_release_data_renders(tmp_path):
    copy = tmp_path / "collection"
    shutil.copytree(COLLECTION, copy)
    (copy / "CHANGELOG.md").unlink()
    proc = subprocess.run(["antsibull-changelog", "generate"], cwd=copy, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (copy / "CHANGELOG.md").read_text() == (COLLECTION / "CHANGELOG.md").read_text(), \
        "collection/CHANGELOG.md is not generated from changelogs/changelog.yaml: run scripts/changelog"


def test_tarball_ships_the_licence_and_the_changelog(tarball):
    with tarfile.open(tarball) as tar:
        names = set(tar.getnames())
        licence = tar.extractfile("COPYING").read().decode()
        manifest = yaml.safe_load(tar.extractfile("MANIFEST.json").read())
    assert "GNU GENERAL PUBLIC LICENSE" in licence and "Version 3, 29 June 2007" in licence
    assert licence == (COLLECTION / "COPYING").read_text()
    assert {"CHANGELOG.md", "changelogs/changelog.yaml", "changelogs/config.yaml"} <= names
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]


def test_no_placeholder_address_in_the_collection_or_its_metadata():
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    for key in ("repository", "documentation", "homepage", "issues"):
        assert "example" not in str(galaxy.get(key) or ""), key
    hits = subprocess.run(["grep", "-rIl", "example.invalid", str(COLLECTION), str(REPO / "tests/prometheus")],
                          capture_output=True, text=True).stdout.split()
    assert not hits, hits


def test_collection_readme_covers_every_module_role_and_group():
    readme = (COLLECTION / "README.md").read_text()
    for m in MODULES:
        assert f"`veza.pgbackrest.{m}`" in readme, m
    for r in ROLES:
        assert f"`veza.pgbackrest.{r}`" in readme, r
    groups = yaml.safe_load((COLLECTION / "meta/runtime.yml").read_text())["action_groups"]
    for g in groups:
        assert f"`group/veza.pgbackrest.{g}`" in readme, g
    assert "veza_transport" in readme and "COPYING" in readme and "CHANGELOG.md" in readme
