//! The Ansible binary-module protocol, shared by every module of the `veza.pgbackrest`
//! collection.
//!
//! A module is a type implementing [`Module`]; its `main` is one line,
//! `ansible_module::run::<M>()`.
//! This crate owns everything between Ansible and the module's logic: it reads the arguments file
//! named by argv[1] (or the same JSON on stdin when there is no argv[1], for systemd timers and
//! scripts), splits off the `_ansible_*` internals into a [`Context`], validates and coerces the
//! options against the module's [`Spec`] before any side effect, and prints exactly one JSON result
//! with every `no_log` value scrubbed, even when the module panics.
//!
//! It also carries the helpers every module needs: [`process::Cmd`] to run programs (optionally as
//! another user, secrets by environment only) and [`fs`] for atomic file writes.

mod error;
pub mod fs;
pub mod options;
pub mod process;
mod secret;
pub mod spec;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;

pub use error::Error;
pub use secret::Secret;
#[doc(hidden)]
pub use serde as __serde;
pub use spec::{Elem, Kind, Opt, Spec};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::io::{Read as _, Write as _};
use std::sync::Mutex;

/// What Ansible shows in place of a `no_log` option in `invocation.module_args`.
pub const NO_LOG_PLACEHOLDER: &str = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER";
/// What replaces a secret wherever else it occurs in the output.
pub const MASK: &str = "********";

/// One module of the collection.
pub trait Module {
    /// The options, as a struct mirroring the module's YAML docs, declared with
    /// [`options!`](crate::options!): it is filled from the validated options (every option
    /// present, `null` where neither given nor defaulted).
    type Args: DeserializeOwned + options::OptionGroup;
    /// The module's name, as in `veza.pgbackrest.<NAME>`.
    const NAME: &'static str;
    /// The argument specification: the options' specs, plus any constraint between them.
    fn spec() -> Spec {
        Spec::new(<Self::Args as options::OptionGroup>::options())
    }
    /// Do the work. Errors become `failed: true` with `msg` = the error chain.
    fn execute(args: Self::Args, ctx: &mut Context) -> anyhow::Result<Response>;
}

/// What the `_ansible_*` internals say about this run, and what the module collects on the way.
#[derive(Debug, Default)]
pub struct Context {
    /// `--check`: change nothing, predict.
    pub check_mode: bool,
    /// `--diff`: return a diff.
    pub diff: bool,
    /// The task has `no_log: true`.
    pub no_log: bool,
    /// `-v` count.
    pub verbosity: u64,
    /// The module name Ansible used (may be the FQCN).
    pub module_name: String,
    /// Ansible's remote temporary directory for this task, when given.
    pub tmpdir: Option<String>,
    /// The controller's ansible-core version, when given.
    pub ansible_version: Option<String>,
    /// Arguments came on stdin (run as a program, not by Ansible).
    pub from_stdin: bool,
    warnings: Vec<String>,
}

impl Context {
    /// Add a warning to the result.
    pub fn warn(&mut self, warning: impl Into<String>) {
        self.warnings.push(warning.into());
    }
    /// Warnings so far.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
    /// Register a value found at run time (from a file, a command) that must never be shown.
    pub fn add_secret(&mut self, value: &str) {
        register_secret(value);
    }
}

/// A module's result.
#[derive(Debug, Default)]
pub struct Response {
    changed: bool,
    failed: bool,
    msg: Option<String>,
    diff: Option<Value>,
    facts: Map<String, Value>,
    fields: Map<String, Value>,
    exit_code: Option<i32>,
}

