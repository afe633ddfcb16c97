//! The `units` and `files` options read into what is wanted, every entry checked before anything
//! is read or written: each error names the entry (`units[1].name`) and quotes the value.

use anyhow::{anyhow, bail};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// The unit types this module writes (a `.service` and the `.timer` that runs it, mostly).
pub const UNIT_TYPES: &[&str] = &["service", "timer", "path", "socket", "target"];
/// Longest unit name systemd takes (`UNIT_NAME_MAX`).
const UNIT_NAME_MAX: usize = 255;
/// Largest content taken for one unit or file (a unit is a few hundred bytes; a settings file a
/// few KB): a bigger one is a mistake, not a schedule.
const MAX_CONTENT: usize = 1 << 20;

/// One unit to manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// `units[i]`, for messages.
    pub label: String,
    /// The unit's name, `NAME.TYPE`.
    pub name: String,
    /// The unit file's text (`None` for `state: absent`).
    pub content: Option<String>,
    /// Enable (`Some(true)`), disable (`Some(false)`) or leave it (`None`).
    pub enabled: Option<bool>,
    /// Start, stop or leave it.
    pub active: Option<bool>,
}

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Given as text.
    Content(String),
    /// A build of this collection's modules, in the transport's cache on the target
    /// (`~/.ansible/veza-bin/<sha256>`): its name and the SHA-256 the action plugin found.
    Build {
        /// The module's name (`pg_role_detect`).
        name: String,
        /// The build's SHA-256, lowercase hex.
        sha256: String,
        /// Where Ansible's own binary-module path put it for this task (the action plugin sets
        /// it there); `None`: the transport's cache.
        src: Option<PathBuf>,
    },
}

/// One file the services run (a program, its settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// `files[i]`, for messages.
    pub label: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Its bytes (`None` for `state: absent`).
    pub source: Option<Source>,
    /// Mode bits.
    pub mode: u32,
    /// Owner name or uid.
    pub owner: String,
    /// Group name or gid.
    pub group: String,
}

/// A string without NUL or other control characters (but newlines and tabs when `text`).
fn clean<'a>(label: &str, key: &str, value: &'a Value, text: bool) -> anyhow::Result<&'a str> {
    let s = value
        .as_str()
        .ok_or_else(|| anyhow!("{label}.{key}: {} is not a string", short(value)))?;
    let bad = s
        .chars()
        .find(|c| c.is_control() && !(text && (*c == '\n' || *c == '\t')));
    if let Some(c) = bad {
        bail!(
            "{label}.{key}: {} holds the control character {c:?}",
            short(value)
        );
    }
    if s.len() > MAX_CONTENT {
        bail!("{label}.{key}: {} bytes, more than {MAX_CONTENT}", s.len());
    }
    Ok(s)
}

/// A value as a message quotes it: JSON, cut at 60 characters.
pub fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

fn entry<'a>(
    label: &str,
    item: &'a Value,
    keys: &[&str],
) -> anyhow::Result<&'a Map<String, Value>> {
    let map = item
        .as_object()
        .ok_or_else(|| anyhow!("{label}: {} is not a dict", short(item)))?;
    if let Some(k) = map.keys().find(|k| !keys.contains(&k.as_str())) {
        bail!(
            "{label}: unknown key '{}' (known: {})",
            short(&Value::String(k.clone())).trim_matches('\''),
            keys.join(", ")
        );
    }
    Ok(map)
}

fn opt_bool(label: &str, map: &Map<String, Value>, key: &str) -> anyhow::Result<Option<bool>> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if ["yes", "true", "on", "1"].contains(&s.as_str()) => {
            Ok(Some(true))
        }
        Some(Value::String(s)) if ["no", "false", "off", "0"].contains(&s.as_str()) => {
            Ok(Some(false))
        }
        Some(v) => bail!("{label}.{key}: {} is not a boolean", short(v)),
    }
}

/// A unit name systemd accepts: `NAME.TYPE`, NAME of letters, digits and `:-_.\@`, a known TYPE.
pub fn check_unit_name(label: &str, name: &str) -> anyhow::Result<()> {
    let quoted = short(&Value::String(name.to_owned()));
    let (stem, kind) = name.rsplit_once('.').unwrap_or((name, ""));
    let chars_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if stem.is_empty()
        || !chars_ok
        || name.starts_with(['.', '-'])
        || name.len() > UNIT_NAME_MAX
        || !UNIT_TYPES.contains(&kind)
    {
        bail!(
            "{label}.name: {quoted} is not a unit name (letters, digits and :-_.\\@, \
             ending in .{})",
            UNIT_TYPES.join(", .")
        );
    }
    Ok(())
}

