//! The record of one scheduled backup run: its type, when it ended and how (success, failure or
//! a standby's skip), as its own node_exporter textfile `<prefix>_<stanza>@<type>.prom`.
//!
//! The repository's file ([`crate::metrics`]) says what the repository holds; it cannot say that
//! a backup was tried and failed, nor tell a standby's skip from a timer that never fired. This
//! one can: the backup services write it from `ExecStopPost=`, which systemd runs after every
//! start of the unit, with `$SERVICE_RESULT` saying how the start ended.

use textfile::label;

ansible_module::choices! {
    /// `run_type`: the pgBackRest backup type of the run.
    pub enum RunType {
        /// `--type=full`
        Full = "full",
        /// `--type=diff`
        Diff = "diff",
        /// `--type=incr`
        Incr = "incr",
    }
}

ansible_module::choices! {
    /// `run_result`: how the run ended, or where to read it.
    pub enum RunResult {
        /// The backup was taken.
        Success = "success",
        /// The backup was tried and failed.
        Failed = "failed",
        /// Not tried: this node is not the primary (the unit's `ExecCondition=` said so).
        Skipped = "skipped",
        /// Read `$SERVICE_RESULT`, which systemd sets for `ExecStopPost=` commands.
        Systemd = "systemd",
    }
}

/// A run's outcome, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The backup was taken.
    Success,
    /// The backup was tried and failed.
    Failed,
    /// Not tried on this node.
    Skipped,
}

impl Outcome {
    /// Every outcome, in the order of the file's samples.
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::Failed, Outcome::Skipped];

    /// The `result` label value.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The outcome `result` gives, reading `service_result` (`$SERVICE_RESULT`) for `systemd`.
///
/// systemd's values: `success`; `exec-condition` when an `ExecCondition=` command exited 1 to
/// 254 (the backup services' "not the primary"), a skip; anything else (`exit-code`, `signal`,
/// `timeout`, `core-dump`, `watchdog`, `resources`, `oom-kill`, `start-limit-hit`, ...) a failure,
/// so that a value this code has not met is never taken for a success. Unset is an error: the
/// program is not run by systemd, and nothing can be recorded truthfully.
pub fn outcome(result: RunResult, service_result: Option<&str>) -> anyhow::Result<Outcome> {
    Ok(match result {
        RunResult::Success => Outcome::Success,
        RunResult::Failed => Outcome::Failed,
        RunResult::Skipped => Outcome::Skipped,
        RunResult::Systemd => match service_result {
            Some("success") => Outcome::Success,
            Some("exec-condition") => Outcome::Skipped,
            Some(_) => Outcome::Failed,
            None => anyhow::bail!(
                "run_result: 'systemd' reads $SERVICE_RESULT, which is not set: run it from a \
                 unit's ExecStopPost= (systemd 232 or newer), or give the result"
            ),
        },
    })
}

/// The file name of a run record: `<prefix>_<stanza>@<type>.prom` (`@` is in no stanza name, so
/// it never collides with the repository's file of another stanza).
pub fn file_name(prefix: &str, stanza: &str, run_type: RunType) -> String {
    format!("{prefix}_{stanza}@{}.prom", run_type.name())
}

/// The record's text; `now` is when the run ended (seconds since the epoch).
pub fn render(prefix: &str, stanza: &str, run_type: RunType, outcome: Outcome, now: i64) -> String {
    let labels = format!("stanza=\"{}\",type=\"{}\"", label(stanza), run_type.name());
    let mut out = String::new();
    textfile::gauge(
        &mut out,
        prefix,
        "run_timestamp_seconds",
        "When the last scheduled backup run of this type ended (taken, failed or skipped on a \
         node that is not the primary), seconds since the epoch.",
        &[(labels.clone(), now)],
    );
    let results: Vec<(String, i64)> = Outcome::ALL
        .iter()
        .map(|o| {
            (
                format!("{labels},result=\"{}\"", o.name()),
                i64::from(*o == outcome),
            )
        })
        .collect();
    textfile::gauge(
        &mut out,
        prefix,
        "run_result",
        "How the last scheduled backup run of this type ended: 1 for its result (success, failed, \
         skipped), 0 for the others.",
        &results,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_results_other_than_success_and_a_condition_are_failures() {
        let of = |v| outcome(RunResult::Systemd, Some(v)).unwrap();
        assert_eq!(of("success"), Outcome::Success);
        assert_eq!(of("exec-condition"), Outcome::Skipped);
        for v in [
            "exit-code",
            "signal",
            "timeout",
            "core-dump",
            "oom-kill",
            "",
            "Success",
        ] {
            assert_eq!(of(v), Outcome::Failed, "{v}");
        }
        let unset = outcome(RunResult::Systemd, None).unwrap_err().to_string();
        assert!(unset.starts_with("run_result: 'systemd'"), "{unset}");
        assert_eq!(
            outcome(RunResult::Skipped, Some("success")).unwrap(),
            Outcome::Skipped,
            "a given result is not overridden by the environment"
        );
    }

    #[test]
    fn a_record_has_one_result_set_and_the_others_zero() {
        assert_eq!(file_name("p", "main", RunType::Diff), "p_main@diff.prom");
        let text = render("p", "main", RunType::Full, Outcome::Skipped, 1234);
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "p_run_timestamp_seconds{stanza=\"main\",type=\"full\"} 1234",
                "p_run_result{stanza=\"main\",type=\"full\",result=\"success\"} 0",
                "p_run_result{stanza=\"main\",type=\"full\",result=\"failed\"} 0",
                "p_run_result{stanza=\"main\",type=\"full\",result=\"skipped\"} 1",
            ]
        );
    }
}
