//! The compiled module, run as Ansible runs it (argv[1] = arguments file): argument errors are
//! refused before any connection; and its sidecar doc, which must say what the spec enforces.
//! Real PostgreSQL scenarios live in the system tests (tests/ at the repository root).

use ansible_module::testing::{dead_port, run_with_args_file};
use ansible_module::Module as _;
use serde_json::{json, Value};

fn run(args: Value) -> (i32, Value) {
    run_with_args_file(env!("CARGO_BIN_EXE_pg_alter_system"), &args)
}

/// Arguments that would reach a dead port if the module went that far; `become_user` empty so
/// that the refusal does not depend on who runs the tests.
fn args(extra: Value) -> Value {
    let mut args = json!({"login_host": "127.0.0.1", "login_port": dead_port(), "become_user": ""});
    args.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    args
}

fn refused(extra: Value) -> String {
    let (code, out) = run(args(extra));
    assert_eq!((code, &out["failed"]), (1, &json!(true)), "{out}");
    assert_ne!(out["changed"], true, "{out}");
    let msg = out["msg"].as_str().unwrap().to_owned();
    assert!(
        !msg.contains("connecting"),
        "refused before connecting: {msg}"
    );
    msg
}

#[test]
fn unknown_option_fails_naming_it() {
    let msg = refused(json!({"setings": {"a": 1}}));
    assert!(
        msg.starts_with("Unsupported parameters for (pg_alter_system) module: setings."),
        "{msg}"
    );
}

#[test]
fn settings_or_reset_is_required() {
    assert_eq!(
        refused(json!({})),
        "one of the following is required: settings, reset"
    );
}

#[test]
fn settings_must_be_a_dict() {
    let msg = refused(json!({"settings": "archive_mode"}));
    assert!(
        msg.contains("'settings'") && msg.contains("archive_mode") && msg.contains("dict"),
        "{msg}"
    );
}

#[test]
fn a_bad_setting_name_is_refused_naming_it() {
    assert_eq!(
        refused(json!({"settings": {"work_mem; DROP TABLE x": "4MB"}})),
        "settings: 'work_mem; DROP TABLE x' is not a valid setting name"
    );
    assert_eq!(
        refused(json!({"reset": ["archive mode"]})),
        "reset: 'archive mode' is not a valid setting name"
    );
}

#[test]
fn values_that_cannot_be_written_are_refused() {
    assert_eq!(
        refused(json!({"settings": {"archive_command": "cp %p\u{0}x"}})),
        "settings: the value of archive_command contains a NUL character"
    );
    assert!(refused(json!({"settings": {"archive_command": "a\nb"}})).contains("line break"));
    assert_eq!(
        refused(json!({"settings": {"archive_timeout": null}})),
        "settings: archive_timeout has no value; list it in reset to remove it"
    );
    assert!(refused(json!({"settings": {"search_path": ["a"]}}))
        .starts_with("settings: the value of search_path must be a string, a number or a boolean"));
}

#[test]
fn a_name_in_both_settings_and_reset_is_refused() {
    assert_eq!(
        refused(json!({"settings": {"archive_timeout": 60}, "reset": ["ARCHIVE_TIMEOUT"]})),
        "'ARCHIVE_TIMEOUT' is in both settings and reset"
    );
}

#[test]
fn bad_login_port_is_refused() {
    assert_eq!(
        refused(json!({"settings": {"archive_timeout": 60}, "login_port": 70000})),
        "login_port must be between 1 and 65535, got 70000"
    );
}

#[test]
fn empty_settings_do_nothing_without_connecting() {
    let (code, out) = run(args(json!({"settings": {}, "reset": []})));
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["changed"], false);
    assert_eq!(out["queries"], json!([]));
    assert_eq!(out["restart_required"], false);
}

#[test]
fn unreachable_server_fails_and_hides_the_password() {
    let canary = "pw-canary-a17c";
    let (code, out) = run(args(json!({
        "settings": {"archive_timeout": 60},
        "login_password": canary,
        "connect_timeout": 3
    })));
    assert_eq!(code, 1);
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("connecting to PostgreSQL at postgres@127.0.0.1:"),
        "{msg}"
    );
    assert!(!out.to_string().contains(canary), "{out}");
    assert_eq!(
        out["invocation"]["module_args"]["login_password"],
        ansible_module::NO_LOG_PLACEHOLDER
    );
}

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pg_alter_system",
        &pg_alter_system::PgAlterSystem::spec(),
    );
}

/// The EXAMPLES an operator copies set up archiving to pgBackRest the way the collection expects.
#[test]
fn examples_show_the_pgbackrest_archiving_settings() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../collection/plugins/modules/pg_alter_system.yml"
    );
    let doc: serde_json::Value =
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let examples: serde_json::Value =
        serde_yaml::from_str(doc["EXAMPLES"].as_str().unwrap()).unwrap();
    let settings = examples
        .as_array()
        .unwrap()
        .iter()
        .find_map(|task| task["veza.pgbackrest.pg_alter_system"]["settings"].as_object())
        .unwrap();
    assert_eq!(settings["archive_mode"], "on");
    assert_eq!(
        settings["archive_command"],
        "pgbackrest --stanza=main archive-push %p"
    );
    assert_eq!(settings["archive_timeout"], 60);
}
