//! `lockerd-lab bench ...`: the store's open time and durable write rate (and the mixed
//! workload the kill -9 fault test replays), D-Bus round trips, the gallery build.

use crate::ctx::{open_db, Ctx};
use clap::Subcommand;
use lockerd::store::{self, AuditEntry, Create, Db, Method, Outcome};
use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

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
    /// Publish a synthetic user directory to a fleet's broker (signed, templates sealed
    /// to each kiosk's card key) for `scripts/bench-fleet.sh` (transport, not matching).
    FleetRecords {
        /// The broker (mqtt://127.0.0.1:PORT).
        #[arg(long)]
        url: String,
        /// An admin key file (`lockerctl remote keygen`).
        #[arg(long)]
        key: std::path::PathBuf,
        #[arg(long)]
        fleet: String,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 5)]
        templates: usize,
        /// Seal to these kiosks, comma-separated (default: every kiosk with a card).
        #[arg(long, value_delimiter = ',')]
        kiosks: Vec<String>,
    },
}

pub fn bench(ctx: &Ctx, cmd: BenchCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCmd::FleetRecords {
            url,
            key,
            fleet,
            users,
            templates,
            kiosks,
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let r = rt.block_on(crate::fleet_bench::publish(crate::fleet_bench::Directory {
                url: &url,
                key: &key,
                fleet: &fleet,
                users,
                templates,
                kiosks: &kiosks,
            }))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(ExitCode::SUCCESS)
        }
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
                from_photos: false,
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
