//! The compiled module on an args file, as Ansible runs it: argument errors, a repository
//! without stanzas, and a secret of the configuration that never shows. Repositories with backups
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

#[test]
fn an_empty_repository_holds_no_stanza_and_no_secret_shows() {
    if std::process::Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("pgbackrest is not installed here: skipped");
        return;
    }
    let dir = scratch("empty");
    let secret = "info-canary-7f3a9c1e5b2d8f4a6c0e";
    let conf = dir.join("pgbackrest.conf");
    let text = format!(
        "[global]\nrepo1-path={}\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={secret}\n\
         lock-path={}\nlog-level-file=off\n",
        dir.join("repo").display(),
        dir.join("lock").display()
    );
    std::fs::write(&conf, text).unwrap();
    std::fs::create_dir_all(dir.join("repo")).unwrap();
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
