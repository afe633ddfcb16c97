//! PostgreSQL access for the modules, over tokio-postgres.
//!
//! The login options follow community.postgresql (`login_user`, `login_password`, `login_host`,
//! `login_unix_socket`, `login_port`, `login_db`, `connect_timeout`) so that an operator's
//! `module_defaults` carry over. When the port or socket directory is not given and a data
//! directory is known, they are read from its `postmaster.pid`, which is what the running server
//! itself uses. TLS is not built in: these modules run on the database host and connect over the
//! unix socket or loopback.

use ansible_module::Secret;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use tokio_postgres::Client;

/// What can go wrong in this crate, short of connecting (that is [`ConnectError`]).
#[derive(Debug)]
pub enum Error {
    /// A login option out of range; the message names it and the value.
    Invalid(String),
    /// A query failed (the server's error and its causes on one line), or did not return the
    /// one row asked for.
    Query(String),
    /// The async runtime could not be started.
    Runtime(std::io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Invalid(m) | Error::Query(m) => f.write_str(m),
            Error::Runtime(e) => write!(f, "starting the async runtime: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// The socket directory Debian's PostgreSQL packages use.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";
/// PostgreSQL's default port.
pub const DEFAULT_PORT: u16 = 5432;

ansible_module::options! {
    /// The community.postgresql-style login options, flattened into a module's options
    /// (`flatten { login: LoginArgs }`).
    pub struct LoginArgs {
        /// `login_user`
        login_user: String = str().default("postgres").aliases(&["login"]),
        /// `login_password`
        login_password: Option<Secret> = str().no_log(),
        /// `login_host`
        login_host: Option<String> = str().aliases(&["host"]),
        /// `login_unix_socket`
        login_unix_socket: Option<String> = path().aliases(&["unix_socket"]),
        /// `login_port`
        login_port: Option<i64> = int().aliases(&["port"]),
        /// `login_db`
        login_db: String = str().default("postgres").aliases(&["db", "database"]),
        /// `connect_timeout`
        connect_timeout: i64 = int().default(10),
    }
}

/// Where and how to connect, resolved.
#[derive(Debug, Clone)]
pub struct Login {
    user: String,
    password: Option<Secret>,
    /// A TCP host, or a socket directory (starting with `/`).
    host: String,
    port: u16,
    dbname: String,
    timeout: Duration,
}

/// What `postmaster.pid` says about a running server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Postmaster {
    /// The postmaster's pid.
    pub pid: u32,
    /// Its port.
    pub port: u16,
    /// Its first unix socket directory, if it has one.
    pub socket_dir: Option<PathBuf>,
}

impl Postmaster {
    /// Read `PGDATA/postmaster.pid`; `None` when the server is not running (or the file is
    /// unreadable).
    pub fn read(pgdata: &Path) -> Option<Postmaster> {
        Self::parse(&std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?)
    }

    /// Parse the file's lines: pid, data dir, start time, port, socket dir, listen address, ...
    pub fn parse(text: &str) -> Option<Postmaster> {
        let lines: Vec<&str> = text.lines().collect();
        let pid = lines.first()?.trim().parse().ok()?;
        let port = lines.get(3)?.trim().parse().ok()?;
        let socket_dir = lines
            .get(4)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        Some(Postmaster {
            pid,
            port,
            socket_dir,
        })
    }
}

/// The longest `connect_timeout` taken (a day): a larger one is a typo, not a wish.
pub const MAX_CONNECT_TIMEOUT: i64 = 86_400;

impl Login {
    /// Resolve the options; `postmaster` fills in port and socket when they were not given.
    pub fn new(args: &LoginArgs, postmaster: Option<&Postmaster>) -> Result<Login, Error> {
        let port = match args.login_port {
            Some(p) => u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::Invalid(format!("login_port must be between 1 and 65535, got {p}"))
            })?,
            None => postmaster.map_or(DEFAULT_PORT, |pm| pm.port),
        };
        if !(1..=MAX_CONNECT_TIMEOUT).contains(&args.connect_timeout) {
            return Err(Error::Invalid(format!(
                "connect_timeout must be between 1 and {MAX_CONNECT_TIMEOUT} seconds, got {}",
                args.connect_timeout
            )));
        }
        // A control character (a NUL, a newline) is in no host, socket, user or database name;
        // refused here, it cannot reach a connection string or a message as something else.
        for (name, value) in [
            ("login_host", args.login_host.as_deref()),
            ("login_unix_socket", args.login_unix_socket.as_deref()),
            ("login_user", Some(args.login_user.as_str())),
            ("login_db", Some(args.login_db.as_str())),
        ] {
            if let Some(v) = value.filter(|v| v.chars().any(char::is_control)) {
                return Err(Error::Invalid(format!(
                    "{name}: '{}' contains a control character",
                    v.escape_default()
                )));
            }
        }
        let host = match (
            args.login_host.as_deref().filter(|h| !h.is_empty()),
            args.login_unix_socket.as_deref().filter(|s| !s.is_empty()),
        ) {
            (Some(host), _) => host.to_owned(),
            (None, Some(socket)) => socket.to_owned(),
            (None, None) => postmaster.and_then(|pm| pm.socket_dir.clone()).map_or_else(
                || DEFAULT_SOCKET_DIR.to_owned(),
                |d| d.to_string_lossy().into_owned(),
            ),
        };
        Ok(Login {
            user: args.login_user.clone(),
            password: args
                .login_password
                .clone()
                .filter(|p| !p.expose().is_empty()),
            host,
            port,
            dbname: args.login_db.clone(),
            timeout: Duration::from_secs(args.connect_timeout.unsigned_abs()),
        })
    }

