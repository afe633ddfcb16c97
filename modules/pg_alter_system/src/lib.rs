//! `pg_alter_system`: set and reset PostgreSQL settings with `ALTER SYSTEM`, idempotently.
//!
//! The module reads each named setting from `pg_settings` (type, unit, allowed values, range,
//! context) and what the configuration files hold for it from `pg_file_settings`, so that a value
//! written by an earlier `ALTER SYSTEM` but waiting for a restart counts as already set. Requested
//! values are parsed with PostgreSQL's own rules ([`guc`]) and compared in the setting's type and
//! unit: `1min` equals `60s`, `on` equals `true`. Every setting is validated before the first
//! statement runs; `ALTER SYSTEM` is not transactional, so when the server still refuses one, the
//! statements already run are undone with `ALTER SYSTEM` too. After a change it reloads the
//! configuration and reads `pending_restart` back. It never restarts the server.

pub mod guc;

use ansible_module::process::{Cmd, RunAs};
use ansible_module::{Context, Diff, Elem, Module, Response};
use guc::{Setting, Unit, Value, VarType};
use postgres_access::{quote_ident, quote_literal, simple_rows, Client, Login, LoginArgs};
use serde::Serialize;
use serde_json::Map;
use std::collections::BTreeMap;
use std::time::Duration;

ansible_module::options! {
    /// The module's options (login options flattened in).
    pub struct Args {
        /// `settings`
        settings: Option<Map<String, serde_json::Value>> = dict(),
        /// `reset`
        reset: Option<Vec<String>> = list(Elem::Str),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `restart_command`: the program and its arguments that restart PostgreSQL.
        restart_command: Option<Vec<String>> = list(Elem::Str),
    }
    flatten {
        /// `login_*`, `connect_timeout`
        login: LoginArgs,
    }
}

/// What to do with one setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `ALTER SYSTEM SET name = 'value'`, with the value as written.
    Set(String),
    /// `ALTER SYSTEM RESET name`.
    Reset,
}

/// The validated request: names are well-formed and unique, values are plain text without NUL or
/// newline. Built before anything is looked up or changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The settings in the order given (`settings` first, then `reset`).
    pub items: Vec<(String, Action)>,
}

/// Settings PostgreSQL refuses in `postgresql.auto.conf` although `pg_settings` does not say so.
const NOT_IN_AUTO_CONF: &[&str] = &[
    "config_file",
    "data_directory",
    "transaction_deferrable",
    "transaction_isolation",
    "transaction_read_only",
];

/// `name` or `extension.name`, as PostgreSQL's grammar reads a setting name.
fn valid_name(name: &str) -> bool {
    name.split('.').all(|part| {
        part.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
    })
}

impl Request {
    /// Check the options' shape.
    pub fn new(
        settings: Option<&Map<String, serde_json::Value>>,
        reset: Option<&[String]>,
    ) -> Result<Request, String> {
        if settings.is_none() && reset.is_none() {
            return Err("one of the following is required: settings, reset".to_owned());
        }
        let mut items: Vec<(String, Action)> = Vec::new();
        let mut seen: BTreeMap<String, &'static str> = BTreeMap::new();
        let mut check_name = |option: &'static str, name: &str| -> Result<(), String> {
            if !valid_name(name) {
                return Err(format!("{option}: '{name}' is not a valid setting name"));
            }
            if let Some(first) = seen.insert(name.to_ascii_lowercase(), option) {
                return Err(if first == option {
                    format!("{option}: '{name}' is given twice")
                } else {
                    format!("'{name}' is in both settings and reset")
                });
            }
            Ok(())
        };
        for (name, value) in settings.into_iter().flatten() {
            check_name("settings", name)?;
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => if *b { "on" } else { "off" }.to_owned(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Null => {
                    return Err(format!(
                        "settings: {name} has no value; list it in reset to remove it"
                    ))
                }
                _ => {
                    return Err(format!(
                        "settings: the value of {name} must be a string, a number or a boolean, \
                         got {value}"
                    ))
                }
            };
            if text.contains('\0') {
                return Err(format!(
                    "settings: the value of {name} contains a NUL character"
                ));
            }
            if text.contains(['\n', '\r']) {
                return Err(format!(
                    "settings: the value of {name} contains a line break, \
                     which ALTER SYSTEM refuses"
                ));
            }
            items.push((name.clone(), Action::Set(text)));
        }
        for name in reset.into_iter().flatten() {
            check_name("reset", name)?;
            items.push((name.clone(), Action::Reset));
        }
        Ok(Request { items })
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|(n, _)| n.as_str())
    }
}

