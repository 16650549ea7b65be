//! The one way in: typed requests, responses, errors, callers and the role table.
//!
//! Every entry point (D-Bus and `lockerctl`, `lockerd admin`, `lockerd-lab simulate`, and
//! the MQTT bridge) builds a [`Request`] with a [`Caller`] and hands it to the serving
//! task (the daemon's `service`), which checks [`authorize`] in one place and routes it: lock,
//! keypad and lockout requests to the access controller (oneshot reply), user changes to
//! the store (change and audit row in one transaction), gallery changes to vision.
//!
//! Replies travel only on the reply channel. What everyone may see travels on the
//! broadcast as [`event::Event`], which has no field that could hold a secret.

pub mod event;

pub use event::{Event, EventKind, Timed};

use lockerd_core::types::{Role as UserRole, User};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a caller may do (a local uid's groups, a remote admin's configured role): its
/// clearance, named apart from a user's [`UserRole`] (user, admin, banned), which says
/// whose face opens the door. Ordered: an admin may do whatever an operator may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Clearance {
    Viewer,
    Operator,
    Admin,
}

impl Clearance {
    pub fn as_str(self) -> &'static str {
        match self {
            Clearance::Viewer => "viewer",
            Clearance::Operator => "operator",
            Clearance::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Clearance> {
        match s {
            "viewer" => Some(Clearance::Viewer),
            "operator" => Some(Clearance::Operator),
            "admin" => Some(Clearance::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Clearance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Through what a request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `lockerctl` or another local program over the system bus.
    Dbus,
    /// A signed MQTT admin command.
    Mqtt,
    /// `lockerd admin` on the store while no daemon runs.
    Cli,
    /// `lockerd-lab simulate`.
    Simulator,
    /// Home Assistant's unsigned lock command (lock, or unlock with a keypad credential).
    Ha,
    /// A fleet user record, its signature checked by the MQTT bridge ([`crate::fleet`]).
    Fleet,
}

impl Via {
    pub fn method(self) -> lockerd_core::types::Method {
        use lockerd_core::types::Method;
        match self {
            Via::Dbus => Method::Dbus,
            Via::Mqtt => Method::Mqtt,
            Via::Ha => Method::Ha,
            Via::Fleet => Method::Fleet,
            Via::Cli | Via::Simulator => Method::Admin,
        }
    }
}

/// Who asks, through what, with which role. `id` names the caller in audit rows and in
/// `Busy` errors: `uid 1000 (:1.42)` on D-Bus, the key id on MQTT, `cli`, `simulator`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub id: String,
    pub via: Via,
    pub role: Clearance,
    /// The bus name on D-Bus (the enrollment claim is tied to it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus_name: Option<String>,
}

/// Local groups that grant a role (created by the package's sysusers snippet).
pub const ADMIN_GROUP: &str = "lockerd-admin";
pub const OPERATOR_GROUP: &str = "lockerd-operator";

/// The gid of a local group, if it exists.
pub fn group_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam_r with a buffer we own; the result points into that buffer.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(c.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == 0 && !out.is_null() {
            Some(grp.gr_gid)
        } else {
            None
        }
    }
}

/// The role of a local user: root and members of `lockerd-admin` are admins, members
/// of `lockerd-operator` operators, everyone else a viewer.
pub fn local_role(uid: u32, gids: &[u32]) -> Clearance {
    role_for(uid, gids, group_id(ADMIN_GROUP), group_id(OPERATOR_GROUP))
}

/// [`local_role`] with the group ids given (testable without /etc/group).
pub fn role_for(
    uid: u32,
    gids: &[u32],
    admin_gid: Option<u32>,
    operator_gid: Option<u32>,
) -> Clearance {
    if uid == 0 || admin_gid.is_some_and(|g| gids.contains(&g)) {
        Clearance::Admin
    } else if operator_gid.is_some_and(|g| gids.contains(&g)) {
        Clearance::Operator
    } else {
        Clearance::Viewer
    }
}

impl Caller {
    /// A local program on the bus, identified by the bus daemon's credentials.
    pub fn local(uid: u32, gids: &[u32], bus_name: Option<String>) -> Caller {
        Caller {
            id: match &bus_name {
                Some(n) => format!("uid {uid} ({n})"),
                None => format!("uid {uid}"),
            },
            via: Via::Dbus,
            role: local_role(uid, gids),
            bus_name,
        }
    }

    /// `lockerd admin` with the store open and no daemon: whoever can read the key is
    /// an admin.
    pub fn offline_cli() -> Caller {
        Caller {
            id: format!("cli (uid {})", unsafe { libc::getuid() }),
            via: Via::Cli,
            role: Clearance::Admin,
            bus_name: None,
        }
    }

    pub fn simulator() -> Caller {
        Caller {
            id: "simulator".into(),
            via: Via::Simulator,
            role: Clearance::Admin,
            bus_name: None,
        }
    }
}

pub use lockerd_core::types::EnrollInput as EnrollSource;

/// Every request, whatever the way in. Names are the MQTT `cmd` names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", content = "args", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Open the lock for one pulse.
    Unlock {
        #[serde(default)]
        reason: String,
    },
    /// Lock now (ends a pulse early).
    Lock,
    UsersList,
    UserAdd {
        name: String,
        #[serde(default = "default_user_role")]
        role: UserRole,
    },
    UserRemove {
        name: String,
    },
    UserRole {
        name: String,
        role: UserRole,
    },
    UserBan {
        name: String,
    },
    UserUnban {
        name: String,
    },
    UserEnable {
        name: String,
    },
    UserDisable {
        name: String,
    },
    /// Start an enrollment job; progress comes as `enroll` events.
    Enroll {
        user: String,
        source: EnrollSource,
        #[serde(default)]
        allow_poor_photos: bool,
    },
    /// Stop the running enrollment (its holder or an admin).
    EnrollCancel,
    OtpIssue {
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        ttl_s: Option<u64>,
    },
    /// Revoke the live one-time code in a slot.
    OtpRevoke {
        slot: u32,
    },
    TotpEnroll {
        user: String,
        #[serde(default)]
        pin: Option<String>,
    },
    LockoutShow,
    LockoutReset,
    AuditQuery {
        #[serde(default)]
        since_ms: i64,
        #[serde(default = "default_audit_limit")]
        limit: u32,
    },
    AuditVerify,
    /// Who is at the camera now (the last attempt of the current track).
    Verify,
    /// A keypad credential typed elsewhere (Home Assistant's lock code): the keys of a
    /// keypad entry without the final `#`. Checked like the keypad, with its strikes.
    KeypadEntry {
        keys: String,
    },
    /// Apply a fleet user record signed by `key` (checked by the bridge before it gets
    /// here): only from the fleet's topic (`Via::Fleet`), never as a command.
    FleetApply {
        record: crate::fleet::Record,
        key: String,
    },
    /// USER's face templates sealed to each of KIOSKS' card keys (empty: every kiosk of
    /// the fleet with a card), with their role and enabled, for `lockerctl fleet
    /// publish` to sign: nothing biometric leaves this kiosk in clear (admin).
    FleetExport {
        user: String,
        #[serde(default)]
        kiosks: Vec<String>,
    },
}

fn default_user_role() -> UserRole {
    UserRole::User
}

fn default_audit_limit() -> u32 {
    100
}

impl Request {
    /// The snake_case name (MQTT `cmd`, audit rows, errors).
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status => "status",
            Request::Unlock { .. } => "unlock",
            Request::Lock => "lock",
            Request::UsersList => "users_list",
            Request::UserAdd { .. } => "user_add",
            Request::UserRemove { .. } => "user_remove",
            Request::UserRole { .. } => "user_role",
            Request::UserBan { .. } => "user_ban",
            Request::UserUnban { .. } => "user_unban",
            Request::UserEnable { .. } => "user_enable",
            Request::UserDisable { .. } => "user_disable",
            Request::Enroll { .. } => "enroll",
            Request::EnrollCancel => "enroll_cancel",
            Request::OtpIssue { .. } => "otp_issue",
            Request::OtpRevoke { .. } => "otp_revoke",
            Request::TotpEnroll { .. } => "totp_enroll",
            Request::LockoutShow => "lockout_show",
            Request::LockoutReset => "lockout_reset",
            Request::AuditQuery { .. } => "audit_query",
            Request::AuditVerify => "audit_verify",
            Request::Verify => "verify",
            Request::KeypadEntry { .. } => "keypad_entry",
            Request::FleetApply { .. } => "fleet_apply",
            Request::FleetExport { .. } => "fleet_export",
        }
    }
}

