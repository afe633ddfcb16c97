"""The molecule scenarios (molecule/) on the lab of real hosts, through the installed collection:
create brings the lab up (scripts/lab up), destroy removes it. `default`: placeholders refused,
converge over SSH, idempotence, verify (configuration and archive_command, units and timers under
systemd, a heartbeat and a backup into the S3 bucket fired by systemd on the primary and skipped
by the standby, the archiving checks, an Incus drill from the bucket and its metrics, promtool,
a --check --diff converge without changes or secrets). `failover`: converge, a backup, a
switchover, converge again, then backups follow the new primary.

One lab per machine: the scenarios run one after the other in the session's lab directory
(conftest.py `lab_dir`); the lab tests before them have destroyed theirs."""

import os
import re
import subprocess

import pytest

from harness import REPO
from lab import LAB, LAB_SECRETS, run


@pytest.mark.parametrize("scenario", ["default", "failover"])
def test_molecule_scenario(scenario, collections_path, lab_dir):
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections_path), "VEZA_LAB_DIR": str(lab_dir),
           "NO_COLOR": "1", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", "PY_COLORS": "0"}
    try:
        proc = run("molecule", "test", "-s", scenario, cwd=REPO, env=env, check=False, timeout=3600)
    finally:
        run(LAB, "destroy", lab_dir, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    steps = dict(re.findall(rf"{scenario} (?:➜|>) (\w+)\]?:? Executed: (\w+)", output))
    expected = ["create", "converge", "verify", "destroy"] + (["prepare", "idempotence"] if scenario == "default" else ["side_effect"])
    assert all(steps.get(step) == "Successful" for step in expected), steps
    for secret in LAB_SECRETS:
        assert secret not in output
    assert not subprocess.run(["incus", "info", "vz-lab-node1"], capture_output=True).returncode == 0, \
        "destroy removed the lab"
