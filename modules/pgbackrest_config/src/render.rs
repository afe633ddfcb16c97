//! Rendering the file with tera, and showing it without its secrets.

use crate::Args;
use pgbackrest::options::lookup;
use serde_json::{Map, Value};
use sha2::Digest as _;

/// One `[section]` with its options in the order given (values already in pgBackRest's spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `global`, `main`, `global:archive-push`, ...
    pub name: String,
    /// Option -> its values (several for repeatable options).
    pub entries: Vec<(String, Vec<String>)>,
}

/// The built-in template: a header, then each section and its lines.
const BUILTIN: &str = "# Managed by Ansible (veza.pgbackrest.pgbackrest_config): local changes \
    are overwritten.\n\
    {% for section in sections %}\n\
    [{{ section.name }}]\n\
    {% for line in section.lines %}{{ line }}\n{% endfor %}{% endfor %}";

/// Render the sections with the built-in template or the operator's.
///
/// A template sees `sections` (each with `name`, `lines` and `options`), `vars` (the `vars`
/// option) and `path`. Autoescaping is off: this is an INI file, not HTML.
pub fn render(sections: &[Section], template: Option<&str>, args: &Args) -> anyhow::Result<String> {
    // One serde_json value for the whole context: tera's serializer is then instantiated for
    // serde_json's Value only (which `vars` needs anyway), not once per Rust type.
    let view: Vec<Value> = sections
        .iter()
        .map(|s| {
            let lines: Vec<Value> = s
                .entries
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| Value::String(format!("{k}={v}"))))
                .collect();
            let options: Map<String, Value> = s
                .entries
                .iter()
                .map(|(k, vs)| {
                    let value = if lookup(k).is_some_and(|o| o.repeatable) {
                        Value::from(vs.clone())
                    } else {
                        Value::from(vs.join(","))
                    };
                    (k.clone(), value)
                })
                .collect();
            let mut section = Map::new();
            section.insert("name".into(), Value::String(s.name.clone()));
            section.insert("lines".into(), Value::Array(lines));
            section.insert("options".into(), Value::Object(options));
            Value::Object(section)
        })
        .collect();
    let mut root = Map::new();
    root.insert("sections".into(), Value::Array(view));
    root.insert("vars".into(), Value::Object(args.vars.clone()));
    root.insert(
        "path".into(),
        Value::String(args.path.display().to_string()),
    );
    let context = tera::Context::from_serialize(&Value::Object(root))
        .map_err(|e| anyhow::anyhow!("{}", tera_error(&e)))?;
    let text = tera::Tera::one_off(template.unwrap_or(BUILTIN), &context, false)
        .map_err(|e| anyhow::anyhow!("{}", tera_error(&e)))?;
    Ok(text)
}

/// tera's errors keep the useful part in their sources.
fn tera_error(e: &tera::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// SHA-256 of the file, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `YYYY-MM-DD@HH:MM:SS` in UTC, as Ansible names backup files.
pub fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let [year, month, day, h, m, s] = ansible_module::time::utc_fields(secs);
    format!("{year:04}-{month:02}-{day:02}@{h:02}:{m:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "1970-01-01@00:00:00");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29@01:01:01"
        );
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_478_400)),
            "2026-11-24@00:00:00"
        );
    }

    #[test]
    fn checksum_is_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
