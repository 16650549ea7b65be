//! The broker connections. The command connection (client id `lockerd-<kiosk>`) owns
//! `lockerd/<kiosk>/cmd`: every command is checked ([`super::envelope`], nonces in the
//! store) and the good ones go to the request API as a `Via::Mqtt` caller; replies go to
//! `reply/<admin>`. It also carries the availability (retained `online`, last will
//! `offline`), the retained `state`, Home Assistant's discovery, events and lock command
//! ([`super::ha`]). Events themselves leave through the outbox on their own connection
//! ([`super::publisher`]), so they survive an outage and a restart.
//!
//! TLS (rustls with ring): the broker checked against `ca_file` only, a client
//! certificate and key from files, or a username and password file; plain TCP only to a
//! loopback broker (tests). A broker that is down is retried with back-off inside the
//! poll tasks: nothing else waits on it.
//!
//! Tasks: the poll loop owns the command connection and never waits on anything else;
//! it passes commands through a bounded queue (a flood beyond it is dropped and counted)
//! to the command task; the HA task publishes the state and HA's events.

use super::config::MqttConfig;
use super::envelope::{self, Admin, Check, Refusal, Refused};
use super::{ha, reply, StoreNonces};
use crate::api::{Caller, Clearance, Request, Via};
use crate::service::ApiHandle;
use crate::store::{AuditEntry, Method, Outcome, Store};
pub use lockerd_client::mqtt::conn::{
    endpoint, Connection, MqttError, Topics, INCOMING_PACKET_MAX,
};
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Commands waiting for the command task; more are dropped (and counted).
const QUEUE: usize = 256;
/// Commands naming an admin key waiting at once (a queue of their own).
const ADMIN_QUEUE: usize = 64;
/// Refusals before the signature (anyone can send them) audited and answered per minute.
const UNSIGNED_REFUSALS_PER_MIN: u32 = 10;
/// Home Assistant commands audited when refused, per minute.
const HA_REFUSALS_PER_MIN: u32 = 10;
/// Refusals after the signature check (replayed, stale, wrong kiosk) audited and answered
/// per admin key a minute; the rest are dropped unanswered.
const SIGNED_REFUSALS_PER_MIN: u32 = 10;

/// Reconnection back-off of a connection: 1 s doubling to 32 s, reset on a ConnAck;
/// failures are logged at the first and then at powers of two.
#[derive(Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub fn connected(&mut self) {
        self.failures = 0;
    }

    /// Log the failure (`why`) and sleep before the next try.
    pub async fn failed(&mut self, why: String) {
        self.failures += 1;
        let wait = Duration::from_millis(500 * (1 << self.failures.min(6)));
        if self.failures == 1 || self.failures.is_power_of_two() {
            log::warn!("{why}; retrying in {} ms", wait.as_millis());
        }
        tokio::time::sleep(wait).await;
    }
}

enum Cmd {
    Signed { payload: Vec<u8>, retained: bool },
    Ha { payload: Vec<u8> },
}

/// An ESP32 lock for the bridge to carry: its link and the controller's input.
pub type LockWiring = (
    super::lock::LockLink,
    mpsc::Sender<crate::access::controller::Input>,
);

/// The bridge's tasks, until [`Running::stop`].
pub struct Running {
    tasks: Vec<JoinHandle<()>>,
    lock: Option<JoinHandle<()>>,
}

impl Running {
    /// Abort the connections; the lock link then ends by itself (its inputs are gone),
    /// persisting what it has not yet, within 2 s or it is aborted too.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(mut l) = self.lock {
            if tokio::time::timeout(Duration::from_secs(2), &mut l)
                .await
                .is_err()
            {
                log::warn!("the lock link did not end within 2 s: aborted");
                l.abort();
            }
        }
    }
}

