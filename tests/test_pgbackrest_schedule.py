"""pgbackrest_schedule under a real systemd: an Incus system container of its own, launched from the
lab host image (`veza-lab-host`, Debian 12 with systemd, built by scripts/lab) on the default
profile, which has no network device; the module's shipped build is pushed into it and run as
Ansible runs it (argv[1] = an arguments file), as root.

It writes units and enables and starts the timer (systemctl says so), changes nothing and reloads
nothing on a second run, predicts without touching anything in check mode, shows before and after,
reloads once for a changed unit (and systemd then has the new calendar), stops, disables and
removes with state absent, refuses a link planted at a unit path and a bad option value, and
installs a build from the transport's cache on the target (or reports it missing, changing
nothing). A last test runs it through ansible-playbook over the loopback sshd, files only, where
the action plugin uploads the missing build into the cache itself (and, on Ansible's own path,
with the task).
"""

import hashlib
import json
import os
import secrets
import subprocess
import tempfile

import pytest
import yaml

IMAGE = "veza-lab-host"
BIN = "/root/pgbackrest_schedule"
SYSTEMD = "/etc/systemd/system"
TIMER = "vz-sched-test.timer"
SERVICE = "vz-sched-test.service"
SERVICE_TEXT = "[Unit]\nDescription=vz-sched test service\n\n[Service]\nType=oneshot\nExecStart=/bin/true\n"


def timer_text(calendar):
    return (f"[Unit]\nDescription=vz-sched test timer\n\n[Timer]\nOnCalendar={calendar}\nPersistent=false\n\n"
            "[Install]\nWantedBy=timers.target\n")


def incus(*args, check=True, input=None):
    return subprocess.run(["incus", *args], capture_output=True, text=True, check=check, input=input,
                          timeout=180)


class Container:
    """One system container of this test module: `sh` runs a command in it, `module` the module."""

    def __init__(self, name):
        self.name = name

    def sh(self, script, check=True):
        proc = incus("exec", self.name, "--", "sh", "-c", script, check=False)
        if check:
            assert proc.returncode == 0, (script, proc.stdout, proc.stderr)
        return proc

    def out(self, script):
        return self.sh(script, check=False).stdout.strip()

    def module(self, args):
        """(exit code, result) of the module run with `args` as its arguments file."""
        with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
            json.dump(args, f)
            f.flush()
            incus("file", "push", f.name, f"{self.name}/root/args.json")
        proc = incus("exec", self.name, "--", BIN, "/root/args.json", check=False)
        lines = proc.stdout.strip().splitlines()
        assert len(lines) == 1, (proc.stdout, proc.stderr)
        return proc.returncode, json.loads(lines[0])

    def ok(self, args):
        code, result = self.module(args)
        assert code == 0 and not result.get("failed"), result
        return result

    def state(self):
        """Everything the module may touch: the unit directory's files and links, the test's
        files, and what systemd says of the test units."""
        return self.out(f"cd {SYSTEMD} && find . -name 'vz-sched-*' -exec ls -ln --time-style=+%s.%N {{}} + "
                        f"| sort; md5sum {SYSTEMD}/vz-sched-* /opt/vz-sched/* 2>/dev/null; "
                        f"systemctl is-enabled {TIMER} {SERVICE}; systemctl is-active {TIMER}; "
                        "systemctl show -p NeedDaemonReload -p TimersCalendar " + TIMER)


@pytest.fixture(scope="module")
def box(module_bin):
    profile = yaml.safe_load(incus("profile", "show", "default").stdout)
    assert [d for d in (profile.get("devices") or {}).values() if d.get("type") == "nic"] == [], \
        "the default profile must have no network device"
    if incus("image", "info", IMAGE, check=False).returncode != 0:
        pytest.skip(f"no image {IMAGE} (scripts/lab builds it)")
    name = f"vz-sched-{os.getpid()}-{secrets.token_hex(3)}"
    incus("launch", IMAGE, name)
    try:
        box = Container(name)
        # The first exec may come before systemd listens on its bus: retry until it answers.
        for _ in range(60):
            state = box.out("timeout 60 systemctl is-system-running --wait 2>&1")
            if state in ("running", "degraded"):
                break
            box.sh("sleep 1")
        else:
            pytest.fail(f"systemd in {name} did not come up: {state}")
        incus("file", "push", str(module_bin("pgbackrest_schedule")), f"{name}{BIN}", "--mode", "0755")
        box.sh("mkdir -p /opt/vz-sched")
        yield box
    finally:
        incus("delete", "--force", name, check=False)