/// The `units` option.
pub fn units(items: &[Value], present: bool) -> anyhow::Result<Vec<Unit>> {
    let mut out: Vec<Unit> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = format!("units[{i}]");
        let map = entry(&label, item, &["name", "content", "enabled", "active"])?;
        let name = clean(
            &label,
            "name",
            map.get("name").unwrap_or(&Value::Null),
            false,
        )?;
        check_unit_name(&label, name)?;
        if let Some(other) = out.iter().find(|u| u.name == name) {
            bail!(
                "{label}.name: '{name}' is given twice (also {})",
                other.label
            );
        }
        let content = match map.get("content") {
            None | Some(Value::Null) if present => {
                bail!("{label}.content: missing for unit '{name}' (state is present)")
            }
            None | Some(Value::Null) => None,
            Some(v) => Some(clean(&label, "content", v, true)?.to_owned()),
        };
        let timer = name.ends_with(".timer");
        let default = timer.then_some(true);
        out.push(Unit {
            name: name.to_owned(),
            content: content.filter(|_| present),
            enabled: opt_bool(&label, map, "enabled")?.or(default),
            active: opt_bool(&label, map, "active")?.or(default),
            label,
        });
    }
    Ok(out)
}

/// `mode` as Ansible's file modules take it: an octal string, or the number YAML made of `0755`.
/// Nothing writable by others (the services run these as root or postgres), no special bits.
pub fn mode(label: &str, value: &Value) -> anyhow::Result<u32> {
    let Some(mode) = ansible_module::fs::octal_mode(value) else {
        bail!(
            "{label}.mode: {} is not an octal mode such as '0644'",
            short(value)
        );
    };
    if mode & 0o7002 != 0 {
        bail!(
            "{label}.mode: '{mode:04o}' is writable by others or has special bits; \
             use 0644, 0640 or 0755"
        );
    }
    Ok(mode)
}

fn owner(label: &str, map: &Map<String, Value>, key: &str) -> anyhow::Result<String> {
    let given = map.get(key).filter(|v| !v.is_null());
    let name = match given {
        Some(v) => clean(label, key, v, false)?,
        None => "root",
    };
    let found = if key == "owner" {
        ansible_module::fs::resolve_uid(name).map(|_| ())
    } else {
        ansible_module::fs::resolve_gid(name).map(|_| ())
    };
    found.map_err(|e| anyhow!("{label}.{key}: {e}"))?;
    Ok(name.to_owned())
}

/// The `files` option.
pub fn files(items: &[Value], present: bool) -> anyhow::Result<Vec<File>> {
    let keys = [
        "path",
        "content",
        "src_build",
        "sha256",
        "src",
        "mode",
        "owner",
        "group",
    ];
    let mut out: Vec<File> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = format!("files[{i}]");
        let map = entry(&label, item, &keys)?;
        let path = entry_path(&label, map, out.iter().map(|f| (&f.path, &f.label)))?;
        let given = |k: &str| map.get(k).filter(|v| !v.is_null());
        let source = match (given("content"), given("src_build")) {
            (Some(_), Some(_)) => bail!("{label}: content and src_build are mutually exclusive"),
            (Some(v), None) => Some(Source::Content(
                clean(&label, "content", v, true)?.to_owned(),
            )),
            (None, Some(v)) => Some(build(&label, v, given("sha256"), given("src"))?),
            (None, None) if present => {
                bail!("{label}: one of content or src_build is needed (state is present)")
            }
            (None, None) => None,
        };
        let mode = match given("mode") {
            Some(v) => mode(&label, v)?,
            None => 0o644,
        };
        out.push(File {
            path,
            source: source.filter(|_| present),
            mode,
            owner: owner(&label, map, "owner")?,
            group: owner(&label, map, "group")?,
            label,
        });
    }
    Ok(out)
}

/// One directory the services write to (a textfile-collector directory, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory {
    /// `directories[i]`, for messages.
    pub label: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Mode bits.
    pub mode: u32,
    /// Owner name or uid.
    pub owner: String,
    /// Group name or gid.
    pub group: String,
}

/// The `directories` option.
pub fn directories(items: &[Value]) -> anyhow::Result<Vec<Directory>> {
    let mut out: Vec<Directory> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let label = format!("directories[{i}]");
        let map = entry(&label, item, &["path", "mode", "owner", "group"])?;
        let path = entry_path(&label, map, out.iter().map(|d| (&d.path, &d.label)))?;
        let mode = match map.get("mode").filter(|v| !v.is_null()) {
            Some(v) => mode(&label, v)?,
            None => 0o755,
        };
        out.push(Directory {
            path,
            mode,
            owner: owner(&label, map, "owner")?,
            group: owner(&label, map, "group")?,
            label,
        });
    }
    Ok(out)
}

fn build(
    label: &str,
    name: &Value,
    sha256: Option<&Value>,
    src: Option<&Value>,
) -> anyhow::Result<Source> {
    let name = clean(label, "src_build", name, false)?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        bail!("{label}.src_build: '{name}' is not a module name of this collection");
    }
    let Some(sha256) = sha256 else {
        bail!(
            "{label}.src_build: '{name}' needs the collection's action plugin, which finds the \
             build's sha256 (run through veza.pgbackrest.pgbackrest_schedule, on its fast path)"
        );
    };
    let sha256 = clean(label, "sha256", sha256, false)?;
    if sha256.len() != 64 || !sha256.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        bail!("{label}.sha256: '{sha256}' is not a SHA-256 in lowercase hex");
    }
    let src = match src {
        Some(v) => Some(absolute(
            &format!("{label}.src"),
            clean(label, "src", v, false)?,
        )?),
        None => None,
    };
    Ok(Source::Build {
        name: name.to_owned(),
        sha256: sha256.to_owned(),
        src,
    })
}

