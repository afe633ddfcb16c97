//! pgBackRest command lines, built one way: the configuration file, the stanza, console logging
//! chosen by the caller and errors on stderr, optional timeouts and options, then the command.
//! Secrets never go here (pgBackRest refuses them on a command line, error 031): they stay in the
//! configuration file or the environment.

use ansible_module::process::Cmd;
use std::path::Path;

/// A pgBackRest invocation being built.
#[derive(Debug, Clone)]
pub struct Pgbackrest {
    argv: Vec<String>,
    after: Vec<String>,
}

impl Pgbackrest {
    /// `PROGRAM --config=CONFIG --stanza=STANZA`, with console logging at `console` (`off`,
    /// `warn`, `info`, `detail`) and warnings and errors on stderr.
    pub fn new(program: &str, config: &Path, stanza: &str, console: &str) -> Self {
        Pgbackrest {
            argv: vec![
                program.to_owned(),
                format!("--config={}", config.display()),
                format!("--stanza={stanza}"),
                format!("--log-level-console={console}"),
                "--log-level-stderr=warn".to_owned(),
            ],
            after: Vec::new(),
        }
    }

    /// No `--stanza` (`info` of every stanza of the repository).
    pub fn without_stanza(mut self) -> Self {
        self.argv.retain(|a| !a.starts_with("--stanza="));
        self
    }

    /// No log file (a drill's throwaway runs).
    pub fn no_log_file(self) -> Self {
        self.opt("--log-level-file=off")
    }

    /// `--io-timeout` and `--db-timeout`, when given.
    pub fn timeouts(mut self, io: Option<i64>, db: Option<i64>) -> Self {
        if let Some(t) = io {
            self.argv.push(format!("--io-timeout={t}"));
        }
        if let Some(t) = db {
            self.argv.push(format!("--db-timeout={t}"));
        }
        self
    }

    /// One more option (`--set=LABEL`).
    pub fn opt(mut self, option: impl Into<String>) -> Self {
        self.argv.push(option.into());
        self
    }

    /// An argument of the command itself, after it (`repo-ls PATH`).
    pub fn after(mut self, arg: impl Into<String>) -> Self {
        self.after.push(arg.into());
        self
    }

    /// The command (`info`, `restore`, ...) follows the options, then its own arguments: the
    /// argument vector.
    pub fn argv(mut self, command: &str) -> Vec<String> {
        self.argv.push(command.to_owned());
        self.argv.append(&mut self.after);
        self.argv
    }

    /// The command as a [`Cmd`] run on this host.
    pub fn cmd(self, command: &str) -> Cmd {
        let argv = self.argv(command);
        Cmd::new(&argv[0]).args(&argv[1..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_comes_last_after_config_stanza_and_logging() {
        let argv = Pgbackrest::new("pgbackrest", Path::new("/c"), "main", "off")
            .no_log_file()
            .timeouts(Some(5), None)
            .opt("--output=json")
            .after("x")
            .argv("info");
        assert_eq!(
            argv,
            [
                "pgbackrest",
                "--config=/c",
                "--stanza=main",
                "--log-level-console=off",
                "--log-level-stderr=warn",
                "--log-level-file=off",
                "--io-timeout=5",
                "--output=json",
                "info",
                "x"
            ]
        );
    }
}
