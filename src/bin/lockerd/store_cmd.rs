//! `lockerd store ...`, `lockerd audit ...`, `lockerd bench store`.

use crate::Ctx;
use anyhow::{bail, Context};
use clap::Subcommand;
use lockerd::store::{self, key, AuditEntry, Create, Db, DbKey, Method, Outcome};
use lockerd::timefmt;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    /// List audit rows, oldest first.
    List {
        /// Only rows since: a duration back from now (15m, 2h, 7d) or a UTC date/time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 200)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// Store open time (key derivation included) and durable audit-write rate.
    Store {
        /// Audit rows to append (method "bench").
        #[arg(long, default_value_t = 200)]
        rows: u64,
        /// Print `committed SEQ` after each durable write (used by the crash test).
        #[arg(long)]
        progress: bool,
        /// A mixed workload instead of plain audit rows: users, face templates, one-time
        /// codes, lockout state and audit rows in turn, each write with its audit row in
        /// one transaction; `--progress` then prints `ack KIND VALUE` after each (the
        /// kill -9 fault test checks every acknowledged write is there afterwards).
        #[arg(long)]
        mixed: bool,
    },
    /// Round trips through the running daemon's D-Bus service, as the calling user.
    Dbus {
        /// status, users_list or unlock.
        #[arg(long, default_value = "status", value_parser = ["status", "users_list", "unlock"])]
        method: String,
        #[arg(long, default_value_t = 2000)]
        calls: u64,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
    },
    /// Building the in-memory gallery (the per-user spreads the matcher normalizes with,
    /// quadratic in templates) and one 1:N match, on synthetic embeddings (timing only).
    Gallery {
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 5)]
        templates: usize,
    },
}

