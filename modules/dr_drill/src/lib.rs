//! `dr_drill`: prove that the latest backup restores, every week, in a throwaway sandbox.
//!
//! A drill checks its preconditions (tools, a backup in `pgbackrest info`, no other drill of the
//! stanza: a lock file), restores with `--archive-mode=off` into an ephemeral Incus container
//! without a network interface (or a temporary directory on the host), starts PostgreSQL on a
//! unix socket only, waits for the end of recovery, runs its checks, writes the node_exporter
//! textfile metrics atomically and always removes the sandbox, on SIGTERM/SIGINT too. The same
//! binary is the Ansible module and the program a systemd timer runs (arguments as JSON on
//! stdin): exit 0 pass, 1 drill failure, 2 environment problem.

pub mod metrics;
pub mod sandbox;

use ansible_module::process::{Cmd, CmdError, RunAs};
use ansible_module::{Context, Elem, Module, Opt, Response, Spec};
use anyhow::{anyhow, Context as _};
use sandbox::Sandbox;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The module.
pub struct DrDrill;

/// A smoke query: its first column of its first row must be an integer >= `min`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmokeQuery {
    /// The query.
    pub sql: String,
    /// The minimum accepted value.
    #[serde(default)]
    pub min: i64,
    /// The database (default: the `database` option).
    #[serde(default)]
    pub database: Option<String>,
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

const CHECKS: &[&str] = &["amcheck", "checksums", "dump", "verify"];

/// The drill instance's port: it listens on its private unix socket only, so any port will do.
const DRILL_PORT: &str = "5432";

impl Module for DrDrill {
    type Args = Args;
    const NAME: &'static str = "dr_drill";

    fn spec() -> Spec {
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
            Opt::list("checks", Elem::Str).default(json!([])),
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

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let plan = Plan::new(args).map_err(|e| anyhow!("{e:#}"))?;
        run(plan, ctx)
    }
}

/// Validated options.
#[derive(Debug)]
struct Plan {
    args: Args,
    container: String,
    smoke: Vec<SmokeQuery>,
}

impl Plan {
    fn new(args: Args) -> anyhow::Result<Plan> {
        pgbackrest::StanzaName::parse(&args.stanza)?;
        let container = args.container_name.clone().unwrap_or_else(|| {
            format!("pg-restore-drill-{}", args.stanza.replace(['_', '.'], "-"))
        });
        if !container
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
            || container.len() > 63
        {
            anyhow::bail!("container_name '{container}' is not a valid instance name");
        }
        if !args
            .metrics_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || args
                .metrics_prefix
                .starts_with(|c: char| c.is_ascii_digit())
        {
            anyhow::bail!(
                "metrics_prefix '{}' is not a valid metric name",
                args.metrics_prefix
            );
        }
        if let Some(bad) = args.checks.iter().find(|c| !CHECKS.contains(&c.as_str())) {
            anyhow::bail!("checks: '{bad}' is not one of {}", CHECKS.join(", "));
        }
        for (name, v) in [
            ("max_restore_seconds", args.max_restore_seconds),
            ("start_timeout", args.start_timeout),
            ("recovery_timeout", args.recovery_timeout),
        ] {
            if v <= 0 {
                anyhow::bail!("{name} must be positive, got {v}");
            }
        }
        let smoke = match &args.smoke_queries {
            Some(list) => list
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    serde_json::from_value::<SmokeQuery>(q.clone()).with_context(|| {
                        format!("smoke_queries[{i}]: expected {{sql, min, database}}")
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![SmokeQuery {
                sql: "SELECT count(*) FROM users".into(),
                min: args.min_users_expected,
                database: None,
            }],
        };
        Ok(Plan {
            args,
            container,
            smoke,
        })
    }
}

/// Why a drill stopped.
#[derive(Debug)]
enum Stop {
    /// The environment is not fit for a drill (exit 2).
    Env(&'static str, anyhow::Error),
    /// The drill ran and failed (exit 1).
    Drill(&'static str, anyhow::Error),
}

/// Which signal interrupted the drill (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);
/// The sandbox to remove when a signal arrives.
static LIVE: Mutex<Option<(Sandbox, String)>> = Mutex::new(None);

fn interrupted() -> Result<(), Stop> {
    match INTERRUPTED.load(Ordering::SeqCst) {
        0 => Ok(()),
        sig => Err(Stop::Drill(
            "interrupted",
            anyhow!("the drill was interrupted by signal {sig}"),
        )),
    }
}

/// Block SIGTERM/SIGINT/SIGHUP in this thread (children get a clean mask from std) and handle
/// them in a thread of their own: stop the running command and remove the sandbox; the main
/// thread then sees the failure, writes the metrics and returns.
fn watch_signals() {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        INTERRUPTED.store(sig as i32, Ordering::SeqCst);
        progress(&format!("received {sig}: stopping and tearing down"));
        kill_children();
        let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some((sandbox, pg_ctl)) = live {
            let _ = sandbox::destroy(&sandbox, &pg_ctl);
        }
    });
}

/// SIGTERM to this process's children (the command running now).
fn kill_children() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in list
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Run `f` (which runs commands) under a watchdog: if `deadline` passes before `f` returns, the
/// command running then gets SIGTERM, so a step that would overrun the RTO budget is stopped
/// there instead of running on. Returns `f`'s result and whether the watchdog fired.
fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> (T, bool) {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    let done = Arc::new(AtomicBool::new(false));
    let dog = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || loop {
            if done.load(Ordering::SeqCst) {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                kill_children();
                return true;
            }
            // Woken early by `unpark` when `f` returns (or spuriously: the loop checks again).
            std::thread::park_timeout(left);
        })
    };
    let result = f();
    done.store(true, Ordering::SeqCst);
    dog.thread().unpark();
    (result, dog.join().unwrap_or(false))
}