impl Response {
    /// An unchanged, successful result.
    pub fn new() -> Self {
        Self::default()
    }
    /// A failed result with a message (for failures that still return fields).
    pub fn failed(msg: impl Into<String>) -> Self {
        Response {
            failed: true,
            msg: Some(msg.into()),
            ..Self::default()
        }
    }
    /// Turn a result into a failure, keeping its fields.
    pub fn fail(mut self, msg: impl Into<String>) -> Self {
        self.failed = true;
        self.msg = Some(msg.into());
        self
    }
    /// Set `changed`.
    pub fn changed(mut self, changed: bool) -> Self {
        self.changed = changed;
        self
    }
    /// Set `msg`.
    pub fn msg(mut self, msg: impl Into<String>) -> Self {
        self.msg = Some(msg.into());
        self
    }
    /// Set the diff (shown only when Ansible asked for one).
    pub fn diff(mut self, diff: Diff) -> Self {
        self.diff = Some(serde_json::to_value(diff).unwrap_or(Value::Null));
        self
    }
    /// Set several diffs, one per file (Ansible shows each; shown only when asked for).
    pub fn diffs(mut self, diffs: Vec<Diff>) -> Self {
        self.diff = Some(serde_json::to_value(diffs).unwrap_or(Value::Null));
        self
    }
    /// Add a module-specific field.
    pub fn field(mut self, key: &str, value: impl Serialize) -> Self {
        self.fields.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
    /// Add an `ansible_facts` entry.
    pub fn fact(mut self, key: &str, value: impl Serialize) -> Self {
        self.facts.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
        self
    }
    /// The process exit code when the result is a failure (default 1).
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }
}

/// Ansible's diff: before/after text or data, with headers.
#[derive(Debug, Default, Serialize)]
pub struct Diff {
    /// The state before.
    pub before: Value,
    /// The state after.
    pub after: Value,
    /// Label of the before side (for example the path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before_header: Option<String>,
    /// Label of the after side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after_header: Option<String>,
}

/// Every secret of this process: no_log option values and values registered at run time.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Register a value that must never be shown (as [`Context::add_secret`], for code without a
/// context at hand): it is scrubbed from the result and from [`scrub_str`]'s output.
pub fn register_secret(value: &str) {
    if value.is_empty() {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == value) {
        // Longest first, so a secret that contains another is masked whole.
        let at = secrets
            .iter()
            .position(|s| s.len() < value.len())
            .unwrap_or(secrets.len());
        secrets.insert(at, value.to_owned());
    }
}

/// Sort a short list in place, stably, by `less`: an insertion sort. Every type and order given
/// to std's `sort` instantiates kilobytes of code in each module binary, for lists (option names,
/// files, nodes) that hold a few dozen items at most.
pub fn sort_small<T>(items: &mut [T], less: impl Fn(&T, &T) -> bool) {
    for i in 1..items.len() {
        let mut j = i;
        while j > 0 && less(&items[j], &items[j - 1]) {
            items.swap(j, j - 1);
            j -= 1;
        }
    }
}

/// Replace every occurrence of every registered secret in `text` by [`MASK`].
pub fn scrub_str(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_owned();
    for secret in secrets.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

fn scrub(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(scrub_str(&s)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (scrub_str(&k), scrub(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Collect the leaves of a no_log value (a dict of secrets, a list of them, a number).
fn register_value(value: &Value) {
    match value {
        Value::String(s) => register_secret(s),
        Value::Number(n) => register_secret(&n.to_string()),
        Value::Array(items) => items.iter().for_each(register_value),
        Value::Object(map) => map.values().for_each(register_value),
        Value::Null | Value::Bool(_) => {}
    }
}

/// Print the result and end the process. The only place in the workspace that writes stdout.
#[allow(clippy::print_stdout, clippy::exit)]
fn emit(result: Value, code: i32) -> ! {
    let text = serde_json::to_string(&scrub(result)).unwrap_or_else(|_| {
        r#"{"failed": true, "msg": "result could not be serialized"}"#.to_owned()
    });
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
    let _ = stdout.flush();
    std::process::exit(code)
}

fn fail_early(msg: impl Into<String>) -> ! {
    let mut out = Map::new();
    out.insert("failed".into(), Value::Bool(true));
    out.insert("msg".into(), Value::String(msg.into()));
    emit(Value::Object(out), 1)
}

/// A panic is still a JSON failure on stdout, with the secrets scrubbed.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        fail_early(format!("module panicked{place}: {what}"));
    }));
}

/// Read the arguments: the file named by argv[1], or stdin when there is none.
fn read_input() -> Result<(Map<String, Value>, bool), String> {
    let (text, from_stdin) = match std::env::args_os().nth(1) {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!("reading the arguments file {}: {e}", path.to_string_lossy())
            })?;
            (text, false)
        }
        None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("reading arguments from stdin: {e}"))?;
            (text, true)
        }
    };
    if text.trim().is_empty() && from_stdin {
        return Ok((Map::new(), true));
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok((map, from_stdin)),
        Ok(_) => Err("the module arguments must be a JSON object".to_owned()),
        Err(e) => Err(format!("the module arguments are not valid JSON: {e}")),
    }
}

