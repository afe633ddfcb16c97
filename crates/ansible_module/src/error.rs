//! The error of this crate's helpers: users ([`crate::process::RunAs`]) and file writes
//! ([`crate::fs`]). Its `Display` is the message a module shows.
//!
//! A program that fails has its own [`crate::process::CmdError`]; the option machinery
//! ([`crate::options`], [`crate::spec`]) keeps its `String` errors.

use std::fmt;

/// What can go wrong in this crate's process and file helpers.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read, created, written, synced, renamed or given its attributes.
    Io {
        /// What was being done, for example `renaming /etc/x.tmp to /etc/x`.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A system call made through nix failed (a user lookup, a switch of user, a chown).
    Sys {
        /// What was being done, for example `looking up user 'postgres'`.
        what: String,
        /// The cause.
        source: nix::Error,
    },
    /// A user or group that does not exist, or that this process cannot become.
    User(String),
    /// An argument the helper cannot work with (a path that names no file).
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Sys { what, source } => write!(f, "{what}: {source}"),
            Error::User(m) | Error::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    /// The same error, its message preceded by `prefix: ` (the option it came from).
    pub(crate) fn prefixed(self, prefix: &str) -> Error {
        match self {
            Error::Io { what, source } => Error::Io {
                what: format!("{prefix}: {what}"),
                source,
            },
            Error::Sys { what, source } => Error::Sys {
                what: format!("{prefix}: {what}"),
                source,
            },
            Error::User(m) => Error::User(format!("{prefix}: {m}")),
            Error::Invalid(m) => Error::Invalid(format!("{prefix}: {m}")),
        }
    }
}
