//! Running external programs the one way modules do it.
//!
//! `LC_ALL=C` so that output can be parsed, stdout and stderr captured, an error that shows the
//! exit code and the trimmed stderr (secrets scrubbed), optionally as another user (root drops to
//! that user with nix before exec). Secrets go by environment only, never on the command line:
//! [`Cmd::secret_env`] registers the value for scrubbing as well.

use crate::Error;
use nix::unistd::{Gid, Group, Uid, User};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A user to run as: resolved once, applied in the child before exec.
#[derive(Debug, Clone)]
pub struct RunAs {
    /// The user's name.
    pub name: String,
    /// Its uid.
    pub uid: Uid,
    /// Its primary gid.
    pub gid: Gid,
    /// Its home directory.
    pub home: PathBuf,
    groups: Vec<Gid>,
}

impl RunAs {
    /// Look a user up by name (with its supplementary groups).
    pub fn user(name: &str) -> Result<RunAs, Error> {
        let user = User::from_name(name)
            .map_err(Error::sys(format!("looking up user '{name}'")))?
            .ok_or_else(|| Error::User(format!("user '{name}' does not exist")))?;
        Ok(Self::from_user(user))
    }

    /// The owner of a path (for example a PostgreSQL data directory).
    pub fn owner_of(path: &std::path::Path) -> Result<RunAs, Error> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).map_err(Error::io(format!(
            "reading the owner of {}",
            path.display()
        )))?;
        let user = User::from_uid(Uid::from_raw(meta.uid()))
            .map_err(Error::sys(format!("looking up uid {}", meta.uid())))?
            .ok_or_else(|| {
                Error::User(format!(
                    "the owner of {} (uid {}) has no user entry",
                    path.display(),
                    meta.uid()
                ))
            })?;
        Ok(Self::from_user(user))
    }

    fn from_user(user: User) -> RunAs {
        let groups = std::ffi::CString::new(user.name.clone())
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid]);
        RunAs {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            groups,
        }
    }

    /// The `become_user` option of a module: when the module runs as root, become that user for
    /// the rest of the run. `None` or empty keeps the current user.
    pub fn become_option(user: Option<&str>) -> Result<(), Error> {
        match user.filter(|u| !u.is_empty()) {
            Some(name) => RunAs::user(name)
                .and_then(|u| u.become_user())
                .map_err(|e| e.prefixed("become_user")),
            None => Ok(()),
        }
    }

    /// Whether switching is needed (we are root and the user is another one).
    pub fn needs_switch(&self) -> bool {
        Uid::effective() != self.uid
    }

    /// Make the current process this user, for good (before any work, while single-threaded).
    /// Does nothing when the process already is that user; fails when it is another non-root user.
    pub fn become_user(&self) -> Result<(), Error> {
        if !self.needs_switch() {
            return Ok(());
        }
        if !Uid::effective().is_root() {
            return Err(Error::User(format!(
                "cannot switch to user '{}': the module runs as uid {}, not root",
                self.name,
                Uid::effective()
            )));
        }
        self.apply()
            .map_err(Error::sys(format!("switching to user '{}'", self.name)))?;
        std::env::set_var("HOME", &self.home);
        std::env::set_var("USER", &self.name);
        std::env::set_var("LOGNAME", &self.name);
        Ok(())
    }

    fn apply(&self) -> nix::Result<()> {
        nix::unistd::setgroups(&self.groups)?;
        nix::unistd::setgid(self.gid)?;
        nix::unistd::setuid(self.uid)
    }

    /// The user's primary group name.
    pub fn group_name(&self) -> Option<String> {
        Group::from_gid(self.gid).ok().flatten().map(|g| g.name)
    }
}

/// A program to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    run_as: Option<RunAs>,
    cwd: Option<PathBuf>,
}

/// What a finished program left.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a program did not succeed.
#[derive(Debug)]
pub enum CmdError {
    /// It could not be started.
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran and exited non-zero (or was killed).
    Failed {
        /// The command line.
        command: String,
        /// What it left.
        output: Output,
    },
}

