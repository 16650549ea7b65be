//! The remote admin's side (`lockerctl remote`): an admin key file (an Ed25519 key that
//! signs commands and an X25519 key that opens sealed results), a signed command sent to
//! a kiosk through a broker, and its reply, with sealed secrets opened. Uses the same
//! envelope and connection code as the kiosk, so both ends agree on the bytes.

use super::config::MqttConfig;
use super::conn::{Connection, Topics};
use super::envelope;
use data_encoding::BASE64;
use rumqttc::{Event, Packet, QoS};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}: {1}")]
    KeyFile(String, String),
    #[error("{0}")]
    Connection(String),
    #[error("no reply within {0} s (is the kiosk connected to this broker?)")]
    Timeout(u64),
    #[error("the sealed result does not open with this key file: {0}")]
    Unseal(String),
}

/// The admin's key file as written: secrets, owner-only (0600).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    id: String,
    /// Ed25519 seed, base64.
    sign_key: String,
    /// X25519 secret, base64.
    seal_secret: String,
}

/// An admin's keys, decoded once when made or loaded.
pub struct AdminKeys {
    pub id: String,
    signing: ed25519_dalek::SigningKey,
    seal: [u8; 32],
}

impl std::fmt::Debug for AdminKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AdminKeys({})", self.id)
    }
}

impl AdminKeys {
    pub fn generate(id: &str) -> AdminKeys {
        AdminKeys {
            id: id.to_owned(),
            signing: ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng),
            seal: crypto_box::SecretKey::generate(&mut rand::rngs::OsRng).to_bytes(),
        }
    }

    /// Write to a new owner-only file (refuses to overwrite).
    pub fn save(&self, path: &Path) -> Result<(), RemoteError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let e = |x: std::io::Error| RemoteError::KeyFile(path.display().to_string(), x.to_string());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(e)?;
        let file = KeyFile {
            id: self.id.clone(),
            sign_key: BASE64.encode(&self.signing.to_bytes()),
            seal_secret: BASE64.encode(&self.seal),
        };
        let text = serde_json::to_string_pretty(&file).unwrap_or_default();
        f.write_all(text.as_bytes()).map_err(e)?;
        f.write_all(b"\n").map_err(e)
    }

    pub fn load(path: &Path) -> Result<AdminKeys, RemoteError> {
        let e = |x: String| RemoteError::KeyFile(path.display().to_string(), x);
        let bytes = crate::secret_file::read_owner_only(path).map_err(|x| e(x.to_string()))?;
        let k: KeyFile = serde_json::from_slice(&bytes).map_err(|x| e(x.to_string()))?;
        let key = |v: &str, what: &str| {
            envelope::key32(v).ok_or_else(|| e(format!("{what} is not base64 of 32 bytes")))
        };
        Ok(AdminKeys {
            signing: ed25519_dalek::SigningKey::from_bytes(&key(&k.sign_key, "sign_key")?),
            seal: key(&k.seal_secret, "seal_secret")?,
            id: k.id,
        })
    }

    /// The `[[mqtt.admins]]` table for the kiosk's lockerd.toml (public keys only).
    pub fn admin_table(&self, role: crate::api::Clearance) -> String {
        let public = BASE64.encode(self.signing.verifying_key().as_bytes());
        let seal = crypto_box::SecretKey::from_bytes(self.seal);
        format!(
            "[[mqtt.admins]]\nid = \"{}\"\npublic_key = \"{public}\"\nseal_key = \"{}\"\nrole = \"{role}\"\n",
            self.id,
            BASE64.encode(seal.public_key().as_bytes())
        )
    }

    /// A signed command for `kiosk` (fresh id and nonce, the current time).
    pub fn command(&self, kiosk: &str, cmd: &str, args: Value) -> (String, Vec<u8>) {
        let mut nonce = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
        let id = format!("{}-{}", self.id, hex::encode(&nonce[..4]));
        let body = json!({
            "kiosk": kiosk,
            "id": id,
            "ts": lockerd_core::types::now_ms().div_euclid(1000),
            "nonce": BASE64.encode(&nonce),
            "cmd": cmd,
            "args": args,
        });
        let topic = Topics::new(kiosk).cmd();
        (id, envelope::sign(&self.signing, &self.id, &topic, &body))
    }

    /// A fleet user record signed with this admin's key ([`crate::fleet::sign`]).
    pub fn sign_record(&self, r: &crate::fleet::Record) -> Vec<u8> {
        crate::fleet::sign(&self.signing, &self.id, r)
    }

    /// Open `result.sealed` of a reply in place (as `result.secret`).
    pub fn open_reply(&self, mut reply: Value) -> Result<Value, RemoteError> {
        if let Some(sealed) = reply["result"]["sealed"].as_str() {
            let secret = super::reply::unseal(&self.seal, sealed)
                .map_err(|e| RemoteError::Unseal(e.to_string()))?;
            reply["result"]["secret"] = secret;
        }
        Ok(reply)
    }
}

/// A short-lived client of the broker at `cfg.url` (TLS as configured), its id
/// `lockerctl-<label>-<random>` so that two at once do not push each other off.
fn short_client(
    cfg: &MqttConfig,
    label: &str,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), RemoteError> {
    let conn = Connection::new(cfg).map_err(|e| RemoteError::Connection(e.to_string()))?;
    let mut suffix = [0u8; 4];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut suffix);
    Ok(conn.client(format!("lockerctl-{label}-{}", hex::encode(suffix)), 16))
}

