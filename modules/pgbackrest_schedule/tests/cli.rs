//! The compiled module, run as Ansible runs it (argv[1] = arguments file), on unit and file paths
//! in a temp dir with `manage_services: false` (no systemd here; tests/test_pgbackrest_schedule.py
//! runs it under a real systemd): it writes, stays put on a second run, writes nothing in check
//! mode, shows a diff per file, removes with `state: absent`, refuses a link at a managed path and
//! bad entries; and its sidecar doc says what its spec enforces.

use ansible_module::testing::run_with_args_file;
use ansible_module::Module as _;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;

fn run(args: Value) -> (i32, Value) {
    run_with_args_file(env!("CARGO_BIN_EXE_pgbackrest_schedule"), &args)
}

/// A directory of its own for one test, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "pgbackrest_schedule-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Every path under the directory, sorted (a leftover temporary file would show here).
    fn tree(&self) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &self.0, &mut out);
        out.sort();
        out
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn id(flag: &str) -> String {
    let out = std::process::Command::new("id").arg(flag).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn schedule(dir: &Scratch, extra: Value) -> Value {
    let mut args = json!({
        "systemd_dir": dir.0.join("units"),
        "manage_services": false,
        "units": [
            {"name": "vz-test.service",
             "content": "[Service]\nType=oneshot\nExecStart=/bin/true\n"},
            {"name": "vz-test.timer",
             "content": "[Timer]\nOnCalendar=daily\n\n[Install]\nWantedBy=timers.target\n"}
        ],
        "files": [{"path": dir.0.join("bin/settings.json"), "content": "{\"a\": 1}\n",
                   "mode": "0640", "owner": id("-u"), "group": id("-g")}]
    });
    args.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    args
}

fn ok(args: Value) -> Value {
    let (code, out) = run(args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.get("failed"), None, "{out}");
    out
}

#[test]
fn first_run_writes_then_second_run_reports_no_change() {
    let dir = Scratch::new("write");
    let first = ok(schedule(&dir, json!({})));
    assert_eq!(first["changed"], true, "{first}");
    assert_eq!(
        first["commands"],
        json!([]),
        "no systemctl without manage_services"
    );
    assert_eq!(
        first["created_directories"].as_array().unwrap().len(),
        2,
        "{first}"
    );
    assert_eq!(
        dir.tree(),
        [
            "bin",
            "bin/settings.json",
            "units",
            "units/vz-test.service",
            "units/vz-test.timer"
        ]
    );
    let timer = std::fs::metadata(dir.0.join("units/vz-test.timer")).unwrap();
    assert_eq!((timer.mode() & 0o7777, timer.uid()), (0o644, 0));
    let settings = std::fs::metadata(dir.0.join("bin/settings.json")).unwrap();
    assert_eq!(settings.mode() & 0o7777, 0o640);
    let second = ok(schedule(&dir, json!({"_ansible_diff": true})));
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(second["diff"], json!([]), "{second}");
    assert!(second["units"]
        .as_array()
        .unwrap()
        .iter()
        .all(|u| u["changed"] == false));
}

#[test]
fn check_mode_predicts_with_a_diff_and_writes_nothing() {
    let dir = Scratch::new("check");
    let out = ok(schedule(
        &dir,
        json!({"_ansible_check_mode": true, "_ansible_diff": true}),
    ));
    assert_eq!(out["changed"], true, "{out}");
    assert!(
        out["msg"].as_str().unwrap().ends_with("(check mode)"),
        "{out}"
    );
    let diffs = out["diff"].as_array().unwrap();
    assert_eq!(diffs.len(), 3, "{out}");
    assert_eq!(diffs[0]["before"], "");
    assert_eq!(diffs[0]["after"], "{\"a\": 1}\n");
    assert!(dir.tree().is_empty(), "{:?}", dir.tree());
}

#[test]
fn a_changed_unit_shows_before_and_after_and_absent_removes() {
    let dir = Scratch::new("change");
    ok(schedule(&dir, json!({})));
    let mut args = schedule(&dir, json!({"_ansible_diff": true}));
    args["units"][1]["content"] = json!("[Timer]\nOnCalendar=weekly\n");
    let out = ok(args);
    assert_eq!(out["changed"], true, "{out}");
    let [diff] = out["diff"].as_array().unwrap().as_slice() else {
        panic!("one diff expected: {out}")
    };
    assert!(diff["before"]
        .as_str()
        .unwrap()
        .contains("OnCalendar=daily"));
    assert!(diff["after"]
        .as_str()
        .unwrap()
        .contains("OnCalendar=weekly"));
    let gone = ok(json!({
        "systemd_dir": dir.0.join("units"), "manage_services": false, "state": "absent",
        "units": [{"name": "vz-test.service"}, {"name": "vz-test.timer"}],
        "files": [{"path": dir.0.join("bin/settings.json")}]
    }));
    assert_eq!(gone["changed"], true, "{gone}");
    assert_eq!(dir.tree(), ["bin", "units"]);
}

#[test]
fn a_link_at_a_unit_path_is_refused_and_nothing_changes() {
    let dir = Scratch::new("link");
    std::fs::create_dir_all(dir.0.join("units")).unwrap();
    std::fs::write(dir.0.join("victim"), "keep\n").unwrap();
    std::os::unix::fs::symlink(dir.0.join("victim"), dir.0.join("units/vz-test.timer")).unwrap();
    let (code, out) = run(schedule(&dir, json!({})));
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("units[1]: ") && msg.contains("is a symbolic link"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.0.join("victim")).unwrap(),
        "keep\n"
    );
    assert_eq!(dir.tree(), ["units", "units/vz-test.timer", "victim"]);
}

