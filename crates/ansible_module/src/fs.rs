//! Atomic, attribute-aware file writes that never follow a symbolic link.
//!
//! A file is written to a temporary file in the same directory, fsynced, given its owner, group
//! and mode, renamed over the target and the directory fsynced: a crash leaves the old file or the
//! new one, never a partial one, and the temporary file a killed writer left is removed by the
//! next write of the same file. [`FileState`] reads what is there so a module can plan (and
//! predict in check mode) before it writes.
//!
//! The modules run as root in directories other users may write to: a symbolic link (or a FIFO,
//! a device) planted at the managed path is refused, never read, copied or chowned through, and
//! owner and mode are changed on the opened file itself.

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
    /// Read a regular file without following a link at `path`; `Ok(None)` when it does not
    /// exist.
    pub fn read(path: &Path) -> Result<Option<FileState>, Error> {
        use std::io::Read as _;
        let Some(mut file) = open_nofollow(path, false)? else {
            return Ok(None);
        };
        let meta = file.metadata().map_err(at("reading", path))?;
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)
            .map_err(at("reading", path))?;
        Ok(Some(FileState {
            contents,
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
        }))
    }
}

/// The error of an I/O step on `path` (`reading /etc/x: ...`), formatted only when it happens.
fn at<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

/// Open `path` read-only without following a symbolic link at it (`O_NOFOLLOW`, and
/// `O_NONBLOCK` so a FIFO cannot hang the open): a link, or anything but a regular file (or a
/// directory when `dir_ok`), is refused. `Ok(None)` when nothing is there.
fn open_nofollow(path: &Path, dir_ok: bool) -> Result<Option<File>, Error> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            return Err(Error::Invalid(format!(
                "{} is a symbolic link: refusing to follow it (remove the link, or manage the \
                 file it points to by its own path)",
                path.display()
            )))
        }
        Err(e) => return Err(at("opening", path)(e)),
    };
    let kind = file.metadata().map_err(at("reading", path))?.file_type();
    if kind.is_file() || (dir_ok && kind.is_dir()) {
        Ok(Some(file))
    } else {
        Err(Error::Invalid(format!(
            "{} is not a regular file: refusing to manage it",
            path.display()
        )))
    }
}

/// A numeric id: 4294967295 is -1 to chown, "leave it as it is", which no file can be given.
fn numeric_id(n: u32, what: &str, given: &str) -> Result<u32, Error> {
    if n == u32::MAX {
        return Err(Error::User(format!(
            "{what} '{given}' is not an id a file can have (chown reads it as -1)"
        )));
    }
    Ok(n)
}

/// A `mode` as Ansible's file modules take it: an octal string (`'0640'`, `'0o640'`, blanks
/// around it ignored), or the number YAML made of an unquoted `0640`; at most `0o7777`. `None`
/// for anything else: the caller's message names its option.
pub fn octal_mode(value: &serde_json::Value) -> Option<u32> {
    let parsed = match value {
        serde_json::Value::String(s) => {
            let digits = s.trim().trim_start_matches("0o");
            if digits.is_empty() || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
                None
            } else {
                u32::from_str_radix(digits, 8).ok()
            }
        }
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        _ => None,
    };
    parsed.filter(|m| *m <= 0o7777)
}

