//! Helpers for the modules' own integration tests (feature `testing`, enabled by their
//! dev-dependencies only): run a compiled module as Ansible runs it, and compare its sidecar doc
//! with its spec.

use serde_json::Value;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Run a module binary with an arguments file, as Ansible does (stdin is /dev/null); returns the
/// exit code and the single JSON object it printed.
pub fn run_with_args_file(binary: &str, args: &Value) -> (i32, Value) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = Path::new(binary)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("{name}-test-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("args");
    std::fs::write(&file, args.to_string()).unwrap();
    let out = Command::new(binary)
        .arg(&file)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    decode(out)
}

/// Run a module binary as a program, with the arguments as JSON text on stdin; returns the exit
/// code, the single JSON object it printed and what it wrote on stderr (progress lines).
pub fn run_with_stdin(binary: &str, input: &str) -> (i32, Value, String) {
    run_with_stdin_env(binary, input, &[])
}

/// [`run_with_stdin`] with these environment variables set (`Some`) or removed (`None`), as a
/// systemd unit's `ExecStopPost=` runs a module with `$SERVICE_RESULT`.
pub fn run_with_stdin_env(
    binary: &str,
    input: &str,
    env: &[(&str, Option<&str>)],
) -> (i32, Value, String) {
    let mut command = Command::new(binary);
    for (key, value) in env {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let (code, value) = decode(out);
    (code, value, stderr)
}

fn decode(out: std::process::Output) -> (i32, Value) {
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.lines().count(),
        1,
        "exactly one JSON line expected: {text}"
    );
    (
        out.status.code().unwrap(),
        serde_json::from_str(&text).unwrap(),
    )
}

/// A loopback port with nothing listening (bound, noted, closed).
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Assert that `collection/plugins/modules/<module>.yml` documents exactly the spec's options.
pub fn assert_sidecar_matches(manifest_dir: &str, module: &str, spec: &crate::Spec) {
    let path = Path::new(manifest_dir)
        .join("../../collection/plugins/modules")
        .join(format!("{module}.yml"));
    let doc: Value = serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(doc["DOCUMENTATION"]["module"], module, "{}", path.display());
    assert_eq!(
        crate::spec::describe_doc(&doc["DOCUMENTATION"]["options"]),
        crate::spec::describe(spec),
        "{}",
        path.display()
    );
}

/// Arbitrary JSON: every kind of value, nested a few levels, with strings that are sometimes
/// plausible option values and sometimes anything (control characters, any Unicode).
pub fn json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let plausible = prop::sample::select(vec![
        "",
        "0640",
        "0777",
        "yes",
        "maybe",
        "main",
        "global",
        "/tmp/x",
        "rel/x",
        "1MB",
        "-1",
        "9223372036854775808",
        "a\nb",
        "\u{0}",
        "repo1-path",
        "s3",
        "4294967295",
        "[evil]",
    ])
    .prop_map(|s| Value::String(s.to_owned()));
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| {
            serde_json::Number::from_f64(f).map(Value::Number)
        }),
        plausible,
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![any::<String>(), Just("repo1-path".to_owned())],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Argument objects for `spec`: its option names and aliases (and one unknown name), each with
/// arbitrary JSON.
pub fn arguments(
    spec: &crate::Spec,
) -> impl proptest::strategy::Strategy<Value = serde_json::Map<String, Value>> {
    use proptest::prelude::*;
    let mut names: Vec<String> = spec
        .options
        .iter()
        .flat_map(|o| std::iter::once(o.name).chain(o.aliases.iter().copied()))
        .map(str::to_owned)
        .collect();
    names.push("no_such_option".to_owned());
    prop::collection::btree_map(prop::sample::select(names), json(), 0..8)
        .prop_map(|m| m.into_iter().collect())
}

/// The arguments as a module gets them: validated by its spec, then read into its `Args`
/// (`Err` is the refusal message).
pub fn validated<M: crate::Module>(
    raw: &serde_json::Map<String, Value>,
) -> Result<M::Args, String> {
    let valid = M::spec().validate(raw, M::NAME)?;
    serde_json::from_value(Value::Object(valid)).map_err(|e| e.to_string())
}

/// The property every module's `tests/arguments.rs` states: 300 arbitrary argument objects
/// ([`arguments`]) through `M`'s validation, and `check` (the module's own checks that need no
/// system) with each that passes; each is refused or accepted, never a panic. A panic fails the
/// calling test with the (shrunk) input.
pub fn arguments_never_panic<M: crate::Module>(check: impl Fn(M::Args)) {
    use proptest::test_runner::{Config, TestRunner};
    // Modest: the whole property run stays well under a second.
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&arguments(&M::spec()), |raw| {
        if let Ok(args) = validated::<M>(&raw) {
            check(args);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{}: {e}", M::NAME);
    }
}
