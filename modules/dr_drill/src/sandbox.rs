//! Where a drill restores: an ephemeral Incus container with no network interface, or a
//! temporary directory on the host. Both run the same programs (pgBackRest, pg_ctl, psql) as the
//! postgres user; only the way a command is wrapped and the paths differ.

use ansible_module::process::{Cmd, RunAs};
use std::path::{Path, PathBuf};

/// The drill's sandbox.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// An Incus container.
    Incus {
        /// The container's name.
        name: String,
        /// postgres in the container (the image carries the host's uid/gid).
        uid: u32,
        /// Its gid.
        gid: u32,
    },
    /// A temporary directory on the host.
    Host {
        /// The directory (holds the data directory, the socket and the logs).
        dir: PathBuf,
        /// The postgres user.
        user: RunAs,
    },
}

impl Sandbox {
    /// Where the drill works: data directory, socket directory, hba file, log.
    pub fn base(&self) -> PathBuf {
        match self {
            Sandbox::Incus { .. } => PathBuf::from("/var/lib/postgresql/drill"),
            Sandbox::Host { dir, .. } => dir.clone(),
        }
    }
    /// The restored data directory.
    pub fn pgdata(&self) -> PathBuf {
        self.base().join("data")
    }
    /// The private socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        match self {
            Sandbox::Incus { .. } => PathBuf::from("/tmp"),
            Sandbox::Host { dir, .. } => dir.clone(),
        }
    }
    /// A command run as postgres inside the sandbox.
    pub fn postgres<S: AsRef<std::ffi::OsStr>>(&self, argv: &[S]) -> Cmd {
        match self {
            Sandbox::Incus { name, uid, gid } => Cmd::new("incus")
                .args([
                    "exec",
                    name,
                    "--user",
                    &uid.to_string(),
                    "--group",
                    &gid.to_string(),
                ])
                .args([
                    "--env",
                    "HOME=/var/lib/postgresql",
                    "--env",
                    "LC_ALL=C",
                    "--cwd",
                    "/tmp",
                    "--",
                ])
                .args(argv),
            Sandbox::Host { user, .. } => {
                let (program, rest) = argv.split_first().expect("a program");
                Cmd::new(program).args(rest).run_as(Some(user))
            }
        }
    }
    /// Write a small file as postgres in the sandbox (mode 0600).
    pub fn write_file(&self, path: &Path, contents: &str) -> anyhow::Result<()> {
        use anyhow::Context as _;
        match self {
            Sandbox::Incus { name, uid, gid } => {
                Cmd::new("incus")
                    .args([
                        "file",
                        "push",
                        "--uid",
                        &uid.to_string(),
                        "--gid",
                        &gid.to_string(),
                    ])
                    .args(["--mode", "0600", "-"])
                    .arg(format!("{name}{}", path.display()))
                    .stdin(contents.as_bytes().to_vec())
                    .run()
                    .with_context(|| format!("pushing {}", path.display()))?;
            }
            Sandbox::Host { user, .. } => {
                ansible_module::fs::write_atomic(
                    path,
                    contents.as_bytes(),
                    &ansible_module::fs::Attrs {
                        owner: Some(user.uid.to_string()),
                        group: Some(user.gid.to_string()),
                        mode: Some(0o600),
                    },
                )
                .map_err(anyhow::Error::msg)?;
            }
        }
        Ok(())
    }
    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Sandbox::Incus { name, .. } => format!("incus container {name}"),
            Sandbox::Host { dir, .. } => format!("host directory {}", dir.display()),
        }
    }
}

/// Remove a sandbox, whatever state it is in; errors are returned as text (teardown goes on).
pub fn destroy(sandbox: &Sandbox, pg_ctl: &str) -> Result<(), String> {
    match sandbox {
        Sandbox::Incus { name, .. } => {
            let out = Cmd::new("incus")
                .args(["delete", "--force", name])
                .output()
                .map_err(|e| e.to_string())?;
            if out.success() || out.stderr.contains("not found") {
                Ok(())
            } else {
                Err(format!("incus delete {name}: {}", out.stderr.trim()))
            }
        }
        Sandbox::Host { dir, user } => {
            let pgdata = dir.join("data");
            if pgdata.join("postmaster.pid").exists() {
                let _ = Cmd::new(pg_ctl)
                    .arg("-D")
                    .arg(&pgdata)
                    .args(["-m", "immediate", "-w", "stop"])
                    .run_as(Some(user))
                    .output();
            }
            match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", dir.display())),
            }
        }
    }
}
