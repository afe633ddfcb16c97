//! `pgbackrest info --output=json`, parsed once for every module: the stanza's status per
//! repository and what it means, its backups (oldest first) and its archive ranges.
//!
//! The output is read leniently: with a wrong cipher pass pgBackRest quotes the undecryptable
//! file in the status message, so the bytes are not UTF-8 and may hold raw control characters
//! that strict JSON refuses. They are decoded lossily and control characters become spaces
//! before parsing (JSON itself escapes every control character it means).

use crate::Error;
use serde::Serialize;
use serde_json::Value;

/// `status.code` 1: the stanza path is missing (the stanza does not exist).
pub const MISSING: i64 = 1;

/// A repository's view of the stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoStatus {
    /// `repoN`'s N.
    pub key: i64,
    /// `status.code`.
    pub code: i64,
    /// `status.message`.
    pub message: String,
    /// `cipher` (`none`, `aes-256-cbc`).
    pub cipher: Option<String>,
    /// The current database of the stanza in this repository (`system-id`, `version`).
    pub db: Option<Db>,
}

/// A database as pgBackRest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Db {
    /// `system-id` (as text: it exceeds JSON's safe integers).
    pub system_id: String,
    /// The major version, `15`.
    pub version: String,
}

/// The stanza's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The overall `status.code`.
    pub code: i64,
    /// The overall `status.message`.
    pub message: String,
    /// Per repository.
    pub repos: Vec<RepoStatus>,
}

impl Status {
    /// Whether no repository holds the stanza.
    pub fn missing(&self) -> bool {
        self.code == MISSING && self.repos.iter().all(|r| r.code == MISSING)
    }
}

/// Control characters (other than none) replaced by spaces, so that JSON parses.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// One backup set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Backup {
    /// The set's label, for example `20250101-000000F`.
    pub label: String,
    /// `full`, `diff` or `incr`.
    pub kind: String,
    /// Start, seconds since the epoch.
    pub start: i64,
    /// Stop, seconds since the epoch.
    pub stop: i64,
    /// The first and last WAL segment the backup needs (`archive.start`, `archive.stop`).
    pub wal_start: Option<String>,
    /// See `wal_start`.
    pub wal_stop: Option<String>,
    /// pgBackRest found page checksum errors while taking it (`error`).
    pub error: bool,
    /// The set it depends on (`prior`), for diff and incr.
    pub prior: Option<String>,
    /// The repository holding it (`database.repo-key`).
    pub repo_key: i64,
    /// The database entry it belongs to (`database.id`).
    pub db_id: i64,
    /// Database size (`info.size`), bytes.
    pub size: Option<i64>,
    /// Size in the repository (`info.repository.size`), bytes.
    pub repo_size: Option<i64>,
}

/// The WAL a repository holds for one database entry (`archive[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archive {
    /// `15-1`: the major version and the database id.
    pub id: String,
    /// The oldest segment.
    pub min: Option<String>,
    /// The newest segment.
    pub max: Option<String>,
    /// The repository.
    pub repo_key: i64,
    /// The database entry (`database.id`).
    pub db_id: i64,
}

/// Everything `info` says about one stanza.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Its status.
    pub status: Status,
    /// Its backups, oldest first.
    pub backups: Vec<Backup>,
    /// Its archive ranges.
    pub archives: Vec<Archive>,
    /// The PostgreSQL major version of the newest database entry (`15`).
    pub pg_version: Option<String>,
}

/// Parse `info --output=json` for `stanza`. A stanza absent from the output is missing.
pub fn parse(stdout: &str, stanza: &str) -> Result<Info, Error> {
    let found = parse_all(stdout)?
        .into_iter()
        .find(|(name, _)| name == stanza);
    Ok(match found {
        Some((_, info)) => info,
        None => Info {
            status: Status {
                code: MISSING,
                message: "missing stanza path".to_owned(),
                repos: Vec::new(),
            },
            backups: Vec::new(),
            archives: Vec::new(),
            pg_version: None,
        },
    })
}

