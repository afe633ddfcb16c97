//! The checks on the restored, promoted instance: smoke queries, the freshness marker and the
//! data-loss budget, amcheck over every database, a dump of every database (side by side within
//! `jobs`), and last, on the stopped instance, data checksums. Every check runs and is reported
//! (a check that cannot apply is `skipped`, never a pass); the first failure is the drill's.

use crate::plan::{Check, Plan};
use crate::run::{CheckState, Run, Stop};
use crate::sandbox::Sandbox;
use anyhow::anyhow;

/// The marker the pgbackrest role's heartbeat timer updates on the primary every minute.
pub const HEARTBEAT_QUERY: &str = "SELECT max(beat_at) FROM veza_heartbeat";

/// Run every check; the first failure stops the drill once all have run.
pub fn all(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let mut first: Option<Stop> = None;
    let mut keep = |r: Result<(), Stop>| {
        if let (Err(stop), None) = (r, &first) {
            first = Some(stop);
        }
    };
    keep(smoke(plan, run, sb));
    keep(freshness(plan, run, sb));
    if plan.wants(Check::Amcheck) {
        keep(amcheck(plan, run, sb));
    }
    if plan.wants(Check::Dump) {
        keep(dump(plan, run, sb));
    }
    if plan.wants(Check::Checksums) {
        keep(checksums(run, sb));
    }
    first.map_or(Ok(()), Err)
}

fn fail(run: &mut Run, name: &str, reason: &'static str, detail: String) -> Result<(), Stop> {
    run.check(name, CheckState::Fail, detail.clone());
    Err(Stop::Drill(reason, anyhow!("{name}: {detail}")))
}

fn smoke(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let mut result = Ok(());
    for (i, q) in plan.smoke.iter().enumerate() {
        let name = match plan.smoke.len() {
            1 => "smoke".to_owned(),
            _ => format!("smoke_{i}"),
        };
        let db = q
            .database
            .clone()
            .unwrap_or_else(|| plan.args.database.clone());
        let r = match run.sql(sb, &db, &q.sql) {
            Ok(v) => match v.lines().next().unwrap_or_default().parse::<i64>() {
                Ok(n) if n >= q.min => {
                    run.check(&name, CheckState::Pass, format!("{n} >= {}", q.min));
                    Ok(())
                }
                Ok(n) => {
                    let detail = format!("`{}` gave {n}, below the minimum {}", q.sql, q.min);
                    fail(run, &name, "smoke_failed", detail)
                }
                Err(_) => {
                    let got = if v.is_empty() {
                        "NULL".to_owned()
                    } else {
                        format!("'{v}'")
                    };
                    let detail = format!("`{}` gave {got}, not an integer", q.sql);
                    fail(run, &name, "smoke_failed", detail)
                }
            },
            Err(e) => fail(run, &name, "smoke_failed", e.to_string()),
        };
        if result.is_ok() {
            result = r;
        }
    }
    result
}

/// The data-loss figure: drill start minus the freshness marker (the operator's
/// `freshness_query`, or the role's heartbeat when its table exists). With `max_data_loss` set,
/// a marker is required and the figure must be within it.
fn freshness(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let a = &plan.args;
    let db = a.database.clone();
    let query = match &a.freshness_query {
        Some(q) => q.clone(),
        None => {
            let has = run.sql(sb, &db, "SELECT to_regclass('veza_heartbeat') IS NOT NULL");
            match has {
                Ok(v) if v == "t" => HEARTBEAT_QUERY.to_owned(),
                Ok(_) if a.max_data_loss.is_none() => return Ok(()),
                Ok(_) => {
                    let detail = "max_data_loss is set but there is no freshness marker: no \
                                  freshness_query and no veza_heartbeat table in the restored \
                                  database"
                        .to_owned();
                    return fail(run, "freshness", "no_freshness_marker", detail);
                }
                Err(e) => return fail(run, "freshness", "no_freshness_marker", e.to_string()),
            }
        }
    };
    let sql = format!("SELECT extract(epoch FROM ({query}))::float8");
    let marker = match run.sql(sb, &db, &sql) {
        Ok(v) => v.parse::<f64>().ok(),
        Err(e) => return fail(run, "freshness", "no_freshness_marker", e.to_string()),
    };
    let Some(marker) = marker else {
        let detail = format!("`{query}` gave no timestamp (NULL)");
        return fail(run, "freshness", "no_freshness_marker", detail);
    };
    let loss = (run.started - marker).max(0.0);
    run.data_loss = Some(loss);
    let at = crate::utc(marker);
    match a.max_data_loss {
        Some(max) if loss > max as f64 => {
            let detail = format!(
                "the newest restored data is from {at}, {loss:.0} s before the drill started: \
                 more than max_data_loss {max}"
            );
            fail(run, "freshness", "data_loss_exceeded", detail)
        }
        _ => {
            run.check(
                "freshness",
                CheckState::Pass,
                format!("newest restored data from {at} ({loss:.0} s)"),
            );
            Ok(())
        }
    }
}

