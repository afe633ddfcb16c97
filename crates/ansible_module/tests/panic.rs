//! A module that panics still answers Ansible with one JSON failure, secrets scrubbed.
//!
//! The test re-runs its own binary with an environment variable set and no arguments (so the
//! module reads stdin, and this file must hold this one test only); the child then runs a
//! panicking module through `ansible_module::run`, exactly as a module's `main` would.

use ansible_module::{Context, Module, Response};
use std::io::Write as _;
use std::process::{Command, Stdio};

ansible_module::options! {
    /// The panicking module's one option.
    struct Args {
        /// A secret it quotes in its panic.
        token: String = str().required().no_log(),
    }
}

struct Panicker;

impl Module for Panicker {
    type Args = Args;
    const NAME: &'static str = "panicker";
    fn execute(args: Args, _ctx: &mut Context) -> anyhow::Result<Response> {
        panic!("oops while holding {}", args.token);
    }
}

#[test]
fn panic_yields_a_json_failure_with_secrets_scrubbed() {
    if std::env::var_os("PANIC_CHILD").is_some() {
        ansible_module::run::<Panicker>();
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("PANIC_CHILD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"token": "panic-canary-0d1e"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // libtest prints its own lines around the module's JSON.
    let start = stdout
        .find('{')
        .unwrap_or_else(|| panic!("no JSON in {stdout}"));
    let line = stdout[start..].lines().next().unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["failed"], true);
    let msg = v["msg"].as_str().unwrap();
    assert!(
        msg.starts_with("module panicked at ") && msg.ends_with("oops while holding ********"),
        "{msg}"
    );
    assert!(!stdout.contains("panic-canary-0d1e"));
}
