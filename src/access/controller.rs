//! The access controller: one state machine that owns the lock, the keypad entry, the
//! door alarms, the face rate limit and the keypad lockout.
//!
//! Pure with respect to time: every call gets `now_ms` (wall-clock ms) and returns the
//! [`Event`]s it caused; [`Controller::next_deadline`] says when it wants a
//! [`Input::Tick`]. The [`super::driver`] task feeds it. Storage goes through [`DbAccess`]
//! (the store thread in the daemon, a `Db` in tests and the simulator).
//!
//! Fail closed: the grant's audit row is written before the lock opens; if that write, or
//! any store read on the way to a decision, fails, the lock stays locked and an alert says
//! why. A relay that cannot be driven is an alert too, and re-locking is retried.

use super::config::AccessConfig;
use super::credentials::{self, Entry, Verdict};
use super::face::{self, DenyReason, FaceDecision};
use super::lockout::LockoutPolicy;
use crate::api::event::{AlertKind, Event, EventKind, Pending, Timed};
use crate::api::{ApiError, DoorState, LockState};
use crate::hw::{Devices, Signal};
use crate::store::{AuditEntry, Db, LockoutState, Method, Outcome, StoreError};
use crate::types::{Embedding, EmbeddingModel, Role, User};
use crate::vision::pipeline::Attempt;
use serde_json::json;
use std::collections::VecDeque;

/// Storage as the controller needs it: run a closure on the database.
pub trait DbAccess {
    fn with<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError>;

    /// Run `f` later, in order with every other call, without waiting (errors are
    /// logged with `what`).
    fn enqueue(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Db) -> Result<(), StoreError> + Send + 'static,
    ) {
        if let Err(e) = self.with(f) {
            log::error!("{what}: {e}");
        }
    }
}

impl DbAccess for Db {
    fn with<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        f(self)
    }
}

impl DbAccess for crate::store::Store {
    fn with<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.call_sync(f)
    }

    fn enqueue(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Db) -> Result<(), StoreError> + Send + 'static,
    ) {
        crate::store::Store::enqueue(self, what, f)
    }
}

/// What the controller reacts to.
#[derive(Debug)]
pub enum Input {
    Face(Box<Attempt>),
    Key(char),
    Door {
        open: bool,
    },
    Admin {
        request: AdminRequest,
        reply: Option<Reply>,
    },
    Tick,
    /// A device outside the controller failed (the camera): alert the admin, audit it.
    Fault(String),
    /// A keypad credential typed elsewhere (Home Assistant's lock code): the keys of a
    /// keypad entry without the final `#`. Checked exactly like the keypad (the same
    /// lockout and strikes), audited with `via`. The reply says whether it opened.
    Credential {
        keys: String,
        via: Method,
        reply: Option<Reply>,
    },
    /// Health check: the driver answers at once (the watchdog uses it).
    Ping(tokio::sync::oneshot::Sender<()>),
    /// The vision pipeline asks the person at the camera to do this (active challenge).
    Challenge {
        prompt: crate::vision::challenge::Prompt,
        window_s: f32,
    },
}

/// The reply to an admin request: `Ok(message)` or why it was not done.
pub type Reply = tokio::sync::oneshot::Sender<Result<String, ApiError>>;

/// Requests from the request API ([`crate::service`]) that touch the lock or the
/// keypad lockout: only the controller changes those.
#[derive(Debug, Clone, PartialEq)]
pub enum AdminRequest {
    /// Open the lock for one pulse. `by`: the caller's role and id, as audited.
    Unlock {
        by: String,
        via: Method,
        reason: String,
    },
    /// Lock now (ends a pulse early).
    Lock { by: String, via: Method },
    /// Clear the keypad lockout and its escalation.
    LockoutReset { by: String, via: Method },
}

/// What the controller shows of itself after every input (the D-Bus properties and
/// `status` read it from a watch channel, so they never queue behind face decisions).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Snapshot {
    pub lock: LockState,
    pub door: DoorState,
    pub lockout: LockoutState,
}

const MAX_ENTRY: usize = 24;
const SIGNAL_MS: i64 = 1500;
const MESSAGE_MS: i64 = 3000;

pub struct Controller<S: DbAccess> {
    cfg: AccessConfig,
    policy: LockoutPolicy,
    store: S,
    dev: Devices,
    /// The lock re-locks at this time.
    unlocked_until: Option<i64>,
    /// The door may open until this time without counting as forced.
    authorized_until: i64,
    door_open: bool,
    /// False until the door contact has reported once.
    door_known: bool,
    door_opened_at: i64,
    held_alerted: bool,
    entry: String,
    last_key_ms: i64,
    lockout: LockoutState,
    face_fails: VecDeque<i64>,
    face_cooldown_until: i64,
    signal_off_at: Option<i64>,
    idle_at: Option<i64>,
    /// When a failed re-lock is tried again.
    relock_retry_at: Option<i64>,
    /// The latest wall-clock time seen (to notice the clock going back); the time the
    /// events of the input being handled are stamped with.
    last_now: i64,
    /// The MQTT outbox's bound when there is one: each event is queued by the controller,
    /// in the transaction of its audit row when it has one.
    outbox: Option<usize>,
    /// In a fleet: whether its users may open by face now ([`crate::api::FleetGate`]).
    fleet: Option<crate::api::FleetGate>,
    /// The idle screen says the fleet is cut off.
    fleet_shown: bool,
}