fn amcheck(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let jobs = format!("--jobs={}", plan.args.jobs);
    let args = [
        "--all",
        "--heapallindexed",
        "--parent-check",
        "--install-missing",
        jobs.as_str(),
    ];
    let cmd = run.client(sb, "pg_amcheck", &args);
    run.commands.push(cmd.display());
    match cmd.output() {
        Ok(out) if out.success() => {
            run.check("amcheck", CheckState::Pass, "no corruption found");
            Ok(())
        }
        Ok(out) => {
            let report: Vec<&str> = out
                .stdout
                .lines()
                .chain(out.stderr.lines())
                .filter(|l| !l.trim().is_empty())
                .take(20)
                .collect();
            let detail = format!("pg_amcheck exit code {:?}: {}", out.code, report.join("; "));
            fail(run, "amcheck", "amcheck_failed", detail)
        }
        Err(e) => fail(run, "amcheck", "amcheck_failed", e.to_string()),
    }
}

fn dump(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let list = match run.sql(
        sb,
        "postgres",
        "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
    ) {
        Ok(list) => list,
        Err(e) => return fail(run, "dump", "dump_failed", e.to_string()),
    };
    let dbs: Vec<String> = list
        .lines()
        .filter(|l| !l.is_empty() && *l != "template1")
        .map(str::to_owned)
        .collect();
    let cmds: Vec<_> = dbs
        .iter()
        .map(|db| run.client(sb, "pg_dump", &["-d", db, "-f", "/dev/null"]))
        .collect();
    run.commands.extend(cmds.iter().map(|c| c.display()));
    // Side by side, at most `jobs` at a time.
    let jobs = usize::try_from(plan.args.jobs).unwrap_or(1).max(1);
    let mut bad = Vec::new();
    for (chunk_dbs, chunk) in dbs.chunks(jobs).zip(cmds.chunks(jobs)) {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|c| s.spawn(|| c.run())).collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        for (db, r) in chunk_dbs.iter().zip(results) {
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => bad.push(format!("{db}: {e}")),
                Err(_) => bad.push(format!("{db}: the dump thread panicked")),
            }
        }
    }
    if bad.is_empty() {
        run.check(
            "dump",
            CheckState::Pass,
            format!("{} database(s) dumped", dbs.len()),
        );
        Ok(())
    } else {
        fail(run, "dump", "dump_failed", bad.join("; "))
    }
}

/// pg_checksums --check needs the instance stopped: this check runs last.
fn checksums(run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let on = run
        .sql(sb, "postgres", "SHOW data_checksums")
        .map(|v| v == "on");
    match on {
        Ok(false) => {
            run.check(
                "checksums",
                CheckState::Skipped,
                "the cluster has no data checksums",
            );
            Ok(())
        }
        Err(e) => fail(run, "checksums", "checksums_failed", e.to_string()),
        Ok(true) => {
            let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
            let pgdata = sb.pgdata().to_string_lossy().into_owned();
            let stop = sb.postgres(&[pg_ctl.as_str(), "-D", &pgdata, "-m", "fast", "-w", "stop"]);
            let bin = format!("{}/pg_checksums", run.pg_bin);
            let check = sb.postgres(&[bin.as_str(), "--check", "-D", &pgdata]);
            match run.cmd(&stop).and_then(|_| run.cmd(&check)) {
                Ok(_) => {
                    run.check("checksums", CheckState::Pass, "no checksum failure");
                    Ok(())
                }
                Err(e) => fail(run, "checksums", "checksums_failed", e.to_string()),
            }
        }
    }
}
