//! `pgbackrest_info`: what the repository holds, read-only, for ad-hoc questions and plays.
//!
//! Runs `pgbackrest info --output=json` (for one stanza or all) with the configuration's secrets
//! registered for scrubbing, and returns each stanza's status (code, pgBackRest's message and
//! what the code means), its repositories, its backups (label, type, times, sizes, the backup it
//! depends on, the page-error flag) and its archive ranges, as return values and optionally as
//! the fact `pgbackrest_info`. It changes nothing, so check mode runs it as well.

use ansible_module::process::{Cmd, RunAs};
use ansible_module::{Context, Module, Response};
use anyhow::Context as _;
use pgbackrest::command::Pgbackrest;
use pgbackrest::info::{self, Info};
use pgbackrest::StanzaName;
use serde_json::{json, Value};
use std::path::PathBuf;

ansible_module::options! {
    /// The module's options, as documented.
    pub struct Args {
        /// `stanza`: one stanza, or every stanza of the repository when not given.
        stanza: Option<String> = str(),
        /// `config`
        config: PathBuf = path().default("/etc/pgbackrest/pgbackrest.conf"),
        /// `pgbackrest_path`
        pgbackrest_path: String = str().default("pgbackrest"),
        /// `become_user`
        become_user: Option<String> = str().default("postgres"),
        /// `io_timeout`
        io_timeout: Option<i64> = int(),
        /// `set_facts`
        set_facts: bool = bool().default(false),
    }
}

/// The Ansible module.
pub struct PgbackrestInfo;

impl Module for PgbackrestInfo {
    type Args = Args;
    const NAME: &'static str = "pgbackrest_info";

    fn execute(args: Args, ctx: &mut Context) -> anyhow::Result<Response> {
        let stanza = args.stanza.as_deref().map(StanzaName::parse).transpose()?;
        if let Some(t) = args.io_timeout.filter(|t| !(1..=86_400).contains(t)) {
            anyhow::bail!("io_timeout: {t} is out of range (1 to 86400 seconds)");
        }
        // Every secret of the configuration is scrubbed from all output: pgBackRest quotes parts
        // of its configuration in errors (an S3 key).
        let conf =
            pgbackrest::conf::read(&args.config, stanza.as_ref().map_or("", |s| s.as_str()))?;
        for secret in conf.secrets.iter().chain(&pgbackrest::conf::env_secrets()) {
            ctx.add_secret(secret);
        }
        RunAs::become_option(args.become_user.as_deref()).map_err(anyhow::Error::msg)?;
        let cmd = command(&args, stanza.as_ref());
        let out = cmd.run().context("pgbackrest info")?;
        let stanzas: Vec<Value> = info::parse_all(&out.stdout)?
            .iter()
            .filter(|(name, _)| stanza.as_ref().is_none_or(|s| s.as_str() == name))
            .map(|(name, i)| describe(name, i))
            .collect();
        let ok = !stanzas.is_empty() && stanzas.iter().all(|s| s["status"]["code"] == 0);
        let summary = match stanzas.len() {
            0 => "the repository holds no stanza".to_owned(),
            n => format!(
                "{n} stanza(s); {}",
                if ok {
                    "all ok"
                } else {
                    "not all ok: see status"
                }
            ),
        };
        let mut response = Response::new()
            .msg(summary)
            .field("ok", ok)
            .field("stanzas", &stanzas)
            .field("commands", [cmd.display()]);
        if args.set_facts {
            response = response.fact("pgbackrest_info", json!({"ok": ok, "stanzas": stanzas}));
        }
        Ok(response)
    }
}

fn command(args: &Args, stanza: Option<&StanzaName>) -> Cmd {
    // Without a stanza the command still wants one option pgBackRest reads: none is needed.
    let name = stanza.map_or(String::new(), |s| s.as_str().to_owned());
    let mut b = Pgbackrest::new(&args.pgbackrest_path, &args.config, &name, "off")
        .timeouts(args.io_timeout, None)
        .opt("--output=json");
    if stanza.is_none() {
        b = b.without_stanza();
    }
    b.cmd("info")
}

/// One stanza as returned.
fn describe(name: &str, i: &Info) -> Value {
    let backups: Vec<Value> = i
        .backups
        .iter()
        .map(|b| {
            json!({
                "label": b.label, "type": b.kind, "start": b.start, "stop": b.stop,
                "wal_start": b.wal_start, "wal_stop": b.wal_stop, "prior": b.prior,
                "error": b.error, "size": b.size, "repo_size": b.repo_size,
                "repo": b.repo_key,
            })
        })
        .collect();
    let archives: Vec<Value> = i
        .archives
        .iter()
        .map(|a| json!({"id": a.id, "min": a.min, "max": a.max, "repo": a.repo_key}))
        .collect();
    let repos: Vec<Value> = i
        .status
        .repos
        .iter()
        .map(|r| {
            json!({"key": r.key, "code": r.code, "message": r.message,
                   "meaning": info::meaning(r.code), "cipher": r.cipher})
        })
        .collect();
    let last = |kind: &str| {
        i.backups
            .iter()
            .rev()
            .find(|b| b.kind == kind)
            .map(|b| &b.label)
    };
    json!({
        "name": name,
        "status": {"code": i.status.code, "message": i.status.message,
                   "meaning": info::meaning(i.status.code)},
        "repos": repos,
        "pg_version": i.pg_version,
        "backups": backups,
        "last_full": last("full"),
        "last_diff": last("diff"),
        "last_incr": last("incr"),
        "archives": archives,
    })
}
