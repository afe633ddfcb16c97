"""The lab of real hosts (scripts/lab): three Incus system containers on the lab's own isolated
bridge, checked against the network rule while the lab is up, reached the way a playbook will
reach them (Ansible over SSH as root with the lab's key), a data node with its Python purged that
the pgbackrest role still converges, and checked for leftovers after destroy.

The lab is the session's (conftest.py `lab`, shared with test_lab_hosts.py, which runs first): the
tests read it in file order, the last one destroys it (the fixture destroys it again at the end,
whatever happened before).
"""

import json
import os
import re
import subprocess
from pathlib import Path

from lab import ADDR, LAB, NAMES, incus, parse_env, run
from test_lab_hosts import play, recap

BRIDGE = "vzlab0"
PROFILE = "vz-lab"
POOL = "vz-lab"


def ip_forward():
    return Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()


def blackhole_routes():
    """The lab's blackhole route as `ip` prints it ("blackhole 198.18.0.0/15 metric 4000")."""
    out = run("ip", "-4", "route", "show", "type", "blackhole").stdout
    return [line.split() for line in out.splitlines() if line.split()[1:2] == ["198.18.0.0/15"]]


def test_env_names_every_address_and_the_key(lab):
    env = lab.env
    assert parse_env(run(LAB, "env", lab.dir).stdout) == env, "up prints the env variables"
    assert env["LAB_HOSTS"].split() == NAMES
    addresses = [env[f"LAB_{n.removeprefix('vz-lab-').upper()}_ADDR"] for n in NAMES]
    assert addresses == list(ADDR.values())
    assert env["LAB_USER"] == "root" and env["LAB_BRIDGE"] == BRIDGE
    key = Path(env["LAB_KEY"])
    assert key.parent == lab.dir and key.stat().st_mode & 0o077 == 0
    assert Path(env["LAB_KNOWN_HOSTS"]).read_text().count("ssh-ed25519") == 3


def test_blackhole_route_covers_the_lab_range_while_up(lab):
    routes = blackhole_routes()
    assert len(routes) == 1 and routes[0][2:4] == ["metric", "4000"], routes
    # The bridge's own /24 is the only more specific route: nothing else of 198.18.0.0/15 is routed.
    route = run("ip", "-4", "route", "get", "198.18.0.11").stdout
    assert f"dev {BRIDGE}" in route
    assert run("ip", "-4", "route", "get", "198.18.1.1", check=False).returncode != 0


def test_bridge_has_nat_routing_firewall_and_ipv6_off(lab):
    def get(key):
        return incus("network", "get", BRIDGE, key).stdout.strip()
    assert get("ipv4.nat") == "false"
    assert get("ipv4.routing") == "false"
    assert get("ipv4.firewall") == "false"
    assert get("ipv6.address") == "none"
    assert get("ipv4.address") == "198.18.0.1/24"
    # No NAT or forwarding rules for it anywhere in the host's firewall.
    assert BRIDGE not in run("nft", "list", "ruleset").stdout


def test_ip_forwarding_is_what_it_was_before_up(lab):
    assert ip_forward() == lab.ip_forward_before


def test_no_container_has_a_default_route(lab):
    for name in NAMES:
        routes = incus("exec", name, "--", "ip", "route").stdout
        # The interface is configured (the static address unit ran) ...
        assert f"198.18.0.0/24 dev eth0 proto kernel scope link src {ADDR[name]}" in routes, routes
        # ... and it is the only way out of the container: no default route of any type.
        assert not [r for r in routes.splitlines() if "default" in r.split()[:2]], (name, routes)
        for family, default in (("-4", "0/0"), ("-6", "::/0")):
            found = incus("exec", name, "--", "ip", family, "route", "show", "exact", default).stdout
            assert found == "", (name, found)


def test_systemd_is_pid1_and_the_host_ids_are_postgres(lab):
    uid, gid = (run("id", flag, "postgres").stdout.strip() for flag in ("-u", "-g"))
    for name in NAMES:
        assert incus("exec", name, "--", "cat", "/proc/1/comm").stdout.strip() == "systemd"
        state = incus("exec", name, "--", "systemctl", "is-system-running", check=False).stdout
        assert state.strip() in ("running", "degraded"), (name, state)
        ids = incus("exec", name, "--", "sh", "-c", "id -u postgres; id -g postgres").stdout.split()
        assert ids == [uid, gid], name
        assert incus("exec", name, "--", "hostname").stdout.strip() == name


