//! Where a drill restores: an ephemeral Incus container with no network interface, or a
//! temporary directory on the host. Both run the same programs (pgBackRest, pg_ctl, psql) as the
//! postgres user; only the way a command is wrapped and the paths differ. Also what a drill
//! killed with SIGKILL leaves behind, and its removal by the next drill ([`recover`]).

use ansible_module::process::{Cmd, RunAs};
use std::path::{Path, PathBuf};

/// The host sandbox directory of the drill of `stanza` run by process `pid`.
pub fn host_dir(stanza: &str, pid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/dr-drill-{stanza}-{pid}"))
}

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
            Sandbox::Host { user, .. } => match argv.split_first() {
                Some((program, rest)) => Cmd::new(program).args(rest).run_as(Some(user)),
                None => Cmd::new("true").run_as(Some(user)),
            },
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
                )?;
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
            // A signal that stopped `incus init` or `incus start` stops the client, not the
            // server's operation: until it ends the instance is "busy", and a delete given up
            // then would leave a container that the operation goes on to create or start.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            loop {
                let out = Cmd::new("incus")
                    .args(["delete", "--force", name])
                    .output()
                    .map_err(|e| e.to_string())?;
                if out.success() || out.stderr.contains("not found") {
                    return Ok(());
                }
                if !out.stderr.contains("busy") || std::time::Instant::now() >= deadline {
                    return Err(format!("incus delete {name}: {}", out.stderr.trim()));
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
        Sandbox::Host { dir, user } => {
            // Never follow a link planted at the path: only a real directory is removed.
            match std::fs::symlink_metadata(dir) {
                Ok(m) if !m.is_dir() => {
                    return Err(format!("{} is not a directory; left alone", dir.display()))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                _ => {}
            }
            let pgdata = dir.join("data");
            if pgdata.join("postmaster.pid").exists() {
                let _ = Cmd::new(pg_ctl)
                    .arg("-D")
                    .arg(&pgdata)
                    .args(["-m", "immediate", "-w", "stop"])
                    .run_as(Some(user))
                    .output();
            }
            // A restore that outlived a killed drill may still be writing there.
            kill_users_of(dir);
            match std::fs::remove_dir_all(dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", dir.display())),
            }
        }
    }
}

/// SIGKILL every process whose command line names `dir` (a `pgbackrest restore` into it that
/// outlived a killed drill), so that nothing writes there while it is removed.
fn kill_users_of(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let mentions = cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).contains(&needle));
        if mentions {
            if let Ok(pid) = name.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether an Incus instance of this name exists.
pub fn container_exists(name: &str) -> bool {
    Cmd::new("incus")
        .args(["info", name])
        .output()
        .map(|o| o.success())
        .unwrap_or(false)
}

/// What a drill that died holding the lock (SIGKILL, OOM, host crash) left: its container (the
/// name is fixed per stanza) or its host directory (named by its pid) with a running
/// PostgreSQL. `previous_owner` is the pid the dead drill recorded in the lock file (a drill that
/// ends cleanly clears it); called with the lock held, so no live drill owns these. Returns what
/// was removed.
pub fn recover(
    previous_owner: Option<&str>,
    stanza: &str,
    container: Option<&str>,
    pg_ctl: &str,
) -> Result<Vec<String>, String> {
    let Some(pid) = previous_owner.and_then(|p| p.parse::<u32>().ok()) else {
        return Ok(Vec::new());
    };
    if pid == std::process::id() {
        return Ok(Vec::new());
    }
    let mut removed = Vec::new();
    if let Some(name) = container {
        if container_exists(name) {
            destroy(
                &Sandbox::Incus {
                    name: name.to_owned(),
                    uid: 0,
                    gid: 0,
                },
                pg_ctl,
            )?;
            removed.push(format!("incus container {name}"));
        }
    }
    let dir = host_dir(stanza, pid);
    if std::fs::symlink_metadata(&dir).is_ok() {
        let user = RunAs::user("postgres").map_err(|e| e.to_string())?;
        destroy(
            &Sandbox::Host {
                dir: dir.clone(),
                user,
            },
            pg_ctl,
        )?;
        removed.push(format!(
            "host directory {} and its PostgreSQL",
            dir.display()
        ));
    }
    Ok(removed)
}
