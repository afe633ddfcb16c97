//! The compiled module, run as Ansible runs it (argv[1] = arguments file): argument validation
//! before any side effect, and the sidecar doc against the spec. Real pgBackRest scenarios live in
//! the system tests (tests/ at the root).

use ansible_module::Module as _;
use serde_json::{json, Value};

fn run(args: Value) -> (i32, Value) {
    ansible_module::testing::run_with_args_file(env!("CARGO_BIN_EXE_pgbackrest_stanza"), &args)
}

#[test]
fn a_bad_stanza_name_fails_before_anything_runs() {
    let (code, out) = run(json!({"stanza": "main]\n[x", "become_user": ""}));
    assert_eq!(code, 1);
    assert_eq!(out["failed"], true);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("stanza: 'main]\\n[x' is not a valid stanza name"),
        "{out}"
    );
}

#[test]
fn unknown_options_and_bad_choices_are_refused() {
    let (_, out) = run(json!({"stanza": "main", "stanzza": "x"}));
    assert_eq!(out["failed"], true, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("stanzza"), "{out}");
    let (_, out) = run(json!({"stanza": "main", "state": "gone"}));
    assert!(out["msg"].as_str().unwrap().contains("state"), "{out}");
}

#[test]
fn a_missing_config_file_is_named() {
    let (_, out) = run(json!({
        "stanza": "main",
        "config": "/nonexistent/pgbackrest.conf",
        "become_user": "",
        "role": "primary"
    }));
    assert_eq!(out["failed"], true);
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("config: reading /nonexistent/pgbackrest.conf"),
        "{out}"
    );
}

#[test]
fn a_timeout_out_of_range_is_refused() {
    let (_, out) = run(json!({"stanza": "main", "io_timeout": 0, "become_user": ""}));
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("io_timeout: 0 is out of range"),
        "{out}"
    );
}

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_stanza",
        &pgbackrest_stanza::PgbackrestStanza::spec(),
    );
}
