//! The compiled module on an args file, as Ansible runs it: its docs, and arguments refused
//! before anything runs, naming the option and the value. Real clusters, standbys and broken
//! archiving are in the system tests (tests/test_pgbackrest_archive_health.py at the repository
//! root).

use serde_json::{json, Value};

fn run(args: Value) -> (i32, Value) {
    ansible_module::testing::run_with_args_file(
        env!("CARGO_BIN_EXE_pgbackrest_archive_health"),
        &args,
    )
}

fn msg(out: &Value) -> &str {
    out["msg"].as_str().unwrap_or_default()
}

#[test]
fn sidecar_docs_match_the_spec() {
    use ansible_module::Module as _;
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_archive_health",
        &pgbackrest_archive_health::PgbackrestArchiveHealth::spec(),
    );
}

#[test]
fn bad_arguments_are_refused_naming_the_option_and_the_value() {
    for (args, start) in [
        (json!({}), "missing required arguments: stanza"),
        (json!({"stanza": "a b"}), "stanza: 'a b'"),
        (json!({"stanza": "main", "io_timeout": 0}), "io_timeout: 0"),
        (
            json!({"stanza": "main", "continuity_grace": -1}),
            "continuity_grace: -1",
        ),
        (
            json!({"stanza": "main", "metrics_prefix": "a-b"}),
            "metrics_prefix: 'a-b'",
        ),
        (
            json!({"stanza": "main", "metrics_dir": "/nonexistent/dir"}),
            "metrics_dir: /nonexistent/dir",
        ),
        (
            json!({"stanza": "main", "source": "oracle"}),
            "value of source must be one of",
        ),
    ] {
        let (code, out) = run(args.clone());
        assert_eq!(code, 1, "{args}: {out}");
        assert!(msg(&out).starts_with(start), "{args}: {out}");
    }
}

#[test]
fn a_missing_config_fails_naming_it() {
    let (code, out) = run(json!({"stanza": "main", "config": "/nonexistent/pgbackrest.conf"}));
    assert_eq!(code, 1);
    assert!(msg(&out).starts_with("config: reading"), "{out}");
}
