"""pgbackrest_config: validated, secret-safe, atomic pgbackrest.conf, checked by a real pgBackRest."""

import grp
import hashlib
import json
import os
import shutil
import pwd
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, Cluster, as_postgres, canary, free_port, run_module, scratch_dir

MODULE = "pgbackrest_config"
CIPHER = canary("cfg-cipher")
S3_SECRET = canary("cfg-s3-secret")


@pytest.fixture(scope="module")
def binary(module_bin):
    return module_bin(MODULE)


@pytest.fixture
def conf(tmp_path):
    return tmp_path / "etc" / "pgbackrest.conf"


def state(path):
    """Bytes hash and stat of a file (or None): what 'nothing changed' compares."""
    if not path.exists():
        return None
    st = path.stat()
    return hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_ino


def base_args(conf, **extra):
    return {"path": str(conf), "global": {"repo1-path": "/var/lib/pgbackrest", "repo1-retention-full": 2,
                                          "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": CIPHER,
                                          "compress-type": "zst", "start-fast": True},
            "stanzas": {"main": {"pg1-path": "/var/lib/postgresql/15/main"}}, **extra}



def test_missing_directories_above_the_parent_do_not_lock_postgres_out(binary):
    base = scratch_dir("vz-cfg-")  # a directory postgres can reach
    try:
        conf = base / "lab" / "hosts" / "node1" / "pgbackrest.conf"
        rc, out = run_module(binary, base_args(conf))
        assert rc == 0 and out["changed"] is True, out
        assert [d.stat().st_mode & 0o777 for d in (conf.parent.parent.parent, conf.parent.parent, conf.parent)] == [0o755, 0o755, 0o750]
        # Root's, with the file's group: postgres reads through it but cannot plant links in it.
        assert pwd.getpwuid(conf.parent.stat().st_uid).pw_name == "root"
        assert grp.getgrgid(conf.parent.stat().st_gid).gr_name == "postgres"
        # Reads back the file the module wrote (it holds the cipher pass on purpose): not scanned.
        assert as_postgres("cat", conf, scan=False).stdout == conf.read_text()
        assert as_postgres("ln", "-s", "/etc/passwd", conf.parent / "planted", check=False).returncode != 0
    finally:
        shutil.rmtree(base, ignore_errors=True)

@pytest.mark.parametrize("extra", [{}, {"backup": True}, {"_ansible_check_mode": True, "_ansible_diff": True},
                                   {"mode": "0600", "_ansible_diff": True}])
def test_a_link_planted_by_postgres_at_the_path_is_refused_and_its_target_untouched(binary, extra):
    """postgres owns the config directory of an older install and plants pgbackrest.conf -> a
    root-only file: the module (as root) must neither show it, copy it, rewrite it nor chown it."""
    base = scratch_dir("vz-cfg-link-")
    try:
        victim = base / "root-only"
        victim.write_text("root-secret-canary-7Qx2\n")
        victim.chmod(0o600)
        confdir = base / "etc"
        confdir.mkdir()
        shutil.chown(confdir, "postgres", "postgres")
        conf = confdir / "pgbackrest.conf"
        as_postgres("ln", "-s", victim, conf)
        before = (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_uid)
        rc, out = run_module(binary, {**base_args(conf), **extra})
        assert rc == 1 and out["failed"] is True, out
        assert "is a symbolic link: refusing to follow it" in out["msg"], out["msg"]
        assert "root-secret-canary" not in json.dumps(out)
        assert (victim.read_bytes(), victim.stat().st_mode, victim.stat().st_uid) == before
        assert conf.is_symlink() and sorted(p.name for p in confdir.iterdir()) == ["pgbackrest.conf"]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_fresh_write_then_second_run_reports_no_change(binary, conf):
    rc, out = run_module(binary, base_args(conf))
    assert rc == 0 and out["changed"] is True, out
    text = conf.read_text()
    assert "[global]\nrepo1-path=/var/lib/pgbackrest\nrepo1-retention-full=2\n" in text
    assert "start-fast=y\n" in text and "\n[main]\npg1-path=/var/lib/postgresql/15/main\n" in text
    st = conf.stat()
    assert (st.st_mode & 0o777, pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name) == (0o640, "postgres", "postgres")
    assert conf.parent.stat().st_mode & 0o777 == 0o750 and out["created_directory"] == str(conf.parent)
    assert out["sections"] == ["global", "main"]
    assert out["checksum"] == hashlib.sha256(conf.read_bytes()).hexdigest()
    assert CIPHER not in json.dumps(out)

    before = state(conf)
    rc, out = run_module(binary, base_args(conf))
    assert rc == 0 and out["changed"] is False, out
    assert state(conf) == before


