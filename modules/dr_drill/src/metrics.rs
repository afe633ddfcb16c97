//! The node_exporter textfile-collector file a drill leaves behind, in the Prometheus text format.
//!
//! One file per stanza, written atomically (temp file + rename) so the collector never reads half
//! of it. `_last_success_timestamp_seconds` survives failed drills: it is carried over from the
//! previous file.

use std::path::{Path, PathBuf};
use textfile::{gauge, label};

/// What one drill measured.
#[derive(Debug, Default)]
pub struct Report {
    /// The stanza.
    pub stanza: String,
    /// Whether the drill passed.
    pub success: bool,
    /// Why it failed (a short token such as `smoke_failed`).
    pub reason: Option<String>,
    /// Start of the drill, seconds since the epoch.
    pub run_timestamp: f64,
    /// Whole drill, seconds.
    pub duration: f64,
    /// Restore start to recovery end (the measured RTO), when it got that far.
    pub restore_seconds: Option<f64>,
    /// Drill start minus the time of the last replayed transaction.
    pub recovery_target_age: Option<f64>,
    /// Drill start minus the restored freshness marker (the measured data loss, RPO).
    pub data_loss: Option<f64>,
    /// Drill start minus the restored backup's stop time.
    pub backup_age: Option<f64>,
    /// The data-loss budget (`max_data_loss`), when set.
    pub max_data_loss: Option<f64>,
    /// The backup-age budget (`max_backup_age`), when set.
    pub max_backup_age: Option<f64>,
    /// The restored backup set.
    pub backup_label: Option<String>,
    /// Check name -> passed (`Some(true)`), failed (`Some(false)`) or skipped (`None`).
    pub checks: Vec<(String, Option<bool>)>,
}

/// The metrics file for a stanza.
pub fn path(dir: &Path, prefix: &str, stanza: &str) -> PathBuf {
    dir.join(format!("{prefix}_{stanza}.prom"))
}

/// The previous `_last_success_timestamp_seconds` in `text`, if any.
pub fn previous_success(text: &str, prefix: &str) -> Option<f64> {
    let name = format!("{prefix}_last_success_timestamp_seconds{{");
    text.lines()
        .find(|l| l.starts_with(&name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Render the file. `last_success` is the timestamp of the last passing drill (this one when it
/// passed).
pub fn render(prefix: &str, r: &Report, last_success: Option<f64>) -> String {
    let st = format!("stanza=\"{}\"", label(&r.stanza));
    let mut out = String::new();
    // One sample per stanza each; absent values leave their metric out.
    let scalars: [(&str, &str, Option<f64>); 11] = [
        (
            "last_success",
            "Whether the last restore drill passed (1) or failed (0).",
            Some(f64::from(u8::from(r.success))),
        ),
        (
            "last_run_timestamp_seconds",
            "Start of the last restore drill, seconds since the epoch.",
            Some(r.run_timestamp),
        ),
        (
            "last_success_timestamp_seconds",
            "Start of the last passing restore drill, seconds since the epoch.",
            last_success,
        ),
        (
            "duration_seconds",
            "Wall time of the last restore drill.",
            Some(round(r.duration)),
        ),
        (
            "restore_seconds",
            "Restore start to end of recovery in the last drill (measured RTO).",
            r.restore_seconds.map(round),
        ),
        (
            "recovery_target_age_seconds",
            "Drill start minus the time of the last transaction the restore replayed.",
            r.recovery_target_age.map(round),
        ),
        (
            "data_loss_seconds",
            "Drill start minus the newest restored data (freshness marker): the measured RPO.",
            r.data_loss.map(round),
        ),
        (
            "max_data_loss_seconds",
            "The drill's data-loss budget (max_data_loss).",
            r.max_data_loss.map(round),
        ),
        (
            "backup_age_seconds",
            "Drill start minus the end of the backup set the drill restored.",
            r.backup_age.map(round),
        ),
        (
            "max_backup_age_seconds",
            "The drill's backup-age budget (max_backup_age).",
            r.max_backup_age.map(round),
        ),
        (
            "backup_label",
            "The backup set the last drill restored (info metric, always 1).",
            r.backup_label.as_ref().map(|_| 1.0),
        ),
    ];
    for (name, help, value) in scalars {
        let labels = match (name, &r.backup_label) {
            ("backup_label", Some(b)) => format!("{st},label=\"{}\"", label(b)),
            _ => st.clone(),
        };
        gauge(
            &mut out,
            prefix,
            name,
            help,
            value.map(|v| (labels, v)).as_slice(),
        );
    }
    let by_check = |skipped: bool| -> Vec<(String, f64)> {
        r.checks
            .iter()
            .filter(|(_, ok)| ok.is_none() == skipped)
            .map(|(c, ok)| {
                let value = f64::from(u8::from(ok.unwrap_or(true)));
                (format!("{st},check=\"{}\"", label(c)), value)
            })
            .collect()
    };
    gauge(
        &mut out,
        prefix,
        "check_success",
        "Whether each check of the last drill that ran passed (1) or failed (0).",
        &by_check(false),
    );
    gauge(
        &mut out,
        prefix,
        "check_skipped",
        "Checks of the last drill that could not apply (1; data checksums off): not a pass.",
        &by_check(true),
    );
    let reason = r.reason.as_deref().filter(|_| !r.success);
    gauge(
        &mut out,
        prefix,
        "failure_reason",
        "Why the last drill failed (info metric, always 1; absent after a pass).",
        &reason
            .map(|why| vec![(format!("{st},reason=\"{}\"", label(why)), 1.0)])
            .unwrap_or_default(),
    );
    out
}

fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_drill_keeps_the_last_success_time_and_names_the_reason() {
        let r = Report {
            stanza: "main".into(),
            success: false,
            reason: Some("smoke_failed".into()),
            run_timestamp: 200.0,
            duration: 3.25,
            checks: vec![("smoke".into(), Some(false)), ("checksums".into(), None)],
            data_loss: Some(12.5),
            ..Report::default()
        };
        let text = render("p", &r, Some(100.0));
        assert!(
            text.contains("p_last_success{stanza=\"main\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("p_failure_reason{stanza=\"main\",reason=\"smoke_failed\"} 1\n"));
        assert!(text.contains("p_check_success{stanza=\"main\",check=\"smoke\"} 0\n"));
        assert!(text.contains("p_check_skipped{stanza=\"main\",check=\"checksums\"} 1\n"));
        assert!(!text.contains("p_check_success{stanza=\"main\",check=\"checksums\"}"));
        assert!(text.contains("p_data_loss_seconds{stanza=\"main\"} 12.5\n"));
        assert_eq!(previous_success(&text, "p"), Some(100.0));
        assert!(!text.contains("p_restore_seconds"));
    }
}
