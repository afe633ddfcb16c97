//! pg_auto_failover: the keeper's configuration and `pg_autoctl show state --json`.
//!
//! pg_autoctl keeps one configuration per data directory, at
//! `$XDG_CONFIG_HOME/pg_autoctl/<absolute pgdata>/pg_autoctl.cfg` (XDG_CONFIG_HOME defaulting to
//! `~/.config` of the user running it). Its `[pg_autoctl] name` identifies this node's row in the
//! monitor's answer, and its `[postgresql] host/port` tell where the local server listens.

use crate::Error;
use ansible_module::process::{Cmd, CmdError, RunAs};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `pg_autoctl` exits with this code when it cannot reach the monitor.
pub const EXIT_MONITOR_UNREACHABLE: i32 = 6;

/// The monitor's view, as messages name it.
const SHOW_STATE: &str = "pg_autoctl show state --json";
/// The keeper's local view, as messages name it.
const SHOW_LOCAL: &str = "pg_autoctl show state --local --json";

/// A keeper (data node) configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keeper {
    /// Where the configuration file is.
    pub config_path: PathBuf,
    /// `[postgresql] pgdata`
    pub pgdata: PathBuf,
    /// `[pg_autoctl] name`
    pub name: String,
    /// `[postgresql] host` (a socket directory, usually)
    pub host: Option<String>,
    /// `[postgresql] port`
    pub port: Option<u16>,
}

/// The directory under which pg_autoctl keeps its configurations.
pub fn config_root() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("pg_autoctl")
}

/// Parse an INI file into `section.key -> value`.
fn parse_ini(text: &str) -> BTreeMap<String, String> {
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((k, v)) = line.split_once('=') {
            out.insert(format!("{section}.{}", k.trim()), v.trim().to_owned());
        }
    }
    out
}

impl Keeper {
    /// Parse a configuration; `None` when it is not a keeper's (a monitor's, say).
    pub fn parse(config_path: &Path, text: &str) -> Option<Keeper> {
        let ini = parse_ini(text);
        if ini.get("pg_autoctl.role").map(String::as_str) != Some("keeper") {
            return None;
        }
        Some(Keeper {
            config_path: config_path.to_owned(),
            pgdata: PathBuf::from(ini.get("postgresql.pgdata")?),
            name: ini.get("pg_autoctl.name").cloned().unwrap_or_default(),
            host: ini
                .get("postgresql.host")
                .cloned()
                .filter(|h| !h.is_empty()),
            port: ini.get("postgresql.port").and_then(|p| p.parse().ok()),
        })
    }

    /// The keeper of this data directory, if there is one.
    pub fn for_pgdata(root: &Path, pgdata: &Path) -> Option<Keeper> {
        let relative = pgdata.strip_prefix("/").unwrap_or(pgdata);
        let path = root.join(relative).join("pg_autoctl.cfg");
        let text = std::fs::read_to_string(&path).ok()?;
        Self::parse(&path, &text)
    }

    /// Every keeper configuration under `root`.
    pub fn discover(root: &Path) -> Vec<Keeper> {
        let mut found = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                } else if path.file_name().is_some_and(|n| n == "pg_autoctl.cfg") {
                    if let Some(k) = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| Self::parse(&path, &t))
                    {
                        found.push(k);
                    }
                }
            }
        }
        ansible_module::sort_small(&mut found, |a, b| a.pgdata < b.pgdata);
        found
    }
}

/// One node as pg_autoctl reports it (the monitor's row, or the local state file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    /// `node_id`
    pub node_id: i64,
    /// `group_id`
    pub group_id: i64,
    /// `nodename`
    pub nodename: String,
    /// `nodehost`
    pub nodehost: String,
    /// `nodeport`
    pub nodeport: u16,
    /// `current_group_state`
    pub current_group_state: String,
    /// `assigned_group_state`
    pub assigned_group_state: String,
    /// `health` (-1 bad, 0 unknown, 1 good): only the monitor knows.
    pub health: Option<i64>,
    /// `reported_tli` from the monitor, `timeline` from the local state.
    pub reported_tli: Option<i64>,
}