def test_changed_value_and_mode_only(binary, conf):
    run_module(binary, base_args(conf))
    args = base_args(conf)
    args["global"]["repo1-retention-full"] = 4
    rc, out = run_module(binary, {**args, "_ansible_diff": True})
    assert out["changed"] is True and "repo1-retention-full=4" in conf.read_text()
    assert "repo1-retention-full=2" in out["diff"]["before"] and "repo1-retention-full=4" in out["diff"]["after"]
    text = conf.read_bytes()
    rc, out = run_module(binary, {**args, "mode": "0600"})
    assert out["changed"] is True and out["msg"].endswith("owner, group or mode changed")
    assert conf.stat().st_mode & 0o777 == 0o600 and conf.read_bytes() == text


def test_check_mode_writes_nothing_and_predicts(binary, conf):
    rc, out = run_module(binary, {**base_args(conf), "_ansible_check_mode": True})
    assert rc == 0 and out["changed"] is True and not conf.exists() and not conf.parent.exists()
    run_module(binary, base_args(conf))
    before = state(conf)
    args = base_args(conf, mode="0600")
    args["global"]["repo1-retention-full"] = 9
    rc, out = run_module(binary, {**args, "_ansible_check_mode": True, "_ansible_diff": True})
    assert out["changed"] is True and "repo1-retention-full=9" in out["diff"]["after"]
    assert state(conf) == before
    # The real run then does exactly what check mode said.
    rc, real = run_module(binary, {**args, "_ansible_diff": True})
    assert real["changed"] is True and real["diff"] == out["diff"]


def test_diff_masks_secrets_and_still_shows_a_changed_secret(binary, conf):
    run_module(binary, base_args(conf))
    args = base_args(conf)
    args["global"]["repo1-cipher-pass"] = CIPHER + "-rotated"
    rc, out = run_module(binary, {**args, "_ansible_diff": True})
    assert out["changed"] is True
    assert "repo1-cipher-pass=********\n" in out["diff"]["before"]
    assert "repo1-cipher-pass=******** (changed)\n" in out["diff"]["after"]
    assert CIPHER not in json.dumps(out)
    assert out["invocation"]["module_args"]["global"]["repo1-cipher-pass"] == "********"
    assert (CIPHER + "-rotated") in conf.read_text()


REFUSALS = [
    ({"global": {"repo1-retention-ful": 2}}, "unknown option 'repo1-retention-ful' for pgBackRest 2.45; did you mean 'repo1-retention-full'?"),
    ({"global": {"pg1-path": "/x"}}, "'pg1-path' is a stanza option"),
    ({"stanzas": {"main": {"type": "full"}}}, "'type' is a command-line only option"),
    ({"global": {"repo1-type": "s3", "repo1-path": "/r"}}, "repo1-type=s3 needs repo1-s3-bucket"),
    ({"global": {"repo1-cipher-type": "aes-256-cbc"}}, "repo1-cipher-type=aes-256-cbc needs repo1-cipher-pass"),
    ({"global": {"repo1-block": True, "repo1-path": "/r"}}, "repo1-block=y needs repo1-bundle=y"),
    ({"global": {"repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": "CHANGEME"}}, "global.repo1-cipher-pass is a placeholder"),
    ({"global": {"repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": "Short-9x"}}, "shorter than min_cipher_pass_length (20)"),
    ({"global": {"repo1-s3-key": "REPLACE_ME"}}, "global.repo1-s3-key is a placeholder"),
    ({"global": {"repo1-s3-key-secret": "xxx"}}, "global.repo1-s3-key-secret is a placeholder"),
    ({"global": {"repo1-path": "/r\n[evil]\npg1-host=attacker"}}, "contains the control character '\\n'"),
    ({"global": {"repo1-path": "/r\r"}}, "contains the control character '\\r'"),
    ({"global": {"repo1-path=/x\nlog-path": "/y"}}, "is not a pgBackRest option name"),
    ({"stanzas": {"main]\n[global": {"pg1-path": "/x"}}}, "is not a valid stanza name"),
    ({"stanzas": {"a:b": {"pg1-path": "/x"}}}, "is not a valid stanza name"),
    ({"command_sections": {"global:bogus": {"process-max": 2}}}, "command_sections.global:bogus"),
    ({"mode": "u=rw"}, "mode must be an octal mode"),
    ({"owner": "no-such-user-9"}, "owner: owner 'no-such-user-9' does not exist"),
]


