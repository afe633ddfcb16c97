//! `pgbackrest_archive_health`: is WAL reaching the repository, and is the archive whole?
//!
//! Every minute on every data node (the pgbackrest role's timer), read-only: the role of the node
//! ([`pg_role::detect`]: only the writable primary's archiving counts), and on the primary
//! `pg_stat_archiver` (archived and failed counts, the last archived and failed WAL and their
//! times), the WAL position (`pg_current_wal_lsn()` and its segment), the repository's newest
//! archived segment (`pgbackrest info`'s archive max) and when it was stored (a `repo-ls` of its
//! directory). So "archiving is failing" (failures newer than the last success) and "the archive
//! is falling behind" (complete segments newer than the repository's newest) are both visible.
//! A node that is not the primary records just that (`primary 0`), never a failure.
//!
//! With `continuity` (the hourly timer) it also lists the archive (`repo-ls --recurse`, no
//! restore) and checks every segment from the oldest retained backup's start to the newest
//! archived one along the primary's timeline path ([`continuity`]).
//!
//! With `metrics_dir` the findings are node_exporter textfile metrics ([`metrics`]), written
//! atomically, mode 0644: a report, so `changed: false`; check mode writes none.

use ansible_module::process::{Cmd, RunAs};
use ansible_module::{Context, Module, Response};
use anyhow::Context as _;
use pg_role::{detect, DetectOptions, Role, Source};
use pgbackrest::command::Pgbackrest;
use pgbackrest::info::Info;
use pgbackrest::wal::{self, Listing, Segment};
use pgbackrest::StanzaName;
use postgres_access::{Login, LoginArgs, Postmaster};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub mod continuity;
pub mod metrics;
pub mod state;

use metrics::{Health, Repo};

ansible_module::options! {
    /// The module's options (login options flattened in), as documented.
    pub struct Args {
        /// `stanza`
        stanza: String = str().required(),
        /// `config`
        config: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `pgbackrest_path`
        pgbackrest_path: String = str().default("pgbackrest"),
        /// `io_timeout`
        io_timeout: Option<i64> = int(),
        /// `source`
        source: Source = str().choices(Source::NAMES).default("auto"),
        /// `pgdata`
        pgdata: Option<PathBuf> = path(),
        /// `pg_autoctl_path`
        pg_autoctl_path: String = str().default("pg_autoctl"),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `continuity`
        continuity: bool = bool().default(false),
        /// `continuity_grace`
        continuity_grace: i64 = int().default(600),
        /// `metrics_dir`: none (or empty) writes no file.
        metrics_dir: Option<PathBuf> = path(),
        /// `metrics_prefix`
        metrics_prefix: String = str().default("veza_archive"),
    }
    flatten {
        /// `login_*`, `connect_timeout`
        login: LoginArgs,
    }
}

/// The Ansible module.
pub struct PgbackrestArchiveHealth;