/// `work` within `wait_s` seconds, then disconnect `client` however it ended.
async fn within<T>(
    client: &rumqttc::AsyncClient,
    wait_s: u64,
    work: impl std::future::Future<Output = Result<T, RemoteError>>,
) -> Result<T, RemoteError> {
    let r = tokio::time::timeout(Duration::from_secs(wait_s), work)
        .await
        .map_err(|_| RemoteError::Timeout(wait_s));
    let _ = client.disconnect().await;
    r?
}

/// Sign `cmd`, send it to `cfg.kiosk_id` through `cfg.url` (TLS as configured), and
/// wait for the reply to it (or a rejection naming its id). Sealed results are opened.
pub async fn send(
    cfg: &MqttConfig,
    keys: &AdminKeys,
    cmd: &str,
    args: Value,
    wait_s: u64,
) -> Result<Value, RemoteError> {
    let topics = Topics::new(&cfg.kiosk_id);
    let (client, mut ev) = short_client(cfg, &keys.id)?;
    let (id, payload) = keys.command(&cfg.kiosk_id, cmd, args);
    let (reply_t, rejected_t) = (topics.reply(&keys.id), topics.rejected());
    let work = async {
        let mut subscribed = 0;
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    for t in [&reply_t, &rejected_t] {
                        client
                            .subscribe(t.clone(), QoS::AtLeastOnce)
                            .await
                            .map_err(|e| RemoteError::Connection(e.to_string()))?;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    subscribed += 1;
                    if subscribed == 2 {
                        client
                            .publish(topics.cmd(), QoS::AtLeastOnce, false, payload.clone())
                            .await
                            .map_err(|e| RemoteError::Connection(e.to_string()))?;
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let v: Value = match serde_json::from_slice(&p.payload) {
                        Ok(v) => v,
                        Err(_) => continue,
                    };
                    if v["id"] == id.as_str() {
                        return keys.open_reply(v);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(RemoteError::Connection(e.to_string())),
            }
        }
    };
    within(&client, wait_s, work).await
}

/// Publish `r`, signed by `keys`, retained at QoS 1 on its topic through `cfg.url`, and
/// wait for the broker's acknowledgement: every kiosk of the fleet that is connected
/// applies it now, the others when they connect.
pub async fn publish_record(
    cfg: &MqttConfig,
    keys: &AdminKeys,
    r: &crate::fleet::Record,
    wait_s: u64,
) -> Result<(), RemoteError> {
    let (client, mut ev) = short_client(cfg, &format!("{}-fleet", keys.id))?;
    let (topic, payload) = (
        crate::fleet::user_topic(&r.fleet, &r.user),
        keys.sign_record(r),
    );
    let work = async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => client
                    .publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone())
                    .await
                    .map_err(|e| RemoteError::Connection(e.to_string()))?,
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(RemoteError::Connection(e.to_string())),
            }
        }
    };
    within(&client, wait_s, work).await
}

/// The kiosk cards of `fleet` the broker holds (retained), by kiosk id: read until no new
/// one came for half a second after the subscription was granted.
pub async fn fleet_cards(
    cfg: &MqttConfig,
    fleet: &str,
    wait_s: u64,
) -> Result<Vec<crate::fleet::KioskCard>, RemoteError> {
    let (client, mut ev) = short_client(cfg, "fleet")?;
    let filter = crate::fleet::kiosks_filter(fleet);
    let mut cards = std::collections::BTreeMap::new();
    let connect = async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => client
                    .subscribe(filter.clone(), QoS::AtLeastOnce)
                    .await
                    .map_err(|e| RemoteError::Connection(e.to_string()))?,
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(RemoteError::Connection(e.to_string())),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(wait_s), connect)
        .await
        .map_err(|_| RemoteError::Timeout(wait_s))??;
    while let Ok(polled) = tokio::time::timeout(Duration::from_millis(500), ev.poll()).await {
        match polled {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                if let Ok(c) = serde_json::from_slice::<crate::fleet::KioskCard>(&p.payload) {
                    cards.insert(c.kiosk.clone(), c);
                }
            }
            Ok(_) => {}
            Err(e) => return Err(RemoteError::Connection(e.to_string())),
        }
    }
    let _ = client.disconnect().await;
    Ok(cards.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_owner_only_and_its_commands_verify_at_the_kiosk() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ada.key");
        let k = AdminKeys::generate("ada");
        k.save(&p).unwrap();
        assert!(k.save(&p).is_err(), "never overwritten");
        let k = AdminKeys::load(&p).unwrap();
        std::fs::write(d.path().join("loose.key"), std::fs::read(&p).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            d.path().join("loose.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(AdminKeys::load(&d.path().join("loose.key")).is_err());
        // The table it prints is what the kiosk's config takes.
        let table = k.admin_table(crate::api::Clearance::Admin);
        let cfg: crate::mqtt::config::MqttConfig = toml::from_str(&format!(
            "kiosk_id = \"k1\"\n{}",
            table.replace("[[mqtt.admins]]", "[[admins]]")
        ))
        .unwrap();
        let admins = cfg.admins().unwrap();
        let (_, payload) = k.command("k1", "status", json!({}));
        let check = envelope::Check {
            topic: "lockerd/k1/cmd",
            kiosk: "k1",
            admins: &admins,
            now_s: lockerd_core::types::now_ms() / 1000,
            max_skew_s: 30,
            max_payload_bytes: 65536,
        };
        let v = envelope::open(&payload, &check, &mut envelope::MemoryNonces::new(30)).unwrap();
        assert_eq!(v.admin, "ada");
        // A sealed result to its seal key opens with the file.
        let sealed = super::super::reply::seal(&v.seal_key, &json!({"code": "12345678"})).unwrap();
        let r = k
            .open_reply(json!({"id": "x", "ok": true, "result": {"sealed": sealed}}))
            .unwrap();
        assert_eq!(r["result"]["secret"]["code"], "12345678");
    }
}
