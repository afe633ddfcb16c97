//! Atomic, attribute-aware file writes.
//!
//! A file is written to a temporary file in the same directory, fsynced, given its owner, group
//! and mode, renamed over the target and the directory fsynced: a crash leaves the old file or the
//! new one, never a partial one. [`FileState`] reads what is there so a module can plan (and
//! predict in check mode) before it writes.

use crate::Error;
use nix::unistd::{Gid, Group, Uid, User};
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// Owner, group and mode wanted for a file (`None`: leave as is / as created).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// User name or numeric uid.
    pub owner: Option<String>,
    /// Group name or numeric gid.
    pub group: Option<String>,
    /// Permission bits (for example `0o640`).
    pub mode: Option<u32>,
}

/// What is on disk now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// The contents.
    pub contents: Vec<u8>,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Permission bits.
    pub mode: u32,
}

impl FileState {
    /// Read a file; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> std::io::Result<Option<FileState>> {
        match std::fs::read(path) {
            Ok(contents) => {
                let meta = std::fs::metadata(path)?;
                Ok(Some(FileState {
                    contents,
                    uid: meta.uid(),
                    gid: meta.gid(),
                    mode: meta.mode() & 0o7777,
                }))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Resolve a user name or number.
pub fn resolve_uid(owner: &str) -> Result<Uid, Error> {
    if let Ok(n) = owner.parse::<u32>() {
        return Ok(Uid::from_raw(n));
    }
    match User::from_name(owner) {
        Ok(Some(u)) => Ok(u.uid),
        Ok(None) => Err(Error::User(format!("owner '{owner}' does not exist"))),
        Err(source) => Err(Error::Sys {
            what: format!("looking up owner '{owner}'"),
            source,
        }),
    }
}

/// Resolve a group name or number.
pub fn resolve_gid(group: &str) -> Result<Gid, Error> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(Error::User(format!("group '{group}' does not exist"))),
        Err(source) => Err(Error::Sys {
            what: format!("looking up group '{group}'"),
            source,
        }),
    }
}

/// What writing `contents` with `attrs` would change, compared with `current`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// The file does not exist yet.
    pub created: bool,
    /// The bytes differ.
    pub contents: bool,
    /// Owner, group or mode differ.
    pub attributes: bool,
}

impl Change {
    /// Anything at all.
    pub fn any(&self) -> bool {
        self.created || self.contents || self.attributes
    }
}

/// Compare the wanted file with what is there.
pub fn plan(current: Option<&FileState>, contents: &[u8], attrs: &Attrs) -> Result<Change, Error> {
    let Some(cur) = current else {
        return Ok(Change {
            created: true,
            contents: true,
            attributes: true,
        });
    };
    let owner_differs = match &attrs.owner {
        Some(o) => resolve_uid(o)?.as_raw() != cur.uid,
        None => false,
    };
    let group_differs = match &attrs.group {
        Some(g) => resolve_gid(g)?.as_raw() != cur.gid,
        None => false,
    };
    let mode_differs = attrs.mode.is_some_and(|m| m != cur.mode);
    Ok(Change {
        created: false,
        contents: cur.contents != contents,
        attributes: owner_differs || group_differs || mode_differs,
    })
}

/// Write `contents` to `path` atomically with `attrs`; the parent directory must exist.
pub fn write_atomic(path: &Path, contents: &[u8], attrs: &Attrs) -> Result<(), Error> {
    write_atomic_with(path, contents, attrs, || {})
}

/// [`write_atomic`] with a hook between the synced temporary file and the rename: tests use it
/// to look at (or kill the process at) the worst moment.
pub fn write_atomic_with(
    path: &Path,
    contents: &[u8],
    attrs: &Attrs,
    before_rename: impl FnOnce(),
) -> Result<(), Error> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp: PathBuf = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(Error::io(format!("creating {}", tmp.display())))?;
        file.write_all(contents)
            .map_err(Error::io(format!("writing {}", tmp.display())))?;
        let uid = attrs.owner.as_deref().map(resolve_uid).transpose()?;
        let gid = attrs.group.as_deref().map(resolve_gid).transpose()?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&file, uid.map(Uid::as_raw), gid.map(Gid::as_raw)).map_err(
                Error::io(format!("setting owner/group of {}", path.display())),
            )?;
        }
        let mode = attrs.mode.unwrap_or_else(|| {
            std::fs::metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o644)
        });
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(format!("setting mode of {}", path.display())))?;
        file.sync_all()
            .map_err(Error::io(format!("syncing {}", tmp.display())))?;
        drop(file);
        before_rename();
        std::fs::rename(&tmp, path).map_err(Error::io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(Error::io(format!("syncing directory {}", dir.display())))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Apply owner, group and mode to an existing file (when only those differ).
pub fn set_attrs(path: &Path, attrs: &Attrs) -> Result<(), Error> {
    let uid = attrs.owner.as_deref().map(resolve_uid).transpose()?;
    let gid = attrs.group.as_deref().map(resolve_gid).transpose()?;
    if uid.is_some() || gid.is_some() {
        nix::unistd::chown(path, uid, gid).map_err(Error::sys(format!(
            "setting owner/group of {}",
            path.display()
        )))?;
    }
    if let Some(mode) = attrs.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(Error::io(format!("setting mode of {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ansible_module-fs-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn plan_then_write_then_nothing_to_do() {
        let dir = scratch("plan");
        let path = dir.join("f.conf");
        let attrs = Attrs {
            owner: Some("0".into()),
            group: Some("0".into()),
            mode: Some(0o640),
        };
        assert!(plan(None, b"a=1\n", &attrs).unwrap().created);
        write_atomic(&path, b"a=1\n", &attrs).unwrap();
        let state = FileState::read(&path).unwrap().unwrap();
        assert_eq!(state.contents, b"a=1\n");
        assert_eq!(state.mode, 0o640);
        assert!(!plan(Some(&state), b"a=1\n", &attrs).unwrap().any());
        let c = plan(Some(&state), b"a=2\n", &attrs).unwrap();
        assert!(c.contents && !c.attributes);
        let c = plan(
            Some(&state),
            b"a=1\n",
            &Attrs {
                mode: Some(0o600),
                ..attrs.clone()
            },
        )
        .unwrap();
        assert!(!c.contents && c.attributes);
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_target_is_untouched_until_the_rename() {
        let dir = scratch("rename");
        let path = dir.join("f");
        write_atomic(&path, b"old", &Attrs::default()).unwrap();
        write_atomic_with(&path, b"new", &Attrs::default(), || {
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
        })
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_owner_is_refused_and_nothing_is_left() {
        let dir = scratch("owner");
        let path = dir.join("f");
        let err = write_atomic(
            &path,
            b"x",
            &Attrs {
                owner: Some("no-such-user-xyz".into()),
                ..Attrs::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "owner 'no-such-user-xyz' does not exist");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
