//! `pgbackrest.conf`, read one way: the file, then the `*.conf` files of `config-include-path`
//! in name order, as pgBackRest reads them.
//!
//! pgBackRest echoes parts of its configuration in its messages (S3 `SignatureDoesNotMatch`
//! quotes the access key), so every value of a secret option (by the table, or by a name that
//! looks like one), in the files, in commented-out lines and in `PGBACKREST_*` variables, is
//! collected in [`Conf::secrets`] for the caller to register for scrubbing before pgBackRest runs.

use crate::options::is_secret;
use crate::Error;
use std::path::{Path, PathBuf};

/// pgBackRest's default `lock-path`.
pub const DEFAULT_LOCK_PATH: &str = "/tmp/pgbackrest";
/// pgBackRest's default `config-include-path`.
pub const DEFAULT_INCLUDE_PATH: &str = "/etc/pgbackrest/conf.d";
/// pgBackRest's default `repo1-path`.
pub const DEFAULT_REPO_PATH: &str = "/var/lib/pgbackrest";

/// One line of a pgBackRest INI file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `[name]` (trimmed, without brackets).
    Section(&'a str),
    /// `key=value` (both trimmed).
    Option(&'a str, &'a str),
    /// `# ...` (the text after `#`, trimmed).
    Comment(&'a str),
    /// Anything else (blank lines included).
    Other,
}

/// Classify one line.
pub fn read_line(line: &str) -> Line<'_> {
    let t = line.trim();
    if let Some(comment) = t.strip_prefix('#') {
        return Line::Comment(comment.trim());
    }
    if let Some(name) = t.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        return Line::Section(name.trim());
    }
    match t.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Line::Option(k.trim(), v.trim()),
        _ => Line::Other,
    }
}

/// The parts of the configuration the modules read, for one stanza.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Values of secret options (cipher passes, S3 keys), commented-out ones included.
    pub secrets: Vec<String>,
    /// `pg1-path` of the stanza.
    pub pg1_path: Option<String>,
    /// `config-include-path`, when set in `[global]`.
    pub include_path: Option<String>,
    /// Every option as the stanza sees it: its own section over `[global]`, a later file over an
    /// earlier one. A Vec, not a map: a few dozen entries, and a map costs kilobytes of code.
    values: Vec<(String, String)>,
}

impl Conf {
    /// The value of `key` as the stanza sees it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first of `keys` that is set (an option and its older names).
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|k| self.get(k))
    }

    /// `lock-path` as the stanza sees it.
    pub fn lock_path(&self) -> Option<&str> {
        self.get("lock-path")
    }

    /// `repo1-type`, pgBackRest's default `posix` when unset.
    pub fn repo_type(&self) -> &str {
        self.get("repo1-type").unwrap_or("posix")
    }

    /// `repo1-path`, pgBackRest's default when unset.
    pub fn repo_path(&self) -> &str {
        self.get("repo1-path").unwrap_or(DEFAULT_REPO_PATH)
    }

    fn set(&mut self, key: &str, value: &str) {
        match self.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => value.clone_into(&mut slot.1),
            None => self.values.push((key.to_owned(), value.to_owned())),
        }
    }
}

/// Parse one file's text for `stanza` into `conf`; values set here override earlier files'.
pub fn parse(text: &str, stanza: &str, conf: &mut Conf) {
    let mut section = "";
    // This file's values: the stanza's section wins over `[global]` whatever their order.
    let mut global: Vec<(&str, &str)> = Vec::new();
    let mut own: Vec<(&str, &str)> = Vec::new();
    for line in text.lines() {
        let (key, value) = match read_line(line) {
            Line::Section(name) => {
                section = name;
                continue;
            }
            Line::Option(k, v) => (k, v),
            // A commented-out secret is still a secret: an old key kept "for reference".
            Line::Comment(c) => {
                if let Line::Option(k, v) = read_line(c) {
                    if is_secret(k) && !v.is_empty() {
                        conf.secrets.push(v.to_owned());
                    }
                }
                continue;
            }
            Line::Other => continue,
        };
        if is_secret(key) && !value.is_empty() {
            conf.secrets.push(value.to_owned());
        }
        // `[global:command]` and `[stanza:command]` sections are read for secrets only.
        if section == stanza {
            if key == "pg1-path" {
                conf.pg1_path = Some(value.to_owned());
            }
            own.push((key, value));
        } else if section == "global" {
            if key == "config-include-path" {
                conf.include_path = Some(value.to_owned());
            }
            global.push((key, value));
        }
    }
    for (key, value) in global {
        if !own.iter().any(|(k, _)| *k == key) {
            conf.set(key, value);
        }
    }
    for (key, value) in own {
        conf.set(key, value);
    }
}