/// The failure of a drill whose restore-to-ready time ran out of `max_restore_seconds`.
fn rto_exceeded(plan: &Plan, during: &str) -> Stop {
    Stop::Drill(
        "rto_exceeded",
        anyhow!(
            "{during} stopped: restore to ready did not finish within max_restore_seconds {}",
            plan.args.max_restore_seconds
        ),
    )
}

fn progress(line: &str) {
    // Progress for the operator (and the journal under systemd); stdout belongs to the result.
    // Scrubbed like the result: a pgBackRest error may quote a key of the configuration.
    eprintln!("dr_drill: {}", ansible_module::scrub_str(line));
}

/// What a drill collects on its way.
#[derive(Debug, Default)]
struct Run {
    commands: Vec<String>,
    stages: Map<String, Value>,
    checks: Vec<(String, bool, String)>,
    backup_label: Option<String>,
    backup_stop: Option<i64>,
    restore_seconds: Option<f64>,
    recovery_target_age: Option<f64>,
    sandbox: Option<Sandbox>,
    pg_bin: String,
    verbose: bool,
    conf: pgbackrest::conf::Conf,
}

impl Run {
    fn stage<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Run) -> Result<T, Stop>,
    ) -> Result<T, Stop> {
        interrupted()?;
        if self.verbose {
            progress(&format!("{name} ..."));
        }
        let start = Instant::now();
        let result = f(self);
        let secs = start.elapsed().as_secs_f64();
        self.stages
            .insert(name.to_owned(), json!((secs * 1000.0).round() / 1000.0));
        if self.verbose {
            progress(&format!(
                "{name} {} in {secs:.1} s",
                if result.is_ok() { "done" } else { "failed" }
            ));
        }
        interrupted()?;
        result
    }

    /// Run a command, recording it.
    fn cmd(&mut self, cmd: &Cmd) -> Result<ansible_module::process::Output, CmdError> {
        self.commands.push(cmd.display());
        cmd.run()
    }

    /// A PostgreSQL client program of the restored major (psql, pg_amcheck, pg_dump), connected
    /// to the drill instance's private socket as postgres; `rest` follows the connection options.
    fn client(&self, program: &str, rest: &[&str]) -> Cmd {
        let sb = self.sandbox.as_ref().expect("a sandbox");
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

    fn sql(&mut self, database: &str, sql: &str) -> Result<String, CmdError> {
        let cmd = self.client(
            "psql",
            &["-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
        );
        Ok(self.cmd(&cmd)?.stdout.trim().to_owned())
    }
}

fn env_err<E: std::fmt::Display>(reason: &'static str) -> impl FnOnce(E) -> Stop {
    move |e| Stop::Env(reason, anyhow!("{e}"))
}
fn drill_err<E: std::fmt::Display>(reason: &'static str) -> impl FnOnce(E) -> Stop {
    move |e| Stop::Drill(reason, anyhow!("{e}"))
}

fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The lock that keeps a second drill of the stanza out; released when dropped.
struct Lock {
    _flock: nix::fcntl::Flock<std::fs::File>,
}

fn take_lock(dir: &Path, stanza: &str) -> Result<Lock, Stop> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Stop::Env("lock", anyhow!("creating lock_dir {}: {e}", dir.display())))?;
    let path = dir.join(format!("veza-dr-drill-{stanza}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Stop::Env("lock", anyhow!("opening {}: {e}", path.display())))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(|f| Lock { _flock: f })
        .map_err(|(_, e)| {
            Stop::Env(
                "locked",
                anyhow!(
                    "another drill of stanza '{stanza}' is running (lock {} is held: {e})",
                    path.display()
                ),
            )
        })
}

/// Pre-flight: tools, backup metadata, image. Returns the backups and the PostgreSQL major.
fn preflight(plan: &Plan, run: &mut Run) -> Result<pgbackrest::info::Info, Stop> {
    let a = &plan.args;
    let pgbackrest = find_program("pgbackrest").ok_or_else(|| {
        Stop::Env(
            "missing_tool",
            anyhow!("pgbackrest is not installed on this host"),
        )
    })?;
    if a.sandbox == "incus" && find_program("incus").is_none() {
        return Err(Stop::Env(
            "missing_tool",
            anyhow!("incus is not installed on this host"),
        ));
    }
    if !a.config.is_file() {
        return Err(Stop::Env(
            "no_config",
            anyhow!("config: {} does not exist", a.config.display()),
        ));
    }
    // pgBackRest quotes parts of its configuration in errors (an S3 key): every secret of the
    // configuration is scrubbed from all output from here on.
    run.conf = pgbackrest::conf::read(&a.config, &a.stanza).map_err(env_err("no_config"))?;
    for secret in run
        .conf
        .secrets
        .iter()
        .chain(&pgbackrest::conf::env_secrets())
    {
        ansible_module::register_secret(secret);
    }
    let info_cmd = Cmd::new(&pgbackrest)
        .arg(format!("--config={}", a.config.display()))
        .arg(format!("--stanza={}", a.stanza))
        .args([
            "--log-level-console=warn",
            "--log-level-file=off",
            "--output=json",
            "info",
        ]);
    let out = run.cmd(&info_cmd).map_err(env_err("info_failed"))?;
    let info = pgbackrest::info::parse(&out.stdout, &a.stanza).map_err(env_err("info_failed"))?;
    if info.status.code != 0 || info.backups.is_empty() {
        return Err(Stop::Env(
            "no_backup",
            anyhow!(
                "stanza '{}' has no usable backup (pgbackrest info: status {} {})",
                a.stanza,
                info.status.code,
                info.status.message
            ),
        ));
    }
    if let Some(set) = &a.set {
        if !info.backups.iter().any(|b| &b.label == set) {
            return Err(Stop::Env(
                "no_backup",
                anyhow!("set: backup '{set}' is not in the repository"),
            ));
        }
    }
    let major = info.pg_version.clone().unwrap_or_else(|| "15".into());
    run.pg_bin = format!("/usr/lib/postgresql/{major}/bin");
    if a.sandbox == "host" && !Path::new(&run.pg_bin).join("pg_ctl").is_file() {
        return Err(Stop::Env(
            "missing_tool",
            anyhow!(
                "PostgreSQL {major} is not installed on this host ({}/pg_ctl)",
                run.pg_bin
            ),
        ));
    }
    if a.sandbox == "incus" {
        let image = Cmd::new("incus").args(["image", "info", &a.image]);
        run.cmd(&image).map_err(|e| {
            Stop::Env(
                "image_missing",
                anyhow!("image: '{}' is not available to incus ({e}); build it with scripts/drill-image", a.image),
            )
        })?;
        let exists = Cmd::new("incus").args(["info", &plan.container]);
        if exists.output().map(|o| o.success()).unwrap_or(false) {
            return Err(Stop::Env(
                "container_exists",
                anyhow!(
                    "container '{}' already exists (a kept drill?); delete it first",
                    plan.container
                ),
            ));
        }
    }
    std::fs::create_dir_all(&a.metrics_dir).map_err(|e| {
        Stop::Env(
            "metrics_dir",
            anyhow!("metrics_dir: creating {}: {e}", a.metrics_dir.display()),
        )
    })?;
    Ok(info)
}

fn postgres_user() -> Result<RunAs, Stop> {
    RunAs::user("postgres").map_err(env_err("no_postgres_user"))
}

/// Make the sandbox and put the configuration in it.
fn make_sandbox(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    let a = &plan.args;
    let user = postgres_user()?;
    let conf_text = std::fs::read_to_string(&a.config)
        .map_err(|e| Stop::Env("no_config", anyhow!("reading {}: {e}", a.config.display())))?;
    let sb = if a.sandbox == "incus" {
        let sb = Sandbox::Incus {
            name: plan.container.clone(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        };
        // Registered before it exists: a signal during the launch still removes it.
        *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = Some((sb.clone(), String::new()));
        let mut init = Cmd::new("incus").args(["init", &a.image, &plan.container]);
        if !a.keep {
            init = init.arg("--ephemeral");
        }
        for p in std::iter::once(&"default".to_owned()).chain(&a.profiles) {
            init = init.args(["--profile", p]);
        }
        run.cmd(&init).map_err(env_err("launch_failed"))?;
        if run.conf.repo_type() == "posix" {
            let repo_path = run.conf.repo_path().to_owned();
            let dev = Cmd::new("incus")
                .args(["config", "device", "add", &plan.container, "repo", "disk"])
                .arg(format!("source={repo_path}"))
                .arg(format!("path={repo_path}"))
                .args(["readonly=true", "shift=true"]);
            run.cmd(&dev).map_err(env_err("launch_failed"))?;
        }
        run.cmd(&Cmd::new("incus").args(["start", &plan.container]))
            .map_err(env_err("launch_failed"))?;
        run.sandbox = Some(sb.clone());
        let base = sb.base();
        run.cmd(&sb.postgres(&["mkdir", "-p", "-m", "0700", &base.to_string_lossy()]))
            .map_err(env_err("launch_failed"))?;
        // The configuration, secrets included, goes by `incus file push` at 0600: never on argv.
        sb.write_file(&base.join("pgbackrest.conf"), &conf_text)
            .map_err(|e| Stop::Env("launch_failed", e))?;
        sb
    } else {
        let dir = PathBuf::from(format!("/tmp/dr-drill-{}-{}", a.stanza, std::process::id()));
        let sb = Sandbox::Host {
            dir: dir.clone(),
            user: user.clone(),
        };
        *LIVE.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((sb.clone(), format!("{}/pg_ctl", run.pg_bin)));
        std::fs::create_dir(&dir)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            })
            .and_then(|()| {
                std::os::unix::fs::chown(&dir, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            })
            .map_err(|e| Stop::Env("sandbox_failed", anyhow!("creating {}: {e}", dir.display())))?;
        run.sandbox = Some(sb.clone());
        sb
    };
    sb.write_file(&sb.base().join("drill_hba.conf"), "local all all trust\n")
        .map_err(|e| Stop::Env("sandbox_failed", e))?;
    Ok(())
}

fn config_arg(plan: &Plan, sb: &Sandbox) -> String {
    match sb {
        Sandbox::Incus { .. } => {
            format!("--config={}", sb.base().join("pgbackrest.conf").display())
        }
        Sandbox::Host { .. } => format!("--config={}", plan.args.config.display()),
    }
}

fn verify(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    let sb = run.sandbox.clone().expect("a sandbox");
    let mut argv = vec![
        "pgbackrest".to_owned(),
        config_arg(plan, &sb),
        format!("--stanza={}", plan.args.stanza),
        "--log-level-console=info".into(),
        "--log-level-file=off".into(),
    ];
    if let Some(set) = &plan.args.set {
        argv.push(format!("--set={set}"));
    }
    argv.push("verify".into());
    let cmd = sb.postgres(&argv);
    let out = match run.cmd(&cmd) {
        Ok(out) => out,
        Err(e) => {
            run.checks.push(("verify".into(), false, e.to_string()));
            return Err(Stop::Drill("verify_failed", anyhow!("{e}")));
        }
    };
    let errors = pgbackrest::output::verify_errors(&format!("{}\n{}", out.stdout, out.stderr));
    if errors.is_empty() {
        run.checks.push(("verify".into(), true, "no errors".into()));
        Ok(())
    } else {
        let detail = errors.join("; ");
        run.checks.push(("verify".into(), false, detail.clone()));
        Err(Stop::Drill(
            "verify_failed",
            anyhow!("pgbackrest verify found errors: {detail}"),
        ))
    }
}

fn restore(plan: &Plan, run: &mut Run, deadline: Instant) -> Result<(), Stop> {
    let a = &plan.args;
    let sb = run.sandbox.clone().expect("a sandbox");
    let mut argv = vec![
        "pgbackrest".to_owned(),
        config_arg(plan, &sb),
        format!("--stanza={}", a.stanza),
        format!("--pg1-path={}", sb.pgdata().display()),
        // Never let the drill instance push WAL into the production repository.
        "--archive-mode=off".into(),
        "--log-level-console=info".into(),
        "--log-level-file=off".into(),
    ];
    if let Some(target) = &a.target {
        argv.push(format!("--type={}", a.target_type));
        argv.push(format!("--target={target}"));
        argv.push(format!("--target-action={}", a.target_action));
    }
    if let Some(set) = &a.set {
        argv.push(format!("--set={set}"));
    }
    argv.push("restore".into());
    let (out, late) = with_deadline(deadline, || run.cmd(&sb.postgres(&argv)));
    if late {
        return Err(rto_exceeded(plan, "the restore"));
    }
    let out = out.map_err(drill_err("restore_failed"))?;
    run.backup_label =
        pgbackrest::output::restored_set(&out.stdout).or_else(|| run.backup_label.clone());
    Ok(())
}

fn start(plan: &Plan, run: &mut Run, deadline: Instant) -> Result<(), Stop> {
    let sb = run.sandbox.clone().expect("a sandbox");
    let pgdata = sb.pgdata();
    let base = sb.base();
    // A Debian-style cluster keeps its configuration outside the data directory.
    let conf = pgdata.join("postgresql.conf");
    let has_conf = run
        .cmd(&sb.postgres(&["test", "-f", &conf.to_string_lossy()]))
        .is_ok();
    if !has_conf {
        sb.write_file(
            &conf,
            "# written by dr_drill: the backup holds no postgresql.conf\n",
        )
        .map_err(|e| Stop::Drill("start_failed", e))?;
    }
    // The restored configuration keeps the production socket directory and port: override them,
    // listen on no TCP address, archive nothing, and trust only the private socket. A formation's
    // synchronous_standby_names would make every write (CREATE EXTENSION of amcheck) wait forever
    // for a standby the drill does not have.
    let opts = format!(
        "-c unix_socket_directories={} -c listen_addresses='' -c port={DRILL_PORT} -c archive_mode=off \
         -c synchronous_standby_names='' -c hba_file={}/drill_hba.conf",
        sb.socket_dir().display(),
        base.display()
    );
    let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
    let log = base.join("postgresql.log");
    let cmd = sb.postgres(&[
        pg_ctl.as_str(),
        "-D",
        &pgdata.to_string_lossy(),
        "-l",
        &log.to_string_lossy(),
        "-w",
        "-t",
        &plan.args.start_timeout.to_string(),
        "-o",
        &opts,
        "start",
    ]);
    let (started, late) = with_deadline(deadline, || run.cmd(&cmd));
    if late {
        return Err(rto_exceeded(plan, "the start"));
    }
    if let Err(e) = started {
        let tail = sb
            .postgres(&["tail", "-n", "5", &log.to_string_lossy()])
            .output()
            .map(|o| o.stdout.trim().to_owned())
            .unwrap_or_default();
        return Err(Stop::Drill(
            "start_failed",
            anyhow!("PostgreSQL did not start: {e}; log: {tail}"),
        ));
    }
    Ok(())
}

fn wait_recovery(plan: &Plan, run: &mut Run, rto_deadline: Instant) -> Result<(), Stop> {
    let deadline = Instant::now() + Duration::from_secs(plan.args.recovery_timeout as u64);
    let db = plan.args.database.clone();
    loop {
        interrupted()?;
        match run.sql(&db, "SELECT pg_is_in_recovery()") {
            Ok(v) if v == "f" => break,
            _ if Instant::now() >= rto_deadline => {
                return Err(rto_exceeded(plan, "the wait for the end of recovery"))
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
                // Polls are not worth a line each in `commands`.
                run.commands.pop();
            }
            Ok(_) => {
                return Err(Stop::Drill(
                    "recovery_timeout",
                    anyhow!("still in recovery after {} s", plan.args.recovery_timeout),
                ))
            }
            Err(e) => return Err(Stop::Drill("recovery_failed", anyhow!("{e}"))),
        }
    }
    let ts = run
        .sql(
            &db,
            "SELECT coalesce(extract(epoch FROM pg_last_xact_replay_timestamp()), 0)",
        )
        .map_err(drill_err("recovery_failed"))?;
    let last = ts.parse::<f64>().unwrap_or(0.0);
    let last = if last > 0.0 {
        Some(last)
    } else {
        run.backup_stop.map(|s| s as f64)
    };
    run.recovery_target_age = last.map(|t| (now_epoch() - t).max(0.0));
    Ok(())
}

fn checks(plan: &Plan, run: &mut Run) -> Result<(), Stop> {
    let mut first_failure: Option<Stop> = None;
    let mut fail = |run: &mut Run, name: &str, reason: &'static str, detail: String| {
        run.checks.push((name.to_owned(), false, detail.clone()));
        if first_failure.is_none() {
            first_failure = Some(Stop::Drill(reason, anyhow!("{name}: {detail}")));
        }
    };
    for (i, q) in plan.smoke.iter().enumerate() {
        let name = if plan.smoke.len() == 1 {
            "smoke".to_owned()
        } else {
            format!("smoke_{i}")
        };
        let db = q
            .database
            .clone()
            .unwrap_or_else(|| plan.args.database.clone());
        match run.sql(&db, &q.sql) {
            Ok(v) => match v.lines().next().unwrap_or_default().parse::<i64>() {
                Ok(n) if n >= q.min => run.checks.push((name, true, format!("{n} >= {}", q.min))),
                Ok(n) => fail(
                    run,
                    &name,
                    "smoke_failed",
                    format!("`{}` gave {n}, below the minimum {}", q.sql, q.min),
                ),
                Err(_) => fail(
                    run,
                    &name,
                    "smoke_failed",
                    format!("`{}` gave '{v}', not an integer", q.sql),
                ),
            },
            Err(e) => fail(run, &name, "smoke_failed", e.to_string()),
        }
    }
    let sb = run.sandbox.clone().expect("a sandbox");
    let want = |c: &str| plan.args.checks.iter().any(|x| x == c);
    if want("amcheck") {
        let cmd = run.client(
            "pg_amcheck",
            &["--all", "--heapallindexed", "--install-missing"],
        );
        match run.cmd(&cmd) {
            Ok(_) => run
                .checks
                .push(("amcheck".into(), true, "no corruption found".into())),
            Err(e) => fail(run, "amcheck", "amcheck_failed", e.to_string()),
        }
    }
    if want("dump") {
        match run.sql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
        ) {
            Ok(list) => {
                let mut bad = Vec::new();
                for db in list.lines().filter(|l| !l.is_empty() && *l != "template1") {
                    let cmd = run.client("pg_dump", &["-d", db, "-f", "/dev/null"]);
                    if let Err(e) = run.cmd(&cmd) {
                        bad.push(format!("{db}: {e}"));
                    }
                }
                if bad.is_empty() {
                    run.checks
                        .push(("dump".into(), true, "every database dumped".into()));
                } else {
                    fail(run, "dump", "dump_failed", bad.join("; "));
                }
            }
            Err(e) => fail(run, "dump", "dump_failed", e.to_string()),
        }
    }
    if want("checksums") {
        let on = run
            .sql("postgres", "SHOW data_checksums")
            .map(|v| v == "on");
        let pg_ctl = format!("{}/pg_ctl", run.pg_bin);
        let pgdata = sb.pgdata().to_string_lossy().into_owned();
        let stop = sb.postgres(&[pg_ctl.as_str(), "-D", &pgdata, "-m", "fast", "-w", "stop"]);
        match on {
            Ok(false) => run.checks.push((
                "checksums".into(),
                true,
                "data checksums are off: skipped".into(),
            )),
            Err(e) => fail(run, "checksums", "checksums_failed", e.to_string()),
            Ok(true) => {
                let bin = format!("{}/pg_checksums", run.pg_bin);
                let result = run
                    .cmd(&stop)
                    .and_then(|_| run.cmd(&sb.postgres(&[bin.as_str(), "--check", "-D", &pgdata])));
                match result {
                    Ok(_) => {
                        run.checks
                            .push(("checksums".into(), true, "no checksum failure".into()))
                    }
                    Err(e) => fail(run, "checksums", "checksums_failed", e.to_string()),
                }
            }
        }
    }
    match first_failure {
        Some(stop) => Err(stop),
        None => Ok(()),
    }
}

