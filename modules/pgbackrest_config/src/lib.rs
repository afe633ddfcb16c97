//! `pgbackrest_config`: render `/etc/pgbackrest/pgbackrest.conf`, validated, secret-safe, atomic.
//!
//! The configuration is given as data (`global`, `stanzas`, `command_sections`), validated
//! against the options of the target's pgBackRest release (`pgbackrest_version`, or what
//! `pgbackrest version` says; every release from 2.45 on is known) before anything is written
//! (unknown or misplaced options, INI injection, incomplete S3/cipher/block settings, placeholder
//! or weak secrets), rendered with tera (a built-in template, or the operator's own), compared
//! with what is on disk (bytes, owner, group, mode) and written atomically. Secret values never
//! leave the module: the diff shows `********`, and `******** (changed)` where a secret changed.

mod render;
pub mod validate;

use ansible_module::fs::{Attrs, FileState};
use ansible_module::process::{Cmd, CmdError};
use ansible_module::{Context, Diff, Kind, Module, Response};
use anyhow::{bail, Context as _};
use pgbackrest::releases::{self, Version};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

pub use render::Section;

ansible_module::choices! {
    /// `state`
    pub enum State {
        /// The file exists with this content.
        Present = "present",
        /// The file does not exist.
        Absent = "absent",
    }
}

ansible_module::options! {
    /// The module's options, as documented.
    pub struct Args {
        /// `path`
        path: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `global`
        global: Map<String, Value> = dict().default(json!({})).hide_value(),
        /// `stanzas`
        stanzas: Map<String, Value> = dict().default(json!({})).hide_value(),
        /// `command_sections`
        command_sections: Map<String, Value> = dict().default(json!({})).hide_value(),
        /// `owner`
        owner: String = str().default("postgres"),
        /// `group`
        group: String = str().default("postgres"),
        /// `mode`: an octal string, or the number YAML made of `0640`.
        mode: Value = new(Kind::Raw).default("0640"),
        /// `state`
        state: State = str().choices(State::NAMES).default("present"),
        /// `backup`
        backup: bool = bool().default(false),
        /// `template`
        template: Option<PathBuf> = path(),
        /// `vars`
        vars: Map<String, Value> = dict().default(json!({})).hide_value(),
        /// `min_cipher_pass_length`
        min_cipher_pass_length: i64 = int().default(20),
        /// `pgbackrest_version`: the release to validate for (empty: ask the target's pgBackRest).
        pgbackrest_version: Option<String> = str(),
        /// `pgbackrest_path`
        pgbackrest_path: String = str().default("pgbackrest"),
    }
}

/// `pgbackrest_path`'s default: found on PATH, and when it is not there, pgBackRest is taken to
/// be not installed yet (rather than a typo in an explicit path, which fails).
const DEFAULT_PGBACKREST: &str = "pgbackrest";

/// The largest `min_cipher_pass_length` taken: a longer minimum is a typo.
const MAX_CIPHER_PASS_LENGTH: i64 = 1024;

/// The Ansible module.
pub struct PgbackrestConfig;

impl Module for PgbackrestConfig {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_config";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        // Before anything can fail with a message: every secret value is known to the scrubber.
        validate::register_secrets(&args, ctx);
        let mode = parse_mode(&args.mode)?;
        // Anyone able to write the file could add options pgBackRest runs as postgres with; a
        // file with a repository secret is for its owner and group only.
        if mode & 0o002 != 0 || (mode & 0o007 != 0 && validate::has_secrets(&args)) {
            bail!(
                "mode: '{mode:04o}' gives others access to a pgBackRest configuration{}; \
                 use 0640 or 0600",
                if mode & 0o002 != 0 {
                    ""
                } else {
                    " that holds secrets"
                }
            );
        }
        validate::check_vars(&args).map_err(anyhow::Error::msg)?;
        if !(0..=MAX_CIPHER_PASS_LENGTH).contains(&args.min_cipher_pass_length) {
            bail!(
                "min_cipher_pass_length must be between 0 and {MAX_CIPHER_PASS_LENGTH}, got {}",
                args.min_cipher_pass_length
            );
        }
        let given = given_version(&args)?;
        let attrs = Attrs {
            owner: Some(args.owner.clone()),
            group: Some(args.group.clone()),
            mode: Some(mode),
        };
        ansible_module::fs::resolve_uid(&args.owner).map_err(|e| anyhow::anyhow!("owner: {e}"))?;
        ansible_module::fs::resolve_gid(&args.group).map_err(|e| anyhow::anyhow!("group: {e}"))?;
        if args.path.file_name().is_none() || !args.path.is_absolute() {
            bail!(
                "path must be an absolute file path, got '{}'",
                args.path.display()
            );
        }
        // A link or a directory at the path is refused here, before anything: named as `path`.
        let current = FileState::read(&args.path).map_err(|e| anyhow::anyhow!("path: {e}"))?;
        match args.state {
            State::Absent => absent(&args, current, ctx),
            State::Present => present(&args, given, current, &attrs, ctx),
        }
    }
}

