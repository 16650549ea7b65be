//! `lockerd-lab bench fleet-records`: publish a synthetic user directory to a fleet's
//! broker, as `lockerctl fleet publish` would (signed with an admin key file, each
//! user's templates sealed to each kiosk's card key), for `scripts/bench-fleet.sh` to
//! measure a new kiosk's sync time and the broker's memory. The templates are random
//! unit vectors: this measures transport and storage, never matching.

use lockerd_client::fleet::{self, FaceTemplate, Faces, Record};
use lockerd_client::mqtt::config::MqttConfig;
use lockerd_client::mqtt::conn::Connection;
use lockerd_client::mqtt::remote::{self, AdminKeys};
use lockerd_core::types::{Embedding, EmbeddingModel, Role, SplitMix64, EMBEDDING_DIM};
use rumqttc::{Event, Packet, QoS};
use std::path::Path;
use std::time::Instant;

/// What to publish.
pub struct Directory<'a> {
    pub url: &'a str,
    pub key: &'a Path,
    pub fleet: &'a str,
    pub users: usize,
    pub templates: usize,
    /// Seal to these kiosks (empty: every kiosk with a card).
    pub kiosks: &'a [String],
}

/// Publish the directory; a JSON summary.
pub async fn publish(d: Directory<'_>) -> anyhow::Result<serde_json::Value> {
    let keys = AdminKeys::load(d.key)?;
    let cfg = MqttConfig {
        enabled: true,
        url: d.url.to_string(),
        kiosk_id: format!("bench-{}", d.fleet),
        ..Default::default()
    };
    let cards = remote::fleet_cards(&cfg, d.fleet, 10).await?;
    let targets: Vec<(String, [u8; 32])> = cards
        .iter()
        .filter(|c| d.kiosks.is_empty() || d.kiosks.contains(&c.kiosk))
        .filter_map(|c| {
            let k = lockerd_client::mqtt::envelope::key32(&c.seal_key)?;
            Some((c.kiosk.clone(), k))
        })
        .collect();
    anyhow::ensure!(
        d.kiosks.is_empty() || targets.len() == d.kiosks.len(),
        "not every kiosk named has a card on the broker"
    );
    let mut rng = SplitMix64::new(0x5EED_F1EE7);
    let t0 = Instant::now();
    let version = lockerd_client::types::now_ms();
    let mut payloads = Vec::with_capacity(d.users);
    for i in 0..d.users {
        let user = format!("u{i:05}");
        let templates: Vec<FaceTemplate> = (0..d.templates)
            .map(|j| {
                let mut v = [0f32; EMBEDDING_DIM];
                for x in v.iter_mut() {
                    *x = rng.next_f32() - 0.5;
                }
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                FaceTemplate::new(
                    EmbeddingModel::CURRENT,
                    &format!("bench:{j}"),
                    1.0,
                    &Embedding(v),
                )
            })
            .collect();
        let mut shares = Vec::with_capacity(targets.len());
        for (kiosk, key) in &targets {
            let faces = Faces {
                fleet: d.fleet.to_string(),
                user: user.clone(),
                kiosk: kiosk.clone(),
                templates: templates.clone(),
            };
            shares.push(fleet::seal_faces(key, &faces)?);
        }
        let r = Record {
            fleet: d.fleet.to_string(),
            user,
            version: version + i as i64,
            role: Role::User,
            enabled: true,
            kiosks: targets.iter().map(|(k, _)| k.clone()).collect(),
            removed: false,
            faces: Some(shares),
        };
        payloads.push((fleet::user_topic(d.fleet, &r.user), keys.sign_record(&r)));
    }
    let made_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
    let conn = Connection::new(&cfg)?;
    let (client, mut ev) = conn.client(format!("bench-{}-publisher", d.fleet), 1024);
    let t1 = Instant::now();
    let (mut acked, total) = (0usize, payloads.len());
    let mut pending = payloads.into_iter();
    loop {
        match ev.poll().await? {
            Event::Incoming(Packet::ConnAck(_)) => {
                // At most 100 in flight (the broker's default), the rest as acks come.
                for (topic, p) in pending.by_ref().take(100) {
                    client.publish(topic, QoS::AtLeastOnce, true, p).await?;
                }
            }
            Event::Incoming(Packet::PubAck(_)) => {
                acked += 1;
                if let Some((topic, p)) = pending.next() {
                    client.publish(topic, QoS::AtLeastOnce, true, p).await?;
                }
                if acked == total {
                    break;
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    Ok(serde_json::json!({
        "bench": "fleet_records_published",
        "users": d.users,
        "templates_each": d.templates,
        "sealed_for": targets.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        "bytes": bytes,
        "bytes_per_record": bytes / d.users.max(1),
        "make_ms": made_ms.round(),
        "publish_ms": (t1.elapsed().as_secs_f64() * 1000.0).round(),
    }))
}
