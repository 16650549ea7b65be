//! The ESP32 lock link. One task owns the daemon's end of the lock protocol
//! (`lock_proto::DaemonEnd`), its counters in the store and the lock's topics on the
//! bridge's connection (`lockerd/<kiosk>/lock/<id>/cmd`, `.../state`, and the retained
//! `.../availability` it writes). The actuator (`hw::esp32::Esp32Lock`, owned by the
//! controller) sends it requests and waits for the answer to an unlock; the bridge's poll
//! loop hands it the payloads of the state topic and whether the broker is connected.
//! Back to the controller go the lock's door contact (`Input::Door`), a jam (`Input::Fault`,
//! an alert) and a `Tick` whenever what the lock reports changes, so the status follows.
//!
//! Fail closed: an unlock is answered `Ok` only when a fresh, authentic report acknowledges
//! its counter. Not acknowledged within `ack_timeout_ms` it is sent again under a new
//! counter, `retries` times; then it fails (the controller raises a `fault` alert) and a
//! lock command supersedes anything still in flight. A lock silent for
//! `report_timeout_s`, or a broker that is down, makes the lock unavailable: grants fail
//! at once until it reports again.
//!
//! A report is persisted as seen before it is acted on, except a heartbeat that says
//! exactly what the last persisted report said (same `acked`, state and door): those are
//! persisted at most every [`SAVE_SAME_EVERY`] and when the link ends, so a lock reporting
//! every 10 s is not a store write every 10 s. After a power cut, a heartbeat from that last
//! minute could be taken once more; it can only repeat what the store already holds, since
//! any report that changed something was persisted with a later counter.

use super::bridge::Topics;
use super::config::LockConfig;
use crate::access::controller::Input;
use crate::hw::esp32::{Esp32Lock, LinkHealth, LinkRequest};
use crate::store::Store;
use lock_proto::{CommandError, DaemonEnd, Door, FrameError, Key, Kind, LockState};
use rumqttc::{AsyncClient, QoS};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use zeroize::Zeroizing;

/// How often a report that changes nothing is persisted as seen.
pub const SAVE_SAME_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum LockLinkError {
    #[error("lock.key_file {0}: {1}")]
    Key(String, String),
}

/// The link task's half: built with its actuator by [`pair`], run by the bridge.
pub struct LockLink {
    pub lock_id: String,
    key: Zeroizing<Key>,
    requests: mpsc::Receiver<LinkRequest>,
    health: Arc<LinkHealth>,
    ack_timeout: Duration,
    retries: u32,
    report_timeout: Duration,
}

/// The actuator for the controller and the link for the bridge, from `[lock]`. The key
/// file must be owner-only and hold exactly 32 bytes.
pub fn pair(cfg: &LockConfig, pulse_ms: u32) -> Result<(Esp32Lock, LockLink), LockLinkError> {
    let key = read_key(cfg)?;
    let (tx, requests) = mpsc::channel(8);
    let health = Arc::new(LinkHealth::default());
    let ack_timeout = Duration::from_millis(cfg.ack_timeout_ms);
    let wait = ack_timeout * (cfg.retries + 1) + Duration::from_secs(1);
    let actuator = Esp32Lock::new(tx, health.clone(), pulse_ms, wait);
    let link = LockLink {
        lock_id: cfg.lock_id.clone(),
        key,
        requests,
        health,
        ack_timeout,
        retries: cfg.retries,
        report_timeout: Duration::from_secs(cfg.report_timeout_s),
    };
    Ok((actuator, link))
}

/// The lock's key from `lock.key_file`: owner-only, exactly 32 bytes.
pub fn read_key(cfg: &LockConfig) -> Result<Zeroizing<Key>, LockLinkError> {
    let path = cfg.key_file.display().to_string();
    let bytes = crate::secret_file::read_owner_only(&cfg.key_file)
        .map_err(|e| LockLinkError::Key(path.clone(), e.to_string()))?;
    let key: Key = bytes.as_slice().try_into().map_err(|_| {
        LockLinkError::Key(
            path,
            format!(
                "{} bytes; it must hold exactly 32 raw bytes (head -c 32 /dev/urandom)",
                bytes.len()
            ),
        )
    })?;
    Ok(Zeroizing::new(key))
}

