//! The compiled module on an args file, as Ansible runs it: argument errors, a repository
//! without stanzas, its metrics file (check mode writes none), and a secret of the configuration
//! that never shows. Repositories with backups
//! are in the system tests (tests/test_pgbackrest_info.py at the repository root).

use serde_json::{json, Value};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("pgbackrest_info-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(args: Value) -> (i32, Value) {
    ansible_module::testing::run_with_args_file(env!("CARGO_BIN_EXE_pgbackrest_info"), &args)
}

#[test]
fn sidecar_docs_match_the_spec() {
    use ansible_module::Module as _;
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_info",
        &pgbackrest_info::PgbackrestInfo::spec(),
    );
}

#[test]
fn a_bad_stanza_name_and_timeout_are_refused_naming_the_option() {
    let (code, out) = run(json!({"stanza": "a b"}));
    assert_eq!(code, 1);
    assert!(
        out["msg"].as_str().unwrap().starts_with("stanza: 'a b'"),
        "{out}"
    );
    let (code, out) = run(json!({"stanza": "main", "io_timeout": 0}));
    assert_eq!(code, 1);
    assert!(
        out["msg"].as_str().unwrap().starts_with("io_timeout: 0"),
        "{out}"
    );
}

#[test]
fn a_missing_config_fails_naming_it() {
    let dir = scratch("noconf");
    let (code, out) = run(json!({"config": dir.join("absent.conf")}));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1);
    assert!(
        out["msg"].as_str().unwrap().starts_with("config: reading"),
        "{out}"
    );
}

fn installed(program: &str, arg: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg(arg)
        .output()
        .is_ok();
    if !found {
        eprintln!("{program} is not installed here: skipped");
    }
    found
}

/// An empty encrypted posix repository in `dir`; its configuration file.
fn empty_repo(dir: &std::path::Path, secret: &str) -> std::path::PathBuf {
    let conf = dir.join("pgbackrest.conf");
    let text = format!(
        "[global]\nrepo1-path={}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={secret}\n\
         lock-path={}\nlog-level-file=off\n",
        dir.join("repo").display(),
        dir.join("lock").display()
    );
    std::fs::write(&conf, text).unwrap();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
    conf
}

#[test]
fn an_empty_repository_holds_no_stanza_and_no_secret_shows() {
    if !installed("pgbackrest", "version") {
        return;
    }
    let dir = scratch("empty");
    let secret = "info-canary-7f3a9c1e5b2d8f4a6c0e";
    let conf = empty_repo(&dir, secret);
    let args = json!({"config": conf, "become_user": "", "_ansible_check_mode": true});
    let (code, out) = run(args);
    let (code2, named) = run(json!({"config": conf, "become_user": "", "stanza": "main"}));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["changed"], false);
    assert_eq!(out["ok"], false);
    assert_eq!(out["stanzas"], json!([]));
    assert!(
        !out["commands"][0].as_str().unwrap().contains("--stanza"),
        "{out}"
    );
    assert!(!out.to_string().contains(secret));
    // A named stanza the repository lacks: listed, status 1.
    assert_eq!(code2, 0, "{named}");
    assert_eq!(named["stanzas"][0]["status"]["code"], 1, "{named}");
    assert_eq!(
        named["stanzas"][0]["status"]["meaning"],
        "missing stanza path"
    );
}

