//! `pgbackrest_info`: what the repository holds, read-only, for ad-hoc questions and plays.
//!
//! Runs `pgbackrest info --output=json` (for one stanza or all) with the configuration's secrets
//! registered for scrubbing, and returns each stanza's status (code, pgBackRest's message and
//! what the code means), its repositories, its backups (label, type, times, sizes, the backup it
//! depends on, the page-error flag) and its archive ranges, as return values and optionally as
//! the fact `pgbackrest_info`. It changes nothing, so check mode runs it as well.
//!
//! With `metrics_dir` it also writes each stanza's node_exporter textfile ([`metrics`]),
//! atomically, mode 0644: a report, so still `changed: false`; check mode writes none. With
//! `run_type` and `run_result` it first records one scheduled backup run ([`run`]); a run that
//! did not take a backup (failed, or skipped on a standby) records only that. The backup services
//! of the pgbackrest role run it so after every run, from `ExecStopPost=`.

use ansible_module::process::{Cmd, RunAs};
use ansible_module::{Context, Module, Response};
use anyhow::Context as _;
use pgbackrest::command::Pgbackrest;
use pgbackrest::info::{self, Info};
use pgbackrest::StanzaName;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub mod metrics;
pub mod run;

use run::{Outcome, RunResult, RunType};

ansible_module::options! {
    /// The module's options, as documented.
    pub struct Args {
        /// `stanza`: one stanza, or every stanza of the repository when not given.
        stanza: Option<String> = str(),
        /// `config`
        config: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `pgbackrest_path`
        pgbackrest_path: String = str().default("pgbackrest"),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `io_timeout`
        io_timeout: Option<i64> = int(),
        /// `set_facts`
        set_facts: bool = bool().default(false),
        /// `metrics_dir`: where to write the textfile-collector files; none (or empty) writes none.
        metrics_dir: Option<PathBuf> = path(),
        /// `metrics_prefix`
        metrics_prefix: String = str().default("veza_backup"),
        /// `run_type`: record a scheduled backup run of this type (with `run_result`).
        run_type: Option<RunType> = str().choices(RunType::NAMES),
        /// `run_result`
        run_result: Option<RunResult> = str().choices(RunResult::NAMES),
    }
}

/// The Ansible module.
pub struct PgbackrestInfo;

impl Module for PgbackrestInfo {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_info";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let stanza = args.stanza.as_deref().map(StanzaName::parse).transpose()?;
        if let Some(t) = args.io_timeout.filter(|t| !(1..=86_400).contains(t)) {
            anyhow::bail!("io_timeout: {t} is out of range (1 to 86400 seconds)");
        }
        // Every secret of the configuration is scrubbed from all output: pgBackRest quotes parts
        // of its configuration in errors (an S3 key).
        let conf =
            pgbackrest::conf::read(&args.config, stanza.as_ref().map_or("", |s| s.as_str()))?;
        for secret in conf.secrets.iter().chain(&pgbackrest::conf::env_secrets()) {
            ctx.add_secret(secret);
        }
        let metrics_dir = args
            .metrics_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty());
        if !metrics::valid_prefix(&args.metrics_prefix) {
            anyhow::bail!(
                "metrics_prefix: '{}' is not a valid metric name",
                args.metrics_prefix.escape_default()
            );
        }
        if let Some(dir) = metrics_dir.filter(|d| !d.is_dir()) {
            anyhow::bail!("metrics_dir: {} is not a directory", dir.display());
        }
        let run = match (args.run_type, args.run_result) {
            (None, None) => None,
            (Some(t), Some(r)) => {
                let Some(stanza) = &stanza else {
                    anyhow::bail!("run_type: recording a run needs the stanza it backed up");
                };
                let Some(dir) = metrics_dir else {
                    anyhow::bail!("run_type: recording a run needs metrics_dir");
                };
                let service_result = std::env::var("SERVICE_RESULT").ok();
                let outcome = run::outcome(r, service_result.as_deref())?;
                let file = dir.join(run::file_name(&args.metrics_prefix, stanza.as_str(), t));
                Some((t, outcome, file))
            }
            (Some(_), None) => anyhow::bail!("run_type: given without run_result"),
            (None, Some(r)) => anyhow::bail!("run_result: '{}' given without run_type", r.name()),
        };
        RunAs::become_option(args.become_user.as_deref()).map_err(anyhow::Error::msg)?;
        // The run is recorded before anything else can fail, so a repository that cannot be
        // read after a backup still leaves the backup's result behind.
        if let Some((t, outcome, file)) = &run {
            if !ctx.check_mode {
                let text = run::render(
                    &args.metrics_prefix,
                    stanza_str(&stanza),
                    *t,
                    *outcome,
                    ansible_module::time::now_secs(),
                );
                ansible_module::fs::write_atomic(file, text.as_bytes(), &metrics_attrs())
                    .map_err(|e| anyhow::anyhow!("metrics_dir: writing the run record: {e}"))?;
            }
        }
        let run_value = run.as_ref().map(|(t, outcome, file)| {
            json!({"type": t.name(), "result": outcome.name(),
                   "file": file.display().to_string()})
        });
        if let Some((t, outcome @ (Outcome::Failed | Outcome::Skipped), file)) = &run {
            // No backup was taken: the repository's file stays as the last backup left it.
            let msg = format!(
                "the {} backup run of stanza {} {}: {} {}",
                t.name(),
                stanza_str(&stanza),
                if *outcome == Outcome::Failed {
                    "failed"
                } else {
                    "was skipped"
                },
                if ctx.check_mode {
                    "check mode: not recorded in"
                } else {
                    "recorded in"
                },
                file.display()
            );
            let files = [Value::from(file.display().to_string())];
            return Ok(Response::new()
                .msg(msg)
                .field("ok", *outcome == Outcome::Skipped)
                .field("stanzas", Vec::<Value>::new())
                .field("commands", Vec::<String>::new())
                .field("metrics_files", Value::from(files.to_vec()))
                .field("run", run_value));
        }
        let cmd = command(&args, stanza.as_ref());
        let out = cmd.run().context("pgbackrest info")?;
        let parsed: Vec<(String, Info)> = info::parse_all(&out.stdout)?
            .into_iter()
            .filter(|(name, _)| stanza.as_ref().is_none_or(|s| s.as_str() == name))
            .collect();
        let stanzas: Vec<Value> = parsed.iter().map(|(name, i)| describe(name, i)).collect();
        let ok = !stanzas.is_empty() && stanzas.iter().all(|s| s["status"]["code"] == 0);
        let summary = match stanzas.len() {
            0 => "the repository holds no stanza".to_owned(),
            n => format!(
                "{n} stanza(s); {}",
                if ok {
                    "all ok"
                } else {
                    "not all ok: see status"
                }
            ),
        };
        let (mut files, note) = match metrics_dir {
            Some(dir) => write_metrics(dir, &args.metrics_prefix, &parsed, ctx.check_mode)?,
            None => (Vec::new(), String::new()),
        };
        if let Some((_, _, file)) = &run {
            files.insert(0, Value::from(file.display().to_string()));
        }
        let mut response = Response::new()
            .msg(summary + &note)
            .field("ok", ok)
            .field("stanzas", &stanzas)
            .field("commands", [cmd.display()])
            .field("metrics_files", Value::from(files));
        if let Some(value) = run_value {
            response = response.field("run", value);
        }
        if args.set_facts {
            response = response.fact("pgbackrest_info", json!({"ok": ok, "stanzas": stanzas}));
        }
        Ok(response)
    }
}