def schedule(calendar="*-*-* 03:00:00", **extra):
    return {"units": [{"name": SERVICE, "content": SERVICE_TEXT},
                      {"name": TIMER, "content": timer_text(calendar)}],
            "files": [{"path": "/opt/vz-sched/settings.json", "content": '{"require_primary": true}\n',
                       "group": "postgres", "mode": "0640"}],
            **extra}


def mutating(result):
    return [c for c in result["commands"] if " is-enabled " not in c and " is-active " not in c]


def test_first_run_writes_the_units_and_enables_and_starts_the_timer(box):
    result = box.ok(schedule())
    assert result["changed"] is True, result
    assert result["daemon_reload"] is True
    assert mutating(result) == ["systemctl daemon-reload", f"systemctl enable {TIMER}",
                                f"systemctl start {TIMER}"], result
    assert box.out(f"systemctl is-enabled {TIMER}") == "enabled"
    assert box.out(f"systemctl is-active {TIMER}") == "active"
    assert TIMER in box.out("systemctl list-timers --no-pager")
    # The service the timer runs is neither enabled nor started by default.
    assert box.out(f"systemctl is-enabled {SERVICE}") == "static"
    assert box.out(f"systemctl is-active {SERVICE}") == "inactive"
    assert box.out(f"stat -c '%U %G %a' {SYSTEMD}/{TIMER} /opt/vz-sched/settings.json").splitlines() == \
        ["root root 644", "root postgres 640"]
    assert box.out(f"cat {SYSTEMD}/{TIMER}") + "\n" == timer_text("*-*-* 03:00:00")
    assert [u["enabled"] for u in result["units"]] == [None, True]


def test_second_run_changes_nothing_and_runs_no_daemon_reload(box):
    before = box.state()
    result = box.ok({**schedule(), "_ansible_diff": True})
    assert result["changed"] is False, result
    assert result["daemon_reload"] is False
    assert mutating(result) == [], result["commands"]
    # Only the timer's states are asked (the service is left as it is).
    assert result["commands"] == [f"systemctl is-enabled {TIMER}", f"systemctl is-active {TIMER}"]
    assert result["diff"] == []
    assert box.state() == before


def test_check_mode_predicts_shows_the_diff_and_changes_nothing(box):
    before = box.state()
    args = schedule(calendar="*-*-* 05:00:00", _ansible_check_mode=True, _ansible_diff=True)
    args["units"].append({"name": "vz-sched-new.timer", "content": timer_text("weekly")})
    result = box.ok(args)
    assert result["changed"] is True, result
    assert result["msg"].endswith("(check mode)")
    assert mutating(result) == ["systemctl daemon-reload", "systemctl enable vz-sched-new.timer",
                                "systemctl start vz-sched-new.timer"], result["commands"]
    [changed, new] = result["diff"]
    assert changed["before_header"] == f"{SYSTEMD}/{TIMER}"
    assert "OnCalendar=*-*-* 03:00:00" in changed["before"] and "OnCalendar=*-*-* 05:00:00" in changed["after"]
    assert new["before"] == "" and "OnCalendar=weekly" in new["after"]
    assert box.state() == before
    assert box.sh(f"test -e {SYSTEMD}/vz-sched-new.timer", check=False).returncode == 1


