//! `[mqtt]` and `[lock]` of the configuration file: the broker, the remote admins, Home
//! Assistant and the ESP32 lock's link. The `config` module reads and validates the
//! whole file and re-exports these types.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `lock.kind`: which lock the controller drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// The GPIO relay of `[hardware]`.
    #[default]
    Relay,
    /// An ESP32 lock reached through the MQTT broker.
    Esp32,
}

/// `[lock]`: which lock the controller drives: the GPIO relay of `[hardware]`, or an
/// ESP32 lock reached through the MQTT broker (`hardware/LOCK-PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockConfig {
    pub kind: LockKind,
    /// The ESP32 lock's id in its topics (`lockerd/<kiosk_id>/lock/<lock_id>/...`).
    pub lock_id: String,
    /// An owner-only file holding the lock's 32 raw key bytes.
    pub key_file: PathBuf,
    /// How long to wait for the lock to acknowledge a command before sending it again
    /// under a new counter.
    pub ack_timeout_ms: u64,
    /// Tries after the first before an unlock fails (closed) with a `fault` alert.
    pub retries: u32,
    /// The lock reports at least every 10 s; silent this long, it is unavailable.
    pub report_timeout_s: u64,
}

impl Default for LockConfig {
    fn default() -> Self {
        Self {
            kind: LockKind::Relay,
            lock_id: "door1".into(),
            key_file: PathBuf::from("/etc/lockerd/lock.key"),
            ack_timeout_ms: 1000,
            retries: 2,
            report_timeout_s: 35,
        }
    }
}

/// `[mqtt]`: remote admin, events and Home Assistant through a broker (this module).
/// Names are the documented contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub enabled: bool,
    /// `mqtts://host:port`; `mqtt://` only to a loopback host (tests).
    pub url: String,
    /// This kiosk's id in every topic (`lockerd/<kiosk_id>/...`).
    pub kiosk_id: String,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub username: String,
    pub password_file: PathBuf,
    pub max_skew_s: u64,
    pub max_payload_bytes: u64,
    /// Events kept for the broker while it is away; past this the oldest tenth goes
    /// (with an alert saying how many).
    pub outbox_max_events: usize,
    pub admins: Vec<MqttAdmin>,
    pub home_assistant: HomeAssistantConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: "mqtts://localhost:8883".into(),
            kiosk_id: "kiosk".into(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            username: String::new(),
            password_file: PathBuf::new(),
            max_skew_s: 30,
            max_payload_bytes: 65536,
            outbox_max_events: 100_000,
            admins: Vec::new(),
            home_assistant: HomeAssistantConfig::default(),
        }
    }
}

/// `[[mqtt.admins]]`: a remote admin's keys and role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttAdmin {
    pub id: String,
    /// Ed25519 public key, base64 of the 32 bytes: verifies the admin's commands.
    pub public_key: String,
    /// X25519 public key, base64 of the 32 bytes: secrets in replies are sealed to it.
    pub seal_key: String,
    pub role: crate::api::Clearance,
}

/// `[mqtt.home_assistant]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HomeAssistantConfig {
    pub discovery: bool,
    pub prefix: String,
    pub allow_unlock: bool,
}

impl Default for HomeAssistantConfig {
    fn default() -> Self {
        Self {
            discovery: true,
            prefix: "homeassistant".into(),
            allow_unlock: false,
        }
    }
}

/// A topic level: no MQTT wildcards or separators.
pub fn topic_safe(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl MqttConfig {
    /// The admins as the envelope checks need them (keys decoded and checked).
    pub fn admins(&self) -> Result<Vec<super::envelope::Admin>, String> {
        let mut out: Vec<super::envelope::Admin> = Vec::new();
        for (i, a) in self.admins.iter().enumerate() {
            let at = format!("mqtt.admins[{i}]");
            if !topic_safe(&a.id) {
                return Err(format!(
                    "{at}.id {:?}: 1-64 characters of a-z, A-Z, 0-9, '-', '_'",
                    a.id
                ));
            }
            if out.iter().any(|o| o.id == a.id) {
                return Err(format!("{at}.id {:?} appears twice", a.id));
            }
            let bytes32 = |what: &str, v: &str| -> Result<[u8; 32], String> {
                super::envelope::key32(v)
                    .ok_or_else(|| format!("{at}.{what}: base64 of exactly 32 bytes"))
            };
            let pk = bytes32("public_key", &a.public_key)?;
            let seal_key = bytes32("seal_key", &a.seal_key)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&pk)
                .ok()
                .filter(|k| !k.is_weak())
                .ok_or_else(|| format!("{at}.public_key: not a usable Ed25519 public key"))?;
            // One key, one admin: the key id is not what is signed, so one key listed
            // under two ids would let one signed command run once per id.
            if let Some(o) = out.iter().find(|o| o.key == key) {
                return Err(format!(
                    "{at}.public_key is also the key of {:?}: give each admin a key of their own",
                    o.id
                ));
            }
            out.push(super::envelope::Admin {
                id: a.id.clone(),
                key,
                role: a.role,
                seal_key,
            });
        }
        Ok(out)
    }
}