/// `pgbackrest_version`, when given (empty counts as not given: the role's default).
fn given_version(args: &Args) -> anyhow::Result<Option<Version>> {
    match args.pgbackrest_version.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => Version::parse(text).map(Some).ok_or_else(|| {
            anyhow::anyhow!(
                "pgbackrest_version must be a pgBackRest release such as '2.54' or '2.54.2', \
                 got '{}'",
                text.escape_default()
            )
        }),
    }
}

/// The release to validate for, and the commands run to find it: `pgbackrest_version`, else
/// `PGBACKREST_PATH version` on the target (read-only: it runs in check mode too), else, when
/// the default `pgbackrest` is not on PATH (not installed yet), the table's base release, with a
/// warning.
fn target_release(
    args: &Args,
    given: Option<Version>,
    ctx: &mut Context,
) -> anyhow::Result<(validate::Release, Vec<String>)> {
    if let Some(version) = given {
        return Ok((
            validate::Release::new(version, validate::Source::Option),
            Vec::new(),
        ));
    }
    let cmd = Cmd::new(&args.pgbackrest_path).arg("version");
    let commands = vec![cmd.display()];
    let release = match cmd.output() {
        Ok(out) => match Version::from_output(&out.stdout).filter(|_| out.success()) {
            Some(version) => validate::Release::new(version, validate::Source::Target),
            None => bail!(
                "pgbackrest_path: `{}` did not print a pgBackRest version ({}); \
                 set pgbackrest_version to the release the target runs",
                cmd.display(),
                CmdError::Failed {
                    command: cmd.display(),
                    output: out
                }
            ),
        },
        Err(CmdError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound
                && args.pgbackrest_path == DEFAULT_PGBACKREST =>
        {
            let base = releases::base();
            ctx.warn(format!(
                "pgBackRest is not installed on the target (no {DEFAULT_PGBACKREST} on PATH): \
                 the configuration is checked against pgBackRest {base}, the oldest release \
                 this module knows; set pgbackrest_version to the release that will read it"
            ));
            validate::Release::new(base, validate::Source::Default)
        }
        Err(e) => bail!("pgbackrest_path: {e}; set pgbackrest_version or pgbackrest_path"),
    };
    let version = release.version;
    if version < releases::base() {
        ctx.warn(format!(
            "pgBackRest {version} is older than {}, the oldest release this module knows: the \
             configuration is checked against {0}'s options, so one that {version} lacks is \
             not refused",
            releases::base()
        ));
    } else if version > releases::newest() {
        ctx.warn(format!(
            "pgBackRest {version} is newer than {}, the newest release this module knows: an \
             option added since is refused as unknown",
            releases::newest()
        ));
    }
    Ok((release, commands))
}

/// `mode` as Ansible's file modules take it (`ansible_module::fs::octal_mode`).
fn parse_mode(mode: &Value) -> anyhow::Result<u32> {
    ansible_module::fs::octal_mode(mode)
        .ok_or_else(|| anyhow::anyhow!("mode must be an octal mode such as '0640', got {mode}"))
}

fn present(
    args: &Args,
    given: Option<Version>,
    current: Option<FileState>,
    attrs: &Attrs,
    ctx: &mut Context,
) -> anyhow::Result<Response> {
    let (release, commands) = target_release(args, given, ctx)?;
    let sections = validate::sections(args, &release, ctx).map_err(|errors| {
        anyhow::anyhow!(
            "refusing to write {}: {}",
            args.path.display(),
            errors.join("; ")
        )
    })?;
    let template = match &args.template {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("template: reading {}", path.display()))?,
        ),
        None => None,
    };
    let text = render::render(&sections, template.as_deref(), args)
        .context("rendering the configuration")?;
    let change =
        ansible_module::fs::plan(current.as_ref(), text.as_bytes(), attrs).map_err(fs_err)?;
    let before = current
        .as_ref()
        .map(|c| String::from_utf8_lossy(&c.contents).into_owned())
        .unwrap_or_default();
    let parent = args.path.parent().unwrap_or(Path::new("/"));
    let create_parent = !parent.exists();

    let mut backup_file = None;
    if !ctx.check_mode && change.any() {
        if create_parent {
            create_dir(parent, &args.group)?;
        }
        if change.contents {
            if let (true, Some(cur)) = (args.backup, &current) {
                backup_file = Some(make_backup(&args.path, cur)?);
            }
            ansible_module::fs::write_atomic(&args.path, text.as_bytes(), attrs).map_err(fs_err)?;
        } else {
            ansible_module::fs::set_attrs(&args.path, attrs).map_err(fs_err)?;
        }
    }

    let (masked_before, masked_after) = pgbackrest::conf::mask_pair(&before, &text);
    let what = match (change.created, change.contents, change.attributes) {
        (true, ..) => "created",
        (false, true, _) => "updated",
        (false, false, true) => "owner, group or mode changed",
        _ => "unchanged",
    };
    let mut response = Response::new()
        .changed(change.any())
        .msg(format!(
            "{} {what}{}",
            args.path.display(),
            if ctx.check_mode && change.any() {
                " (check mode)"
            } else {
                ""
            }
        ))
        .field("path", args.path.display().to_string())
        .field("state", "present")
        .field(
            "sections",
            sections.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        )
        .field("checksum", render::sha256_hex(text.as_bytes()))
        .field("pgbackrest_version", release.version.to_string())
        .field("pgbackrest_version_source", release.source.name())
        .field("commands", commands)
        .diff(Diff {
            before: Value::String(masked_before),
            after: Value::String(masked_after),
            before_header: Some(args.path.display().to_string()),
            after_header: Some(args.path.display().to_string()),
        });
    if create_parent {
        response = response.field("created_directory", parent.display().to_string());
    }
    if let Some(b) = backup_file {
        response = response.field("backup_file", b);
    }
    Ok(response)
}

