//! The fleet's user directory on this kiosk: a connection of its own (client id
//! `lockerd-<kiosk>-fleet`) subscribed to `lockerd/fleet/<fleet>/user/+` at QoS 1, whose
//! retained records reach a kiosk that was offline or is new as soon as it connects.
//! Each record's signature, fleet, user and signer's clearance are checked here
//! ([`lockerd_client::fleet::open`]); a good one goes to the request API as
//! `Request::FleetApply` from a `Via::Fleet` caller, which checks the version and applies
//! it with its audit row. A refused one is audited (at most 10 a minute) and dropped.
//!
//! It also keeps this kiosk's card ([`fleet::KioskCard`]) retained at
//! `lockerd/fleet/<fleet>/kiosk/<kiosk>`: the X25519 public key of a key pair made once and
//! kept in the encrypted store (`fleet.seal_secret`), and the status, published on connect,
//! when the status changes or a record is applied, and every minute; the connection's last
//! will is the card offline. It reads every kiosk's card too, and keeps their keys for
//! `Request::FleetExport` ([`FleetWatch::keys`]).
//!
//! The gate of fleet users' faces ([`FleetWatch::link`], [`crate::api::FleetGate`]):
//! `syncing` from the start and from each connection until this kiosk's own marker on
//! `lockerd/fleet/<fleet>/sync/<kiosk>`, published after the subscriptions, comes back:
//! the broker sends a subscriber what it retains before what is published later on the
//! same connection, so every record it held has been applied by then (`synced`). When
//! the connection goes: `offline`, and `cut_off` after `[fleet] offline_after_s`.

use super::bridge::{audit, Backoff, Connection, MqttError};
use super::config::MqttConfig;
use crate::api::{Caller, FleetLink, FleetState, Request, Via};
use crate::service::{ApiHandle, KioskKey, KioskKeys};
use crate::store::{AuditEntry, Method, Outcome, Store};
use data_encoding::BASE64;
use lockerd_client::fleet;
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Refused records audited per minute; the rest only counted in the log.
const REFUSALS_PER_MIN: u32 = 10;

/// This kiosk's X25519 public key, made (and kept in the encrypted store) the first time.
async fn seal_key(store: &Store) -> Result<[u8; 32], crate::store::StoreError> {
    store
        .call(|db| {
            let secret = crate::service::seal_secret(db)?;
            Ok(*crypto_box::SecretKey::from_bytes(secret)
                .public_key()
                .as_bytes())
        })
        .await
}

/// This kiosk's sync topic: its own marker, published after the subscriptions, comes
/// back after every retained record the broker had (one connection, in order).
fn sync_topic(fleet: &str, kiosk: &str) -> String {
    format!("lockerd/fleet/{fleet}/sync/{kiosk}")
}

/// What the fleet task keeps others informed of: the link (the gate of fleet users'
/// faces) and the kiosks' card keys (what exports are sealed to).
pub struct FleetWatch {
    pub link: watch::Sender<FleetLink>,
    pub keys: watch::Sender<KioskKeys>,
}

impl FleetWatch {
    fn set(&self, link: FleetState) {
        self.link.send_modify(|l| {
            if link == FleetState::Offline && l.link == FleetState::Synced {
                l.last_synced_ms = Some(crate::types::now_ms());
            }
            if link == FleetState::Synced {
                l.last_synced_ms = Some(crate::types::now_ms());
            }
            l.link = link;
        });
    }

    /// A card seen (or cleared): its key kept, or dropped.
    fn card(&self, topic: &str, prefix: &str, payload: &[u8]) {
        let Some(kiosk) = topic.strip_prefix(prefix) else {
            return;
        };
        let key = serde_json::from_slice::<fleet::KioskCard>(payload)
            .ok()
            .filter(|c| c.kiosk == kiosk)
            .and_then(|c| {
                let key = lockerd_client::mqtt::envelope::key32(&c.seal_key)?;
                let groups = c.groups.into_iter().filter(|g| fleet::valid_name(g));
                Some(KioskKey {
                    key,
                    groups: groups.collect(),
                })
            });
        self.keys.send_if_modified(|m| match key {
            Some(k) => m.insert(kiosk.to_string(), k.clone()) != Some(k),
            None => m.remove(kiosk).is_some(),
        });
    }
}

