//! Everything checked before a byte is written.
//!
//! Each problem is reported with where it is (`stanzas.main.pg1-path`) and never with a secret's
//! value; all problems are reported at once so an operator fixes them in one round.

use crate::render::Section;
use crate::Args;
use ansible_module::Context;
use pgbackrest::options::{self, lookup_at, Availability, Scope, PGBACKREST_VERSION};
use pgbackrest::releases::Version;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Where the release a configuration is checked for came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `pgbackrest_version`.
    Option,
    /// `pgbackrest version` on the target.
    Target,
    /// pgBackRest is not installed on the target: the table's base release.
    Default,
}

impl Source {
    /// Its name in the result (`pgbackrest_version_source`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Option => "option",
            Source::Target => "target",
            Source::Default => "default",
        }
    }
}

/// The pgBackRest release a configuration is checked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Its number.
    pub version: Version,
    /// Where it came from.
    pub source: Source,
}

impl Release {
    /// A release from a source.
    pub fn new(version: Version, source: Source) -> Release {
        Release { version, source }
    }

    /// What the refusals say about it: `the target has 2.45`.
    fn said(&self) -> String {
        match self.source {
            Source::Option => format!("pgbackrest_version is {}", self.version),
            Source::Target => format!("the target has {}", self.version),
            Source::Default => format!(
                "pgBackRest is not installed on the target, so {} is assumed; \
                 set pgbackrest_version",
                self.version
            ),
        }
    }
}

/// Values that are placeholders or published examples, never real secrets (compared lowercased).
const PLACEHOLDERS: &[&str] = &[
    "xxx",
    "secret",
    "password",
    "pass",
    "changeme",
    "change-me",
    "change_me",
    "replaceme",
    "replace-me",
    "replace_me",
    "todo",
    "fixme",
    "tbd",
    "placeholder",
    "example",
    "dummy",
    "test",
    "default",
    "none",
    "null",
    "admin",
    // Published defaults and documentation examples (pgBackRest user guide, MinIO).
    "pgbackrest",
    "acbd",
    "accesskey1",
    "verysecretkey1",
    "minioadmin",
    "zwaf6xtpjivzc5444yxb+cgfdfl7mxglgkzsaopvtgirhpygu4jokoxf9lo4vjfo",
];
/// Words that mark a placeholder anywhere in a value.
const PLACEHOLDER_MARKS: &[&str] = &[
    "changeme",
    "change_me",
    "change-me",
    "replace_me",
    "replace-me",
    "replaceme",
    "todo",
    "fixme",
    "placeholder",
    "{{",
    "}}",
];

/// Every section body of the arguments, with where it came from.
fn bodies(args: &Args) -> Vec<(String, &Value)> {
    let mut all: Vec<(String, &Value)> = args
        .global
        .iter()
        .map(|(k, v)| (format!("global.{k}"), v))
        .collect();
    for (group, map) in [
        ("stanzas", &args.stanzas),
        ("command_sections", &args.command_sections),
    ] {
        for (section, body) in map {
            if let Value::Object(body) = body {
                all.extend(
                    body.iter()
                        .map(|(k, v)| (format!("{group}.{section}.{k}"), v)),
                );
            }
        }
    }
    all
}

/// Whether the file will hold a secret (a value under a secret's name, or a near miss of one).
pub fn has_secrets(args: &Args) -> bool {
    bodies(args).iter().any(|(place, value)| {
        let key = place.rsplit('.').next().unwrap_or_default();
        options::is_secret_or_near(key) && !value.is_null()
    })
}

/// `vars` reach an operator's template as they are: a value with a newline or another control
/// character could add lines or `[sections]` that no validation saw. The error names the key.
pub fn check_vars(args: &Args) -> Result<(), String> {
    fn walk(place: &str, value: &Value) -> Result<(), String> {
        match value {
            Value::String(s) if s.chars().any(char::is_control) => Err(format!(
                "{place}: holds a control character (a newline could inject lines or sections \
                 into the template)"
            )),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, v)| walk(&format!("{place}[{i}]"), v)),
            Value::Object(map) => map
                .iter()
                .try_for_each(|(k, v)| walk(&format!("{place}.{k}"), v)),
            _ => Ok(()),
        }
    }
    args.vars
        .iter()
        .try_for_each(|(k, v)| walk(&format!("vars.{k}"), v))
}

