//! The stages up to a running, promoted instance, and the proof that replay reached the end of
//! the archive: pre-flight, sandbox, verify, the archive listing, restore, start, the wait for
//! the end of recovery and the end-of-archive proof.

use crate::archive::{self, Outcome};
use crate::plan::{Plan, SandboxKind};
use crate::repo_access::S3Route;
use crate::run::{drill_err, env_err, rto_exceeded, CheckState, Run, Stop, DRILL_PORT};
use crate::sandbox::{self, Sandbox};
use crate::{find_program, signals};
use ansible_module::process::{Cmd, RunAs};
use anyhow::anyhow;
use pgbackrest::command::Pgbackrest;
use pgbackrest::info::{Backup, Info};
use pgbackrest::wal::{self, Listing, Segment};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Pre-flight: tools, configuration (its secrets registered for scrubbing), the backup metadata
/// and its error flags, the backup's age, the image; the chosen backup and its archive id go
/// into `run`.
pub fn preflight(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    let a = &plan.args;
    let pgbackrest = find_program("pgbackrest").ok_or_else(|| {
        Stop::Env(
            "missing_tool",
            anyhow!("pgbackrest is not installed on this host"),
        )
    })?;
    if plan.sandbox == SandboxKind::Incus && find_program("incus").is_none() {
        return Err(Stop::Env(
            "missing_tool",
            anyhow!("incus is not installed on this host"),
        ));
    }
    if !a.config.is_file() {
        let msg = anyhow!("config: {} does not exist", a.config.display());
        return Err(Stop::Env("no_config", msg));
    }
    // pgBackRest quotes parts of its configuration in errors (an S3 key): every secret of the
    // configuration is scrubbed from all output from here on.
    run.conf =
        pgbackrest::conf::read(&a.config, plan.stanza.as_str()).map_err(env_err("no_config"))?;
    for secret in run
        .conf
        .secrets
        .iter()
        .chain(&pgbackrest::conf::env_secrets())
    {
        ansible_module::register_secret(secret);
    }
    let info_cmd = pgbackrest_cmd(&pgbackrest.to_string_lossy(), &a.config, plan, "warn")
        .opt("--output=json")
        .cmd("info");
    let out = run.cmd(&info_cmd).map_err(drill_err("repo_unreadable"))?;
    let info = pgbackrest::info::parse(&out.stdout, plan.stanza.as_str())
        .map_err(drill_err("repo_unreadable"))?;
    let chosen = choose_backup(plan, &info)?;
    if let Err(bad) = backup_errors(&info, &chosen) {
        let files = bad_files(plan, run, &pgbackrest.to_string_lossy(), &bad);
        return Err(Stop::Drill(
            "backup_has_errors",
            anyhow!(
                "pgBackRest found page checksum errors while taking backup {} (restoring {}): {}",
                bad.join(", "),
                chosen.label,
                files
            ),
        ));
    }
    run.backup_age = Some((run.started - chosen.stop as f64).max(0.0));
    if a.max_backup_age > 0 && run.backup_age > Some(a.max_backup_age as f64) {
        return Err(Stop::Drill(
            "backup_too_old",
            anyhow!(
                "backup {} stopped {:.0} s before the drill, more than max_backup_age {}",
                chosen.label,
                run.backup_age.unwrap_or_default(),
                a.max_backup_age
            ),
        ));
    }
    run.archive_id = info
        .archives
        .iter()
        .find(|ar| ar.db_id == chosen.db_id && ar.repo_key == chosen.repo_key)
        .map(|ar| ar.id.clone());
    run.backup = Some(chosen);
    let major = info.pg_version.clone().unwrap_or_else(|| "15".into());
    run.pg_bin = format!("/usr/lib/postgresql/{major}/bin");
    if plan.sandbox == SandboxKind::Host && !Path::new(&run.pg_bin).join("pg_ctl").is_file() {
        let msg = anyhow!(
            "PostgreSQL {major} is not installed on this host ({}/pg_ctl)",
            run.pg_bin
        );
        return Err(Stop::Env("missing_tool", msg));
    }
    if plan.sandbox == SandboxKind::Incus {
        let image = Cmd::new("incus").args(["image", "info", &a.image]);
        run.cmd(&image).map_err(|e| {
            let msg = anyhow!(
                "image: '{}' is not available to incus ({e}); build it with scripts/drill-image",
                a.image
            );
            Stop::Env("image_missing", msg)
        })?;
    }
    std::fs::create_dir_all(&a.metrics_dir).map_err(|e| {
        let msg = anyhow!("metrics_dir: creating {}: {e}", a.metrics_dir.display());
        Stop::Env("metrics_dir", msg)
    })?;
    Ok(())
}

