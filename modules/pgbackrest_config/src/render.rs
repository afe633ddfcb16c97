//! Rendering the file with tera, and showing it without its secrets.

use crate::options::{self, lookup};
use crate::Args;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::Digest as _;
use std::collections::BTreeMap;

/// One `[section]` with its options in the order given (values already in pgBackRest's spelling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `global`, `main`, `global:archive-push`, ...
    pub name: String,
    /// Option -> its values (several for repeatable options).
    pub entries: Vec<(String, Vec<String>)>,
}

/// What a template sees of a section.
#[derive(Serialize)]
struct TemplateSection<'a> {
    name: &'a str,
    /// `key=value` lines, ready to print.
    lines: Vec<String>,
    /// key -> value, or list of values for repeatable options.
    options: Map<String, Value>,
}

/// The built-in template: a header, then each section and its lines.
const BUILTIN: &str = "# Managed by Ansible (veza.pgbackrest.pgbackrest_config): local changes are overwritten.\n\
{% for section in sections %}\n[{{ section.name }}]\n{% for line in section.lines %}{{ line }}\n{% endfor %}{% endfor %}";

/// Render the sections with the built-in template or the operator's.
///
/// A template sees `sections` (each with `name`, `lines` and `options`), `vars` (the `vars`
/// option) and `path`. Autoescaping is off: this is an INI file, not HTML.
pub fn render(sections: &[Section], template: Option<&str>, args: &Args) -> anyhow::Result<String> {
    let view: Vec<TemplateSection<'_>> = sections
        .iter()
        .map(|s| TemplateSection {
            name: &s.name,
            lines: s
                .entries
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| format!("{k}={v}")))
                .collect(),
            options: s
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
                .collect(),
        })
        .collect();
    let mut context = tera::Context::new();
    context.insert("sections", &view);
    context.insert("vars", &args.vars);
    context.insert("path", &args.path.display().to_string());
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

/// `(section, key)` -> values, from an INI text.
fn parse(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut section = String::new();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((k, v)) = trimmed
            .split_once('=')
            .filter(|_| !trimmed.starts_with('#'))
        {
            out.entry((section.clone(), k.trim().to_owned()))
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

fn secret_key(key: &str) -> bool {
    lookup(key).is_some_and(|o| o.secret) || options::looks_secret(key)
}

/// Both sides of the diff with every secret value replaced by `********`; on the after side a
/// secret whose value differs from before reads `******** (changed)`, so the diff still shows it.
pub fn mask_pair(before: &str, after: &str) -> (String, String) {
    let old = parse(before);
    let mask = |text: &str, compare: Option<&BTreeMap<(String, String), Vec<String>>>| -> String {
        let mut section = String::new();
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.to_owned();
            }
            match trimmed.split_once('=') {
                Some((k, _)) if !trimmed.starts_with('#') && secret_key(k.trim()) => {
                    let key = k.trim();
                    let changed = compare.is_some_and(|old| {
                        old.get(&(section.clone(), key.to_owned()))
                            != parse_one(text, &section, key).as_ref()
                    });
                    out.push_str(&format!(
                        "{key}={}{}\n",
                        ansible_module::MASK,
                        if changed { " (changed)" } else { "" }
                    ));
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    };
    (mask(before, None), mask(after, Some(&old)))
}

fn parse_one(text: &str, section: &str, key: &str) -> Option<Vec<String>> {
    // `get`, not `remove`: a BTreeMap's removal brings kilobytes of rebalancing code along.
    parse(text)
        .get(&(section.to_owned(), key.to_owned()))
        .cloned()
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
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}@{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn secrets_are_masked_and_a_changed_secret_still_shows() {
        let before = "[global]\nrepo1-cipher-pass=old-secret-value\nrepo1-path=/a\n[main]\nrepo1-s3-key=same\n";
        let after = "[global]\nrepo1-cipher-pass=new-secret-value\nrepo1-path=/b\n[main]\nrepo1-s3-key=same\n";
        let (b, a) = mask_pair(before, after);
        assert_eq!(
            b,
            "[global]\nrepo1-cipher-pass=********\nrepo1-path=/a\n[main]\nrepo1-s3-key=********\n"
        );
        assert_eq!(a, "[global]\nrepo1-cipher-pass=******** (changed)\nrepo1-path=/b\n[main]\nrepo1-s3-key=********\n");
        let (_, a) = mask_pair("", "[global]\nrepo1-s3-key-secret=abc\n");
        assert_eq!(a, "[global]\nrepo1-s3-key-secret=******** (changed)\n");
    }

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