/// The role table: the least role that may make each request. The only place where
/// this is decided. Admin: everything; operator: status, unlock, lock, verify, watch
/// (events); viewer: status and events.
pub fn required_role(r: &Request) -> Clearance {
    match r {
        Request::Status => Clearance::Viewer,
        Request::Unlock { .. } | Request::Lock | Request::Verify | Request::KeypadEntry { .. } => {
            Clearance::Operator
        }
        Request::UsersList
        | Request::UserAdd { .. }
        | Request::UserRemove { .. }
        | Request::UserRole { .. }
        | Request::UserBan { .. }
        | Request::UserUnban { .. }
        | Request::UserEnable { .. }
        | Request::UserDisable { .. }
        | Request::Enroll { .. }
        | Request::EnrollCancel
        | Request::OtpIssue { .. }
        | Request::OtpRevoke { .. }
        | Request::TotpEnroll { .. }
        | Request::LockoutShow
        | Request::LockoutReset
        | Request::AuditQuery { .. }
        | Request::AuditVerify
        | Request::FleetApply { .. }
        | Request::FleetExport { .. } => Clearance::Admin,
    }
}

/// Check the caller against the role table.
/// The longest unlock reason kept (characters): it goes into the audit row, the event and
/// every signal and message that carries the event.
pub const MAX_REASON_CHARS: usize = 200;
/// The longest user name (the store's own limit).
pub const MAX_NAME_CHARS: usize = 64;
/// The longest file path for enrollment, and how many files one job may name.
pub const MAX_PATH_BYTES: usize = 4096;
pub const MAX_ENROLL_FILES: usize = 32;
/// The longest keypad entry or PIN.
pub const MAX_KEYS: usize = 32;