/// Split off the `_ansible_*` internals. A flag that is no boolean (`_ansible_check_mode:
/// "perhaps"`) is refused: read as false it would turn a check into a real run.
fn split_internals(
    raw: Map<String, Value>,
    default_name: &str,
) -> Result<(Map<String, Value>, Context), String> {
    let mut ctx = Context {
        module_name: default_name.to_owned(),
        ..Context::default()
    };
    let mut args = Map::new();
    for (key, value) in raw {
        let Some(internal) = key.strip_prefix("_ansible_") else {
            args.insert(key, value);
            continue;
        };
        let truthy = || match spec::coerce(Kind::Bool, &value) {
            Ok(Value::Bool(b)) => Ok(b),
            _ => Err(format!(
                "{key}: {} is not a boolean",
                serde_json::to_string(&value).unwrap_or_default()
            )),
        };
        match internal {
            "check_mode" => ctx.check_mode = truthy()?,
            "diff" => ctx.diff = truthy()?,
            "no_log" => ctx.no_log = truthy()?,
            "verbosity" => ctx.verbosity = value.as_u64().unwrap_or_default(),
            "module_name" => ctx.module_name = value.as_str().unwrap_or(default_name).to_owned(),
            "tmpdir" => ctx.tmpdir = value.as_str().map(str::to_owned),
            "version" => ctx.ansible_version = value.as_str().map(str::to_owned),
            // Other internals (debug, selinux, syslog facility, ...) do not concern these modules.
            _ => {}
        }
    }
    Ok((args, ctx))
}

/// Everything between Ansible and the module, in order; never returns.
pub fn run<M: Module>() -> ! {
    install_panic_hook();
    let (raw, from_stdin) = read_input().unwrap_or_else(|e| fail_early(e));
    let (args, mut ctx) = split_internals(raw, M::NAME).unwrap_or_else(|e| fail_early(e));
    ctx.from_stdin = from_stdin;
    let spec = M::spec();

    // Secrets are known before validation so that even an error message cannot leak them.
    for opt in spec.options.iter().filter(|o| o.no_log) {
        if let Some(v) = args
            .get(opt.name)
            .or_else(|| opt.aliases.iter().find_map(|a| args.get(*a)))
        {
            register_value(v);
        }
    }
    let validated = spec
        .validate(&args, M::NAME)
        .unwrap_or_else(|e| fail_early(e));
    let invocation = invocation(&spec, &validated);

    if ctx.check_mode && !spec.supports_check_mode {
        let mut out = Map::new();
        out.insert("skipped".into(), Value::Bool(true));
        out.insert("changed".into(), Value::Bool(false));
        out.insert(
            "msg".into(),
            Value::String("remote module does not support check mode".into()),
        );
        emit(Value::Object(out), 0);
    }

    let typed: M::Args = serde_json::from_value(Value::Object(validated)).unwrap_or_else(|e| {
        fail_early(format!(
            "internal error: the validated arguments do not fit the module's argument struct: {e}"
        ))
    });

    let response = match M::execute(typed, &mut ctx) {
        Ok(r) => r,
        Err(e) => Response::failed(format!("{e:#}")),
    };
    let code = if response.failed {
        response.exit_code.unwrap_or(1)
    } else {
        0
    };
    emit(render(response, ctx, invocation), code)
}

/// `invocation.module_args`: the validated options, no_log ones replaced.
fn invocation(spec: &Spec, validated: &Map<String, Value>) -> Value {
    let mut args = validated.clone();
    for name in spec.no_log_names() {
        if let Some(v) = args.get_mut(name) {
            if !v.is_null() {
                *v = Value::String(NO_LOG_PLACEHOLDER.into());
            }
        }
    }
    let mut inv = Map::new();
    inv.insert("module_args".into(), Value::Object(args));
    Value::Object(inv)
}

