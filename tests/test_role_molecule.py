"""The molecule scenarios (molecule/): the whole job on a formation on loopback and this machine's
Incus, through the installed collection. `default`: placeholders refused, converge, idempotence,
verify (stanza, a backup by the rendered service, units, an Incus drill and its metrics, promtool,
a --check --diff converge without changes or secrets). `failover`: converge, backup, switchover,
converge again, then backups follow the new primary. Each scenario gets its own lab directory
and port block."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import free_port_block
from harness import REPO, scratch_dir

LAB = REPO / "playbooks/inventories/lab"


def cipher_pass():
    out = subprocess.run(["ansible-vault", "view", "--vault-password-file", LAB / "vault-password",
                          LAB / "group_vars/all/vault.yml"], check=True, capture_output=True, text=True).stdout
    return out.split(":", 1)[1].strip().strip('"')


@pytest.mark.parametrize("scenario", ["default", "failover"])
def test_molecule_scenario(scenario, collections_path):
    base = scratch_dir(f"vz-mol-{scenario}-")
    lab = base / "lab"  # create.yml makes it; destroy, which runs first, refuses a directory it did not make
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path), "VEZA_LAB_DIR": str(lab),
           "VEZA_LAB_PORT": str(free_port_block()), "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    try:
        proc = subprocess.run(["molecule", "test", "-s", scenario], cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        subprocess.run([REPO / "scripts/lab-formation", "destroy", lab], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    steps = dict(re.findall(rf"{scenario} (?:➜|>) (\w+)\]?:? Executed: (\w+)", output))
    expected = ["create", "converge", "verify", "destroy"] + (["prepare", "idempotence"] if scenario == "default" else ["side_effect"])
    assert all(steps.get(step) == "Successful" for step in expected), steps
    assert cipher_pass() not in output
