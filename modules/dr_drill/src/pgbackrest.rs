//! What the drill reads from pgBackRest: `info --output=json`, the repository path in the
//! configuration, `verify`'s report (it exits 0 even when it finds errors) and the backup set
//! that `restore` chose.

use serde::Deserialize;
use serde_json::Value;

/// One backup set of `info --output=json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Backup {
    /// The set's label, for example `20250101-000000F`.
    pub label: String,
    /// `full`, `diff` or `incr`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Start and stop times.
    pub timestamp: Times,
}

/// Start and stop of a backup, seconds since the epoch.
#[derive(Debug, Clone, Deserialize)]
pub struct Times {
    /// Start.
    pub start: i64,
    /// Stop.
    pub stop: i64,
}

/// The stanza as `info` shows it.
#[derive(Debug, Clone)]
pub struct StanzaInfo {
    /// `status.code` (0 ok, 2 no valid backup, ...).
    pub status_code: i64,
    /// `status.message`.
    pub status_message: String,
    /// The backups, oldest first.
    pub backups: Vec<Backup>,
    /// The PostgreSQL major version of the current database entry (for example `15`).
    pub pg_version: Option<String>,
}

/// Parse `pgbackrest --stanza=S info --output=json`.
pub fn parse_info(text: &str, stanza: &str) -> Result<StanzaInfo, String> {
    let all: Vec<Value> =
        serde_json::from_str(text).map_err(|e| format!("pgbackrest info is not JSON: {e}"))?;
    let entry = all
        .iter()
        .find(|s| s["name"] == stanza)
        .ok_or_else(|| format!("pgbackrest info does not list stanza '{stanza}'"))?;
    let backups = serde_json::from_value(entry["backup"].clone()).unwrap_or_default();
    Ok(StanzaInfo {
        status_code: entry["status"]["code"].as_i64().unwrap_or(99),
        status_message: entry["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        backups,
        pg_version: entry["db"]
            .as_array()
            .and_then(|dbs| dbs.last())
            .and_then(|db| db["version"].as_str())
            .map(str::to_owned),
    })
}

/// The repository settings the sandbox needs: (`repo1-type`, `repo1-path`), from [global] or the
/// stanza's section of a pgbackrest.conf.
pub fn repo_settings(conf: &str, stanza: &str) -> (String, String) {
    let mut kind = "posix".to_owned();
    let mut path = "/var/lib/pgbackrest".to_owned();
    let mut section = String::new();
    for line in conf.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        if section != "global" && section != stanza {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "repo1-type" => v.trim().clone_into(&mut kind),
                "repo1-path" => v.trim().clone_into(&mut path),
                _ => {}
            }
        }
    }
    (kind, path)
}

/// The errors `verify` reported (empty: the repository verified clean).
pub fn verify_errors(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("status: error") || l.contains(" error:") || l.contains("invalid"))
                && !l.contains("invalid: 0")
        })
        .map(|l| l.trim().to_owned())
        .collect()
}

/// The backup set named by `restore` at info level (`restore backup set LABEL, ...`).
pub fn restored_set(output: &str) -> Option<String> {
    let at = output.find("restore backup set ")? + "restore backup set ".len();
    output[at..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_gives_backups_and_version() {
        let text = r#"[{"name":"main","status":{"code":0,"message":"ok"},"db":[{"version":"15","id":1}],
            "backup":[{"label":"20250101-000000F","type":"full","timestamp":{"start":1,"stop":2}}]}]"#;
        let info = parse_info(text, "main").unwrap();
        assert_eq!(info.status_code, 0);
        assert_eq!(info.backups[0].label, "20250101-000000F");
        assert_eq!(info.pg_version.as_deref(), Some("15"));
        assert!(parse_info(text, "other").is_err());
    }

    #[test]
    fn repo_path_comes_from_global_or_the_stanza() {
        let conf = "[global]\nrepo1-path=/a\n[other]\nrepo1-path=/b\n[main]\npg1-path=/x\n";
        assert_eq!(repo_settings(conf, "main"), ("posix".into(), "/a".into()));
        assert_eq!(repo_settings(conf, "other").1, "/b");
    }

    #[test]
    fn restore_output_names_the_set() {
        let out =
            "P00   INFO: repo1: restore backup set 20250520-101010F, recovery will start at x";
        assert_eq!(restored_set(out).as_deref(), Some("20250520-101010F"));
    }

    #[test]
    fn verify_errors_are_found_in_its_report() {
        assert!(verify_errors("P00 INFO: stanza: main\n    status: ok\n").is_empty());
        assert_eq!(verify_errors("  status: error\n").len(), 1);
    }
}