/// Parse `info --output=json` for every stanza it lists: (name, info), in its order.
pub fn parse_all(stdout: &str) -> Result<Vec<(String, Info)>, Error> {
    let clean = sanitize(stdout);
    let start = clean
        .find('[')
        .ok_or_else(|| Error::Info(format!("pgbackrest info printed no JSON: {}", clean.trim())))?;
    let json: Value = serde_json::from_str(clean[start..].trim_end()).map_err(|e| {
        Error::Info(format!(
            "pgbackrest info printed JSON that does not parse: {e}"
        ))
    })?;
    let list = json
        .as_array()
        .ok_or_else(|| Error::Info("pgbackrest info printed JSON that is not a list".into()))?;
    Ok(list
        .iter()
        .map(|entry| (text(&entry["name"]), entry_info(entry)))
        .collect())
}

fn entry_info(entry: &Value) -> Info {
    let dbs = entry["db"].as_array().cloned().unwrap_or_default();
    let repos = entry["repo"]
        .as_array()
        .map(|repos| repos.iter().map(|r| repo_status(r, &dbs)).collect())
        .unwrap_or_default();
    let list_of = |key: &str| entry[key].as_array().cloned().unwrap_or_default();
    Info {
        status: Status {
            code: entry["status"]["code"].as_i64().unwrap_or(99),
            message: text(&entry["status"]["message"]),
            repos,
        },
        backups: list_of("backup").iter().filter_map(backup).collect(),
        archives: list_of("archive").iter().map(archive).collect(),
        pg_version: dbs
            .iter()
            .max_by_key(|d| d["id"].as_i64().unwrap_or_default())
            .map(|d| text(&d["version"]))
            .filter(|v| !v.is_empty()),
    }
}

/// What a `status.code` means, in pgBackRest's words.
pub fn meaning(code: i64) -> &'static str {
    match code {
        0 => "ok",
        1 => "missing stanza path",
        2 => "no valid backups",
        3 => "missing stanza data",
        4 => "different across repos",
        5 => "database mismatch across repos",
        6 => "requested backup not found",
        _ => "other (the repository could not be read: see the message)",
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().trim().to_owned()
}

fn opt_text(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn repo_status(r: &Value, dbs: &[Value]) -> RepoStatus {
    let key = r["key"].as_i64().unwrap_or(1);
    let id_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    // The current database is the one with the highest id in this repository.
    let db = dbs
        .iter()
        .filter(|d| d["repo-key"].as_i64().unwrap_or(1) == key)
        .max_by_key(|d| d["id"].as_i64().unwrap_or_default())
        .map(|d| Db {
            system_id: id_text(&d["system-id"]),
            version: text(&d["version"]),
        });
    RepoStatus {
        key,
        code: r["status"]["code"].as_i64().unwrap_or(99),
        message: text(&r["status"]["message"]),
        cipher: r["cipher"].as_str().map(str::to_owned),
        db,
    }
}

fn backup(b: &Value) -> Option<Backup> {
    Some(Backup {
        label: b["label"].as_str()?.to_owned(),
        kind: text(&b["type"]),
        start: b["timestamp"]["start"].as_i64()?,
        stop: b["timestamp"]["stop"].as_i64()?,
        wal_start: opt_text(&b["archive"]["start"]),
        wal_stop: opt_text(&b["archive"]["stop"]),
        error: b["error"].as_bool().unwrap_or(false),
        prior: opt_text(&b["prior"]),
        repo_key: b["database"]["repo-key"].as_i64().unwrap_or(1),
        db_id: b["database"]["id"].as_i64().unwrap_or(1),
        size: b["info"]["size"].as_i64(),
        repo_size: b["info"]["repository"]["size"].as_i64(),
    })
}

fn archive(a: &Value) -> Archive {
    Archive {
        id: text(&a["id"]),
        min: opt_text(&a["min"]),
        max: opt_text(&a["max"]),
        repo_key: a["database"]["repo-key"].as_i64().unwrap_or(1),
        db_id: a["database"]["id"].as_i64().unwrap_or(1),
    }
}

/// What the status allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No repository holds the stanza: create it.
    Missing,
    /// Every repository holds it (status 0 or 2), or some do and the others miss it (1).
    Exists {
        /// Repositories where it is missing (created by `stanza-create`).
        missing_on: Vec<i64>,
    },
    /// pgBackRest reports a problem that creating must not paper over.
    Broken {
        /// pgBackRest's error code when its message names one (`[095]`), else the status code.
        code: i32,
        /// What pgBackRest said.
        message: String,
    },
}