/// One row of `pg_settings`.
#[derive(Debug, Clone)]
pub struct Current {
    /// Type, unit and allowed values.
    pub setting: Setting,
    /// `setting`, as text in the base unit.
    pub value: String,
    /// `context`: `postmaster` needs a restart, `sighup` a reload, ...
    pub context: String,
    /// `source`: where the running value came from.
    pub source: String,
    /// `pending_restart`
    pub pending_restart: bool,
    /// `boot_val`
    pub boot_val: Option<String>,
    /// `reset_val`
    pub reset_val: Option<String>,
}

impl Current {
    /// The running value (for this server, not this session's overrides).
    fn running(&self) -> Option<Value> {
        // archive_command reads "(disabled)" while archiving is off; reset_val holds the command.
        let text = if self.setting.name == "archive_command" && self.value == "(disabled)" {
            self.reset_val.as_deref().unwrap_or_default()
        } else {
            &self.value
        };
        self.setting.parse(text).ok()
    }
}

/// One line of a configuration file (`pg_file_settings`), in file order.
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// The name, lower case.
    pub name: String,
    /// The value as written.
    pub value: String,
    /// The line is in `postgresql.auto.conf` (written by `ALTER SYSTEM`).
    pub auto_conf: bool,
}

/// What the server says before anything is changed.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// `pg_settings` rows by lower-case name.
    pub settings: BTreeMap<String, Current>,
    /// The configuration files' lines for these names; `None` when `pg_file_settings` could not
    /// be read (it needs a superuser).
    pub files: Option<Vec<FileEntry>>,
}

impl State {
    /// The value the configuration gives, ignoring the lines `skip` refuses: the last such line
    /// that PostgreSQL would accept, else the command line's or the built-in default.
    fn configured(&self, cur: &Current, skip: impl Fn(&FileEntry) -> bool) -> Option<Value> {
        let Some(files) = &self.files else {
            return cur.running();
        };
        let key = cur.setting.name.to_ascii_lowercase();
        if let Some(v) = files
            .iter()
            .rev()
            .filter(|e| e.name == key && !skip(e))
            .find_map(|e| cur.setting.parse(&e.value).ok())
        {
            return Some(v);
        }
        if cur.source == "command line" {
            return cur.running();
        }
        cur.boot_val
            .as_deref()
            .and_then(|b| cur.setting.parse(b).ok())
            .or_else(|| cur.running())
    }

    /// The last `postgresql.auto.conf` line for a name, as written.
    fn auto_conf(&self, key: &str) -> Option<&str> {
        self.files.as_ref().and_then(|files| {
            files
                .iter()
                .rev()
                .find(|e| e.auto_conf && e.name == key)
                .map(|e| e.value.as_str())
        })
    }
}

/// The plan for one setting.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// The canonical name.
    #[serde(skip)]
    pub name: String,
    /// `set` or `reset`.
    pub action: &'static str,
    /// The configured value before, as `SHOW` prints it.
    pub before: String,
    /// The configured value after.
    pub after: String,
    /// Whether a statement is needed.
    pub changed: bool,
    /// `pg_settings.context`.
    pub context: String,
    /// Whether the new value waits for a restart (predicted, read back after a real run).
    pub pending_restart: bool,
    /// `pg_settings.pending_restart` before the run.
    #[serde(skip)]
    pub pending_before: bool,
    /// The statement to run.
    #[serde(skip)]
    pub statement: Option<String>,
    /// The statement that puts `postgresql.auto.conf` back as it was.
    #[serde(skip)]
    pub undo: Option<String>,
}

