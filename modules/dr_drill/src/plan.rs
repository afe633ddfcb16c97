//! The options, declared once for Ansible (the spec), and validated into a typed [`Plan`] before
//! anything runs: enums instead of strings, a valid stanza and container name, positive budgets.

use ansible_module::{Elem, Opt, Spec};
use anyhow::{bail, Context as _};
use pgbackrest::StanzaName;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;

/// A smoke query: its first column of its first row must be an integer of at least `min`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeQuery {
    /// The query.
    pub sql: String,
    /// The minimum accepted value: 1 unless given (an empty table is a failure, not a pass).
    #[serde(default = "one")]
    pub min: i64,
    /// The database (default: the `database` option).
    #[serde(default)]
    pub database: Option<String>,
}

fn one() -> i64 {
    1
}

/// The options, as the sidecar doc describes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `stanza`
    pub stanza: String,
    /// `config`
    pub config: PathBuf,
    /// `sandbox`
    pub sandbox: String,
    /// `image`
    pub image: String,
    /// `container_name`
    pub container_name: Option<String>,
    /// `profiles`
    pub profiles: Vec<String>,
    /// `target`
    pub target: Option<String>,
    /// `target_type`
    pub target_type: String,
    /// `target_action`
    pub target_action: String,
    /// `set`
    pub set: Option<String>,
    /// `database`
    pub database: String,
    /// `smoke_queries`
    pub smoke_queries: Option<Vec<Value>>,
    /// `min_users_expected`
    pub min_users_expected: i64,
    /// `checks`
    pub checks: Vec<String>,
    /// `jobs`
    pub jobs: i64,
    /// `max_check_seconds`
    pub max_check_seconds: i64,
    /// `max_backup_age`
    pub max_backup_age: i64,
    /// `max_data_loss`
    pub max_data_loss: Option<i64>,
    /// `freshness_query`
    pub freshness_query: Option<String>,
    /// `metrics_dir`
    pub metrics_dir: PathBuf,
    /// `metrics_prefix`
    pub metrics_prefix: String,
    /// `max_restore_seconds`
    pub max_restore_seconds: i64,
    /// `start_timeout`
    pub start_timeout: i64,
    /// `recovery_timeout`
    pub recovery_timeout: i64,
    /// `lock_dir`
    pub lock_dir: PathBuf,
    /// `keep`
    pub keep: bool,
}

/// The data checks a drill runs after recovery (all by default: operators opt out, not in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `pgbackrest verify` of the repository before the restore.
    Verify,
    /// pg_amcheck over every database (heap, and B-tree indexes with heapallindexed and parent
    /// checks).
    Amcheck,
    /// pg_checksums --check of the stopped instance (skipped when the cluster has none).
    Checksums,
    /// pg_dump of every database.
    Dump,
}

impl Check {
    /// Every check, by name.
    pub const ALL: [(&'static str, Check); 4] = [
        ("verify", Check::Verify),
        ("amcheck", Check::Amcheck),
        ("checksums", Check::Checksums),
        ("dump", Check::Dump),
    ];
}

/// Where the drill restores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxKind {
    /// An ephemeral Incus container.
    Incus,
    /// A temporary directory on this host.
    Host,
}

/// The validated options.
#[derive(Debug)]
pub struct Plan {
    /// The options as given.
    pub args: Args,
    /// The stanza.
    pub stanza: StanzaName,
    /// The sandbox kind.
    pub sandbox: SandboxKind,
    /// The container name (Incus).
    pub container: String,
    /// The smoke queries.
    pub smoke: Vec<SmokeQuery>,
    /// The checks wanted.
    pub checks: Vec<Check>,
}

/// The default data checks, by name.
pub const DEFAULT_CHECKS: [&str; 4] = ["verify", "amcheck", "checksums", "dump"];

/// The argument specification (mirrored by `collection/plugins/modules/dr_drill.yml`).
pub fn spec() -> Spec {
    Spec::new(vec![
        Opt::str("stanza").required(),
        Opt::path("config").default("/etc/pgbackrest/pgbackrest.conf"),
        Opt::str("sandbox")
            .choices(&["incus", "host"])
            .default("incus"),
        Opt::str("image").default("veza-drill-pg15"),
        Opt::str("container_name"),
        Opt::list("profiles", Elem::Str).default(json!([])),
        Opt::str("target"),
        Opt::str("target_type")
            .choices(&["time", "lsn", "xid", "name"])
            .default("time"),
        Opt::str("target_action")
            .choices(&["promote"])
            .default("promote"),
        Opt::str("set"),
        Opt::str("database").default("postgres"),
        Opt::list("smoke_queries", Elem::Dict),
        Opt::int("min_users_expected").default(1),
        Opt::list("checks", Elem::Str).default(json!(DEFAULT_CHECKS)),
        Opt::int("jobs").default(2),
        Opt::int("max_check_seconds").default(3600),
        Opt::int("max_backup_age").default(8 * 86400),
        Opt::int("max_data_loss"),
        Opt::str("freshness_query"),
        Opt::path("metrics_dir").default("/var/lib/node_exporter/textfile_collector"),
        Opt::str("metrics_prefix").default("veza_backup_drill"),
        Opt::int("max_restore_seconds").default(1800),
        Opt::int("start_timeout").default(300),
        Opt::int("recovery_timeout").default(1800),
        Opt::path("lock_dir").default("/run/lock"),
        Opt::bool("keep").default(false),
    ])
    .mutually_exclusive(&["target", "set"])
}

