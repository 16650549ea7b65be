//! The broadcast event: what happened, for D-Bus signals, MQTT, the simulator's
//! output and the logs. Secret-free by construction: no field can hold an issued code,
//! a PIN, a TOTP secret or an embedding (`detail` carries evidence such as distances,
//! slots and strike counts; `tests::events_carry_no_secret` and the D-Bus test check
//! that no secret ever appears). Secrets go only in a reply.

use crate::store::Method;
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
            at_ms: crate::types::now_ms(),
            event,
        }
    }
}

/// The event bus: the broadcast every adapter subscribes to and, when MQTT is on, the
/// store's outbox. An event is queued for the outbox before it is broadcast, so a broker
/// that is down, or a restart, loses nothing. An event with an audit row is staged
/// ([`EventBus::stage`], [`Pending`]) and its row written in the audit row's transaction
/// by whoever writes that row (the controller, the service); the bus queues the rest
/// (one transaction per batch), queued, not awaited: no sender waits on the disk, and the
/// store thread's order still puts the row before any later read.
#[derive(Clone)]
pub struct EventBus {
    tx: tokio::sync::broadcast::Sender<Timed>,
    outbox: Option<(crate::store::Store, usize)>,
}

impl EventBus {
    pub fn new(capacity: usize) -> EventBus {
        EventBus {
            tx: tokio::sync::broadcast::channel(capacity).0,
            outbox: None,
        }
    }

    /// Also queue every event (but `ignored`) in the store's outbox, at most `max`.
    pub fn with_outbox(mut self, store: crate::store::Store, max: usize) -> EventBus {
        self.outbox = Some((store, max));
        self
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Timed> {
        self.tx.subscribe()
    }

    pub fn send(&self, t: Timed) {
        self.send_all(vec![t]);
    }

    /// The outbox's bound when this bus keeps one.
    pub fn outbox_max(&self) -> Option<usize> {
        self.outbox.as_ref().map(|(_, max)| *max)
    }

    /// Stamp `event` at `at_ms` and make its outbox row. Write the row in the transaction
    /// that writes the event's audit row ([`Pending::write`]), then [`EventBus::send`] the
    /// stamped event: an audited change and its event are kept or lost together.
    pub fn stage(&self, at_ms: i64, event: Event) -> (Timed, Pending) {
        Pending::stage(Timed { at_ms, event }, self.outbox_max())
    }

    /// Queue (when there is an outbox) and broadcast, in order. Events staged with
    /// [`EventBus::stage`] are already queued and only broadcast.
    pub fn send_all(&self, batch: Vec<Timed>) {
        if let Some((store, max)) = &self.outbox {
            let rows: Vec<(i64, bool, String)> =
                batch.iter().filter_map(|t| outbox_row(t, false)).collect();
            if !rows.is_empty() {
                let max = *max;
                store.enqueue("mqtt outbox: events not queued", move |db| {
                    db.outbox_push(&rows, max).map(|_| ())
                });
            }
        }
        for t in batch {
            let _ = self.tx.send(t);
        }
    }
}

/// The outbox row (at_ms, is_alert, JSON) of an event that goes to MQTT: every event
/// but `ignored`, and (unless `again`) not one that is already queued.
fn outbox_row(t: &Timed, again: bool) -> Option<(i64, bool, String)> {
    if t.event.event == EventKind::Ignored || (t.event.queued && !again) {
        return None;
    }
    let body = serde_json::to_string(t).ok()?;
    Some((t.at_ms, t.event.alert.is_some(), body))
}

/// An event's outbox row, to be written in the same transaction as its audit row. Empty
/// when there is no outbox (MQTT off) or the event does not go out.
#[derive(Debug, Clone, Default)]
pub struct Pending(Option<((i64, bool, String), usize)>);

impl Pending {
    /// The row for `t` (bounded by `max`; `None` = no outbox); `t` comes back marked
    /// queued when there is one.
    pub fn stage(mut t: Timed, max: Option<usize>) -> (Timed, Pending) {
        let row = max.and_then(|max| Some((outbox_row(&t, true)?, max)));
        t.event.queued = row.is_some();
        (t, Pending(row))
    }

    /// Write the row (nothing when empty). Call inside the audit row's transaction.
    pub fn write(&self, db: &mut crate::store::Db) -> Result<(), crate::store::StoreError> {
        match &self.0 {
            Some((row, max)) => db.outbox_push(std::slice::from_ref(row), *max).map(|_| ()),
            None => Ok(()),
        }
    }
}
