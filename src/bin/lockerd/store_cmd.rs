//! `lockerd store ...`, `lockerd audit ...`.

use crate::ctx::{open_db, Ctx};
use anyhow::{bail, Context};
use clap::Subcommand;
use lockerd::store::{self, key, AuditEntry, Create, Db, DbKey, Method, Outcome};
use lockerd::timefmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Create a new, empty encrypted store.
    Init {
        /// Generate a new random key into this owner-only file (must not exist) and use it.
        #[arg(long, value_name = "FILE")]
        generate_key: Option<PathBuf>,
    },
    /// Open the store and check the key, schema version and integrity.
    Check {
        #[arg(long)]
        json: bool,
    },
    /// Re-encrypt the store under a new key read from an owner-only file.
    Rekey {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// Walk the hash chain and report the first broken link.
    Verify {
        #[arg(long)]
        json: bool,
        /// Also check a head published earlier (`lockerd/<kiosk>/audit_head`, as
        /// `SEQ:HASH` or just the hex HASH) is still in the chain: a rewritten tail fails.
        #[arg(long, value_name = "HEAD")]
        against: Option<String>,
    },
    /// List audit rows, oldest first, as `lockerctl audit list` does (read straight from
    /// the store, also while the daemon runs).
    List {
        /// Only rows since: a duration back from now (15m, 2h, 7d) or a UTC date/time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object, `{"rows": [...]}`.
        #[arg(long)]
        json: bool,
    },
}

pub fn store(ctx: &Ctx, cmd: StoreCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCmd::Init { generate_key } => {
            let path = &ctx.config.store.path;
            if path.exists() {
                bail!("a database already exists at {}", path.display());
            }
            let (db, info, source) = if let Some(kf) = generate_key {
                if kf.exists() {
                    bail!(
                        "{} already exists; refusing to overwrite a key file",
                        kf.display()
                    );
                }
                let k = DbKey::generate();
                key::write_key_file(&kf, &k)?;
                let opened = Db::open(
                    path,
                    &k,
                    Create::MustBeNew,
                    Duration::from_millis(ctx.config.store.busy_timeout_ms),
                );
                match opened {
                    Ok((db, info)) => (db, info, store::KeySource::KeyFile(kf)),
                    Err(e) => {
                        // Leave nothing behind, so a retry starts clean.
                        let _ = std::fs::remove_file(&kf);
                        for suffix in ["", "-wal", "-shm"] {
                            let mut p = path.as_os_str().to_owned();
                            p.push(suffix);
                            let _ = std::fs::remove_file(std::path::PathBuf::from(p));
                        }
                        return Err(e.into());
                    }
                }
            } else {
                open_db(ctx, Create::MustBeNew)?
            };
            let mut db = db;
            db.audit_append(&AuditEntry::new(
                Method::Admin,
                Outcome::Info,
                "store created",
            ))?;
            println!(
                "created {} (schema v{}, key from {source}, {:.0} ms)",
                path.display(),
                info.schema_version,
                info.open_ms
            );
            Ok(ExitCode::SUCCESS)
        }
        StoreCmd::Check { json } => {
            let (db, info, source) = open_db(ctx, Create::MustExist)?;
            let rep = db.check(info.open_ms)?;
            if json {
                println!("{}", serde_json::to_string(&rep)?);
            } else {
                println!(
                    "store {}: {}",
                    rep.path.display(),
                    if rep.ok { "ok" } else { "PROBLEMS FOUND" }
                );
                println!(
                    "  key: {source} (opened in {:.0} ms, key derivation included)",
                    rep.open_ms
                );
                println!(
                    "  schema: v{} ({})",
                    rep.schema_version,
                    if rep.schema_version == store::schema::SCHEMA_VERSION {
                        "current"
                    } else {
                        "outdated"
                    }
                );
                println!(
                    "  integrity: {}; cipher (HMAC) integrity: {}",
                    rep.integrity, rep.cipher_integrity
                );
                println!(
                    "  users {}, face templates {}, audit rows {}; audit chain: {}",
                    rep.users, rep.templates, rep.audit_rows, rep.audit_chain
                );
            }
            Ok(if rep.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        StoreCmd::Rekey { new_key_file } => {
            let new_key = key::load_key_file(&new_key_file)?;
            let (mut db, _, source) = open_db(ctx, Create::MustExist)?;
            db.rekey(&new_key)
                .context("rekey failed; the database still opens with the old key")?;
            let mut db2 = drop_and_reopen(db, ctx, &new_key)?;
            db2.audit_append(&AuditEntry::new(
                Method::Admin,
                Outcome::Info,
                "store rekeyed",
            ))?;
            println!(
                "rekeyed {}; it now opens with {} (was {source}). Update store.key_file or the db-key credential.",
                ctx.config.store.path.display(),
                new_key_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn drop_and_reopen(db: Db, ctx: &Ctx, k: &DbKey) -> anyhow::Result<Db> {
    drop(db);
    let (db, _) = Db::open(
        &ctx.config.store.path,
        k,
        Create::MustExist,
        Duration::from_millis(ctx.config.store.busy_timeout_ms),
    )
    .context("the database does not open with the new key after the rekey")?;
    Ok(db)
}

pub fn audit(ctx: &Ctx, cmd: AuditCmd) -> anyhow::Result<ExitCode> {
    let (db, _, _) = open_db(ctx, Create::MustExist)?;
    match cmd {
        AuditCmd::Verify { json, against } => {
            let mut rep = db.audit_verify()?;
            if let (Some(head), true) = (against, rep.ok) {
                let (seq, hash) = match head.split_once(':') {
                    Some((s, h)) => (
                        Some(s.trim().parse::<i64>().with_context(|| {
                            format!("--against {head:?}: SEQ:HASH with a number before the colon")
                        })?),
                        h,
                    ),
                    None => (None, head.as_str()),
                };
                let hash = hex::decode(hash.trim())
                    .with_context(|| format!("--against {head:?}: the hash is not hex"))?;
                if !db.audit_contains(seq, &hash)? {
                    rep.ok = false;
                    rep.problem = Some(format!(
                        "the published head {head} is not in this chain: rows were rewritten \
                         or cut off after it was published"
                    ));
                }
            }
            if json {
                println!("{}", serde_json::to_string(&rep)?);
            } else if rep.ok {
                println!(
                    "audit chain ok: {} rows, head {}",
                    rep.rows,
                    hex::encode(&rep.head_hash)
                );
            } else {
                let at = rep
                    .first_broken_seq
                    .map(|s| format!(" at row {s}"))
                    .unwrap_or_default();
                println!(
                    "audit chain BROKEN{at}: {}",
                    rep.problem.as_deref().unwrap_or("")
                );
            }
            Ok(if rep.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCmd::List { since, limit, json } => {
            let since_ms = match since {
                Some(s) => timefmt::parse_since(&s, lockerd::types::now_ms()).with_context(|| {
                    format!("--since {s:?}: use a duration (15m, 2h, 7d) or a UTC date/time (2026-11-21, 2026-11-21T07:00)")
                })?,
                None => i64::MIN,
            };
            // The same rows, lines and JSON as `lockerctl audit list` (one printer).
            let rows = db
                .audit_list(since_ms, limit)?
                .iter()
                .map(lockerd::api::AuditItem::from)
                .collect();
            let mut out = std::io::stdout().lock();
            lockerd::ctl::print_response(
                &lockerd::api::Response::Audit { rows },
                json,
                false,
                &mut out,
            )
            .map_err(|e| anyhow::anyhow!(e.message))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
