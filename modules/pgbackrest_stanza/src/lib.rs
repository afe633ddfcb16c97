//! `pgbackrest_stanza`: create, upgrade or delete a pgBackRest stanza, from the writable primary
//! only, idempotently.
//!
//! The decision comes from `pgbackrest info --output=json` (never from `check`, which forces a WAL
//! switch, and never from log lines): status 1 creates, 0 and 2 leave the stanza alone, anything
//! else fails with pgBackRest's own message. On a node that is not the writable primary (asked the
//! way `pg_role_detect` asks, through its library) the module does nothing and says why, so one
//! task runs on every node of a formation. Two runs on one host take an exclusive lock beside
//! pgBackRest's own lock files and probe again under it, so only one of them creates.

use ansible_module::process::{Cmd, CmdError, RunAs};
use ansible_module::{Context, Diff, Module, Response};
use anyhow::{bail, Context as _};
use pg_role::{DetectOptions, Role, Source};
use pgbackrest::command::Pgbackrest;
use pgbackrest::conf::{self, Conf};
use pgbackrest::info::{self, Status, Verdict};
use pgbackrest::lock::Lock;
use pgbackrest::StanzaName;
use postgres_access::{LoginArgs, Postmaster};
use serde_json::json;
use std::path::{Path, PathBuf};

ansible_module::choices! {
    /// `state`
    pub enum State {
        /// The stanza exists.
        Present = "present",
        /// The stanza exists and matches the running PostgreSQL (`stanza-upgrade` when not).
        Upgraded = "upgraded",
        /// The stanza does not exist.
        Absent = "absent",
    }
}

ansible_module::options! {
    /// The module's options, as documented.
    pub struct Args {
        /// `stanza`
        stanza: String = str().required(),
        /// `config`
        config: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `state`
        state: State = str().choices(State::NAMES).default("present"),
        /// `only_on_primary`
        only_on_primary: bool = bool().default(true),
        /// `source`
        source: Source = str().choices(Source::NAMES).default("auto"),
        /// `role`: the caller says which role this node has (no detection).
        role: Option<Role> = str().choices(Role::NAMES),
        /// `pgdata`
        pgdata: Option<PathBuf> = path(),
        /// `pg_autoctl_path`
        pg_autoctl_path: String = str().default("pg_autoctl"),
        /// `pgbackrest_path`
        pgbackrest_path: String = str().default("pgbackrest"),
        /// `check_after`
        check_after: bool = bool().default(false),
        /// `force`
        force: bool = bool().default(false),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `io_timeout`
        io_timeout: Option<i64> = int(),
        /// `db_timeout`
        db_timeout: Option<i64> = int(),
    }
    flatten {
        /// `login_*`, `connect_timeout`
        login: LoginArgs,
    }
}

/// What the run will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    None,
    Create,
    Upgrade,
    Delete,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Create => "create",
            Action::Upgrade => "upgrade",
            Action::Delete => "delete",
        }
    }
}

/// The running cluster's identity, read with SQL (`None` when it does not answer).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClusterDb {
    system_id: String,
    version: String,
}

const DB_QUERY: &str = "SELECT system_identifier::text, current_setting('server_version_num') \
    FROM pg_control_system()";

/// The Ansible module.
pub struct PgbackrestStanza;

impl Module for PgbackrestStanza {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_stanza";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let stanza = StanzaName::parse(&args.stanza)?;
        for (name, value) in [
            ("io_timeout", args.io_timeout),
            ("db_timeout", args.db_timeout),
        ] {
            if value.is_some_and(|v| !(1..=86400).contains(&v)) {
                bail!(
                    "{name}: {} is out of range (1 to 86400 seconds)",
                    value.unwrap_or_default()
                );
            }
        }
        // A pgdata that is not there would silently leave the role and the database check to
        // other means: refused, as pg_role_detect refuses it.
        if let Some(p) = args.pgdata.as_deref().filter(|p| !p.is_dir()) {
            anyhow::bail!("pgdata: '{}' is not a directory", p.display());
        }
        // pgBackRest refuses to run as root with a repository owned by postgres, pg_autoctl refuses
        // root, peer authentication wants the database user: become that user for the whole run.
        RunAs::become_option(args.become_user.as_deref()).map_err(anyhow::Error::msg)?;
        let conf = conf::read(&args.config, stanza.as_str())?;
        for secret in conf.secrets.iter().chain(conf::env_secrets().iter()) {
            ctx.add_secret(secret);
        }
        let pgdata = args
            .pgdata
            .clone()
            .or_else(|| conf.pg1_path.as_ref().map(PathBuf::from));
        let mut run = Run {
            args: &args,
            stanza: &stanza,
            commands: Vec::new(),
            queries: Vec::new(),
        };
        let role = match who_may_act(&mut run, pgdata.as_deref(), ctx)? {
            Ok(role) => role,
            Err(skipped) => return Ok(skipped),
        };
        // Serialize runs on this host: the probe and the change happen under one lock.
        let _lock = if ctx.check_mode {
            None
        } else {
            Some(lock(&conf, &stanza)?)
        };
        let before = match run.info() {
            Ok(s) => s,
            Err(InfoError(code, msg)) => return Ok(run.failed_probe(code, msg)),
        };
        let verdict = info::verdict(&before);
        let cluster = match args.state {
            State::Absent => None,
            _ if verdict == Verdict::Missing => None,
            _ => run.cluster_db(pgdata.as_deref()),
        };
        let action = match plan(args.state, &verdict, cluster.as_ref(), &before, args.force) {
            Ok(a) => a,
            Err((code, msg)) => {
                return Ok(run
                    .response(&before, None, Action::None, role)
                    .field("rc", code)
                    .fail(msg)
                    .exit_code(code))
            }
        };
        Ok(apply(&mut run, &before, action, role, ctx.check_mode))
    }
}