def test_a_changed_unit_reloads_systemd_once_and_systemd_sees_it(box):
    result = box.ok({**schedule(calendar="*-*-* 05:00:00"), "_ansible_diff": True})
    assert result["changed"] is True
    assert mutating(result) == ["systemctl daemon-reload"], result["commands"]
    [diff] = result["diff"]
    assert "05:00:00" in diff["after"] and "03:00:00" in diff["before"]
    assert "05:00:00" in box.out(f"systemctl show -p TimersCalendar {TIMER}")
    assert box.out(f"systemctl show -p NeedDaemonReload --value {TIMER}") == "no"
    assert box.out(f"systemctl is-active {TIMER}") == "active"


def test_an_owner_or_mode_change_is_made_without_a_reload(box):
    box.sh("chmod 0600 /opt/vz-sched/settings.json")
    result = box.ok({**schedule(calendar="*-*-* 05:00:00"), "_ansible_diff": True})
    assert result["changed"] is True and result["daemon_reload"] is False, result
    [diff] = result["diff"]
    assert "mode: '0600'" in diff["before"] and "mode: '0640'" in diff["after"]
    assert box.out("stat -c %a /opt/vz-sched/settings.json") == "640"


def test_a_link_planted_at_a_unit_path_is_refused_and_nothing_changes(box):
    box.sh(f"echo keep > /root/victim && chmod 0600 /root/victim && ln -s /root/victim {SYSTEMD}/vz-sched-link.timer")
    try:
        before = box.state()
        args = schedule(calendar="*-*-* 05:00:00")
        args["units"].append({"name": "vz-sched-link.timer", "content": timer_text("hourly")})
        code, result = box.module(args)
        assert code == 1 and result["failed"] is True, result
        assert result["msg"].startswith(f"units[2]: {SYSTEMD}/vz-sched-link.timer is a symbolic link"), result
        assert box.state() == before
        assert box.out("cat /root/victim; stat -c %a /root/victim").splitlines() == ["keep", "600"]
    finally:
        box.sh(f"rm -f {SYSTEMD}/vz-sched-link.timer /root/victim")


@pytest.mark.parametrize("patch,expect", [
    ({"units": [{"name": "evil name;reboot.timer", "content": "x"}]}, "units[0].name: 'evil name;reboot.timer'"),
    ({"units": [{"name": TIMER, "content": "x", "enabled": "perhaps"}]}, "units[0].enabled: 'perhaps'"),
    ({"files": [{"path": "/opt/vz-sched/settings.json", "content": "", "mode": "0666"}]},
     "files[0].mode: '0666'"),
    ({"manage_services": "maybe"}, "argument 'manage_services' is of type str ('maybe')"),
    ({"systemd_dir": "etc/systemd"}, "systemd_dir: 'etc/systemd'"),
], ids=["unit-name", "enabled", "mode", "manage-services", "systemd-dir"])
def test_a_bad_option_value_is_refused_naming_it_and_nothing_changes(box, patch, expect):
    before = box.state()
    code, result = box.module({**schedule(calendar="*-*-* 05:00:00"), **patch})
    assert code == 1 and result["msg"].startswith(expect), result
    assert box.state() == before


def test_a_build_is_installed_from_the_transport_cache(box, module_bin):
    build = module_bin("pg_role_detect")
    digest = hashlib.sha256(build.read_bytes()).hexdigest()
    args = {"manage_services": False,
            "files": [{"path": "/opt/vz-sched/pg_role_detect", "src_build": "pg_role_detect", "sha256": digest,
                       "mode": "0755"}]}
    box.sh(f"rm -f /root/.ansible/veza-bin/{digest}")
    code, missing = box.module(args)
    assert code == 1 and missing["missing_builds"] == [digest], missing
    assert box.sh("test -e /opt/vz-sched/pg_role_detect", check=False).returncode == 1
    box.sh("mkdir -p /root/.ansible/veza-bin")
    incus("file", "push", str(build), f"{box.name}/root/.ansible/veza-bin/{digest}", "--mode", "0700")
    result = box.ok({**args, "_ansible_diff": True})
    assert result["changed"] is True
    assert result["diff"][0]["after"].startswith(f"build pg_role_detect: {build.stat().st_size} bytes, sha256 {digest}")
    assert box.out("sha256sum /opt/vz-sched/pg_role_detect").split()[0] == digest
    assert box.out("stat -c '%U %a' /opt/vz-sched/pg_role_detect") == "root 755"
    assert box.ok(args)["changed"] is False