def test_containers_have_their_own_machine_id_and_host_key(lab):
    machine_ids = {incus("exec", n, "--", "cat", "/etc/machine-id").stdout.strip() for n in NAMES}
    known_hosts = Path(lab.env["LAB_KNOWN_HOSTS"]).read_text().splitlines()
    host_keys = {line.split()[2] for line in known_hosts}
    assert len(machine_ids) == 3 and "" not in machine_ids
    assert len(host_keys) == 3


def test_ansible_ping_over_ssh_reaches_all_three(lab):
    env = lab.env
    inventory = lab.work / "inventory.json"
    ssh_args = (f"-o UserKnownHostsFile={env['LAB_KNOWN_HOSTS']} -o StrictHostKeyChecking=yes "
                "-o IdentitiesOnly=yes")
    inventory.write_text(json.dumps({"all": {"hosts": {
        name: {"ansible_host": ADDR[name], "ansible_user": env["LAB_USER"],
               "ansible_ssh_private_key_file": env["LAB_KEY"], "ansible_ssh_common_args": ssh_args,
               "ansible_python_interpreter": "/usr/bin/python3"} for name in NAMES}}}))
    # Only these settings: not the repository's ansible.cfg nor a user's.
    config = lab.work / "ansible.cfg"
    config.write_text("[defaults]\n")
    proc = subprocess.run(
        ["ansible", "all", "-i", str(inventory), "-m", "ansible.builtin.ping", "--one-line"],
        capture_output=True, text=True, timeout=300, cwd=lab.work,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
             "ANSIBLE_CONFIG": str(config), "ANSIBLE_SSH_CONTROL_PATH_DIR": str(lab.work / "cp")})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = dict(re.findall(r"^(\S+) \| SUCCESS => (\{.*\})$", proc.stdout, re.M))
    assert sorted(results) == NAMES, proc.stdout
    assert all(json.loads(r)["ping"] == "pong" for r in results.values()), proc.stdout


def test_root_logs_in_by_the_lab_key_only(lab, tmp_path):
    config = incus("exec", "vz-lab-node1", "--", "sshd", "-T").stdout.splitlines()
    assert "permitrootlogin without-password" in config
    assert "passwordauthentication no" in config
    assert "kbdinteractiveauthentication no" in config
    # Another key is refused, at the right address and with the right host key.
    other = tmp_path / "other"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other)
    proc = run("ssh", "-F", os.devnull, "-i", other, "-o", "IdentitiesOnly=yes",
               "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={lab.env['LAB_KNOWN_HOSTS']}",
               "-o", "StrictHostKeyChecking=yes", f"root@{ADDR['vz-lab-node1']}", "true",
               check=False)
    assert proc.returncode == 255 and "Permission denied (publickey)" in proc.stderr, proc.stderr
    assert lab.ssh("vz-lab-node1", "id -un").stdout.strip() == "root"


def test_containers_reach_each_other_by_address_and_name(lab):
    lab.ssh("vz-lab-node1", "bash -c '</dev/tcp/198.18.0.12/22'")
    lab.ssh("vz-lab-node2", "bash -c '</dev/tcp/vz-lab-monitor/22'")
    lab.ssh("vz-lab-monitor", "bash -c '</dev/tcp/vz-lab-node1/22'")
    for name in NAMES:
        hosts = incus("exec", name, "--", "cat", "/etc/hosts").stdout
        for other in NAMES:
            assert f"{ADDR[other]}\t{other}" in hosts, (name, hosts)


def test_status_reports_each_container_address_and_ssh(lab):
    out = run(LAB, "status", lab.dir).stdout
    for name in NAMES:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert line.split() == [name, "RUNNING", ADDR[name], ADDR[name], "yes"], line


def test_up_again_keeps_the_running_containers(lab):
    def identity():
        # The instance (created once) and its init process on the host (not restarted).
        return {n: (incus("config", "get", n, "volatile.uuid").stdout,
                    json.loads(incus("query", f"/1.0/instances/{n}/state").stdout)["pid"])
                for n in NAMES}
    before = identity()
    up = run(LAB, "up", lab.dir)
    assert parse_env(up.stdout) == lab.env
    assert identity() == before


