//! The node_exporter textfile-collector format, written one way by every module that reports
//! metrics (the restore drill, the backups, WAL archiving): a metric name's rule, label values
//! escaped as the Prometheus text format wants, and gauges and counters with their `# HELP` and
//! `# TYPE` lines. Files are written atomically by the caller (`ansible_module::fs::write_atomic`),
//! so the collector never reads half of one.

use std::fmt::{Display, Write as _};

/// Whether `prefix` can start a metric name (`[a-zA-Z_][a-zA-Z0-9_]*`, at most 100 characters).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 100
        && !prefix.starts_with(|c: char| c.is_ascii_digit())
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A label value, escaped (`\`, `"` and newlines).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Append gauge `<prefix>_<name>` with its HELP and TYPE lines and one line per sample
/// (`labels` already formatted, `stanza="main"`); nothing at all when there is no sample, so an
/// absent value is an absent metric, never a made-up one.
pub fn gauge<V: Display>(
    out: &mut String,
    prefix: &str,
    name: &str,
    help: &str,
    samples: &[(String, V)],
) {
    metric(out, "gauge", prefix, name, help, samples)
}

/// Append counter `<prefix>_<name>` (a name ending in `_total`), as [`gauge`] does a gauge.
pub fn counter<V: Display>(
    out: &mut String,
    prefix: &str,
    name: &str,
    help: &str,
    samples: &[(String, V)],
) {
    metric(out, "counter", prefix, name, help, samples)
}

fn metric<V: Display>(
    out: &mut String,
    kind: &str,
    prefix: &str,
    name: &str,
    help: &str,
    samples: &[(String, V)],
) {
    if samples.is_empty() {
        return;
    }
    let _ = writeln!(out, "# HELP {prefix}_{name} {help}");
    let _ = writeln!(out, "# TYPE {prefix}_{name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{prefix}_{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_gauges() {
        assert!(valid_prefix("veza_backup") && valid_prefix("_x1"));
        for bad in ["", "1x", "a-b", "a b", &"x".repeat(101)] {
            assert!(!valid_prefix(bad), "{bad}");
        }
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut out = String::new();
        gauge(
            &mut out,
            "p",
            "none",
            "never shown",
            &Vec::<(String, i64)>::new(),
        );
        gauge(&mut out, "p", "x", "An x.", &[("s=\"a\"".to_owned(), 1.5)]);
        assert_eq!(
            out,
            "# HELP p_x An x.\n# TYPE p_x gauge\np_x{s=\"a\"} 1.5\n"
        );
        out.clear();
        counter(
            &mut out,
            "p",
            "n_total",
            "Ns.",
            &[("s=\"a\"".to_owned(), 3)],
        );
        assert_eq!(
            out,
            "# HELP p_n_total Ns.\n# TYPE p_n_total counter\np_n_total{s=\"a\"} 3\n"
        );
    }
}
