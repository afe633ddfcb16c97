//! `pgbackrest_schedule`: the backup schedule of a node - systemd units and timers, and the files
//! their services run - owned by one module, so that a host converges without Python.
//!
//! The units' text comes rendered (the roles render their templates on the controller); the
//! module owns everything on the target: each unit file and each file the services run (a
//! program, its settings) is compared with what is there (bytes, owner, group, mode) and written
//! atomically, never through a symbolic link; `systemctl daemon-reload` runs only when a unit
//! file changed; units are enabled and started (timers, by default) or disabled and stopped
//! only when `systemctl is-enabled`/`is-active` say they are not so already. `state: absent`
//! disables, stops and removes the units and files named. A program can come from the
//! collection's own builds (`src_build`): the action plugin names the build for the target's
//! platform by its SHA-256, and the module copies it from the transport's cache on the target
//! (`~/.ansible/veza-bin/<sha256>`) rather than having it uploaded a second time.
//!
//! Check mode reads and queries only and predicts every change and command; the diff (one per
//! file) is the same in check mode and for real.

mod systemd;
pub mod wanted;

use ansible_module::fs::{Attrs, Change, FileState};
use ansible_module::{Context, Diff, Elem, Module, Response};
use anyhow::{anyhow, Context as _};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use wanted::Source;

ansible_module::choices! {
    /// `state`
    pub enum State {
        /// The units and files exist as given; units enabled and started as asked.
        Present = "present",
        /// The units are disabled, stopped and removed; the files removed.
        Absent = "absent",
    }
}

ansible_module::options! {
    /// The module's options, as documented.
    pub struct Args {
        /// `units`
        units: Option<Vec<Value>> = list(Elem::Dict).default(json!([])),
        /// `files`
        files: Option<Vec<Value>> = list(Elem::Dict).default(json!([])),
        /// `directories`
        directories: Option<Vec<Value>> = list(Elem::Dict).default(json!([])),
        /// `state`
        state: State = str().choices(State::NAMES).default("present"),
        /// `systemd_dir`
        systemd_dir: PathBuf = path().default("/etc/systemd/system"),
        /// `manage_services`
        manage_services: bool = bool().default(true),
    }
}

/// Where the transport keeps the builds, under the home of the user the module runs as.
const BUILD_CACHE: &str = ".ansible/veza-bin";

/// The Ansible module.
pub struct PgbackrestSchedule;

/// One file to write or remove, with what is there now.
struct Entry {
    /// `units[i]` or `files[i]`.
    label: String,
    path: PathBuf,
    unit: bool,
    current: Option<FileState>,
    /// The bytes and attributes wanted; `None` for absent.
    wanted: Option<(Vec<u8>, Attrs)>,
    /// How the diff shows the wanted bytes (a build's name and digest, not its bytes).
    shown: String,
}

impl Entry {
    fn change(&self) -> anyhow::Result<Change> {
        match &self.wanted {
            Some((bytes, attrs)) => ansible_module::fs::plan(self.current.as_ref(), bytes, attrs)
                .map_err(|e| anyhow!("{}: {e}", self.label)),
            None => Ok(Change {
                contents: self.current.is_some(),
                ..Change::default()
            }),
        }
    }
}