/// Compare the request with the server; every refusal at once, before any change.
pub fn plan(request: &Request, state: &State) -> Result<Vec<Item>, Vec<String>> {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (given, action) in &request.items {
        let option = match action {
            Action::Set(_) => "settings",
            Action::Reset => "reset",
        };
        let key = given.to_ascii_lowercase();
        let Some(cur) = state.settings.get(&key) else {
            errors.push(format!(
                "{option}: unrecognized configuration parameter \"{given}\""
            ));
            continue;
        };
        let name = cur.setting.name.clone();
        if cur.context == "internal" || NOT_IN_AUTO_CONF.contains(&key.as_str()) {
            errors.push(format!("{option}: parameter \"{name}\" cannot be changed"));
            continue;
        }
        let show = |v: &Option<Value>| v.as_ref().map(|v| cur.setting.show(v)).unwrap_or_default();
        let before = state.configured(cur, |_| false);
        let previous = state.auto_conf(&key);
        let (after, statement) = match action {
            Action::Set(text) => match cur.setting.parse(text) {
                Err(invalid) => {
                    errors.push(format!("{option}: {invalid}"));
                    continue;
                }
                Ok(wanted) if before.as_ref().is_some_and(|b| b.same(&wanted)) => {
                    (before.clone(), None)
                }
                Ok(wanted) => (
                    Some(wanted),
                    Some(format!(
                        "ALTER SYSTEM SET {} = {}",
                        quote_ident(&name),
                        quote_literal(text)
                    )),
                ),
            },
            // Only a line in postgresql.auto.conf can be reset; without file information, try.
            Action::Reset if previous.is_none() && state.files.is_some() => (before.clone(), None),
            Action::Reset => (
                state.configured(cur, |e| e.auto_conf),
                Some(format!("ALTER SYSTEM RESET {}", quote_ident(&name))),
            ),
        };
        let undo = state.files.as_ref().map(|_| match previous {
            Some(old) => format!(
                "ALTER SYSTEM SET {} = {}",
                quote_ident(&name),
                quote_literal(old)
            ),
            None => format!("ALTER SYSTEM RESET {}", quote_ident(&name)),
        });
        let running = cur.running();
        let pending_restart = cur.context == "postmaster"
            && match (&after, &running) {
                (Some(a), Some(r)) => !a.same(r),
                _ => cur.pending_restart,
            };
        items.push(Item {
            action: if *action == Action::Reset {
                "reset"
            } else {
                "set"
            },
            before: show(&before),
            after: show(&after),
            changed: statement.is_some(),
            context: cur.context.clone(),
            pending_restart,
            pending_before: cur.pending_restart,
            undo: statement.as_ref().and(undo),
            statement,
            name,
        });
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// The `IN (...)` list for the names, lower case.
fn name_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|n| quote_literal(&n.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `pg_settings` query for the names.
pub fn settings_query<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!(
        "SELECT name, setting, unit, vartype, context, source, pending_restart, \
         array_to_string(enumvals, ','), min_val, max_val, boot_val, reset_val \
         FROM pg_settings WHERE lower(name) IN ({})",
        name_list(names)
    )
}

/// The `pg_file_settings` query for the names.
pub fn files_query<'a>(names: impl Iterator<Item = &'a str>) -> String {
    format!(
        "SELECT lower(name), setting, sourcefile LIKE '%/postgresql.auto.conf' \
         FROM pg_file_settings WHERE lower(name) IN ({}) ORDER BY seqno",
        name_list(names)
    )
}

/// A `pg_settings` row of [`settings_query`].
fn current_from_row(row: &[Option<String>]) -> Option<Current> {
    let text = |i: usize| row.get(i).cloned().flatten();
    let number = |i: usize| text(i).and_then(|v| v.parse::<f64>().ok());
    let name = text(0)?;
    Some(Current {
        setting: Setting {
            name,
            vartype: VarType::parse(&text(3)?)?,
            unit: text(2).as_deref().and_then(Unit::parse),
            enumvals: text(7)
                .map(|v| v.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            min: number(8),
            max: number(9),
        },
        value: text(1).unwrap_or_default(),
        context: text(4).unwrap_or_default(),
        source: text(5).unwrap_or_default(),
        pending_restart: text(6).as_deref() == Some("t"),
        boot_val: text(10),
        reset_val: text(11),
    })
}

/// One statement, its error on one line with the failing statement named.
async fn query(client: &Client, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    simple_rows(client, sql)
        .await
        .map_err(|e| anyhow::anyhow!("{}", one_line(&e.to_string())))
        .map_err(|e| e.context(format!("running `{sql}`")))
}

/// A server error on one line, without tokio-postgres' `db error: ERROR: ` prefix.
fn one_line(text: &str) -> String {
    let text = text.strip_prefix("db error: ").unwrap_or(text);
    let text = text.strip_prefix("ERROR: ").unwrap_or(text);
    text.replace('\n', "; ")
}

async fn read_state(
    client: &Client,
    request: &Request,
    ctx: &mut Context,
) -> anyhow::Result<State> {
    let mut state = State::default();
    for row in query(client, &settings_query(request.names())).await? {
        if let Some(cur) = current_from_row(&row) {
            state
                .settings
                .insert(cur.setting.name.to_ascii_lowercase(), cur);
        }
    }
    let names = request
        .names()
        .filter(|n| state.settings.contains_key(&n.to_ascii_lowercase()));
    match simple_rows(client, &files_query(names)).await {
        Ok(rows) => {
            state.files = Some(
                rows.iter()
                    .filter_map(|r| {
                        Some(FileEntry {
                            name: r.first().cloned().flatten()?,
                            value: r.get(1).cloned().flatten().unwrap_or_default(),
                            auto_conf: r.get(2).cloned().flatten().as_deref() == Some("t"),
                        })
                    })
                    .collect(),
            )
        }
        Err(e) => ctx.warn(format!(
            "pg_file_settings could not be read ({}): values are compared with the running ones, \
             so a value that waits for a restart is set again, and a failed change cannot be \
             undone",
            one_line(&e.to_string())
        )),
    }
    for cur in state.settings.values() {
        if cur.source == "command line" {
            ctx.warn(format!(
                "{} is set on the server's command line, which takes precedence over ALTER SYSTEM",
                cur.setting.name
            ));
        }
    }
    Ok(state)
}

/// What a real run did.
struct Applied {
    queries: Vec<String>,
    error: Option<String>,
    changed: bool,
}

/// Run the statements; on a refusal, undo the ones already run. Then reload when something
/// changed, and read `pending_restart` back.
async fn apply(client: &Client, items: &mut [Item], ctx: &mut Context) -> anyhow::Result<Applied> {
    let mut out = Applied {
        queries: Vec::new(),
        error: None,
        changed: false,
    };
    let loaded = query(client, "SELECT pg_conf_load_time()").await?;
    // Indexes of the items whose statement ran and stays in effect.
    let mut done: Vec<usize> = Vec::new();
    for i in 0..items.len() {
        let Some(statement) = items[i].statement.clone() else {
            continue;
        };
        out.queries.push(statement.clone());
        if let Err(e) = simple_rows(client, &statement).await {
            let mut msg = format!("{statement} failed: {}", one_line(&e.to_string()));
            let mut kept: Vec<usize> = Vec::new();
            for &prior in done.iter().rev() {
                let undone = match &items[prior].undo {
                    Some(undo) => {
                        out.queries.push(undo.clone());
                        simple_rows(client, undo)
                            .await
                            .map_err(|e| one_line(&e.to_string()))
                    }
                    None => Err("pg_file_settings was not readable".to_owned()),
                };
                if let Err(why) = undone {
                    msg.push_str(&format!(
                        "; {} could not be put back: {why}",
                        items[prior].name
                    ));
                    kept.push(prior);
                }
            }
            msg.push_str(match (done.is_empty(), kept.is_empty()) {
                (true, _) => "; nothing was changed",
                (false, true) => {
                    "; the settings already altered were put back, nothing was changed"
                }
                (false, false) => {
                    "; the configuration was reloaded with the settings that stay altered"
                }
            });
            out.error = Some(msg);
            done = kept;
            break;
        }
        done.push(i);
    }
    // Report what is in effect now: a statement not run, or undone, changed nothing.
    for (i, item) in items.iter_mut().enumerate() {
        if !done.contains(&i) {
            item.after.clone_from(&item.before);
            item.changed = false;
            item.pending_restart = item.pending_before;
        }
    }
    out.changed = !done.is_empty();
    if !out.changed {
        return Ok(out);
    }
    out.queries.push("SELECT pg_reload_conf()".to_owned());
    query(client, "SELECT pg_reload_conf()").await?;
    // The postmaster re-reads the files, then signals every backend, this one included: wait
    // until this session has re-read them before trusting pg_settings.
    let mut reloaded = false;
    for _ in 0..200 {
        if query(client, "SELECT pg_conf_load_time()").await? != loaded {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !reloaded {
        ctx.warn(
            "the server did not re-read its configuration within 10 s; \
             pending_restart may be stale",
        );
    }
    read_pending(client, items).await?;
    Ok(out)
}

/// Read each item's `pending_restart` back from `pg_settings`.
async fn read_pending(client: &Client, items: &mut [Item]) -> anyhow::Result<()> {
    let names = items.iter().map(|i| i.name.as_str());
    let rows = query(
        client,
        &format!(
            "SELECT lower(name), pending_restart FROM pg_settings WHERE lower(name) IN ({})",
            name_list(names)
        ),
    )
    .await?;
    for row in rows {
        let key = row.first().cloned().flatten().unwrap_or_default();
        if let Some(item) = items
            .iter_mut()
            .find(|i| i.name.to_ascii_lowercase() == key)
        {
            item.pending_restart = row.get(1).cloned().flatten().as_deref() == Some("t");
        }
    }
    Ok(())
}

/// `name = 'value'` lines, as in `postgresql.auto.conf`.
fn conf_text(items: &[Item], value: impl Fn(&Item) -> &str) -> String {
    items
        .iter()
        .map(|i| format!("{} = '{}'\n", i.name, value(i).replace('\'', "''")))
        .collect()
}

fn response(
    items: &[Item],
    queries: &[String],
    changed: bool,
    check_mode: bool,
    note: &str,
) -> Response {
    let pending: Vec<&str> = items
        .iter()
        .filter(|i| i.pending_restart)
        .map(|i| i.name.as_str())
        .collect();
    let altered: Vec<&str> = items
        .iter()
        .filter(|i| i.changed)
        .map(|i| i.name.as_str())
        .collect();
    let mut msg = if altered.is_empty() {
        "every setting already has the requested value".to_owned()
    } else {
        format!(
            "{} {}",
            if check_mode {
                "would change"
            } else {
                "changed"
            },
            altered.join(", ")
        )
    };
    if !pending.is_empty() {
        msg.push_str(&format!(
            "; a restart is required for {}",
            pending.join(", ")
        ));
    }
    msg.push_str(note);
    let settings: Map<String, serde_json::Value> = items
        .iter()
        .map(|i| (i.name.clone(), serde_json::to_value(i).unwrap_or_default()))
        .collect();
    Response::new()
        .changed(changed)
        .msg(msg)
        .field("settings", settings)
        .field("pending_restart", &pending)
        .field("restart_required", !pending.is_empty())
        .field("queries", queries)
        .diff(Diff {
            before: conf_text(items, |i| &i.before).into(),
            after: conf_text(items, |i| &i.after).into(),
            before_header: Some("PostgreSQL configuration (before)".to_owned()),
            after_header: Some("PostgreSQL configuration (after)".to_owned()),
        })
}

/// `restarted`, and `commands`: the restart command when it ran (in check mode, would run).
fn with_restart(response: Response, ran: Option<&Cmd>, restarted: bool) -> Response {
    let commands: Vec<String> = ran.iter().map(|c| c.display()).collect();
    response
        .field("restarted", restarted)
        .field("commands", commands)
}

/// Run the restart command, wait for the server to accept connections again, and read each
/// setting's `pending_restart` back: a restart after which a setting still waits for one failed.
async fn restart_server(cmd: &Cmd, login: &Login, items: &mut [Item]) -> anyhow::Result<()> {
    let waiting: Vec<String> = items
        .iter()
        .filter(|i| i.pending_restart)
        .map(|i| i.name.clone())
        .collect();
    // pg_ctl leaves the new postmaster holding its output: wait for the command, not for them.
    cmd.run_until_exit(Duration::from_secs(2)).map_err(|e| {
        anyhow::anyhow!(
            "restart_command: {e}; {} still wait for a restart",
            waiting.join(", ")
        )
    })?;
    let mut last = String::new();
    let mut client = None;
    for _ in 0..120 {
        match login.connect().await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(e) => last = one_line(&e.message),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let Some(client) = client else {
        anyhow::bail!(
            "restart_command: `{}` succeeded, but the server did not accept connections within \
             60 s: {last}",
            cmd.display()
        );
    };
    read_pending(&client, items).await?;
    let still: Vec<&str> = items
        .iter()
        .filter(|i| i.pending_restart)
        .map(|i| i.name.as_str())
        .collect();
    if !still.is_empty() {
        anyhow::bail!(
            "restart_command: `{}` succeeded, but {} still wait for a restart (did it restart \
             this server?)",
            cmd.display(),
            still.join(", ")
        );
    }
    Ok(())
}

/// The Ansible module.
pub struct PgAlterSystem;

impl Module for PgAlterSystem {
    type Args = Args;
    const NAME: &'static str = "pg_alter_system";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let request = Request::new(args.settings.as_ref(), args.reset.as_deref())
            .map_err(anyhow::Error::msg)?;
        let login = Login::new(&args.login, None)?;
        let restart = match args.restart_command.as_deref() {
            None => None,
            Some([]) => anyhow::bail!("restart_command: [] names no program"),
            Some([program, rest @ ..]) => Some(Cmd::new(program).args(rest)),
        };
        // Peer authentication wants the database user: a root module becomes that user first
        // (and the restart command runs as that user too).
        RunAs::become_option(args.become_user.as_deref())?;
        if request.items.is_empty() {
            return Ok(response(&[], &[], false, ctx.check_mode, ""));
        }
        postgres_access::block_on(async {
            let client = login
                .connect()
                .await
                .map_err(|e| anyhow::anyhow!("{}", one_line(&e.message)))?;
            let state = read_state(&client, &request, ctx).await?;
            let mut items = match plan(&request, &state) {
                Ok(items) => items,
                Err(errors) => anyhow::bail!("{}; nothing was changed", errors.join("; ")),
            };
            let restart = restart.as_ref();
            if ctx.check_mode {
                let queries: Vec<String> = items
                    .iter()
                    .filter_map(|i| i.statement.clone())
                    .chain(
                        items
                            .iter()
                            .any(|i| i.changed)
                            .then(|| "SELECT pg_reload_conf()".to_owned()),
                    )
                    .collect();
                // A restart it would run (its settings wait for one) is a change too.
                let restarts = restart.filter(|_| items.iter().any(|i| i.pending_restart));
                let changed = !queries.is_empty() || restarts.is_some();
                let note = restarts.map_or(String::new(), |c| {
                    format!("; would restart PostgreSQL with `{}`", c.display())
                });
                let result = response(&items, &queries, changed, true, &note);
                return Ok(with_restart(result, restarts, restarts.is_some()));
            }
            let applied = apply(&client, &mut items, ctx).await?;
            if let Some(error) = applied.error {
                let result = response(&items, &applied.queries, applied.changed, false, "");
                return Ok(with_restart(result.fail(error), None, false));
            }
            let Some(cmd) = restart.filter(|_| items.iter().any(|i| i.pending_restart)) else {
                let result = response(&items, &applied.queries, applied.changed, false, "");
                return Ok(with_restart(result, None, false));
            };
            drop(client);
            let restarted = restart_server(cmd, &login, &mut items).await;
            let note = format!("; restarted PostgreSQL with `{}`", cmd.display());
            let result = response(&items, &applied.queries, true, false, &note);
            Ok(match restarted {
                Ok(()) => with_restart(result, Some(cmd), true),
                Err(e) => with_restart(result.fail(format!("{e:#}")), Some(cmd), false),
            })
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(settings: serde_json::Value, reset: &[&str]) -> Result<Request, String> {
        let reset: Vec<String> = reset.iter().map(|s| (*s).to_owned()).collect();
        Request::new(settings.as_object(), Some(&reset))
    }

    fn current(
        name: &str,
        vartype: &str,
        unit: Option<&str>,
        value: &str,
        context: &str,
    ) -> Current {
        Current {
            setting: Setting {
                name: name.into(),
                vartype: VarType::parse(vartype).unwrap(),
                unit: unit.and_then(Unit::parse),
                enumvals: if name == "archive_mode" {
                    vec!["always".into(), "on".into(), "off".into()]
                } else {
                    Vec::new()
                },
                min: Some(0.0),
                max: Some(1073741823.0),
            },
            value: value.into(),
            context: context.into(),
            source: "default".into(),
            pending_restart: false,
            boot_val: Some(value.into()),
            reset_val: Some(value.into()),
        }
    }

    fn state(files: &[(&str, &str, bool)]) -> State {
        let mut s = State::default();
        for c in [
            current("archive_mode", "enum", None, "off", "postmaster"),
            current("archive_timeout", "integer", Some("s"), "0", "sighup"),
            current("archive_command", "string", None, "(disabled)", "sighup"),
            current("server_version", "string", None, "15.20", "internal"),
        ] {
            s.settings.insert(c.setting.name.clone(), c);
        }
        s.settings.get_mut("archive_command").unwrap().boot_val = Some(String::new());
        s.settings.get_mut("archive_command").unwrap().reset_val = Some(String::new());
        s.files = Some(
            files
                .iter()
                .map(|(n, v, a)| FileEntry {
                    name: (*n).into(),
                    value: (*v).into(),
                    auto_conf: *a,
                })
                .collect(),
        );
        s
    }

    #[test]
    fn request_values_become_text_and_bad_ones_are_refused() {
        let r = request(
            json!({"archive_mode": true, "archive_timeout": 60, "archive_command": "x"}),
            &["work_mem"],
        )
        .unwrap();
        assert_eq!(
            r.items,
            vec![
                ("archive_mode".into(), Action::Set("on".into())),
                ("archive_timeout".into(), Action::Set("60".into())),
                ("archive_command".into(), Action::Set("x".into())),
                ("work_mem".into(), Action::Reset),
            ]
        );
        let err = |s, r: &[&str]| request(s, r).unwrap_err();
        assert_eq!(
            err(json!({"a; DROP": 1}), &[]),
            "settings: 'a; DROP' is not a valid setting name"
        );
        assert_eq!(
            err(json!({"a": "x\0y"}), &[]),
            "settings: the value of a contains a NUL character"
        );
        assert!(err(json!({"a": "x\ny"}), &[]).contains("line break"));
        assert_eq!(
            err(json!({"a": 1}), &["A"]),
            "'A' is in both settings and reset"
        );
        assert_eq!(err(json!({}), &["a", "a"]), "reset: 'a' is given twice");
        assert!(
            err(json!({"a": [1]}), &[]).starts_with("settings: the value of a must be a string")
        );
        assert_eq!(
            Request::new(None, None).unwrap_err(),
            "one of the following is required: settings, reset"
        );
        assert!(valid_name("pg_stat_statements.max") && !valid_name("1abc") && !valid_name("a."));
    }

    #[test]
    fn equal_value_in_another_unit_is_not_a_change() {
        let s = state(&[("archive_timeout", "60", true)]);
        let items = plan(
            &request(json!({"archive_timeout": "1min"}), &[]).unwrap(),
            &s,
        )
        .unwrap();
        assert!(!items[0].changed && items[0].statement.is_none());
        assert_eq!(
            (items[0].before.as_str(), items[0].after.as_str()),
            ("1min", "1min")
        );
    }

    #[test]
    fn a_value_waiting_for_a_restart_counts_as_set() {
        let s = state(&[("archive_mode", "on", true)]);
        let items = plan(&request(json!({"archive_mode": "ON"}), &[]).unwrap(), &s).unwrap();
        assert!(!items[0].changed);
        assert!(items[0].pending_restart, "running is still off");
        let fresh = plan(
            &request(json!({"archive_mode": "on"}), &[]).unwrap(),
            &state(&[]),
        )
        .unwrap();
        assert!(fresh[0].changed && fresh[0].pending_restart);
        assert_eq!(
            fresh[0].statement.as_deref(),
            Some("ALTER SYSTEM SET \"archive_mode\" = 'on'")
        );
        assert_eq!(
            fresh[0].undo.as_deref(),
            Some("ALTER SYSTEM RESET \"archive_mode\"")
        );
    }

    #[test]
    fn archive_command_is_compared_with_the_configured_command_not_disabled() {
        let s = state(&[(
            "archive_command",
            "pgbackrest --stanza=main archive-push %p",
            true,
        )]);
        let r = request(
            json!({"archive_command": "pgbackrest --stanza=main archive-push %p"}),
            &[],
        )
        .unwrap();
        assert!(!plan(&r, &s).unwrap()[0].changed);
        let items = plan(&r, &state(&[])).unwrap();
        assert_eq!(
            (
                items[0].before.as_str(),
                items[0].changed,
                items[0].pending_restart
            ),
            ("", true, false)
        );
        assert_eq!(
            items[0].statement.as_deref(),
            Some(
                "ALTER SYSTEM SET \"archive_command\" = 'pgbackrest --stanza=main archive-push %p'"
            )
        );
    }

    #[test]
    fn reset_only_what_alter_system_wrote() {
        let s = state(&[
            ("archive_timeout", "30", false),
            ("archive_timeout", "2min", true),
        ]);
        let items = plan(&request(json!({}), &["archive_timeout"]).unwrap(), &s).unwrap();
        assert!(items[0].changed);
        assert_eq!(
            (items[0].before.as_str(), items[0].after.as_str()),
            ("2min", "30s")
        );
        assert_eq!(
            items[0].undo.as_deref(),
            Some("ALTER SYSTEM SET \"archive_timeout\" = '2min'")
        );
        let s = state(&[("archive_timeout", "30", false)]);
        assert!(!plan(&request(json!({}), &["archive_timeout"]).unwrap(), &s).unwrap()[0].changed);
    }

    #[test]
    fn every_refusal_is_reported_at_once() {
        let r = request(
            json!({
                "archive_timeout": "soon",
                "no_such": 1,
                "server_version": "16",
                "archive_mode": "on"
            }),
            &[],
        )
        .unwrap();
        let errors = plan(&r, &state(&[])).unwrap_err();
        assert_eq!(
            errors,
            vec![
                "settings: invalid value for parameter \"archive_timeout\": \"soon\"",
                "settings: unrecognized configuration parameter \"no_such\"",
                "settings: parameter \"server_version\" cannot be changed",
            ]
        );
    }

    #[test]
    fn without_file_information_the_running_value_is_compared() {
        let mut s = state(&[]);
        s.files = None;
        let items = plan(
            &request(json!({"archive_timeout": "0"}), &["archive_mode"]).unwrap(),
            &s,
        )
        .unwrap();
        assert!(!items[0].changed);
        assert!(items[1].changed, "reset is tried when auto.conf is unknown");
        assert!(items[1].undo.is_none());
    }

    #[test]
    fn diff_text_looks_like_auto_conf() {
        let items = plan(
            &request(
                json!({"archive_command": "it's", "archive_timeout": 60}),
                &[],
            )
            .unwrap(),
            &state(&[]),
        )
        .unwrap();
        assert_eq!(
            conf_text(&items, |i| &i.before),
            "archive_command = ''\narchive_timeout = '0'\n"
        );
        assert_eq!(
            conf_text(&items, |i| &i.after),
            "archive_command = 'it''s'\narchive_timeout = '1min'\n"
        );
    }
}