/// The code in a pgBackRest message such as `[095] unable to ...`.
fn bracket_code(message: &str) -> Option<i32> {
    let start = message.find('[')?;
    let rest = &message[start + 1..];
    let end = rest.find(']')?;
    let digits = &rest[..end];
    (digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// Decide from the codes: 1 missing; 0 and 2 fine; 3, 4, 5, 6, 99 on a repository broken. An
/// overall 4 ("different across repos") where every repository says 0, 1 or 2 is a stanza that
/// exists on some repositories only: `stanza-create` completes it.
pub fn verdict(status: &Status) -> Verdict {
    if status.missing() {
        return Verdict::Missing;
    }
    let broken_repo = status.repos.iter().find(|r| !matches!(r.code, 0..=2));
    if let Some(r) = broken_repo {
        return Verdict::Broken {
            code: bracket_code(&r.message).unwrap_or(r.code as i32),
            message: format!("repo{}: status {} ({})", r.key, r.code, r.message),
        };
    }
    let overall_ok = matches!(status.code, 0 | 2) || (status.code == 4 && !status.repos.is_empty());
    if !overall_ok {
        return Verdict::Broken {
            code: bracket_code(&status.message).unwrap_or(status.code as i32),
            message: format!("status {} ({})", status.code, status.message),
        };
    }
    Verdict::Exists {
        missing_on: status
            .repos
            .iter()
            .filter(|r| r.code == MISSING)
            .map(|r| r.key)
            .collect(),
    }
}

/// Whether `label` is spelled as pgBackRest names backups: `YYYYMMDD-HHMMSSF` for a full,
/// `YYYYMMDD-HHMMSSF_YYYYMMDD-HHMMSSD` (or `I`) for a differential or incremental one.
pub fn is_backup_label(label: &str) -> bool {
    fn stamp(s: &str) -> bool {
        let b = s.as_bytes();
        b.len() == 15
            && b.iter().enumerate().all(|(i, c)| {
                if i == 8 {
                    *c == b'-'
                } else {
                    c.is_ascii_digit()
                }
            })
    }
    let Some(full) = label.get(..16) else {
        return false;
    };
    if !(full.ends_with('F') && stamp(&full[..15])) {
        return false;
    }
    match label.get(16..) {
        Some("") => true,
        Some(rest) => {
            rest.len() == 17
                && rest.starts_with('_')
                && (rest.ends_with('D') || rest.ends_with('I'))
                && stamp(&rest[1..16])
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn backup_labels_are_recognised() {
        for good in [
            "20250101-000000F",
            "20250101-000000F_20250102-030405D",
            "20250101-000000F_20250102-030405I",
        ] {
            assert!(is_backup_label(good), "{good}");
        }
        for bad in [
            "",
            "20250101-000000",
            "20250101-000000F; rm -rf /",
            "20250101_000000F",
            "20250101-000000F_20250102-030405F",
            "2025010a-000000F",
            "20250101-000000F_",
            "é",
        ] {
            assert!(!is_backup_label(bad), "{bad}");
        }
    }
    use super::*;

    const OK: &str = r#"[{"archive":[],"backup":[],"cipher":"none",
        "db":[{"id":1,"repo-key":1,"system-id":7312345678901234567,"version":"15"}],
        "name":"main",
        "repo":[{"cipher":"none","key":1,"status":{"code":2,"message":"no valid backups"}}],
        "status":{"code":2,"lock":{},"message":"no valid backups"}}]"#;

    #[test]
    fn an_existing_stanza_without_backups_exists() {
        let s = parse(OK, "main").unwrap().status;
        assert_eq!(s.code, 2);
        assert_eq!(
            s.repos[0].db,
            Some(Db {
                system_id: "7312345678901234567".into(),
                version: "15".into()
            })
        );
        assert_eq!(verdict(&s), Verdict::Exists { missing_on: vec![] });
    }

    #[test]
    fn missing_stanza_and_empty_output_are_missing() {
        let missing = r#"[{"name":"main",
            "repo":[{"key":1,"status":{"code":1,"message":"missing stanza path"}}],
            "status":{"code":1,"message":"missing stanza path"},"db":[]}]"#;
        assert_eq!(
            verdict(&parse(missing, "main").unwrap().status),
            Verdict::Missing
        );
        assert_eq!(
            verdict(&parse("[]", "main").unwrap().status),
            Verdict::Missing
        );
    }

    #[test]
    fn raw_control_bytes_do_not_stop_parsing_and_codes_are_kept() {
        let text = "[{\"name\":\"main\",\"repo\":[{\"key\":1,\"status\":{\"code\":99,\
            \"message\":\"[095] unable to load info file: \u{1}\u{7f}garbage\u{fffd}\"}}],\
            \"status\":{\"code\":99,\"message\":\"other\"}}]";
        let s = parse(text, "main").unwrap().status;
        match verdict(&s) {
            Verdict::Broken { code, message } => {
                assert_eq!(code, 95);
                assert!(
                    message.starts_with("repo1: status 99 ([095] unable to load info file"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_database_mismatch_is_broken_not_missing() {
        let t = r#"[{"name":"main",
            "repo":[{"key":1,"status":{"code":5,"message":"database mismatch"}}],
            "status":{"code":5,"message":"database mismatch across repos"}}]"#;
        assert!(matches!(
            verdict(&parse(t, "main").unwrap().status),
            Verdict::Broken { code: 5, .. }
        ));
    }

    #[test]
    fn mixed_repositories_with_one_missing_exist_partially() {
        let t = r#"[{"name":"main",
            "repo":[{"key":1,"status":{"code":0,"message":"ok"}},
                    {"key":2,"status":{"code":1,"message":"missing stanza path"}}],
            "status":{"code":4,"message":"different across repos"}}]"#;
        assert_eq!(
            verdict(&parse(t, "main").unwrap().status),
            Verdict::Exists {
                missing_on: vec![2]
            }
        );
    }

    #[test]
    fn backups_archives_and_the_version_are_read() {
        let text = r#"[{"name":"main","status":{"code":0,"message":"ok"},
            "db":[{"version":"14","id":1},{"version":"15","id":2}],
            "archive":[{"id":"15-2","min":"000000010000000000000003",
                "max":"000000020000000000000009","database":{"id":2,"repo-key":1}}],
            "backup":[{"label":"20250101-000000F","type":"full","error":true,
                "timestamp":{"start":1,"stop":2},"database":{"id":2,"repo-key":1},
                "archive":{"start":"000000010000000000000003",
                    "stop":"000000010000000000000004"},
                "info":{"size":100,"repository":{"size":40}}},
              {"label":"broken"}]}]"#;
        let info = parse(text, "main").unwrap();
        assert_eq!(info.pg_version.as_deref(), Some("15"));
        assert_eq!(
            info.backups.len(),
            1,
            "an entry without times is not a backup"
        );
        let b = &info.backups[0];
        assert_eq!(
            (b.label.as_str(), b.kind.as_str(), b.error),
            ("20250101-000000F", "full", true)
        );
        assert_eq!(b.wal_stop.as_deref(), Some("000000010000000000000004"));
        assert_eq!((b.size, b.repo_size, b.db_id), (Some(100), Some(40), 2));
        assert_eq!(
            info.archives[0].max.as_deref(),
            Some("000000020000000000000009")
        );
    }
}