/// What the bridge gives the link task.
pub struct Wiring {
    pub client: AsyncClient,
    pub topics: Topics,
    /// Payloads published on the lock's state topic.
    pub frames: mpsc::Receiver<Vec<u8>>,
    /// Whether the bridge's connection is up.
    pub connected: watch::Receiver<bool>,
    pub store: Store,
    pub controller: mpsc::Sender<Input>,
}

/// An unlock goes bound to a report at most this old (half the lock's window,
/// `lock_proto::FRESH_MS`); with an older one the daemon asks for a report first.
const BIND_FRESH: Duration = Duration::from_millis(lock_proto::FRESH_MS / 2);

struct Pending {
    counter: u64,
    /// When the first try went out (the round trip the log reports).
    since: Instant,
    tries: u32,
    pulse_ms: u32,
    deadline: Instant,
    reply: std::sync::mpsc::Sender<Result<(), String>>,
}

struct Task {
    link: LockLink,
    end: DaemonEnd,
    w: Wiring,
    pending: Option<Pending>,
    last_report: Instant,
    /// What the last persisted report said (acked, state, door), and when.
    saved: Option<((u64, LockState, Door), Instant)>,
    /// Counters accepted but not yet persisted (a heartbeat that changed nothing).
    unsaved: Option<lock_proto::Counters>,
    available: bool,
    jammed: bool,
    door: Door,
    /// Refused reports logged (see [`crate::logging::LogBudget`]).
    refusals_logged: crate::logging::LogBudget,
    /// The admin was told that the lock's counters went back (once, until it reports).
    went_back_alerted: bool,
}

/// Run the link until the actuator is gone.
pub async fn run(mut link: LockLink, w: Wiring) {
    let id = link.lock_id.clone();
    let saved = match w.store.call(move |db| db.lock_counters_load(&id)).await {
        Ok(c) => c,
        Err(e) => {
            // Without its counters the link could reuse one: it stays down (closed).
            log::error!("lock {}: cannot read its counters: {e}", link.lock_id);
            while let Some(r) = link.requests.recv().await {
                if let LinkRequest::Unlock { reply, .. } = r {
                    let _ = reply.send(Err("the lock link cannot read its counters".into()));
                }
            }
            return;
        }
    };
    let mut t = Task::new(link, w, saved);
    log::info!(
        "lock {}: ESP32 link on {} (counters: {} reserved, {} seen)",
        t.link.lock_id,
        t.w.topics.lock_cmd(&t.link.lock_id),
        saved.reserved,
        saved.seen
    );
    t.run().await;
}

impl Task {
    fn new(link: LockLink, w: Wiring, saved: lock_proto::Counters) -> Task {
        Task {
            end: DaemonEnd::new(*link.key, saved),
            link,
            w,
            pending: None,
            last_report: Instant::now(),
            saved: None,
            unsaved: None,
            available: false,
            jammed: false,
            door: Door::None,
            refusals_logged: crate::logging::LogBudget::new(5, Duration::from_secs(60)),
            went_back_alerted: false,
        }
    }