@pytest.mark.parametrize("bad,message", REFUSALS, ids=[m[:40] for _, m in REFUSALS])
def test_refusals_name_the_problem_and_write_nothing(binary, conf, bad, message):
    conf.parent.mkdir()
    conf.write_text("[global]\nrepo1-path=/before\n")
    before = state(conf)
    rc, out = run_module(binary, {"path": str(conf), **bad})
    assert rc == 1 and out["failed"] is True
    assert message in out["msg"], out["msg"]
    assert state(conf) == before
    assert sorted(p.name for p in conf.parent.iterdir()) == ["pgbackrest.conf"]
    for value in ("CHANGEME", "Short-9x", "REPLACE_ME"):
        assert value not in out["msg"]


# (section body, option, section, value as shown, pgBackRest command that reads it): values the
# option table's type, range or list refuses. pgBackRest itself refuses each one as well (checked
# below), so the module is not stricter than pgBackRest, only earlier.
VALUE_REFUSALS = [
    ({"global": {"repo1-retention-full": -1}}, "repo1-retention-full", "global", "-1", "expire"),
    ({"global": {"repo1-retention-full": 0}}, "repo1-retention-full", "global", "0", "expire"),
    ({"global": {"repo1-retention-diff": "ten"}}, "repo1-retention-diff", "global", "ten", "expire"),
    ({"global": {"compress-level": 99}}, "compress-level", "global", "99", "backup"),
    ({"global": {"compress-type": "zst", "compress-level": 23}}, "compress-level", "global", "23", "backup"),
    ({"global": {"compress-level-network": 10}}, "compress-level-network", "global", "10", "backup"),
    ({"global": {"log-level-console": "verbose"}}, "log-level-console", "global", "verbose", "check"),
    ({"global": {"log-level-file": "INFO"}}, "log-level-file", "global", "INFO", "check"),
    ({"global": {"compress-type": "zip"}}, "compress-type", "global", "zip", "backup"),
    ({"global": {"repo1-type": "ftp"}}, "repo1-type", "global", "ftp", "check"),
    ({"global": {"buffer-size": "3MiB"}}, "buffer-size", "global", "3MiB", "check"),
    ({"global": {"buffer-size": "1 MiB"}}, "buffer-size", "global", "1 MiB", "check"),
    ({"global": {"process-max": 1000}}, "process-max", "global", "1000", "backup"),
    ({"global": {"archive-timeout": "soon"}}, "archive-timeout", "global", "soon", "check"),
    ({"global": {"archive-timeout": "0.01"}}, "archive-timeout", "global", "0.01", "check"),
    ({"global": {"io-timeout": 3601}}, "io-timeout", "global", "3601", "check"),
    ({"global": {"repo1-path": "relative/repo"}}, "repo1-path", "global", "relative/repo", "check"),
    ({"global": {"lock-path": "/tmp//lock"}}, "lock-path", "global", "/tmp//lock", "backup"),
    ({"stanzas": {"main": {"pg1-port": 70000}}}, "pg1-port", "main", "70000", "check"),
    ({"command_sections": {"global:backup": {"process-max": 0}}}, "process-max", "global:backup", "0", "backup"),
    ({"global": {"repo1-bundle": True, "repo1-bundle-size": "1KiB"}}, "repo1-bundle-size", "global", "1KiB",
     "backup"),
    ({"global": {"repo1-type": "s3", "repo1-s3-bucket": "b", "repo1-s3-endpoint": "e", "repo1-s3-region": "r",
                 "repo1-s3-key": "AKIAcanary1", "repo1-s3-key-secret": S3_SECRET, "repo1-s3-uri-style": "path",
                 "repo1-storage-upload-chunk-size": "5 MB"}},
     "repo1-storage-upload-chunk-size", "global", "5 MB", "check"),
    ({"global": {"repo1-type": "s3", "repo1-s3-bucket": "b", "repo1-s3-endpoint": "e", "repo1-s3-region": "r",
                 "repo1-s3-key": "AKIAcanary1", "repo1-s3-key-secret": S3_SECRET, "repo1-s3-uri-style": "virtual"}},
     "repo1-s3-uri-style", "global", "virtual", "check"),
]


@pytest.mark.parametrize("bad,option,section,value,command", VALUE_REFUSALS,
                         ids=[f"{o}={v}" for _, o, _, v, _ in VALUE_REFUSALS])