impl Module for PgbackrestArchiveHealth {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_archive_health";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let stanza = StanzaName::parse(&args.stanza)?;
        if let Some(t) = args.io_timeout.filter(|t| !(1..=86_400).contains(t)) {
            anyhow::bail!("io_timeout: {t} is out of range (1 to 86400 seconds)");
        }
        if !(0..=86_400).contains(&args.continuity_grace) {
            anyhow::bail!(
                "continuity_grace: {} is out of range (0 to 86400 seconds)",
                args.continuity_grace
            );
        }
        if !textfile::valid_prefix(&args.metrics_prefix) {
            anyhow::bail!(
                "metrics_prefix: '{}' is not a valid metric name",
                args.metrics_prefix.escape_default()
            );
        }
        let metrics_dir = args
            .metrics_dir
            .as_deref()
            .filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = metrics_dir.filter(|d| !d.is_dir()) {
            anyhow::bail!("metrics_dir: {} is not a directory", dir.display());
        }
        if let Some(p) = args.pgdata.as_deref().filter(|p| !p.is_dir()) {
            anyhow::bail!("pgdata: '{}' is not a directory", p.display());
        }
        // pgBackRest quotes parts of its configuration in errors (an S3 key): every secret of
        // the configuration is scrubbed from all output.
        let conf = pgbackrest::conf::read(&args.config, stanza.as_str())?;
        for secret in conf.secrets.iter().chain(&pgbackrest::conf::env_secrets()) {
            ctx.add_secret(secret);
        }
        // pg_autoctl refuses root and peer authentication wants the database user.
        RunAs::become_option(args.become_user.as_deref()).map_err(anyhow::Error::msg)?;
        let mut run = Run::default();
        let health = observe(&args, &stanza, ctx, &mut run)?;
        let report = match (args.continuity, health.primary) {
            (true, true) => Some(check_continuity(&args, &stanza, &health, &mut run)?),
            _ => None,
        };
        let now = ansible_module::time::now_secs();
        let prefix = &args.metrics_prefix;
        let mut files = Vec::new();
        if let Some(dir) = metrics_dir {
            let mut texts = vec![(
                metrics::health_file(prefix, stanza.as_str()),
                metrics::render_health(prefix, stanza.as_str(), &health, now),
            )];
            if args.continuity {
                texts.push((
                    metrics::continuity_file(prefix, stanza.as_str()),
                    metrics::render_continuity(prefix, stanza.as_str(), report.as_ref(), now),
                ));
            }
            for (name, text) in texts {
                let file = dir.join(name);
                if !ctx.check_mode {
                    write(&file, &text)?;
                }
                files.push(file.display().to_string());
            }
        }
        Ok(response(
            &health,
            report.as_ref(),
            &files,
            ctx.check_mode,
            run,
        ))
    }
}

/// What was run, for the result.
#[derive(Debug, Default)]
struct Run {
    commands: Vec<String>,
    queries: Vec<String>,
    role: Option<Role>,
    repo_error: Option<String>,
}

fn write(file: &Path, text: &str) -> anyhow::Result<()> {
    let attrs = ansible_module::fs::Attrs {
        mode: Some(0o644),
        ..Default::default()
    };
    ansible_module::fs::write_atomic(file, text.as_bytes(), &attrs)
        .map_err(|e| anyhow::anyhow!("metrics_dir: writing {}: {e}", file.display()))
}

fn pgbackrest(args: &Args, stanza: &StanzaName) -> Pgbackrest {
    Pgbackrest::new(&args.pgbackrest_path, &args.config, stanza.as_str(), "off")
        .timeouts(args.io_timeout, None)
}

/// The role, and on the primary what PostgreSQL and the repository say.
fn observe(
    args: &Args,
    stanza: &StanzaName,
    ctx: &mut Context,
    run: &mut Run,
) -> anyhow::Result<Health> {
    let opts = DetectOptions {
        source: args.source,
        pgdata: args.pgdata.as_deref(),
        pg_autoctl_path: &args.pg_autoctl_path,
        login: &args.login,
    };
    let det = detect(&opts, ctx)?;
    run.commands.extend(det.commands.iter().cloned());
    run.queries.extend(det.queries.iter().cloned());
    run.role = Some(det.role);
    let mut health = Health {
        primary: det.is_primary(),
        postgres_up: det.sql.is_some(),
        ..Health::default()
    };
    if let Some(why) = det.unknown_reason.as_deref() {
        ctx.warn(format!("the role of this node is unknown: {why}"));
    }
    if !health.primary {
        return Ok(health);
    }
    let pgdata = args
        .pgdata
        .clone()
        .or(det.keeper.as_ref().map(|k| k.pgdata.clone()));
    let postmaster = pgdata.as_deref().and_then(Postmaster::read);
    let login = Login::new(&args.login, postmaster.as_ref())?;
    run.queries.push(state::QUERY.to_owned());
    let row = postgres_access::block_on(async {
        let client = login.connect().await?;
        postgres_access::simple_row(&client, state::QUERY)
            .await
            .map_err(anyhow::Error::from)
    })?
    .context("reading pg_stat_archiver")?;
    let archiver = state::parse(&row).map_err(anyhow::Error::msg)?;
    health.repo = Some(repo(args, stanza, archiver.seg_size, ctx, run));
    health.archiver = Some(archiver);
    Ok(health)
}