    async fn run(&mut self) {
        // Marked seen here, so `changed()` does not announce the same connection again.
        if *self.w.connected.borrow_and_update() {
            self.on_connected().await;
        }
        loop {
            let now = Instant::now();
            let mut next = now + Duration::from_secs(3600);
            if let Some(p) = &self.pending {
                next = next.min(p.deadline);
            }
            if self.available {
                next = next.min(self.last_report + self.link.report_timeout);
            }
            tokio::select! {
                r = self.link.requests.recv() => match r {
                    Some(r) => self.on_request(r).await,
                    None => break,
                },
                f = self.w.frames.recv() => match f {
                    Some(f) => self.on_frame(&f).await,
                    None => break,
                },
                r = self.w.connected.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let up = *self.w.connected.borrow_and_update();
                    if up {
                        self.on_connected().await;
                    } else {
                        self.set_available(false, "the broker connection dropped").await;
                    }
                }
                _ = tokio::time::sleep_until(next) => self.on_time().await,
            }
        }
        self.finish().await;
    }

    /// The link ends: an unlock still waiting fails, and what was seen is persisted.
    async fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            let _ = p.reply.send(Err("the lock link stopped".into()));
        }
        if let Some(c) = self.unsaved.take() {
            if let Err(e) = self.save(c).await {
                log::error!(
                    "lock {}: cannot persist the report counter: {e}",
                    self.link.lock_id
                );
            }
        }
    }

    async fn save(&self, c: lock_proto::Counters) -> Result<(), crate::store::StoreError> {
        let id = self.link.lock_id.clone();
        self.w
            .store
            .call(move |db| db.lock_counters_save(&id, c))
            .await
    }

    async fn on_connected(&mut self) {
        let (c, t) = (&self.w.client, &self.w.topics);
        let avail = if self.available { "online" } else { "offline" };
        let _ = c
            .subscribe(t.lock_state(&self.link.lock_id), QoS::AtLeastOnce)
            .await;
        let _ = c
            .publish(
                t.lock_availability(&self.link.lock_id),
                QoS::AtLeastOnce,
                true,
                avail,
            )
            .await;
        // Ask for a report at once rather than wait for the next heartbeat.
        if let Err(e) = self.send(Kind::Report, 0).await {
            log::warn!("lock {}: {e}", self.link.lock_id);
        }
    }

    async fn on_request(&mut self, r: LinkRequest) {
        match r {
            LinkRequest::Unlock { pulse_ms, reply } => {
                if let Some(p) = self.pending.take() {
                    let _ = p.reply.send(Err("superseded by a newer unlock".into()));
                }
                if !*self.w.connected.borrow() {
                    let _ = reply.send(Err("the MQTT broker is not connected".into()));
                    return;
                }
                let p = Pending {
                    counter: 0,
                    since: Instant::now(),
                    tries: 0,
                    pulse_ms,
                    deadline: Instant::now(),
                    reply,
                };
                self.push_unlock(p).await;
            }
            LinkRequest::Lock => {
                if *self.w.connected.borrow() {
                    if let Err(e) = self.send(Kind::Lock, 0).await {
                        log::warn!("lock {}: {e}", self.link.lock_id);
                    }
                }
            }
        }
    }

    /// Send the pending unlock bound to the lock's latest report; when that report is
    /// too old for the lock to take a command bound to it (`lock_proto::FRESH_MS`), or
    /// there is none, ask for a report first: the unlock goes when it comes
    /// ([`Task::on_frame`]).
    async fn push_unlock(&mut self, mut p: Pending) {
        let fresh = self.end.bound().is_some() && self.last_report.elapsed() <= BIND_FRESH;
        p.deadline = Instant::now() + self.link.ack_timeout;
        let sent = if fresh {
            p.tries += 1;
            self.send(Kind::Unlock, p.pulse_ms)
                .await
                .map(|c| p.counter = c)
        } else {
            self.send(Kind::Report, 0).await.map(|_| ())
        };
        match sent {
            Ok(()) => self.pending = Some(p),
            Err(e) => {
                let _ = p.reply.send(Err(e));
            }
        }
    }

    /// Frame a command under the next counter (persisting a new reservation first when
    /// one is due) and publish it. Its counter, or why not.
    async fn send(&mut self, kind: Kind, pulse_ms: u32) -> Result<u64, String> {
        let (counter, frame) = loop {
            match self.end.command(kind, pulse_ms) {
                Ok(x) => break x,
                Err(CommandError::Persist(c)) => {
                    self.save(c)
                        .await
                        .map_err(|e| format!("cannot persist the lock counters: {e}"))?;
                    self.end.reserved(c);
                }
                Err(CommandError::NoReport) => {
                    return Err("no report from the lock yet to bind a command to".into())
                }
            }
        };
        let topic = self.w.topics.lock_cmd(&self.link.lock_id);
        self.w
            .client
            .publish(topic, QoS::AtLeastOnce, false, frame.to_vec())
            .await
            .map_err(|e| format!("cannot publish to the lock: {e}"))?;
        log::debug!("lock {}: sent {kind:?} #{counter}", self.link.lock_id);
        Ok(counter)
    }

    async fn on_frame(&mut self, frame: &[u8]) {
        let id = self.link.lock_id.clone();
        let a = match self.end.check_report(frame) {
            Ok(a) => a,
            Err(e @ FrameError::WentBack { .. }) => {
                // Authentic, but behind what was accepted: reflashed or its flash lost.
                // Its reports cannot be taken (an old one could be replayed as well), so
                // it is unavailable and grants fail closed; the admin hears it once.
                self.set_available(false, "its counters went back").await;
                if !self.went_back_alerted {
                    self.went_back_alerted = true;
                    let _ = self.w.controller.try_send(Input::Fault(format!(
                        "the ESP32 lock {id} restarted with counters behind the ones this kiosk accepted ({e}): reflashed or its flash lost? Its reports are refused and it stays unavailable until its counters are reset (hardware/esp32-lock/README.md)"
                    )));
                }
                return;
            }
            Err(e) => {
                let s = self.end.stats;
                // Anyone who can publish on the lock's topic can send these: a few lines
                // a minute, then a count.
                let (log_it, held) = self.refusals_logged.take(Instant::now().into_std());
                if held > 0 {
                    log::warn!(
                        "lock {id}: {held} more refused reports in the last minute were not logged"
                    );
                }
                if log_it {
                    log::warn!(
                        "lock {id}: refused a report ({}): {e}; refused so far: {} forged, {} replayed, {} truncated, {} invalid, {} went back",
                        e.kind(),
                        s.forged,
                        s.replayed,
                        s.truncated,
                        s.invalid,
                        s.went_back
                    );
                }
                return;
            }
        };
        let says = (a.frame.acked, a.frame.state, a.frame.door);
        let same =
            matches!(self.saved, Some((s, at)) if s == says && at.elapsed() < SAVE_SAME_EVERY);
        if same {
            self.unsaved = Some(a.counters);
        } else {
            if let Err(e) = self.save(a.counters).await {
                // Not persisted, not taken: a report is not worth a counter that could go back.
                log::error!("lock {id}: cannot persist the report counter: {e}");
                return;
            }
            self.saved = Some((says, Instant::now()));
            self.unsaved = None;
        }
        let r = self.end.commit(a);
        log::debug!("lock {id}: report #{} {r:?}", r.counter);
        self.last_report = Instant::now();
        self.set_available(true, "reporting").await;
        if let Some(p) = self
            .pending
            .take_if(|p| p.counter > 0 && r.acked >= p.counter)
        {
            log::info!(
                "lock {id}: unlock #{} acknowledged (try {}) in {:.1} ms",
                p.counter,
                p.tries,
                p.since.elapsed().as_secs_f64() * 1000.0
            );
            let _ = p.reply.send(Ok(()));
        }
        self.went_back_alerted = false;
        // An unlock waiting for this report goes now, bound to it; one that this report
        // crossed (a heartbeat) is stale at the lock: it goes again, bound to this one.
        if let Some(p) = self.pending.take() {
            if p.tries > self.link.retries {
                self.pending = Some(p);
            } else {
                self.push_unlock(p).await;
            }
        }
        let jammed = r.state == LockState::Jammed;
        if jammed != self.jammed {
            self.jammed = jammed;
            self.link.health.set(self.available, jammed);
            if jammed {
                let _ = self.w.controller.try_send(Input::Fault(format!(
                    "the ESP32 lock {id} reports itself jammed"
                )));
            } else {
                log::info!("lock {id}: no longer jammed");
                let _ = self.w.controller.try_send(Input::Tick);
            }
        }
        if r.door != self.door {
            self.door = r.door;
            let open = match r.door {
                Door::Open => Some(true),
                Door::Closed => Some(false),
                Door::None => None,
            };
            if let Some(open) = open {
                let _ = self.w.controller.try_send(Input::Door { open });
            }
        }
    }

    async fn on_time(&mut self) {
        let now = Instant::now();
        if self.available && now >= self.last_report + self.link.report_timeout {
            self.set_available(false, "no report").await;
        }
        let Some(p) = self.pending.take_if(|p| now >= p.deadline) else {
            return;
        };
        let id = self.link.lock_id.clone();
        let too_long = p.since.elapsed() > self.link.ack_timeout * (self.link.retries + 2);
        if p.tries > self.link.retries || too_long {
            log::error!(
                "lock {id}: unlock not acknowledged after {} tries; the grant fails closed",
                p.tries
            );
            let _ = p.reply.send(Err(format!(
                "the ESP32 lock did not acknowledge the unlock ({} tries, {} ms each)",
                p.tries,
                self.link.ack_timeout.as_millis()
            )));
            // Anything of it still in flight is superseded by a later counter.
            let _ = self.send(Kind::Lock, 0).await;
            return;
        }
        log::warn!(
            "lock {id}: unlock #{} not acknowledged; sending it again under a new counter",
            p.counter
        );
        self.push_unlock(p).await;
    }

    async fn set_available(&mut self, available: bool, why: &str) {
        if available == self.available {
            return;
        }
        self.available = available;
        self.link.health.set(available, self.jammed);
        let id = &self.link.lock_id;
        if available {
            log::info!("lock {id}: available ({why})");
        } else {
            log::warn!("lock {id}: unavailable ({why}); grants fail closed until it reports");
        }
        let payload = if available { "online" } else { "offline" };
        let _ = self
            .w
            .client
            .publish(
                self.w.topics.lock_availability(id),
                QoS::AtLeastOnce,
                true,
                payload,
            )
            .await;
        let _ = self.w.controller.try_send(Input::Tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lock_proto::{Counters, Lock};

    fn task(store: &Store, key: Key) -> Task {
        let (_, requests) = mpsc::channel(8);
        let link = LockLink {
            lock_id: "door1".into(),
            key: Zeroizing::new(key),
            requests,
            health: Arc::new(LinkHealth::default()),
            ack_timeout: Duration::from_secs(1),
            retries: 0,
            report_timeout: Duration::from_secs(600),
        };
        let opts = rumqttc::MqttOptions::new("t", "localhost", 1883);
        // No event loop: the task's publishes fail, and it ignores that as it would a
        // broker that is down.
        let (client, _) = AsyncClient::new(opts, 64);
        let (_, frames) = mpsc::channel(1);
        let (_, connected) = watch::channel(false);
        let (controller, _) = mpsc::channel(64);
        let w = Wiring {
            client,
            topics: Topics::new("k1"),
            frames,
            connected,
            store: store.clone(),
            controller,
        };
        Task::new(link, w, Counters::default())
    }

    fn report(lock: &mut Lock) -> lock_proto::Outgoing {
        loop {
            match lock.report(0) {
                Ok(f) => return f,
                Err(c) => lock.reserved(c),
            }
        }
    }

    /// Reports that change something are persisted before they count; a heartbeat that
    /// repeats the last persisted report is persisted at most every minute and when the
    /// link ends. Refused frames are never persisted.
    #[tokio::test(start_paused = true)]
    async fn unchanged_heartbeats_are_persisted_at_most_every_minute_and_when_the_link_ends() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::inline(crate::store::test_db(d.path()));
        let key = [7u8; 32];
        let mut t = task(&store, key);
        let mut lock = Lock::boot(key, Counters::default(), Door::Closed, [3; 8]);
        let seen = || async {
            let c = store.call(|db| db.lock_counters_load("door1")).await;
            c.unwrap().seen
        };

        let first = report(&mut lock);
        t.on_frame(&first).await;
        assert_eq!(seen().await, 1, "the first report is persisted");
        assert!(t.available);
        t.on_frame(&report(&mut lock)).await;
        t.on_frame(&report(&mut lock)).await;
        assert_eq!(seen().await, 1, "two heartbeats repeating it are not");
        assert_eq!(t.unsaved.map(|c| c.seen), Some(3));
        // Taken all the same: the first one again is a replay.
        t.on_frame(&first).await;
        assert_eq!(t.end.stats.replayed, 1);

        lock.set_door(Door::Open);
        t.on_frame(&report(&mut lock)).await;
        assert_eq!(seen().await, 4, "a change is persisted at once");
        assert_eq!(t.door, Door::Open);
        assert!(t.unsaved.is_none());

        t.on_frame(&report(&mut lock)).await;
        assert_eq!(seen().await, 4);
        tokio::time::advance(SAVE_SAME_EVERY).await;
        t.on_frame(&report(&mut lock)).await;
        assert_eq!(seen().await, 6, "a minute on, a heartbeat is persisted");

        t.on_frame(&report(&mut lock)).await;
        assert_eq!(seen().await, 6);
        t.finish().await;
        assert_eq!(seen().await, 7, "the link's end persists the rest");
    }
}
