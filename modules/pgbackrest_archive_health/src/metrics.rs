//! The node_exporter textfile-collector files of one stanza: the minute's archiving health
//! (`<prefix>_<stanza>.prom`) and the hourly continuity check (`<prefix>-continuity_<stanza>.prom`;
//! a `-` cannot be part of a prefix, so no stanza name makes the two names collide).
//!
//! Every node writes them; only the writable primary's count. A node that is not the primary
//! writes `<prefix>_primary 0` and nothing of archiving, so a former primary's numbers vanish the
//! minute it stops being one, and alerts join on `<prefix>_primary == 1`.

use crate::continuity::{Class, Report};
use crate::state::Archiver;
use pgbackrest::wal::Segment;
use textfile::label;

/// What the repository says, on the primary.
#[derive(Debug, Clone, Default)]
pub struct Repo {
    /// `pgbackrest info`'s status code for the stanza (99 when info could not run).
    pub status_code: i64,
    /// The newest archived segment and its name.
    pub newest: Option<Segment>,
    /// When the newest segment was stored (repo-ls), seconds since the epoch.
    pub newest_time: Option<i64>,
}

/// One minute's observations.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The writable primary, per every witness asked.
    pub primary: bool,
    /// PostgreSQL answered.
    pub postgres_up: bool,
    /// `pg_stat_archiver` and the position (the primary only).
    pub archiver: Option<Archiver>,
    /// The repository (the primary only).
    pub repo: Option<Repo>,
}

impl Health {
    /// Complete segments the primary wrote after the newest archived one.
    pub fn behind(&self) -> Option<u64> {
        let cur = self.archiver.as_ref()?.current_segment?;
        let newest = self.repo.as_ref()?.newest?;
        Some(cur.number.saturating_sub(newest.number.saturating_add(1)))
    }
}

/// The file name of the minute's file.
pub fn health_file(prefix: &str, stanza: &str) -> String {
    format!("{prefix}_{stanza}.prom")
}

/// The file name of the continuity check's file.
pub fn continuity_file(prefix: &str, stanza: &str) -> String {
    format!("{prefix}-continuity_{stanza}.prom")
}

fn samples<V>(st: &str, v: Option<V>) -> Vec<(String, V)> {
    v.map(|v| vec![(st.to_owned(), v)]).unwrap_or_default()
}

fn info(st: &str, segment: Option<&str>) -> Vec<(String, i64)> {
    segment
        .map(|s| vec![(format!("{st},segment=\"{}\"", label(s)), 1)])
        .unwrap_or_default()
}

/// Render the minute's file; `now` in seconds since the epoch.
pub fn render_health(prefix: &str, stanza: &str, h: &Health, now: i64) -> String {
    let st = format!("stanza=\"{}\"", label(stanza));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, s: &[(String, i64)]| {
        textfile::gauge(&mut out, prefix, name, help, s)
    };
    gauge(
        "primary",
        "Whether this node is the writable primary (1), whose archiving counts, or not (0).",
        &[(st.clone(), i64::from(h.primary))],
    );
    gauge(
        "postgres_up",
        "Whether PostgreSQL answered (1) or not (0).",
        &[(st.clone(), i64::from(h.postgres_up))],
    );
    gauge(
        "collect_timestamp_seconds",
        "When this file was written, seconds since the epoch.",
        &[(st.clone(), now)],
    );
    let a = h.archiver.as_ref();
    let repo = h.repo.as_ref();
    let seg_name = |s: Segment| a.map(|a| s.name(a.seg_size));
    gauge(
        "last_archived_timestamp_seconds",
        "pg_stat_archiver.last_archived_time, seconds since the epoch.",
        &samples(&st, a.and_then(|a| a.last_archived_time)),
    );
    gauge(
        "last_failed_timestamp_seconds",
        "pg_stat_archiver.last_failed_time, seconds since the epoch.",
        &samples(&st, a.and_then(|a| a.last_failed_time)),
    );
    gauge(
        "last_archived_info",
        "pg_stat_archiver.last_archived_wal (info metric, always 1).",
        &info(&st, a.and_then(|a| a.last_archived_wal.as_deref())),
    );
    gauge(
        "last_failed_info",
        "pg_stat_archiver.last_failed_wal (info metric, always 1).",
        &info(&st, a.and_then(|a| a.last_failed_wal.as_deref())),
    );
    gauge(
        "stats_reset_timestamp_seconds",
        "pg_stat_archiver.stats_reset, seconds since the epoch.",
        &samples(&st, a.and_then(|a| a.stats_reset)),
    );
    gauge(
        "timeout_seconds",
        "The archive_timeout setting, seconds (0: off).",
        &samples(&st, a.map(|a| a.archive_timeout)),
    );
    gauge(
        "segment_size_bytes",
        "The wal_segment_size setting, bytes.",
        &samples(&st, a.and_then(|a| i64::try_from(a.seg_size).ok())),
    );
    gauge(
        "current_wal_lsn_bytes",
        "pg_current_wal_lsn() as a byte position.",
        &samples(
            &st,
            a.and_then(|a| a.current_lsn)
                .and_then(|l| i64::try_from(l).ok()),
        ),
    );
    let current = a.and_then(|a| a.current_segment);
    gauge(
        "current_segment",
        "The number of the WAL segment being written (its position / wal_segment_size).",
        &samples(&st, current.and_then(|c| i64::try_from(c.number).ok())),
    );
    gauge(
        "current_segment_info",
        "The WAL segment being written (info metric, always 1).",
        &info(&st, current.and_then(seg_name).as_deref()),
    );
    gauge(
        "repo_status_code",
        "pgbackrest info's status code for the stanza (0 ok; 99 also when info could not run).",
        &samples(&st, repo.map(|r| r.status_code)),
    );
    let newest = repo.and_then(|r| r.newest);
    gauge(
        "repo_newest_segment",
        "The number of the newest WAL segment in the repository.",
        &samples(&st, newest.and_then(|n| i64::try_from(n.number).ok())),
    );
    gauge(
        "repo_newest_info",
        "The newest WAL segment in the repository (info metric, always 1).",
        &info(&st, newest.and_then(seg_name).as_deref()),
    );
    gauge(
        "repo_newest_timestamp_seconds",
        "When the newest WAL segment was stored in the repository, seconds since the epoch.",
        &samples(&st, repo.and_then(|r| r.newest_time)),
    );
    gauge(
        "behind_segments",
        "Complete WAL segments the primary wrote after the repository's newest one.",
        &samples(&st, h.behind().and_then(|b| i64::try_from(b).ok())),
    );
    textfile::counter(
        &mut out,
        prefix,
        "archived_total",
        "pg_stat_archiver.archived_count: WAL files archived since the statistics' reset.",
        &samples(&st, a.map(|a| a.archived_count)),
    );
    textfile::counter(
        &mut out,
        prefix,
        "failed_total",
        "pg_stat_archiver.failed_count: failed attempts to archive since the statistics' reset.",
        &samples(&st, a.map(|a| a.failed_count)),
    );
    out
}