/// Refuse free text longer than anything a person types: an operator's 6 MB unlock reason
/// became a 36 MB D-Bus signal (over the bus's limit, which took lockerd off the bus), an
/// outbox row MQTT could not send and a 30 MB audit row. Checked before anything is done.
pub fn check_bounds(r: &Request) -> Result<(), ApiError> {
    let too_long = |what: &str, len: usize, max: usize, unit: &str| {
        Err(ApiError::InvalidArgument(format!(
            "{what} is {len} {unit} long; at most {max}"
        )))
    };
    let chars = |what: &str, s: &str, max: usize| match s.chars().count() {
        n if n > max => too_long(what, n, max, "characters"),
        _ => Ok(()),
    };
    match r {
        Request::Unlock { reason } => chars("the reason", reason, MAX_REASON_CHARS),
        Request::UserAdd { name, .. }
        | Request::UserRemove { name }
        | Request::UserRole { name, .. }
        | Request::UserBan { name }
        | Request::UserUnban { name }
        | Request::UserEnable { name }
        | Request::UserDisable { name } => chars("the user name", name, MAX_NAME_CHARS),
        Request::OtpIssue { user: Some(u), .. } => chars("the user name", u, MAX_NAME_CHARS),
        Request::TotpEnroll { user, pin } => {
            chars("the user name", user, MAX_NAME_CHARS)?;
            chars("the PIN", pin.as_deref().unwrap_or_default(), MAX_KEYS)
        }
        Request::KeypadEntry { keys } => chars("the keypad entry", keys, MAX_KEYS),
        Request::FleetExport { user, kiosks } => {
            chars("the user name", user, MAX_NAME_CHARS)?;
            if kiosks.len() > crate::fleet::MAX_KIOSKS {
                return too_long(
                    "the kiosk list",
                    kiosks.len(),
                    crate::fleet::MAX_KIOSKS,
                    "kiosks",
                );
            }
            match kiosks.iter().find(|k| !crate::fleet::valid_target(k)) {
                Some(k) => Err(ApiError::InvalidArgument(format!(
                    "kiosk id or @group {k:?}"
                ))),
                None => Ok(()),
            }
        }
        Request::Enroll { user, source, .. } => {
            chars("the user name", user, MAX_NAME_CHARS)?;
            if let EnrollSource::Files(files) = source {
                if files.len() > MAX_ENROLL_FILES {
                    return too_long("the file list", files.len(), MAX_ENROLL_FILES, "files");
                }
                for f in files {
                    let n = f.as_os_str().len();
                    if n > MAX_PATH_BYTES {
                        return too_long("a file path", n, MAX_PATH_BYTES, "bytes");
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

pub fn authorize(caller: &Caller, r: &Request) -> Result<(), ApiError> {
    if matches!(r, Request::FleetApply { .. }) && caller.via != Via::Fleet {
        return Err(ApiError::NotAuthorized(format!(
            "fleet records come only from the fleet's topic, not from {}",
            caller.id
        )));
    }
    let need = required_role(r);
    if caller.role >= need {
        Ok(())
    } else {
        Err(ApiError::NotAuthorized(format!(
            "{} needs the {need} role; {} is {}",
            r.name(),
            caller.id,
            caller.role
        )))
    }
}

/// State of the lock as the controller drives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LockState {
    #[default]
    Locked,
    Unlocked,
    /// The lock could not be driven (a relay fault), or a remote lock reports itself
    /// jammed; the controller keeps retrying.
    Jammed,
    /// A remote lock (ESP32) stopped reporting: it locks itself on link loss, and every
    /// grant fails closed until it reports again.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DoorState {
    Open,
    Closed,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Delivering frames (or a replay running).
    Ok,
    /// Vision is down: keypad only.
    #[default]
    Unavailable,
    /// A replayed file has ended.
    Ended,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    FaceAndKeypad,
    #[default]
    KeypadOnly,
}

/// Everything `status` shows; the D-Bus properties are its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Status {
    pub kiosk: String,
    pub version: String,
    pub lock: LockState,
    pub door: DoorState,
    /// Keypad locked until (ms since the epoch); 0 when not locked.
    pub keypad_locked_until_ms: i64,
    pub camera: CameraState,
    pub mode: Mode,
    pub users: u32,
    /// True while the daemon runs (false for `lockerd admin` on the store).
    pub running: bool,
    /// The fleet's user directory here ([`FleetState`]); `off` outside a fleet.
    #[serde(default)]
    pub fleet: FleetState,
}

/// Whether fleet users may open by face here: `synced` (the directory is current),
/// `syncing` (just connected, applying what changed: not yet), `offline` (the broker is
/// gone, within `[fleet] offline_after_s` of the last sync: still), `cut_off` (longer,
/// or never synced since the start: not; keypad codes and local users still work).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FleetState {
    #[default]
    Off,
    Syncing,
    Synced,
    Offline,
    CutOff,
}

impl FleetState {
    /// Fleet users may open by face.
    pub fn grants(self) -> bool {
        matches!(self, FleetState::Synced | FleetState::Offline)
    }
}

/// A user's face templates sealed for the fleet's kiosks (`Request::FleetExport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetFaces {
    pub user: String,
    pub role: UserRole,
    pub enabled: bool,
    pub faces: Vec<crate::fleet::SealedFaces>,
}

/// A user as listed (no templates, no secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: i64,
    pub name: String,
    pub role: UserRole,
    pub enabled: bool,
    /// Face templates made by the current embedding (SFace).
    pub templates: i64,
    /// Templates made by dlib's ResNet before SFace: the user is matched by them (dlib's
    /// old rule) until their next face grant stores SFace templates.
    #[serde(default)]
    pub legacy_templates: i64,
    pub totp: bool,
    pub created_ms: i64,
}

impl UserInfo {
    pub fn from_user(u: &User, templates: (i64, i64), totp: bool) -> UserInfo {
        UserInfo {
            id: u.id,
            name: u.name.clone(),
            role: u.role,
            enabled: u.enabled,
            templates: templates.0,
            legacy_templates: templates.1,
            totp,
            created_ms: u.created_ms,
        }
    }
}

/// A one-time code: only ever in the reply to the admin who asked for it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedCode {
    pub slot: u32,
    pub code: String,
    /// Exactly what to type on the keypad.
    pub keys: String,
    pub expires_ms: i64,
    pub user: Option<String>,
}

