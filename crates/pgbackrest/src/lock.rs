//! Exclusive locks beside pgBackRest's own lock files.
//!
//! A lock is an `flock` on a file that also records its holder (`pid` and start time, one line),
//! so that a run that finds the lock free but traces of an earlier run (a container, a temp dir)
//! can tell whether that run is dead: the kernel drops an `flock` when its holder dies, however
//! it died, and the recorded pid says whose traces they were.

use crate::Error;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    path: PathBuf,
    previous_owner: Option<String>,
    _flock: nix::fcntl::Flock<std::fs::File>,
}

impl Lock {
    /// Take the lock `dir/name`, creating `dir` (mode 0770) when missing. `wait`: block until it
    /// is free; otherwise fail at once with [`Error::Locked`] when another process holds it.
    pub fn take(dir: &Path, name: &str, wait: bool) -> Result<Lock, Error> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o770)
            .create(dir)
            .map_err(Error::io(format!(
                "creating the lock directory {}",
                dir.display()
            )))?;
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o640)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(Error::io(format!(
                "opening the lock file {}",
                path.display()
            )))?;
        let arg = if wait {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockExclusiveNonblock
        };
        let mut flock = nix::fcntl::Flock::lock(file, arg).map_err(|(_, e)| {
            Error::Locked(format!(
                "lock {} is held by another run: {e}",
                path.display()
            ))
        })?;
        let mut text = String::new();
        let _ = flock.read_to_string(&mut text);
        let previous_owner = Some(text.trim().to_owned()).filter(|t| !t.is_empty());
        // Record this run as the holder; a failure here only loses the record.
        let _ = flock.set_len(0);
        let _ = flock.rewind();
        let _ = writeln!(flock, "{}", std::process::id());
        Ok(Lock {
            path,
            previous_owner,
            _flock: flock,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pid a previous holder recorded and never cleared: that run died holding the lock
    /// (a holder that releases it cleanly clears the record).
    pub fn previous_owner(&self) -> Option<&str> {
        self.previous_owner.as_deref()
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Released cleanly: clear the record before the flock goes.
        let _ = self._flock.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_and_a_dead_holder_is_seen() {
        let dir = std::env::temp_dir().join(format!("pgbackrest-lock-{}", std::process::id()));
        let first = Lock::take(&dir, "s.lock", false).unwrap();
        assert!(matches!(
            Lock::take(&dir, "s.lock", false),
            Err(Error::Locked(_))
        ));
        drop(first);
        let again = Lock::take(&dir, "s.lock", false).unwrap();
        assert_eq!(
            again.previous_owner(),
            None,
            "a clean release clears the record"
        );
        drop(again);
        // A holder killed with SIGKILL leaves its pid in the file and the flock free.
        std::fs::write(dir.join("s.lock"), "4242\n").unwrap();
        let after_crash = Lock::take(&dir, "s.lock", false).unwrap();
        assert_eq!(after_crash.previous_owner(), Some("4242"));
        drop(after_crash);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