#[test]
fn bad_entries_are_refused_naming_the_option_and_value() {
    let dir = Scratch::new("bad");
    for (patch, expect) in [
        (
            json!({"units": [{"name": "evil unit.timer", "content": ""}]}),
            "units[0].name: 'evil unit.timer'",
        ),
        (
            json!({"files": [{"path": "/x", "content": "", "mode": "0777"}]}),
            "files[0].mode: '0777'",
        ),
        (
            json!({"systemd_dir": "relative/dir"}),
            "systemd_dir: 'relative/dir'",
        ),
        (
            json!({"state": "gone"}),
            "value of state must be one of: present, absent, got: gone",
        ),
    ] {
        let (code, out) = run(schedule(&dir, patch));
        assert_eq!(code, 1, "{out}");
        assert!(out["msg"].as_str().unwrap().starts_with(expect), "{out}");
    }
    assert!(dir.tree().is_empty(), "{:?}", dir.tree());
}

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_schedule",
        &pgbackrest_schedule::PgbackrestSchedule::spec(),
    );
}

#[test]
fn a_directory_is_created_then_its_mode_is_kept_and_a_link_refused() {
    let dir = Scratch::new("dirs");
    let metrics = dir.0.join("var/metrics");
    let args = |extra: Value| {
        let mut a = json!({"manage_services": false, "systemd_dir": dir.0.join("units"),
                           "directories": [{"path": metrics, "mode": "0775", "group": id("-g")}]});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    let check = ok(args(json!({"_ansible_check_mode": true})));
    assert_eq!(check["changed"], true, "{check}");
    assert!(dir.tree().is_empty(), "{:?}", dir.tree());
    let first = ok(args(json!({})));
    assert_eq!(first["directories"][0]["changed"], true, "{first}");
    assert_eq!(std::fs::metadata(&metrics).unwrap().mode() & 0o7777, 0o775);
    assert_eq!(ok(args(json!({})))["changed"], false);
    std::fs::set_permissions(
        &metrics,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let fixed = ok(args(json!({"_ansible_diff": true})));
    assert_eq!(fixed["changed"], true, "{fixed}");
    assert!(fixed["diff"][0]["before"]
        .as_str()
        .unwrap()
        .contains("mode: '0700'"));
    assert_eq!(std::fs::metadata(&metrics).unwrap().mode() & 0o7777, 0o775);
    std::fs::remove_dir(&metrics).unwrap();
    std::os::unix::fs::symlink(&dir.0, &metrics).unwrap();
    let (code, out) = run(args(json!({})));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"].as_str().unwrap().starts_with("directories[0]: "),
        "{out}"
    );
}