/// Write (outside check mode) each stanza's metrics file; returns the files and a note for `msg`.
fn write_metrics(
    dir: &Path,
    prefix: &str,
    stanzas: &[(String, Info)],
    check_mode: bool,
) -> anyhow::Result<(Vec<Value>, String)> {
    let now = ansible_module::time::now_secs();
    let attrs = metrics_attrs();
    let mut files = Vec::new();
    for (name, info) in stanzas {
        // The name becomes a file name: it must be a stanza name (no '/', no '..').
        let name = StanzaName::parse(name)
            .map_err(|e| anyhow::anyhow!("metrics_dir: a stanza of pgbackrest info: {e}"))?;
        let file = dir.join(metrics::file_name(prefix, name.as_str()));
        if !check_mode {
            let text = metrics::render(prefix, name.as_str(), info, now);
            ansible_module::fs::write_atomic(&file, text.as_bytes(), &attrs)
                .map_err(|e| anyhow::anyhow!("metrics_dir: writing the metrics: {e}"))?;
        }
        files.push(Value::from(file.display().to_string()));
    }
    let note = match (files.len(), check_mode) {
        (0, _) => "; no metrics file written".to_owned(),
        (n, true) => format!("; check mode: {n} metrics file(s) not written"),
        (n, false) => format!("; {n} metrics file(s) written to {}", dir.display()),
    };
    Ok((files, note))
}

/// Every metrics file: readable by node_exporter, whoever it runs as.
fn metrics_attrs() -> ansible_module::fs::Attrs {
    ansible_module::fs::Attrs {
        mode: Some(0o644),
        ..Default::default()
    }
}

fn stanza_str(stanza: &Option<StanzaName>) -> &str {
    stanza.as_ref().map_or("", |s| s.as_str())
}

fn command(args: &Args, stanza: Option<&StanzaName>) -> Cmd {
    // Without a stanza the command still wants one option pgBackRest reads: none is needed.
    let name = stanza.map_or(String::new(), |s| s.as_str().to_owned());
    let mut b = Pgbackrest::new(&args.pgbackrest_path, &args.config, &name, "off")
        .timeouts(args.io_timeout, None)
        .opt("--output=json");
    if stanza.is_none() {
        b = b.without_stanza();
    }
    b.cmd("info")
}

/// One stanza as returned.
fn describe(name: &str, i: &Info) -> Value {
    let backups: Vec<Value> = i
        .backups
        .iter()
        .map(|b| {
            json!({
                "label": b.label, "type": b.kind, "start": b.start, "stop": b.stop,
                "wal_start": b.wal_start, "wal_stop": b.wal_stop, "prior": b.prior,
                "error": b.error, "size": b.size, "repo_size": b.repo_size,
                "repo": b.repo_key,
            })
        })
        .collect();
    let archives: Vec<Value> = i
        .archives
        .iter()
        .map(|a| json!({"id": a.id, "min": a.min, "max": a.max, "repo": a.repo_key}))
        .collect();
    let repos: Vec<Value> = i
        .status
        .repos
        .iter()
        .map(|r| {
            json!({"key": r.key, "code": r.code, "message": r.message,
                   "meaning": info::meaning(r.code), "cipher": r.cipher})
        })
        .collect();
    let last = |kind: &str| {
        i.backups
            .iter()
            .rev()
            .find(|b| b.kind == kind)
            .map(|b| &b.label)
    };
    json!({
        "name": name,
        "status": {"code": i.status.code, "message": i.status.message,
                   "meaning": info::meaning(i.status.code)},
        "repos": repos,
        "pg_version": i.pg_version,
        "backups": backups,
        "last_full": last("full"),
        "last_diff": last("diff"),
        "last_incr": last("incr"),
        "archives": archives,
    })
}
