//! One drill, stage by stage: what it collects on its way ([`Run`]), why it stopped ([`Stop`]),
//! and the order of the stages ([`drill`]). Each stage is timed and checks for a signal before
//! and after; the first failure stops the drill, teardown always runs.

use crate::plan::{Check, Plan, SandboxKind};
use crate::sandbox::Sandbox;
use crate::{checks, report, signals, stages};
use ansible_module::process::{Cmd, CmdError, Output};
use ansible_module::{Context, Response};
use anyhow::anyhow;
use pgbackrest::info::Backup;
use pgbackrest::lock::Lock;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// The drill instance's port: it listens on its private unix socket only, so any port will do.
pub const DRILL_PORT: &str = "5432";

/// Why a drill stopped.
#[derive(Debug)]
pub enum Stop {
    /// The drill host is not fit for a drill (exit 2): the backups are not proven either way.
    Env(&'static str, anyhow::Error),
    /// The backups could not be restored or proven (exit 1).
    Drill(&'static str, anyhow::Error),
}

impl Stop {
    /// The reason token.
    pub fn reason(&self) -> &'static str {
        match self {
            Stop::Env(r, _) | Stop::Drill(r, _) => r,
        }
    }
}

/// The failure `reason` of an error from `f`, as a drill failure (exit 1).
pub fn drill_err<E: std::fmt::Display>(reason: &'static str) -> impl FnOnce(E) -> Stop {
    move |e| Stop::Drill(reason, anyhow!("{e}"))
}

/// The failure `reason` of an error from `f`, as a drill host problem (exit 2).
pub fn env_err<E: std::fmt::Display>(reason: &'static str) -> impl FnOnce(E) -> Stop {
    move |e| Stop::Env(reason, anyhow!("{e}"))
}

/// How a check ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckState {
    /// It ran and found nothing wrong.
    Pass,
    /// It ran and found a problem (or could not run).
    Fail,
    /// It cannot apply to this cluster (never counted as a pass).
    Skipped,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    /// `smoke`, `archive`, `amcheck`, ...
    pub name: String,
    /// How it ended.
    pub state: CheckState,
    /// What it found.
    pub detail: String,
}

/// What a drill collects on its way.
#[derive(Debug, Default)]
pub struct Run {
    /// Commands run, in order.
    pub commands: Vec<String>,
    /// Stage -> seconds.
    pub stages: Map<String, Value>,
    /// Check results, in order.
    pub checks: Vec<CheckResult>,
    /// The backup set restored.
    pub backup: Option<Backup>,
    /// The archive id of its database (`15-1`).
    pub archive_id: Option<String>,
    /// `repo-ls` of the archive, taken before the restore (parsed once the segment size is known).
    pub archive_json: Option<String>,
    /// Restore start to end of recovery, seconds.
    pub restore_seconds: Option<f64>,
    /// Drill start minus the last replayed transaction's time.
    pub recovery_target_age: Option<f64>,
    /// Drill start minus the restored freshness marker.
    pub data_loss: Option<f64>,
    /// Drill start minus the restored backup's stop time.
    pub backup_age: Option<f64>,
    /// The sandbox, once made.
    pub sandbox: Option<Sandbox>,
    /// The restored major's bin directory.
    pub pg_bin: String,
    /// Progress lines on stderr.
    pub verbose: bool,
    /// The drill host's pgBackRest configuration, as read.
    pub conf: pgbackrest::conf::Conf,
    /// Drill start, seconds since the epoch.
    pub started: f64,
    /// What a dead drill left and this one removed.
    pub recovered: Vec<String>,
}

impl Run {
    /// Run stage `name`, timed, between two signal checks.
    pub fn stage<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Run) -> Result<T, Stop>,
    ) -> Result<T, Stop> {
        interrupted()?;
        if self.verbose {
            crate::progress(&format!("{name} ..."));
        }
        let start = Instant::now();
        let result = f(self);
        let secs = start.elapsed().as_secs_f64();
        self.stages.insert(name.to_owned(), json!(round(secs)));
        if self.verbose {
            let how = if result.is_ok() { "done" } else { "failed" };
            crate::progress(&format!("{name} {how} in {secs:.1} s"));
        }
        interrupted()?;
        result
    }

    /// Run a command, recording it.
    pub fn cmd(&mut self, cmd: &Cmd) -> Result<Output, CmdError> {
        self.commands.push(cmd.display());
        cmd.run()
    }

    /// A PostgreSQL client program of the restored major (psql, pg_amcheck, pg_dump), connected
    /// to the drill instance's private socket as postgres; `rest` follows the connection options.
    pub fn client(&self, sb: &Sandbox, program: &str, rest: &[&str]) -> Cmd {
        let bin = format!("{}/{program}", self.pg_bin);
        let sock = sb.socket_dir().to_string_lossy().into_owned();
        let mut argv = vec![
            bin.as_str(),
            "-h",
            &sock,
            "-p",
            DRILL_PORT,
            "-U",
            "postgres",
        ];
        argv.extend_from_slice(rest);
        sb.postgres(&argv)
    }

    /// One SQL statement's output (`psql -XAtq`), trimmed.
    pub fn sql(&mut self, sb: &Sandbox, database: &str, sql: &str) -> Result<String, CmdError> {
        let args = ["-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql];
        let cmd = self.client(sb, "psql", &args);
        Ok(self.cmd(&cmd)?.stdout.trim().to_owned())
    }

    /// Record a check.
    pub fn check(&mut self, name: &str, state: CheckState, detail: impl Into<String>) {
        self.checks.push(CheckResult {
            name: name.to_owned(),
            state,
            detail: detail.into(),
        });
    }
}