impl fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IssuedCode {{ slot: {}, code: <redacted>, user: {:?} }}",
            self.slot, self.user
        )
    }
}

/// A TOTP enrollment: only ever in the reply to the admin who asked for it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpEnrolled {
    pub user: String,
    pub keypad_no: u32,
    pub pin: String,
    pub uri: String,
}

impl fmt::Debug for TotpEnrolled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TotpEnrolled {{ user: {:?}, keypad_no: {}, pin and uri: <redacted> }}",
            self.user, self.keypad_no
        )
    }
}

/// An audit row as shown to an admin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditItem {
    pub seq: i64,
    pub ts_ms: i64,
    pub method: String,
    pub outcome: String,
    pub user: Option<String>,
    pub reason: String,
    pub evidence: serde_json::Value,
}

/// The result of `audit_verify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditCheck {
    pub ok: bool,
    pub rows: i64,
    pub first_bad: Option<i64>,
    pub message: String,
}

/// The face in front of the camera now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    /// The matched user, if the last attempt matched someone.
    pub user: Option<String>,
    pub live: bool,
    pub distance: Option<f32>,
    /// How long ago the attempt was made (ms).
    pub age_ms: i64,
}

/// Replies, one shape per request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Response {
    Status(Status),
    Done { message: String },
    Users { users: Vec<UserInfo> },
    User { user: UserInfo },
    EnrollStarted { job: u64, user: String },
    Code(IssuedCode),
    Totp(TotpEnrolled),
    Lockout(LockoutInfo),
    Audit { rows: Vec<AuditItem> },
    AuditCheck(AuditCheck),
    Seen { seen: Option<Seen> },
    FleetFaces(FleetFaces),
}