/// A pgBackRest command of the drill: the configuration, the stanza, no log file.
fn pgbackrest_cmd(program: &str, config: &Path, plan: &Plan, console: &str) -> Pgbackrest {
    Pgbackrest::new(program, config, plan.stanza.as_str(), console).no_log_file()
}

/// The set to restore: `set`, or the latest. No stanza, no backup, an unreadable repository
/// (wrong cipher pass, unreachable endpoint): nothing can be restored with what the operator
/// holds, the worst outcome of a drill (exit 1).
fn choose_backup(plan: &Plan, info: &Info) -> Result<Backup, Stop> {
    let stanza = plan.stanza.as_str();
    let status = &info.status;
    let (reason, what) = match status.code {
        0 => ("", String::new()),
        1 => (
            "no_stanza",
            format!("stanza '{stanza}' does not exist in the repository"),
        ),
        2 => ("no_backup", format!("stanza '{stanza}' has no backup")),
        _ => (
            "repo_unreadable",
            format!(
                "the repository of stanza '{stanza}' cannot be read with this configuration \
                 (wrong cipher pass, credentials or endpoint?)"
            ),
        ),
    };
    if !reason.is_empty() {
        // Each repository's own status says why (pgBackRest's error, as S3 answered it: it may
        // quote the access key, which the output scrubs like every secret of the configuration).
        let repos: Vec<String> = status
            .repos
            .iter()
            .filter(|r| r.code != 0)
            .map(|r| format!("repo{}: {}", r.key, r.message.trim()))
            .collect();
        let why = if repos.is_empty() {
            String::new()
        } else {
            format!("; {}", repos.join("; "))
        };
        let msg = anyhow!(
            "{what}: pgbackrest info status {} ({}){why}",
            status.code,
            status.message
        );
        return Err(Stop::Drill(reason, msg));
    }
    let chosen = match &plan.args.set {
        Some(set) => info.backups.iter().find(|b| &b.label == set),
        None => info.backups.last(),
    };
    chosen.cloned().ok_or_else(|| match &plan.args.set {
        Some(set) => Stop::Drill(
            "no_backup",
            anyhow!("set: backup '{set}' is not in the repository"),
        ),
        None => Stop::Drill("no_backup", anyhow!("stanza '{stanza}' has no backup")),
    })
}