/// The repository's newest segment (and its archive id, for the continuity check), or status 99
/// with a warning when pgBackRest cannot tell: a dead repository is a finding, not a failure.
fn repo(args: &Args, stanza: &StanzaName, seg_size: u64, ctx: &mut Context, run: &mut Run) -> Repo {
    match read_repo(args, stanza, seg_size, ctx, run) {
        Ok(r) => r,
        Err(e) => {
            let msg = format!("{e:#}");
            ctx.warn(format!("the repository could not be read: {msg}"));
            run.repo_error = Some(msg);
            Repo {
                status_code: 99,
                ..Repo::default()
            }
        }
    }
}

fn info(args: &Args, stanza: &StanzaName, run: &mut Run) -> anyhow::Result<Info> {
    let cmd = pgbackrest(args, stanza).opt("--output=json").cmd("info");
    let out = logged(run, &cmd).context("pgbackrest info")?;
    Ok(pgbackrest::info::parse(&out.stdout, stanza.as_str())?)
}

/// The newest database entry's archive: its id and newest segment name.
fn newest_archive(info: &Info) -> Option<(&str, Option<&str>, i64)> {
    info.archives
        .iter()
        .max_by_key(|a| (a.db_id, a.max.clone()))
        .map(|a| (a.id.as_str(), a.max.as_deref(), a.db_id))
}

fn read_repo(
    args: &Args,
    stanza: &StanzaName,
    seg_size: u64,
    ctx: &mut Context,
    run: &mut Run,
) -> anyhow::Result<Repo> {
    let info = info(args, stanza, run)?;
    let mut repo = Repo {
        status_code: info.status.code,
        ..Repo::default()
    };
    let Some((id, Some(max), _)) = newest_archive(&info) else {
        return Ok(repo);
    };
    let newest = Segment::parse(max, seg_size)
        .with_context(|| format!("pgbackrest info: archive max '{max}' is not a segment"))?;
    repo.newest = Some(newest);
    // When it was stored: one directory of the archive (`<timeline><log>`), not all of it.
    let dir = format!(
        "archive/{stanza}/{id}/{}",
        &max[..16],
        stanza = stanza.as_str()
    );
    // Without it the newest segment is still known; only the age alert loses its input.
    match list(args, stanza, &dir, false, seg_size, run) {
        Ok(listing) => repo.newest_time = listing.segments.get(&newest).copied(),
        Err(e) => ctx.warn(format!(
            "when the newest segment was stored is unknown: {e:#}"
        )),
    }
    Ok(repo)
}

fn list(
    args: &Args,
    stanza: &StanzaName,
    path: &str,
    recurse: bool,
    seg_size: u64,
    run: &mut Run,
) -> anyhow::Result<Listing> {
    let mut b = pgbackrest(args, stanza).opt("--output=json");
    if recurse {
        b = b.opt("--recurse");
    }
    let out = logged(run, &b.after(path).cmd("repo-ls")).context("pgbackrest repo-ls")?;
    Listing::parse(&out.stdout, seg_size).map_err(anyhow::Error::msg)
}

fn logged(run: &mut Run, cmd: &Cmd) -> anyhow::Result<ansible_module::process::Output> {
    run.commands.push(cmd.display());
    Ok(cmd.run()?)
}