fn run(plan: Plan, ctx: &mut Context) -> anyhow::Result<Response> {
    let a = &plan.args;
    let started = now_epoch();
    let clock = Instant::now();
    let mut run = Run {
        verbose: ctx.from_stdin || ctx.verbosity > 0,
        ..Run::default()
    };
    // Pre-flight, with the lock held from here on so a second drill fails fast.
    let lock = match take_lock(&a.lock_dir, &a.stanza) {
        Ok(lock) => lock,
        Err(Stop::Env(reason, e)) | Err(Stop::Drill(reason, e)) => {
            return Ok(Response::failed(format!("{e:#}"))
                .field("reason", reason)
                .field("passed", false)
                .exit_code(2));
        }
    };
    if !ctx.check_mode {
        watch_signals();
    }
    let info = run.stage("preflight", |r| preflight(&plan, r));
    if ctx.check_mode {
        drop(lock);
        return Ok(match info {
            Ok(info) => Response::new()
                .msg(format!(
                    "would restore {} of stanza '{}' into {} and run the checks",
                    a.set.clone().unwrap_or_else(|| format!(
                        "backup {}",
                        info.backups.last().map(|b| b.label.as_str()).unwrap_or("?")
                    )),
                    a.stanza,
                    if a.sandbox == "incus" {
                        format!("incus container {}", plan.container)
                    } else {
                        "a host directory".into()
                    }
                ))
                .field("commands", &run.commands),
            Err(Stop::Env(reason, e)) | Err(Stop::Drill(reason, e)) => {
                Response::failed(format!("{e:#}"))
                    .field("reason", reason)
                    .field("commands", &run.commands)
                    .exit_code(2)
            }
        });
    }

    let mut restore_clock = None;
    let result = info.and_then(|info| {
        let latest = info.backups.last().cloned();
        let chosen = a
            .set
            .as_ref()
            .and_then(|s| info.backups.iter().find(|b| &b.label == s).cloned())
            .or(latest);
        run.backup_label = chosen.as_ref().map(|b| b.label.clone());
        run.backup_stop = chosen.as_ref().map(|b| b.stop);
        run.stage("sandbox", |r| make_sandbox(&plan, r))?;
        if a.checks.iter().any(|c| c == "verify") {
            run.stage("verify", |r| verify(&plan, r))?;
        }
        // The RTO budget covers restore to ready; each of those steps stops when it runs out.
        let clock = Instant::now();
        restore_clock = Some(clock);
        let deadline = clock + Duration::from_secs(a.max_restore_seconds as u64);
        run.stage("restore", |r| restore(&plan, r, deadline))?;
        run.stage("start", |r| start(&plan, r, deadline))?;
        run.stage("recovery", |r| wait_recovery(&plan, r, deadline))?;
        run.restore_seconds = restore_clock.map(|c| c.elapsed().as_secs_f64());
        run.stage("checks", |r| checks(&plan, r))?;
        if let Some(secs) = run.restore_seconds {
            if secs > a.max_restore_seconds as f64 {
                return Err(Stop::Drill(
                    "rto_exceeded",
                    anyhow!(
                        "restore to ready took {secs:.0} s, more than max_restore_seconds {}",
                        a.max_restore_seconds
                    ),
                ));
            }
        }
        Ok(())
    });
    // A drill stopped by its RTO budget still reports how long it had been restoring.
    if let (Err(Stop::Drill("rto_exceeded", _)), None, Some(c)) =
        (&result, run.restore_seconds, restore_clock)
    {
        run.restore_seconds = Some(c.elapsed().as_secs_f64());
    }
    // An interruption makes every later error a consequence of it: report the signal.
    let result = match (result, interrupted()) {
        (Err(_), Err(stop)) => Err(stop),
        (r, _) => r,
    };

    // Teardown, whatever happened.
    let mut teardown_error = None;
    let kept = a.keep && run.sandbox.is_some();
    if let Some(sb) = run.sandbox.clone() {
        if !kept {
            let t = Instant::now();
            if let Err(e) = sandbox::destroy(&sb, &format!("{}/pg_ctl", run.pg_bin)) {
                teardown_error = Some(e);
            }
            run.stages.insert(
                "teardown".into(),
                json!((t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
            );
        }
    } else if let Some((sb, pg_ctl)) = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        // Interrupted or failed while it was being made.
        let _ = sandbox::destroy(&sb, &pg_ctl);
    }
    *LIVE.lock().unwrap_or_else(|e| e.into_inner()) = None;

    let (passed, reason, msg, code) = match &result {
        Ok(()) => (true, None, None, 0),
        Err(Stop::Env(reason, e)) => (false, Some(*reason), Some(format!("{e:#}")), 2),
        Err(Stop::Drill(reason, e)) => (false, Some(*reason), Some(format!("{e:#}")), 1),
    };
    let (passed, reason, msg, code) = match (&teardown_error, passed) {
        (Some(e), true) => (
            false,
            Some("teardown_failed"),
            Some(format!("teardown: {e}")),
            1,
        ),
        _ => (passed, reason, msg, code),
    };

    // Metrics, atomically; the last success time survives failures.
    let report = metrics::Report {
        stanza: a.stanza.clone(),
        success: passed,
        reason: reason.map(str::to_owned),
        run_timestamp: started.floor(),
        duration: clock.elapsed().as_secs_f64(),
        restore_seconds: run.restore_seconds,
        recovery_target_age: run.recovery_target_age,
        backup_label: run.backup_label.clone(),
        checks: run
            .checks
            .iter()
            .map(|(n, ok, _)| (n.clone(), *ok))
            .collect(),
    };
    let metrics_file = metrics::path(&a.metrics_dir, &a.metrics_prefix, &a.stanza);
    let previous = std::fs::read_to_string(&metrics_file)
        .ok()
        .and_then(|t| metrics::previous_success(&t, &a.metrics_prefix));
    let last_success = if passed {
        Some(started.floor())
    } else {
        previous
    };
    let text = metrics::render(&a.metrics_prefix, &report, last_success);
    let metrics_error = std::fs::create_dir_all(&a.metrics_dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            ansible_module::fs::write_atomic(
                &metrics_file,
                text.as_bytes(),
                &ansible_module::fs::Attrs {
                    mode: Some(0o644),
                    ..Default::default()
                },
            )
        })
        .err();
    if let Some(e) = &metrics_error {
        ctx.warn(format!("could not write the metrics file: {e}"));
    }
    if run.verbose {
        progress(&format!(
            "{} in {:.1} s{}",
            if passed { "passed" } else { "FAILED" },
            report.duration,
            msg.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
        ));
    }

    let checks: Map<String, Value> = run
        .checks
        .iter()
        .map(|(n, ok, d)| (n.clone(), json!({"success": ok, "detail": d})))
        .collect();
    let mut response = Response::new()
        .changed(true)
        .field("passed", passed)
        .field("reason", reason)
        .field("stanza", &a.stanza)
        .field("sandbox", &a.sandbox)
        .field("backup_label", &run.backup_label)
        .field("checks", checks)
        .field("stages", &run.stages)
        .field("duration_seconds", report.duration)
        .field("restore_seconds", run.restore_seconds)
        .field("recovery_target_age_seconds", run.recovery_target_age)
        .field("metrics_file", metrics_file.display().to_string())
        .field("commands", &run.commands)
        .field("kept", kept);
    if kept {
        if let Some(sb) = &run.sandbox {
            response = response.field(
                "container",
                match sb {
                    Sandbox::Incus { name, .. } => name.clone(),
                    Sandbox::Host { dir, .. } => dir.display().to_string(),
                },
            );
        }
    }
    drop(lock);
    Ok(match msg {
        Some(m) => response
            .fail(format!(
                "restore drill failed ({}): {m}",
                reason.unwrap_or("?")
            ))
            .exit_code(code),
        None => response.msg(format!(
            "restore drill of stanza '{}' passed in {:.1} s",
            a.stanza, report.duration
        )),
    })
}
