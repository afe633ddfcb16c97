//! The options, declared once for Ansible (the spec), and validated into a typed [`Plan`] before
//! anything runs: enums instead of strings, a valid stanza and container name, positive budgets.

use ansible_module::{Elem, Spec};
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

ansible_module::choices! {
    /// Where the drill restores (`sandbox`).
    pub enum SandboxKind {
        /// An ephemeral Incus container.
        Incus = "incus",
        /// A temporary directory on this host.
        Host = "host",
    }
}

ansible_module::choices! {
    /// What `target` is (`target_type`).
    pub enum TargetType {
        /// A timestamp.
        Time = "time",
        /// An LSN.
        Lsn = "lsn",
        /// A transaction id.
        Xid = "xid",
        /// A restore point's name.
        Name = "name",
    }
}

ansible_module::choices! {
    /// What PostgreSQL does at the target (`target_action`): a drill always promotes.
    pub enum TargetAction {
        /// Promote.
        Promote = "promote",
    }
}

ansible_module::options! {
    /// The options, each declared once (the sidecar doc is checked against them).
    pub struct Args {
        /// `stanza`
        stanza: String = str().required(),
        /// `config`
        config: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `sandbox`
        sandbox: SandboxKind = str().choices(SandboxKind::NAMES).default("incus"),
        /// `image`
        image: String = str().default("veza-drill-pg15"),
        /// `container_name`
        container_name: Option<String> = str(),
        /// `profiles`
        profiles: Vec<String> = list(Elem::Str).default(json!([])),
        /// `target`
        target: Option<String> = str(),
        /// `target_type`
        target_type: TargetType = str().choices(TargetType::NAMES).default("time"),
        /// `target_action`
        target_action: TargetAction = str().choices(TargetAction::NAMES).default("promote"),
        /// `set`
        set: Option<String> = str(),
        /// `database`
        database: String = str().default("postgres"),
        /// `smoke_queries`
        smoke_queries: Option<Vec<Value>> = list(Elem::Dict),
        /// `min_users_expected`
        min_users_expected: i64 = int().default(1),
        /// `checks`
        checks: Vec<String> = list(Elem::Str).default(json!(DEFAULT_CHECKS)),
        /// `jobs`
        jobs: i64 = int().default(2),
        /// `max_check_seconds`
        max_check_seconds: i64 = int().default(3600),
        /// `max_backup_age`
        max_backup_age: i64 = int().default(8 * 86400),
        /// `max_data_loss`
        max_data_loss: Option<i64> = int(),
        /// `freshness_query`
        freshness_query: Option<String> = str(),
        /// `metrics_dir`
        metrics_dir: PathBuf = path().default("/var/lib/node_exporter/textfile_collector"),
        /// `metrics_prefix`
        metrics_prefix: String = str().default("veza_backup_drill"),
        /// `max_restore_seconds`
        max_restore_seconds: i64 = int().default(1800),
        /// `start_timeout`
        start_timeout: i64 = int().default(300),
        /// `recovery_timeout`
        recovery_timeout: i64 = int().default(1800),
        /// `lock_dir`
        lock_dir: PathBuf = path().default("/run/lock"),
        /// `keep`
        keep: bool = bool().default(false),
    }
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
    Spec::new(Args::options()).mutually_exclusive(&["target", "set"])
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
        if !textfile::valid_prefix(prefix) {
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
        if args.min_users_expected < 0 {
            bail!(
                "min_users_expected: {} is negative",
                args.min_users_expected
            );
        }
        // Relative, they would be taken from wherever the timer or Ansible happened to start.
        for (name, dir) in [
            ("metrics_dir", &args.metrics_dir),
            ("lock_dir", &args.lock_dir),
        ] {
            if !dir.is_absolute() {
                bail!("{name}: '{}' is not an absolute path", dir.display());
            }
        }
        if let Some(set) = args
            .set
            .as_deref()
            .filter(|s| !pgbackrest::info::is_backup_label(s))
        {
            bail!(
                "set: '{}' is not a pgBackRest backup label (such as 20250101-000000F or \
                 20250101-000000F_20250102-000000D)",
                set.escape_default()
            );
        }
        let smoke = smoke_queries(&args)?;
        let sandbox = args.sandbox;
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
            ("min_users_expected", json!(-1)),
            ("metrics_dir", json!("rel/metrics")),
            ("lock_dir", json!("rel")),
            ("set", json!("20250101-000000F; rm -rf /")),
        ] {
            let e = Plan::new(args(json!({ k: v }))).unwrap_err();
            assert!(format!("{e:#}").starts_with(k), "{e:#}");
        }
        let e = Plan::new(args(json!({"stanza": "global"}))).unwrap_err();
        assert!(format!("{e:#}").contains("'global'"), "{e:#}");
    }
}
