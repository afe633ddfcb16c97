//! The compiled module, run as Ansible runs it (argv[1] = arguments file) on a file in a temp dir
//! owned by whoever runs the tests: it writes, stays put on a second run, writes nothing in check
//! mode, keeps secrets out of its output and refuses unknown options; and its sidecar doc says
//! what its spec enforces.

use ansible_module::testing::run_with_args_file;
use ansible_module::Module as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn run(args: Value) -> (i32, Value) {
    run_with_args_file(env!("CARGO_BIN_EXE_pgbackrest_config"), &args)
}

/// A directory of its own for one test, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "pgbackrest_config-cli-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names in the directory, sorted (a leftover temporary file would show here).
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `id -u` or `id -g`: the file is owned by whoever runs the tests, so no privilege is needed.
fn id(flag: &str) -> String {
    let out = std::process::Command::new("id").arg(flag).output().unwrap();
    assert!(out.status.success(), "id {flag}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A valid configuration at `path` (a `[global]` with a posix repository, a `main` stanza), with
/// `extra` merged over the top-level options.
fn config(path: &Path, extra: Value) -> Value {
    let mut args = json!({
        "path": path,
        "owner": id("-u"),
        "group": id("-g"),
        "mode": "0600",
        "global": {"repo1-path": "/var/lib/pgbackrest", "repo1-retention-full": 2},
        "stanzas": {"main": {"pg1-path": "/var/lib/postgresql/15/main"}}
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
fn a_valid_configuration_is_written_with_its_sections() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = Scratch::new("write");
    let path = dir.path("pgbackrest.conf");
    let out = ok(config(&path, json!({})));
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(out["msg"], format!("{} created", path.display()), "{out}");
    assert_eq!(out["sections"], json!(["global", "main"]), "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    let global = text
        .find("[global]\nrepo1-path=/var/lib/pgbackrest\nrepo1-retention-full=2\n")
        .unwrap_or_else(|| panic!("no [global] section as given:\n{text}"));
    let main = text
        .find("[main]\npg1-path=/var/lib/postgresql/15/main\n")
        .unwrap_or_else(|| panic!("no [main] section as given:\n{text}"));
    assert!(global < main, "[global] comes first:\n{text}");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        (meta.uid().to_string(), meta.gid().to_string()),
        (id("-u"), id("-g"))
    );
    // The temporary file was renamed over the target, not left beside it.
    assert_eq!(dir.names(), ["pgbackrest.conf"]);
}

#[test]
fn second_run_reports_no_change() {
    let dir = Scratch::new("again");
    let path = dir.path("pgbackrest.conf");
    let first = ok(config(&path, json!({})));
    assert_eq!(first["changed"], true, "{first}");
    let written = std::fs::read(&path).unwrap();
    let second = ok(config(&path, json!({})));
    assert_eq!(second["changed"], false, "{second}");
    assert_eq!(
        second["msg"],
        format!("{} unchanged", path.display()),
        "{second}"
    );
    assert_eq!(second["checksum"], first["checksum"]);
    assert_eq!(std::fs::read(&path).unwrap(), written);
    assert_eq!(dir.names(), ["pgbackrest.conf"]);
}

#[test]
fn check_mode_writes_nothing() {
    let dir = Scratch::new("check");
    // A missing parent directory too: check mode must not create it either.
    let parent = dir.path("etc");
    let path = parent.join("pgbackrest.conf");
    let out = ok(config(
        &path,
        json!({"_ansible_check_mode": true, "_ansible_diff": true}),
    ));
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(
        out["msg"],
        format!("{} created (check mode)", path.display()),
        "{out}"
    );
    assert_eq!(out["created_directory"], parent.display().to_string());
    // The diff predicts the file that would be written.
    let after = out["diff"]["after"].as_str().unwrap();
    assert!(
        after.contains("[main]\npg1-path=/var/lib/postgresql/15/main\n"),
        "{out}"
    );
    assert!(!parent.exists(), "check mode created {}", parent.display());
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn secrets_never_appear_in_the_output() {
    let dir = Scratch::new("secret");
    let path = dir.path("pgbackrest.conf");
    let secret = "Qm7vR2xK9pLw4tZb8nJc3hYf";
    let renewed = "Tz4kW8qN2mRx6vLp9bHc5sJd";
    let with = |pass: &str| {
        config(
            &path,
            json!({
                "_ansible_diff": true,
                "global": {
                    "repo1-path": "/var/lib/pgbackrest",
                    "repo1-cipher-type": "aes-256-cbc",
                    "repo1-cipher-pass": pass
                }
            }),
        )
    };
    // Not even a piece of a secret: every 6-character window of it is looked for.
    let leaks = |out: &Value, pass: &str| {
        let text = out.to_string();
        pass.as_bytes()
            .windows(6)
            .map(|w| std::str::from_utf8(w).unwrap().to_owned())
            .filter(|w| text.contains(w.as_str()))
            .collect::<Vec<_>>()
    };

    let out = ok(with(secret));
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(leaks(&out, secret), Vec::<String>::new(), "{out}");
    // The diff was produced (a missing diff would hide nothing), with the secret masked.
    let after = out["diff"]["after"].as_str().unwrap();
    assert!(after.contains("repo1-cipher-pass=********"), "{out}");
    // The invocation echoes the options with the secret scrubbed, not dropped.
    assert_eq!(
        out["invocation"]["module_args"]["global"]["repo1-cipher-pass"], "********",
        "{out}"
    );
    // The file itself holds the real secret: it is the output that hides it.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains(&format!("repo1-cipher-pass={secret}\n")),
        "{text}"
    );

    // A changed secret shows as changed, and neither the old nor the new value shows.
    let out = ok(with(renewed));
    assert_eq!(out["changed"], true, "{out}");
    assert_eq!(leaks(&out, secret), Vec::<String>::new(), "{out}");
    assert_eq!(leaks(&out, renewed), Vec::<String>::new(), "{out}");
    let after = out["diff"]["after"].as_str().unwrap();
    assert!(
        after.contains("repo1-cipher-pass=******** (changed)"),
        "{out}"
    );
}

#[test]
fn an_unknown_pgbackrest_option_fails_naming_it_and_writes_nothing() {
    let dir = Scratch::new("unknown");
    let path = dir.path("pgbackrest.conf");
    let (code, out) = run(config(
        &path,
        json!({"global": {"repo1-path": "/var/lib/pgbackrest", "repo1-retention-ful": 2}}),
    ));
    assert_eq!((code, &out["failed"]), (1, &json!(true)), "{out}");
    assert_eq!(out["changed"], false, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.contains(
            "global.repo1-retention-ful: unknown option 'repo1-retention-ful' for pgBackRest"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("did you mean 'repo1-retention-full'?"),
        "{msg}"
    );
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn an_unknown_module_option_fails_naming_it() {
    let dir = Scratch::new("unsupported");
    let path = dir.path("pgbackrest.conf");
    let (code, out) = run(config(&path, json!({"stanza": "main"})));
    assert_eq!((code, &out["failed"]), (1, &json!(true)), "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("Unsupported parameters for (pgbackrest_config) module: stanza."),
        "{msg}"
    );
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

/// The sidecar doc an operator reads and the spec the module enforces say the same thing.
#[test]
fn sidecar_docs_match_the_spec() {
    ansible_module::testing::assert_sidecar_matches(
        env!("CARGO_MANIFEST_DIR"),
        "pgbackrest_config",
        &pgbackrest_config::PgbackrestConfig::spec(),
    );
}

#[test]
fn a_secret_under_a_mistyped_name_is_never_echoed() {
    let dir = Scratch::new("mistyped");
    let path = dir.path("pgbackrest.conf");
    let canary = "mistyped-canary-Zq81mW0xPl7sV3nB";
    let (code, out) = run(config(
        &path,
        json!({"global": {"repo1-path": "/var/lib/pgbackrest", "repo1-cipher-pas": canary}}),
    ));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .contains("did you mean 'repo1-cipher-pass'?"),
        "{out}"
    );
    assert!(!out.to_string().contains(canary), "{out}");
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn a_huge_option_name_is_refused_with_a_short_message() {
    let dir = Scratch::new("huge");
    let path = dir.path("pgbackrest.conf");
    let huge = "repo1-".repeat(200_000);
    let mut global = serde_json::Map::new();
    global.insert(huge.clone(), json!("x"));
    global.insert("repo1-path".into(), json!("/var/lib/pgbackrest"));
    let (code, out) = run(config(&path, json!({ "global": global })));
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.contains("is not a pgBackRest option name"), "{msg}");
    assert!(
        msg.len() < 1000,
        "the message echoes the whole name: {} bytes",
        msg.len()
    );
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}

#[test]
fn a_mode_open_to_others_is_refused_for_secrets_and_for_writing() {
    let dir = Scratch::new("modes");
    let path = dir.path("pgbackrest.conf");
    let secret = json!({"repo1-path": "/var/lib/pgbackrest", "repo1-cipher-type": "aes-256-cbc",
                        "repo1-cipher-pass": "mode-canary-Kq2xT9vLm4pZ8wR1sY6u"});
    let (code, out) = run(config(&path, json!({"mode": "0644", "global": secret})));
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap();
    assert!(msg.starts_with("mode: '0644' gives others access"), "{msg}");
    assert!(msg.contains("holds secrets"), "{msg}");
    // Without a secret, readable by others is fine, writable by others never.
    ok(config(&path, json!({"mode": "0644"})));
    let (code, out) = run(config(&dir.path("other.conf"), json!({"mode": "0666"})));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"].as_str().unwrap().starts_with("mode: '0666'"),
        "{out}"
    );
    assert_eq!(dir.names(), ["pgbackrest.conf"]);
}

#[test]
fn template_vars_cannot_inject_lines() {
    let dir = Scratch::new("vars");
    let path = dir.path("pgbackrest.conf");
    let (code, out) = run(config(
        &path,
        json!({"vars": {"note": "x\n[evil]\nrepo1-path=/tmp"}}),
    ));
    assert_eq!(code, 1, "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap()
            .starts_with("vars.note: holds a control character"),
        "{out}"
    );
    assert!(dir.names().is_empty(), "{:?}", dir.names());
}