/// Read the configuration file and its include directory (every `*.conf`, in name order).
pub fn read(path: &Path, stanza: &str) -> Result<Conf, Error> {
    let mut conf = Conf::default();
    let text =
        std::fs::read(path).map_err(Error::io(format!("config: reading {}", path.display())))?;
    parse(&String::from_utf8_lossy(&text), stanza, &mut conf);
    for file in include_files(&conf) {
        if let Ok(text) = std::fs::read(&file) {
            parse(&String::from_utf8_lossy(&text), stanza, &mut conf);
        }
    }
    Ok(conf)
}

/// The files of the include directory, in the order pgBackRest reads them.
pub fn include_files(conf: &Conf) -> Vec<PathBuf> {
    let dir = PathBuf::from(
        conf.include_path
            .clone()
            .unwrap_or_else(|| DEFAULT_INCLUDE_PATH.to_owned()),
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    ansible_module::sort_small(&mut files, |a, b| a < b);
    files
}

/// `(section, key, value)` for each option line of an INI text, in file order. A Vec rather than
/// a map: these files are small, and a map keyed by pairs costs kilobytes of code.
fn entries(text: &str) -> Vec<(&str, &str, &str)> {
    let mut section = "";
    let mut out = Vec::new();
    for line in text.lines() {
        match read_line(line) {
            Line::Section(name) => section = name,
            Line::Option(k, v) => out.push((section, k, v)),
            Line::Comment(_) | Line::Other => {}
        }
    }
    out
}

/// The values `key` has in `[section]`.
fn values_of<'a>(
    entries: &'a [(&'a str, &'a str, &'a str)],
    section: &'a str,
    key: &'a str,
) -> impl Iterator<Item = &'a str> {
    entries
        .iter()
        .filter(move |(s, k, _)| *s == section && *k == key)
        .map(|(.., v)| *v)
}