/// Render the continuity file; `report` only on the primary.
pub fn render_continuity(prefix: &str, stanza: &str, report: Option<&Report>, now: i64) -> String {
    let st = format!("stanza=\"{}\"", label(stanza));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, s: &[(String, i64)]| {
        textfile::gauge(&mut out, prefix, name, help, s)
    };
    gauge(
        "continuity_timestamp_seconds",
        "When the archive's continuity was last checked (or found not to be this node's to \
         check), seconds since the epoch.",
        &[(st.clone(), now)],
    );
    let Some(r) = report else {
        return out;
    };
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    gauge(
        "continuity_checked_segments",
        "WAL segments from the oldest retained backup's start to the newest archived one.",
        &[(st.clone(), clamp(r.expected))],
    );
    gauge(
        "continuity_missing_segments",
        "Segments missing from that range (lost: later segments are long stored; delayed: only \
         fresh ones follow; uploading: complete on the primary, newer than the newest archived).",
        &Class::ALL
            .iter()
            .map(|c| (format!("{st},class=\"{}\"", c.name()), clamp(r.count(*c))))
            .collect::<Vec<_>>(),
    );
    gauge(
        "continuity_first_missing_info",
        "The first missing segment (or timeline history file) of each class (info metric, \
         always 1).",
        &r.missing
            .iter()
            .map(|(c, _, s)| {
                let labels = format!("{st},class=\"{}\",segment=\"{}\"", c.name(), label(s));
                (labels, 1)
            })
            .collect::<Vec<_>>(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_writes_that_it_is_not_the_primary_and_nothing_of_archiving() {
        let h = Health {
            primary: false,
            postgres_up: true,
            ..Health::default()
        };
        let text = render_health("p", "main", &h, 5);
        let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            names,
            [
                "p_primary{stanza=\"main\"} 0",
                "p_postgres_up{stanza=\"main\"} 1",
                "p_collect_timestamp_seconds{stanza=\"main\"} 5"
            ]
        );
    }

    #[test]
    fn the_primary_reports_counters_positions_and_how_far_behind_the_repository_is() {
        let seg = |n| Segment { tli: 1, number: n };
        let h = Health {
            primary: true,
            postgres_up: true,
            archiver: Some(Archiver {
                archived_count: 7,
                failed_count: 2,
                seg_size: 16 << 20,
                current_segment: Some(seg(12)),
                ..Archiver::default()
            }),
            repo: Some(Repo {
                status_code: 0,
                newest: Some(seg(9)),
                newest_time: Some(100),
            }),
        };
        let text = render_health("p", "main", &h, 5);
        let has = |l: &str| text.lines().any(|x| x == l);
        assert!(has("# TYPE p_archived_total counter"), "{text}");
        assert!(has("p_failed_total{stanza=\"main\"} 2"));
        assert!(has("p_behind_segments{stanza=\"main\"} 2"), "10 and 11");
        assert!(has(
            "p_repo_newest_info{stanza=\"main\",segment=\"000000010000000000000009\"} 1"
        ));
        assert!(
            !text.contains("p_last_failed_timestamp_seconds"),
            "never failed"
        );
        let c = render_continuity("p", "main", None, 9);
        assert_eq!(c.lines().filter(|l| !l.starts_with('#')).count(), 1);
    }
}