impl Response {
    /// The variant's name, for logs (never the contents).
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Status(_) => "status",
            Response::Done { .. } => "done",
            Response::Users { .. } => "users",
            Response::User { .. } => "user",
            Response::EnrollStarted { .. } => "enroll_started",
            Response::Code(_) => "code",
            Response::Totp(_) => "totp",
            Response::Lockout(_) => "lockout",
            Response::Audit { .. } => "audit",
            Response::AuditCheck(_) => "audit_check",
            Response::Seen { .. } => "seen",
            Response::FleetFaces(_) => "fleet_faces",
        }
    }
}

/// The keypad lockout as `lockout show` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LockoutInfo {
    pub strikes: u32,
    pub level: u32,
    pub until_ms: i64,
    pub locked: bool,
}

/// A unit enumeration's snake_case name, as JSON carries it (D-Bus properties and
/// replies, printers, the fleet's kiosk card); empty for anything that is not a name.
pub fn snake_name<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Typed errors every way in maps to its own form (D-Bus error names, MQTT kinds,
/// `lockerctl` exit codes).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    #[error("{0}")]
    NoSuchUser(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{0}")]
    LockedOut(String),
    #[error("busy: {0}")]
    Busy(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable kind name (D-Bus error suffix, MQTT `error`).
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::NotAuthorized(_) => "NotAuthorized",
            ApiError::NoSuchUser(_) => "NoSuchUser",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::InvalidArgument(_) => "InvalidArgument",
            ApiError::LockedOut(_) => "LockedOut",
            ApiError::Busy(_) => "Busy",
            ApiError::Unavailable(_) => "Unavailable",
            ApiError::Internal(_) => "Internal",
        }
    }

    /// The message without the kind prefix.
    pub fn message(&self) -> &str {
        match self {
            ApiError::NotAuthorized(m)
            | ApiError::NoSuchUser(m)
            | ApiError::AlreadyExists(m)
            | ApiError::InvalidArgument(m)
            | ApiError::LockedOut(m)
            | ApiError::Busy(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m,
        }
    }

    /// Rebuild from a kind and message (the D-Bus client side).
    pub fn from_kind(kind: &str, message: String) -> ApiError {
        match kind {
            "NotAuthorized" => ApiError::NotAuthorized(message),
            "NoSuchUser" => ApiError::NoSuchUser(message),
            "AlreadyExists" => ApiError::AlreadyExists(message),
            "InvalidArgument" => ApiError::InvalidArgument(message),
            "LockedOut" => ApiError::LockedOut(message),
            "Busy" => ApiError::Busy(message),
            "Unavailable" => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }

    /// `lockerctl`'s exit code for this kind (documented in the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            ApiError::InvalidArgument(_) => 2,
            ApiError::NotAuthorized(_) => 3,
            ApiError::NoSuchUser(_) => 4,
            ApiError::AlreadyExists(_) => 5,
            ApiError::LockedOut(_) => 6,
            ApiError::Busy(_) => 7,
            ApiError::Unavailable(_) => 8,
            ApiError::Internal(_) => 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_table() {
        let viewer = Caller {
            id: "v".into(),
            via: Via::Dbus,
            role: Clearance::Viewer,
            bus_name: None,
        };
        let op = Caller {
            role: Clearance::Operator,
            ..viewer.clone()
        };
        let admin = Caller {
            role: Clearance::Admin,
            ..viewer.clone()
        };
        let all = [
            Request::Status,
            Request::Unlock { reason: "x".into() },
            Request::Lock,
            Request::Verify,
            Request::UsersList,
            Request::LockoutReset,
            Request::OtpIssue {
                user: None,
                ttl_s: None,
            },
            Request::AuditVerify,
        ];
        for r in &all {
            assert!(authorize(&admin, r).is_ok(), "{r:?}");
        }
        assert!(authorize(&viewer, &Request::Status).is_ok());
        for r in &all[1..] {
            assert!(matches!(
                authorize(&viewer, r),
                Err(ApiError::NotAuthorized(_))
            ));
        }
        for r in &all[..4] {
            assert!(authorize(&op, r).is_ok(), "{r:?}");
        }
        for r in &all[4..] {
            assert!(authorize(&op, r).is_err(), "{r:?}");
        }
    }

    #[test]
    fn free_text_is_bounded_before_anything_is_done() {
        let unlock = |n: usize| Request::Unlock {
            reason: "x".repeat(n),
        };
        assert!(check_bounds(&unlock(MAX_REASON_CHARS)).is_ok());
        // The red team's 6,000,000-character reason.
        let e = check_bounds(&unlock(6_000_000)).unwrap_err();
        assert!(matches!(e, ApiError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("at most 200"), "{e}");
        // Characters, not bytes: 200 multi-byte characters are fine.
        let wide = Request::Unlock {
            reason: "\u{e9}".repeat(MAX_REASON_CHARS),
        };
        assert!(check_bounds(&wide).is_ok());
        let long_name = "n".repeat(MAX_NAME_CHARS + 1);
        for r in [
            Request::UserAdd {
                name: long_name.clone(),
                role: UserRole::User,
            },
            Request::UserBan {
                name: long_name.clone(),
            },
            Request::OtpIssue {
                user: Some(long_name.clone()),
                ttl_s: None,
            },
            Request::KeypadEntry {
                keys: "1".repeat(MAX_KEYS + 1),
            },
            Request::Enroll {
                user: "eve".into(),
                source: EnrollSource::Files(vec![
                    std::path::PathBuf::from("a");
                    MAX_ENROLL_FILES + 1
                ]),
                allow_poor_photos: false,
            },
            Request::Enroll {
                user: "eve".into(),
                source: EnrollSource::Files(vec![std::path::PathBuf::from(
                    "p".repeat(MAX_PATH_BYTES + 1),
                )]),
                allow_poor_photos: false,
            },
        ] {
            assert!(
                matches!(check_bounds(&r), Err(ApiError::InvalidArgument(_))),
                "{r:?}"
            );
        }
    }

    #[test]
    fn local_roles_from_uid_and_groups() {
        assert_eq!(role_for(0, &[], None, None), Clearance::Admin);
        assert_eq!(
            role_for(1000, &[5, 900], Some(900), Some(901)),
            Clearance::Admin
        );
        assert_eq!(
            role_for(1000, &[901], Some(900), Some(901)),
            Clearance::Operator
        );
        assert_eq!(
            role_for(1000, &[5], Some(900), Some(901)),
            Clearance::Viewer
        );
        assert_eq!(role_for(65534, &[], None, None), Clearance::Viewer);
    }

    #[test]
    fn requests_have_mqtt_names_and_parse() {
        let r: Request =
            serde_json::from_str(r#"{"cmd":"otp_issue","args":{"user":"alice","ttl_s":60}}"#)
                .unwrap();
        assert_eq!(
            r,
            Request::OtpIssue {
                user: Some("alice".into()),
                ttl_s: Some(60)
            }
        );
        assert_eq!(r.name(), "otp_issue");
        let r: Request = serde_json::from_str(r#"{"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::Status);
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let c = IssuedCode {
            slot: 3,
            code: "12345678".into(),
            keys: "*3#12345678#".into(),
            expires_ms: 0,
            user: None,
        };
        assert!(!format!("{c:?}").contains("12345678"));
        let t = TotpEnrolled {
            user: "a".into(),
            keypad_no: 1,
            pin: "4321".into(),
            uri: "otpauth://totp/x?secret=ABC".into(),
        };
        let d = format!("{t:?}");
        assert!(!d.contains("4321") && !d.contains("ABC"));
    }

    #[test]
    fn error_kinds_round_trip() {
        for e in [
            ApiError::NotAuthorized("a".into()),
            ApiError::NoSuchUser("a".into()),
            ApiError::AlreadyExists("a".into()),
            ApiError::InvalidArgument("a".into()),
            ApiError::LockedOut("a".into()),
            ApiError::Busy("a".into()),
            ApiError::Unavailable("a".into()),
            ApiError::Internal("a".into()),
        ] {
            assert_eq!(ApiError::from_kind(e.kind(), "a".into()), e);
        }
    }
}
