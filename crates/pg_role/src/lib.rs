//! Role detection: is this node the writable primary right now?
//!
//! Two witnesses, asked from the node itself: pg_auto_failover's monitor (`pg_autoctl show state
//! --json`, this node's row) and PostgreSQL (`pg_is_in_recovery()`). `Source::Auto` asks both when
//! a keeper exists and reports any disagreement instead of hiding it; a node is called primary
//! only when every witness asked says so. `pg_role_detect` reports the answer and
//! `pgbackrest_stanza` acts on it, so both decide the same way.

pub mod autoctl;

use ansible_module::Context;
use autoctl::{Keeper, NodeState, StateSource};
use postgres_access::{Login, LoginArgs, Postmaster};
use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// What can go wrong in this crate's helpers ([`detect`] itself answers with anyhow: it also
/// passes on pg_autoctl's and PostgreSQL's errors, with what it was doing).
#[derive(Debug)]
pub enum Error {
    /// `pg_autoctl show state` printed something that is not the state it documents.
    State {
        /// The command, for example `pg_autoctl show state --json`.
        command: &'static str,
        /// What is wrong with its output.
        detail: String,
    },
    /// This node is not in the monitor's formation, or is in it more than once.
    Node(String),
    /// Several pg_auto_failover keepers, and nothing to choose one.
    Keeper(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::State { command, detail } => write!(f, "parsing `{command}`: {detail}"),
            Error::Node(m) | Error::Keeper(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

ansible_module::choices! {
    /// Which witnesses to ask (the `source` option).
    pub enum Source {
        /// pg_autoctl when a keeper exists, cross-checked with SQL; SQL alone otherwise.
        Auto = "auto",
        /// The monitor only.
        PgAutoctl = "pg_autoctl",
        /// `pg_is_in_recovery()` only.
        Sql = "sql",
    }
}

ansible_module::choices! {
    /// The answer (and the `role` option of modules that are told it).
    pub enum Role {
        /// The writable primary.
        Primary = "primary",
        /// Reachable, not the writable primary.
        Standby = "standby",
        /// Could not tell (PostgreSQL down).
        Unknown = "unknown",
    }
}

/// What PostgreSQL said.
#[derive(Debug, Clone, Serialize)]
pub struct SqlState {
    /// `pg_is_in_recovery()`
    pub in_recovery: bool,
    /// `server_version`
    pub server_version: String,
    /// `server_version_num`
    pub server_version_num: i64,
    /// The timeline of the last checkpoint (restartpoint on a standby).
    pub timeline: Option<i64>,
}

/// Everything the detection found.
#[derive(Debug, Clone)]
pub struct Detection {
    /// The conclusion.
    pub role: Role,
    /// Which witnesses answered, for example `pg_autoctl+sql`.
    pub source: String,
    /// `Some(false)` when pg_autoctl and PostgreSQL disagree.
    pub sources_agree: Option<bool>,
    /// Whether the monitor answered (`None`: not asked).
    pub monitor_reachable: Option<bool>,
    /// The keeper found, if any.
    pub keeper: Option<Keeper>,
    /// This node's state per pg_autoctl.
    pub node: Option<NodeState>,
    /// PostgreSQL's answer.
    pub sql: Option<SqlState>,
    /// Why the role is unknown.
    pub unknown_reason: Option<String>,
    /// Commands run.
    pub commands: Vec<String>,
    /// Queries run.
    pub queries: Vec<String>,
}

impl Detection {
    /// The writable primary, per every witness asked.
    pub fn is_primary(&self) -> bool {
        self.role == Role::Primary
    }
}

/// The query asked of PostgreSQL.
pub const ROLE_QUERY: &str = "SELECT pg_is_in_recovery(), current_setting('server_version'), \
    current_setting('server_version_num')::int8, \
    (SELECT timeline_id::int8 FROM pg_control_checkpoint())";

/// The options of [`detect`], shared with other modules.
#[derive(Debug)]
pub struct DetectOptions<'a> {
    /// Which witnesses.
    pub source: Source,
    /// The data directory, when known.
    pub pgdata: Option<&'a std::path::Path>,
    /// The pg_autoctl program.
    pub pg_autoctl_path: &'a str,
    /// Login options.
    pub login: &'a LoginArgs,
}

/// Ask the witnesses. Errors are configuration problems (no keeper where one is required, a
/// monitor that is down when only it may answer, an authentication failure); a server that is
/// simply down is `Role::Unknown`, not an error.
pub fn detect(opts: &DetectOptions<'_>, ctx: &mut Context) -> anyhow::Result<Detection> {
    let keeper = find_keeper(opts)?;
    let mut det = Detection {
        role: Role::Unknown,
        source: String::new(),
        sources_agree: None,
        monitor_reachable: None,
        keeper: keeper.clone(),
        node: None,
        sql: None,
        unknown_reason: None,
        commands: Vec::new(),
        queries: Vec::new(),
    };

    let ask_autoctl =
        match (opts.source, &keeper) {
            (Source::Sql, _) | (Source::Auto, None) => false,
            (Source::PgAutoctl, None) => anyhow::bail!(
            "source=pg_autoctl but no pg_auto_failover keeper configuration was found{} under {}",
            opts.pgdata.map(|p| format!(" for pgdata {}", p.display())).unwrap_or_default(),
            autoctl::config_root().display()
        ),
            (_, Some(_)) => true,
        };
    let mut autoctl_view: Option<(NodeState, StateSource)> = None;
    if let (true, Some(k)) = (ask_autoctl, &keeper) {
        let (cmd, result) = autoctl::show_state(opts.pg_autoctl_path, k, false, None);
        det.commands.push(cmd.display());
        match result {
            Ok(json) => {
                det.monitor_reachable = Some(true);
                autoctl_view = Some((autoctl::own_row(&json, k)?, StateSource::Monitor));
            }
            Err(e) if e.code() == Some(autoctl::EXIT_MONITOR_UNREACHABLE) => {
                det.monitor_reachable = Some(false);
                if opts.source == Source::PgAutoctl {
                    anyhow::bail!(
                        "the pg_auto_failover monitor is unreachable (pg_autoctl exit code 6) and \
                         source=pg_autoctl allows no fallback: {e}"
                    );
                }
                ctx.warn(
                    "the pg_auto_failover monitor is unreachable; falling back to the keeper's \
                     local state file (possibly stale) cross-checked with pg_is_in_recovery()",
                );
                let (cmd, local) = autoctl::show_state(opts.pg_autoctl_path, k, true, None);
                det.commands.push(cmd.display());
                match local {
                    Ok(json) => {
                        autoctl_view = Some((autoctl::local_row(&json)?, StateSource::Local))
                    }
                    Err(e) => ctx.warn(format!(
                        "the keeper's local state could not be read either: {e}"
                    )),
                }
            }
            Err(e) => anyhow::bail!("asking pg_auto_failover for this node's state: {e}"),
        }
    }

    let mut sources: Vec<&str> = Vec::new();
    if let Some((_, from)) = &autoctl_view {
        sources.push(if *from == StateSource::Monitor {
            "pg_autoctl"
        } else {
            "pg_autoctl_local"
        });
    }
    if opts.source != Source::PgAutoctl {
        let postmaster = opts
            .pgdata
            .or(keeper.as_ref().map(|k| k.pgdata.as_path()))
            .and_then(Postmaster::read);
        let login = login_for(opts.login, postmaster.as_ref(), keeper.as_ref())?;
        det.queries.push(ROLE_QUERY.to_owned());
        match query_role(&login)? {
            Ok(state) => {
                det.sql = Some(state);
                sources.push("sql");
            }
            Err(down) => det.unknown_reason = Some(down),
        }
    }
    det.source = if sources.is_empty() {
        "none".to_owned()
    } else {
        sources.join("+")
    };
    det.node = autoctl_view.as_ref().map(|(n, _)| n.clone());

    let autoctl_says = autoctl_view.as_ref().map(|(n, _)| n.is_writable_primary());
    let sql_says = det.sql.as_ref().map(|s| !s.in_recovery);
    (det.role, det.sources_agree) = decide(opts.source, autoctl_says, sql_says);
    if det.sources_agree == Some(false) {
        let node = det
            .node
            .as_ref()
            .map(|n| format!("{}/{}", n.current_group_state, n.assigned_group_state))
            .unwrap_or_default();
        ctx.warn(format!(
            "pg_auto_failover and PostgreSQL disagree: pg_autoctl state {node} says {}, \
             pg_is_in_recovery() is {}; reporting this node as not the writable primary",
            if autoctl_says == Some(true) {
                "writable primary"
            } else {
                "not the writable primary"
            },
            det.sql.as_ref().is_some_and(|s| s.in_recovery)
        ));
    }
    Ok(det)
}

/// The conclusion from the witnesses' answers (`None`: did not answer).
pub fn decide(
    source: Source,
    autoctl_says: Option<bool>,
    sql_says: Option<bool>,
) -> (Role, Option<bool>) {
    let role = |primary: bool| {
        if primary {
            Role::Primary
        } else {
            Role::Standby
        }
    };
    match (source, autoctl_says, sql_says) {
        (Source::PgAutoctl, Some(a), _) => (role(a), None),
        (_, Some(a), Some(s)) => (role(a && s), Some(a == s)),
        // PostgreSQL is down: whatever the monitor believes, nobody can write here now.
        (_, _, None) => (Role::Unknown, None),
        (_, None, Some(s)) => (role(s), None),
    }
}

fn find_keeper(opts: &DetectOptions<'_>) -> Result<Option<Keeper>, Error> {
    if opts.source == Source::Sql {
        return Ok(None);
    }
    let root = autoctl::config_root();
    if let Some(pgdata) = opts.pgdata {
        return Ok(Keeper::for_pgdata(&root, pgdata));
    }
    let mut keepers = Keeper::discover(&root);
    match keepers.len() {
        0 | 1 => Ok(keepers.pop()),
        _ => Err(Error::Keeper(format!(
            "several pg_auto_failover keepers are configured on this host ({}); \
             set pgdata to choose one",
            keepers
                .iter()
                .map(|k| k.pgdata.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Login options, filled in from the running server or the keeper's configuration.
fn login_for(
    args: &LoginArgs,
    postmaster: Option<&Postmaster>,
    keeper: Option<&Keeper>,
) -> Result<Login, postgres_access::Error> {
    let from_keeper = keeper.and_then(|k| {
        Some(Postmaster {
            pid: 0,
            port: k.port?,
            socket_dir: k
                .host
                .as_ref()
                .filter(|h| h.starts_with('/'))
                .map(PathBuf::from),
        })
    });
    Login::new(args, postmaster.or(from_keeper.as_ref()))
}

/// `Ok(Ok(state))`: answered; `Ok(Err(reason))`: the server is down or unreachable;
/// `Err`: it answered with an error (authentication, missing database).
fn query_role(login: &Login) -> anyhow::Result<Result<SqlState, String>> {
    postgres_access::block_on(async {
        let client = match login.connect().await {
            Ok(c) => c,
            Err(e) if e.db_error => anyhow::bail!("{}", e.message),
            Err(e) => return Ok(Err(e.message)),
        };
        // The simple protocol: one round trip, no prepared statement, values as text.
        let row = postgres_access::simple_row(&client, ROLE_QUERY)
            .await
            .map_err(|e| anyhow::anyhow!("running `{ROLE_QUERY}`: {e}"))?;
        let field = |i: usize| row.get(i).cloned().flatten();
        Ok(Ok(SqlState {
            in_recovery: field(0).as_deref() == Some("t"),
            server_version: field(1).unwrap_or_default(),
            server_version_num: field(2).and_then(|v| v.parse().ok()).unwrap_or_default(),
            timeline: field(3).and_then(|v| v.parse().ok()),
        }))
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_requires_every_witness_to_agree() {
        use Role::*;
        assert_eq!(
            decide(Source::Auto, Some(true), Some(true)),
            (Primary, Some(true))
        );
        assert_eq!(
            decide(Source::Auto, Some(false), Some(false)),
            (Standby, Some(true))
        );
        assert_eq!(
            decide(Source::Auto, Some(true), Some(false)),
            (Standby, Some(false))
        );
        assert_eq!(
            decide(Source::Auto, Some(false), Some(true)),
            (Standby, Some(false))
        );
        assert_eq!(decide(Source::Auto, None, Some(true)), (Primary, None));
        assert_eq!(decide(Source::Sql, None, Some(false)), (Standby, None));
    }

    #[test]
    fn a_down_server_is_unknown_unless_only_the_monitor_was_asked() {
        assert_eq!(
            decide(Source::Auto, Some(true), None),
            (Role::Unknown, None)
        );
        assert_eq!(decide(Source::Sql, None, None), (Role::Unknown, None));
        assert_eq!(
            decide(Source::PgAutoctl, Some(true), None),
            (Role::Primary, None)
        );
        assert_eq!(
            decide(Source::PgAutoctl, Some(false), None),
            (Role::Standby, None)
        );
    }
}