/// Resolve a user name or number.
pub fn resolve_uid(owner: &str) -> Result<Uid, Error> {
    if let Ok(n) = owner.parse::<u32>() {
        return numeric_id(n, "owner", owner).map(Uid::from_raw);
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
        return numeric_id(n, "group", group).map(Gid::from_raw);
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
    let tmp: PathBuf = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let result = (|| {
        let mut file = lock_temp(&tmp)?;
        file.write_all(contents).map_err(at("writing", &tmp))?;
        let uid = attrs.owner.as_deref().map(resolve_uid).transpose()?;
        let gid = attrs.group.as_deref().map(resolve_gid).transpose()?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::fchown(&*file, uid.map(Uid::as_raw), gid.map(Gid::as_raw))
                .map_err(at("setting owner/group of", path))?;
        }
        let mode = attrs.mode.unwrap_or_else(|| {
            std::fs::symlink_metadata(path)
                .map(|m| m.mode() & 0o7777)
                .unwrap_or(0o644)
        });
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(at("setting mode of", path))?;
        file.sync_all().map_err(at("syncing", &tmp))?;
        before_rename();
        std::fs::rename(&tmp, path).map_err(Error::io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at("syncing directory", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The temporary file of writes of `path`: one fixed name, `.NAME.tmp`, held under an exclusive
/// `flock` while it is written. A writer killed between create and rename leaves it (holding a
/// whole file, secrets included) with its lock gone: the next writer takes it over, rewrites and
/// renames it, so kills never pile up copies. It is used only while the path still names the
/// locked file (the writer before may have renamed it into place), this process owns it and
/// nothing else links to it; anything else found there (a file someone planted) is removed.
fn lock_temp(tmp: &Path) -> Result<nix::fcntl::Flock<File>, Error> {
    let euid = nix::unistd::geteuid().as_raw();
    for _ in 0..100 {
        let opened = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(tmp);
        let file = match opened {
            Ok(file) => file,
            // A link planted at the temp name: removed (the link, not what it points to).
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                let _ = std::fs::remove_file(tmp);
                continue;
            }
            Err(e) => return Err(at("creating", tmp)(e)),
        };
        let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::sys(format!("locking {}", tmp.display()))(e))?;
        let meta = locked.metadata().map_err(at("reading", tmp))?;
        let named = std::fs::symlink_metadata(tmp)
            .is_ok_and(|m| m.ino() == meta.ino() && m.dev() == meta.dev());
        if named && meta.uid() == euid && meta.nlink() == 1 {
            locked.set_len(0).map_err(at("truncating", tmp))?;
            return Ok(locked);
        }
        if named {
            let _ = std::fs::remove_file(tmp);
        }
    }
    Err(Error::Invalid(format!(
        "{} keeps changing under this write: refusing to go on",
        tmp.display()
    )))
}

/// Apply owner, group and mode to an existing file or directory (when only those differ), on
/// the opened file: a link planted at `path` is refused, never followed.
pub fn set_attrs(path: &Path, attrs: &Attrs) -> Result<(), Error> {
    let uid = attrs.owner.as_deref().map(resolve_uid).transpose()?;
    let gid = attrs.group.as_deref().map(resolve_gid).transpose()?;
    let file = open_nofollow(path, true)?
        .ok_or_else(|| Error::Invalid(format!("{} does not exist", path.display())))?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid.map(Uid::as_raw), gid.map(Gid::as_raw))
            .map_err(at("setting owner/group of", path))?;
    }
    if let Some(mode) = attrs.mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(at("setting mode of", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_modes_as_ansible_takes_them() {
        use serde_json::json;
        for (v, want) in [
            (json!("0640"), Some(0o640)),
            (json!(" 0o750 "), Some(0o750)),
            (json!(640), Some(640)),
            (json!("7777"), Some(0o7777)),
            (json!("10000"), None),
            (json!("0648"), None),
            (json!(""), None),
            (json!(-1), None),
            (json!(true), None),
        ] {
            assert_eq!(octal_mode(&v), want, "{v}");
        }
    }

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
    fn a_link_at_the_path_is_never_followed() {
        let dir = scratch("link");
        let target = dir.join("secret");
        std::fs::write(&target, b"do not show").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.join("f.conf");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = FileState::read(&link).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link"), "{e}");
        let loose = Attrs {
            mode: Some(0o666),
            ..Attrs::default()
        };
        assert!(set_attrs(&link, &loose).is_err());
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_killed_writers_temp_file_is_taken_over_and_nothing_piles_up() {
        let dir = scratch("temps");
        let path = dir.join("f");
        // What a writer killed before its rename leaves: the temp file, its lock gone.
        std::fs::write(dir.join(".f.tmp"), b"old secret, longer than the new file").unwrap();
        write_atomic(&path, b"x", &Attrs::default()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"x");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file is left"
        );
        // A link planted at the temp name is removed, never written through.
        let victim = dir.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(".f.tmp")).unwrap();
        write_atomic(&path, b"y", &Attrs::default()).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(&path).unwrap(), b"y");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn id_4294967295_is_refused() {
        assert!(resolve_uid("4294967295").is_err());
        assert!(resolve_gid("4294967295").is_err());
        assert_eq!(resolve_uid("0").unwrap().as_raw(), 0);
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
