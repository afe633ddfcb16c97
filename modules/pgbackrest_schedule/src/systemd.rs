//! `systemctl`, the only way the module talks to systemd: queries (`is-enabled`, `is-active`)
//! before any change, so that a unit already as wanted costs no command that changes anything,
//! and every command it runs (or, in check mode, would run) recorded for the result.

use ansible_module::process::Cmd;
use anyhow::{anyhow, bail};

/// The unit-file states `systemctl enable` cannot or need not change (an enabled unit, or one
/// without an `[Install]` section that something else pulls in).
const ENABLED: &[&str] = &[
    "enabled",
    "alias",
    "static",
    "indirect",
    "generated",
    "transient",
];
/// The states `systemctl disable` changes.
const DISABLABLE: &[&str] = &["enabled", "enabled-runtime", "linked", "linked-runtime"];
/// The activity states that count as running (`systemctl stop` changes them).
const ACTIVE: &[&str] = &[
    "active",
    "activating",
    "reloading",
    "refreshing",
    "deactivating",
];

/// The systemctl commands of one run.
#[derive(Debug, Default)]
pub struct Systemctl {
    /// Every command run, queries included; in check mode also those that would change something.
    pub commands: Vec<String>,
    /// Check mode: run queries only.
    pub check_mode: bool,
}

impl Systemctl {
    fn cmd(args: &[&str]) -> Cmd {
        Cmd::new("systemctl").args(args)
    }

    /// A query: its first line of output, whatever the exit code (`is-enabled` exits 1 for a
    /// disabled unit and prints `disabled`; for a unit that is not there, nothing on stdout).
    fn query(&mut self, args: &[&str]) -> anyhow::Result<String> {
        let cmd = Self::cmd(args);
        self.commands.push(cmd.display());
        let out = cmd.output().map_err(|e| anyhow!("{e}"))?;
        let line = out.stdout.lines().next().unwrap_or("").trim().to_owned();
        if line.is_empty() && out.code != Some(0) && !out.stderr.contains("No such file") {
            // Not a state but a failure of systemctl itself (no systemd running, no bus).
            bail!(
                "`{}` failed: {}",
                cmd.display(),
                out.stderr.trim().lines().next().unwrap_or("no output")
            );
        }
        Ok(if line.is_empty() {
            "not-found".into()
        } else {
            line
        })
    }

    /// A command that changes something: run it (not in check mode) and require success.
    pub fn change(&mut self, args: &[&str]) -> anyhow::Result<()> {
        let cmd = Self::cmd(args);
        self.commands.push(cmd.display());
        if !self.check_mode {
            cmd.run().map_err(|e| anyhow!("{e}"))?;
        }
        Ok(())
    }

    /// `systemctl is-enabled UNIT`.
    pub fn enablement(&mut self, unit: &str) -> anyhow::Result<String> {
        self.query(&["is-enabled", unit])
    }

    /// `systemctl is-active UNIT`.
    pub fn activity(&mut self, unit: &str) -> anyhow::Result<String> {
        self.query(&["is-active", unit])
    }
}

/// What to run to take a unit from its states to the wanted ones: (`enable`/`disable` or
/// nothing, `start`/`stop` or nothing). A masked unit cannot be enabled or started.
pub fn actions(
    label: &str,
    unit: &str,
    enablement: &str,
    activity: &str,
    enabled: Option<bool>,
    active: Option<bool>,
) -> anyhow::Result<(Option<&'static str>, Option<&'static str>)> {
    let masked = enablement.starts_with("masked");
    if masked && (enabled == Some(true) || active == Some(true)) {
        bail!(
            "{label}: '{unit}' is masked ({enablement}); unmask it to let it be enabled or started"
        );
    }
    let enable = match enabled {
        Some(true) if !ENABLED.contains(&enablement) => Some("enable"),
        Some(false) if DISABLABLE.contains(&enablement) => Some("disable"),
        _ => None,
    };
    let is_active = ACTIVE.contains(&activity);
    let start = match active {
        Some(true) if !is_active => Some("start"),
        Some(false) if is_active => Some("stop"),
        _ => None,
    };
    Ok((enable, start))
}

/// Whether `systemctl is-enabled` says the unit is enabled (for the result).
pub fn is_enabled(enablement: &str) -> bool {
    ENABLED.contains(&enablement) || enablement == "enabled-runtime"
}

/// Whether `systemctl is-active` says the unit runs (for the result).
pub fn is_active(activity: &str) -> bool {
    ACTIVE.contains(&activity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_differs_is_acted_on() {
        let a = |e: &str, s: &str, en: Option<bool>, ac: Option<bool>| {
            actions("units[0]", "x.timer", e, s, en, ac).unwrap()
        };
        assert_eq!(a("enabled", "active", Some(true), Some(true)), (None, None));
        assert_eq!(
            a("disabled", "inactive", Some(true), Some(true)),
            (Some("enable"), Some("start"))
        );
        assert_eq!(
            a("not-found", "inactive", Some(true), Some(true)),
            (Some("enable"), Some("start"))
        );
        assert_eq!(a("static", "inactive", Some(true), None), (None, None));
        assert_eq!(
            a("enabled", "activating", Some(false), Some(false)),
            (Some("disable"), Some("stop"))
        );
        assert_eq!(a("disabled", "failed", None, None), (None, None));
        let e = actions(
            "units[2]",
            "x.timer",
            "masked",
            "inactive",
            Some(true),
            None,
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .starts_with("units[2]: 'x.timer' is masked"));
    }
}
