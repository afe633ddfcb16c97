//! The compiled module, run as Ansible runs it (argv[1] = arguments file) and as a program (stdin).
//! Its sidecar doc is checked against its spec here too. Real PostgreSQL scenarios live in the
//! system tests (tests/ at the repository root).

use ansible_module::testing::{dead_port, run_with_args_file, run_with_stdin};
use ansible_module::Module as _;
use serde_json::{json, Value};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_pg_role_detect");

fn run_file(args: Value) -> (i32, Value) {
    run_with_args_file(BIN, &args)
}

fn run_stdin(input: &str) -> (i32, Value) {
    let (code, value, _) = run_with_stdin(BIN, input);
    (code, value)
}

#[test]
fn unknown_option_fails_naming_it() {
    let (code, out) = run_file(json!({"sorce": "sql", "_ansible_check_mode": false}));
    assert_eq!(code, 1);
    assert_eq!(out["failed"], true);
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("Unsupported parameters for (pg_role_detect) module: sorce."),
        "{msg}"
    );
    assert!(msg.contains("source"), "{msg}");
}

#[test]
fn wrong_type_fails_naming_option_and_value() {
    let (code, out) = run_file(json!({"login_port": "fivefourthree"}));
    assert_eq!(code, 1);
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains("'login_port'") && msg.contains("fivefourthree"),
        "{msg}"
    );
}

#[test]
fn bad_choice_fails() {
    let (_, out) = run_file(json!({"source": "monitor"}));
    assert_eq!(
        out["msg"],
        "value of source must be one of: auto, pg_autoctl, sql, got: monitor"
    );
}

#[test]
fn unreachable_postgres_is_unknown_with_a_warning() {
    let port = dead_port();
    let (code, out) = run_file(json!({
        "source": "sql",
        "login_host": "127.0.0.1",
        "login_port": port,
        "connect_timeout": 3
    }));
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (
            out["role"].clone(),
            out["is_primary"].clone(),
            out["changed"].clone()
        ),
        (json!("unknown"), json!(false), json!(false))
    );
    assert_eq!(out["ansible_facts"]["pg_role"], "unknown");
    let warning = out["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains(&format!("127.0.0.1:{port}")) && warning.contains("refused"),
        "{warning}"
    );
}

#[test]
fn unreachable_postgres_fails_with_fail_on_unknown_given_as_a_string() {
    let port = dead_port();
    let (code, out) = run_file(json!({
        "source": "sql",
        "login_host": "127.0.0.1",
        "port": port.to_string(),
        "fail_on_unknown": "yes"
    }));
    assert_eq!(code, 1);
    assert_eq!(out["failed"], true);
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "the role of this node is unknown: connecting to PostgreSQL at postgres@127.0.0.1:"
        ),
        "{msg}"
    );
    assert_eq!(out["role"], "unknown");
}

#[test]
fn password_never_appears_in_the_output() {
    let port = dead_port();
    let canary = "pw-canary-51c3e";
    let (_, out) = run_file(json!({
        "source": "sql",
        "login_host": "127.0.0.1",
        "login_port": port,
        "login_password": canary
    }));
    assert!(!out.to_string().contains(canary), "{out}");
    assert_eq!(
        out["invocation"]["module_args"]["login_password"],
        ansible_module::NO_LOG_PLACEHOLDER
    );
}

#[test]
fn reads_arguments_from_stdin_when_run_as_a_program() {
    let (code, out) = run_stdin(r#"{"source": "bogus"}"#);
    assert_eq!(code, 1);
    assert!(out["msg"].as_str().unwrap().contains("got: bogus"));
    let (code, out) = run_stdin("not json");
    assert_eq!(code, 1);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("the module arguments are not valid JSON"),
        "{out}"
    );
}

#[test]
fn missing_arguments_file_fails_in_json() {
    let out = Command::new(BIN).arg("/nonexistent/args").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["msg"]
            .as_str()
            .unwrap()
            .starts_with("reading the arguments file /nonexistent/args"),
        "{v}"
    );
}

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pg_role_detect",
        &pg_role_detect::PgRoleDetect::spec(),
    );
}

#[test]
fn a_pgdata_that_is_not_a_directory_is_refused_naming_it() {
    let (code, out) = run_file(json!({"pgdata": "/nonexistent/pg/data", "source": "sql"}));
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        out["msg"].as_str().unwrap(),
        "pgdata: '/nonexistent/pg/data' is not a directory"
    );
}
