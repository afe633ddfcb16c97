//! What this module needs from `pgbackrest.conf`: its secrets, the lock path and the stanza's
//! data directory.
//!
//! pgBackRest echoes parts of its configuration in its messages (S3 `SignatureDoesNotMatch`
//! quotes the access key), so every value the option table marks as secure, in the file, in the
//! files of `config-include-path` and in `PGBACKREST_*` variables, is registered for scrubbing
//! before pgBackRest runs.

use anyhow::Context as _;
use pgbackrest_config::options::lookup;
use std::path::{Path, PathBuf};

/// pgBackRest's default `lock-path`.
pub const DEFAULT_LOCK_PATH: &str = "/tmp/pgbackrest";
/// pgBackRest's default `config-include-path`.
pub const DEFAULT_INCLUDE_PATH: &str = "/etc/pgbackrest/conf.d";

/// The parts of the configuration this module reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Conf {
    /// Values of secure options (cipher passes, S3 keys).
    pub secrets: Vec<String>,
    /// `lock-path` as the stanza sees it.
    pub lock_path: Option<String>,
    /// `pg1-path` of the stanza.
    pub pg1_path: Option<String>,
    /// `config-include-path`, when set in `[global]`.
    pub include_path: Option<String>,
}

/// Parse one file's text for `stanza` (INI: `[section]`, `key=value`, `#` comments).
pub fn parse(text: &str, stanza: &str, conf: &mut Conf) {
    let mut section = String::new();
    let mut global_lock: Option<String> = None;
    let mut stanza_lock: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if lookup(key).is_some_and(|o| o.secret) {
            conf.secrets.push(value.to_owned());
        }
        // `[global:command]` and `[stanza:command]` sections are read for secrets only.
        match (section.as_str(), key) {
            ("global", "lock-path") => global_lock = Some(value.to_owned()),
            ("global", "config-include-path") => conf.include_path = Some(value.to_owned()),
            (s, "lock-path") if s == stanza => stanza_lock = Some(value.to_owned()),
            (s, "pg1-path") if s == stanza => conf.pg1_path = Some(value.to_owned()),
            _ => {}
        }
    }
    if let Some(lock) = stanza_lock.or(global_lock) {
        conf.lock_path = Some(lock);
    }
}

/// Read the configuration file and its include directory.
pub fn read(path: &Path, stanza: &str) -> anyhow::Result<Conf> {
    let mut conf = Conf::default();
    let text =
        std::fs::read(path).with_context(|| format!("config: reading {}", path.display()))?;
    parse(&String::from_utf8_lossy(&text), stanza, &mut conf);
    let include = PathBuf::from(
        conf.include_path
            .clone()
            .unwrap_or_else(|| DEFAULT_INCLUDE_PATH.to_owned()),
    );
    if let Ok(entries) = std::fs::read_dir(&include) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        ansible_module::sort_small(&mut files, |a, b| a < b);
        for file in files {
            if let Ok(text) = std::fs::read(&file) {
                let lock = conf.lock_path.take();
                parse(&String::from_utf8_lossy(&text), stanza, &mut conf);
                conf.lock_path = conf.lock_path.take().or(lock);
            }
        }
    }
    Ok(conf)
}

/// Secure values given to pgBackRest by environment (`PGBACKREST_REPO1_CIPHER_PASS`).
pub fn env_secrets() -> Vec<String> {
    std::env::vars()
        .filter_map(|(k, v)| {
            let key = k
                .strip_prefix("PGBACKREST_")?
                .to_ascii_lowercase()
                .replace('_', "-");
            lookup(&key).filter(|o| o.secret).map(|_| v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lock_path_and_pg1_path_are_found() {
        let mut conf = Conf::default();
        parse(
            "[global]\nrepo1-cipher-pass = pass-canary\nrepo1-s3-key=AKIA1\nrepo1-s3-key-secret=sek\nlock-path=/g\nrepo1-path=/r\n\
             # comment=x\n[main]\npg1-path=/data\nlock-path=/s\n[other]\npg1-path=/o\n[global:backup]\nrepo2-cipher-pass=p2\n",
            "main",
            &mut conf,
        );
        assert_eq!(conf.secrets, ["pass-canary", "AKIA1", "sek", "p2"]);
        assert_eq!(conf.lock_path.as_deref(), Some("/s"));
        assert_eq!(conf.pg1_path.as_deref(), Some("/data"));
    }

    #[test]
    fn global_lock_path_applies_without_a_stanza_one() {
        let mut conf = Conf::default();
        parse(
            "[global]\nlock-path=/g\n[main]\npg1-path=/d\n",
            "main",
            &mut conf,
        );
        assert_eq!(conf.lock_path.as_deref(), Some("/g"));
    }
}