/// States in which the monitor lets a node take writes (its own rule).
pub const WRITABLE_STATES: &[&str] = &[
    "single",
    "primary",
    "wait_primary",
    "join_primary",
    "apply_settings",
];
/// Assigned states that take writes away.
pub const DEMOTION_STATES: &[&str] = &[
    "draining",
    "demoted",
    "demote_timeout",
    "prepare_maintenance",
    "maintenance",
];

impl NodeState {
    /// One node's JSON object, read by hand: a derived `Deserialize` costs several KB in every
    /// binary that detects roles. `command`, what printed it, is named in the error.
    fn from_json(v: &Value, command: &'static str) -> Result<NodeState, Error> {
        let bad = |k: &str| Error::State {
            command,
            detail: format!("missing or invalid field `{k}`"),
        };
        let int = |k: &str| v.get(k).and_then(Value::as_i64).ok_or_else(|| bad(k));
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(k))
        };
        let opt_int = |k: &str| match v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x.as_i64().map(Some).ok_or_else(|| bad(k)),
        };
        Ok(NodeState {
            node_id: int("node_id")?,
            group_id: int("group_id")?,
            nodename: text("nodename")?,
            nodehost: text("nodehost")?,
            nodeport: u16::try_from(int("nodeport")?).map_err(|_| bad("nodeport"))?,
            current_group_state: text("current_group_state")?,
            assigned_group_state: text("assigned_group_state")?,
            health: opt_int("health")?,
            reported_tli: match opt_int("reported_tli")? {
                Some(tli) => Some(tli),
                None => opt_int("timeline")?,
            },
        })
    }

    /// Writable now and not being demoted.
    pub fn is_writable_primary(&self) -> bool {
        WRITABLE_STATES.contains(&self.current_group_state.as_str())
            && !DEMOTION_STATES.contains(&self.assigned_group_state.as_str())
    }
}

/// Where a node's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateSource {
    /// The monitor (`show state`).
    Monitor,
    /// The keeper's local state file (`show state --local`): may be stale.
    Local,
}

/// Run `pg_autoctl show state --json` (or `--local`) for a keeper.
pub fn show_state(
    pg_autoctl: &str,
    keeper: &Keeper,
    local: bool,
    run_as: Option<&RunAs>,
) -> (Cmd, Result<String, CmdError>) {
    let mut cmd = Cmd::new(pg_autoctl)
        .args(["show", "state", "--pgdata"])
        .arg(&keeper.pgdata)
        .arg("--json");
    if local {
        cmd = cmd.arg("--local");
    }
    cmd = cmd.run_as(run_as);
    let result = cmd.run().map(|o| o.stdout);
    (cmd, result)
}