/// Both sides of a diff of two pgbackrest.conf texts with every secret value replaced by
/// `********`, commented-out ones too; on the after side a secret whose value differs from
/// before reads `******** (changed)`, so the diff still shows that it changed.
pub fn mask_pair(before: &str, after: &str) -> (String, String) {
    let old = entries(before);
    let new = entries(after);
    let mask = |text: &str, compare: bool| -> String {
        let mut section = "";
        let mut out = String::with_capacity(text.len());
        for line in text.lines() {
            match read_line(line) {
                Line::Option(key, _) if is_secret(key) => {
                    let changed =
                        compare && !values_of(&old, section, key).eq(values_of(&new, section, key));
                    out.push_str(key);
                    out.push('=');
                    out.push_str(ansible_module::MASK);
                    out.push_str(if changed { " (changed)\n" } else { "\n" });
                    continue;
                }
                Line::Comment(c) => {
                    if let Line::Option(key, _) = read_line(c) {
                        if is_secret(key) {
                            out.push('#');
                            out.push_str(key);
                            out.push('=');
                            out.push_str(ansible_module::MASK);
                            out.push('\n');
                            continue;
                        }
                    }
                }
                Line::Section(name) => section = name,
                _ => {}
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    };
    (mask(before, false), mask(after, true))
}

/// Secret values given to pgBackRest by environment (`PGBACKREST_REPO1_CIPHER_PASS`).
pub fn env_secrets() -> Vec<String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix("PGBACKREST_")?
                .to_ascii_lowercase()
                .replace('_', "-");
            is_secret(&key).then_some(v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lock_path_pg1_path_and_repo_are_found() {
        let mut conf = Conf::default();
        parse(
            "[global]\nrepo1-cipher-pass = pass-canary\nrepo1-s3-key=AKIA1\n\
             repo1-s3-key-secret=sek\nlock-path=/g\nrepo1-path=/r\nrepo1-type=s3\n\
             # comment=x\n#repo1-cipher-pass=OLD\n[main]\npg1-path=/data\nlock-path=/s\n\
             [other]\npg1-path=/o\nrepo1-path=/b\n[global:backup]\nrepo2-cipher-pass=p2\n",
            "main",
            &mut conf,
        );
        assert_eq!(conf.secrets, ["pass-canary", "AKIA1", "sek", "OLD", "p2"]);
        assert_eq!(conf.lock_path(), Some("/s"));
        assert_eq!(conf.pg1_path.as_deref(), Some("/data"));
        assert_eq!((conf.repo_type(), conf.repo_path()), ("s3", "/r"));
    }

    #[test]
    fn global_values_apply_without_stanza_ones_and_later_files_win() {
        let mut conf = Conf::default();
        parse(
            "[global]\nlock-path=/g\n[main]\npg1-path=/d\n",
            "main",
            &mut conf,
        );
        assert_eq!(conf.lock_path(), Some("/g"));
        assert_eq!(
            (conf.repo_type(), conf.repo_path()),
            ("posix", DEFAULT_REPO_PATH)
        );
        parse("[main]\nrepo1-path=/later\n", "main", &mut conf);
        assert_eq!(conf.repo_path(), "/later");
        assert_eq!(
            conf.lock_path(),
            Some("/g"),
            "an earlier file's value stays"
        );
    }

    #[test]
    fn lines_are_classified_once() {
        assert_eq!(read_line(" [main] "), Line::Section("main"));
        assert_eq!(read_line("[a=b]"), Line::Section("a=b"));
        assert_eq!(read_line("k = v=w"), Line::Option("k", "v=w"));
        assert_eq!(read_line("# k=v"), Line::Comment("k=v"));
        assert_eq!(read_line("=v"), Line::Other);
        assert_eq!(read_line(""), Line::Other);
    }

    #[test]
    fn secrets_are_masked_and_a_changed_secret_still_shows() {
        let before = "[global]\nrepo1-cipher-pass=old-secret-value\nrepo1-path=/a\n\
            [main]\nrepo1-s3-key=same\n";
        let after = "[global]\nrepo1-cipher-pass=new-secret-value\nrepo1-path=/b\n\
            [main]\nrepo1-s3-key=same\n";
        let (b, a) = mask_pair(before, after);
        assert_eq!(
            b,
            "[global]\nrepo1-cipher-pass=********\nrepo1-path=/a\n[main]\nrepo1-s3-key=********\n"
        );
        assert_eq!(
            a,
            "[global]\nrepo1-cipher-pass=******** (changed)\nrepo1-path=/b\n\
             [main]\nrepo1-s3-key=********\n"
        );
        let (_, a) = mask_pair("", "[global]\nrepo1-s3-key-secret=abc\n");
        assert_eq!(a, "[global]\nrepo1-s3-key-secret=******** (changed)\n");
        // The same secret in two sections: only the section where it changed says so.
        let (_, a) = mask_pair(
            "[a]\nrepo1-s3-key=k1\n[b]\nrepo1-s3-key=k1\n",
            "[a]\nrepo1-s3-key=k1\n[b]\nrepo1-s3-key=k2\n",
        );
        assert_eq!(
            a,
            "[a]\nrepo1-s3-key=********\n[b]\nrepo1-s3-key=******** (changed)\n"
        );
        // A commented-out old secret is masked too.
        let (b, _) = mask_pair("[global]\n# repo1-cipher-pass = OLD\n# a note\n", "");
        assert_eq!(b, "[global]\n#repo1-cipher-pass=********\n# a note\n");
    }
}