def test_up_from_another_dir_is_refused_while_the_lab_exists(lab):
    other = lab.work / "other"
    proc = run(LAB, "up", other, check=False)
    assert proc.returncode != 0 and f"the lab is up from {lab.dir}" in proc.stderr
    assert run(LAB, "status", lab.dir, check=False).returncode == 0


def test_a_node_without_python_converges_reruns_and_checks_unchanged(lab, ansible):
    """A data node with no Python at all: python3 purged (a removal needs no mirror), then the
    role's files, units and the modules' cache removed, so the data-node play has everything to
    do again on a host with nothing to run a Python module with. It converges, a re-run changes
    nothing, and so does --check --diff. The lab is destroyed next: no later test needs node2's
    Python."""
    node = "vz-lab-node2"
    lab.ssh(node, "DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -q "
                  "python3 python3-minimal python3.11 python3.11-minimal", timeout=300)
    found = lab.ssh(node, "ls /usr/bin /usr/local/bin /bin /usr/sbin | grep '^python' || true").stdout
    assert found.strip() == "", found
    assert lab.ssh(node, "command -v python3 python", check=False).returncode != 0
    lab.ssh(node, "set -e; cd /etc/systemd/system; for unit in $(ls pgbackrest-*.timer 2>/dev/null); do "
                  "systemctl disable --now \"$unit\"; done; rm -f pgbackrest-*; systemctl daemon-reload; "
                  "rm -rf /etc/pgbackrest/pgbackrest.conf /usr/local/lib/veza-pgbackrest /root/.ansible")
    limit = ("--limit", node)
    rc, out = play(ansible, lab, *limit)
    assert rc == 0, out[-4000:]
    hosts = recap(out)
    assert set(hosts) == {node} and hosts[node]["failed"] == 0 and hosts[node]["changed"] > 0, out[-3000:]
    assert lab.ssh(node, "stat -c '%U:%G %a' /etc/pgbackrest/pgbackrest.conf").stdout.split() == \
        ["postgres:postgres", "640"]
    assert lab.ssh(node, "systemctl is-enabled pgbackrest-full.timer").stdout.strip() == "enabled"
    lab.ssh(node, "test -x /usr/local/lib/veza-pgbackrest/pg_role_detect")
    for mode in ((), ("--check", "--diff")):
        rc, out = play(ansible, lab, *limit, *mode)
        assert rc == 0, (mode, out[-4000:])
        assert recap(out)[node]["changed"] == 0, (mode, out[-3000:])
    assert lab.ssh(node, "command -v python3", check=False).returncode != 0


def test_destroy_leaves_no_lab_resource_behind(lab):
    run(LAB, "destroy", lab.dir)
    for name in NAMES:
        assert incus("info", name, check=False).returncode != 0, name
    assert incus("profile", "show", PROFILE, check=False).returncode != 0
    assert incus("network", "show", BRIDGE, check=False).returncode != 0
    assert incus("storage", "show", POOL, check=False).returncode != 0
    assert run("ip", "link", "show", BRIDGE, check=False).returncode != 0
    assert blackhole_routes() == []
    assert "198.18." not in run("ip", "-4", "route").stdout
    assert ip_forward() == lab.ip_forward_before
    # What the lab wrote in DIR is gone (the playbooks' drill-host files there are not its own).
    left = [n for n in ("id_ed25519", "id_ed25519.pub", "known_hosts", "ssh_config", "lab.env",
                        "s3", "formation.log") if (lab.dir / n).exists()]
    assert left == [], left
    # The S3 endpoint is stopped and this machine's hosts line for it removed.
    assert "# veza-lab" not in Path("/etc/hosts").read_text()
    assert run("pgrep", "-f", "veza-lab-s3", check=False).returncode == 1
    # The image stays, for the next up; status now says the lab is not there.
    assert incus("image", "info", "veza-lab-host", check=False).returncode == 0
    assert run(LAB, "status", lab.dir, check=False).returncode == 1
    run(LAB, "destroy", lab.dir)