/// Open the configured store directly (CLI use: no store thread needed).
pub fn open_db(
    ctx: &Ctx,
    create: Create,
) -> anyhow::Result<(Db, store::OpenInfo, store::KeySource)> {
    let (k, source) =
        store::resolve_key(&ctx.config.store.key_file, &ctx.config.store.path, ctx.demo)?;
    let (db, info) = Db::open(
        &ctx.config.store.path,
        &k,
        create,
        Duration::from_millis(ctx.config.store.busy_timeout_ms),
    )?;
    Ok((db, info, source))
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
            let rows = db.audit_list(since_ms, limit)?;
            let mut out = std::io::stdout().lock();
            for r in rows {
                if json {
                    let mut v = serde_json::to_value(&r)?;
                    v["time"] = serde_json::Value::String(timefmt::iso_utc(r.ts_ms));
                    v["evidence"] = serde_json::from_str(&r.evidence)
                        .unwrap_or(serde_json::Value::String(r.evidence.clone()));
                    writeln!(out, "{v}")?;
                } else {
                    let line = format!(
                        "{:>6}  {}  {:<6} {:<5} {:<16} {}  {}",
                        r.seq,
                        timefmt::iso_utc(r.ts_ms),
                        r.method,
                        r.outcome,
                        r.user_name.as_deref().unwrap_or("-"),
                        r.reason,
                        r.evidence
                    );
                    writeln!(out, "{}", lockerd::ctl::printable(&line))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn bench(ctx: &Ctx, cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::Gallery { users, templates } => {
            let r = bench_gallery(ctx, users, templates);
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Dbus {
            method,
            calls,
            concurrency,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let r = rt.block_on(lockerd::dbus::bench(&method, calls, concurrency))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Store {
            rows,
            progress,
            mixed,
        } => {
            let (mut db, info, _) = open_db(ctx, Create::IfMissing)?;
            let t0 = Instant::now();
            let mut out = std::io::stdout().lock();
            for i in 0..rows {
                let ack = if mixed {
                    mixed_write(&mut db, i)?
                } else {
                    let seq = db.audit_append(
                        &AuditEntry::new(Method::Bench, Outcome::Info, "bench write")
                            .evidence(serde_json::json!({ "i": i })),
                    )?;
                    format!("committed {seq}")
                };
                if progress {
                    writeln!(out, "{ack}")?;
                    out.flush()?;
                }
            }
            let secs = t0.elapsed().as_secs_f64();
            let summary = serde_json::json!({
                "open_ms": info.open_ms,
                "created": info.created,
                "rows": rows,
                "write_s": secs,
                "rows_per_s": if secs > 0.0 { rows as f64 / secs } else { 0.0 },
                "ms_per_row": if rows > 0 { secs * 1000.0 / rows as f64 } else { 0.0 },
            });
            writeln!(out, "{summary}")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One write of the mixed workload (`bench store --mixed`), chosen by `i`; returns the
/// acknowledgement line. Every write commits together with its audit row.
fn mixed_write(db: &mut Db, i: u64) -> anyhow::Result<String> {
    use lockerd::types::{Embedding, Role, EMBEDDING_DIM};
    let now = lockerd::types::now_ms();
    let tag = format!("{}-{i}", std::process::id());
    Ok(match i % 5 {
        0 => {
            let name = format!("u{tag}");
            db.atomically(|db| {
                let u = db.add_user(&name, Role::User)?;
                db.audit_append(
                    &AuditEntry::new(Method::Bench, Outcome::Info, "user_added").user(u.id, &name),
                )
            })?;
            format!("ack user {name}")
        }
        1 => {
            let users = db.list_users()?;
            let Some(u) = users.last() else {
                return Ok("ack none -".into());
            };
            let mut v = [0f32; EMBEDDING_DIM];
            for (k, x) in v.iter_mut().enumerate() {
                *x = ((k as f32 + 1.0) * (i as f32 + 0.5)).sin() * 0.1;
            }
            let id = db.atomically(|db| {
                let id = db.add_template(u.id, &Embedding(v), 0.9, "bench")?;
                db.audit_append(
                    &AuditEntry::new(Method::Bench, Outcome::Info, "template_added")
                        .user(u.id, &u.name),
                )?;
                Ok(id)
            })?;
            format!("ack template {id}")
        }
        2 => {
            let slot = db.atomically(|db| {
                let slot = db.code_free_slot(now)?;
                db.code_insert(slot, None, b"salt", b"hash", now, now + 60_000)?;
                db.audit_append(&AuditEntry::new(
                    Method::Bench,
                    Outcome::Info,
                    "code_issued",
                ))?;
                Ok(slot)
            })?;
            // Revoked at once, so the 99 slots never run out.
            db.code_revoke_slot(slot, now)?;
            format!("ack code {slot}")
        }
        3 => {
            let s = store::LockoutState {
                strikes: 0,
                level: (i / 5) as u32,
                until_ms: 0,
            };
            db.atomically(|db| {
                db.lockout_save(&s)?;
                db.audit_append(&AuditEntry::new(
                    Method::Bench,
                    Outcome::Info,
                    "lockout_saved",
                ))
            })?;
            format!("ack lockout {}", s.level)
        }
        _ => {
            let seq = db.audit_append(
                &AuditEntry::new(Method::Bench, Outcome::Info, "bench write")
                    .evidence(serde_json::json!({ "i": i })),
            )?;
            format!("ack audit {seq}")
        }
    })
}

/// `bench gallery`: time `Gallery::new` and one identify over synthetic users whose
/// embeddings are spread like dlib's (unit-scale, about 0.5-0.9 apart).
fn bench_gallery(ctx: &Ctx, users: usize, templates: usize) -> serde_json::Value {
    use lockerd::types::{Embedding, Role, EMBEDDING_DIM};
    use lockerd::vision::matcher::{Gallery, GalleryUser};
    // A fixed pseudo-random sequence: the same gallery on every run.
    let mut rng = lockerd::types::SplitMix64::new(0x9E37_79B9_7F4A_7C15);
    let mut vector = |centre: Option<&[f32; EMBEDDING_DIM]>, scale: f32| {
        let mut v = [0f32; EMBEDDING_DIM];
        for (k, x) in v.iter_mut().enumerate() {
            *x = centre.map_or(0.0, |c| c[k]) + (rng.next_f32() - 0.5) * scale;
        }
        v
    };
    let people: Vec<GalleryUser> = (0..users)
        .map(|i| {
            let centre = vector(None, 0.12);
            GalleryUser {
                user_id: i as i64 + 1,
                name: format!("u{i}"),
                role: Role::User,
                enabled: true,
                templates: (0..templates)
                    .map(|_| Embedding(vector(Some(&centre), 0.03)))
                    .collect(),
                legacy: vec![],
            }
        })
        .collect();
    let probe = people
        .first()
        .and_then(|u| u.templates.first())
        .cloned()
        .unwrap_or(Embedding([0.0; EMBEDDING_DIM]));
    let t0 = Instant::now();
    let gallery = Gallery::new(people);
    let build_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let t1 = Instant::now();
    let r = gallery.identify(&[probe.clone(), probe], ctx.config.vision.policy());
    let identify_ms = t1.elapsed().as_secs_f64() * 1000.0;
    serde_json::json!({
        "users": users,
        "templates_per_user": templates,
        "build_ms": build_ms,
        "identify_ms_2_probes": identify_ms,
        "spread_of_first_user": gallery.spread(0),
        "verdict": r.verdict,
    })
}
