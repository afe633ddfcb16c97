//! The end of a drill: teardown (whatever happened), the metrics file (atomically; the last
//! success time survives failures) and the module's result. Exit codes: 0 pass, 1 the backups
//! could not be restored or proven, 2 the drill host's own problem.

use crate::metrics;
use crate::plan::{Plan, SandboxKind};
use crate::run::{self, CheckState, Run, Stop};
use crate::sandbox::{self, Sandbox};
use crate::signals;
use ansible_module::{Context, Response};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Check mode: pre-flight only, and what a real run would do.
pub fn check_mode(plan: &Plan, run: &Run, preflight: Result<(), Stop>) -> Response {
    let target = match plan.sandbox {
        SandboxKind::Incus => format!("incus container {}", plan.container),
        SandboxKind::Host => "a host directory".to_owned(),
    };
    match preflight {
        Ok(()) => {
            let label = run.backup.as_ref().map(|b| b.label.as_str()).unwrap_or("?");
            let what = match &plan.args.set {
                Some(set) => set.clone(),
                None => format!("backup {label}"),
            };
            Response::new()
                .msg(format!(
                    "would restore {what} of stanza '{}' into {target}, prove replay to the end \
                     of the archive and run the checks",
                    plan.stanza
                ))
                .field("commands", &run.commands)
        }
        Err(stop) => {
            let code = exit_code(&stop);
            let (reason, e) = match stop {
                Stop::Env(r, e) | Stop::Drill(r, e) => (r, e),
            };
            Response::failed(format!("{e:#}"))
                .field("reason", reason)
                .field("passed", false)
                .field("commands", &run.commands)
                .exit_code(code)
        }
    }
}

fn exit_code(stop: &Stop) -> i32 {
    match stop {
        Stop::Env(..) => 2,
        Stop::Drill(..) => 1,
    }
}

/// Tear down, write the metrics and build the result.
pub fn finish(
    plan: &Plan,
    run: &mut Run,
    result: Result<(), Stop>,
    clock: Instant,
    ctx: &mut Context,
) -> Response {
    let a = &plan.args;
    // An interruption makes every later error a consequence of it: report the signal.
    let result = match (result, run::interrupted()) {
        (Err(_), Err(stop)) => Err(stop),
        (r, _) => r,
    };
    let kept = a.keep && run.sandbox.is_some();
    let teardown_error = teardown(run, kept);
    let (passed, reason, msg, code) = match (&result, teardown_error) {
        (Ok(()), None) => (true, None, None, 0),
        (Ok(()), Some(e)) => (
            false,
            Some("teardown_failed"),
            Some(format!("teardown: {e}")),
            1,
        ),
        (Err(stop), _) => {
            let (reason, e) = match stop {
                Stop::Env(r, e) | Stop::Drill(r, e) => (*r, e),
            };
            (false, Some(reason), Some(format!("{e:#}")), exit_code(stop))
        }
    };
    let duration = clock.elapsed().as_secs_f64();
    let metrics_file = write_metrics(plan, run, passed, reason, duration, ctx);
    if run.verbose {
        let how = if passed { "passed" } else { "FAILED" };
        let why = msg.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        crate::progress(&format!("{how} in {duration:.1} s{why}"));
    }
    let checks: Map<String, Value> = run
        .checks
        .iter()
        .map(|c| {
            let state = match c.state {
                CheckState::Pass => "pass",
                CheckState::Fail => "fail",
                CheckState::Skipped => "skipped",
            };
            let entry = json!({"success": c.state == CheckState::Pass, "state": state,
                               "detail": c.detail});
            (c.name.clone(), entry)
        })
        .collect();
    let mut response = Response::new()
        .changed(true)
        .field("passed", passed)
        .field("reason", reason)
        .field("stanza", plan.stanza.as_str())
        .field("sandbox", a.sandbox.name())
        .field(
            "backup_label",
            run.backup.as_ref().map(|b| b.label.as_str()),
        )
        .field("checks", checks)
        .field("stages", &run.stages)
        .field("duration_seconds", run::round(duration))
        .field("restore_seconds", run.restore_seconds.map(run::round))
        .field(
            "recovery_target_age_seconds",
            run.recovery_target_age.map(run::round),
        )
        .field("data_loss_seconds", run.data_loss.map(run::round))
        .field("backup_age_seconds", run.backup_age.map(run::round))
        .field("recovered", &run.recovered)
        .field("metrics_file", metrics_file)
        .field("commands", &run.commands)
        .field("kept", kept);
    if let (true, Some(sb)) = (kept, &run.sandbox) {
        let name = match sb {
            Sandbox::Incus { name, .. } => name.clone(),
            Sandbox::Host { dir, .. } => dir.display().to_string(),
        };
        response = response.field("container", name);
    }
    match msg {
        Some(m) => response
            .fail(format!(
                "restore drill failed ({}): {m}",
                reason.unwrap_or("?")
            ))
            .exit_code(code),
        None => response.msg(format!(
            "restore drill of stanza '{}' passed in {duration:.1} s",
            plan.stanza
        )),
    }
}

/// Remove the sandbox (unless kept); the error, if any.
fn teardown(run: &mut Run, kept: bool) -> Option<String> {
    let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
    let mut error = None;
    match run.sandbox.clone() {
        Some(sb) if !kept => {
            let t = Instant::now();
            error = sandbox::destroy(&sb, &pg_ctl).err();
            let secs = run::round(t.elapsed().as_secs_f64());
            run.stages.insert("teardown".into(), json!(secs));
        }
        Some(_) => {}
        None => {
            // Interrupted or failed while it was being made.
            if let Some((sb, pg_ctl)) = signals::live() {
                let _ = sandbox::destroy(&sb, &pg_ctl);
            }
        }
    }
    signals::set_live(None);
    error
}

fn write_metrics(
    plan: &Plan,
    run: &Run,
    passed: bool,
    reason: Option<&str>,
    duration: f64,
    ctx: &mut Context,
) -> String {
    let a = &plan.args;
    let report = metrics::Report {
        stanza: plan.stanza.as_str().to_owned(),
        success: passed,
        reason: reason.map(str::to_owned),
        run_timestamp: run.started.floor(),
        duration,
        restore_seconds: run.restore_seconds,
        recovery_target_age: run.recovery_target_age,
        data_loss: run.data_loss,
        backup_age: run.backup_age,
        max_data_loss: a.max_data_loss.map(|v| v as f64),
        max_backup_age: (a.max_backup_age > 0).then_some(a.max_backup_age as f64),
        backup_label: run.backup.as_ref().map(|b| b.label.clone()),
        checks: run
            .checks
            .iter()
            .map(|c| {
                let ok = match c.state {
                    CheckState::Pass => Some(true),
                    CheckState::Fail => Some(false),
                    CheckState::Skipped => None,
                };
                (c.name.clone(), ok)
            })
            .collect(),
    };
    let file = metrics::path(&a.metrics_dir, &a.metrics_prefix, plan.stanza.as_str());
    let previous = std::fs::read_to_string(&file)
        .ok()
        .and_then(|t| metrics::previous_success(&t, &a.metrics_prefix));
    let last_success = if passed {
        Some(run.started.floor())
    } else {
        previous
    };
    let text = metrics::render(&a.metrics_prefix, &report, last_success);
    let attrs = ansible_module::fs::Attrs {
        mode: Some(0o644),
        ..Default::default()
    };
    let written = std::fs::create_dir_all(&a.metrics_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            ansible_module::fs::write_atomic(&file, text.as_bytes(), &attrs)
                .map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        ctx.warn(format!("could not write the metrics file: {e}"));
    }
    file.display().to_string()
}