/// pgBackRest records page checksum errors it met while taking a backup (`error` in `info`):
/// such a set, or any set it depends on, restores corrupt pages. `Err`: the labels of those sets.
fn backup_errors(info: &Info, chosen: &Backup) -> Result<(), Vec<String>> {
    let mut chain = vec![chosen.clone()];
    while let Some(prior) = chain.last().and_then(|b| b.prior.clone()) {
        match info.backups.iter().find(|b| b.label == prior) {
            Some(b) if chain.len() < 10_000 => chain.push(b.clone()),
            _ => break,
        }
    }
    let bad: Vec<String> = chain
        .iter()
        .filter(|b| b.error)
        .map(|b| b.label.clone())
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// The files each bad set's manifest records page errors for (read with `repo-get`, which
/// decrypts), at most 20; a manifest that cannot be read says so instead.
fn bad_files(plan: &Plan, run: &mut Run, program: &str, labels: &[String]) -> String {
    let mut files = Vec::new();
    for label in labels {
        let path = format!("backup/{}/{label}/backup.manifest", plan.stanza);
        let cmd = pgbackrest_cmd(program, &plan.args.config, plan, "warn")
            .after(path)
            .cmd("repo-get");
        match run.cmd(&cmd) {
            Ok(out) => files.extend(pgbackrest::output::page_errors(&out.stdout)),
            Err(e) => files.push(format!("{label}'s manifest could not be read: {e}")),
        }
    }
    files.truncate(20);
    if files.is_empty() {
        "its manifest names no file".to_owned()
    } else {
        files.join(", ")
    }
}

/// Make the sandbox and put the configuration in it.
pub fn make_sandbox(plan: &Plan, run: &mut Run) -> Result<Sandbox, Stop> {
    let user = RunAs::user("postgres").map_err(env_err("no_postgres_user"))?;
    let sb = match plan.sandbox {
        SandboxKind::Incus => {
            if sandbox::container_exists(&plan.container) {
                let msg = anyhow!(
                    "container '{}' already exists (a kept drill?); delete it first",
                    plan.container
                );
                return Err(Stop::Env("container_exists", msg));
            }
            incus_sandbox(plan, run, &user)?
        }
        SandboxKind::Host => {
            let dir = sandbox::host_dir(plan.stanza.as_str(), std::process::id());
            let sb = Sandbox::Host {
                dir: dir.clone(),
                user: user.clone(),
            };
            signals::set_live(Some((sb.clone(), format!("{}/pg_ctl", run.pg_bin))));
            make_private_dir(&dir, &user).map_err(|e| {
                Stop::Env("sandbox_failed", anyhow!("creating {}: {e}", dir.display()))
            })?;
            run.sandbox = Some(sb.clone());
            sb
        }
    };
    sb.write_file(&sb.base().join("drill_hba.conf"), "local all all trust\n")
        .map_err(|e| Stop::Env("sandbox_failed", e))?;
    Ok(sb)
}

fn make_private_dir(dir: &Path, user: &RunAs) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    // create, not create_all: a path planted in /tmp (a link, a directory) is refused.
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::chown(dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
}

fn incus_sandbox(plan: &Plan, run: &mut Run, user: &RunAs) -> Result<Sandbox, Stop> {
    let a = &plan.args;
    let conf_text = std::fs::read_to_string(&a.config)
        .map_err(|e| Stop::Env("no_config", anyhow!("reading {}: {e}", a.config.display())))?;
    let sb = Sandbox::Incus {
        name: plan.container.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    };
    // Registered before it exists: a signal during the launch still removes it.
    signals::set_live(Some((sb.clone(), String::new())));
    let mut init = Cmd::new("incus").args(["init", &a.image, &plan.container]);
    if !a.keep {
        init = init.arg("--ephemeral");
    }
    for p in std::iter::once(&"default".to_owned()).chain(&a.profiles) {
        init = init.args(["--profile", p]);
    }
    run.cmd(&init).map_err(env_err("launch_failed"))?;
    let s3 = match run.conf.repo_type() {
        "s3" => {
            let route = S3Route::of(&run.conf).map_err(|e| Stop::Env("repo_route", anyhow!(e)))?;
            let to = route
                .resolve()
                .map_err(|e| Stop::Env("repo_route", anyhow!(e)))?;
            let proxy = Cmd::new("incus")
                .args(["config", "device", "add", &plan.container, "repo", "proxy"])
                .args(route.proxy(to))
                .arg("bind=container");
            run.cmd(&proxy).map_err(env_err("launch_failed"))?;
            for (i, path) in route.ca_paths.iter().enumerate() {
                run.cmd(&read_only_mount(
                    &plan.container,
                    &format!("repo-ca{i}"),
                    path,
                ))
                .map_err(env_err("launch_failed"))?;
            }
            Some(route)
        }
        "posix" | "cifs" => {
            let repo_path = run.conf.repo_path().to_owned();
            run.cmd(&read_only_mount(&plan.container, "repo", &repo_path))
                .map_err(env_err("launch_failed"))?;
            None
        }
        other => {
            let msg = anyhow!(
                "repo1-type={other}: an incus drill reaches posix, cifs and s3 repositories \
                 (sandbox: host reaches any)"
            );
            return Err(Stop::Env("repo_route", msg));
        }
    };
    run.cmd(&Cmd::new("incus").args(["start", &plan.container]))
        .map_err(env_err("launch_failed"))?;
    if let Some(route) = s3 {
        let hosts = Cmd::new("incus")
            .args([
                "file", "push", "--uid", "0", "--gid", "0", "--mode", "0644", "-",
            ])
            .arg(format!("{}/etc/hosts", plan.container))
            .stdin(route.hosts_file().into_bytes());
        run.cmd(&hosts).map_err(env_err("launch_failed"))?;
    }
    run.sandbox = Some(sb.clone());
    let base = sb.base();
    run.cmd(&sb.postgres(&["mkdir", "-p", "-m", "0700", &base.to_string_lossy()]))
        .map_err(env_err("launch_failed"))?;
    // The configuration, secrets included, goes by `incus file push` at 0600: never on argv.
    sb.write_file(&base.join("pgbackrest.conf"), &conf_text)
        .map_err(|e| Stop::Env("launch_failed", e))?;
    Ok(sb)
}

/// `incus config device add NAME DEVICE disk`: `path` of this host, read-only at the same path.
fn read_only_mount(container: &str, device: &str, path: &str) -> Cmd {
    Cmd::new("incus")
        .args(["config", "device", "add", container, device, "disk"])
        .arg(format!("source={path}"))
        .arg(format!("path={path}"))
        .args(["readonly=true", "shift=true"])
}

/// The configuration as the sandbox sees it.
fn sandbox_config(plan: &Plan, sb: &Sandbox) -> PathBuf {
    match sb {
        Sandbox::Incus { .. } => sb.base().join("pgbackrest.conf"),
        Sandbox::Host { .. } => plan.args.config.clone(),
    }
}

/// `pgbackrest verify` (it exits 0 even when it finds errors: its report is read).
pub fn verify(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let mut cmd = pgbackrest_cmd("pgbackrest", &sandbox_config(plan, sb), plan, "info");
    if let Some(set) = &plan.args.set {
        cmd = cmd.opt(format!("--set={set}"));
    }
    let out = match run.cmd(&sb.postgres(&cmd.argv("verify"))) {
        Ok(out) => out,
        Err(e) => {
            run.check("verify", CheckState::Fail, e.to_string());
            return Err(Stop::Drill("verify_failed", anyhow!("{e}")));
        }
    };
    let errors = pgbackrest::output::verify_errors(&format!("{}\n{}", out.stdout, out.stderr));
    if errors.is_empty() {
        run.check("verify", CheckState::Pass, "no errors");
        return Ok(());
    }
    let detail = errors.join("; ");
    run.check("verify", CheckState::Fail, detail.clone());
    Err(Stop::Drill(
        "verify_failed",
        anyhow!("pgbackrest verify found errors: {detail}"),
    ))
}

/// List the archive of the restored backup's database before the restore: replay must reach at
/// least its newest segment.
pub fn list_archive(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    // No archive range in `info` for the backup's database: nothing to list, and the proof
    // fails on the empty archive (a backup's own WAL is always archived).
    let Some(id) = run.archive_id.clone() else {
        return Ok(());
    };
    let path = format!("archive/{}/{id}", plan.stanza);
    let cmd = pgbackrest_cmd("pgbackrest", &plan.args.config, plan, "warn")
        .opt("--output=json")
        .opt("--recurse")
        .after(path)
        .cmd("repo-ls");
    let out = run.cmd(&cmd).map_err(drill_err("repo_unreadable"))?;
    // Parsed after the restore, with the restored cluster's segment size.
    run.archive_json = Some(out.stdout);
    Ok(())
}

/// Restore with `--archive-mode=off`: the drill instance never pushes WAL into production.
pub fn restore(plan: &Plan, run: &mut Run, sb: &Sandbox, deadline: Instant) -> Result<(), Stop> {
    let a = &plan.args;
    let mut cmd = pgbackrest_cmd("pgbackrest", &sandbox_config(plan, sb), plan, "info")
        .opt(format!("--pg1-path={}", sb.pgdata().display()))
        .opt("--archive-mode=off");
    if let Some(target) = &a.target {
        cmd = cmd
            .opt(format!("--type={}", a.target_type.name()))
            .opt(format!("--target={target}"))
            .opt(format!("--target-action={}", a.target_action.name()));
    }
    if let Some(set) = &a.set {
        cmd = cmd.opt(format!("--set={set}"));
    }
    let argv = cmd.argv("restore");
    let (out, late) = signals::with_deadline(deadline, || run.cmd(&sb.postgres(&argv)));
    if late {
        return Err(rto_exceeded(plan, "the restore"));
    }
    let out = out.map_err(drill_err("restore_failed"))?;
    if let Some(label) = pgbackrest::output::restored_set(&out.stdout) {
        if run.backup.as_ref().is_some_and(|b| b.label != label) {
            // pgBackRest chose another set (a newer one appeared since pre-flight): say which.
            if let Some(b) = run.backup.as_mut() {
                b.label = label;
            }
        }
    }
    Ok(())
}

/// Start PostgreSQL on the private socket only, without archiving or synchronous standbys.
pub fn start(plan: &Plan, run: &mut Run, sb: &Sandbox, deadline: Instant) -> Result<(), Stop> {
    let pgdata = sb.pgdata();
    let base = sb.base();
    // A Debian-style cluster keeps its configuration outside the data directory.
    let conf = pgdata.join("postgresql.conf");
    if run
        .cmd(&sb.postgres(&["test", "-f", &conf.to_string_lossy()]))
        .is_err()
    {
        sb.write_file(
            &conf,
            "# written by dr_drill: the backup holds no postgresql.conf\n",
        )
        .map_err(|e| Stop::Drill("start_failed", e))?;
    }
    // The restored configuration keeps the production socket directory and port: override them,
    // listen on no TCP address, archive nothing, and trust only the private socket. A formation's
    // synchronous_standby_names would make every write (CREATE EXTENSION of amcheck) wait forever
    // for a standby the drill does not have. TLS is off: no TCP, and a formation's certificate
    // settings name files by their production paths (pg_autoctl --ssl-self-signed writes
    // ssl_cert_file=<PGDATA>/server.crt), which the drill's data directory is not.
    let opts = format!(
        "-c unix_socket_directories={} -c listen_addresses='' -c port={DRILL_PORT} \
         -c archive_mode=off -c synchronous_standby_names='' -c ssl=off \
         -c hba_file={}/drill_hba.conf",
        sb.socket_dir().display(),
        base.display()
    );
    let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
    let log = base.join("postgresql.log");
    // pg_ctl reads -t with atoi: keep it an int.
    let wait = plan
        .args
        .start_timeout
        .clamp(1, i64::from(i32::MAX))
        .to_string();
    let (pgdata, log) = (pgdata.to_string_lossy(), log.to_string_lossy());
    let argv = [
        &pg_ctl, "-D", &pgdata, "-l", &log, "-w", "-t", &wait, "-o", &opts, "start",
    ];
    let cmd = sb.postgres(&argv);
    let (started, late) = signals::with_deadline(deadline, || run.cmd(&cmd));
    if late {
        return Err(rto_exceeded(plan, "the start"));
    }
    if let Err(e) = started {
        let tail = sb
            .postgres(&["tail", "-n", "5", &log])
            .output()
            .map(|o| o.stdout.trim().to_owned())
            .unwrap_or_default();
        let msg = anyhow!("PostgreSQL did not start: {e}; log: {tail}");
        return Err(Stop::Drill("start_failed", msg));
    }
    Ok(())
}

/// Wait until the instance is promoted (`pg_is_in_recovery()` false), then record the age of
/// the last replayed transaction at drill start.
pub fn wait_recovery(plan: &Plan, run: &mut Run, sb: &Sandbox, rto: Instant) -> Result<(), Stop> {
    let deadline = signals::deadline(plan.args.recovery_timeout);
    let db = plan.args.database.clone();
    loop {
        crate::run::interrupted()?;
        let answer = run.sql(sb, &db, "SELECT pg_is_in_recovery()");
        // Polls are not worth a line each in `commands`.
        run.commands.pop();
        match answer {
            Ok(v) if v == "f" => break,
            _ if Instant::now() >= rto => {
                return Err(rto_exceeded(plan, "the wait for the end of recovery"))
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(_) => {
                let msg = anyhow!("still in recovery after {} s", plan.args.recovery_timeout);
                return Err(Stop::Drill("recovery_timeout", msg));
            }
            Err(e) => return Err(Stop::Drill("recovery_failed", anyhow!("{e}"))),
        }
    }
    let ts = run
        .sql(
            sb,
            &db,
            "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp()), 0)",
        )
        .map_err(drill_err("recovery_failed"))?;
    let last = ts.parse::<f64>().ok().filter(|t| *t > 0.0);
    let last = last.or_else(|| run.backup.as_ref().map(|b| b.stop as f64));
    run.recovery_target_age = last.map(|t| (run.started - t).max(0.0));
    Ok(())
}

/// Where replay ended, from the promoted timeline's history file.
const HISTORY_QUERY: &str = "SELECT pg_read_file('pg_wal/' || name) FROM pg_ls_waldir() \
     WHERE name ~ '^[0-9A-F]{8}\\.history$' ORDER BY name DESC LIMIT 1";

/// The end-of-archive proof (see [`crate::archive`]); for a point-in-time drill, that replay
/// stopped at the target rather than at the end of the WAL it could fetch.
pub fn prove_replay(plan: &Plan, run: &mut Run, sb: &Sandbox) -> Result<(), Stop> {
    let db = plan.args.database.clone();
    let size = run
        .sql(
            sb,
            &db,
            "SELECT setting FROM pg_settings WHERE name = 'wal_segment_size'",
        )
        .map_err(drill_err("recovery_failed"))?;
    let seg_size = size
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0)
        .unwrap_or(16 << 20);
    let history = run
        .sql(sb, &db, HISTORY_QUERY)
        .map_err(drill_err("recovery_failed"))?;
    let history = wal::parse_history(&history);
    let Some(last) = history.last() else {
        let msg = anyhow!("the restored instance has no timeline history: it was never promoted");
        run.check("archive", CheckState::Fail, msg.to_string());
        return Err(Stop::Drill("recovery_failed", msg));
    };
    let ended = Segment::of_lsn(last.tli, last.lsn.saturating_sub(1), seg_size).name(seg_size);
    if plan.is_pitr() {
        if last.reason.starts_with("no recovery target") {
            let msg = anyhow!("replay ended at {ended} without reaching the target");
            run.check("archive", CheckState::Fail, msg.to_string());
            return Err(Stop::Drill("target_not_reached", msg));
        }
        run.check(
            "archive",
            CheckState::Pass,
            format!("replay stopped at the target ({})", last.reason),
        );
        return Ok(());
    }
    let json = run.archive_json.take().unwrap_or_else(|| "{}".into());
    let listing = Listing::parse(&json, seg_size).map_err(drill_err("repo_unreadable"))?;
    let outcome =
        archive::prove(&listing, &history, seg_size).map_err(drill_err("recovery_failed"))?;
    let result = judge(
        &listing,
        &outcome,
        seg_size,
        run.recovery_target_age,
        run.started,
    );
    match result {
        Ok(detail) => {
            run.check("archive", CheckState::Pass, detail);
            Ok(())
        }
        Err((reason, detail)) => {
            run.check("archive", CheckState::Fail, detail.clone());
            Err(Stop::Drill(reason, anyhow!("{detail}")))
        }
    }
}

/// The proof's outcome as a pass detail or a failure (reason, detail).
fn judge(
    listing: &Listing,
    outcome: &Outcome,
    seg_size: u64,
    last_commit_age: Option<f64>,
    started: f64,
) -> Result<String, (&'static str, String)> {
    let name = |s: &Segment| s.name(seg_size);
    let lost = |end: &Segment, newest: &Segment| {
        let last = last_commit_age.map(|age| started - age);
        let until = listing.segments.get(newest).copied().unwrap_or_default();
        format!(
            "{} segment(s) after {} up to {} were not replayed: commits from {} to {} \
             (archive time) are lost",
            newest.number.saturating_sub(end.number),
            name(end),
            name(newest),
            last.map(crate::utc)
                .unwrap_or_else(|| "the backup's end".into()),
            crate::utc(until as f64)
        )
    };
    match outcome {
        Outcome::Complete { end } => Ok(format!(
            "replay reached the end of the archive ({})",
            name(end)
        )),
        Outcome::Gap {
            end,
            missing,
            newest,
        } => Err((
            "wal_gap",
            format!(
                "WAL segment {} is missing from the archive: {}",
                name(missing),
                lost(end, newest)
            ),
        )),
        Outcome::Unreadable {
            end,
            segment,
            newest,
        } => Err((
            "wal_unreadable",
            format!(
                "WAL segment {} is in the archive but replay could not use it (unreadable, \
                 undecryptable or corrupt): {}",
                name(segment),
                lost(end, newest)
            ),
        )),
        Outcome::EmptyArchive { end } => Err((
            "wal_gap",
            format!(
                "the archive holds no WAL segment for this backup's database (replay ended at \
                 {}): every commit after the backup is lost",
                name(end)
            ),
        )),
        Outcome::TimelineNotFollowed { end, newest_tli } => Err((
            "wal_gap",
            format!(
                "the archive holds timeline {newest_tli}, but replay ended on timeline {} at {} \
                 (the newer timeline's history file is missing or unreadable)",
                end.tli,
                name(end)
            ),
        )),
    }
}
