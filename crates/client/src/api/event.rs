//! The broadcast event: what happened, for D-Bus signals, MQTT, the simulator's
//! output and the logs. Secret-free by construction: no field can hold an issued code,
//! a PIN, a TOTP secret or an embedding (`detail` carries evidence such as distances,
//! slots and strike counts; `tests::events_carry_no_secret` and the D-Bus test check
//! that no secret ever appears). Secrets go only in a reply.

use lockerd_core::types::Method;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Unlock,
    Relock,
    /// Locked by a request before the pulse ended.
    Lock,
    Deny,
    Lockout,
    LockoutReset,
    Alert,
    DoorOpen,
    DoorClosed,
    /// A one-time code was issued (slot and expiry only).
    CodeIssued,
    Ignored,
    /// A user was added, removed, banned, enabled ... (`reason` says which).
    UserChanged,
    /// Enrollment progress (see [`EnrollProgress`]).
    Enroll,
    /// An active liveness prompt was shown (`reason`: which; `detail`: its window).
    Challenge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    KeypadLockout,
    BannedUser,
    DoorForced,
    DoorHeldOpen,
    FaceRateLimited,
    Fault,
    /// A face shown on a screen or on paper (presentation-attack detection).
    PresentationAttack,
}

impl AlertKind {
    /// Every kind (Home Assistant's alert event types).
    pub const ALL: [AlertKind; 7] = [
        AlertKind::KeypadLockout,
        AlertKind::BannedUser,
        AlertKind::DoorForced,
        AlertKind::DoorHeldOpen,
        AlertKind::FaceRateLimited,
        AlertKind::Fault,
        AlertKind::PresentationAttack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::KeypadLockout => "keypad_lockout",
            AlertKind::BannedUser => "banned_user",
            AlertKind::DoorForced => "door_forced",
            AlertKind::DoorHeldOpen => "door_held_open",
            AlertKind::FaceRateLimited => "face_rate_limited",
            AlertKind::Fault => "fault",
            AlertKind::PresentationAttack => "presentation_attack",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub message: String,
}

/// Enrollment stages, in the style of fprintd's `EnrollStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EnrollStatus {
    /// A source (photo, clip, seconds of camera) gave templates.
    StagePassed,
    /// No face in a source, or in the camera for a while.
    NoFace,
    /// A clip or the camera never showed a blink.
    NoBlink,
    /// The frames were too dark, small, turned or blurred.
    TooDark,
    /// The face is already enrolled as another user.
    Duplicate,
    Completed,
    Failed,
}

impl EnrollStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EnrollStatus::StagePassed => "stage-passed",
            EnrollStatus::NoFace => "no-face",
            EnrollStatus::NoBlink => "no-blink",
            EnrollStatus::TooDark => "too-dark",
            EnrollStatus::Duplicate => "duplicate",
            EnrollStatus::Completed => "completed",
            EnrollStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnrollProgress {
    pub job: u64,
    pub status: EnrollStatus,
    /// True on the last status of a job.
    pub done: bool,
    pub message: String,
}

/// Something that happened.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub event: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Method>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll: Option<EnrollProgress>,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// Already in the outbox, written in the transaction of its audit row (see
    /// [`Pending`]): the bus only broadcasts it. Never serialised.
    #[serde(skip)]
    pub queued: bool,
}

impl Event {
    pub fn new(event: EventKind) -> Self {
        Self {
            event,
            user: None,
            method: None,
            reason: None,
            alert: None,
            enroll: None,
            detail: serde_json::Value::Null,
            queued: false,
        }
    }
    pub fn user(mut self, u: Option<String>) -> Self {
        self.user = u;
        self
    }
    pub fn method(mut self, m: Method) -> Self {
        self.method = Some(m);
        self
    }
    pub fn reason(mut self, r: impl Into<String>) -> Self {
        self.reason = Some(r.into());
        self
    }
    pub fn detail(mut self, d: serde_json::Value) -> Self {
        self.detail = d;
        self
    }
    pub fn alert(kind: AlertKind, message: String) -> Self {
        let mut e = Event::new(EventKind::Alert);
        e.alert = Some(Alert { kind, message });
        e
    }
    pub fn enroll(user: &str, p: EnrollProgress) -> Self {
        let mut e = Event::new(EventKind::Enroll).user(Some(user.to_owned()));
        e.enroll = Some(p);
        e
    }
}

/// An event with the time it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Timed {
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: Event,
}

impl Timed {
    pub fn at(at_ms: i64, event: Event) -> Timed {
        Timed { at_ms, event }
    }

    pub fn now(event: Event) -> Timed {
        Timed {
            at_ms: lockerd_core::types::now_ms(),
            event,
        }
    }
}