/// Tell the scrubber every secret value, before any message can be produced.
pub fn register_secrets(args: &Args, ctx: &mut Context) {
    for (place, value) in bodies(args) {
        let key = place.rsplit('.').next().unwrap_or_default();
        // A near miss of a secret's name (`repo1-cipher-pas`) holds a secret all the same.
        if options::is_secret_or_near(key) {
            for v in scalars(value) {
                ctx.add_secret(&v);
            }
        }
    }
}

fn scalars(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Array(items) => items.iter().flat_map(scalars).collect(),
        Value::Object(map) => map.values().flat_map(scalars).collect(),
        Value::Bool(_) | Value::Null => Vec::new(),
    }
}

/// Where a section sits, which decides what may go in it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Global,
    Stanza,
}

/// A stanza name pgBackRest accepts, that cannot break out of a `[section]` header and is not
/// `global` (the pgBackRest crate's one rule).
fn valid_stanza(name: &str) -> bool {
    pgbackrest::stanza::StanzaName::parse(name).is_ok()
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A value that cannot inject a line or a section.
fn check_text(place: &str, text: &str, secret: bool) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        let shown = if secret {
            "a secret".to_owned()
        } else {
            format!("'{}'", text.escape_default())
        };
        return Err(format!(
            "{place}: {shown} contains the control character {:?}; values must be one line",
            c
        ));
    }
    Ok(())
}

/// One value as pgBackRest reads it (`y`/`n` for booleans).
fn scalar(
    place: &str,
    key: &str,
    value: &Value,
    boolean: bool,
    secret: bool,
) -> Result<String, String> {
    let text = match value {
        Value::Bool(b) => return Ok(if *b { "y" } else { "n" }.to_owned()),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(format!(
                "{place}: a list or mapping is not a valid value for {key}"
            ))
        }
    };
    check_text(place, &text, secret)?;
    if text.trim().is_empty() {
        return Err(format!("{place}: the value is empty"));
    }
    if boolean {
        return match text.to_ascii_lowercase().as_str() {
            "y" | "yes" | "true" | "on" | "1" => Ok("y".to_owned()),
            "n" | "no" | "false" | "off" | "0" => Ok("n".to_owned()),
            _ => Err(format!(
                "{place}: {key} is a boolean (y or n), got '{text}'"
            )),
        };
    }
    Ok(text)
}

/// The rendered values of one option (several for a repeatable one).
fn values(
    place: &str,
    key: &str,
    value: &Value,
    repeatable: bool,
    boolean: bool,
    secret: bool,
) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) if repeatable => items
            .iter()
            .map(|v| scalar(place, key, v, boolean, secret))
            .collect(),
        Value::Object(map) if repeatable => map
            .iter()
            .map(|(k, v)| {
                if k.is_empty() || k.contains('=') || k.chars().any(char::is_control) {
                    return Err(format!(
                        "{place}: the key '{}' of {key} must be non-empty, \
                         without '=' or control characters",
                        k.escape_default()
                    ));
                }
                Ok(format!("{k}={}", scalar(place, key, v, false, secret)?))
            })
            .collect(),
        Value::Array(_) | Value::Object(_) => Err(format!(
            "{place}: {key} takes a single value; only repeatable options \
             (such as recovery-option, exclude, db-include) take a list"
        )),
        other => Ok(vec![scalar(place, key, other, boolean, secret)?]),
    }
}

/// Placeholder, empty or short secrets: refused until the real ones are there.
fn weak_secret(key: &str, value: &str, min_pass: usize) -> Option<String> {
    let lower = value.trim().to_ascii_lowercase();
    if PLACEHOLDERS.contains(&lower.as_str()) || PLACEHOLDER_MARKS.iter().any(|m| lower.contains(m))
    {
        return Some("is a placeholder or a published example value".to_owned());
    }
    let mut chars = lower.chars();
    if let Some(first) = chars.next() {
        if chars.all(|c| c == first) {
            return Some("repeats a single character".to_owned());
        }
    }
    if key.ends_with("-cipher-pass") && value.chars().count() < min_pass {
        return Some(format!(
            "is {} characters long, shorter than min_cipher_pass_length ({min_pass})",
            value.chars().count()
        ));
    }
    None
}