/// The hourly check: list the archive, read the path's history, compare.
fn check_continuity(
    args: &Args,
    stanza: &StanzaName,
    health: &Health,
    run: &mut Run,
) -> anyhow::Result<continuity::Report> {
    let a = health
        .archiver
        .as_ref()
        .context("continuity: pg_stat_archiver was not read")?;
    let seg_size = a.seg_size;
    let info = info(args, stanza, run).context("continuity")?;
    let Some((id, _, db_id)) = newest_archive(&info) else {
        return Ok(continuity::Report::default());
    };
    // The oldest retained backup of the current database entry: its WAL start.
    let Some(start) = info
        .backups
        .iter()
        .filter(|b| b.db_id == db_id)
        .find_map(|b| b.wal_start.as_deref())
        .and_then(|s| Segment::parse(s, seg_size))
    else {
        return Ok(continuity::Report::default());
    };
    let base = format!("archive/{}/{id}", stanza.as_str());
    let listing = list(args, stanza, &base, true, seg_size, run).context("continuity")?;
    let tli = a
        .current_segment
        .map(|c| c.tli)
        .or(listing.newest_tli())
        .unwrap_or(1);
    let history = if tli <= 1 {
        Some(Vec::new())
    } else if listing.histories.contains(&tli) {
        let cmd = pgbackrest(args, stanza)
            .after(format!("{base}/{tli:08X}.history"))
            .cmd("repo-get");
        let out = logged(run, &cmd).context("continuity: pgbackrest repo-get")?;
        Some(wal::parse_history(&out.stdout))
    } else {
        None
    };
    Ok(continuity::check(&continuity::Inputs {
        listing: &listing,
        tli,
        history: history.as_deref(),
        start,
        current: a.current_segment,
        seg_size,
        now: ansible_module::time::now_secs(),
        grace: args.continuity_grace,
    }))
}

fn response(
    h: &Health,
    report: Option<&continuity::Report>,
    files: &[String],
    check_mode: bool,
    run: Run,
) -> Response {
    let a = h.archiver.as_ref();
    let name = |s: Option<Segment>| s.zip(a).map(|(s, a)| s.name(a.seg_size));
    let archiver = a.map(|a| {
        json!({
            "archived_count": a.archived_count, "failed_count": a.failed_count,
            "last_archived_wal": a.last_archived_wal, "last_archived_time": a.last_archived_time,
            "last_failed_wal": a.last_failed_wal, "last_failed_time": a.last_failed_time,
            "stats_reset": a.stats_reset, "archive_mode": a.archive_mode,
            "archive_timeout": a.archive_timeout, "wal_segment_size": a.seg_size,
            "current_lsn": a.current_lsn, "current_segment": name(a.current_segment),
        })
    });
    let repo = h.repo.as_ref().map(|r| {
        json!({"status_code": r.status_code, "newest_segment": name(r.newest),
               "newest_time": r.newest_time, "error": run.repo_error})
    });
    let failing = a.is_some_and(|a| a.last_failed_time > a.last_archived_time);
    let cont = report.map(|r| {
        let missing: Vec<Value> = r
            .missing
            .iter()
            .map(|(c, n, s)| json!({"class": c.name(), "count": n, "first": s}))
            .collect();
        json!({"from": r.from, "to": r.to, "checked_segments": r.expected, "missing": missing})
    });
    let mut msg = match (h.primary, failing) {
        (false, _) => "not the writable primary: archiving is the primary's".to_owned(),
        (true, true) => {
            "archiving is failing: the last failure is newer than the last success".to_owned()
        }
        (true, false) => match h.behind() {
            Some(n) if n > 0 => format!("archiving: {n} complete segment(s) not in the repository"),
            _ => "archiving is keeping up".to_owned(),
        },
    };
    if let Some(r) = report.filter(|r| !r.missing.is_empty()) {
        let lost = r.count(continuity::Class::Lost);
        msg.push_str(&format!("; continuity: {lost} segment(s) lost"));
    }
    match (files.len(), check_mode) {
        (0, _) => {}
        (n, true) => msg.push_str(&format!("; check mode: {n} metrics file(s) not written")),
        (n, false) => msg.push_str(&format!("; {n} metrics file(s) written")),
    }
    Response::new()
        .msg(msg)
        .field("primary", h.primary)
        .field("role", run.role.map(|r| r.name()))
        .field("postgres_up", h.postgres_up)
        .field("archiving_failing", h.primary && failing)
        .field("behind_segments", h.behind())
        .field("archiver", archiver)
        .field("repo", repo)
        .field("continuity", cont)
        .field("metrics_files", files)
        .field("commands", &run.commands)
        .field("queries", &run.queries)
}
