//! The fleet's user directory on this kiosk: a connection of its own (client id
//! `lockerd-<kiosk>-fleet`) subscribed to `lockerd/fleet/<fleet>/user/+` at QoS 1, whose
//! retained records reach a kiosk that was offline or is new as soon as it connects.
//! Each record's signature, fleet, user and signer's clearance are checked here
//! ([`lockerd_client::fleet::open`]); a good one goes to the request API as
//! `Request::FleetApply` from a `Via::Fleet` caller, which checks the version and applies
//! it with its audit row. A refused one is audited (at most 10 a minute) and dropped.

use super::bridge::{audit, Backoff, Connection, MqttError};
use super::config::MqttConfig;
use crate::api::{Caller, Request, Via};
use crate::service::ApiHandle;
use crate::store::{AuditEntry, Method, Outcome, Store};
use lockerd_client::fleet;
use rumqttc::{Event, Packet, QoS};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Refused records audited per minute; the rest only counted in the log.
const REFUSALS_PER_MIN: u32 = 10;

/// Connect and apply `fleet_id`'s records until aborted.
pub fn spawn(
    cfg: &MqttConfig,
    fleet_id: &str,
    api: ApiHandle,
    store: Store,
) -> Result<JoinHandle<()>, MqttError> {
    let conn = Connection::new(cfg)?;
    let admins = cfg.admins().map_err(MqttError::Admins)?;
    let (client, mut eventloop) = conn.client(format!("{}-fleet", conn.client_id), 64);
    let filter = fleet::users_filter(fleet_id);
    let prefix = filter.trim_end_matches('+').to_string();
    let (fleet_id, max) = (fleet_id.to_string(), cfg.max_payload_bytes as usize);
    Ok(tokio::spawn(async move {
        let mut backoff = Backoff::default();
        let (mut window, mut refusals) = (Instant::now(), 0u32);
        loop {
            let p = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.connected();
                    let _ = client.subscribe(filter.clone(), QoS::AtLeastOnce).await;
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
                        Ok(_) => log::info!("fleet {fleet_id}: {user} version {version} applied"),
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
