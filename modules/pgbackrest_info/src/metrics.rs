//! The node_exporter textfile-collector file of one stanza, in the Prometheus text format: what
//! `info` says about its backups, so that alerts can tell a backup too old or taken with errors
//! between two restore drills.
//!
//! Every metric carries the `stanza` label; the per-type ones carry `type` (`full`, `diff`,
//! `incr`) for each type the stanza holds, from its newest set of that type. The count is
//! `_sets`, not `_count`: Prometheus reserves that suffix for histograms and summaries and
//! `promtool check metrics` refuses it on a gauge.

use pgbackrest::info::{Backup, Info};
use textfile::label;

/// The backup types, each a `type` label value.
const TYPES: [&str; 3] = ["full", "diff", "incr"];

pub use textfile::valid_prefix;

/// The file name for a stanza: `<prefix>_<stanza>.prom`.
pub fn file_name(prefix: &str, stanza: &str) -> String {
    format!("{prefix}_{stanza}.prom")
}

/// Render the file of `stanza`; `now` is the time it is written (seconds since the epoch).
pub fn render(prefix: &str, stanza: &str, info: &Info, now: i64) -> String {
    let st = format!("stanza=\"{}\"", label(stanza));
    let newest: Vec<(&str, &Backup)> = TYPES
        .iter()
        .filter_map(|&t| {
            let of_type = info.backups.iter().filter(|b| b.kind == t);
            of_type.max_by_key(|b| b.stop).map(|b| (t, b))
        })
        .collect();
    let by_type = |value: fn(&Backup) -> Option<i64>| -> Vec<(String, i64)> {
        newest
            .iter()
            .filter_map(|(t, b)| value(b).map(|v| (format!("{st},type=\"{t}\""), v)))
            .collect()
    };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(String, i64)]| {
        textfile::gauge(&mut out, prefix, name, help, samples)
    };
    gauge(
        "status_code",
        "The stanza's status code in pgbackrest info (0 ok, 1 missing stanza path, 2 no valid \
         backups, 99 unreadable repository, ...).",
        &[(st.clone(), info.status.code)],
    );
    gauge(
        "last_timestamp_seconds",
        "Stop time of the newest backup of each type, seconds since the epoch.",
        &by_type(|b| Some(b.stop)),
    );
    gauge(
        "last_duration_seconds",
        "How long the newest backup of each type took (its stop time less its start time).",
        &by_type(|b| Some(b.stop - b.start)),
    );
    let labels: Vec<(String, i64)> = newest
        .iter()
        .map(|(t, b)| {
            (
                format!("{st},type=\"{t}\",label=\"{}\"", label(&b.label)),
                1,
            )
        })
        .collect();
    gauge(
        "last_label_info",
        "The label of the newest backup of each type (info metric, always 1).",
        &labels,
    );
    gauge(
        "last_size_bytes",
        "Database size of the newest backup of each type.",
        &by_type(|b| b.size),
    );
    gauge(
        "last_repo_size_bytes",
        "Size in the repository of the newest backup of each type.",
        &by_type(|b| b.repo_size),
    );
    let sets: Vec<(String, i64)> = TYPES
        .iter()
        .map(|t| {
            let n = info.backups.iter().filter(|b| b.kind == *t).count();
            (
                format!("{st},type=\"{t}\""),
                i64::try_from(n).unwrap_or(i64::MAX),
            )
        })
        .collect();
    gauge(
        "sets",
        "Backup sets of each type the repository holds.",
        &sets,
    );
    gauge(
        "error",
        "Whether pgBackRest found page checksum errors while taking the newest backup of each \
         type (1) or not (0).",
        &by_type(|b| Some(i64::from(b.error))),
    );
    gauge(
        "info_timestamp_seconds",
        "When this file was written from pgbackrest info, seconds since the epoch.",
        &[(st.clone(), now)],
    );
    // The newest segment of the newest database entry (a stanza-upgrade starts timeline 1 again,
    // so segment names compare only within one entry).
    let newest_segment = info
        .archives
        .iter()
        .filter_map(|a| a.max.as_deref().map(|m| (a.db_id, m)))
        .max();
    gauge(
        "archive_max_info",
        "The newest WAL segment in the archive (info metric, always 1).",
        &newest_segment
            .map(|(_, seg)| vec![(format!("{st},segment=\"{}\"", label(seg)), 1)])
            .unwrap_or_default(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgbackrest::info::{Archive, Status};

    fn backup(label: &str, kind: &str, stop: i64, error: bool) -> Backup {
        Backup {
            label: label.into(),
            kind: kind.into(),
            start: stop - 10,
            stop,
            wal_start: None,
            wal_stop: None,
            error,
            prior: None,
            repo_key: 1,
            db_id: 1,
            size: Some(stop * 2),
            repo_size: None,
        }
    }

    fn archive(db_id: i64, max: &str) -> Archive {
        Archive {
            id: format!("15-{db_id}"),
            min: None,
            max: Some(max.into()),
            repo_key: 1,
            db_id,
        }
    }

    #[test]
    fn the_newest_set_of_each_type_counts_and_absent_types_leave_their_samples_out() {
        let info = Info {
            status: Status {
                code: 0,
                message: "ok".into(),
                repos: Vec::new(),
            },
            backups: vec![
                backup("F1", "full", 100, false),
                backup("D1", "diff", 200, true),
                backup("F2", "full", 300, false),
            ],
            archives: vec![
                archive(2, "000000010000000000000002"),
                archive(1, "000000030000000000000009"),
            ],
            pg_version: None,
        };
        let text = render("p", "main", &info, 400);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(has("p_status_code{stanza=\"main\"} 0"), "{text}");
        assert!(has(
            "p_last_timestamp_seconds{stanza=\"main\",type=\"full\"} 300"
        ));
        assert!(has(
            "p_last_timestamp_seconds{stanza=\"main\",type=\"diff\"} 200"
        ));
        // No incr set: only its count of 0 names it.
        let incr: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("type=\"incr\""))
            .collect();
        assert_eq!(incr, ["p_sets{stanza=\"main\",type=\"incr\"} 0"]);
        assert!(has("p_last_size_bytes{stanza=\"main\",type=\"full\"} 600"));
        assert!(has(
            "p_last_duration_seconds{stanza=\"main\",type=\"diff\"} 10"
        ));
        assert!(has(
            "p_last_label_info{stanza=\"main\",type=\"full\",label=\"F2\"} 1"
        ));
        assert!(
            !text.contains("label=\"F1\""),
            "only the newest full: {text}"
        );
        assert!(
            !text.contains("p_last_repo_size_bytes"),
            "no sample, no HELP either"
        );
        assert!(has("p_sets{stanza=\"main\",type=\"full\"} 2"));
        assert!(has("p_sets{stanza=\"main\",type=\"incr\"} 0"));
        assert!(has("p_error{stanza=\"main\",type=\"diff\"} 1"));
        assert!(has("p_error{stanza=\"main\",type=\"full\"} 0"));
        assert!(has("p_info_timestamp_seconds{stanza=\"main\"} 400"));
        // The newer database entry wins over a greater segment name of an older one.
        assert!(has(
            "p_archive_max_info{stanza=\"main\",segment=\"000000010000000000000002\"} 1"
        ));
    }

    #[test]
    fn only_metric_name_characters_make_a_prefix() {
        assert!(valid_prefix("veza_backup") && valid_prefix("_x1"));
        assert!(!valid_prefix("") && !valid_prefix("1x") && !valid_prefix("a-b"));
        assert!(!valid_prefix("a:b") && !valid_prefix(&"a".repeat(101)));
    }
}