def test_values_of_the_wrong_type_range_or_list_are_refused_as_pgbackrest_would(
        binary, conf, tmp_path, bad, option, section, value, command):
    conf.parent.mkdir()
    conf.write_text("[global]\nrepo1-path=/before\n")
    before = state(conf)
    args = {"path": str(conf), "stanzas": {"main": {"pg1-path": "/var/lib/postgresql/15/main"}}}
    for group, body in bad.items():
        args[group] = {**args.get(group, {}), **body}
    rc, out = run_module(binary, args)
    assert rc == 1 and out["failed"] is True, out
    msg = out["msg"]
    assert option in msg and f"'{value}'" in msg, msg
    assert f"[{section}]" in msg or section == "global" and "[global] + [main]" in msg, msg
    assert S3_SECRET not in json.dumps(out)
    assert state(conf) == before
    assert sorted(p.name for p in conf.parent.iterdir()) == ["pgbackrest.conf"]

    # pgBackRest refuses the same file, naming the same option (its "out of range", "not allowed",
    # "not valid", "must begin with /" errors, all 032). Run without a network and with every path
    # in the temp dir: it stops at the option.
    work = tmp_path / "pgbr"
    work.mkdir()
    lines = {"lock-path": work, "log-path": work, "spool-path": work, "repo1-path": f"{work}/repo"}
    stanza = {"pg1-path": f"{work}/pg", "pg1-socket-path": work}
    for group, body in bad.items():
        if group == "command_sections":  # [global:backup] reads as [global] for backup
            body = {k: v for section in body.values() for k, v in section.items()}
        target, body = (stanza, body["main"]) if group == "stanzas" else (lines, body)
        target.update({k: {True: "y", False: "n"}.get(v, v) for k, v in body.items()})
    text = "".join(f"{k}={v}\n" for k, v in lines.items()) + "[main]\n"
    (work / "c.conf").write_text("[global]\n" + text + "".join(f"{k}={v}\n" for k, v in stanza.items()))
    proc = subprocess.run(["unshare", "-n", "pgbackrest", f"--config={work}/c.conf", "--stanza=main", command],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 32 and f"'{option}' option" in proc.stderr, proc.stderr


def test_values_at_the_edges_of_their_ranges_are_accepted(binary, conf):
    args = base_args(conf)
    args["global"].update({"repo1-retention-full": 9999999, "repo1-retention-history": 0, "process-max": 999,
                           "buffer-size": "16KiB", "compress-level": -7, "archive-timeout": 0.1,
                           "log-level-console": "off", "repo1-bundle": True, "repo1-bundle-size": "1MiB"})
    rc, out = run_module(binary, args)
    assert rc == 0 and out["changed"] is True, out


def test_state_absent_with_backup(binary, conf):
    run_module(binary, base_args(conf, mode="0600"))
    original = conf.read_bytes()
    rc, out = run_module(binary, {"path": str(conf), "state": "absent", "_ansible_check_mode": True})
    assert out["changed"] is True and conf.exists()
    rc, out = run_module(binary, {"path": str(conf), "state": "absent", "backup": True})
    assert out["changed"] is True and not conf.exists()
    backup = Path(out["backup_file"])
    assert backup.read_bytes() == original and backup.stat().st_mode & 0o777 == 0o600
    rc, out = run_module(binary, {"path": str(conf), "state": "absent"})
    assert out["changed"] is False


def test_backup_keeps_the_previous_file(binary, conf):
    rc, out = run_module(binary, base_args(conf, backup=True))
    assert "backup_file" not in out  # nothing to keep on creation
    first = conf.read_bytes()
    args = base_args(conf, backup=True)
    args["global"]["repo1-retention-full"] = 3
    rc, out = run_module(binary, args)
    backup = Path(out["backup_file"])
    assert backup.parent == conf.parent and backup.name.startswith("pgbackrest.conf.") and backup.name.endswith("~")
    assert backup.read_bytes() == first and backup.stat().st_mode & 0o777 == 0o640
    rc, out = run_module(binary, args)
    assert out["changed"] is False and "backup_file" not in out


def test_custom_template(binary, conf, tmp_path):
    template = tmp_path / "conf.tera"
    template.write_text("# team {{ vars.team }}\n{% for s in sections %}[{{ s.name }}]\n"
                        "{% for l in s.lines %}{{ l }}\n{% endfor %}{% endfor %}"
                        "# main's pg1-path: {{ sections[1].options['pg1-path'] }}\n")
    rc, out = run_module(binary, base_args(conf, template=str(template), vars={"team": "dba"}))
    assert rc == 0, out
    text = conf.read_text()
    assert text.startswith("# team dba\n[global]\nrepo1-path=") and text.endswith("# main's pg1-path: /var/lib/postgresql/15/main\n")
    template.write_text("{{ no_such_variable }}")
    rc, out = run_module(binary, base_args(conf, template=str(template)))
    assert rc == 1 and "rendering the configuration" in out["msg"] and "no_such_variable" in out["msg"]
    assert conf.read_text() == text


def test_option_table_matches_the_installed_pgbackrest():
    generated = subprocess.run([REPO / "scripts" / "pgbackrest-options"], check=True, capture_output=True, text=True).stdout
    assert generated == (REPO / "crates/pgbackrest/src/options_table.rs").read_text()


# A bare git mirror of https://github.com/pgbackrest/pgbackrest with its release tags.
PGBACKREST_MIRROR = Path(os.environ.get("VEZA_PGBACKREST_MIRROR", "/work/.mirror/pgbackrest+pgbackrest/repo"))


def test_option_releases_match_pgbackrests_definitions_of_each_release():
    """option_releases.txt (what each release from 2.45 on changed in the options) regenerated
    from pgBackRest's own definitions of each release tag; the generator also checks that the 2.45
    definitions give exactly the rows probed from the installed binary."""
    if not (PGBACKREST_MIRROR / "HEAD").exists():
        pytest.skip(f"no pgBackRest git mirror at {PGBACKREST_MIRROR} (set VEZA_PGBACKREST_MIRROR): "
                    "the committed option_releases.txt is used as it is")
    generated = subprocess.run([REPO / "scripts" / "pgbackrest-options", "--releases", PGBACKREST_MIRROR],
                               check=True, capture_output=True, text=True).stdout
    assert generated == (REPO / "crates/pgbackrest/src/option_releases.txt").read_text()


RELEASES = REPO / "crates/pgbackrest/src/option_releases.txt"


def added_after_2_45():
    """(release, option as written, stanza option) for each option option_releases.txt says a
    release after 2.45 added that a configuration file may hold."""
    base = {line.split()[0] for line in (REPO / "crates/pgbackrest/src/options_table.rs").read_text()
            .split('pub const OPTIONS: &str = "\\\n', 1)[1].split('";', 1)[0].splitlines()}
    added = []
    for line in RELEASES.read_text().splitlines():
        release, name, *flags = line.split()
        if not release[0].isdigit() or release == "2.45" or flags in (["removed"], ["internal"]) or name in base \
                or "command-line" in flags or any(a[1] == name for a in added):
            continue
        index = "repo" if "repo" in flags else "pg" if "pg" in flags else None
        key = name.replace(f"{index}-", f"{index}1-", 1) if index else name
        added.append((release, key, "stanza" in flags))
    return added


def test_the_installed_pgbackrest_knows_none_of_the_options_added_after_it():
    """pgBackRest 2.45 itself calls every option the table says a later release added invalid, and
    reads the one it dates from 2.45 (pg-version-force: internal there, documented in 2.49)."""
    added = added_after_2_45()
    assert ("2.55.0", "repo1-s3-requester-pays", False) in added and len(added) > 20, added
    work = scratch_dir("vz-cfg-rel-")
    try:
        lines = "".join(f"{k}=1\n" for _, k, stanza in added if not stanza)
        stanza = "".join(f"{k}=1\n" for _, k, stanza in added if stanza) + "pg-version-force=15\n"
        (work / "c.conf").write_text(f"[global]\nlock-path={work}\nlog-path={work}\nrepo1-path={work}/repo\n"
                                     f"{lines}[main]\npg1-path={work}/pg\n{stanza}")
        proc = subprocess.run(["unshare", "-n", "pgbackrest", f"--config={work}/c.conf", "--stanza=main", "info"],
                              capture_output=True, text=True, timeout=60)
        invalid = set(re.findall(r"configuration file contains invalid option '([^']+)'", proc.stdout + proc.stderr))
        assert invalid == {k for _, k, _ in added}, proc.stdout + proc.stderr
        assert "2.45 pg-version-force string stanza\n" in RELEASES.read_text()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_an_option_newer_than_the_targets_pgbackrest_is_refused_naming_its_release(binary, conf):
    """The module asks the installed pgBackRest (2.45) its version: every option a later release
    added is refused, naming the option, its section, the release and the target's version."""
    for release, key, stanza in added_after_2_45():
        args = base_args(conf)
        # Not "1": the value of an option named like a secret is masked everywhere in the result.
        (args["stanzas"]["main"] if stanza else args["global"])[key] = "a-value-7Qz"
        rc, out = run_module(binary, args)
        section = "main" if stanza else "global"
        shown = release[:-2] if release.endswith(".0") else release
        assert rc == 1 and out["msg"].endswith(
            f"{'stanzas.main' if stanza else 'global'}.{key}: option '{key}' in [{section}] "
            f"needs pgBackRest {shown} or later (the target has 2.45)"), out["msg"]
        assert not conf.exists()
    args = base_args(conf)
    args["global"].update({"priority": 5, "repo1-symlink": False})
    rc, out = run_module(binary, {**args, "_ansible_check_mode": True})
    assert rc == 1 and "global.priority: option 'priority' in [global] needs pgBackRest 2.58 or later " \
        "(the target has 2.45)" in out["msg"] and "'repo1-symlink' in [global] needs pgBackRest 2.57" in out["msg"]
    assert not conf.exists()


def test_the_same_option_is_accepted_for_the_release_given_and_the_version_is_returned(binary, conf):
    args = base_args(conf)
    args["global"].update({"priority": 5, "archive-timeout": "5m", "backup-standby": "prefer"})
    rc, out = run_module(binary, {**args, "pgbackrest_version": "2.58", "_ansible_check_mode": True,
                                  "_ansible_diff": True})
    assert rc == 0 and out["changed"] is True and not conf.exists(), out
    assert "priority=5\n" in out["diff"]["after"]
    rc, out = run_module(binary, {**args, "pgbackrest_version": "2.58"})
    assert rc == 0 and out["changed"] is True, out
    assert (out["pgbackrest_version"], out["pgbackrest_version_source"], out["commands"]) == ("2.58", "option", [])
    text = conf.read_text()
    assert "priority=5\n" in text and "archive-timeout=5m\n" in text and "backup-standby=prefer\n" in text
    # 2.57 lacks priority; a time with a unit is 2.53's; prefer is 2.54's.
    rc, out = run_module(binary, {**args, "pgbackrest_version": "2.52.1"})
    assert rc == 1 and "needs pgBackRest 2.58 or later (pgbackrest_version is 2.52.1)" in out["msg"], out
    assert "global.archive-timeout: '5m' is not a valid value of archive-timeout in [global] for pgBackRest " \
        "2.52.1: expected a time in seconds" in out["msg"]
    assert "'prefer' is not a valid value of backup-standby" not in out["msg"]  # a boolean in 2.52.1
    assert "backup-standby is a boolean (y or n), got 'prefer'" in out["msg"], out["msg"]
    assert conf.read_text() == text
    # Without pgbackrest_version (or empty, the role's default): the target's own, 2.45.
    rc, out = run_module(binary, {**base_args(conf), "pgbackrest_version": ""})
    assert rc == 0 and (out["pgbackrest_version"], out["pgbackrest_version_source"]) == ("2.45", "target"), out
    assert out["commands"] == ["pgbackrest version"]


@pytest.mark.parametrize("version", ["2.5x", "v2.55", "2.55.1.1", "latest", "2", "2.55\n[evil]", "2.055"])
def test_a_malformed_pgbackrest_version_is_refused_and_changes_nothing(binary, conf, version):
    run_module(binary, base_args(conf))
    before = state(conf)
    for extra in ({}, {"_ansible_check_mode": True}, {"state": "absent"}):
        rc, out = run_module(binary, {**base_args(conf), "pgbackrest_version": version, **extra})
        assert rc == 1 and out["msg"].startswith("pgbackrest_version must be a pgBackRest release such as "
                                                 "'2.54' or '2.54.2', got '"), out
        assert state(conf) == before
    assert sorted(p.name for p in conf.parent.iterdir()) == ["pgbackrest.conf"]


def test_without_pgbackrest_installed_the_base_release_is_assumed_and_said(binary, conf, tmp_path):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    rc, out = run_module(binary, base_args(conf), env={"PATH": str(empty)})
    assert rc == 0 and (out["pgbackrest_version"], out["pgbackrest_version_source"]) == ("2.45", "default"), out
    assert any("pgBackRest is not installed on the target" in w and "set pgbackrest_version" in w
               for w in out["warnings"]), out
    args = base_args(conf)
    args["global"]["priority"] = 5
    rc, out = run_module(binary, args, env={"PATH": str(empty)})
    assert rc == 1 and "needs pgBackRest 2.58 or later (pgBackRest is not installed on the target, so 2.45 " \
        "is assumed; set pgbackrest_version)" in out["msg"], out
    # An explicit path that is not there is a mistake, not a missing install.
    before = state(conf)
    rc, out = run_module(binary, {**base_args(conf), "pgbackrest_path": str(empty / "pgbackrest")})
    assert rc == 1 and out["msg"].startswith(f"pgbackrest_path: could not run `{empty}/pgbackrest version`"), out
    fake = tmp_path / "fake-pgbackrest"
    fake.write_text("#!/bin/sh\necho 'not pgBackRest'\n")
    fake.chmod(0o755)
    rc, out = run_module(binary, {**base_args(conf), "pgbackrest_path": str(fake)})
    assert rc == 1 and "did not print a pgBackRest version" in out["msg"] and "not pgBackRest" in out["msg"], out
    assert state(conf) == before


def test_kill_during_a_large_write_leaves_old_or_new_file(binary, conf):
    """kill -9 at random moments while a ~40 MB configuration is written: never a partial file."""
    run_module(binary, base_args(conf))
    old = conf.read_bytes()
    args = base_args(conf)
    args["stanzas"]["main"]["exclude"] = [f"big/{i:08d}/" + "x" * 400 for i in range(100_000)]
    # The complete new file, written undisturbed elsewhere, is what an interrupted write may leave.
    reference = conf.parent.parent / "reference" / "pgbackrest.conf"
    rc, _ = run_module(binary, {**args, "path": str(reference)})
    new = reference.read_bytes()
    assert rc == 0 and len(new) > 40_000_000
    args_file = conf.parent.parent / "big-args.json"
    args_file.write_text(json.dumps(args))
    rng = random.Random(4242)
    seen = []
    for attempt in range(8):
        proc = subprocess.Popen([str(binary), str(args_file)], stdout=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = conf.read_bytes()
        assert now in (old, new), f"attempt {attempt}: a partial file of {len(now)} bytes"
        seen.append("old" if now == old else "new")
        conf.write_bytes(old)
    # Leftover temporary files are the only trace of a killed write, and never more readable than
    # the file being written (0600 until owner and mode are applied, then the target's 0640).
    leftovers = [p for p in conf.parent.iterdir() if p.name != "pgbackrest.conf"]
    # Eight kills leave at most one temp file: each writer takes over the one a killed one left.
    assert len(leftovers) <= 1, leftovers
    assert all(p.name.startswith(".pgbackrest.conf.") and p.name.endswith(".tmp") for p in leftovers), leftovers
    assert all(p.stat().st_mode & 0o777 & ~0o640 == 0 for p in leftovers), [oct(p.stat().st_mode) for p in leftovers]
    assert "old" in seen, f"every kill came after the rename: {seen}"


@pytest.fixture(scope="module")
def archiving_cluster():
    """A cluster that archives WAL through pgBackRest with the configuration the module writes."""
    base = scratch_dir("vz-cfg-")
    conf = base / "pgbackrest.conf"
    cluster = Cluster(base, "pg", free_port()).initdb()
    with open(cluster.pgdata / "postgresql.conf", "a") as f:
        f.write(f"archive_mode = on\narchive_command = 'pgbackrest --config={conf} --stanza=main archive-push %p'\n")
    cluster.start()
    yield cluster, conf
    cluster.stop()
    subprocess.run(["rm", "-rf", str(base)])


def test_written_file_is_accepted_by_pgbackrest(binary, archiving_cluster):
    """stanza-create and check (a real WAL archive round trip) with an encrypted zstd posix repository."""
    cluster, conf = archiving_cluster
    repo = cluster.base / "repo"
    args = {"path": str(conf),
            "global": {"repo1-path": str(repo), "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": CIPHER,
                       "compress-type": "zst", "repo1-retention-full": 2, "log-level-console": "info",
                       "lock-path": str(cluster.base / "lock"), "log-path": str(cluster.base),
                       "spool-path": str(cluster.base)},
            "command_sections": {"global:archive-push": {"compress-level": 3}},
            "stanzas": {"main": {"pg1-path": str(cluster.pgdata), "pg1-socket-path": str(cluster.socket_dir),
                                 "pg1-port": cluster.port}}}
    rc, out = run_module(binary, args)
    assert rc == 0, out
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    for command in ("stanza-create", "check"):
        proc = as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", command, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert CIPHER not in proc.stdout + proc.stderr
    info = json.loads(as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", "info", "--output=json").stdout)
    assert info[0]["status"]["code"] == 2 and info[0]["cipher"] == "aes-256-cbc"  # stanza ok, no backup yet
    assert info[0]["archive"][0]["max"], "check pushed a WAL segment"


def test_playbook_check_diff_never_prints_secrets(ansible, tmp_path):
    conf = tmp_path / "pb" / "pgbackrest.conf"
    play = f"""
- hosts: localhost
  gather_facts: false
  vars:
    cipher: "{CIPHER}"
  tasks:
    - name: configure
      veza.pgbackrest.pgbackrest_config:
        path: {conf}
        global:
          repo1-type: s3
          repo1-s3-endpoint: localhost
          repo1-s3-bucket: b
          repo1-s3-region: r
          repo1-s3-uri-style: path
          repo1-s3-key: AKIAREALLOOKINGKEY
          repo1-s3-key-secret: "{S3_SECRET}"
          repo1-cipher-type: aes-256-cbc
          repo1-cipher-pass: "{{{{ cipher }}}}"
        stanzas:
          main:
            pg1-path: /var/lib/postgresql/15/main
      register: r
    - ansible.builtin.assert:
        that: r.changed
"""
    for extra in (["--check", "--diff", "-vvv"], ["--diff", "-vvv"], ["--check", "--diff"]):
        rc, output = ansible.playbook(play, extra=extra, name="cfg.yml")
        assert rc == 0 or extra[-1] == "--diff" and "r.changed" in output, output
        assert CIPHER not in output and S3_SECRET not in output
        assert "repo1-cipher-pass=********" in output or "-vvv" not in extra
    assert CIPHER in conf.read_text()
    # Placeholders fail early and change nothing.
    before = state(conf)
    rc, output = ansible.playbook(play.replace(f'cipher: "{CIPHER}"', 'cipher: "CHANGEME"'), name="bad.yml")
    assert rc != 0 and "repo1-cipher-pass is a placeholder" in output and state(conf) == before


def test_s3_repository_over_tls_is_accepted(binary, archiving_cluster):
    """The module's S3 configuration (aes-256-cbc, zstd, path-style) works against a TLS endpoint on loopback."""
    from harness import S3Server
    cluster, _ = archiving_cluster
    conf = cluster.base / "s3.conf"
    with S3Server(scratch_dir("vz-cfg-s3-") / "s3") as s3:
        args = {"path": str(conf),
                "global": {**s3.pgbackrest_options(), **S3Server.PGBACKREST_TIMEOUTS,
                           "repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": CIPHER, "compress-type": "zst",
                           "repo1-bundle": True, "start-fast": True, "lock-path": str(cluster.base / "lock-s3"),
                           "log-level-file": "off"},
                "stanzas": {"main": {"pg1-path": str(cluster.pgdata), "pg1-socket-path": str(cluster.socket_dir),
                                     "pg1-port": cluster.port}}}
        rc, out = run_module(binary, {**args, "_ansible_diff": True})
        assert rc == 0, out
        output = json.dumps(out)
        assert str(s3.secret_key) not in output and CIPHER not in output
        assert "repo1-s3-key-secret=******** (changed)" in out["diff"]["after"]
        # Archive through the S3 configuration for this test, so the backup's WAL check passes.
        posix_command = cluster.psql("SHOW archive_command")
        cluster.psql(f"ALTER SYSTEM SET archive_command = 'pgbackrest --config={conf} --stanza=main archive-push %p'")
        cluster.psql("SELECT pg_reload_conf()")
        try:
            for command in (["stanza-create"], ["backup", "--type=full"]):
                proc = as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", *command, check=False)
                assert proc.returncode == 0, proc.stdout + proc.stderr
                assert str(s3.secret_key) not in proc.stdout + proc.stderr and CIPHER not in proc.stdout + proc.stderr
        finally:
            cluster.psql(f"ALTER SYSTEM SET archive_command = '{posix_command}'")
            cluster.psql("SELECT pg_reload_conf()")
        info = json.loads(as_postgres("pgbackrest", f"--config={conf}", "--stanza=main", "info", "--output=json").stdout)
        assert info[0]["status"]["code"] == 0 and len(info[0]["backup"]) == 1
        assert info[0]["repo"][0]["cipher"] == "aes-256-cbc"