def test_state_absent_stops_disables_and_removes(box):
    units = [{"name": SERVICE}, {"name": TIMER}]
    files = [{"path": "/opt/vz-sched/settings.json"}, {"path": "/opt/vz-sched/pg_role_detect"}]
    check = box.ok({"state": "absent", "units": units, "files": files, "_ansible_check_mode": True})
    assert check["changed"] is True and box.out(f"systemctl is-active {TIMER}") == "active"
    result = box.ok({"state": "absent", "units": units, "files": files})
    assert result["changed"] is True, result
    assert mutating(result) == [f"systemctl stop {TIMER}", f"systemctl disable {TIMER}",
                                "systemctl daemon-reload"], result["commands"]
    assert box.out(f"ls -A /opt/vz-sched; find {SYSTEMD} -name 'vz-sched-*'") == ""
    assert TIMER not in box.out("systemctl list-timers --all --no-pager")
    assert box.out(f"systemctl is-enabled {TIMER} 2>&1; systemctl is-active {TIMER}").splitlines()[-1] == "inactive"
    again = box.ok({"state": "absent", "units": units, "files": files})
    assert again["changed"] is False and again["commands"] == [], again


def test_through_the_action_plugin_a_missing_build_is_uploaded_to_the_cache_once(ansible, sshd, module_bin,
                                                                                  tmp_path):
    """Over the loopback sshd, files only (this machine runs no systemd): the action plugin names
    the build for the target's platform by its SHA-256; the module reports it missing from the
    cache; the plugin uploads it and runs the module again; the next run finds it there."""
    tmp_path.chmod(0o755)
    build = module_bin("pg_role_detect")
    digest = hashlib.sha256(build.read_bytes()).hexdigest()
    cached = os.path.expanduser(f"~root/.ansible/veza-bin/{digest}")
    if os.path.exists(cached):
        os.remove(cached)
    inventory = tmp_path / "inventory"
    inventory.write_text(f"target {sshd}\n")
    out = tmp_path / "results.json"
    play = f"""
- hosts: target
  gather_facts: false
  tasks:
    - name: Install the primary check from the cache
      veza.pgbackrest.pgbackrest_schedule:
        manage_services: false
        systemd_dir: {tmp_path}/units
        files:
          - path: {tmp_path}/bin/pg_role_detect
            src_build: pg_role_detect
            mode: "0755"
      register: first
    - name: Again
      veza.pgbackrest.pgbackrest_schedule:
        manage_services: false
        systemd_dir: {tmp_path}/units
        files:
          - path: {tmp_path}/bin/pg_role_detect
            src_build: pg_role_detect
            mode: "0755"
      register: second
    - name: On Ansible's own path, the build comes with the task
      veza.pgbackrest.pgbackrest_schedule:
        manage_services: false
        systemd_dir: {tmp_path}/units
        files:
          - path: {tmp_path}/normal/pg_role_detect
            src_build: pg_role_detect
            mode: "0755"
      vars:
        veza_pgbackrest_fast_path: false
      register: third
    - name: Keep the results
      delegate_to: localhost
      ansible.builtin.copy:
        content: "{{{{ [first, second, third] | to_json }}}}"
        dest: {out}
        mode: "0644"
"""
    rc, output = ansible.playbook(play, inventory=inventory, name="schedule-play.yml")
    assert rc == 0, output
    first, second, third = json.loads(out.read_text())
    assert first["changed"] is True and first["veza_transport"]["uploaded"] is True, first
    assert "missing_builds" not in first and not first.get("failed"), first
    assert hashlib.sha256((tmp_path / "bin/pg_role_detect").read_bytes()).hexdigest() == digest
    assert os.path.isfile(cached)
    assert second["changed"] is False and second["veza_transport"]["uploaded"] is False, second
    assert third["changed"] is True and third["veza_transport"] == {"path": "normal"}, third
    assert hashlib.sha256((tmp_path / "normal/pg_role_detect").read_bytes()).hexdigest() == digest