fn render(response: Response, ctx: Context, invocation: Value) -> Value {
    let mut out = response.fields;
    out.insert("changed".into(), Value::Bool(response.changed));
    if response.failed {
        out.insert("failed".into(), Value::Bool(true));
    }
    if let Some(msg) = response.msg {
        out.insert("msg".into(), Value::String(msg));
    }
    if ctx.diff {
        if let Some(diff) = response.diff {
            out.insert("diff".into(), diff);
        }
    }
    if !response.facts.is_empty() {
        out.insert("ansible_facts".into(), Value::Object(response.facts));
    }
    if !ctx.warnings.is_empty() {
        out.insert("warnings".into(), Value::from(ctx.warnings));
    }
    out.insert("invocation".into(), invocation);
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn internals_are_split_from_options() {
        let raw = json!({
            "stanza": "main",
            "_ansible_check_mode": true,
            "_ansible_diff": "yes",
            "_ansible_verbosity": 3,
            "_ansible_module_name": "veza.pgbackrest.x",
            "_ansible_tmpdir": "/tmp/a",
            "_ansible_selinux_special_fs": []
        });
        let (args, ctx) = split_internals(raw.as_object().unwrap().clone(), "x").unwrap();
        assert_eq!(Value::Object(args), json!({"stanza": "main"}));
        assert!(ctx.check_mode && ctx.diff && !ctx.no_log);
        assert_eq!(ctx.verbosity, 3);
        assert_eq!(ctx.module_name, "veza.pgbackrest.x");
        assert_eq!(ctx.tmpdir.as_deref(), Some("/tmp/a"));
        let bad = json!({"_ansible_check_mode": "perhaps"});
        assert_eq!(
            split_internals(bad.as_object().unwrap().clone(), "x").unwrap_err(),
            "_ansible_check_mode: \"perhaps\" is not a boolean"
        );
    }

    #[test]
    fn no_log_values_are_masked_in_every_field() {
        let spec = Spec::new(vec![
            Opt::str("login_password").no_log(),
            Opt::str("login_user"),
        ]);
        let validated = spec
            .validate(
                json!({"login_password": "canary-9f2c", "login_user": "bob"})
                    .as_object()
                    .unwrap(),
                "m",
            )
            .unwrap();
        register_value(&validated["login_password"]);
        let inv = invocation(&spec, &validated);
        let ctx = Context {
            diff: true,
            warnings: vec!["saw canary-9f2c in a log".into()],
            ..Context::default()
        };
        let response = Response::failed("connect failed for password=canary-9f2c")
            .field("stdout", "canary-9f2c\nmore")
            .field("nested", json!({"canary-9f2c": ["x canary-9f2c y"]}))
            .fact("pg_secret", "canary-9f2c")
            .diff(Diff {
                before: json!("a: canary-9f2c"),
                after: json!("b"),
                ..Diff::default()
            });
        let out = scrub(render(response, ctx, inv));
        let text = out.to_string();
        assert!(!text.contains("canary-9f2c"), "{text}");
        assert_eq!(
            out["invocation"]["module_args"]["login_password"],
            json!(NO_LOG_PLACEHOLDER)
        );
        assert_eq!(out["invocation"]["module_args"]["login_user"], json!("bob"));
        assert_eq!(out["msg"], json!("connect failed for password=********"));
        assert_eq!(out["warnings"][0], json!("saw ******** in a log"));
        assert_eq!(out["diff"]["before"], json!("a: ********"));
        assert_eq!(out["nested"], json!({"********": ["x ******** y"]}));
    }

    #[test]
    fn diff_is_returned_only_when_asked() {
        let response = || {
            Response::new().diff(Diff {
                before: json!("a"),
                after: json!("b"),
                ..Diff::default()
            })
        };
        let without = render(response(), Context::default(), json!({}));
        assert!(without.get("diff").is_none());
        let with = render(
            response(),
            Context {
                diff: true,
                ..Context::default()
            },
            json!({}),
        );
        assert_eq!(with["diff"]["after"], json!("b"));
    }

    #[test]
    fn sort_small_sorts_stably() {
        let mut items = vec![(2, 'a'), (1, 'b'), (2, 'c'), (0, 'd'), (1, 'e')];
        sort_small(&mut items, |a, b| a.0 < b.0);
        assert_eq!(items, [(0, 'd'), (1, 'b'), (1, 'e'), (2, 'a'), (2, 'c')]);
    }

    #[test]
    fn longer_secret_is_masked_whole() {
        register_secret("abc");
        register_secret("abcdef-long");
        assert_eq!(scrub_str("x abcdef-long y abc"), "x ******** y ********");
    }
}
