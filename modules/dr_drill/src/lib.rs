//! `dr_drill`: prove that the latest backup restores, every week, in a throwaway sandbox.
//!
//! A drill checks its preconditions (tools, a backup without recorded errors and within its age
//! budget in `pgbackrest info`, no other drill of the stanza: a lock file), lists the WAL archive,
//! restores with `--archive-mode=off` into an ephemeral Incus container without a network
//! interface (or a temporary directory on the host), starts PostgreSQL on a unix socket only,
//! waits for the end of recovery, proves that replay reached the end of the archive, runs its
//! data checks (all by default), writes the node_exporter textfile metrics atomically and always
//! removes the sandbox, on SIGTERM/SIGINT too; what a drill killed with SIGKILL left, the next
//! one removes. The same binary is the Ansible module and the program a systemd timer runs
//! (arguments as JSON on stdin): exit 0 pass, 1 the backups could not be restored or proven, 2 a
//! problem of the drill host itself.
//!
//! The files follow the drill: [`plan`] (options), [`run`] (the stages in order), [`stages`]
//! (restore to a promoted instance and the end-of-archive proof, with [`archive`]), [`checks`],
//! [`sandbox`], [`signals`], [`report`] and [`metrics`].

pub mod archive;
pub mod checks;
pub mod metrics;
pub mod plan;
pub mod repo_access;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod signals;
pub mod stages;

use ansible_module::{Context, Module, Response, Spec};
pub use run::CheckState;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The module.
pub struct DrDrill;

impl Module for DrDrill {
    type Args = plan::Args;
    const NAME: &'static str = "dr_drill";

    fn spec() -> Spec {
        plan::spec()
    }

    fn execute(args: plan::Args, ctx: &mut Context) -> anyhow::Result<Response> {
        run::drill(plan::Plan::new(args)?, ctx)
    }
}

/// A progress line for the operator (and the journal under systemd); stdout belongs to the
/// result. Scrubbed like the result: a pgBackRest error may quote a key of the configuration.
pub fn progress(line: &str) {
    eprintln!("dr_drill: {}", ansible_module::scrub_str(line));
}

/// A program on PATH (or the usual sbin/bin directories), or at a given path.
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Now, seconds since the epoch.
pub fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch (saturating, never panicking).
pub fn utc(epoch: f64) -> String {
    let secs = if epoch.is_finite() && epoch > 0.0 {
        epoch.min(253_402_300_799.0) as i64
    } else {
        0
    };
    let [year, month, day, h, m, s] = ansible_module::time::utc_fields(secs);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_and_saturates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400.0 + 3661.0), "2000-02-29 01:01:01 UTC");
        assert_eq!(utc(f64::MAX), "9999-12-31 23:59:59 UTC");
        assert_eq!(utc(f64::NAN), "1970-01-01 00:00:00 UTC");
    }
}