/// This node's row in the monitor's answer.
pub fn own_row(json: &str, keeper: &Keeper) -> Result<NodeState, Error> {
    let unreadable = |detail: String| Error::State {
        command: SHOW_STATE,
        detail,
    };
    let rows: Vec<NodeState> =
        match serde_json::from_str::<Value>(json).map_err(|e| unreadable(e.to_string()))? {
            Value::Array(items) => items
                .iter()
                .map(|v| NodeState::from_json(v, SHOW_STATE))
                .collect::<Result<_, _>>()?,
            _ => return Err(unreadable("not a list".to_owned())),
        };
    let by_name: Vec<&NodeState> = rows.iter().filter(|r| r.nodename == keeper.name).collect();
    match by_name.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::Node(format!(
            "node '{}' (pgdata {}) is not in the monitor's formation; nodes: {}",
            keeper.name,
            keeper.pgdata.display(),
            rows.iter()
                .map(|r| r.nodename.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        _ => Err(Error::Node(format!(
            "the monitor lists node name '{}' more than once",
            keeper.name
        ))),
    }
}

/// The local state file's view of this node.
pub fn local_row(json: &str) -> Result<NodeState, Error> {
    let v = serde_json::from_str::<Value>(json).map_err(|e| Error::State {
        command: SHOW_LOCAL,
        detail: e.to_string(),
    })?;
    NodeState::from_json(&v, SHOW_LOCAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "[pg_autoctl]\nrole = keeper\n\
        monitor = postgres://autoctl_node@127.0.0.1:6000/pg_auto_failover\nname = node1\n\n\
        [postgresql]\npgdata = /srv/lab/node1\nhost = /srv/lab\nport = 6001\n";

    fn keeper() -> Keeper {
        Keeper::parse(Path::new("/x/pg_autoctl.cfg"), CFG).unwrap()
    }

    #[test]
    fn keeper_config_is_parsed_and_monitor_config_is_not_a_keeper() {
        let k = keeper();
        assert_eq!(k.name, "node1");
        assert_eq!(k.pgdata, PathBuf::from("/srv/lab/node1"));
        assert_eq!((k.host.as_deref(), k.port), (Some("/srv/lab"), Some(6001)));
        assert!(Keeper::parse(
            Path::new("/m"),
            "[pg_autoctl]\nrole = monitor\n[postgresql]\npgdata = /m\n"
        )
        .is_none());
    }

    #[test]
    fn own_row_is_found_by_node_name() {
        let json = r#"[
            {"health":1,"node_id":1,"group_id":0,"nodehost":"127.0.0.1","nodename":"node2",
             "nodeport":6002,"reported_tli":3,
             "current_group_state":"primary","assigned_group_state":"primary"},
            {"health":1,"node_id":2,"group_id":0,"nodehost":"127.0.0.1","nodename":"node1",
             "nodeport":6001,"reported_tli":3,
             "current_group_state":"secondary","assigned_group_state":"secondary",
             "candidate_priority":50}
        ]"#;
        let row = own_row(json, &keeper()).unwrap();
        assert_eq!(
            (row.node_id, row.nodeport, row.health, row.reported_tli),
            (2, 6001, Some(1), Some(3))
        );
        assert!(!row.is_writable_primary());
        let other = r#"[{"node_id":1,"group_id":0,"nodehost":"h","nodename":"other","nodeport":1,
            "current_group_state":"single","assigned_group_state":"single"}]"#;
        let err = own_row(other, &keeper()).unwrap_err().to_string();
        assert!(
            err.contains("'node1'") && err.contains("nodes: other"),
            "{err}"
        );
    }

    #[test]
    fn unreadable_state_names_the_command_and_what_is_wrong() {
        assert_eq!(
            own_row("{}", &keeper()).unwrap_err().to_string(),
            "parsing `pg_autoctl show state --json`: not a list"
        );
        assert_eq!(
            local_row(r#"{"node_id":1}"#).unwrap_err().to_string(),
            "parsing `pg_autoctl show state --local --json`: missing or invalid field `group_id`"
        );
    }

    #[test]
    fn local_state_reads_timeline() {
        let json = r#"{"node_id":1,"group_id":0,"nodename":"node1","nodehost":"127.0.0.1",
            "nodeport":6001,"current_group_state":"secondary","assigned_group_state":"secondary",
            "timeline":4,"Minimum Recovery Ending LSN":"0\/30008F8","reachable":"unknown",
            "conntype":"read-only"}"#;
        let row = local_row(json).unwrap();
        assert_eq!((row.reported_tli, row.health), (Some(4), None));
    }

    #[test]
    fn writable_means_writable_state_and_no_demotion_assigned() {
        let state = |current: &str, assigned: &str| NodeState {
            node_id: 1,
            group_id: 0,
            nodename: "n".into(),
            nodehost: "h".into(),
            nodeport: 1,
            current_group_state: current.into(),
            assigned_group_state: assigned.into(),
            health: None,
            reported_tli: None,
        };
        for s in WRITABLE_STATES {
            assert!(state(s, s).is_writable_primary(), "{s}");
        }
        assert!(state("wait_primary", "primary").is_writable_primary());
        assert!(!state("primary", "draining").is_writable_primary());
        assert!(!state("primary", "prepare_maintenance").is_writable_primary());
        assert!(!state("secondary", "secondary").is_writable_primary());
        assert!(!state("catchingup", "secondary").is_writable_primary());
        assert!(!state("draining", "demoted").is_writable_primary());
    }
}