    /// `user@host:port/db` (a socket directory shown as the host), for messages.
    pub fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }

    /// Connect; the connection is driven on the current runtime.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let mut config = tokio_postgres::Config::new();
        config
            .user(&self.user)
            .dbname(&self.dbname)
            .port(self.port)
            .connect_timeout(self.timeout)
            .application_name("veza.pgbackrest");
        if self.host.starts_with('/') {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        if let Some(password) = &self.password {
            config.password(password.expose());
        }
        let connect = config.connect(tokio_postgres::NoTls);
        let (client, connection) = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| ConnectError {
                message: format!(
                    "connecting to PostgreSQL at {}: timed out after {}s",
                    self.describe(),
                    self.timeout.as_secs()
                ),
                db_error: false,
            })?
            .map_err(|e| ConnectError {
                message: format!(
                    "connecting to PostgreSQL at {}: {}",
                    self.describe(),
                    error_chain(&e)
                ),
                db_error: e.as_db_error().is_some(),
            })?;
        tokio::spawn(async move {
            // Errors surface on the client's next query; nothing to report here.
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// Why a connection failed.
#[derive(Debug, Clone)]
pub struct ConnectError {
    /// What happened, with the target.
    pub message: String,
    /// The server answered with an error (authentication, missing database), as opposed to
    /// being unreachable (refused, no socket, timeout).
    pub db_error: bool,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnectError {}

/// An error and its sources on one line, as `{:#}` would show them.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Run one statement with the simple query protocol and return its single row, values as text
/// (`None` for SQL NULL). Simple queries need no prepared statement and no type lookups.
pub async fn simple_row(client: &Client, sql: &str) -> Result<Vec<Option<String>>, Error> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| Error::Query(error_chain(&e)))?;
    let mut rows = messages.iter().filter_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
        _ => None,
    });
    let row = rows
        .next()
        .ok_or_else(|| Error::Query("the query returned no row".to_owned()))?;
    if rows.next().is_some() {
        return Err(Error::Query(
            "the query returned more than one row".to_owned(),
        ));
    }
    Ok((0..row.len())
        .map(|i| row.get(i).map(str::to_owned))
        .collect())
}