#[test]
fn metrics_of_a_missing_stanza_are_written_atomically_and_not_in_check_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    if !installed("pgbackrest", "version") {
        return;
    }
    let dir = scratch("metrics");
    let conf = empty_repo(&dir, "info-canary-0b1c2d3e4f5a6b7c8d9e");
    let prom = dir.join("prom");
    std::fs::create_dir_all(&prom).unwrap();
    let args = json!({"config": conf, "become_user": "", "stanza": "main", "metrics_dir": prom});
    let mut check = args.clone();
    check["_ansible_check_mode"] = json!(true);
    let (code_check, checked) = run(check);
    let listed_after_check = std::fs::read_dir(&prom).unwrap().count();
    let (code, out) = run(args.clone());
    let file = prom.join("veza_backup_main.prom");
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o7777);
    let names: Vec<String> = std::fs::read_dir(&prom)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let promtool = installed("promtool", "--version").then(|| {
        std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&file).unwrap())
            .output()
            .unwrap()
    });
    let (code_bad, bad) = run(json!({"config": conf, "metrics_dir": dir.join("absent")}));
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(code_check, 0, "{checked}");
    assert_eq!(listed_after_check, 0, "check mode wrote {checked}");
    assert!(
        checked["msg"]
            .as_str()
            .unwrap()
            .contains("check mode: 1 metrics file(s) not written"),
        "{checked}"
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["changed"], false, "a metrics file is a report");
    assert_eq!(out["metrics_files"], json!([file.display().to_string()]));
    assert_eq!(names, ["veza_backup_main.prom"], "no temporary file left");
    assert_eq!(mode.unwrap(), 0o644);
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(has("veza_backup_status_code{stanza=\"main\"} 1"), "{text}");
    for t in ["full", "diff", "incr"] {
        assert!(has(&format!(
            "veza_backup_sets{{stanza=\"main\",type=\"{t}\"}} 0"
        )));
    }
    assert!(text.contains("\nveza_backup_info_timestamp_seconds{stanza=\"main\"} "));
    assert!(!text.contains("last_timestamp_seconds") && !text.contains("archive_max_info"));
    if let Some(p) = promtool {
        let said = String::from_utf8_lossy(&p.stdout) + String::from_utf8_lossy(&p.stderr);
        assert!(p.status.success(), "promtool check metrics: {said}\n{text}");
    }
    assert_eq!(code_bad, 1);
    assert!(
        bad["msg"].as_str().unwrap().starts_with("metrics_dir: "),
        "{bad}"
    );
}

/// The module as a unit's `ExecStopPost=` runs it: settings on stdin, `$SERVICE_RESULT` set (or
/// not, when `None`).
fn run_as_stop_post(args: &Value, service_result: Option<&str>) -> (i32, Value) {
    let (code, value, _) = ansible_module::testing::run_with_stdin_env(
        env!("CARGO_BIN_EXE_pgbackrest_info"),
        &args.to_string(),
        &[("SERVICE_RESULT", service_result)],
    );
    (code, value)
}

fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_run_is_refused_naming_the_option_and_nothing_is_written() {
    let dir = scratch("run-refused");
    let prom = dir.join("prom");
    std::fs::create_dir_all(&prom).unwrap();
    // An empty configuration: every refusal below comes after it is read.
    let base = json!({"config": "/dev/null", "stanza": "main", "metrics_dir": prom});
    let with = |extra: Value| {
        let mut a = base.clone();
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    let cases = [
        (
            with(json!({"run_type": "full"})),
            "run_type: given without run_result",
        ),
        (
            with(json!({"run_result": "success"})),
            "run_result: 'success' given without run_type",
        ),
        (
            with(json!({"run_type": "weekly", "run_result": "success"})),
            "run_type",
        ),
        (
            with(json!({"run_type": "full", "run_result": "systemd"})),
            "run_result: 'systemd' reads $SERVICE_RESULT",
        ),
        (
            json!({"config": "/dev/null", "stanza": "main",
                   "run_type": "full", "run_result": "failed"}),
            "run_type: recording a run needs metrics_dir",
        ),
    ];
    let mut seen = Vec::new();
    for (args, want) in &cases {
        let (code, out) = run_as_stop_post(args, None);
        seen.push((
            code,
            out["msg"].as_str().unwrap_or_default().to_owned(),
            *want,
        ));
    }
    let left = listing(&prom);
    std::fs::remove_dir_all(&dir).unwrap();
    for (code, msg, want) in seen {
        assert_eq!(code, 1, "{msg}");
        assert!(msg.contains(want), "{msg:?} does not say {want:?}");
    }
    assert!(left.is_empty(), "a refused run wrote {left:?}");
}

#[test]
fn a_skip_and_a_failure_record_only_the_run_and_a_success_also_the_repository() {
    if !installed("pgbackrest", "version") {
        return;
    }
    let dir = scratch("runs");
    let conf = empty_repo(&dir, "info-canary-5e6f7a8b9c0d1e2f3a4b");
    let prom = dir.join("prom");
    std::fs::create_dir_all(&prom).unwrap();
    let args = |t: &str| {
        json!({"config": conf, "become_user": "", "stanza": "main", "metrics_dir": prom,
               "run_type": t, "run_result": "systemd"})
    };
    let mut check = args("full");
    check["_ansible_check_mode"] = json!(true);
    let (code_check, checked) = run_as_stop_post(&check, Some("exec-condition"));
    let after_check = listing(&prom);
    let (code_skip, skipped) = run_as_stop_post(&args("full"), Some("exec-condition"));
    let after_skip = listing(&prom);
    let skip_text = std::fs::read_to_string(prom.join("veza_backup_main@full.prom")).unwrap();
    let (code_fail, failed) = run_as_stop_post(&args("diff"), Some("exit-code"));
    let fail_text = std::fs::read_to_string(prom.join("veza_backup_main@diff.prom")).unwrap();
    let (code_ok, succeeded) = run_as_stop_post(&args("incr"), Some("success"));
    let after_success = listing(&prom);
    let ok_text = std::fs::read_to_string(prom.join("veza_backup_main@incr.prom")).unwrap();
    let promtool: Vec<_> = after_success
        .iter()
        .filter(|_| installed("promtool", "--version"))
        .map(|name| (name.clone(), promtool_check(&prom.join(name))))
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(code_check, 0, "{checked}");
    assert!(after_check.is_empty(), "check mode wrote {after_check:?}");
    assert_eq!(checked["run"]["result"], "skipped", "{checked}");

    assert_eq!(code_skip, 0, "{skipped}");
    assert_eq!(skipped["ok"], true);
    assert_eq!(skipped["commands"], json!([]), "a skip runs no pgbackrest");
    assert_eq!(after_skip, ["veza_backup_main@full.prom"]);
    let has = |text: &str, line: &str| text.lines().any(|l| l == line);
    let r = |t: &str, result: &str, v: u8| {
        format!("veza_backup_run_result{{stanza=\"main\",type=\"{t}\",result=\"{result}\"}} {v}")
    };
    assert!(has(&skip_text, &r("full", "skipped", 1)), "{skip_text}");
    assert!(has(&skip_text, &r("full", "success", 0)), "{skip_text}");
    assert!(has(&skip_text, &r("full", "failed", 0)), "{skip_text}");
    assert!(
        skip_text.contains("\nveza_backup_run_timestamp_seconds{stanza=\"main\",type=\"full\"} ")
    );

    assert_eq!(
        code_fail, 0,
        "a recorded failure is not a second failure: {failed}"
    );
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["run"]["result"], "failed");
    assert!(has(&fail_text, &r("diff", "failed", 1)), "{fail_text}");
    assert!(has(&fail_text, &r("diff", "success", 0)), "{fail_text}");

    assert_eq!(code_ok, 0, "{succeeded}");
    assert_eq!(succeeded["run"]["result"], "success");
    assert_eq!(
        after_success,
        [
            "veza_backup_main.prom",
            "veza_backup_main@diff.prom",
            "veza_backup_main@full.prom",
            "veza_backup_main@incr.prom"
        ],
        "a success also writes the repository's file"
    );
    assert_eq!(
        succeeded["metrics_files"][0],
        json!(prom.join("veza_backup_main@incr.prom"))
    );
    assert!(has(&ok_text, &r("incr", "success", 1)), "{ok_text}");
    for (name, (ok, said)) in promtool {
        assert!(ok, "promtool check metrics {name}: {said}");
    }
}

/// `promtool check metrics` on a file: whether it passed, and what it said.
fn promtool_check(file: &std::path::Path) -> (bool, String) {
    let p = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&p.stdout) + String::from_utf8_lossy(&p.stderr);
    (p.status.success(), said.into_owned())
}