impl Plan {
    /// Validate `args`; the error names the option and the value.
    pub fn new(args: Args) -> anyhow::Result<Plan> {
        let stanza = StanzaName::parse(&args.stanza)?;
        let container = args.container_name.clone().unwrap_or_else(|| {
            format!(
                "pg-restore-drill-{}",
                stanza.as_str().replace(['_', '.'], "-")
            )
        });
        let container_ok = container.len() <= 63
            && container.starts_with(|c: char| c.is_ascii_alphabetic())
            && container
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !container_ok {
            bail!(
                "container_name: '{}' is not a valid instance name",
                container.escape_default()
            );
        }
        let prefix = &args.metrics_prefix;
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || prefix.starts_with(|c: char| c.is_ascii_digit())
        {
            bail!(
                "metrics_prefix: '{}' is not a valid metric name",
                prefix.escape_default()
            );
        }
        let mut checks = Vec::new();
        for name in &args.checks {
            let Some((_, check)) = Check::ALL.iter().find(|(n, _)| n == name) else {
                bail!(
                    "checks: '{}' is not one of {}",
                    name.escape_default(),
                    DEFAULT_CHECKS.join(", ")
                );
            };
            if !checks.contains(check) {
                checks.push(*check);
            }
        }
        for (name, v) in [
            ("max_restore_seconds", args.max_restore_seconds),
            ("start_timeout", args.start_timeout),
            ("recovery_timeout", args.recovery_timeout),
            ("max_check_seconds", args.max_check_seconds),
            ("jobs", args.jobs),
        ] {
            if v <= 0 {
                bail!("{name}: {v} is not positive");
            }
        }
        if args.jobs > 64 {
            bail!("jobs: {} is more than 64", args.jobs);
        }
        if args.max_backup_age < 0 {
            bail!(
                "max_backup_age: {} is negative (0 turns the budget off)",
                args.max_backup_age
            );
        }
        if let Some(v) = args.max_data_loss.filter(|v| *v <= 0) {
            bail!("max_data_loss: {v} is not positive");
        }
        let smoke = smoke_queries(&args)?;
        let sandbox = match args.sandbox.as_str() {
            "host" => SandboxKind::Host,
            _ => SandboxKind::Incus,
        };
        Ok(Plan {
            args,
            stanza,
            sandbox,
            container,
            smoke,
            checks,
        })
    }

    /// Whether `check` is wanted.
    pub fn wants(&self, check: Check) -> bool {
        self.checks.contains(&check)
    }

    /// A point-in-time drill (replay stops at a target, not at the end of the archive).
    pub fn is_pitr(&self) -> bool {
        self.args.target.is_some()
    }
}

fn smoke_queries(args: &Args) -> anyhow::Result<Vec<SmokeQuery>> {
    let Some(list) = &args.smoke_queries else {
        return Ok(vec![SmokeQuery {
            sql: "SELECT count(*) FROM users".into(),
            min: args.min_users_expected,
            database: None,
        }]);
    };
    list.iter()
        .enumerate()
        .map(|(i, q)| {
            let q = serde_json::from_value::<SmokeQuery>(q.clone())
                .with_context(|| format!("smoke_queries[{i}]: expected {{sql, min, database}}"))?;
            if q.sql.trim().is_empty() {
                bail!("smoke_queries[{i}]: sql is empty");
            }
            Ok(q)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: Value) -> Args {
        let mut base = json!({
            "stanza": "main", "config": "/c", "sandbox": "incus", "image": "i",
            "container_name": null, "profiles": [], "target": null, "target_type": "time",
            "target_action": "promote", "set": null, "database": "postgres",
            "smoke_queries": null, "min_users_expected": 1, "checks": DEFAULT_CHECKS,
            "jobs": 2, "max_check_seconds": 10, "max_backup_age": 0, "max_data_loss": null,
            "freshness_query": null, "metrics_dir": "/m", "metrics_prefix": "p",
            "max_restore_seconds": 1, "start_timeout": 1, "recovery_timeout": 1,
            "lock_dir": "/l", "keep": false
        });
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn smoke_min_defaults_to_one() {
        let plan = Plan::new(args(json!({"smoke_queries": [{"sql": "SELECT 1"}]}))).unwrap();
        assert_eq!(plan.smoke[0].min, 1);
    }

    #[test]
    fn checks_are_typed_and_all_by_default() {
        let plan = Plan::new(args(json!({}))).unwrap();
        assert_eq!(plan.checks.len(), 4);
        let e = Plan::new(args(json!({"checks": ["fsck"]}))).unwrap_err();
        assert!(format!("{e:#}").contains("checks: 'fsck'"), "{e:#}");
    }

    #[test]
    fn extreme_and_bad_values_are_refused_or_accepted_without_panic() {
        let huge = Plan::new(args(
            json!({"max_restore_seconds": i64::MAX, "recovery_timeout": i64::MAX}),
        ));
        assert!(huge.is_ok());
        for (k, v) in [
            ("jobs", json!(0)),
            ("max_data_loss", json!(-5)),
            ("max_backup_age", json!(-1)),
        ] {
            let e = Plan::new(args(json!({ k: v }))).unwrap_err();
            assert!(format!("{e:#}").starts_with(k), "{e:#}");
        }
        let e = Plan::new(args(json!({"stanza": "global"}))).unwrap_err();
        assert!(format!("{e:#}").contains("'global'"), "{e:#}");
    }
}