/// Whether this node may manage the stanza: `Ok(role)` (`None`: not asked), or the skipped
/// result of a node that is not the writable primary.
fn who_may_act(
    run: &mut Run<'_>,
    pgdata: Option<&Path>,
    ctx: &mut Context,
) -> anyhow::Result<Result<Option<Role>, Response>> {
    let args = run.args;
    let role = if let Some(given) = args.role {
        Some(given)
    } else if args.only_on_primary {
        let det = pg_role::detect(
            &DetectOptions {
                source: args.source,
                pgdata,
                pg_autoctl_path: &args.pg_autoctl_path,
                login: &args.login,
            },
            ctx,
        )
        .context("detecting this node's role")?;
        run.commands.extend(det.commands.iter().cloned());
        run.queries.extend(det.queries.iter().cloned());
        if det.role == Role::Unknown {
            let why = det
                .unknown_reason
                .unwrap_or_else(|| "no witness answered".into());
            let reason = format!(
                "the role of this node is unknown ({why}); \
                 only the writable primary manages the stanza"
            );
            return Ok(Err(run.skipped(Role::Unknown, reason)));
        }
        Some(det.role)
    } else {
        None
    };
    if args.only_on_primary && role != Some(Role::Primary) {
        let role = role.unwrap_or(Role::Unknown);
        let reason = format!(
            "this node is not the writable primary (role {}); \
             only the primary manages stanza '{}'",
            role.name(),
            run.stanza.as_str()
        );
        return Ok(Err(run.skipped(role, reason)));
    }
    Ok(Ok(role))
}

/// Run the plan's commands (in check mode: only say them) and report.
fn apply(
    run: &mut Run<'_>,
    before: &Status,
    action: Action,
    role: Option<Role>,
    check_mode: bool,
) -> Response {
    let stanza = run.stanza.as_str().to_owned();
    let commands = run.commands_for(action, before);
    let changed = action != Action::None;
    if check_mode || !changed {
        if check_mode {
            run.commands.extend(commands.iter().map(Cmd::display));
        }
        return run
            .response(before, None, action, role)
            .changed(changed)
            .diff(diff(before, action, &stanza));
    }
    for cmd in &commands {
        run.commands.push(cmd.display());
        if let Err(e) = cmd.run() {
            let code = e.code().unwrap_or(1);
            let after = run.info().ok();
            return run
                .response(before, after.as_ref(), action, role)
                .changed(after.as_ref() != Some(before))
                .field("rc", code)
                .fail(failure(action, &stanza, &e))
                .exit_code(code);
        }
    }
    match run.info() {
        Ok(after) => run
            .response(before, Some(&after), action, role)
            .changed(true)
            .diff(diff(before, action, &stanza)),
        Err(InfoError(code, msg)) => run.failed_probe(code, msg).changed(true),
    }
}

fn failure(action: Action, stanza: &str, e: &CmdError) -> String {
    let what = match action {
        Action::Create => "creating",
        Action::Upgrade => "upgrading",
        Action::Delete => "deleting",
        Action::None => "checking",
    };
    format!("{what} stanza '{stanza}': {e}")
}

