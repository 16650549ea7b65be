//! The admin commands shared by `lockerctl` (over D-Bus to the running daemon) and
//! `lockerd admin` (in process on the store while no daemon runs): one set of
//! commands, one mapping to [`Request`]s, one way of printing, two backends.
//!
//! Output: readable lines by default; `--json` prints one JSON object per command (JSON
//! lines for `watch` and `audit list --follow`). Exit codes (README "lockerctl"): 0 ok,
//! 1 other failure, 2 invalid argument, 3 not authorized, 4 no such user, 5 already
//! exists, 6 locked out, 7 busy, 8 unavailable (lockerd not running), 9 the operation
//! ran and failed (enrollment refused, audit chain broken), 10 internal error.

use crate::api::event::EnrollStatus;
use crate::api::{ApiError, AuditItem, Caller, EnrollSource, Request, Response, Status, UserInfo};
use crate::dbus::{api_error, wire, Locker1ClientProxy};
use clap::{Args, Subcommand};
use futures_util::StreamExt;
use std::io::Write;
use std::path::PathBuf;

/// Exit code when the operation ran and failed.
pub const EXIT_FAILED: u8 = 9;

#[derive(Subcommand, Debug, Clone)]
pub enum Cmd {
    /// Lock, door, keypad, camera, mode, users.
    Status,
    /// Open the lock for one pulse (operator).
    Unlock {
        /// Why (kept in the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Lock now (operator).
    Lock,
    /// Manage users (admin).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Enroll USER's face from photos/clips (read by the daemon) or the camera (admin).
    Enroll(EnrollArgs),
    /// One-time keypad codes (admin).
    #[command(subcommand)]
    Code(CodeCmd),
    /// Personal TOTP for the keypad (admin).
    #[command(subcommand)]
    Totp(TotpCmd),
    /// Keypad lockout (admin).
    #[command(subcommand)]
    Lockout(LockoutCmd),
    /// The audit log (admin).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Who is at the camera now (operator).
    Verify,
}

#[derive(Subcommand, Debug, Clone)]
pub enum UsersCmd {
    List,
    Add {
        name: String,
        #[arg(long, default_value = "user", value_parser = ["user", "admin"])]
        role: String,
    },
    /// Remove a user with their templates and OTP material.
    Remove {
        name: String,
    },
    /// Set a user's role: user, admin or banned.
    Role {
        name: String,
        #[arg(value_parser = ["user", "admin", "banned"])]
        role: String,
    },
    /// Ban: kept so a match raises an alert, never granted.
    Ban {
        name: String,
    },
    Unban {
        name: String,
    },
    Enable {
        name: String,
    },
    /// Disable: kept, never granted, no alert.
    Disable {
        name: String,
    },
}

#[derive(Args, Debug, Clone)]
pub struct EnrollArgs {
    pub user: String,
    /// Photos (.jpg/.png), clips or folders of frames.
    #[arg(required_unless_present = "camera", conflicts_with = "camera")]
    pub files: Vec<PathBuf>,
    /// From the kiosk camera: look at it and blink.
    #[arg(long)]
    pub camera: bool,
    /// Seconds of camera to use.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=60))]
    pub seconds: u32,
    /// Accept photos that fail the quality gate (small, turned, blurred).
    #[arg(long)]
    pub allow_poor_photos: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CodeCmd {
    /// Issue a single-use keypad code, printed once.
    Issue {
        /// Bind the code to this user (the grant is audited as them).
        user: Option<String>,
        /// Validity: seconds, or 15m / 2h / 1d (default access.otp_default_ttl_s).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Revoke the live code in a slot (the number after `*`).
    Revoke { slot: u32 },
}

#[derive(Subcommand, Debug, Clone)]
pub enum TotpCmd {
    /// Give USER a TOTP secret (otpauth:// URI and QR code), a keypad number and a PIN;
    /// replaces any earlier secret. Shown once.
    Enroll {
        user: String,
        /// Choose the PIN instead of a random one.
        #[arg(long)]
        pin: Option<String>,
        #[arg(long)]
        no_qr: bool,
    },
}

#[derive(Subcommand, Debug, Clone)]
pub enum LockoutCmd {
    Show,
    /// Clear the keypad lockout and its escalation.
    Reset,
}

#[derive(Subcommand, Debug, Clone)]
pub enum AuditCmd {
    List {
        /// Only rows since: 10m, 2h, 1d, or 2026-01-31T12:00:00Z.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
        limit: u32,
        /// Keep printing new rows as they come (lockerctl only).
        #[arg(long)]
        follow: bool,
    },
    /// Walk the hash chain.
    Verify,
}

/// A failure with its exit code and a one-line message.
#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

impl From<ApiError> for CtlError {
    fn from(e: ApiError) -> Self {
        let hint = match &e {
            ApiError::NotAuthorized(_) => {
                " (ask an admin, or join the lockerd-admin / lockerd-operator group)"
            }
            ApiError::Unavailable(m) if m.contains("not running") => {
                " (start it: systemctl start lockerd)"
            }
            _ => "",
        };
        CtlError {
            code: e.exit_code(),
            message: format!("{e}{hint}"),
        }
    }
}

fn invalid(m: String) -> CtlError {
    CtlError {
        code: 2,
        message: m,
    }
}

/// `90`, `15m`, `2h`, `1d` -> seconds.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("--ttl {s:?}: use seconds or 15m / 2h / 1d"))?;
    Ok(n.saturating_mul(mul))
}

/// The request API served in this process: the daemon crate's `service::ApiHandle`
/// (`lockerd admin`, tests). A trait, so that this crate links no store or vision.
pub trait LocalApi: Send + Sync {
    /// Serve one request as `caller`.
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        r: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ApiError>> + Send + 'a>>;
    /// The event broadcast (enrollment progress).
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::api::Timed>;
}

/// Where requests go.
pub enum Backend {
    /// The running daemon over the system bus.
    Bus(Locker1ClientProxy<'static>),
    /// The request API in this process (no daemon).
    Local {
        api: Box<dyn LocalApi>,
        caller: Caller,
    },
    /// A kiosk far away: each request signed with a remote admin's key and sent through
    /// the kiosk's MQTT broker; the reply's sealed secrets opened with that key.
    Remote(Box<RemoteTarget>),
}

/// Where [`Backend::Remote`] sends, and with which key.
pub struct RemoteTarget {
    pub mqtt: crate::mqtt::config::MqttConfig,
    pub keys: crate::mqtt::remote::AdminKeys,
    /// Seconds to wait for each reply.
    pub wait_s: u64,
}

/// A request through the broker: its `cmd` and `args` signed and sent, the reply's
/// result (secrets unsealed back into their fields) read as the same [`Response`] the
/// bus and the local API give.
async fn call_remote(t: &RemoteTarget, r: &Request) -> Result<Response, ApiError> {
    let v = serde_json::to_value(r).map_err(|e| ApiError::Internal(e.to_string()))?;
    let cmd = v["cmd"].as_str().unwrap_or_default().to_string();
    let args = v
        .get("args")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let reply = crate::mqtt::remote::send(&t.mqtt, &t.keys, &cmd, args, t.wait_s)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if reply["ok"] != true {
        return Err(crate::mqtt::reply::error_of(
            reply["error"].as_str().unwrap_or("internal"),
            reply["message"].as_str().unwrap_or_default(),
        ));
    }
    let mut result = reply["result"].clone();
    if let Some(obj) = result.as_object_mut() {
        obj.remove("sealed");
        if let Some(serde_json::Value::Object(secret)) = obj.remove("secret") {
            obj.extend(secret);
        }
    }
    serde_json::from_value(result)
        .map_err(|e| ApiError::Internal(format!("bad reply from the kiosk: {e}")))
}

impl Backend {
    /// Connect to the daemon on the system bus; "lockerd is not running" if nobody owns
    /// the name.
    pub async fn connect_bus() -> Result<Backend, ApiError> {
        let conn = zbus::Connection::system().await.map_err(|e| {
            ApiError::Unavailable(format!(
                "lockerd is not running (cannot reach the system bus: {e})"
            ))
        })?;
        let dbus = zbus::fdo::DBusProxy::new(&conn)
            .await
            .map_err(|e| api_error(&e))?;
        let name = zbus::names::BusName::try_from(crate::dbus::BUS_NAME)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if !dbus
            .name_has_owner(name)
            .await
            .map_err(|e| api_error(&e.into()))?
        {
            return Err(ApiError::Unavailable("lockerd is not running".into()));
        }
        let proxy = Locker1ClientProxy::new(&conn)
            .await
            .map_err(|e| api_error(&e))?;
        Ok(Backend::Bus(proxy))
    }

