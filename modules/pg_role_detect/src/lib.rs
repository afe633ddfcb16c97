//! `pg_role_detect`: is this node the writable primary right now?
//!
//! The answer comes from [`pg_role::detect`] (pg_auto_failover's monitor cross-checked with
//! `pg_is_in_recovery()`); this module reports it, as return values and facts, and with
//! `require_primary` serves as a systemd `ExecCondition` (exit 1 when not the primary).

use ansible_module::process::RunAs;
use ansible_module::{Context, Module, Response};
use pg_role::{detect, DetectOptions, Detection, Role, Source};
use postgres_access::LoginArgs;
use std::path::PathBuf;

ansible_module::options! {
    /// The module's options (login options flattened in).
    pub struct Args {
        /// `source`
        source: Source = str().choices(Source::NAMES).default("auto"),
        /// `pgdata`
        pgdata: Option<PathBuf> = path(),
        /// `pg_autoctl_path`
        pg_autoctl_path: String = str().default("pg_autoctl"),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `fail_on_unknown`
        fail_on_unknown: bool = bool().default(false),
        /// `require_primary`
        require_primary: bool = bool().default(false),
    }
    flatten {
        /// `login_*`, `connect_timeout`
        login: LoginArgs,
    }
}

/// The Ansible module.
pub struct PgRoleDetect;

impl Module for PgRoleDetect {
    type Args = Args;
    const NAME: &'static str = "pg_role_detect";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let require_primary = args.require_primary;
        match answer(args, ctx) {
            // A check that cannot run must fail its systemd unit, not skip it like a standby.
            Err(e) if require_primary => {
                Ok(Response::failed(format!("{e:#}")).exit_code(EXIT_CHECK_BROKEN))
            }
            other => other,
        }
    }
}

/// `require_primary` on a standby: systemd's `ExecCondition` skips the unit quietly on 1-254.
pub const EXIT_NOT_PRIMARY: i32 = 1;
/// `require_primary` when the check itself is broken or the role unknown: 255 fails the unit.
pub const EXIT_CHECK_BROKEN: i32 = 255;

fn answer(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
    // pg_autoctl refuses to run as root, and peer authentication wants the database user:
    // a root module becomes that user first; it only reads, so it needs nothing else.
    RunAs::become_option(args.become_user.as_deref())?;
    if let Some(p) = args.pgdata.as_deref().filter(|p| !p.is_dir()) {
        anyhow::bail!("pgdata: '{}' is not a directory", p.display());
    }
    let opts = DetectOptions {
        source: args.source,
        pgdata: args.pgdata.as_deref(),
        pg_autoctl_path: &args.pg_autoctl_path,
        login: &args.login,
    };
    let det = detect(&opts, ctx)?;
    let why_unknown = || {
        det.unknown_reason
            .clone()
            .unwrap_or_else(|| "no witness answered".to_owned())
    };
    match det.role {
        Role::Unknown if args.require_primary => Ok(response(&det)
            .fail(format!(
                "require_primary: the role of this node is unknown: {}",
                why_unknown()
            ))
            .exit_code(EXIT_CHECK_BROKEN)),
        Role::Standby if args.require_primary => Ok(response(&det)
            .fail("require_primary: this node is not the writable primary")
            .exit_code(EXIT_NOT_PRIMARY)),
        Role::Unknown if args.fail_on_unknown => Ok(response(&det).fail(format!(
            "the role of this node is unknown: {}",
            why_unknown()
        ))),
        Role::Unknown => {
            ctx.warn(format!(
                "the role of this node is unknown: {}",
                why_unknown()
            ));
            Ok(response(&det))
        }
        _ => Ok(response(&det)),
    }
}

fn response(det: &Detection) -> Response {
    let node = det.node.as_ref();
    let sql = det.sql.as_ref();
    let timeline = sql
        .and_then(|s| s.timeline)
        .or(node.and_then(|n| n.reported_tli));
    let role = det.role.name();
    Response::new()
        .msg(format!("this node is {}", role))
        .field("role", role)
        .field("is_primary", det.is_primary())
        .field("source", &det.source)
        .field("sources_agree", det.sources_agree)
        .field("monitor_reachable", det.monitor_reachable)
        .field("in_recovery", sql.map(|s| s.in_recovery))
        .field(
            "pgdata",
            det.keeper.as_ref().map(|k| k.pgdata.display().to_string()),
        )
        .field("node_name", node.map(|n| n.nodename.as_str()))
        .field("node_id", node.map(|n| n.node_id))
        .field("group_id", node.map(|n| n.group_id))
        .field(
            "current_state",
            node.map(|n| n.current_group_state.as_str()),
        )
        .field(
            "assigned_state",
            node.map(|n| n.assigned_group_state.as_str()),
        )
        .field("health", node.and_then(|n| n.health))
        .field("timeline", timeline)
        .field("server_version", sql.map(|s| s.server_version.as_str()))
        .field("server_version_num", sql.map(|s| s.server_version_num))
        .field("commands", &det.commands)
        .field("queries", &det.queries)
        .fact("pg_role", role)
        .fact("pg_is_primary", det.is_primary())
        .fact("pg_role_source", &det.source)
        .fact("pg_autoctl_node_name", node.map(|n| n.nodename.as_str()))
        .fact(
            "pg_autoctl_current_state",
            node.map(|n| n.current_group_state.as_str()),
        )
        .fact(
            "pg_autoctl_assigned_state",
            node.map(|n| n.assigned_group_state.as_str()),
        )
        .fact("pg_server_version", sql.map(|s| s.server_version.as_str()))
}
