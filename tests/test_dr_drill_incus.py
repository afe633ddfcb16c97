"""The restore drill's sandbox: Incus started by scripts/incus-up, the image from scripts/drill-image.

One ephemeral container from the image: it has no network interface (only lo) and carries
PostgreSQL 15 and pgBackRest.
"""

import json
import subprocess
import uuid

from harness import REPO


def incus(*args, check=True):
    return subprocess.run(["incus", *map(str, args)], check=check, capture_output=True, text=True)


def test_incus_up_is_idempotent_and_has_no_network(drill_image):
    subprocess.run([REPO / "scripts" / "incus-up"], check=True, capture_output=True)
    # Incus lists the host's own interfaces too; none may be one it manages (a bridge it made),
    # but the lab's isolated bridge when a lab is up (scripts/lab, tests/test_lab_network.py).
    managed = [n["name"] for n in json.loads(incus("network", "list", "--format=json").stdout)
               if n.get("managed")]
    assert managed in ([], ["vzlab0"])
    assert incus("profile", "device", "list", "default").stdout.split() == ["root"]


def test_drill_image_container_has_only_lo_and_postgres(drill_image):
    name = f"vz-test-{uuid.uuid4().hex[:8]}"
    incus("launch", drill_image, name, "--ephemeral")
    try:
        config = incus("config", "show", name, "--expanded").stdout
        assert "type: nic" not in config
        devices = incus("exec", name, "--", "cat", "/proc/net/dev").stdout.splitlines()[2:]
        assert [d.split(":")[0].strip() for d in devices] == ["lo"]
        version = incus("exec", name, "--", "/usr/lib/postgresql/15/bin/postgres", "--version").stdout
        assert "PostgreSQL) 15." in version
        assert incus("exec", name, "--", "pgbackrest", "version").stdout.startswith("pgBackRest 2.45")
        assert "/dev/shm" in incus("exec", name, "--", "cat", "/proc/mounts").stdout
    finally:
        incus("delete", "--force", name, check=False)
    assert incus("info", name, check=False).returncode != 0
