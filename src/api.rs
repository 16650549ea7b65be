//! The request API's types live in `lockerd-client` (what `lockerctl` links: no store,
//! no vision); re-exported here whole, with what only the daemon has: the conversions
//! from store rows and errors, and the event bus ([`event::EventBus`]), which queues
//! events in the store's outbox.

pub use lockerd_client::api::*;

use crate::store::{AuditRow, LockoutState, StoreError, VerifyReport};

pub mod event {
    //! The broadcast event types (`lockerd-client`) and the daemon's event bus.
    pub use lockerd_client::api::event::*;

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
}

impl From<&AuditRow> for AuditItem {
    fn from(r: &AuditRow) -> Self {
        AuditItem {
            seq: r.seq,
            ts_ms: r.ts_ms,
            method: r.method.clone(),
            outcome: r.outcome.clone(),
            user: r.user_name.clone(),
            reason: r.reason.clone(),
            evidence: serde_json::from_str(&r.evidence).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl From<&VerifyReport> for AuditCheck {
    fn from(v: &VerifyReport) -> Self {
        AuditCheck {
            ok: v.ok,
            rows: v.rows as i64,
            first_bad: v.first_broken_seq,
            message: match (&v.problem, v.ok) {
                (_, true) => format!(
                    "chain ok: {} row(s), head {}",
                    v.rows,
                    hex::encode(&v.head_hash)
                ),
                (Some(p), false) => p.clone(),
                (None, false) => "chain broken".into(),
            },
        }
    }
}

/// The keypad lockout as `lockout show` gives it, at `now_ms`.
pub fn lockout_info(s: &LockoutState, now_ms: i64) -> LockoutInfo {
    LockoutInfo {
        strikes: s.strikes,
        level: s.level,
        until_ms: s.until_ms,
        locked: s.until_ms > now_ms,
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(m) => ApiError::NoSuchUser(m),
            StoreError::Conflict(m) => ApiError::AlreadyExists(m),
            StoreError::Invalid(m) => ApiError::InvalidArgument(m),
            StoreError::Closed => ApiError::Unavailable("the store has stopped".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// The fleet connection's view of the directory, as its task ([`crate::mqtt::fleet`])
/// keeps it: whether it is synced, syncing or offline, and when it was last in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetLink {
    pub link: FleetState,
    /// The last moment the directory was known current (ms since the epoch): kept while
    /// synced, frozen when the connection goes. None: never since the start.
    pub last_synced_ms: Option<i64>,
}

impl Default for FleetLink {
    /// At the start: not synced, and nothing known of how long the kiosk was away.
    fn default() -> Self {
        FleetLink {
            link: FleetState::Syncing,
            last_synced_ms: None,
        }
    }
}

/// Whether fleet users may open by face: the fleet task's [`FleetLink`] and
/// `[fleet] offline_after_s`. Read by the access controller at each face grant and by
/// the status.
#[derive(Debug, Clone)]
pub struct FleetGate {
    pub link: tokio::sync::watch::Receiver<FleetLink>,
    pub offline_after_ms: i64,
}

impl FleetGate {
    /// The state at `now_ms`: offline turns into cut_off once `offline_after_ms` have
    /// passed since the last sync (at once if there was none since the start).
    pub fn state(&self, now_ms: i64) -> FleetState {
        let l = *self.link.borrow();
        fleet_state(l, now_ms, self.offline_after_ms)
    }
}

/// [`FleetGate::state`] of one link value.
pub fn fleet_state(l: FleetLink, now_ms: i64, offline_after_ms: i64) -> FleetState {
    match (l.link, l.last_synced_ms) {
        (FleetState::Offline, Some(t)) if now_ms - t < offline_after_ms => FleetState::Offline,
        (FleetState::Offline, _) => FleetState::CutOff,
        (s, _) => s,
    }
}

#[cfg(test)]
mod fleet_tests {
    use super::*;

    #[test]
    fn a_kiosk_away_longer_than_the_grace_or_never_synced_is_cut_off() {
        let at = |link, last| FleetLink {
            link,
            last_synced_ms: last,
        };
        let s = |l, now| fleet_state(l, now, 60_000);
        assert_eq!(
            s(at(FleetState::Synced, Some(0)), 1_000_000),
            FleetState::Synced
        );
        assert_eq!(
            s(at(FleetState::Offline, Some(0)), 59_999),
            FleetState::Offline
        );
        assert_eq!(
            s(at(FleetState::Offline, Some(0)), 60_000),
            FleetState::CutOff
        );
        // Away since the start: nothing says the directory is current.
        assert_eq!(s(at(FleetState::Offline, None), 1), FleetState::CutOff);
        assert_eq!(s(FleetLink::default(), 1), FleetState::Syncing);
        for (st, grants) in [
            (FleetState::Synced, true),
            (FleetState::Offline, true),
            (FleetState::Syncing, false),
            (FleetState::CutOff, false),
        ] {
            assert_eq!(st.grants(), grants, "{st:?}");
        }
    }
}
