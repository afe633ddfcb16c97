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
    let mut child = Command::new(binary)
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