/// Connect and serve until [`Running::stop`]. Never blocks the caller: a broker that is
/// down is retried with back-off inside the poll tasks.
pub fn spawn(
    cfg: &MqttConfig,
    api: ApiHandle,
    store: Store,
    lock: Option<LockWiring>,
) -> Result<Running, MqttError> {
    let conn = Connection::new(cfg)?;
    let admins = Arc::new(cfg.admins().map_err(MqttError::Admins)?);
    if admins.is_empty() {
        log::warn!(
            "mqtt: no [[mqtt.admins]]: every remote command is refused (events, Home Assistant and the lock link work)"
        );
    }
    let topics = Topics::new(&cfg.kiosk_id);
    let (client, mut eventloop) = conn.client(conn.client_id.clone(), 64);
    eventloop.mqtt_options.set_last_will(LastWill::new(
        topics.availability(),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    let (tx, rx) = mpsc::channel::<Cmd>(QUEUE);
    // Commands that name a key with the admin role wait apart from everyone else's and are
    // served first: a flood from an operator or viewer key cannot push them out.
    let (tx_admin, rx_admin) = mpsc::channel::<Cmd>(ADMIN_QUEUE);
    let admin_ids: Vec<String> = admins
        .iter()
        .filter(|a| a.role == Clearance::Admin)
        .map(|a| a.id.clone())
        .collect();
    let ha_cfg = cfg.home_assistant.clone();
    let lock_id = lock.as_ref().map(|(l, _)| l.lock_id.clone());
    // In a fleet, the service's status says so from the start (syncing).
    let fleet = api.status().borrow().fleet != crate::api::FleetState::Off;
    let discovery = (
        ha::discovery_topic(cfg),
        serde_json::to_vec(&ha::discovery(cfg, &topics, lock_id.as_deref(), fleet))
            .unwrap_or_default(),
    );
    // The lock link's inputs: its state topic's payloads, and whether we are connected.
    let (frames_tx, frames_rx) = mpsc::channel::<Vec<u8>>(64);
    let (connected_tx, connected_rx) = watch::channel(false);
    let lock_state = lock_id.as_ref().map(|id| topics.lock_state(id));

    // 1. The poll loop: owns the command connection.
    let (c1, t1, status1) = (client.clone(), topics.clone(), api.status());
    let max_payload = cfg.max_payload_bytes as usize;
    let poll = tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let mut dropped = 0u64;
        loop {
            let cmd = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.connected();
                    connected_tx.send_replace(true);
                    log::info!("mqtt: connected; serving {}", t1.cmd());
                    let state = ha::state(&status1.borrow());
                    // Not awaited here: this loop is what drains the client's request
                    // queue, which may be full of what waited while the broker was
                    // away; waiting on it here would wait forever.
                    let (c, t, d, on) =
                        (c1.clone(), t1.clone(), discovery.clone(), ha_cfg.discovery);
                    tokio::spawn(async move { on_connect(&c, &t, state, on, &d).await });
                    None
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t1.cmd() => {
                    // Oversized payloads are cut here already: only their size travels on.
                    let payload = if p.payload.len() > max_payload {
                        vec![0u8; max_payload + 1]
                    } else {
                        p.payload.to_vec()
                    };
                    Some(Cmd::Signed {
                        payload,
                        retained: p.retain,
                    })
                }
                Ok(Event::Incoming(Packet::Publish(p)))
                    if lock_state.as_deref() == Some(p.topic.as_str()) =>
                {
                    // Frames are 52 bytes: anything longer goes on cut (and is refused).
                    let f = p.payload.iter().take(lock_proto::REPORT_LEN + 1).copied();
                    let _ = frames_tx.try_send(f.collect());
                    None
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == t1.ha_set() => {
                    // A retained lock command would replay itself on every reconnect.
                    (!p.retain).then(|| Cmd::Ha {
                        payload: p.payload.iter().take(1024).copied().collect(),
                    })
                }
                Ok(_) => None,
                Err(e) => {
                    connected_tx.send_replace(false);
                    backoff.failed(format!("mqtt: {e}")).await;
                    None
                }
            };
            if let Some(cmd) = cmd {
                let queue = match &cmd {
                    Cmd::Signed { payload, .. } if names_one_of(payload, &admin_ids) => &tx_admin,
                    _ => &tx,
                };
                if queue.try_send(cmd).is_err() {
                    dropped += 1;
                    if dropped.is_power_of_two() {
                        log::warn!("mqtt: {dropped} commands dropped (queue full: a flood?)");
                    }
                }
            }
        }
    });

    // 2. Commands.
    let check = CheckCfg {
        topic: topics.cmd(),
        kiosk: cfg.kiosk_id.clone(),
        admins,
        max_skew_s: cfg.max_skew_s as i64,
        max_payload_bytes: max_payload,
        allow_unlock: cfg.home_assistant.allow_unlock,
    };
    let commands = tokio::spawn(serve_commands(
        (rx_admin, rx),
        check,
        (client.clone(), topics.clone()),
        api.clone(),
        store.clone(),
    ));

    // 3. The retained state and HA's events (best effort: the outbox has every event).
    let lock_client = client.clone();
    let (c3, t3) = (client, topics.clone());
    let (mut status, mut events) = (api.status(), api.subscribe());
    let state = tokio::spawn(async move {
        loop {
            tokio::select! {
                r = status.changed() => {
                    if r.is_err() {
                        break;
                    }
                    let s = ha::state(&status.borrow_and_update()).to_string();
                    let _ = c3.publish(t3.state(), QoS::AtLeastOnce, true, s).await;
                }
                r = events.recv() => match r {
                    Ok(t) => {
                        if let Some((topic, body)) = ha::event(&t3, &t) {
                            if topic == t3.ha_access() {
                                publish_access(&c3, &t3, body.to_string()).await;
                            } else {
                                let _ = c3.publish(topic, QoS::AtLeastOnce, false, body.to_string()).await;
                            }
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => break,
                },
            }
        }
    });

    // 4. Events, from the outbox, on their own connection.
    let outbox = tokio::spawn(super::publisher::run(
        conn,
        topics.clone(),
        store.clone(),
        api.subscribe(),
    ));
    let tasks = vec![poll, commands, state, outbox];

    // 5. The ESP32 lock link, on the command connection.
    let lock = lock.map(|(link, controller)| {
        let wiring = super::lock::Wiring {
            client: lock_client,
            topics,
            frames: frames_rx,
            connected: connected_rx,
            store,
            controller,
        };
        tokio::spawn(super::lock::run(link, wiring))
    });
    Ok(Running { tasks, lock })
}

/// On every (re)connection: subscribe to commands, say online, publish the state, and
/// Home Assistant's discovery (or clear it with an empty retained message when off).
async fn on_connect(
    c: &AsyncClient,
    t: &Topics,
    state: serde_json::Value,
    discovery_on: bool,
    discovery: &(String, Vec<u8>),
) {
    let _ = c.subscribe(t.cmd(), QoS::AtLeastOnce).await;
    let _ = c
        .publish(t.availability(), QoS::AtLeastOnce, true, "online")
        .await;
    let _ = c
        .publish(t.state(), QoS::AtLeastOnce, true, state.to_string())
        .await;
    let body = if discovery_on {
        discovery.1.clone()
    } else {
        Vec::new()
    };
    let _ = c
        .publish(discovery.0.clone(), QoS::AtLeastOnce, true, body)
        .await;
    if discovery_on {
        let _ = c.subscribe(t.ha_set(), QoS::AtLeastOnce).await;
    }
}

/// An access for Home Assistant: its event, and the retained last access.
async fn publish_access(c: &AsyncClient, t: &Topics, body: String) {
    let _ = c
        .publish(t.ha_access(), QoS::AtLeastOnce, false, body.clone())
        .await;
    let _ = c
        .publish(t.last_access(), QoS::AtLeastOnce, true, body)
        .await;
}

#[derive(Clone)]
struct CheckCfg {
    topic: String,
    kiosk: String,
    admins: Arc<Vec<Admin>>,
    max_skew_s: i64,
    max_payload_bytes: usize,
    allow_unlock: bool,
}

/// Refusals audited per minute, so a flood costs a few audit rows at most (the same
/// budget as the log's: [`crate::logging::LogBudget`]).
type PerMinute = crate::logging::LogBudget;

fn per_minute(max: u32) -> PerMinute {
    PerMinute::new(max, Duration::from_secs(60))
}

async fn publish_json(client: &AsyncClient, topic: String, body: &serde_json::Value) {
    let _ = client
        .publish(
            topic,
            QoS::AtLeastOnce,
            false,
            serde_json::to_vec(body).unwrap_or_default(),
        )
        .await;
}

pub(super) async fn audit(store: &Store, entry: AuditEntry) {
    if let Err(e) = store.call(move |db| db.audit_append(&entry)).await {
        log::error!("could not audit a refused command: {e}");
    }
}

/// Whether a command envelope names one of `ids` as its key (unverified: only which queue
/// it waits in depends on it; the signature is checked when it is served).
fn names_one_of(payload: &[u8], ids: &[String]) -> bool {
    #[derive(serde::Deserialize)]
    struct Outer {
        key: String,
    }
    !ids.is_empty() && serde_json::from_slice::<Outer>(payload).is_ok_and(|o| ids.contains(&o.key))
}

async fn serve_commands(
    (mut rx_admin, mut rx): (mpsc::Receiver<Cmd>, mpsc::Receiver<Cmd>),
    check: CheckCfg,
    (client, topics): (AsyncClient, Topics),
    api: ApiHandle,
    store: Store,
) {
    let mut unsigned = per_minute(UNSIGNED_REFUSALS_PER_MIN);
    let mut ha_refused = per_minute(HA_REFUSALS_PER_MIN);
    // Per admin key (only configured keys get past the signature): one captured command
    // replayed without end must not write an audit row and a reply each time.
    let mut signed: HashMap<String, PerMinute> = HashMap::new();
    loop {
        let cmd = tokio::select! {
            biased;
            Some(c) = rx_admin.recv() => c,
            Some(c) = rx.recv() => c,
            else => break,
        };
        let (payload, retained) = match cmd {
            Cmd::Signed { payload, retained } => (payload, retained),
            Cmd::Ha { payload } => {
                let why = serve_ha(&payload, check.allow_unlock, &api).await;
                if let Some(why) = why {
                    log::info!("home assistant command refused: {why}");
                    if ha_refused.admit() {
                        let entry =
                            AuditEntry::new(Method::Ha, Outcome::Deny, "ha_command_refused")
                                .evidence(json!({ "error": why }));
                        audit(&store, entry).await;
                        // HA's user sees it too: a denied access with the reason.
                        publish_access(&client, &topics, ha::refusal(&why).to_string()).await;
                    }
                }
                continue;
            }
        };
        let c = check.clone();
        let verdict = store
            .call(move |db| {
                if retained {
                    return Ok(Err(Refused {
                        kind: Refusal::Invalid,
                        message: "a retained command is refused".into(),
                        key: None,
                        id: None,
                    }));
                }
                let chk = Check {
                    topic: &c.topic,
                    kiosk: &c.kiosk,
                    admins: &c.admins,
                    now_s: crate::types::now_ms().div_euclid(1000),
                    max_skew_s: c.max_skew_s,
                    max_payload_bytes: c.max_payload_bytes,
                };
                let mut g = StoreNonces {
                    db,
                    window_s: c.max_skew_s,
                };
                Ok(envelope::open(&payload, &chk, &mut g))
            })
            .await;
        let verdict = match verdict {
            Ok(v) => v,
            Err(e) => {
                log::error!("mqtt: the store cannot check a command: {e}; not run");
                continue;
            }
        };
        match verdict {
            Ok(v) => {
                let caller = Caller {
                    id: format!("mqtt:{}", v.admin),
                    via: Via::Mqtt,
                    role: v.role,
                    bus_name: None,
                };
                let body = match api.call(&caller, v.request).await {
                    Ok(resp) => reply::ok(&v.id, &resp, &v.seal_key)
                        .unwrap_or_else(|e| reply::error(Some(&v.id), "internal", &e.to_string())),
                    Err(e) => reply::api_error(&v.id, &e),
                };
                publish_json(&client, topics.reply(&v.admin), &body).await;
            }
            Err(r) => {
                let before = r.kind.before_signature();
                let admitted = match (&r.key, before) {
                    (Some(k), false) => signed
                        .entry(k.clone())
                        .or_insert_with(|| per_minute(SIGNED_REFUSALS_PER_MIN))
                        .admit(),
                    _ => unsigned.admit(),
                };
                if !admitted {
                    continue;
                }
                log::info!("mqtt: command refused: {r}");
                let entry = AuditEntry::new(Method::Mqtt, Outcome::Deny, "command_refused")
                    .evidence(json!({
                        "error": r.kind.as_str(),
                        "key": r.key,
                        "id": r.id,
                        "signed": !before,
                    }));
                audit(&store, entry).await;
                let body = reply::error(r.id.as_deref(), r.kind.as_str(), &r.message);
                let topic = match (&r.key, before) {
                    (Some(k), false) => topics.reply(k),
                    _ => topics.rejected(),
                };
                publish_json(&client, topic, &body).await;
            }
        }
    }
}

/// Home Assistant's lock command: lock always; unlock only with `allow_unlock` and a
/// keypad credential as the code (the controller checks it, with the keypad's strikes,
/// and audits and announces the attempt itself as `ha`). Returns why a command was
/// refused before reaching a credential check.
async fn serve_ha(payload: &[u8], allow_unlock: bool, api: &ApiHandle) -> Option<String> {
    let caller = Caller {
        id: "home assistant".into(),
        via: Via::Ha,
        role: Clearance::Operator,
        bus_name: None,
    };
    match ha::parse_command(payload) {
        Ok(ha::Command::Lock) => match api.call(&caller, Request::Lock).await {
            Ok(_) => None,
            Err(e) => Some(e.to_string()),
        },
        Ok(ha::Command::Unlock { .. }) if !allow_unlock => {
            Some("unlock from Home Assistant is off (mqtt.home_assistant.allow_unlock)".to_string())
        }
        Ok(ha::Command::Unlock { code }) if !ha::code_well_formed(&code) => {
            Some("no keypad credential as the lock code".to_string())
        }
        Ok(ha::Command::Unlock { code }) => {
            if let Err(e) = api.call(&caller, Request::KeypadEntry { keys: code }).await {
                log::info!("home assistant unlock refused: {e}");
            }
            None
        }
        Err(e) => Some(format!("malformed command: {e}")),
    }
}
