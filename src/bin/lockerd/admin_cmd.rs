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