    /// Make one request (the bus backend maps it to the method and its typed reply).
    pub async fn call(&self, r: Request) -> Result<Response, ApiError> {
        let p = match self {
            Backend::Local { api, caller } => return api.call(caller, r).await,
            Backend::Remote(t) => return call_remote(t, &r).await,
            Backend::Bus(p) => p,
        };
        let e = |e: zbus::Error| api_error(&e);
        let done = |m: String| Response::Done { message: m };
        let user = |u: wire::UserReply| -> Result<Response, ApiError> {
            Ok(Response::User {
                user: UserInfo::try_from(u)?,
            })
        };
        Ok(match r {
            Request::Status => Response::Status(Status::try_from(p.status().await.map_err(e)?)?),
            Request::Unlock { reason } => done(p.unlock(&reason).await.map_err(e)?),
            Request::Lock => done(p.lock().await.map_err(e)?),
            Request::UsersList => Response::Users {
                users: p
                    .list_users()
                    .await
                    .map_err(e)?
                    .into_iter()
                    .map(UserInfo::try_from)
                    .collect::<Result<_, _>>()?,
            },
            Request::UserAdd { name, role } => {
                user(p.add_user(&name, role.as_str()).await.map_err(e)?)?
            }
            Request::UserRemove { name } => user(p.remove_user(&name).await.map_err(e)?)?,
            Request::UserRole { name, role } => {
                user(p.set_role(&name, role.as_str()).await.map_err(e)?)?
            }
            Request::UserBan { name } => user(p.ban(&name).await.map_err(e)?)?,
            Request::UserUnban { name } => user(p.unban(&name).await.map_err(e)?)?,
            Request::UserEnable { name } => user(p.enable(&name).await.map_err(e)?)?,
            Request::UserDisable { name } => user(p.disable(&name).await.map_err(e)?)?,
            Request::Enroll {
                user,
                source,
                allow_poor_photos,
            } => {
                let job = match &source {
                    // Files go open, through their descriptors: the daemon cannot see
                    // the caller's home or /tmp, and reads only what the caller can.
                    EnrollSource::Files(files) if files.iter().all(|f| f.is_file()) => {
                        let mut open = Vec::with_capacity(files.len());
                        for f in files {
                            open.push(std::fs::File::open(f).map_err(|err| {
                                ApiError::InvalidArgument(format!("{}: {err}", f.display()))
                            })?);
                        }
                        let names: Vec<String> =
                            files.iter().map(|f| f.display().to_string()).collect();
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        let fds: Vec<zbus::Fd<'_>> = open.iter().map(zbus::Fd::from).collect();
                        p.enroll_from_open_files(&user, &names, &fds, allow_poor_photos)
                            .await
                            .map_err(e)?
                    }
                    // A folder of frames (a clip) goes by path: the daemon reads it.
                    EnrollSource::Files(files) => {
                        let abs: Vec<String> = files
                            .iter()
                            .map(|f| {
                                std::path::absolute(f)
                                    .unwrap_or_else(|_| f.clone())
                                    .display()
                                    .to_string()
                            })
                            .collect();
                        let refs: Vec<&str> = abs.iter().map(String::as_str).collect();
                        p.enroll_from_files(&user, &refs, allow_poor_photos)
                            .await
                            .map_err(e)?
                    }
                    EnrollSource::Camera { seconds } => {
                        p.enroll_from_camera(&user, *seconds).await.map_err(e)?
                    }
                    EnrollSource::Photo(_) => {
                        return Err(ApiError::InvalidArgument(
                            "over D-Bus, enroll from files (the daemon reads them)".into(),
                        ))
                    }
                };
                Response::EnrollStarted { job, user }
            }
            Request::EnrollCancel => done(p.cancel_enroll().await.map_err(e)?),
            Request::OtpIssue { user, ttl_s } => Response::Code(
                p.issue_code(user.as_deref().unwrap_or(""), ttl_s.unwrap_or(0))
                    .await
                    .map_err(e)?
                    .into(),
            ),
            Request::OtpRevoke { slot } => done(p.revoke_code(slot).await.map_err(e)?),
            Request::TotpEnroll { user, pin } => Response::Totp(
                p.enroll_totp(&user, pin.as_deref().unwrap_or(""))
                    .await
                    .map_err(e)?
                    .into(),
            ),
            Request::LockoutShow => Response::Lockout(p.lockout_show().await.map_err(e)?.into()),
            Request::LockoutReset => done(p.lockout_reset().await.map_err(e)?),
            Request::AuditQuery { since_ms, limit } => Response::Audit {
                rows: p
                    .audit_list(since_ms, limit)
                    .await
                    .map_err(e)?
                    .into_iter()
                    .map(AuditItem::from)
                    .collect(),
            },
            Request::AuditVerify => Response::AuditCheck(p.audit_verify().await.map_err(e)?.into()),
            Request::Verify => Response::Seen {
                seen: p.verify().await.map_err(e)?.into(),
            },
            Request::KeypadEntry { .. } => {
                return Err(ApiError::InvalidArgument(
                    "a keypad entry is not taken over D-Bus (type it on the keypad)".into(),
                ))
            }
            Request::FleetApply { .. } => {
                return Err(ApiError::NotAuthorized(
                    "fleet records come only from the fleet's topic".into(),
                ))
            }
            Request::FleetExport { user, kiosks } => {
                let kiosks: Vec<&str> = kiosks.iter().map(String::as_str).collect();
                Response::FleetFaces(
                    p.fleet_export(&user, &kiosks)
                        .await
                        .map_err(e)?
                        .try_into()?,
                )
            }
        })
    }
}

/// Run one command; returns the exit code. `out` gets the normal output.
pub async fn run(
    backend: &Backend,
    cmd: Cmd,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let req = match &cmd {
        Cmd::Status => Request::Status,
        Cmd::Unlock { reason } => Request::Unlock {
            reason: reason.clone(),
        },
        Cmd::Lock => Request::Lock,
        Cmd::Users(u) => match u.clone() {
            UsersCmd::List => Request::UsersList,
            UsersCmd::Add { name, role } => Request::UserAdd {
                name,
                role: crate::types::Role::parse(&role).unwrap_or(crate::types::Role::User),
            },
            UsersCmd::Remove { name } => Request::UserRemove { name },
            UsersCmd::Role { name, role } => Request::UserRole {
                name,
                role: crate::types::Role::parse(&role)
                    .ok_or_else(|| invalid(format!("unknown role {role}")))?,
            },
            UsersCmd::Ban { name } => Request::UserBan { name },
            UsersCmd::Unban { name } => Request::UserUnban { name },
            UsersCmd::Enable { name } => Request::UserEnable { name },
            UsersCmd::Disable { name } => Request::UserDisable { name },
        },
        Cmd::Enroll(a) => return enroll(backend, a.clone(), json, out).await,
        Cmd::Code(CodeCmd::Issue { user, ttl }) => Request::OtpIssue {
            user: user.clone(),
            ttl_s: ttl.as_deref().map(parse_ttl).transpose().map_err(invalid)?,
        },
        Cmd::Code(CodeCmd::Revoke { slot }) => Request::OtpRevoke { slot: *slot },
        Cmd::Totp(TotpCmd::Enroll { user, pin, .. }) => Request::TotpEnroll {
            user: user.clone(),
            pin: pin.clone(),
        },
        Cmd::Lockout(LockoutCmd::Show) => Request::LockoutShow,
        Cmd::Lockout(LockoutCmd::Reset) => Request::LockoutReset,
        Cmd::Audit(AuditCmd::List {
            since,
            limit,
            follow,
        }) => {
            let since_ms = since_ms(since.as_deref())?;
            return audit_list(backend, since_ms, *limit, *follow, json, out).await;
        }
        Cmd::Audit(AuditCmd::Verify) => Request::AuditVerify,
        Cmd::Verify => Request::Verify,
    };
    let secret = matches!(req, Request::OtpIssue { .. } | Request::TotpEnroll { .. });
    if secret && output_is_closed() {
        // The secret exists only in this reply: do not make one nobody will see.
        return Err(CtlError {
            code: 1,
            message: "standard output is closed: nothing issued (the secret would be lost)".into(),
        });
    }
    let resp = backend.call(req).await?;
    let no_qr = matches!(&cmd, Cmd::Totp(TotpCmd::Enroll { no_qr: true, .. }));
    if let Err(e) = print_response(&resp, json, no_qr, out) {
        // Could not show a secret that was just committed: take it back where possible.
        return Err(match &resp {
            Response::Code(c) => {
                let undone = backend.call(Request::OtpRevoke { slot: c.slot }).await;
                CtlError {
                    code: 1,
                    message: format!(
                        "{}; the code could not be shown, so it was {}",
                        e.message,
                        if undone.is_ok() {
                            "revoked"
                        } else {
                            "NOT revoked: revoke it with `code revoke`"
                        }
                    ),
                }
            }
            Response::Totp(t) => CtlError {
                code: 1,
                message: format!(
                    "{}; {}'s new TOTP secret could not be shown: run `totp enroll {}` again",
                    e.message, t.user, t.user
                ),
            },
            _ => e,
        });
    }
    Ok(match &resp {
        Response::AuditCheck(c) if !c.ok => EXIT_FAILED,
        _ => 0,
    })
}

/// Standard output is a pipe or socket whose reader has gone.
fn output_is_closed() -> bool {
    let mut p = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, no wait.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// A write that failed because the reader went away (`cmd | head`): a quiet end.
pub fn is_broken_pipe(e: &CtlError) -> bool {
    e.message.contains("Broken pipe")
}

pub use crate::timefmt::printable;

fn w(out: &mut dyn Write, s: &str) -> Result<(), CtlError> {
    writeln!(out, "{s}").map_err(|e| CtlError {
        code: 1,
        message: format!("cannot write the output: {e}"),
    })
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "-".into()
    } else {
        crate::timefmt::iso_utc(ms)
    }
}

fn user_line(u: &UserInfo) -> String {
    printable(&format!(
        "{:>4}  {:<24} {:<7} {:<8} {} template(s){}{}",
        u.id,
        u.name,
        u.role,
        if u.enabled { "enabled" } else { "disabled" },
        u.templates,
        if u.legacy_templates > 0 {
            format!(
                ", {} pre-SFace (dlib; replaced at the next face grant)",
                u.legacy_templates
            )
        } else {
            String::new()
        },
        if u.totp { ", totp" } else { "" }
    ))
}

/// Print a reply, readable or as one JSON object.
pub fn print_response(
    r: &Response,
    json: bool,
    no_qr: bool,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    if json {
        let v = match r {
            Response::Status(s) => serde_json::to_value(s),
            Response::Done { message } => Ok(serde_json::json!({ "ok": true, "message": message })),
            Response::Users { users } => Ok(serde_json::json!({ "users": users })),
            Response::User { user } => serde_json::to_value(user),
            Response::Code(c) => serde_json::to_value(c),
            Response::Totp(t) => serde_json::to_value(t),
            Response::Lockout(l) => serde_json::to_value(l),
            Response::Audit { rows } => Ok(serde_json::json!({ "rows": rows })),
            Response::AuditCheck(c) => serde_json::to_value(c),
            Response::Seen { seen } => Ok(serde_json::json!({ "seen": seen })),
            Response::FleetFaces(f) => serde_json::to_value(f),
            Response::EnrollStarted { job, user } => {
                Ok(serde_json::json!({ "job": job, "user": user }))
            }
        }
        .map_err(|e| CtlError {
            code: 10,
            message: e.to_string(),
        })?;
        return w(out, &v.to_string());
    }
    match r {
        Response::Status(s) => {
            w(
                out,
                &format!("kiosk:   {} (lockerd {})", s.kiosk, s.version),
            )?;
            w(
                out,
                &format!("lock:    {}", crate::api::snake_name(&s.lock)),
            )?;
            w(
                out,
                &format!("door:    {}", crate::api::snake_name(&s.door)),
            )?;
            w(
                out,
                &format!(
                    "keypad:  {}",
                    if s.keypad_locked_until_ms > 0 {
                        format!("locked until {}", when(s.keypad_locked_until_ms))
                    } else {
                        "open".into()
                    }
                ),
            )?;
            w(
                out,
                &format!("camera:  {}", crate::api::snake_name(&s.camera)),
            )?;
            w(
                out,
                &format!(
                    "mode:    {}",
                    crate::api::snake_name(&s.mode).replace('_', " ")
                ),
            )?;
            w(out, &format!("users:   {}", s.users))?;
            if s.fleet != crate::api::FleetState::Off {
                w(
                    out,
                    &format!(
                        "fleet:   {}",
                        crate::api::snake_name(&s.fleet).replace('_', " ")
                    ),
                )?;
            }
            if !s.running {
                w(out, "daemon:  not running (read from the store)")?;
            }
        }
        Response::Done { message } => w(out, message)?,
        Response::Users { users } => {
            if users.is_empty() {
                w(out, "no users")?;
            }
            for u in users {
                w(out, &user_line(u))?;
            }
        }
        Response::User { user } => w(out, &user_line(user))?,
        Response::Code(c) => {
            w(
                out,
                &format!(
                    "one-time code{}: type  {}  on the keypad\nsingle use, valid until {}",
                    c.user
                        .as_deref()
                        .map(|u| format!(" for {u}"))
                        .unwrap_or_default(),
                    c.keys,
                    when(c.expires_ms)
                ),
            )?;
        }
        Response::Totp(t) => {
            if !no_qr {
                if let Ok(qr) = qrcode::QrCode::new(t.uri.as_bytes()) {
                    let art = qr
                        .render::<qrcode::render::unicode::Dense1x2>()
                        .dark_color(qrcode::render::unicode::Dense1x2::Light)
                        .light_color(qrcode::render::unicode::Dense1x2::Dark)
                        .build();
                    w(out, &art)?;
                }
            }
            w(out, &t.uri)?;
            w(
                out,
                &format!(
                    "{}: keypad number {}, PIN {} (shown once). At the keypad type:\n  {}#<PIN><6-digit code from the app>#   e.g. {}#{}123456#",
                    t.user, t.keypad_no, t.pin, t.keypad_no, t.keypad_no, t.pin
                ),
            )?;
        }
        Response::Lockout(l) => {
            if l.locked {
                w(
                    out,
                    &format!(
                        "locked until {} (lockout {} since the last reset)",
                        when(l.until_ms),
                        l.level
                    ),
                )?;
            } else {
                w(
                    out,
                    &format!(
                        "not locked; {} wrong entries counted, {} lockouts since the last reset",
                        l.strikes, l.level
                    ),
                )?;
            }
        }
        Response::Audit { rows } => {
            for r in rows {
                w(out, &audit_line(r))?;
            }
        }
        Response::AuditCheck(c) => w(out, &c.message)?,
        Response::Seen { seen } => match seen {
            None => w(out, "nobody at the camera")?,
            Some(s) => w(
                out,
                &format!(
                    "{} ({}, distance {}, {} ms ago)",
                    s.user.as_deref().unwrap_or("unknown face"),
                    if s.live { "live" } else { "no blink yet" },
                    s.distance
                        .map(|d| format!("{d:.3}"))
                        .unwrap_or_else(|| "-".into()),
                    s.age_ms
                ),
            )?,
        },
        Response::EnrollStarted { job, user } => w(
            out,
            &printable(&format!("enrollment job {job} started for {user}")),
        )?,
        Response::FleetFaces(f) => w(
            out,
            &printable(&format!(
                "{}: faces sealed for {}",
                f.user,
                f.faces
                    .iter()
                    .map(|s| s.kiosk.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        )?,
    }
    Ok(())
}

/// `--since` (10m, 2h, 1d or an ISO time) as ms since the epoch; none: from the start.
pub fn since_ms(since: Option<&str>) -> Result<i64, CtlError> {
    match since {
        Some(s) => crate::timefmt::parse_since(s, crate::types::now_ms()).ok_or_else(|| {
            invalid(format!(
                "--since {s:?}: use 10m, 2h, 1d or 2026-01-31T12:00:00Z"
            ))
        }),
        None => Ok(0),
    }
}

pub fn audit_line(r: &AuditItem) -> String {
    printable(&format!(
        "{:>6}  {}  {:<6} {:<6} {:<16} {}{}",
        r.seq,
        when(r.ts_ms),
        r.method,
        r.outcome,
        r.user.as_deref().unwrap_or("-"),
        r.reason,
        if r.evidence.is_null() || r.evidence == serde_json::json!({}) {
            String::new()
        } else {
            format!("  {}", r.evidence)
        }
    ))
}

async fn audit_list(
    backend: &Backend,
    since_ms: i64,
    limit: u32,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let print = |rows: &[AuditItem], out: &mut dyn Write| -> Result<(), CtlError> {
        for r in rows {
            if json && follow {
                w(out, &serde_json::to_string(r).unwrap_or_default())?;
            } else if !json {
                w(out, &audit_line(r))?;
            }
        }
        Ok(())
    };
    let rows = match backend
        .call(Request::AuditQuery { since_ms, limit })
        .await?
    {
        Response::Audit { rows } => rows,
        _ => Vec::new(),
    };
    if json && !follow {
        return print_response(&Response::Audit { rows }, true, false, out).map(|_| 0);
    }
    print(&rows, out)?;
    if !follow {
        return Ok(0);
    }
    if let Backend::Local { .. } = backend {
        return Err(invalid(
            "--follow needs the running daemon (lockerctl)".into(),
        ));
    }
    // Followed by sequence number, never by time: rows written after the clock stepped
    // back (the "clock went back" alert among them) have older timestamps.
    let newest = |limit: u32| async move {
        match backend
            .call(Request::AuditQuery {
                since_ms: i64::MIN,
                limit,
            })
            .await?
        {
            Response::Audit { rows } => Ok::<_, CtlError>(rows),
            _ => Ok(Vec::new()),
        }
    };
    let head = newest(1).await?.last().map_or(0, |r| r.seq);
    let mut last = rows.last().map_or(head, |r| r.seq.max(head));
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let mut fresh = after(newest(FOLLOW_BATCH).await?, last);
        if fresh.gap {
            fresh = after(newest(FOLLOW_MAX).await?, last);
        }
        if fresh.gap {
            let first = fresh.rows.first().map_or(last, |r| r.seq);
            w(
                out,
                &format!(
                    "... rows {} to {} not shown (written too fast to follow; `lockerctl audit list` has them)",
                    last + 1,
                    first - 1
                ),
            )?;
        }
        if let Some(r) = fresh.rows.last() {
            last = r.seq;
        }
        print(&fresh.rows, out)?;
        let _ = out.flush();
    }
}

/// Rows asked for per poll of `audit list --follow`, and the most when it falls behind.
const FOLLOW_BATCH: u32 = 100;
const FOLLOW_MAX: u32 = 10_000;

/// The rows after sequence number `last` among the newest rows, oldest first, and whether
/// rows between `last` and them are missing (more were written than were asked for).
struct Fresh {
    rows: Vec<AuditItem>,
    gap: bool,
}

fn after(newest: Vec<AuditItem>, last: i64) -> Fresh {
    let rows: Vec<AuditItem> = newest.into_iter().filter(|r| r.seq > last).collect();
    let gap = rows.first().is_some_and(|r| r.seq > last + 1);
    Fresh { rows, gap }
}

/// Enroll and follow the job to its end with a progress line per stage.
async fn enroll(
    backend: &Backend,
    a: EnrollArgs,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let source = if a.camera {
        EnrollSource::Camera { seconds: a.seconds }
    } else {
        EnrollSource::Files(a.files.clone())
    };
    let req = Request::Enroll {
        user: a.user.clone(),
        source,
        allow_poor_photos: a.allow_poor_photos,
    };
    // Subscribe before starting so no status is missed.
    let (final_status, message) = match backend {
        Backend::Local { api, .. } => {
            let mut events = api.subscribe();
            let job = started(backend.call(req).await?)?;
            if !json {
                w(
                    out,
                    &printable(&format!("enrolling {} (job {job})", a.user)),
                )?;
            }
            loop {
                match events.recv().await {
                    Ok(t) => {
                        let Some(p) = t.event.enroll.clone() else {
                            continue;
                        };
                        if p.job != job {
                            continue;
                        }
                        progress(
                            out,
                            json,
                            job,
                            &a.user,
                            p.status.as_str(),
                            p.done,
                            &p.message,
                        )?;
                        if p.done {
                            break (p.status.as_str().to_string(), p.message);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => {
                        return Err(CtlError {
                            code: 10,
                            message: "the event channel closed".into(),
                        })
                    }
                }
            }
        }
        Backend::Remote(_) => {
            // Progress is published on the kiosk's events topic, not answered here.
            let job = started(backend.call(req).await?)?;
            if json {
                w(
                    out,
                    &serde_json::json!({ "job": job, "started": true }).to_string(),
                )?;
            } else {
                w(
                    out,
                    &printable(&format!(
                        "enrollment job {job} started for {} (its progress: the kiosk's events)",
                        a.user
                    )),
                )?;
            }
            return Ok(0);
        }
        Backend::Bus(p) => {
            let mut st = p
                .receive_enroll_status()
                .await
                .map_err(|e| CtlError::from(api_error(&e)))?;
            let job = started(backend.call(req).await?)?;
            if !json {
                w(
                    out,
                    &printable(&format!("enrolling {} (job {job})", a.user)),
                )?;
            }
            loop {
                let Some(sig) = st.next().await else {
                    return Err(CtlError {
                        code: 8,
                        message: "lockerd went away during the enrollment".into(),
                    });
                };
                let Ok(args) = sig.args() else { continue };
                if *args.job() != job {
                    continue;
                }
                progress(
                    out,
                    json,
                    job,
                    &a.user,
                    args.status(),
                    *args.done(),
                    args.message(),
                )?;
                if *args.done() {
                    break (args.status().to_string(), args.message().to_string());
                }
            }
        }
    };
    if final_status == EnrollStatus::Completed.as_str() {
        Ok(0)
    } else {
        Err(CtlError {
            code: EXIT_FAILED,
            message: format!("enrollment failed: {message}"),
        })
    }
}

fn started(r: Response) -> Result<u64, CtlError> {
    match r {
        Response::EnrollStarted { job, .. } => Ok(job),
        other => Err(CtlError {
            code: 10,
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

fn progress(
    out: &mut dyn Write,
    json: bool,
    job: u64,
    user: &str,
    status: &str,
    done: bool,
    message: &str,
) -> Result<(), CtlError> {
    if json {
        w(
            out,
            &serde_json::json!({ "job": job, "user": user, "status": status, "done": done, "message": message })
                .to_string(),
        )
    } else {
        let mark = match status {
            "stage-passed" => "[#]",
            "completed" => "[done]",
            "failed" => "[failed]",
            _ => "[!]",
        };
        w(out, &printable(&format!("  {mark} {status}: {message}")))
    }
}

/// `lockerctl watch`: events and property changes as they happen, until interrupted.
pub async fn watch(
    proxy: &Locker1ClientProxy<'static>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let e = |e: zbus::Error| CtlError::from(api_error(&e));
    let mut events = proxy.receive_event().await.map_err(e)?;
    let mut lock = proxy.receive_lock_state_changed().await;
    let mut door = proxy.receive_door_changed().await;
    let mut keypad = proxy.receive_keypad_locked_until_changed().await;
    let mut camera = proxy.receive_camera_changed().await;
    // The first item of each property stream is the current value.
    loop {
        let line = tokio::select! {
            Some(sig) = events.next() => {
                let Ok(args) = sig.args() else { continue };
                let v: serde_json::Value = serde_json::from_str(args.json()).unwrap_or_default();
                if json { v.to_string() } else { event_line(&v) }
            }
            Some(c) = lock.next() => prop_line("lock", c.get().await.map_err(e)?, json),
            Some(c) = door.next() => prop_line("door", c.get().await.map_err(e)?, json),
            Some(c) = keypad.next() => {
                let v = c.get().await.map_err(e)?;
                prop_line("keypad_locked_until", if v > 0 { when(v) } else { "open".into() }, json)
            }
            Some(c) = camera.next() => prop_line("camera", c.get().await.map_err(e)?, json),
            else => return Ok(0),
        };
        w(out, &line)?;
        let _ = out.flush();
    }
}

fn prop_line(name: &str, value: String, json: bool) -> String {
    if json {
        serde_json::json!({ "property": name, "value": value }).to_string()
    } else {
        format!(
            "{}  {name} = {value}",
            crate::timefmt::iso_utc(crate::types::now_ms())
        )
    }
}

/// One readable line for an event (JSON as on the bus).
pub fn event_line(v: &serde_json::Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let at = v["at_ms"]
        .as_i64()
        .map(crate::timefmt::iso_utc)
        .unwrap_or_default();
    let ev = s("event");
    let what = match ev.as_str() {
        "unlock" => format!("{} ({}: {})", s("user"), s("method"), s("reason")),
        "deny" => format!("{} ({})", s("method"), s("reason")),
        "alert" => format!(
            "{}: {}",
            v["alert"]["kind"].as_str().unwrap_or_default(),
            v["alert"]["message"].as_str().unwrap_or_default()
        ),
        "enroll" => format!(
            "{} {} {}",
            s("user"),
            v["enroll"]["status"].as_str().unwrap_or_default(),
            v["enroll"]["message"].as_str().unwrap_or_default()
        ),
        "user_changed" => format!("{} {}", s("user"), s("reason")),
        "lockout" => format!("keypad locked (level {})", v["detail"]["level"]),
        "code_issued" => format!("one-time code issued in slot {}", v["detail"]["slot"]),
        "lockout_reset" => format!("keypad lockout cleared by {}", v["detail"]["by"]),
        "lock" => format!("locked by {}", s("user")),
        _ => String::new(),
    };
    printable(&format!("{at}  {ev:<12} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn following_the_audit_goes_by_sequence_not_by_time() {
        let row = |seq: i64, ts_ms: i64| AuditItem {
            seq,
            ts_ms,
            method: "system".into(),
            outcome: "alert".into(),
            user: None,
            reason: "clock_went_back".into(),
            evidence: serde_json::Value::Null,
        };
        // Rows 11 and 12 were written after the clock stepped back a day.
        let newest = vec![
            row(9, 5_000_000),
            row(10, 5_000_100),
            row(11, 1_000),
            row(12, 1_100),
        ];
        let f = after(newest.clone(), 10);
        assert_eq!(f.rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [11, 12]);
        assert!(!f.gap);
        // Fewer rows than were written: the gap is known, so the caller asks for more.
        let f = after(newest[2..].to_vec(), 8);
        assert!(f.gap);
        assert!(after(Vec::new(), 3).rows.is_empty());
    }

    #[test]
    fn text_from_outside_cannot_steer_the_terminal() {
        // ESC/OSC/CSI sequences, a C1 CSI, DEL, a right-to-left override and a newline
        // that would fake a second line.
        let hostile = "a\u{1b}]0;owned\u{7}b\u{9b}2J\u{7f}\u{202e}gpj.exe\n  [done] completed";
        let p = printable(hostile);
        assert!(
            !p.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{p:?}"
        );
        assert_eq!(
            p,
            "a\\u001b]0;owned\\u0007b\\u009b2J\\u007f\\u202egpj.exe\\u000a  [done] completed"
        );
        assert_eq!(printable("Zoë 日本"), "Zoë 日本");
        let row = AuditItem {
            seq: 7,
            ts_ms: 0,
            method: "dbus".into(),
            outcome: "grant".into(),
            user: Some("eve\u{202e}".into()),
            reason: hostile.into(),
            evidence: serde_json::json!({ "key": "k\u{9b}" }),
        };
        let line = audit_line(&row);
        assert!(
            !line.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{line:?}"
        );
        let ev = serde_json::json!({ "event": "enroll", "user": "eve", "enroll": { "status": "failed", "message": hostile } });
        assert!(!event_line(&ev).chars().any(|c| c.is_control()));
    }
}