impl Module for PgbackrestSchedule {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_schedule";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let present = args.state == State::Present;
        let dir = args.systemd_dir.display().to_string();
        let systemd_dir = wanted::absolute("systemd_dir", &dir)?;
        let units = wanted::units(args.units.as_deref().unwrap_or_default(), present)?;
        let files = wanted::files(args.files.as_deref().unwrap_or_default(), present)?;
        let dirs = wanted::directories(args.directories.as_deref().unwrap_or_default())?;
        // Directories are created and given their attributes, never removed.
        let dirs = if present { dirs } else { Vec::new() };
        let dir_plans = dirs
            .iter()
            .map(|d| Ok((d, dir_state(d)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let mut entries = Vec::new();
        let mut missing = Vec::new();
        for f in &files {
            let current = read(&f.label, &f.path)?;
            let (bytes, shown) = match &f.source {
                None => (None, String::new()),
                Some(Source::Content(text)) => (Some(text.clone().into_bytes()), text.clone()),
                Some(Source::Build {
                    name,
                    sha256,
                    src: Some(src),
                }) => {
                    let bytes = uploaded_build(&f.label, src, sha256)?;
                    let shown = describe(&bytes, Some(name));
                    (Some(bytes), shown)
                }
                Some(Source::Build { name, sha256, .. }) => match cached_build(sha256)? {
                    Some(bytes) => {
                        let shown = describe(&bytes, Some(name));
                        (Some(bytes), shown)
                    }
                    None => {
                        missing.push(sha256.clone());
                        continue;
                    }
                },
            };
            let attrs = Attrs {
                owner: Some(f.owner.clone()),
                group: Some(f.group.clone()),
                mode: Some(f.mode),
            };
            entries.push(Entry {
                label: f.label.clone(),
                path: f.path.clone(),
                unit: false,
                current,
                wanted: bytes.map(|b| (b, attrs)),
                shown,
            });
        }
        if !missing.is_empty() {
            // Before anything changed: the action plugin uploads these and runs the task again.
            return Ok(Response::failed(format!(
                "files: the builds {} are not in the transport's cache ~/{BUILD_CACHE} on the \
                 target",
                missing.join(", ")
            ))
            .field("missing_builds", missing));
        }
        for u in &units {
            let path = systemd_dir.join(&u.name);
            if let Some(f) = files.iter().find(|f| f.path == path) {
                anyhow::bail!("{}.path: '{}' is also {}", f.label, path.display(), u.label);
            }
            let unit_attrs = Attrs {
                owner: Some("0".into()),
                group: Some("0".into()),
                mode: Some(0o644),
            };
            entries.push(Entry {
                label: u.label.clone(),
                current: read(&u.label, &path)?,
                path,
                unit: true,
                wanted: u.content.clone().map(|c| (c.into_bytes(), unit_attrs)),
                shown: u.content.clone().unwrap_or_default(),
            });
        }
        let changes = entries
            .iter()
            .map(Entry::change)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut run = Run {
            systemctl: systemd::Systemctl {
                check_mode: ctx.check_mode,
                ..Default::default()
            },
            changed: changes.iter().any(Change::any),
            created_directories: Vec::new(),
            unit_states: Vec::new(),
            dirs: Vec::new(),
        };
        run.directories(&dir_plans)?;

        if present {
            run.present(&args, &entries, &changes, &units)?;
        } else {
            run.absent(&args, &entries, &changes, &units)?;
        }
        Ok(run.response(&entries, &changes, ctx.check_mode, present))
    }
}

/// What a run did (or, in check mode, would do).
struct Run {
    systemctl: systemd::Systemctl,
    changed: bool,
    created_directories: Vec<String>,
    /// Per unit: (enabled, active) after the run, `None` where not managed.
    unit_states: Vec<(Option<bool>, Option<bool>)>,
    /// Per directory: (path, changed) and the diff of its attributes.
    dirs: Vec<(Value, Option<Diff>)>,
}

/// A directory's owner, group and mode now (`None`: missing); a link or anything but a
/// directory at its path is refused.
fn dir_state(d: &wanted::Directory) -> anyhow::Result<Option<FileState>> {
    use std::os::unix::fs::MetadataExt as _;
    match std::fs::symlink_metadata(&d.path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow!("{}: reading {}: {e}", d.label, d.path.display())),
        Ok(m) if m.file_type().is_symlink() => Err(anyhow!(
            "{}: {} is a symbolic link: refusing to follow it",
            d.label,
            d.path.display()
        )),
        Ok(m) if !m.is_dir() => Err(anyhow!(
            "{}: {} is not a directory",
            d.label,
            d.path.display()
        )),
        Ok(m) => Ok(Some(FileState {
            contents: Vec::new(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
        })),
    }
}

impl Run {
    /// Create the missing directories and give each its owner, group and mode.
    fn directories(
        &mut self,
        plans: &[(&wanted::Directory, Option<FileState>)],
    ) -> anyhow::Result<()> {
        let check = self.systemctl.check_mode;
        for (d, current) in plans {
            let attrs = Attrs {
                owner: Some(d.owner.clone()),
                group: Some(d.group.clone()),
                mode: Some(d.mode),
            };
            let path = d.path.display().to_string();
            let change = match current {
                None => true,
                Some(cur) => {
                    ansible_module::fs::plan(Some(cur), &[], &attrs)
                        .map_err(|e| anyhow!("{}: {e}", d.label))?
                        .attributes
                }
            };
            if !check && change {
                if current.is_none() {
                    create_dir(&d.path)?;
                }
                ansible_module::fs::set_attrs(&d.path, &attrs)
                    .map_err(|e| anyhow!("{}: {e}", d.label))?;
            }
            if current.is_none() {
                self.created_directories.push(path.clone());
            }
            let diff = match current {
                Some(cur) if change => Some(attributes_diff(&path, cur, &attrs)),
                _ => None,
            };
            self.changed |= change;
            self.dirs
                .push((json!({"path": path, "changed": change}), diff));
        }
        Ok(())
    }

    fn present(
        &mut self,
        args: &Args,
        entries: &[Entry],
        changes: &[Change],
        units: &[wanted::Unit],
    ) -> anyhow::Result<()> {
        let check = self.systemctl.check_mode;
        let mut dirs: Vec<&Path> = entries.iter().filter_map(|e| e.path.parent()).collect();
        dirs.push(&args.systemd_dir);
        for dir in dirs {
            let shown = dir.display().to_string();
            if !dir.exists() && !self.created_directories.contains(&shown) {
                if !check {
                    create_dir(dir)?;
                }
                self.created_directories.push(shown);
                self.changed = true;
            }
        }
        for (e, change) in entries.iter().zip(changes) {
            let Some((bytes, attrs)) = &e.wanted else {
                continue;
            };
            if check || !change.any() {
                continue;
            }
            let written = if change.contents {
                ansible_module::fs::write_atomic(&e.path, bytes, attrs)
            } else {
                ansible_module::fs::set_attrs(&e.path, attrs)
            };
            written.map_err(|err| anyhow!("{}: {err}", e.label))?;
        }
        if !args.manage_services {
            self.unit_states = vec![(None, None); units.len()];
            return Ok(());
        }
        let units_changed = entries
            .iter()
            .zip(changes)
            .any(|(e, c)| e.unit && c.contents);
        if units_changed {
            self.systemctl.change(&["daemon-reload"])?;
        }
        for u in units {
            let state = self.converge(u, u.enabled, u.active)?;
            self.unit_states.push(state);
        }
        Ok(())
    }

    fn absent(
        &mut self,
        args: &Args,
        entries: &[Entry],
        changes: &[Change],
        units: &[wanted::Unit],
    ) -> anyhow::Result<()> {
        let check = self.systemctl.check_mode;
        for u in units {
            let exists = entries
                .iter()
                .any(|e| e.unit && e.label == u.label && e.current.is_some());
            let state = if args.manage_services && exists {
                self.converge(u, Some(false), Some(false))?
            } else {
                (None, None)
            };
            self.unit_states.push(state);
        }
        for (e, change) in entries.iter().zip(changes) {
            if change.contents && !check {
                std::fs::remove_file(&e.path)
                    .with_context(|| format!("{}: removing {}", e.label, e.path.display()))?;
            }
        }
        let units_removed = entries
            .iter()
            .zip(changes)
            .any(|(e, c)| e.unit && c.contents);
        if args.manage_services && units_removed {
            self.systemctl.change(&["daemon-reload"])?;
        }
        Ok(())
    }

    /// Query a unit's states and change what differs from the wanted ones; the states after.
    fn converge(
        &mut self,
        u: &wanted::Unit,
        enabled: Option<bool>,
        active: Option<bool>,
    ) -> anyhow::Result<(Option<bool>, Option<bool>)> {
        let sc = &mut self.systemctl;
        let enablement = match enabled {
            Some(_) => sc.enablement(&u.name)?,
            None => String::new(),
        };
        let activity = match active {
            Some(_) => sc.activity(&u.name)?,
            None => String::new(),
        };
        let (enable, start) =
            systemd::actions(&u.label, &u.name, &enablement, &activity, enabled, active)?;
        // Stop before disabling, enable before starting: as `systemctl disable --now` and
        // `enable --now` order them.
        let order = if active == Some(false) {
            [start, enable]
        } else {
            [enable, start]
        };
        for verb in order.into_iter().flatten() {
            sc.change(&[verb, &u.name])
                .map_err(|e| anyhow!("{}: {e}", u.label))?;
            self.changed = true;
        }
        let after_enabled = enabled.map(|want| match enable {
            Some(_) => want,
            None => systemd::is_enabled(&enablement),
        });
        let after_active = active.map(|want| match start {
            Some(_) => want,
            None => systemd::is_active(&activity),
        });
        Ok((after_enabled, after_active))
    }

    fn response(
        self,
        entries: &[Entry],
        changes: &[Change],
        check: bool,
        present: bool,
    ) -> Response {
        let mut diffs = Vec::new();
        let mut directories = Vec::new();
        for (item, diff) in self.dirs {
            directories.push(item);
            diffs.extend(diff);
        }
        let mut units = Vec::new();
        let mut files = Vec::new();
        let mut states = self.unit_states.iter();
        for (e, change) in entries.iter().zip(changes) {
            let path = e.path.display().to_string();
            if change.contents || change.created {
                let before = e
                    .current
                    .as_ref()
                    .map(|c| describe(&c.contents, None))
                    .unwrap_or_default();
                diffs.push(Diff {
                    before: Value::String(before),
                    after: Value::String(if present {
                        e.shown.clone()
                    } else {
                        String::new()
                    }),
                    before_header: Some(path.clone()),
                    after_header: Some(path.clone()),
                });
            }
            if change.attributes && !change.created {
                if let (Some(cur), Some((_, attrs))) = (&e.current, &e.wanted) {
                    diffs.push(attributes_diff(&path, cur, attrs));
                }
            }
            let mut item = json!({"path": path, "changed": change.any()});
            if e.unit {
                let (enabled, active) = states.next().copied().unwrap_or_default();
                item["name"] = json!(e.path.file_name().map(|n| n.to_string_lossy()));
                item["enabled"] = json!(enabled);
                item["active"] = json!(active);
                units.push(item);
            } else {
                files.push(item);
            }
        }
        let changed_files = changes.iter().filter(|c| c.any()).count();
        let msg = format!(
            "{} units, {} files: {changed_files} files {}{}",
            units.len(),
            files.len(),
            if present { "written" } else { "removed" },
            if check && self.changed {
                " (check mode)"
            } else {
                ""
            }
        );
        let reloaded = self
            .systemctl
            .commands
            .iter()
            .any(|c| c.ends_with("daemon-reload"));
        Response::new()
            .changed(self.changed)
            .msg(msg)
            .field("units", units)
            .field("files", files)
            .field("directories", directories)
            .field("daemon_reload", reloaded)
            .field("created_directories", self.created_directories)
            .field("commands", self.systemctl.commands)
            .diffs(diffs)
    }
}

/// What is at a managed path; a link, a directory or a device there is refused, naming the entry.
fn read(label: &str, path: &Path) -> anyhow::Result<Option<FileState>> {
    FileState::read(path).map_err(|e| anyhow!("{label}: {e}"))
}

/// The build with this SHA-256 from the transport's cache of the user the module runs as; `None`
/// when it is not there (or not whole), for the action plugin to upload it.
fn cached_build(sha256: &str) -> anyhow::Result<Option<Vec<u8>>> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    let home = home.ok_or_else(|| anyhow!("files: HOME is not set, so no build cache"))?;
    let path = Path::new(&home).join(BUILD_CACHE).join(sha256);
    let state = FileState::read(&path).map_err(|e| anyhow!("files: the build cache: {e}"))?;
    Ok(state
        .map(|s| s.contents)
        .filter(|bytes| hex(&Sha256::digest(bytes)) == sha256))
}

/// The build Ansible's own binary-module path uploaded for this task (`files[].src`, set by the
/// action plugin), which must have its SHA-256.
fn uploaded_build(label: &str, src: &Path, sha256: &str) -> anyhow::Result<Vec<u8>> {
    let state = FileState::read(src).map_err(|e| anyhow!("{label}.src: {e}"))?;
    let bytes = state
        .map(|s| s.contents)
        .ok_or_else(|| anyhow!("{label}.src: {} does not exist", src.display()))?;
    if hex(&Sha256::digest(&bytes)) != sha256 {
        anyhow::bail!(
            "{label}.src: {} does not have the sha256 {sha256}",
            src.display()
        );
    }
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's bytes as the diff shows them: text as it is, anything else by size and digest.
fn describe(bytes: &[u8], build: Option<&str>) -> String {
    match (build, std::str::from_utf8(bytes)) {
        (None, Ok(text)) if !text.contains('\0') => text.to_owned(),
        _ => format!(
            "{}{} bytes, sha256 {}\n",
            build.map(|b| format!("build {b}: ")).unwrap_or_default(),
            bytes.len(),
            hex(&Sha256::digest(bytes))
        ),
    }
}

fn attributes_diff(path: &str, cur: &FileState, attrs: &Attrs) -> Diff {
    let show = |owner: String, group: String, mode: u32| {
        Value::String(format!(
            "owner: {owner}\ngroup: {group}\nmode: '{mode:04o}'\n"
        ))
    };
    let uid = |o: &Option<String>| {
        o.as_deref()
            .and_then(|o| ansible_module::fs::resolve_uid(o).ok())
            .map_or(cur.uid, |u| u.as_raw())
    };
    let gid = |g: &Option<String>| {
        g.as_deref()
            .and_then(|g| ansible_module::fs::resolve_gid(g).ok())
            .map_or(cur.gid, |g| g.as_raw())
    };
    Diff {
        before: show(cur.uid.to_string(), cur.gid.to_string(), cur.mode),
        after: show(
            uid(&attrs.owner).to_string(),
            gid(&attrs.group).to_string(),
            attrs.mode.unwrap_or(cur.mode),
        ),
        before_header: Some(format!("{path} (owner, group, mode)")),
        after_header: Some(format!("{path} (owner, group, mode)")),
    }
}

/// A missing directory (and those above it), root's, 0755: systemd and the services read it.
fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}