impl CmdError {
    /// The exit code, when it ran.
    pub fn code(&self) -> Option<i32> {
        match self {
            CmdError::Failed { output, .. } => output.code,
            CmdError::Spawn { .. } => None,
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CmdError::Spawn { command, source } => write!(f, "could not run `{command}`: {source}"),
            CmdError::Failed { command, output } => {
                match output.code {
                    Some(code) => write!(f, "`{command}` exited with code {code}")?,
                    None => write!(f, "`{command}` was killed by a signal")?,
                }
                let detail = if output.stderr.trim().is_empty() {
                    output.stdout.trim()
                } else {
                    output.stderr.trim()
                };
                if !detail.is_empty() {
                    write!(f, ": {}", crate::scrub_str(&tail(detail, 2000)))?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CmdError {}

/// The last `max` bytes of `text`, on a character boundary.
fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

impl Cmd {
    /// A program (found on PATH unless absolute).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
            run_as: None,
            cwd: None,
        }
    }
    /// Add one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }
    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    /// Set an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }
    /// Pass a secret by environment; it is masked in every output from then on.
    pub fn secret_env(self, key: impl AsRef<OsStr>, secret: &crate::Secret) -> Self {
        crate::register_secret(secret.expose());
        self.env(key, secret.expose())
    }
    /// Feed this to stdin (otherwise stdin is /dev/null).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }
    /// Run as this user (when we are root and it is another user).
    pub fn run_as(mut self, user: Option<&RunAs>) -> Self {
        self.run_as = user.filter(|u| u.needs_switch()).cloned();
        self
    }
    /// Working directory.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// The command line as it would be shown (no environment, so no secrets).
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(self.args.iter())
            .map(|a| quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run and return what it left, whatever its exit code.
    pub fn output(&self) -> Result<Output, CmdError> {
        let spawn_err = |source| self.spawn_error(source);
        let mut child = self.command().spawn().map_err(spawn_err)?;
        self.feed(&mut child);
        let out = child.wait_with_output().map_err(spawn_err)?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Run, require exit code 0, and return once the program itself has exited, with what it
    /// wrote until then (and for at most `grace` after). For a program that leaves a daemon
    /// behind holding its stdout and stderr (`pg_ctl start`, `pg_ctl restart`): [`Cmd::run`]
    /// would wait for the daemon to close them, forever.
    pub fn run_until_exit(&self, grace: std::time::Duration) -> Result<Output, CmdError> {
        let spawn_err = |source| self.spawn_error(source);
        let mut child = self.command().spawn().map_err(spawn_err)?;
        self.feed(&mut child);
        let (tx, rx) = std::sync::mpsc::channel();
        let collected: Vec<_> = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .map(|pipe| {
            let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            if let Some(mut pipe) = pipe {
                let (buf, tx) = (buf.clone(), tx.clone());
                std::thread::spawn(move || {
                    let mut chunk = [0u8; 4096];
                    while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                        if let Ok(mut b) = buf.lock() {
                            b.extend_from_slice(&chunk[..n]);
                        }
                    }
                    let _ = tx.send(());
                });
            } else {
                let _ = tx.send(());
            }
            buf
        })
        .collect();
        let status = child.wait().map_err(spawn_err)?;
        // Each reader ends when every holder of its pipe has closed it; a daemon never does.
        let deadline = std::time::Instant::now() + grace;
        for _ in 0..collected.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if rx.recv_timeout(left).is_err() {
                break;
            }
        }
        let text = |i: usize| {
            collected[i]
                .lock()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        self.require_success(Output {
            code: status.code(),
            stdout: text(0),
            stderr: text(1),
        })
    }

    fn spawn_error(&self, source: std::io::Error) -> CmdError {
        CmdError::Spawn {
            command: self.display(),
            source,
        }
    }

    /// Write the given stdin, if any, and close it.
    fn feed(&self, child: &mut std::process::Child) {
        if let Some(data) = &self.stdin {
            if let Some(mut pipe) = child.stdin.take() {
                // A program that exits without reading all of stdin is not our error here.
                let _ = pipe.write_all(data);
            }
        }
    }

    /// The `Command` to spawn: arguments, environment, user, working directory, piped output.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env("LC_ALL", "C")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        for (k, v) in &self.env {
            command.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            command.current_dir(dir);
        }
        if let Some(user) = self.run_as.clone() {
            command
                .env("HOME", &user.home)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
            if self.cwd.is_none() {
                // Root's cwd is often unreadable to the user; some programs (pg_ctl) stat it.
                command.current_dir("/");
            }
            use std::os::unix::process::CommandExt as _;
            #[allow(unsafe_code)]
            // SAFETY: the closure runs in the forked child before exec and only makes the
            // async-signal-safe setgroups/setgid/setuid system calls on values resolved beforehand.
            unsafe {
                command.pre_exec(move || user.apply().map_err(std::io::Error::from));
            }
        }
        command
    }

    /// Run and require exit code 0.
    pub fn run(&self) -> Result<Output, CmdError> {
        self.require_success(self.output()?)
    }

    /// `output` when its exit code is 0, a [`CmdError::Failed`] otherwise.
    fn require_success(&self, output: Output) -> Result<Output, CmdError> {
        if output.success() {
            Ok(output)
        } else {
            Err(CmdError::Failed {
                command: self.display(),
                output,
            })
        }
    }
}

/// Shell-style quoting for display only.
fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_with_c_locale() {
        let out = Cmd::new("sh")
            .args(["-c", "echo \"$LC_ALL\"; echo err >&2"])
            .run()
            .unwrap();
        assert_eq!(out.stdout, "C\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[test]
    fn run_until_exit_returns_while_a_daemon_it_left_holds_the_output() {
        // The daemon (sleep) keeps stdout and stderr open for 30 s after sh exits.
        let started = std::time::Instant::now();
        let out = Cmd::new("sh")
            .args(["-c", "echo started; echo warned >&2; sleep 30 &"])
            .run_until_exit(std::time::Duration::from_millis(300))
            .unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("started\n", "warned\n")
        );
        let err = Cmd::new("sh")
            .args(["-c", "echo 'could not start server' >&2; sleep 30 & exit 1"])
            .run_until_exit(std::time::Duration::from_millis(300))
            .unwrap_err();
        assert_eq!(err.code(), Some(1));
        assert!(
            err.to_string().ends_with(": could not start server"),
            "{err}"
        );
    }

    #[test]
    fn failure_shows_code_and_trimmed_stderr() {
        let err = Cmd::new("sh")
            .args(["-c", "echo '  boom happened  ' >&2; exit 56"])
            .run()
            .unwrap_err();
        assert_eq!(err.code(), Some(56));
        assert_eq!(
            err.to_string(),
            "`sh -c 'echo '\\''  boom happened  '\\'' >&2; exit 56'` exited with code 56: \
             boom happened"
        );
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = Cmd::new("/nonexistent/prog").run().unwrap_err();
        assert!(matches!(err, CmdError::Spawn { .. }));
        assert!(
            err.to_string()
                .starts_with("could not run `/nonexistent/prog`"),
            "{err}"
        );
    }

    #[test]
    fn secret_env_reaches_the_program_but_not_errors() {
        let secret = crate::Secret::new("env-canary-77a1");
        let cmd = Cmd::new("sh")
            .args(["-c", "echo \"got $TOKEN\" >&2; exit 3"])
            .secret_env("TOKEN", &secret);
        assert!(!cmd.display().contains("env-canary-77a1"));
        let err = cmd.run().unwrap_err();
        assert_eq!(err.to_string().rsplit(": ").next(), Some("got ********"));
    }

    #[test]
    fn stdin_is_fed() {
        let out = Cmd::new("cat").stdin("hello").run().unwrap();
        assert_eq!(out.stdout, "hello");
    }

    #[test]
    fn runs_as_another_user_when_root() {
        if !Uid::effective().is_root() {
            return; // Switching users needs root; the test suite runs as root (README).
        }
        let nobody = RunAs::user("nobody").unwrap();
        let out = Cmd::new("sh")
            .args(["-c", "id -u; id -G; echo $HOME"])
            .run_as(Some(&nobody))
            .run()
            .unwrap();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], nobody.uid.to_string());
        assert!(
            !lines[1].split(' ').any(|g| g == "0"),
            "root group kept: {}",
            lines[1]
        );
        assert_eq!(lines[2], nobody.home.to_string_lossy());
    }
}
