//! The compiled module, run as Ansible runs it (argv[1] = arguments file) and as a program
//! (stdin): argument errors and environment problems, without any sandbox. Real drills live in
//! the system tests (tests/test_dr_drill.py at the repository root).

use serde_json::{json, Value};

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("dr_drill-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_file(args: Value) -> (i32, Value) {
    ansible_module::testing::run_with_args_file(env!("CARGO_BIN_EXE_dr_drill"), &args)
}

fn run_stdin(input: &str) -> (i32, Value, String) {
    ansible_module::testing::run_with_stdin(env!("CARGO_BIN_EXE_dr_drill"), input)
}

#[test]
fn stanza_is_required() {
    let (code, out) = run_file(json!({}));
    assert_eq!(code, 1);
    assert!(out["msg"].as_str().unwrap().contains("stanza"), "{out}");
}

#[test]
fn unknown_check_is_refused_naming_it() {
    let (code, out) = run_file(json!({"stanza": "main", "checks": ["fsck"]}));
    assert_eq!(code, 1);
    assert!(out["msg"].as_str().unwrap().contains("'fsck'"), "{out}");
}

#[test]
fn target_and_set_are_mutually_exclusive() {
    let (code, out) =
        run_file(json!({"stanza": "main", "target": "2025-01-01", "set": "20250101-000000F"}));
    assert_eq!(code, 1);
    assert!(
        out["msg"].as_str().unwrap().contains("mutually exclusive"),
        "{out}"
    );
}

#[test]
fn missing_config_is_an_environment_problem_with_exit_2() {
    let dir = scratch("noconf");
    let args = json!({"stanza": "main", "config": dir.join("absent.conf"), "sandbox": "host",
        "metrics_dir": dir.join("metrics"), "lock_dir": dir.join("lock")});
    let (code, out, _) = run_stdin(&args.to_string());
    let metrics = std::fs::read_to_string(dir.join("metrics/veza_backup_drill_main.prom"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2, "{out}");
    assert_eq!(out["failed"], true);
    assert_eq!(out["passed"], false);
    assert!(
        ["no_config", "missing_tool"].contains(&out["reason"].as_str().unwrap()),
        "{out}"
    );
    // Metrics are written only when pgbackrest is present here: the reason is then no_config.
    if let Ok(text) = metrics {
        assert!(
            text.contains("veza_backup_drill_last_success{stanza=\"main\"} 0"),
            "{text}"
        );
    }
}

#[test]
fn sidecar_docs_match_the_spec() {
    use ansible_module::Module as _;
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "dr_drill",
        &dr_drill::DrDrill::spec(),
    );
}

#[test]
fn extreme_timeouts_are_accepted_without_a_panic() {
    let dir = scratch("extreme");
    let args = json!({"stanza": "main", "config": dir.join("absent.conf"), "sandbox": "host",
        "metrics_dir": dir.join("metrics"), "lock_dir": dir.join("lock"),
        "max_restore_seconds": i64::MAX, "recovery_timeout": i64::MAX,
        "start_timeout": i64::MAX, "max_check_seconds": i64::MAX, "max_backup_age": i64::MAX});
    let (code, out) = run_file(args);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 2, "{out}");
    assert!(!out["msg"].as_str().unwrap().contains("panicked"), "{out}");
}

#[test]
fn the_configurations_secrets_are_scrubbed_from_every_field() {
    // The cipher pass is also the name of the configuration's directory, so it shows in the
    // commands and the invocation unless the drill registered the configuration's secrets.
    let secret = format!("canary-drill-conf-{}", std::process::id());
    let dir = scratch("conf-secret");
    let confdir = dir.join(&secret);
    std::fs::create_dir_all(&confdir).unwrap();
    let conf = confdir.join("pgbackrest.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nrepo1-path={}/repo\nrepo1-cipher-type=aes-256-cbc\n\
             repo1-cipher-pass={secret}\nlock-path={d}\nlog-path={d}\n[main]\npg1-path={d}/pg\n",
            confdir.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let args = json!({"stanza": "main", "config": conf, "sandbox": "host",
        "metrics_dir": dir.join("metrics"), "lock_dir": dir.join("lock")});
    let (_, out, stderr) = run_stdin(&args.to_string());
    let metrics = std::fs::read_to_string(dir.join("metrics/veza_backup_drill_main.prom"));
    std::fs::remove_dir_all(&dir).unwrap();
    let text = format!("{out}{stderr}{}", metrics.unwrap_or_default());
    assert!(!text.contains(&secret), "{text}");
    if out["reason"] != "missing_tool" {
        assert!(
            out["invocation"]["module_args"]["config"]
                .as_str()
                .unwrap()
                .contains("/********/"),
            "{out}"
        );
    }
}
