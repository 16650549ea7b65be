//! `lockerd admin ...`: users and enrollment, acting on the store directly (until the
//! D-Bus interface exists). Every change is an audit row.

use crate::store_cmd::open_db;
use crate::Ctx;
use anyhow::{bail, Context};
use clap::Subcommand;
use lockerd::store::{AuditEntry, Create, Method, Outcome};
use lockerd::types::Role;
use lockerd::vision::{enroll, models::Models};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Issue a single-use keypad code (optionally bound to a user).
    #[command(subcommand)]
    Otp(OtpCmd),
    /// Personal TOTP (authenticator app) with a keypad PIN.
    #[command(subcommand)]
    Totp(TotpCmd),
    /// Keypad lockout.
    #[command(subcommand)]
    Lockout(LockoutCmd),
    /// Enroll a user's face from photos and/or clips (a clip must show a blink).
    Enroll {
        name: String,
        /// Photos (.jpg/.png), clips (.mp4/.avi/...) or folders of frames.
        #[arg(long = "from", value_name = "PATH", required = true, num_args = 1..)]
        from: Vec<PathBuf>,
        /// Accept photos that fail the quality gate (small, turned, blurred).
        #[arg(long)]
        allow_poor_photos: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum OtpCmd {
    /// Issue a one-time code; prints what to type on the keypad (shown only once).
    Issue {
        /// Bind the code to this user (the grant is then audited as them).
        user: Option<String>,
        /// Validity: seconds, or 15m / 2h / 1d (default access.otp_default_ttl_s).
        #[arg(long)]
        ttl: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum TotpCmd {
    /// Give USER a TOTP secret (shown as an otpauth:// URI and a QR code), a keypad
    /// number and a PIN; replaces any earlier secret.
    Enroll {
        user: String,
        /// Choose the PIN instead of a random one (access.totp_pin_digits digits).
        #[arg(long)]
        pin: Option<String>,
        /// Do not draw the QR code.
        #[arg(long)]
        no_qr: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum LockoutCmd {
    /// Clear the keypad lockout and its escalation.
    Reset,
    /// Show the keypad lockout state.
    Show,
}

/// `90`, `15m`, `2h`, `1d` -> seconds.
fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (num, mul) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("--ttl {s:?}: use seconds or 15m / 2h / 1d"))?;
    Ok(n.saturating_mul(mul))
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user.
    Add {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["user", "admin"])]
        role: String,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a user with their templates and OTP material.
    Remove { name: String },
    /// Ban a user: kept so a match raises an alert, never granted.
    Ban { name: String },
    /// Lift a ban (back to the user role).
    Unban { name: String },
}

pub fn admin(ctx: &Ctx, cmd: AdminCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        AdminCmd::User(u) => user(ctx, u),
        AdminCmd::Otp(OtpCmd::Issue { user, ttl, json }) => {
            let (mut db, _, _) = open_db(ctx, Create::MustExist)?;
            let ttl_s = ttl.as_deref().map(parse_ttl).transpose()?;
            let u = user.as_deref().map(|n| db.require_user(n)).transpose()?;
            let now = lockerd::types::now_ms();
            let issued = lockerd::access::credentials::issue_code(
                &mut db,
                &ctx.config.access,
                u.as_ref(),
                ttl_s,
                now,
            )?;
            let mut entry = AuditEntry::new(Method::Admin, Outcome::Info, "one_time_code_issued")
                .evidence(
                    serde_json::json!({ "slot": issued.slot, "expires_ms": issued.expires_ms }),
                );
            if let Some(u) = &u {
                entry = entry.user(u.id, &u.name);
            }
            db.audit_append(&entry)?;
            if json {
                println!("{}", serde_json::to_string(&issued)?);
            } else {
                println!(
                    "one-time code{}: type  {}  on the keypad\nsingle use, valid until {}",
                    issued
                        .user
                        .as_deref()
                        .map(|u| format!(" for {u}"))
                        .unwrap_or_default(),
                    issued.keys,
                    lockerd::timefmt::iso_utc(issued.expires_ms)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Totp(TotpCmd::Enroll { user, pin, no_qr }) => {
            let (mut db, _, _) = open_db(ctx, Create::MustExist)?;
            let u = db.require_user(&user)?;
            let en = lockerd::access::credentials::enroll_totp(
                &mut db,
                &ctx.config.access,
                &u,
                &format!("lockerd-{}", ctx.config.daemon.kiosk_name),
                pin.as_deref(),
                lockerd::types::now_ms(),
            )?;
            db.audit_append(
                &AuditEntry::new(Method::Admin, Outcome::Info, "totp_enrolled")
                    .user(u.id, &u.name)
                    .evidence(serde_json::json!({ "keypad_no": en.keypad_no })),
            )?;
            if !no_qr {
                let qr = qrcode::QrCode::new(en.uri.as_bytes())?;
                let art = qr
                    .render::<qrcode::render::unicode::Dense1x2>()
                    .dark_color(qrcode::render::unicode::Dense1x2::Light)
                    .light_color(qrcode::render::unicode::Dense1x2::Dark)
                    .build();
                println!("{art}");
            }
            println!("{}", en.uri);
            println!(
                "{}: keypad number {}, PIN {} (shown once). At the keypad type:\n  {}#<PIN><6-digit code from the app>#   e.g. {}#{}123456#",
                en.user, en.keypad_no, en.pin, en.keypad_no, en.keypad_no, en.pin
            );
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Lockout(LockoutCmd::Reset) => {
            let (mut db, _, _) = open_db(ctx, Create::MustExist)?;
            db.lockout_save(&Default::default())?;
            db.audit_append(&AuditEntry::new(
                Method::Admin,
                Outcome::Info,
                "keypad_lockout_reset",
            ))?;
            println!("keypad lockout cleared (a running daemon picks it up at its next start or reset request)");
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Lockout(LockoutCmd::Show) => {
            let (db, _, _) = open_db(ctx, Create::MustExist)?;
            let s = db.lockout_load()?;
            let now = lockerd::types::now_ms();
            if s.until_ms > now {
                println!(
                    "locked until {} (lockout {} since the last reset)",
                    lockerd::timefmt::iso_utc(s.until_ms),
                    s.level
                );
            } else {
                println!(
                    "not locked; {} wrong entries counted, {} lockouts since the last reset",
                    s.strikes, s.level
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AdminCmd::Enroll {
            name,
            from,
            allow_poor_photos,
        } => {
            let (mut db, _, _) = open_db(ctx, Create::MustExist)?;
            let user = db.require_user(&name)?;
            let models =
                Models::load(&ctx.config.vision.models).context("loading the face models")?;
            let mut samples = Vec::new();
            for p in &from {
                let s =
                    enroll::samples_from_path(&models, &ctx.config.vision, p, allow_poor_photos)?;
                println!("{}: {} template(s)", p.display(), s.len());
                samples.extend(s);
            }
            if samples.is_empty() {
                bail!("nothing to enroll");
            }
            let items: Vec<_> = samples
                .into_iter()
                .map(|s| (s.embedding, s.quality, s.source))
                .collect();
            let ids = db.add_templates(user.id, &items)?;
            db.audit_append(
                &AuditEntry::new(Method::Admin, Outcome::Info, "face enrolled")
                    .user(user.id, &user.name)
                    .evidence(serde_json::json!({ "templates": ids.len(), "sources": from.len() })),
            )?;
            println!(
                "enrolled {} template(s) for {} ({} in total)",
                ids.len(),
                user.name,
                db.template_count(user.id)?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn user(ctx: &Ctx, cmd: UserCmd) -> anyhow::Result<ExitCode> {
    let (mut db, _, _) = open_db(ctx, Create::MustExist)?;
    let audit = |db: &mut lockerd::store::Db, what: &str, u: &lockerd::types::User| {
        db.audit_append(&AuditEntry::new(Method::Admin, Outcome::Info, what).user(u.id, &u.name))
    };
    match cmd {
        UserCmd::Add { name, role } => {
            let role = Role::parse(&role).unwrap_or(Role::User);
            let u = db.add_user(&name, role)?;
            audit(&mut db, "user added", &u)?;
            println!("added {} (id {}, {})", u.name, u.id, u.role);
        }
        UserCmd::List { json } => {
            for u in db.list_users()? {
                let n = db.template_count(u.id)?;
                if json {
                    let mut v = serde_json::to_value(&u)?;
                    v["templates"] = n.into();
                    println!("{v}");
                } else {
                    println!(
                        "{:>4}  {:<24} {:<7} {:<8} {} template(s)",
                        u.id,
                        u.name,
                        u.role,
                        if u.enabled { "enabled" } else { "disabled" },
                        n
                    );
                }
            }
        }
        UserCmd::Remove { name } => {
            let u = db.remove_user(&name)?;
            audit(&mut db, "user removed", &u)?;
            println!("removed {}", u.name);
        }
        UserCmd::Ban { name } => {
            let u = db.set_role(&name, Role::Banned)?;
            audit(&mut db, "user banned", &u)?;
            println!("banned {}", u.name);
        }
        UserCmd::Unban { name } => {
            let u = db.set_role(&name, Role::User)?;
            audit(&mut db, "user unbanned", &u)?;
            println!("unbanned {}", u.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