/// `LABEL.path` of an entry: an absolute path (`absolute`) that no earlier entry (`earlier`: their
/// paths and labels) gives.
fn entry_path<'a>(
    label: &str,
    map: &Map<String, Value>,
    mut earlier: impl Iterator<Item = (&'a PathBuf, &'a String)>,
) -> anyhow::Result<PathBuf> {
    let path = clean(
        label,
        "path",
        map.get("path").unwrap_or(&Value::Null),
        false,
    )?;
    let path = absolute(&format!("{label}.path"), path)?;
    if let Some((_, other)) = earlier.find(|(p, _)| **p == path) {
        bail!(
            "{label}.path: '{}' is given twice (also {other})",
            path.display()
        );
    }
    Ok(path)
}

/// An absolute path with a file name and no `..`, as given.
pub fn absolute(label: &str, path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    let dotdot = p
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir));
    if !p.is_absolute() || p.file_name().is_none() || dotdot || path.ends_with('/') {
        bail!("{label}: '{path}' is not an absolute path to a file (without ..)");
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_path_given_twice_is_refused_naming_both_entries() {
        let twice = [
            json!({"path": "/etc/a.json", "content": "{}"}),
            json!({"path": "/etc/a.json", "content": "[]"}),
        ];
        let e = files(&twice, true).unwrap_err().to_string();
        assert_eq!(
            e,
            "files[1].path: '/etc/a.json' is given twice (also files[0])"
        );
        let twice = [json!({"path": "/var/x"}), json!({"path": "/var/x"})];
        let e = directories(&twice).unwrap_err().to_string();
        assert_eq!(
            e,
            "directories[1].path: '/var/x' is given twice (also directories[0])"
        );
        let e = directories(&[json!({"path": "var/x"})])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("directories[0].path: 'var/x' is not an absolute path"),
            "{e}"
        );
    }

    #[test]
    fn unit_names_are_checked() {
        assert!(check_unit_name("u", "pgbackrest-full.timer").is_ok());
        assert!(check_unit_name("u", "a@b.service").is_ok());
        for bad in [
            "x",
            ".timer",
            "a b.timer",
            "a.conf",
            "../x.service",
            "-x.timer",
            "a/b.timer",
        ] {
            let e = check_unit_name("units[0]", bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("units[0].name: '{bad}'")), "{e}");
        }
    }

    #[test]
    fn timers_default_to_enabled_and_active_services_to_left_alone() {
        let got = units(
            &[
                json!({"name": "b.service", "content": "[Service]\n"}),
                json!({"name": "b.timer", "content": "[Timer]\n"}),
                json!({"name": "c.timer", "content": "x", "enabled": false, "active": "no"}),
            ],
            true,
        )
        .unwrap();
        assert_eq!((got[0].enabled, got[0].active), (None, None));
        assert_eq!((got[1].enabled, got[1].active), (Some(true), Some(true)));
        assert_eq!((got[2].enabled, got[2].active), (Some(false), Some(false)));
    }

    #[test]
    fn entries_are_refused_naming_the_key_and_value() {
        let e = |v: Value| units(&[v], true).unwrap_err().to_string();
        assert_eq!(
            e(json!({"name": "a.timer"})),
            "units[0].content: missing for unit 'a.timer' (state is present)"
        );
        assert_eq!(
            e(json!({"name": "a.timer", "content": "x", "enabled": "maybe"})),
            "units[0].enabled: 'maybe' is not a boolean"
        );
        assert!(e(json!({"name": "a.timer", "content": "x", "bogus": 1})).contains("'bogus'"));
        assert!(e(json!({"name": "a.timer", "content": "a\u{0}b"})).contains("control"));
        let f = |v: Value| files(&[v], true).unwrap_err().to_string();
        assert_eq!(
            f(json!({"path": "rel/x", "content": ""})),
            "files[0].path: 'rel/x' is not an absolute path to a file (without ..)"
        );
        assert!(f(json!({"path": "/x", "content": "", "mode": "0666"})).contains("'0666'"));
        assert!(f(json!({"path": "/x", "content": "", "mode": "u+x"})).contains("'u+x'"));
        assert!(f(json!({"path": "/x", "src_build": "pg_role_detect"})).contains("action plugin"));
        assert!(
            f(json!({"path": "/x", "content": "", "owner": "no-such-user-q"}))
                .starts_with("files[0].owner: owner 'no-such-user-q' does not exist")
        );
    }

    #[test]
    fn modes_take_strings_and_yaml_numbers() {
        assert_eq!(mode("f", &json!("0755")).unwrap(), 0o755);
        assert_eq!(mode("f", &json!(0o640)).unwrap(), 0o640);
        assert!(mode("f", &json!("4755")).is_err());
        assert!(mode("f", &json!("0890")).is_err());
    }
}
