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
//! will is the card offline.

use super::bridge::{audit, Backoff, Connection, MqttError};
use super::config::MqttConfig;
use crate::api::{Caller, Request, Via};
use crate::service::ApiHandle;
use crate::store::{AuditEntry, Method, Outcome, Store};
use data_encoding::BASE64;
use lockerd_client::fleet;
use rumqttc::{AsyncClient, Event, LastWill, Packet, QoS};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Refused records audited per minute; the rest only counted in the log.
const REFUSALS_PER_MIN: u32 = 10;

/// The store setting that holds this kiosk's X25519 secret (base64).
const SEAL_SECRET: &str = "fleet.seal_secret";

/// This kiosk's X25519 public key, made (and kept in the encrypted store) the first time.
async fn seal_key(store: &Store) -> Result<[u8; 32], crate::store::StoreError> {
    store
        .call(|db| {
            let secret = match db
                .setting(SEAL_SECRET)?
                .and_then(|s| lockerd_client::mqtt::envelope::key32(&s))
            {
                Some(k) => k,
                None => {
                    let k = crypto_box::SecretKey::generate(&mut rand::rngs::OsRng).to_bytes();
                    db.set_setting(SEAL_SECRET, &BASE64.encode(&k))?;
                    k
                }
            };
            Ok(*crypto_box::SecretKey::from_bytes(secret)
                .public_key()
                .as_bytes())
        })
        .await
}

/// This kiosk's card now.
async fn card(kiosk: &str, seal: &str, api: &ApiHandle, store: &Store) -> fleet::KioskCard {
    let st = api.status().borrow().clone();
    let (directory_version, audit_head) = store
        .call(|db| Ok((db.fleet_head()?, db.audit_head()?.map_or(0, |h| h.0))))
        .await
        .unwrap_or((0, 0));
    fleet::KioskCard {
        kiosk: kiosk.to_string(),
        online: true,
        seal_key: seal.to_string(),
        lock: crate::api::snake_name(&st.lock),
        door: crate::api::snake_name(&st.door),
        users: st.users,
        directory_version,
        audit_head,
        at_ms: crate::types::now_ms(),
    }
}

async fn publish_card(c: &AsyncClient, topic: &str, card: &fleet::KioskCard) {
    let body = serde_json::to_vec(card).unwrap_or_default();
    let _ = c.publish(topic, QoS::AtLeastOnce, true, body).await;
}

/// Connect and apply `fleet_id`'s records until aborted.
pub async fn spawn(
    cfg: &MqttConfig,
    fleet_id: &str,
    api: ApiHandle,
    store: Store,
) -> Result<JoinHandle<()>, MqttError> {
    let conn = Connection::new(cfg)?;
    let admins = cfg.admins().map_err(MqttError::Admins)?;
    let seal = BASE64.encode(
        &seal_key(&store)
            .await
            .map_err(|e| MqttError::Admins(format!("the fleet key: {e}")))?,
    );
    let (client, mut eventloop) = conn.client(format!("{}-fleet", conn.client_id), 64);
    let card_topic = fleet::kiosk_topic(fleet_id, &cfg.kiosk_id);
    let mut will = card(&cfg.kiosk_id, &seal, &api, &store).await;
    will.online = false;
    eventloop.mqtt_options.set_last_will(LastWill::new(
        card_topic.clone(),
        serde_json::to_vec(&will).unwrap_or_default(),
        QoS::AtLeastOnce,
        true,
    ));
    let filter = fleet::users_filter(fleet_id);
    let prefix = filter.trim_end_matches('+').to_string();
    let (fleet_id, max) = (fleet_id.to_string(), cfg.max_payload_bytes as usize);
    // The card again whenever the status changes, and every minute.
    let (c2, t2, api2, store2, kiosk2, seal2) = (
        client.clone(),
        card_topic.clone(),
        api.clone(),
        store.clone(),
        cfg.kiosk_id.clone(),
        seal.clone(),
    );
    let cards = tokio::spawn(async move {
        let mut status = api2.status();
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(60), status.changed()).await;
            publish_card(&c2, &t2, &card(&kiosk2, &seal2, &api2, &store2).await).await;
        }
    });
    let kiosk = cfg.kiosk_id.clone();
    Ok(tokio::spawn(async move {
        let _cards = AbortOnDrop(cards);
        let mut backoff = Backoff::default();
        let (mut window, mut refusals) = (Instant::now(), 0u32);
        loop {
            let p = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.connected();
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
                    publish_card(
                        &client,
                        &card_topic,
                        &card(&kiosk, &seal, &api, &store).await,
                    )
                    .await;
                    log::info!("fleet {fleet_id}: connected; applying {filter}");
                    continue;
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic.starts_with(&prefix) => p,
                Ok(_) => continue,
                Err(e) => {
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
                            let c = card(&kiosk, &seal, &api, &store).await;
                            publish_card(&client, &card_topic, &c).await;
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