/// Who this kiosk is on its card.
struct Me {
    kiosk: String,
    /// Its X25519 public key, base64.
    seal: String,
    groups: Vec<String>,
}

/// What the fleet task needs of `[fleet]`.
pub struct FleetSettings {
    pub id: String,
    /// The largest record taken (bytes).
    pub max_record_bytes: u64,
    /// This kiosk's groups (on its card).
    pub groups: Vec<String>,
}

/// This kiosk's card now.
async fn card(me: &Me, api: &ApiHandle, store: &Store) -> fleet::KioskCard {
    let st = api.status().borrow().clone();
    // From the store, not the status (refreshed each second): the card says what was
    // applied when it was written.
    let (directory_version, audit_head, users) = store
        .call(|db| {
            Ok((
                db.fleet_head()?,
                db.audit_head()?.map_or(0, |h| h.0),
                db.list_users()?.len() as u32,
            ))
        })
        .await
        .unwrap_or((0, 0, st.users));
    fleet::KioskCard {
        kiosk: me.kiosk.clone(),
        online: true,
        seal_key: me.seal.clone(),
        groups: me.groups.clone(),
        lock: crate::api::snake_name(&st.lock),
        door: crate::api::snake_name(&st.door),
        users,
        directory_version,
        audit_head,
        at_ms: crate::types::now_ms(),
    }
}

/// Queue the card without waiting: the task that calls this is the one that polls the
/// connection, so waiting on a full queue would wait forever. A card that does not fit
/// now is sent by the card task within a minute.
fn publish_card(c: &AsyncClient, topic: &str, card: &fleet::KioskCard) {
    let body = serde_json::to_vec(card).unwrap_or_default();
    if c.try_publish(topic, QoS::AtLeastOnce, true, body).is_err() {
        log::debug!("fleet card not queued now (the connection is busy)");
    }
}