/// What the sections are checked for, and what the checks found.
struct Checker<'a> {
    release: &'a Release,
    min_pass: usize,
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn section(name: &str, kind: Kind, place: &str, body: &Value, check: &mut Checker<'_>) -> Section {
    let (min_pass, release) = (check.min_pass, check.release);
    let version = release.version;
    let (errors, warnings) = (&mut check.errors, &mut check.warnings);
    let mut out = Section {
        name: name.to_owned(),
        entries: Vec::new(),
    };
    let Value::Object(body) = body else {
        errors.push(format!(
            "{place}: must be a mapping of pgBackRest options to values"
        ));
        return out;
    };
    for (key, value) in body {
        let at = format!("{place}.{key}");
        if value.is_null() {
            continue; // null leaves an option out (handy with conditional values)
        }
        if !valid_key(key) || key.len() > options::MAX_NAME {
            let shown: String = key.chars().take(options::MAX_NAME).collect();
            let more = if shown.len() < key.len() { "..." } else { "" };
            errors.push(format!(
                "{place}: '{}{more}' is not a pgBackRest option name \
                 (lowercase letters, digits and '-'; at most {} characters)",
                shown.escape_default(),
                options::MAX_NAME
            ));
            continue;
        }
        let info = match lookup_at(key, version) {
            Availability::Known(info) => info,
            Availability::Internal(info, since) => {
                warnings.push(format!(
                    "{at}: option '{key}' is internal from pgBackRest {since} on \
                     (no longer documented; pgBackRest still reads it)"
                ));
                info
            }
            Availability::Later(since) => {
                errors.push(format!(
                    "{at}: option '{key}' in [{name}] needs pgBackRest {since} or later ({})",
                    release.said()
                ));
                continue;
            }
            Availability::Removed(since) => {
                errors.push(format!(
                    "{at}: option '{key}' in [{name}] was removed in pgBackRest {since} ({})",
                    release.said()
                ));
                continue;
            }
            Availability::Unknown => {
                let hint = options::suggest(key)
                    .map(|s| format!("; did you mean '{s}'?"))
                    .unwrap_or_default();
                errors.push(format!(
                    "{at}: unknown option '{key}' for pgBackRest {version}{hint}"
                ));
                continue;
            }
        };
        match (info.scope, kind) {
            (Scope::CommandLine, _) => {
                errors.push(format!(
                    "{at}: '{key}' is a command-line only option; \
                     pgBackRest ignores it in a configuration file"
                ));
                continue;
            }
            (Scope::Stanza, Kind::Global) => {
                errors.push(format!(
                    "{at}: '{key}' is a stanza option; \
                     it belongs in a stanza section, not in [{name}]"
                ));
                continue;
            }
            _ => {}
        }
        let secret = info.secret || options::looks_secret(key);
        let boolean = info.kind == options::ValueType::Bool;
        match values(&at, key, value, info.repeatable, boolean, secret) {
            Ok(rendered) => {
                for v in rendered.iter().filter(|_| !info.repeatable && !boolean) {
                    if let Err(expected) = info.check_value(v) {
                        let shown = if secret {
                            "a secret".to_owned()
                        } else {
                            format!("'{}'", v.escape_default())
                        };
                        errors.push(format!(
                            "{at}: {shown} is not a valid value of {key} in [{name}] \
                             for pgBackRest {version}: expected {expected}"
                        ));
                    }
                }
                if secret {
                    for v in &rendered {
                        if let Some(why) = weak_secret(key, v, min_pass) {
                            errors.push(format!(
                                "{at} {why}; refusing to apply until the real secret is set \
                                 (keep it in a vault)"
                            ));
                        }
                    }
                }
                out.entries.push((key.clone(), rendered));
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

/// Validate and arrange the sections for `release`: `[global]`, `[global:cmd]`..., then each
/// stanza followed by its `[stanza:cmd]` sections. Errors are all collected.
pub fn sections(
    args: &Args,
    release: &Release,
    ctx: &mut Context,
) -> Result<Vec<Section>, Vec<String>> {
    let mut check = Checker {
        release,
        min_pass: usize::try_from(args.min_cipher_pass_length).unwrap_or(0),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let mut out = vec![section(
        "global",
        Kind::Global,
        "global",
        &Value::Object(args.global.clone()),
        &mut check,
    )];

    let mut command_sections: Vec<(String, String, &Value)> = Vec::new();
    for (header, body) in &args.command_sections {
        let place = format!("command_sections.{header}");
        match header.split_once(':') {
            Some((owner, command))
                if (owner == "global" || valid_stanza(owner))
                    && options::commands().any(|c| c == command) =>
            {
                command_sections.push((owner.to_owned(), header.clone(), body));
            }
            _ => check.errors.push(format!(
                "{place}: a command section is named GLOBAL_OR_STANZA:COMMAND \
                 with a pgBackRest command ({})",
                options::commands().collect::<Vec<_>>().join(", ")
            )),
        }
    }
    for (_, header, body) in command_sections
        .iter()
        .filter(|(owner, ..)| owner == "global")
    {
        out.push(section(
            header,
            Kind::Global,
            &format!("command_sections.{header}"),
            body,
            &mut check,
        ));
    }
    let mut stanza_names: Vec<&String> = args.stanzas.keys().collect();
    for (owner, ..) in &command_sections {
        if owner != "global" && !args.stanzas.contains_key(owner) && !stanza_names.contains(&owner)
        {
            stanza_names.push(owner);
        }
    }
    for stanza in stanza_names {
        if stanza == "global" {
            check.errors.push(
                "stanzas: 'global' is not a stanza: pgBackRest reserves [global] for the options \
                 of every stanza (put them under global)"
                    .to_owned(),
            );
            continue;
        }
        if !valid_stanza(stanza) {
            check.errors.push(format!(
                "stanzas: '{}' is not a valid stanza name \
                 (letters, digits, '-', '_', '.'; no brackets or ':')",
                stanza.escape_default()
            ));
            continue;
        }
        if let Some(body) = args.stanzas.get(stanza) {
            out.push(section(
                stanza,
                Kind::Stanza,
                &format!("stanzas.{stanza}"),
                body,
                &mut check,
            ));
        }
        for (_, header, body) in command_sections
            .iter()
            .filter(|(owner, ..)| owner == stanza)
        {
            out.push(section(
                header,
                Kind::Stanza,
                &format!("command_sections.{header}"),
                body,
                &mut check,
            ));
        }
    }
    let Checker {
        mut errors,
        warnings,
        ..
    } = check;
    for warning in warnings {
        ctx.warn(warning);
    }
    check_repositories(&out, ctx, &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// The settings a stanza sees: `[global]` overridden by its own section.
fn views(sections: &[Section]) -> Vec<(String, Map<String, Value>)> {
    let flat = |s: &Section| -> Map<String, Value> {
        s.entries
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.join(","))))
            .collect()
    };
    let global = sections.first().map(flat).unwrap_or_default();
    let stanzas: Vec<(String, Map<String, Value>)> = sections
        .iter()
        .skip(1)
        .filter(|s| !s.name.contains(':'))
        .map(|s| {
            let mut view = global.clone();
            view.extend(flat(s));
            (format!("[global] + [{}]", s.name), view)
        })
        .collect();
    if stanzas.is_empty() {
        vec![("[global]".to_owned(), global)]
    } else {
        stanzas
    }
}

/// Repository settings that only make sense together.
fn check_repositories(sections: &[Section], ctx: &mut Context, errors: &mut Vec<String>) {
    let mut warned = BTreeSet::new();
    for (scope, view) in views(sections) {
        let get = |k: &str| view.get(k).and_then(Value::as_str).map(str::to_owned);
        check_compress_level(&scope, &view, errors);
        // Inserted one by one: collecting into a BTreeSet sorts a Vec first, which brings a
        // std sort instantiation (about 4 KB) into the binary.
        let mut repos = BTreeSet::new();
        for n in view
            .keys()
            .filter_map(|k| k.strip_prefix("repo")?.split_once('-').map(|(n, _)| n))
        {
            repos.insert(n.to_owned());
        }
        for n in repos {
            let r = |suffix: &str| format!("repo{n}-{suffix}");
            if get(&r("type")).as_deref() == Some("s3") {
                let key_type = get(&r("s3-key-type")).unwrap_or_else(|| "shared".to_owned());
                let mut needed = vec!["s3-bucket", "s3-endpoint", "s3-region"];
                if key_type == "shared" {
                    needed.extend(["s3-key", "s3-key-secret"]);
                }
                for missing in needed.into_iter().filter(|s| get(&r(s)).is_none()) {
                    errors.push(format!("{scope}: {}=s3 needs {}", r("type"), r(missing)));
                }
                let endpoint = get(&r("s3-endpoint")).unwrap_or_default();
                if !endpoint.is_empty()
                    && !endpoint.ends_with("amazonaws.com")
                    && get(&r("s3-uri-style")).as_deref() != Some("path")
                    && warned.insert(r("s3-uri-style"))
                {
                    ctx.warn(format!(
                        "{scope}: {} is not AWS ({endpoint}); \
                         MinIO and most S3-compatible stores need {}=path",
                        r("s3-endpoint"),
                        r("s3-uri-style")
                    ));
                }
            }
            let cipher = get(&r("cipher-type"));
            if cipher.as_deref().is_some_and(|c| c != "none") && get(&r("cipher-pass")).is_none() {
                errors.push(format!(
                    "{scope}: {}={} needs {}",
                    r("cipher-type"),
                    cipher.as_deref().unwrap_or_default(),
                    r("cipher-pass")
                ));
            }
            if get(&r("cipher-pass")).is_some()
                && cipher.is_none()
                && warned.insert(r("cipher-pass"))
            {
                ctx.warn(format!(
                    "{scope}: {} is set but {} is not: the repository will not be encrypted",
                    r("cipher-pass"),
                    r("cipher-type")
                ));
            }
            if get(&r("block")).as_deref() == Some("y") && get(&r("bundle")).as_deref() != Some("y")
            {
                errors.push(format!("{scope}: {}=y needs {}=y", r("block"), r("bundle")));
            }
        }
    }
}

/// pgBackRest checks `compress-level` against the range of the `compress-type` in effect (gz
/// by default) only when a command runs: checked here, before the file is written.
fn check_compress_level(scope: &str, view: &Map<String, Value>, errors: &mut Vec<String>) {
    let Some(level) = view.get("compress-level").and_then(Value::as_str) else {
        return;
    };
    let kind = view
        .get("compress-type")
        .and_then(Value::as_str)
        .unwrap_or(options::DEFAULT_COMPRESS_TYPE);
    let (Ok(n), Some((lo, hi))) = (level.parse::<i64>(), options::compress_levels(kind)) else {
        return;
    };
    if n < lo || n > hi {
        errors.push(format!(
            "{scope}: compress-level '{level}' is out of range for compress-type={kind} \
             (pgBackRest {PGBACKREST_VERSION} takes {lo}..{hi})"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        let mut base = json!({
            "path": "/x",
            "global": {},
            "stanzas": {},
            "command_sections": {},
            "owner": "root",
            "group": "root",
            "mode": "0640",
            "state": "present",
            "backup": false,
            "template": null,
            "vars": {},
            "min_cipher_pass_length": 20,
            "pgbackrest_version": null,
            "pgbackrest_path": "pgbackrest"
        });
        for (k, val) in v.as_object().unwrap() {
            base[k] = val.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    fn check(v: Value) -> Result<Vec<Section>, Vec<String>> {
        check_at(v, "2.45")
    }

    fn check_at(v: Value, version: &str) -> Result<Vec<Section>, Vec<String>> {
        let release = Release::new(Version::parse(version).unwrap(), Source::Target);
        sections(&args(v), &release, &mut Context::default())
    }

    const PASS: &str = "Xq7-very-long-and-random-passphrase-9";

    #[test]
    fn a_valid_s3_configuration_passes_and_renders_booleans_as_y_n() {
        let s = check(json!({
            "global": {
                "repo1-type": "s3",
                "repo1-s3-bucket": "b",
                "repo1-s3-endpoint": "minio.lan",
                "repo1-s3-region": "r",
                "repo1-s3-uri-style": "path",
                "repo1-s3-key": "AKIA4REALKEY",
                "repo1-s3-key-secret": "s3cr3t-Real-Value-91",
                "repo1-cipher-type": "aes-256-cbc",
                "repo1-cipher-pass": PASS,
                "repo1-bundle": true,
                "repo1-block": "yes",
                "compress-type": "zst",
                "repo1-retention-full": 4
            },
            "stanzas": {"main": {
                "pg1-path": "/var/lib/postgresql/15/main",
                "recovery-option": {"primary_conninfo": "host=x"}
            }}
        }))
        .unwrap();
        let global = &s[0].entries;
        assert!(
            global.contains(&("repo1-bundle".into(), vec!["y".into()]))
                && global.contains(&("repo1-block".into(), vec!["y".into()]))
        );
        assert!(global.contains(&("repo1-retention-full".into(), vec!["4".into()])));
        assert_eq!(
            s[1].entries[1],
            (
                "recovery-option".into(),
                vec!["primary_conninfo=host=x".into()]
            )
        );
    }

    #[test]
    fn unknown_misplaced_and_command_line_options_are_refused() {
        let errors = check(json!({
            "global": {"repo1-retention-ful": 2, "pg1-path": "/x", "type": "full"},
            "stanzas": {"main": {"stanza": "x"}}
        }))
        .unwrap_err();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(
            errors[0].contains(
                "global.repo1-retention-ful: unknown option 'repo1-retention-ful' for pgBackRest \
                 2.45; did you mean 'repo1-retention-full'?"
            ),
            "{errors:?}"
        );
        assert!(errors[1].contains(
            "'pg1-path' is a stanza option; it belongs in a stanza section, not in [global]"
        ));
        assert!(errors[2].contains("global.type: 'type' is a command-line only option"));
        assert!(errors[3].contains("stanzas.main.stanza"));
    }

    #[test]
    fn injection_attempts_are_refused() {
        let errors = check(json!({
            "global": {"repo1-path": "/x\n[evil]\nrepo1-host=attacker", "log-path=x": "y"},
            "stanzas": {
                "main]\n[evil": {"pg1-path": "/x"},
                "ok": {"recovery-option": {"a=b": "c"}}
            },
            "command_sections": {"global:no-such-command": {}}
        }))
        .unwrap_err();
        let all = errors.join("\n");
        assert!(
            all.contains(
                "global.repo1-path: '/x\\n[evil]\\nrepo1-host=attacker' \
                 contains the control character '\\n'"
            ),
            "{all}"
        );
        assert!(
            all.contains("'log-path=x' is not a pgBackRest option name"),
            "{all}"
        );
        assert!(all.contains("is not a valid stanza name"), "{all}");
        let errors = check(json!({"stanzas": {"global": {"pg1-path": "/x"}}})).unwrap_err();
        assert!(errors[0].contains("'global' is not a stanza"), "{errors:?}");
        assert!(all.contains("the key 'a=b' of recovery-option"), "{all}");
        assert!(
            all.contains("command_sections.global:no-such-command"),
            "{all}"
        );
    }

    #[test]
    fn incomplete_repository_settings_are_refused() {
        let errors = check(json!({"global": {
            "repo1-type": "s3",
            "repo2-cipher-type": "aes-256-cbc",
            "repo2-path": "/r",
            "repo3-block": "y",
            "repo3-path": "/b"
        }}))
        .unwrap_err();
        let all = errors.join("\n");
        for needed in [
            "repo1-s3-bucket",
            "repo1-s3-endpoint",
            "repo1-s3-region",
            "repo1-s3-key",
            "repo1-s3-key-secret",
            "repo2-cipher-pass",
            "repo3-bundle=y",
        ] {
            assert!(all.contains(&format!("needs {needed}")), "{needed}: {all}");
        }
    }

    #[test]
    fn path_style_missing_for_a_non_aws_endpoint_is_a_warning() {
        let mut ctx = Context::default();
        let a = args(json!({"global": {
            "repo1-type": "s3",
            "repo1-s3-bucket": "b",
            "repo1-s3-endpoint": "localhost",
            "repo1-s3-region": "r",
            "repo1-s3-key-type": "auto"
        }}));
        let release = Release::new(Version::parse("2.45").unwrap(), Source::Option);
        sections(&a, &release, &mut ctx).unwrap();
        assert_eq!(ctx.warnings().len(), 1);
        assert!(ctx.warnings()[0].contains("repo1-s3-uri-style=path"));
    }

    #[test]
    fn placeholder_and_weak_secrets_are_refused_without_showing_them() {
        for (key, value) in [
            ("repo1-cipher-pass", "CHANGEME"),
            ("repo1-cipher-pass", "short-Pass-9"),
            ("repo1-s3-key", "TODO"),
            ("repo1-s3-key-secret", "xxxxxxxx"),
            ("repo1-cipher-pass", "{{ vault_cipher_pass }}"),
            ("repo1-s3-key", "acbd"),
            ("repo1-s3-key-secret", ""),
        ] {
            let errors = check(json!({"global": {"repo1-path": "/r", key: value}})).unwrap_err();
            let all = errors.join("\n");
            assert!(
                all.contains(&format!("global.{key}")),
                "{key}={value}: {all}"
            );
            assert!(value.len() < 3 || !all.contains(value), "{all}");
        }
        assert!(check(
            json!({"global": {"repo1-cipher-type": "aes-256-cbc", "repo1-cipher-pass": PASS}})
        )
        .is_ok());
    }

    #[test]
    fn sections_are_ordered_global_then_each_stanza_with_its_commands() {
        let s = check(json!({
            "global": {"repo1-path": "/r"},
            "stanzas": {"main": {"pg1-path": "/a"}, "other": {"pg1-path": "/b"}},
            "command_sections": {
                "main:backup": {"process-max": 4},
                "global:archive-push": {"process-max": 2}
            }
        }))
        .unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "global",
                "global:archive-push",
                "main",
                "main:backup",
                "other"
            ]
        );
    }

    #[test]
    fn values_outside_the_type_range_or_list_are_refused_naming_option_section_and_value() {
        let errors = check(json!({
            "global": {
                "repo1-retention-full": -1,
                "log-level-console": "verbose",
                "buffer-size": "3MiB",
                "repo1-storage-upload-chunk-size": "5 MB",
                "archive-timeout": "soon",
                "repo1-path": "relative",
                "repo1-cipher-type": "rot13",
                "process-max": 4
            },
            "stanzas": {"main": {"pg1-path": "/a", "pg1-port": 70000}},
            "command_sections": {"global:backup": {"compress-level-network": 99}}
        }))
        .unwrap_err();
        let all = errors.join("\n");
        for expected in [
            "global.repo1-retention-full: '-1' is not a valid value of repo1-retention-full \
             in [global] for pgBackRest 2.45: expected within 1..9999999",
            "global.log-level-console: 'verbose' is not a valid value of log-level-console \
             in [global] for pgBackRest 2.45: expected one of off, error, warn, info, detail, \
             debug, trace",
            "global.buffer-size: '3MiB' is not a valid value of buffer-size in [global]",
            "global.repo1-storage-upload-chunk-size: '5 MB' is not a valid value",
            "expected a size",
            "global.archive-timeout: 'soon' is not a valid value of archive-timeout in [global] \
             for pgBackRest 2.45: expected a time in seconds",
            "global.repo1-path: 'relative' is not a valid value",
            "global.repo1-cipher-type: 'rot13'",
            "stanzas.main.pg1-port: '70000' is not a valid value of pg1-port in [main]",
            "command_sections.global:backup.compress-level-network: '99' is not a valid value \
             of compress-level-network in [global:backup]",
        ] {
            assert!(all.contains(expected), "{expected}\nnot in\n{all}");
        }
        // and repo1-cipher-type=rot13 needs a repo1-cipher-pass, as any cipher but none
        assert_eq!(errors.len(), 10, "{all}");
    }

    #[test]
    fn compress_level_is_checked_against_the_compress_type_in_effect() {
        let errors = check(json!({
            "global": {"compress-level": 99, "repo1-path": "/r"},
            "stanzas": {
                "zst": {"pg1-path": "/a", "compress-type": "zst", "compress-level": 20},
                "plain": {"pg1-path": "/b"}
            }
        }))
        .unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains(
                "[global] + [plain]: compress-level '99' is out of range for compress-type=gz \
                 (pgBackRest 2.45 takes -1..9)"
            ),
            "{errors:?}"
        );
        assert!(check(json!({"global": {"compress-type": "zst", "compress-level": 22}})).is_ok());
        assert!(check(json!({"global": {"compress-type": "none", "compress-level": 99}})).is_ok());
    }

    #[test]
    fn an_option_newer_than_the_target_is_refused_naming_the_release_that_added_it() {
        let config = json!({
            "global": {"repo1-path": "/r", "repo1-s3-requester-pays": true},
            "command_sections": {"global:backup": {"backup-standby": "prefer"}}
        });
        let errors = check(config.clone()).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(
            errors[0],
            "global.repo1-s3-requester-pays: option 'repo1-s3-requester-pays' in [global] \
             needs pgBackRest 2.55 or later (the target has 2.45)"
        );
        assert!(
            errors[1].contains("backup-standby is a boolean"),
            "{errors:?}"
        );
        let s = check_at(config.clone(), "2.55.1").unwrap();
        assert!(s[0]
            .entries
            .contains(&("repo1-s3-requester-pays".into(), vec!["y".into()])));
        let errors = check_at(config, "2.54.2").unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("needs pgBackRest 2.55 or later (the target has 2.54.2)"));
        // Removed, unknown in the target's release, and times with units from 2.53.
        let errors = check_at(
            json!({"global": {"repo1-block-age-map": {"1d": 2}}}),
            "2.50",
        )
        .unwrap_err();
        assert!(
            errors[0].contains(
                "option 'repo1-block-age-map' in [global] was removed in pgBackRest 2.46 \
                 (the target has 2.50)"
            ),
            "{errors:?}"
        );
        let errors = check_at(json!({"global": {"repo1-retention-ful": 2}}), "2.59.1").unwrap_err();
        assert!(errors[0].contains("unknown option 'repo1-retention-ful' for pgBackRest 2.59.1"));
        assert!(check_at(json!({"global": {"archive-timeout": "5m"}}), "2.53").is_ok());
        let errors = check_at(json!({"global": {"archive-timeout": "0.5"}}), "2.53").unwrap_err();
        assert!(
            errors[0].contains("for pgBackRest 2.53: expected a time: digits"),
            "{errors:?}"
        );
    }

    #[test]
    fn an_option_made_internal_is_a_warning_and_the_source_is_named() {
        let mut ctx = Context::default();
        let release = Release::new(Version::parse("2.58").unwrap(), Source::Option);
        let a = args(json!({"global": {"stop-auto": true}}));
        sections(&a, &release, &mut ctx).unwrap();
        assert_eq!(ctx.warnings().len(), 1);
        assert!(ctx.warnings()[0].contains("'stop-auto' is internal from pgBackRest 2.58 on"));
        let a = args(json!({"global": {"repo1-sftp-host": "h"}}));
        for (source, said) in [
            (Source::Option, "(pgbackrest_version is 2.45)"),
            (
                Source::Default,
                "(pgBackRest is not installed on the target, so 2.45 is assumed",
            ),
        ] {
            let release = Release::new(Version::parse("2.45").unwrap(), source);
            let errors = sections(&a, &release, &mut Context::default()).unwrap_err();
            assert!(
                errors[0].contains("needs pgBackRest 2.46 or later"),
                "{errors:?}"
            );
            assert!(errors[0].contains(said), "{errors:?}");
        }
    }

    #[test]
    fn lists_only_for_repeatable_options() {
        assert!(
            check(json!({"stanzas": {"m": {"pg1-path": "/a", "exclude": ["a/", "b/"]}}})).unwrap()
                [1]
            .entries[1]
                .1
                .len()
                == 2
        );
        let errors = check(json!({"global": {"repo1-path": ["/a", "/b"]}})).unwrap_err();
        assert!(
            errors[0].contains("repo1-path takes a single value"),
            "{errors:?}"
        );
    }
}