/// Run one statement with the simple query protocol and return all its rows, values as text
/// (`None` for SQL NULL); a statement without rows (`ALTER SYSTEM ...`) gives an empty list.
pub async fn simple_rows(client: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, Error> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| Error::Query(error_chain(&e)))?;
    Ok(messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// A string as an SQL literal: `'...'` with single quotes doubled, or `E'...'` with backslashes
/// doubled too when it holds one, which reads the same whatever `standard_conforming_strings` is.
/// A NUL cannot be part of a PostgreSQL string: the caller refuses it first.
pub fn quote_literal(value: &str) -> String {
    let quoted = value.replace('\'', "''");
    if value.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// A name as an SQL identifier: always double-quoted (so that no keyword and no upper-case letter
/// can change its meaning), double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Run a future to completion on a fresh current-thread runtime.
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    Ok(runtime.block_on(future))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(port: Option<i64>, host: Option<&str>, socket: Option<&str>) -> LoginArgs {
        LoginArgs {
            login_user: "postgres".into(),
            login_password: None,
            login_host: host.map(str::to_owned),
            login_unix_socket: socket.map(str::to_owned),
            login_port: port,
            login_db: "postgres".into(),
            connect_timeout: 5,
        }
    }

    #[test]
    fn postmaster_pid_is_parsed() {
        let text = "4242\n/srv/pg/node1\n1732400000\n6001\n/tmp/lab\n\
            127.0.0.1\n  6001001   1234\nready   \n";
        assert_eq!(
            Postmaster::parse(text),
            Some(Postmaster {
                pid: 4242,
                port: 6001,
                socket_dir: Some("/tmp/lab".into())
            })
        );
        let no_socket = "1\n/d\n0\n5433\n\n*\n";
        assert_eq!(Postmaster::parse(no_socket).unwrap().socket_dir, None);
        assert_eq!(Postmaster::parse("garbage"), None);
    }

    #[test]
    fn explicit_options_win_over_postmaster_pid() {
        let pm = Postmaster {
            pid: 1,
            port: 6001,
            socket_dir: Some("/tmp/lab".into()),
        };
        assert_eq!(
            Login::new(&args(None, None, None), Some(&pm))
                .unwrap()
                .describe(),
            "postgres@/tmp/lab:6001/postgres"
        );
        assert_eq!(
            Login::new(&args(Some(7000), Some("127.0.0.1"), None), Some(&pm))
                .unwrap()
                .describe(),
            "postgres@127.0.0.1:7000/postgres"
        );
        assert_eq!(
            Login::new(&args(None, None, Some("/run/x")), None)
                .unwrap()
                .describe(),
            "postgres@/run/x:5432/postgres"
        );
        assert_eq!(
            Login::new(&args(None, None, None), None)
                .unwrap()
                .describe(),
            "postgres@/var/run/postgresql:5432/postgres"
        );
    }

    #[test]
    fn literals_and_identifiers_are_quoted() {
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b'c"), r"E'a\\b''c'");
        assert_eq!(quote_literal(""), "''");
        assert_eq!(quote_ident("archive_mode"), "\"archive_mode\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn out_of_range_port_names_the_option() {
        let err = Login::new(&args(Some(70000), None, None), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "login_port must be between 1 and 65535, got 70000"
        );
    }

    #[test]
    fn control_characters_and_extreme_timeouts_are_refused_naming_the_option() {
        let err = Login::new(&args(None, Some("a\0b"), None), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "login_host: 'a\\u{0}b' contains a control character"
        );
        let err = Login::new(&args(None, None, Some("/tmp\nx")), None).unwrap_err();
        assert!(err.to_string().starts_with("login_unix_socket: '/tmp\\nx'"));
        for timeout in [0, -1, 86_401, i64::MAX] {
            let mut a = args(None, None, None);
            a.connect_timeout = timeout;
            let err = Login::new(&a, None).unwrap_err().to_string();
            assert!(err.contains(&format!("got {timeout}")), "{err}");
        }
    }
}