fn absent(args: &Args, current: Option<FileState>, ctx: &mut Context) -> anyhow::Result<Response> {
    let Some(cur) = current else {
        return Ok(Response::new()
            .msg(format!("{} is absent", args.path.display()))
            .field("path", args.path.display().to_string())
            .field("state", "absent"));
    };
    let before = String::from_utf8_lossy(&cur.contents).into_owned();
    let mut response = Response::new().changed(true);
    if !ctx.check_mode {
        if args.backup {
            response = response.field("backup_file", make_backup(&args.path, &cur)?);
        }
        std::fs::remove_file(&args.path)
            .with_context(|| format!("removing {}", args.path.display()))?;
    }
    let (masked_before, _) = pgbackrest::conf::mask_pair(&before, "");
    Ok(response
        .msg(format!(
            "{} removed{}",
            args.path.display(),
            if ctx.check_mode { " (check mode)" } else { "" }
        ))
        .field("path", args.path.display().to_string())
        .field("state", "absent")
        .diff(Diff {
            before: Value::String(masked_before),
            after: Value::String(String::new()),
            before_header: Some(args.path.display().to_string()),
            after_header: None,
        }))
}

/// Create a missing parent directory: root-owned, the file's group, 0750, so the file's user can
/// reach it but neither it nor its group can add or swap files in it (a link planted beside the
/// file). Missing directories above it are created 0755 (as `mkdir -p` does), or the file's user
/// could not reach its own directory through them.
fn create_dir(dir: &Path, group: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    ansible_module::fs::set_attrs(
        dir,
        &Attrs {
            owner: Some("0".to_owned()),
            group: Some(group.to_owned()),
            mode: Some(0o750),
        },
    )
    .map_err(fs_err)
}

/// An [`ansible_module::fs`] error for the module's result, as its text: converting the typed
/// error itself (`?`) would add anyhow's code for one more error type, about 1.7 KB, to the
/// binary that is closest to its 1 MiB budget.
fn fs_err(err: ansible_module::Error) -> anyhow::Error {
    anyhow::anyhow!("{err}")
}

/// Keep the previous file beside it, as Ansible's `backup: true` does:
/// `PATH.PID.YYYY-MM-DD@HH:MM:SS~`, with the original's owner, group and mode (it holds secrets).
fn make_backup(path: &Path, current: &FileState) -> anyhow::Result<String> {
    let stamp = render::utc_stamp(std::time::SystemTime::now());
    let backup = PathBuf::from(format!(
        "{}.{}.{stamp}~",
        path.display(),
        std::process::id()
    ));
    let attrs = Attrs {
        owner: Some(current.uid.to_string()),
        group: Some(current.gid.to_string()),
        mode: Some(current.mode),
    };
    ansible_module::fs::write_atomic(&backup, &current.contents, &attrs)
        .map_err(fs_err)
        .context("writing the backup copy")?;
    Ok(backup.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_accepts_octal_strings_and_yaml_numbers() {
        assert_eq!(parse_mode(&json!("0640")).unwrap(), 0o640);
        assert_eq!(parse_mode(&json!("600")).unwrap(), 0o600);
        assert_eq!(parse_mode(&json!(0o640)).unwrap(), 0o640);
        assert_eq!(
            parse_mode(&json!("u=rw")).unwrap_err().to_string(),
            "mode must be an octal mode such as '0640', got \"u=rw\""
        );
        assert!(parse_mode(&json!("0890")).is_err());
    }
}