/// A step back of the wall clock larger than this is a jump (not jitter).
const CLOCK_BACK_SLACK_MS: i64 = 1000;

fn minutes_seconds(ms: i64) -> String {
    let s = (ms.max(0) + 999) / 1000;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

impl<S: DbAccess> Controller<S> {
    /// Build the controller: the lock is locked at once and the persisted lockout loaded
    /// (a store that cannot be read is an error: the daemon does not start half-blind).
    pub fn new(
        cfg: AccessConfig,
        mut store: S,
        mut dev: Devices,
        now_ms: i64,
    ) -> Result<(Self, Vec<Event>), StoreError> {
        let lockout = store.with(|db| db.lockout_load())?;
        let mut events = Vec::new();
        if let Err(e) = dev.lock.set_locked(true) {
            events.push(Event::alert(
                AlertKind::Fault,
                format!("cannot drive the lock to locked: {e}"),
            ));
        }
        let policy = LockoutPolicy {
            max_strikes: cfg.keypad_max_strikes,
            base_s: cfg.keypad_lockout_s,
            factor: cfg.keypad_lockout_factor,
        };
        let mut c = Self {
            cfg,
            policy,
            store,
            dev,
            unlocked_until: None,
            authorized_until: 0,
            door_open: false,
            door_known: false,
            door_opened_at: 0,
            held_alerted: false,
            entry: String::new(),
            last_key_ms: 0,
            lockout,
            face_fails: VecDeque::new(),
            face_cooldown_until: 0,
            signal_off_at: None,
            idle_at: None,
            relock_retry_at: None,
            last_now: now_ms,
            outbox: None,
            fleet: None,
            fleet_shown: false,
        };
        c.clamp_lockout(now_ms);
        c.show_idle(now_ms);
        Ok((c, events))
    }

    pub fn is_locked(&self) -> bool {
        self.dev.lock.is_locked()
    }

    /// Lock now (shutdown): whatever happens next, the door is locked.
    pub fn lock_now(&mut self) {
        if let Err(e) = self.dev.lock.set_locked(true) {
            log::error!("cannot lock at shutdown: {e}");
        }
        self.unlocked_until = None;
    }

    /// Queue every event in the MQTT outbox, bounded by `max` (`None`: no outbox; the
    /// bus queues nothing the controller queued).
    pub fn set_outbox(&mut self, max: Option<usize>) {
        self.outbox = max;
    }

    /// This kiosk is in a fleet: a fleet user's face opens only while the gate says so.
    pub fn set_fleet_gate(&mut self, gate: Option<crate::api::FleetGate>) {
        self.fleet = gate;
    }

    pub fn lockout(&self) -> LockoutState {
        self.lockout
    }

    /// Lock, door and lockout as they are now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            lock: if self.dev.lock.health().is_none() {
                LockState::Unavailable
            } else if self.relock_retry_at.is_some() || self.dev.lock.health() == Some(true) {
                LockState::Jammed
            } else if self.unlocked_until.is_some() {
                LockState::Unlocked
            } else {
                LockState::Locked
            },
            door: match (self.door_known, self.door_open) {
                (false, _) => DoorState::Unknown,
                (true, true) => DoorState::Open,
                (true, false) => DoorState::Closed,
            },
            lockout: self.lockout,
        }
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Take the store back (the devices are dropped).
    pub fn into_store(self) -> S {
        self.store
    }

    /// The earliest time a [`Input::Tick`] is needed.
    pub fn next_deadline(&self) -> Option<i64> {
        let mut d: Vec<i64> = Vec::new();
        d.extend(self.unlocked_until);
        d.extend(self.relock_retry_at);
        if self.door_open && !self.held_alerted {
            d.push(self.door_opened_at + (self.cfg.door_held_open_s * 1000.0) as i64);
        }
        if !self.entry.is_empty() {
            d.push(self.last_key_ms + (self.cfg.keypad_entry_timeout_s * 1000.0) as i64);
        }
        if self.lockout.until_ms > 0 {
            d.push(self.lockout.until_ms);
        }
        d.extend(self.signal_off_at);
        d.extend(self.idle_at);
        // The moment an offline fleet link turns cut off (the idle screen says so).
        if let Some(g) = &self.fleet {
            let l = *g.link.borrow();
            if let (crate::api::FleetState::Offline, Some(t)) = (l.link, l.last_synced_ms) {
                d.push(t + g.offline_after_ms);
            }
        }
        d.into_iter().min()
    }

    /// Whether fleet users' faces are refused here now.
    fn fleet_cut_off(&self, now: i64) -> bool {
        self.fleet
            .as_ref()
            .is_some_and(|g| g.state(now) == crate::api::FleetState::CutOff)
    }

    pub fn handle(&mut self, now: i64, input: Input) -> Vec<Event> {
        let mut ev = Vec::new();
        self.follow_clock(now, &mut ev);
        match input {
            Input::Face(a) => self.on_face(now, &a, &mut ev),
            Input::Key(k) => self.on_key(now, k, &mut ev),
            Input::Door { open } => self.on_door(now, open, &mut ev),
            Input::Admin { request, reply } => {
                let r = self.on_admin(now, request, &mut ev);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Input::Tick => {}
            Input::Fault(message) => self.alert(AlertKind::Fault, message, &mut ev),
            Input::Challenge { prompt, window_s } => {
                self.on_challenge(now, prompt, window_s, &mut ev)
            }
            Input::Credential { keys, via, reply } => {
                let r = self.on_credential(now, &keys, via, &mut ev);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Input::Ping(reply) => {
                let _ = reply.send(());
            }
        }
        self.on_tick(now, &mut ev);
        ev
    }

    // ----- wall-clock jumps ------------------------------------------------------------

    /// Keep every timer honest when the wall clock jumps (NTP after a boot without an RTC,
    /// an admin's `date -s`). A step back moves every pending deadline back by the same
    /// amount, so a pulse, a lockout or a cooldown keeps its remaining length: the lock
    /// never stays open for the size of the jump and nobody is locked out for it. A step
    /// forward cannot be told from time passing; it only ends timers early, which re-locks
    /// early (safe) and may end a lockout early (bounded by the jump). Whatever happened,
    /// a lockout never has more than its own full length left.
    fn follow_clock(&mut self, now: i64, ev: &mut Vec<Event>) {
        let back = self.last_now - now;
        self.last_now = now;
        if back > CLOCK_BACK_SLACK_MS {
            let shift = |t: &mut i64| *t = t.saturating_sub(back);
            if let Some(t) = self.unlocked_until.as_mut() {
                shift(t);
            }
            if let Some(t) = self.relock_retry_at.as_mut() {
                shift(t);
            }
            if let Some(t) = self.signal_off_at.as_mut() {
                shift(t);
            }
            if let Some(t) = self.idle_at.as_mut() {
                shift(t);
            }
            shift(&mut self.authorized_until);
            shift(&mut self.door_opened_at);
            shift(&mut self.last_key_ms);
            shift(&mut self.face_cooldown_until);
            self.face_fails.iter_mut().for_each(shift);
            if self.lockout.until_ms > 0 {
                shift(&mut self.lockout.until_ms);
                self.lockout.until_ms = self.lockout.until_ms.max(1);
            }
            self.alert(
                AlertKind::Fault,
                format!(
                    "the wall clock went back {}; timers kept their remaining time",
                    minutes_seconds(back)
                ),
                ev,
            );
        }
        self.clamp_lockout(now);
    }

    /// A lockout ends at most its full length from now (a lockout saved under a clock
    /// that later went back, or loaded after a boot with the clock behind).
    fn clamp_lockout(&mut self, now: i64) {
        if self.lockout.until_ms > 0 {
            let longest = now.saturating_add(self.policy.duration_ms(self.lockout.level));
            self.lockout.until_ms = self.lockout.until_ms.min(longest);
        }
    }

    // ----- outputs --------------------------------------------------------------------

    /// Raise an alert: event (for the admin channel), audit row (best effort), log.
    fn alert(&mut self, kind: AlertKind, message: String, ev: &mut Vec<Event>) {
        log::warn!("alert {}: {message}", kind.as_str());
        // The reason in the one style every audit row and event uses (snake_case).
        let entry = AuditEntry::new(Method::System, Outcome::Alert, kind.as_str())
            .evidence(json!({ "message": message }));
        if let Err(e) = self.record(entry, Event::alert(kind, message), ev) {
            log::error!("could not audit an alert: {e}");
        }
    }

    fn audit(&mut self, entry: AuditEntry) -> Result<(), StoreError> {
        self.store
            .with(move |db| db.audit_append(&entry).map(|_| ()))
    }

    /// Write `entry` and queue `event` in the outbox in one transaction, then send the
    /// event: the audit log and what MQTT will carry never disagree. When the write
    /// fails, the event is still sent (unqueued: the bus tries the outbox again) and the
    /// error returned.
    fn record(
        &mut self,
        entry: AuditEntry,
        event: Event,
        ev: &mut Vec<Event>,
    ) -> Result<(), StoreError> {
        let (t, pending) = Pending::stage(Timed::at(self.last_now, event), self.outbox);
        let r = self.store.with(move |db| {
            db.atomically(|db| {
                db.audit_append(&entry)?;
                pending.write(db)
            })
        });
        let mut event = t.event;
        event.queued &= r.is_ok();
        ev.push(event);
        r
    }

    /// Send an event that has no audit row, queued in the outbox first (without waiting,
    /// in order with every store write of the controller).
    fn emit(&mut self, event: Event, ev: &mut Vec<Event>) {
        let (t, pending) = Pending::stage(Timed::at(self.last_now, event), self.outbox);
        if t.event.queued {
            self.store
                .enqueue("mqtt outbox: event not queued", move |db| pending.write(db));
        }
        ev.push(t.event);
    }

    fn signal(&mut self, now: i64, s: Signal) {
        if let Err(e) = self.dev.indicator.signal(s) {
            log::warn!("indicator: {e}");
        }
        self.signal_off_at = (s != Signal::Off).then_some(now + SIGNAL_MS);
    }

    fn show(&mut self, now: i64, l1: &str, l2: &str) {
        self.show_for(now, l1, l2, MESSAGE_MS);
    }

    /// Show a message for `ms` before the idle screen comes back.
    fn show_for(&mut self, now: i64, l1: &str, l2: &str, ms: i64) {
        if let Err(e) = self.dev.display.show(l1, l2) {
            log::warn!("display: {e}");
        }
        self.idle_at = Some(now + ms);
    }

    fn show_idle(&mut self, now: i64) {
        self.idle_at = None;
        self.fleet_shown = self.fleet_cut_off(now);
        let r = if self.dev.lock.health().is_none() {
            self.dev.display.show("Lock offline", "Please wait")
        } else if self.policy.is_locked(&self.lockout, now) {
            self.dev.display.show(
                "Keypad locked",
                &format!("Face only {}", minutes_seconds(self.lockout.until_ms - now)),
            )
        } else if self.unlocked_until.is_some() {
            self.dev.display.show("Door unlocked", "")
        } else if self.fleet_shown {
            self.dev.display.show("Fleet offline", "Codes still work")
        } else {
            self.dev.display.show("Look and blink", "or type a code")
        };
        if let Err(e) = r {
            log::warn!("display: {e}");
        }
    }

    /// Grant: audit first, then open. Any failure leaves the lock locked.
    #[allow(clippy::too_many_arguments)]
    fn grant(
        &mut self,
        now: i64,
        user: Option<&User>,
        label: String,
        method: Method,
        reason: &str,
        evidence: serde_json::Value,
        ev: &mut Vec<Event>,
    ) -> Result<(), String> {
        let mut entry = AuditEntry::new(method, Outcome::Grant, reason).evidence(evidence.clone());
        if let Some(u) = user {
            entry = entry.user(u.id, &u.name);
        } else {
            entry.user_name = Some(label.clone());
        }
        // The unlock event goes with the grant's audit row (the outbox mirrors the audit):
        // if the lock then fails to open, a `fault` denial and alert follow it, as in the
        // audit log.
        let unlock = Event::new(EventKind::Unlock)
            .user(Some(label.clone()))
            .method(method)
            .reason(reason)
            .detail(evidence);
        let mut granted = Vec::new();
        if let Err(e) = self.record(entry, unlock, &mut granted) {
            let why = format!("audit write failed: {e}");
            self.fail_closed(now, &label, method, &why, ev);
            return Err(why);
        }
        ev.append(&mut granted);
        if let Err(e) = self.dev.lock.set_locked(false) {
            let _ = self.dev.lock.set_locked(true);
            let why = format!("lock did not open: {e}");
            self.fail_closed(now, &label, method, &why, ev);
            return Err(why);
        }
        let pulse = (self.cfg.unlock_pulse_s * 1000.0) as i64;
        self.unlocked_until = Some(now + pulse);
        self.authorized_until = now + pulse + (self.cfg.door_grace_s * 1000.0) as i64;
        self.signal(now, Signal::Granted);
        self.show(now, "Welcome", &label);
        // A user with the admin role who is let in (so is at the door, identified) clears
        // a keypad lockout: the alert asks an admin to check who is there first, and
        // this admin has.
        if let Some(u) = user.filter(|u| u.role == Role::Admin) {
            if self.lockout != LockoutState::default() {
                let by = format!("{} at the door", u.name);
                let _ = self.on_admin(now, AdminRequest::LockoutReset { by, via: method }, ev);
            }
        }
        Ok(())
    }

    fn fail_closed(&mut self, now: i64, who: &str, method: Method, why: &str, ev: &mut Vec<Event>) {
        log::error!("fail closed ({method:?}, {who}): {why}");
        self.signal(now, Signal::Denied);
        self.show(now, "Out of order", "Lock stays shut");
        self.emit(
            Event::new(EventKind::Deny)
                .user(Some(who.to_owned()))
                .method(method)
                .reason("fault")
                .detail(json!({ "error": why })),
            ev,
        );
        self.alert(
            AlertKind::Fault,
            format!("{method:?} grant for {who} not carried out: {why}"),
            ev,
        );
    }

    fn deny(
        &mut self,
        now: i64,
        method: Method,
        user: Option<String>,
        reason: &str,
        evidence: serde_json::Value,
        ev: &mut Vec<Event>,
    ) {
        let mut entry = AuditEntry::new(method, Outcome::Deny, reason).evidence(evidence.clone());
        entry.user_name = user.clone();
        let event = Event::new(EventKind::Deny)
            .user(user)
            .method(method)
            .reason(reason)
            .detail(evidence);
        if let Err(e) = self.record(entry, event, ev) {
            log::error!("could not audit a denial: {e}");
        }
        self.signal(now, Signal::Denied);
    }

    // ----- face -----------------------------------------------------------------------

    /// Show the prompt for its whole window, and say it was asked.
    fn on_challenge(
        &mut self,
        now: i64,
        prompt: crate::vision::challenge::Prompt,
        window_s: f32,
        ev: &mut Vec<Event>,
    ) {
        if now < self.face_cooldown_until {
            // Faces are ignored for now: asking would only raise hopes.
            return;
        }
        let window_ms = (window_s * 1000.0) as i64;
        self.show_for(
            now,
            prompt.text(),
            &format!("within {window_s:.0} s"),
            window_ms,
        );
        self.emit(
            Event::new(EventKind::Challenge)
                .method(Method::Face)
                .reason(prompt.as_str())
                .detail(json!({ "window_s": window_s })),
            ev,
        );
    }

    fn on_face(&mut self, now: i64, a: &Attempt, ev: &mut Vec<Event>) {
        let d = face::decide(a);
        let evidence = json!({
            "track": a.track,
            "live": a.live,
            "blinks": a.blinks,
            "distance": a.result.distance,
            "margin": a.result.margin(),
            "normalized_margin": a.result.normalized_margin,
            "model": a.result.model,
            "second": a.result.second_user,
            "verdict": a.result.verdict,
            "probes": a.result.probes,
            "presentation_attack": a.presentation_attack,
            "challenge": a.challenge,
        });
        if now < self.face_cooldown_until && a.live {
            self.emit(
                Event::new(EventKind::Ignored)
                    .method(Method::Face)
                    .reason("face_rate_limited"),
                ev,
            );
            return;
        }
        let alert = d.is_alert();
        match d {
            FaceDecision::Grant { user_id, user } => {
                let fleet = self.fleet.as_ref().map(|g| g.state(now));
                let found = self.store.with(move |db| {
                    let Some(u) = db.user_by_id(user_id)? else {
                        return Ok(None);
                    };
                    let from_fleet = fleet.is_some() && db.fleet_user(&u.name)?;
                    Ok(Some((u, from_fleet)))
                });
                let u = match found {
                    Ok(Some((u, from_fleet))) => {
                        // A fleet user opens by face only while the directory is current
                        // (or briefly offline): fail closed when cut off or syncing.
                        if let Some(state) = fleet.filter(|s| from_fleet && !s.grants()) {
                            let reason = match state {
                                crate::api::FleetState::Syncing => "fleet_syncing",
                                _ => "fleet_cut_off",
                            };
                            self.deny(now, Method::Face, Some(u.name), reason, evidence, ev);
                            self.show(now, "Fleet offline", "Use a code");
                            return;
                        }
                        u
                    }
                    Ok(None) => {
                        self.deny(now, Method::Face, Some(user), "user_removed", evidence, ev);
                        return;
                    }
                    Err(e) => {
                        self.fail_closed(
                            now,
                            &user,
                            Method::Face,
                            &format!("user lookup failed: {e}"),
                            ev,
                        );
                        return;
                    }
                };
                if !u.may_enter() {
                    self.deny(now, Method::Face, Some(u.name), "disabled", evidence, ev);
                    return;
                }
                let name = u.name.clone();
                let granted = self.grant(now, Some(&u), name, Method::Face, "match", evidence, ev);
                if granted.is_ok() && !a.upgrade.is_empty() {
                    self.upgrade_templates(&u, a.upgrade.clone(), ev);
                }
            }
            FaceDecision::Deny { reason, user } => {
                let r = reason.as_str();
                // Named only when it is an alert about that user: a banned user, or a
                // spoof that matched someone (not the nearest stranger to a screen).
                let named = reason != DenyReason::Spoof
                    || a.result.verdict == crate::vision::matcher::Verdict::Match;
                let shown = if alert && named { user.clone() } else { None };
                self.deny(now, Method::Face, shown.clone(), r, evidence, ev);
                if a.live {
                    self.show(now, "Not recognised", "Try again or code");
                }
                if reason == DenyReason::Spoof {
                    let pa = &a.presentation_attack;
                    self.alert(
                        AlertKind::PresentationAttack,
                        format!(
                            "a face on a screen or on paper: {} of {} frames live",
                            pa.frames_live, pa.frames_scored
                        ),
                        ev,
                    );
                } else if alert {
                    let who = shown.unwrap_or_default();
                    self.alert(
                        AlertKind::BannedUser,
                        format!("banned user {who} at the door"),
                        ev,
                    );
                }
                if a.live {
                    self.face_fails.push_back(now);
                    let window = (self.cfg.face_fail_window_s * 1000.0) as i64;
                    while self.face_fails.front().is_some_and(|t| now - t > window) {
                        self.face_fails.pop_front();
                    }
                    if self.face_fails.len() as u32 >= self.cfg.face_fail_limit {
                        self.face_fails.clear();
                        self.face_cooldown_until = now + (self.cfg.face_cooldown_s * 1000.0) as i64;
                        self.alert(
                            AlertKind::FaceRateLimited,
                            format!(
                                "{} failed faces within {} s: faces ignored for {} s",
                                self.cfg.face_fail_limit,
                                self.cfg.face_fail_window_s,
                                self.cfg.face_cooldown_s
                            ),
                            ev,
                        );
                    }
                }
            }
        }
    }

    /// A user matched by templates enrolled before SFace was just let in: this walk-up's
    /// SFace embeddings become their templates (with an audit row and a `user_changed`
    /// event `face_upgraded`, in one transaction), unless they have SFace templates
    /// already. The API reloads the gallery on that event. A failure changes nothing and
    /// is only logged: the user keeps being matched as before.
    fn upgrade_templates(&mut self, u: &User, probes: Vec<Embedding>, ev: &mut Vec<Event>) {
        let (id, name) = (u.id, u.name.clone());
        let n = probes.len();
        let model = EmbeddingModel::CURRENT;
        let entry = AuditEntry::new(Method::Face, Outcome::Info, "face templates upgraded")
            .user(id, &name)
            .evidence(json!({ "model": model, "templates": n }));
        let event = Event::new(EventKind::UserChanged)
            .user(Some(name.clone()))
            .method(Method::Face)
            .reason("face_upgraded")
            .detail(json!({ "model": model, "templates": n }));
        let (t, pending) = Pending::stage(Timed::at(self.last_now, event), self.outbox);
        let r = self.store.with(move |db| {
            db.atomically(|db| {
                if db.template_count_of(id, model)? > 0 {
                    return Ok(false);
                }
                let items: Vec<_> = probes
                    .into_iter()
                    .map(|e| (e, 1.0, "upgrade: a granted walk-up".to_owned()))
                    .collect();
                db.add_templates_of(id, model, &items)?;
                db.audit_append(&entry)?;
                pending.write(db)?;
                Ok(true)
            })
        });
        match r {
            Ok(true) => {
                log::info!("{name}: {n} {model} template(s) stored from a granted walk-up");
                ev.push(t.event);
            }
            Ok(false) => {}
            Err(e) => log::error!("{name}: could not store {model} templates: {e}"),
        }
    }

    // ----- keypad ---------------------------------------------------------------------

    fn on_key(&mut self, now: i64, k: char, ev: &mut Vec<Event>) {
        if self.policy.is_locked(&self.lockout, now) {
            self.show(
                now,
                "Keypad locked",
                &format!("Face only {}", minutes_seconds(self.lockout.until_ms - now)),
            );
            return;
        }
        if !self.entry.is_empty()
            && now - self.last_key_ms > (self.cfg.keypad_entry_timeout_s * 1000.0) as i64
        {
            self.entry.clear();
        }
        self.last_key_ms = now;
        match k {
            '0'..='9' => {
                if self.entry.len() >= MAX_ENTRY {
                    self.entry.clear();
                    self.show(now, "Too long", "Entry cleared");
                    return;
                }
                self.entry.push(k);
            }
            '*' if self.entry.is_empty() => self.entry.push('*'),
            '#' if !self.entry.is_empty() && !self.entry.contains('#') => self.entry.push('#'),
            '#' if self.entry.contains('#') => {
                let buf = std::mem::take(&mut self.entry);
                self.submit(now, &buf, ev);
                return;
            }
            'C' | 'D' | '*' | '#' => {
                self.entry.clear();
                self.show(now, "Entry cleared", "");
                return;
            }
            _ => return, // A, B: reserved
        }
        let masked: String = self
            .entry
            .chars()
            .map(|c| if c.is_ascii_digit() { '*' } else { c })
            .collect();
        let _ = self.dev.display.show("Code:", &masked);
        self.idle_at = None;
    }

    /// A credential from elsewhere: refused while the keypad is locked out, otherwise
    /// checked as a keypad entry (a wrong one is a strike).
    fn on_credential(
        &mut self,
        now: i64,
        keys: &str,
        via: Method,
        ev: &mut Vec<Event>,
    ) -> Result<String, ApiError> {
        if self.policy.is_locked(&self.lockout, now) {
            self.deny(now, via, None, "keypad_locked_out", json!({}), ev);
            return Err(ApiError::Busy(format!(
                "the keypad is locked out for {}",
                minutes_seconds(self.lockout.until_ms - now)
            )));
        }
        let before = ev.len();
        self.submit_via(now, keys, Some(via), ev);
        if ev[before..].iter().any(|e| e.event == EventKind::Unlock) {
            Ok("unlocked".into())
        } else {
            Err(ApiError::NotAuthorized(
                "the code did not open the lock".into(),
            ))
        }
    }

    fn submit(&mut self, now: i64, buf: &str, ev: &mut Vec<Event>) {
        self.submit_via(now, buf, None, ev)
    }

    /// Check a keypad entry; `via` replaces the method in audit rows and events (the
    /// credential kind is in the reason).
    fn submit_via(&mut self, now: i64, buf: &str, via: Option<Method>, ev: &mut Vec<Event>) {
        let entry = credentials::parse_entry(buf, &self.cfg);
        let method = via.unwrap_or(match entry {
            Entry::Totp { .. } => Method::Totp,
            Entry::Code { .. } => Method::Otp,
            Entry::Malformed => Method::Keypad,
        });
        let e2 = entry.clone();
        let verdict = match self.store.with(move |db| credentials::verify(db, &e2, now)) {
            Ok(v) => v,
            Err(e) => {
                // Cannot check: deny, but do not count it against the user.
                self.fail_closed(
                    now,
                    "keypad",
                    method,
                    &format!("cannot check the code: {e}"),
                    ev,
                );
                return;
            }
        };
        match verdict {
            Verdict::TotpOk { user, step } => {
                if !user.may_enter() {
                    let banned = user.role == crate::types::Role::Banned;
                    self.deny(
                        now,
                        via.unwrap_or(Method::Totp),
                        Some(user.name.clone()),
                        if banned { "banned" } else { "disabled" },
                        json!({}),
                        ev,
                    );
                    if banned {
                        self.alert(
                            AlertKind::BannedUser,
                            format!("banned user {} used the keypad", user.name),
                            ev,
                        );
                    }
                    return;
                }
                let name = user.name.clone();
                let _ = self.grant(
                    now,
                    Some(&user),
                    name,
                    via.unwrap_or(Method::Totp),
                    "totp",
                    json!({ "step": step }),
                    ev,
                );
            }
            Verdict::CodeOk { slot, user } => match user {
                Some(u) if !u.may_enter() => {
                    self.deny(
                        now,
                        via.unwrap_or(Method::Otp),
                        Some(u.name.clone()),
                        "disabled",
                        json!({ "slot": slot }),
                        ev,
                    );
                }
                Some(u) => {
                    let name = u.name.clone();
                    let _ = self.grant(
                        now,
                        Some(&u),
                        name,
                        via.unwrap_or(Method::Otp),
                        "one_time_code",
                        json!({ "slot": slot }),
                        ev,
                    );
                }
                None => {
                    let label = format!("code #{slot}");
                    let _ = self.grant(
                        now,
                        None,
                        label,
                        via.unwrap_or(Method::Otp),
                        "one_time_code",
                        json!({ "slot": slot }),
                        ev,
                    );
                }
            },
            Verdict::Wrong(reason) => self.wrong_entry(now, method, reason, ev),
        }
    }

    fn wrong_entry(&mut self, now: i64, method: Method, reason: &str, ev: &mut Vec<Event>) {
        let mut s = self.lockout;
        let locked = self.policy.wrong(&mut s, now);
        let saved = {
            let s2 = s;
            self.store.with(move |db| db.lockout_save(&s2))
        };
        if let Err(e) = saved {
            // Keep counting in memory; the alert says the lockout may not survive a restart.
            self.alert(
                AlertKind::Fault,
                format!("cannot persist the keypad lockout: {e}"),
                ev,
            );
        }
        self.lockout = s;
        self.deny(
            now,
            method,
            None,
            reason,
            json!({ "strikes": s.strikes, "level": s.level }),
            ev,
        );
        self.show(now, "Wrong code", "");
        if let Some(until) = locked {
            let secs = (until - now) / 1000;
            self.emit(
                Event::new(EventKind::Lockout)
                    .method(method)
                    .reason("too_many_wrong_codes")
                    .detail(json!({ "level": s.level, "seconds": secs })),
                ev,
            );
            self.alert(
                AlertKind::KeypadLockout,
                format!(
                    "{} wrong codes: keypad locked for {} (lockout {} since the last reset; check who is at the door before resetting)",
                    self.cfg.keypad_max_strikes,
                    minutes_seconds(until - now),
                    s.level
                ),
                ev,
            );
            self.signal(now, Signal::Locked);
            self.show_idle(now);
        }
    }

    // ----- door -----------------------------------------------------------------------

    fn on_door(&mut self, now: i64, open: bool, ev: &mut Vec<Event>) {
        if self.door_known && open == self.door_open {
            return;
        }
        let first = !self.door_known;
        self.door_known = true;
        self.door_open = open;
        if first && !open {
            // The first report of a closed door is not a change.
            return;
        }
        if open {
            self.door_opened_at = now;
            self.held_alerted = false;
            let opened = Event::new(EventKind::DoorOpen).method(Method::Door);
            if now > self.authorized_until {
                let entry = AuditEntry::new(Method::Door, Outcome::Alert, "door_forced");
                let _ = self.record(entry, opened, ev);
                self.alert(
                    AlertKind::DoorForced,
                    "door opened without a grant".into(),
                    ev,
                );
            } else {
                let entry = AuditEntry::new(Method::Door, Outcome::Info, "door_opened");
                let _ = self.record(entry, opened, ev);
            }
        } else {
            let held = (now - self.door_opened_at) / 1000;
            let _ = self.record(
                AuditEntry::new(Method::Door, Outcome::Info, "door_closed")
                    .evidence(json!({ "open_s": held })),
                Event::new(EventKind::DoorClosed).method(Method::Door),
                ev,
            );
        }
    }

    // ----- admin ----------------------------------------------------------------------

    fn on_admin(
        &mut self,
        now: i64,
        r: AdminRequest,
        ev: &mut Vec<Event>,
    ) -> Result<String, ApiError> {
        match r {
            AdminRequest::Unlock { by, via, reason } => {
                // `by` names the caller with their role (the request API composes it).
                let label = by.clone();
                let why = if reason.is_empty() {
                    "remote_unlock".to_string()
                } else {
                    reason.clone()
                };
                self.grant(
                    now,
                    None,
                    label,
                    via,
                    "remote_unlock",
                    json!({ "by": by, "why": why }),
                    ev,
                )
                .map(|()| format!("unlocked for {} s", self.cfg.unlock_pulse_s))
                .map_err(|e| ApiError::Internal(format!("{e}; the lock stays locked")))
            }
            AdminRequest::Lock { by, via } => {
                let was_open = self.unlocked_until.is_some();
                self.dev.lock.set_locked(true).map_err(|e| {
                    self.relock_retry_at = Some(now + 500);
                    ApiError::Internal(format!("cannot drive the lock: {e}; retrying"))
                })?;
                self.unlocked_until = None;
                self.relock_retry_at = None;
                self.authorized_until = self.authorized_until.min(now);
                let entry = AuditEntry::new(via, Outcome::Info, "locked_by_request")
                    .evidence(json!({ "by": by, "was_unlocked": was_open }));
                if was_open {
                    let _ = self.record(
                        entry,
                        Event::new(EventKind::Lock).method(via).user(Some(by)),
                        ev,
                    );
                } else {
                    let _ = self.audit(entry);
                }
                self.show_idle(now);
                Ok(if was_open { "locked" } else { "already locked" }.into())
            }
            AdminRequest::LockoutReset { by, via } => {
                let mut s = self.lockout;
                self.policy.reset(&mut s);
                let event = Event::new(EventKind::LockoutReset)
                    .method(via)
                    .detail(json!({ "by": by.clone() }));
                let (t, pending) = Pending::stage(Timed::at(now, event), self.outbox);
                let saved = self.store.with(move |db| {
                    db.atomically(|db| {
                        db.lockout_save(&s)?;
                        db.audit_append(
                            &AuditEntry::new(via, Outcome::Info, "keypad_lockout_reset")
                                .evidence(json!({ "by": by })),
                        )?;
                        pending.write(db)
                    })
                });
                if let Err(e) = saved {
                    return Err(ApiError::Internal(format!(
                        "cannot persist the lockout reset: {e}; nothing changed"
                    )));
                }
                self.lockout = s;
                ev.push(t.event);
                self.show_idle(now);
                Ok("keypad lockout cleared".into())
            }
        }
    }

    // ----- time -----------------------------------------------------------------------

    fn on_tick(&mut self, now: i64, ev: &mut Vec<Event>) {
        if self.unlocked_until.is_some_and(|t| now >= t)
            || self.relock_retry_at.is_some_and(|t| now >= t)
        {
            match self.dev.lock.set_locked(true) {
                Ok(()) => {
                    let was = self.unlocked_until.take();
                    if was.is_some() {
                        self.emit(Event::new(EventKind::Relock), ev);
                    }
                    self.relock_retry_at = None;
                    if self.idle_at.is_none() {
                        self.show_idle(now);
                    }
                }
                Err(e) => {
                    if self.relock_retry_at.is_none() {
                        self.alert(
                            AlertKind::Fault,
                            format!("cannot re-lock: {e}; retrying"),
                            ev,
                        );
                    }
                    self.unlocked_until = None;
                    self.relock_retry_at = Some(now + 500);
                }
            }
        }
        if self.door_open
            && !self.held_alerted
            && now - self.door_opened_at >= (self.cfg.door_held_open_s * 1000.0) as i64
        {
            self.held_alerted = true;
            self.alert(
                AlertKind::DoorHeldOpen,
                format!("door open for more than {} s", self.cfg.door_held_open_s),
                ev,
            );
        }
        if !self.entry.is_empty()
            && now - self.last_key_ms >= (self.cfg.keypad_entry_timeout_s * 1000.0) as i64
        {
            self.entry.clear();
            self.show_idle(now);
        }
        if self.lockout.until_ms > 0 && now >= self.lockout.until_ms {
            // The lockout is over; the level stays until an admin resets it.
            self.lockout.until_ms = 0;
            let s = self.lockout;
            if let Err(e) = self.store.with(move |db| db.lockout_save(&s)) {
                log::error!("cannot persist the end of the lockout: {e}");
            }
            self.show_idle(now);
        }
        if self.signal_off_at.is_some_and(|t| now >= t) {
            self.signal(now, Signal::Off);
        }
        if self.idle_at.is_some_and(|t| now >= t) {
            self.show_idle(now);
        }
        // The fleet was cut off, or is back: the idle screen follows (not over a message,
        // an entry or an open door).
        if self.fleet_cut_off(now) != self.fleet_shown
            && self.idle_at.is_none()
            && self.entry.is_empty()
            && self.unlocked_until.is_none()
        {
            self.show_idle(now);
        }
    }
}