/// The plan from the state wanted, the status and the cluster's identity.
fn plan(
    state: State,
    verdict: &Verdict,
    cluster: Option<&ClusterDb>,
    status: &Status,
    force: bool,
) -> Result<Action, (i32, String)> {
    match (state, verdict) {
        (State::Absent, Verdict::Missing) => Ok(Action::None),
        (State::Absent, _) if !force => Err((
            1,
            "force: state=absent deletes every backup and archive of the stanza; \
             set force=true to do it"
                .to_owned(),
        )),
        (State::Absent, _) => Ok(Action::Delete),
        (_, Verdict::Broken { code, message }) => Err((
            *code,
            format!(
                "pgBackRest reports a problem with the stanza, which this module does not repair: \
                 {message}"
            ),
        )),
        (_, Verdict::Missing) => Ok(Action::Create),
        (_, Verdict::Exists { missing_on }) => {
            let mismatch = cluster.and_then(|c| {
                status
                    .repos
                    .iter()
                    .filter_map(|r| Some((r.key, r.db.as_ref()?)))
                    .find(|(_, d)| d.system_id != c.system_id || d.version != c.version)
                    .map(|(key, d)| {
                        format!(
                            "repo{key} records system-id {} version {}, \
                             the running cluster is system-id {} version {}",
                            d.system_id, d.version, c.system_id, c.version
                        )
                    })
            });
            match (state, mismatch) {
                (State::Present, Some(m)) => Err((
                    28,
                    format!(
                        "database mismatch: {m}; pgBackRest would refuse it ([028] backup and \
                         archive info files exist but do not match the database). After a major \
                         upgrade or a new cluster, use state=upgraded"
                    ),
                )),
                (State::Upgraded, Some(_)) => Ok(Action::Upgrade),
                // The match with the running cluster is never skipped quietly: a failed login
                // would otherwise report an unchecked stanza as fine.
                (state, None) if cluster.is_none() => Err((
                    56,
                    format!(
                        "state={}: the running cluster's system id and version could not be \
                         read (is PostgreSQL up and the login right?), so the stanza's match \
                         with it cannot be checked",
                        state.name()
                    ),
                )),
                _ if !missing_on.is_empty() => Ok(Action::Create),
                _ => Ok(Action::None),
            }
        }
    }
}

fn diff(before: &Status, action: Action, stanza: &str) -> Diff {
    let exists = !before.missing();
    let after = match action {
        Action::None => exists,
        Action::Delete => false,
        _ => true,
    };
    let side =
        |present: bool| json!({"stanza": stanza, "state": if present {"present"} else {"absent"}});
    Diff {
        before: side(exists),
        after: if action == Action::Upgrade {
            json!({"stanza": stanza, "state": "upgraded"})
        } else {
            side(after)
        },
        before_header: Some(format!("stanza {stanza}")),
        after_header: Some(format!("stanza {stanza}")),
    }
}

/// An exclusive lock beside pgBackRest's own lock files, held for the rest of the run.
fn lock(conf: &Conf, stanza: &StanzaName) -> Result<Lock, pgbackrest::Error> {
    let dir = PathBuf::from(conf.lock_path().unwrap_or(conf::DEFAULT_LOCK_PATH));
    Lock::take(&dir, &format!("{stanza}-pgbackrest_stanza.lock"), true)
}

struct Run<'a> {
    args: &'a Args,
    stanza: &'a StanzaName,
    commands: Vec<String>,
    queries: Vec<String>,
}