/// Connect and apply the fleet's records until aborted; `watch` tells the gate and the
/// card keys.
pub async fn spawn(
    cfg: &MqttConfig,
    settings: FleetSettings,
    api: ApiHandle,
    store: Store,
    watch: FleetWatch,
) -> Result<JoinHandle<()>, MqttError> {
    let fleet_id = settings.id.as_str();
    let max = settings.max_record_bytes as usize;
    let conn = Connection::new(&MqttConfig {
        max_payload_bytes: settings.max_record_bytes,
        ..cfg.clone()
    })?;
    let admins = cfg.admins().map_err(MqttError::Admins)?;
    let seal = BASE64.encode(
        &seal_key(&store)
            .await
            .map_err(|e| MqttError::Admins(format!("the fleet key: {e}")))?,
    );
    let (client, mut eventloop) = conn.client(format!("{}-fleet", conn.client_id), 256);
    let card_topic = fleet::kiosk_topic(fleet_id, &cfg.kiosk_id);
    let me = std::sync::Arc::new(Me {
        kiosk: cfg.kiosk_id.clone(),
        seal,
        groups: settings.groups.clone(),
    });
    let mut will = card(&me, &api, &store).await;
    will.online = false;
    eventloop.mqtt_options.set_last_will(LastWill::new(
        card_topic.clone(),
        serde_json::to_vec(&will).unwrap_or_default(),
        QoS::AtLeastOnce,
        true,
    ));
    let filter = fleet::users_filter(fleet_id);
    let prefix = filter.trim_end_matches('+').to_string();
    let cards_filter = fleet::kiosks_filter(fleet_id);
    let cards_prefix = cards_filter.trim_end_matches('+').to_string();
    let sync = sync_topic(fleet_id, &cfg.kiosk_id);
    let fleet_id = fleet_id.to_string();
    // The card again whenever the status changes, and every minute.
    let (c2, t2, api2, store2, me2) = (
        client.clone(),
        card_topic.clone(),
        api.clone(),
        store.clone(),
        me.clone(),
    );
    let link2 = watch.link.subscribe();
    let cards = tokio::spawn(async move {
        let mut status = api2.status();
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(60), status.changed()).await;
            // At most one card a second; none while a sync applies many records (the
            // sync's end publishes one).
            tokio::time::sleep(Duration::from_secs(1)).await;
            if link2.borrow().link == FleetState::Syncing {
                continue;
            }
            let c = card(&me2, &api2, &store2).await;
            let body = serde_json::to_vec(&c).unwrap_or_default();
            // This task does not poll the connection: it may wait for room.
            let _ = c2.publish(&t2, QoS::AtLeastOnce, true, body).await;
        }
    });
    Ok(tokio::spawn(async move {
        let _cards = AbortOnDrop(cards);
        let mut backoff = Backoff::default();
        let (mut window, mut refusals) = (Instant::now(), 0u32);
        // The marker this connection waits for (a new one on each connection).
        let mut marker = String::new();
        let mut marker_queued = false;
        loop {
            if !marker_queued && !marker.is_empty() {
                marker_queued = client
                    .try_publish(sync.clone(), QoS::AtLeastOnce, false, marker.clone())
                    .is_ok();
            }
            let p = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.connected();
                    watch.set(FleetState::Syncing);
                    for f in [&filter, &cards_filter, &sync] {
                        if let Err(e) = client.try_subscribe(f.clone(), QoS::AtLeastOnce) {
                            log::warn!("fleet {fleet_id}: cannot subscribe to {f}: {e}");
                        }
                    }
                    marker = hex::encode(rand::random::<[u8; 8]>());
                    marker_queued = client
                        .try_publish(sync.clone(), QoS::AtLeastOnce, false, marker.clone())
                        .is_ok();
                    publish_card(&client, &card_topic, &card(&me, &api, &store).await);
                    log::info!("fleet {fleet_id}: connected; applying {filter}");
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == sync => {
                    if !marker.is_empty() && p.payload.as_ref() == marker.as_bytes() {
                        watch.set(FleetState::Synced);
                        log::info!("fleet {fleet_id}: directory in sync");
                        let c = card(&me, &api, &store).await;
                        publish_card(&client, &card_topic, &c);
                    }
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with(&cards_prefix) => {
                    watch.card(&p.topic, &cards_prefix, &p.payload);
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with(&prefix) => p,
                Ok(_) => continue,
                Err(e) => {
                    watch.set(FleetState::Offline);
                    marker.clear();
                    marker_queued = false;
                    backoff.failed(format!("fleet {fleet_id}: {e}")).await;
                    continue;
                }
            };
            // An empty retained message clears a topic: nothing to apply.
            if p.payload.is_empty() {
                continue;
            }
            let refused = match fleet::open(&p.payload, &p.topic, &fleet_id, &admins, max) {
                Ok(signed) => {
                    let caller = Caller {
                        id: format!("fleet key {}", signed.admin),
                        via: Via::Fleet,
                        role: signed.role,
                        bus_name: None,
                    };
                    let (user, version) = (signed.record.user.clone(), signed.record.version);
                    let request = Request::FleetApply {
                        record: signed.record,
                        key: signed.admin,
                    };
                    match api.call(&caller, request).await {
                        Ok(_) => {
                            log::info!("fleet {fleet_id}: {user} version {version} applied");
                            // Live changes show on the card at once; a sync's many
                            // records, once, when it is done.
                            if watch.link.borrow().link == FleetState::Synced {
                                let c = card(&me, &api, &store).await;
                                publish_card(&client, &card_topic, &c);
                            }
                        }
                        // Refused (a stale version) and audited by the API already.
                        Err(e) => log::info!("fleet {fleet_id}: {user}: {e}"),
                    }
                    continue;
                }
                Err(r) => r,
            };
            log::warn!("fleet {fleet_id}: record on {} refused: {refused}", p.topic);
            if window.elapsed() >= Duration::from_secs(60) {
                (window, refusals) = (Instant::now(), 0);
            }
            refusals += 1;
            if refusals <= REFUSALS_PER_MIN {
                let entry = AuditEntry::new(Method::Fleet, Outcome::Deny, "fleet_record_refused")
                    .evidence(json!({
                        "error": refused.kind.as_str(),
                        "key": refused.key,
                        "topic": p.topic,
                    }));
                audit(&store, entry).await;
            }
        }
    }))
}

/// Aborts its task when dropped (the card task ends with the connection's).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