/// A stop for the signal that interrupted the drill, if any.
pub fn interrupted() -> Result<(), Stop> {
    match signals::interrupted() {
        None => Ok(()),
        Some(sig) => Err(Stop::Drill(
            "interrupted",
            anyhow!("the drill was interrupted by signal {sig}"),
        )),
    }
}

/// Seconds, to the millisecond.
pub fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The failure of a drill whose restore-to-ready time ran out of `max_restore_seconds`.
pub fn rto_exceeded(plan: &Plan, during: &str) -> Stop {
    Stop::Drill(
        "rto_exceeded",
        anyhow!(
            "{during} stopped: restore to ready did not finish within max_restore_seconds {}",
            plan.args.max_restore_seconds
        ),
    )
}

/// The whole drill: lock, pre-flight, stages, teardown, metrics, result.
pub fn drill(plan: Plan, ctx: &mut Context) -> anyhow::Result<Response> {
    let a = &plan.args;
    let clock = Instant::now();
    let mut run = Run {
        verbose: ctx.from_stdin || ctx.verbosity > 0,
        started: crate::now_epoch(),
        ..Run::default()
    };
    // The lock is held from here on, so a second drill of the stanza fails fast.
    let lock_name = format!("veza-dr-drill-{}.lock", plan.stanza);
    let lock = match Lock::take(&a.lock_dir, &lock_name, false) {
        Ok(lock) => lock,
        Err(e) => {
            let reason = match e {
                pgbackrest::Error::Locked(_) => "locked",
                _ => "lock",
            };
            let msg = match reason {
                "locked" => format!("another drill of stanza '{}' is running ({e})", plan.stanza),
                _ => format!("lock_dir: {e}"),
            };
            return Ok(Response::failed(msg)
                .field("reason", reason)
                .field("passed", false)
                .exit_code(2));
        }
    };
    if !ctx.check_mode {
        signals::watch();
    }
    let ready = run.stage("preflight", |r| stages::preflight(&plan, r));
    if ctx.check_mode {
        return Ok(report::check_mode(&plan, &run, ready));
    }
    let result = ready.and_then(|()| {
        recover(&plan, &mut run, &lock, ctx)?;
        stages_in_order(&plan, &mut run)
    });
    let response = report::finish(&plan, &mut run, result, clock, ctx);
    drop(lock);
    Ok(response)
}

/// Remove what a drill killed while holding the lock left behind (and say so).
fn recover(plan: &Plan, run: &mut Run, lock: &Lock, ctx: &mut Context) -> Result<(), Stop> {
    let container = (plan.sandbox == SandboxKind::Incus).then_some(plan.container.as_str());
    let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
    let removed = crate::sandbox::recover(
        lock.previous_owner(),
        plan.stanza.as_str(),
        container,
        &pg_ctl,
    )
    .map_err(|e| {
        Stop::Env(
            "sandbox_failed",
            anyhow!("removing what an earlier, killed drill left: {e}"),
        )
    })?;
    for what in &removed {
        let line = format!(
            "removed {what}, left by an earlier drill (pid {}) that was killed",
            lock.previous_owner().unwrap_or("?")
        );
        crate::progress(&line);
        ctx.warn(line);
    }
    run.recovered = removed;
    Ok(())
}

/// The stages after pre-flight, in order; the RTO budget covers restore to ready.
fn stages_in_order(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    let a = &plan.args;
    let sb = run.stage("sandbox", |r| stages::make_sandbox(plan, r))?;
    if plan.wants(Check::Verify) {
        run.stage("verify", |r| stages::verify(plan, r, &sb))?;
    }
    if !plan.is_pitr() {
        run.stage("archive_listing", |r| stages::list_archive(plan, r))?;
    }
    let restore_clock = Instant::now();
    let deadline = signals::deadline(a.max_restore_seconds);
    let ready = (|| {
        run.stage("restore", |r| stages::restore(plan, r, &sb, deadline))?;
        run.stage("start", |r| stages::start(plan, r, &sb, deadline))?;
        run.stage("recovery", |r| {
            stages::wait_recovery(plan, r, &sb, deadline)
        })
    })();
    // The measured RTO: restore to ready, or, for a drill stopped by its budget, to the stop. A
    // restore that failed otherwise has no RTO to report.
    if matches!(&ready, Ok(()) | Err(Stop::Drill("rto_exceeded", _))) {
        run.restore_seconds = Some(restore_clock.elapsed().as_secs_f64());
    }
    ready?;
    run.stage("archive_proof", |r| stages::prove_replay(plan, r, &sb))?;
    let check_deadline = signals::deadline(a.max_check_seconds);
    let (checked, late) = signals::with_deadline(check_deadline, || {
        run.stage("checks", |r| checks::all(plan, r, &sb))
    });
    if late {
        return Err(Stop::Drill(
            "checks_timeout",
            anyhow!(
                "the checks did not finish within max_check_seconds {}",
                a.max_check_seconds
            ),
        ));
    }
    checked?;
    if let Some(secs) = run
        .restore_seconds
        .filter(|s| *s > a.max_restore_seconds as f64)
    {
        return Err(Stop::Drill(
            "rto_exceeded",
            anyhow!(
                "restore to ready took {secs:.0} s, more than max_restore_seconds {}",
                a.max_restore_seconds
            ),
        ));
    }
    Ok(())
}