impl Run<'_> {
    /// `pgbackrest --config=C --stanza=S [timeouts] COMMAND ...`; console logging off, errors on
    /// stderr.
    fn pgbackrest(&self, command: &str) -> Cmd {
        let a = self.args;
        Pgbackrest::new(&a.pgbackrest_path, &a.config, self.stanza.as_str(), "off")
            .timeouts(a.io_timeout, a.db_timeout)
            .cmd(command)
    }

    fn info(&mut self) -> Result<Status, InfoError> {
        let cmd = self.pgbackrest("info").arg("--output=json");
        self.commands.push(cmd.display());
        let out = cmd.run().map_err(|e| {
            InfoError(
                e.code().unwrap_or(1),
                format!("probing stanza '{}': {e}", self.stanza.as_str()),
            )
        })?;
        info::parse(&out.stdout, self.stanza.as_str())
            .map(|i| i.status)
            .map_err(|e| InfoError(1, e.to_string()))
    }

    fn failed_probe(&self, code: i32, msg: String) -> Response {
        Response::new()
            .field("stanza", self.stanza.as_str())
            .field("commands", &self.commands)
            .field("queries", &self.queries)
            .field("rc", code)
            .fail(msg)
            .exit_code(code)
    }

    fn cluster_db(&mut self, pgdata: Option<&Path>) -> Option<ClusterDb> {
        let postmaster = pgdata.and_then(Postmaster::read);
        let login = postgres_access::Login::new(&self.args.login, postmaster.as_ref()).ok()?;
        self.queries.push(DB_QUERY.to_owned());
        postgres_access::block_on(async {
            let client = login.connect().await.ok()?;
            let row = postgres_access::simple_row(&client, DB_QUERY).await.ok()?;
            let num: i64 = row.get(1).cloned().flatten()?.parse().ok()?;
            Some(ClusterDb {
                system_id: row.first().cloned().flatten()?,
                // pgBackRest records `15` for 150004 and `9.6` for 90624.
                version: if num >= 100000 {
                    (num / 10000).to_string()
                } else {
                    format!("{}.{}", num / 10000, num / 100 % 100)
                },
            })
        })
        .ok()
        .flatten()
    }

    fn commands_for(&self, action: Action, before: &Status) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        match action {
            Action::None => {}
            Action::Create => cmds.push(self.pgbackrest("stanza-create")),
            Action::Upgrade => cmds.push(self.pgbackrest("stanza-upgrade")),
            Action::Delete => {
                // pgBackRest's required sequence: stop, then stanza-delete (--force: PostgreSQL may
                // be running) once per repository that holds the stanza, then start again so that
                // a stanza created later is not left stopped.
                cmds.push(self.pgbackrest("stop"));
                let repos: Vec<i64> = before
                    .repos
                    .iter()
                    .filter(|r| r.code != info::MISSING)
                    .map(|r| r.key)
                    .collect();
                let repos = if repos.is_empty() { vec![1] } else { repos };
                for key in repos {
                    cmds.push(
                        self.pgbackrest("stanza-delete")
                            .arg(format!("--repo={key}"))
                            .arg("--force"),
                    );
                }
                cmds.push(self.pgbackrest("start"));
            }
        }
        if self.args.check_after && matches!(action, Action::Create | Action::Upgrade) {
            cmds.push(self.pgbackrest("check"));
        }
        cmds
    }

    fn skipped(&self, role: Role, reason: String) -> Response {
        Response::new()
            .msg(reason.clone())
            .field("stanza", self.stanza.as_str())
            .field("role", role.name())
            .field("action", "none")
            .field("skipped_reason", reason)
            .field("status", None::<Status>)
            .field("commands", &self.commands)
            .field("queries", &self.queries)
    }

    fn response(
        &self,
        before: &Status,
        after: Option<&Status>,
        action: Action,
        role: Option<Role>,
    ) -> Response {
        let shown = after.unwrap_or(before);
        Response::new()
            .msg(match action {
                Action::None => format!("stanza '{}' is as wanted", self.stanza.as_str()),
                a => format!("stanza '{}': {}", self.stanza.as_str(), a.name()),
            })
            .field("stanza", self.stanza.as_str())
            .field("role", role.map(Role::name))
            .field("action", action.name())
            .field("skipped_reason", None::<String>)
            .field("status", shown)
            .field("status_before", before)
            .field("commands", &self.commands)
            .field("queries", &self.queries)
    }
}

/// `info` itself failed (it exits 0 for every stanza status): its exit code and message.
#[derive(Debug)]
struct InfoError(i32, String);

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: i64, sys: &str) -> Status {
        Status {
            code,
            message: String::new(),
            repos: vec![info::RepoStatus {
                key: 1,
                code,
                message: String::new(),
                cipher: None,
                db: Some(info::Db {
                    system_id: sys.into(),
                    version: "15".into(),
                }),
            }],
        }
    }

    #[test]
    fn plans_follow_the_status_codes() {
        let db = ClusterDb {
            system_id: "1".into(),
            version: "15".into(),
        };
        let ok = status(2, "1");
        let v = info::verdict(&ok);
        assert_eq!(
            plan(State::Present, &v, Some(&db), &ok, false),
            Ok(Action::None)
        );
        assert_eq!(
            plan(State::Upgraded, &v, Some(&db), &ok, false),
            Ok(Action::None)
        );
        // No answer from the cluster: the match is not checked, so it fails instead of passing.
        for state in [State::Present, State::Upgraded] {
            assert_eq!(plan(state, &v, None, &ok, false).unwrap_err().0, 56);
        }
        assert_eq!(plan(State::Absent, &v, None, &ok, false).unwrap_err().0, 1);
        assert_eq!(plan(State::Absent, &v, None, &ok, true), Ok(Action::Delete));
        let other = status(0, "2");
        let v = info::verdict(&other);
        assert_eq!(
            plan(State::Present, &v, Some(&db), &other, false)
                .unwrap_err()
                .0,
            28
        );
        assert_eq!(
            plan(State::Upgraded, &v, Some(&db), &other, false),
            Ok(Action::Upgrade)
        );
        let missing = status(1, "");
        let v = info::verdict(&missing);
        assert_eq!(
            plan(State::Present, &v, None, &missing, false),
            Ok(Action::Create)
        );
        assert_eq!(
            plan(State::Absent, &v, None, &missing, false),
            Ok(Action::None)
        );
        let broken = status(3, "1");
        let v = info::verdict(&broken);
        assert_eq!(
            plan(State::Present, &v, Some(&db), &broken, false)
                .unwrap_err()
                .0,
            3
        );
    }
}
