//! A fleet of kiosks sharing one user directory through their broker: signed, versioned
//! user records, retained at `lockerd/fleet/<fleet>/user/<name>` (QoS 1), so a kiosk that
//! was offline, or is new, reads the current directory when it connects.
//!
//! A record is signed by an admin key (`[[mqtt.admins]]`, the key file of `lockerctl
//! remote keygen`) with the same envelope as a command ([`crate::mqtt::envelope`]), bound
//! to its topic. It carries a version that only rises (the signer's clock in ms), so a
//! replayed or rolled-back record is refused by a kiosk that holds a newer one; a removal
//! is a signed tombstone (`removed`). A kiosk applies a record only through its request
//! API (`Via::Fleet`), in one transaction with its audit row.
//!
//! Each kiosk publishes a card ([`KioskCard`], retained, its last will the same card
//! offline) with its X25519 public key and its status: the fleet view.
//!
//! This is the directory's first part: names, roles, enabled and banned, and the kiosks
//! where a user may open. Face templates sealed to each kiosk's key are not carried yet.

use crate::api::Clearance;
use crate::mqtt::envelope::{self, Admin, Check, Refusal, Refused};
use lockerd_core::types::Role;
use serde::{Deserialize, Serialize};

/// The longest fleet id or user name a record may carry.
const MAX_NAME: usize = 64;

/// One user as the fleet knows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub fleet: String,
    pub user: String,
    /// Rises with every record for this user (the signer's clock, ms since the epoch).
    pub version: i64,
    pub role: Role,
    pub enabled: bool,
    /// The kiosks where the user may open; empty = every kiosk of the fleet.
    #[serde(default)]
    pub kiosks: Vec<String>,
    /// A tombstone: the user is removed from every kiosk.
    #[serde(default)]
    pub removed: bool,
}

impl Record {
    /// Whether `kiosk` keeps this user (a tombstone keeps them nowhere).
    pub fn applies_to(&self, kiosk: &str) -> bool {
        !self.removed && (self.kiosks.is_empty() || self.kiosks.iter().any(|k| k == kiosk))
    }
}

/// The retained topic of `user`'s record in `fleet`.
pub fn user_topic(fleet: &str, user: &str) -> String {
    format!("lockerd/fleet/{fleet}/user/{user}")
}

/// Every user record of `fleet` (a subscription filter).
pub fn users_filter(fleet: &str) -> String {
    format!("lockerd/fleet/{fleet}/user/+")
}

/// What a kiosk of the fleet says of itself, retained at [`kiosk_topic`]: its X25519
/// public key (what sealed parts of records are sealed to) and a status for
/// `lockerctl fleet status`. Its connection's last will is the same card, offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KioskCard {
    pub kiosk: String,
    pub online: bool,
    /// X25519 public key, base64.
    pub seal_key: String,
    #[serde(default)]
    pub lock: String,
    #[serde(default)]
    pub door: String,
    #[serde(default)]
    pub users: u32,
    /// The highest record version applied here (0: none yet).
    #[serde(default)]
    pub directory_version: i64,
    /// The audit log's last sequence number.
    #[serde(default)]
    pub audit_head: i64,
    /// When this card was written (ms since the epoch): the last time the kiosk was seen
    /// online, or, offline, when its connection began.
    pub at_ms: i64,
}

/// The retained topic of `kiosk`'s card in `fleet`.
pub fn kiosk_topic(fleet: &str, kiosk: &str) -> String {
    format!("lockerd/fleet/{fleet}/kiosk/{kiosk}")
}

/// Every kiosk card of `fleet` (a subscription filter).
pub fn kiosks_filter(fleet: &str) -> String {
    format!("lockerd/fleet/{fleet}/kiosk/+")
}

/// A name that can stand in a topic level and a store row.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The signed payload of `r` (published retained at [`user_topic`]).
pub fn sign(key: &ed25519_dalek::SigningKey, key_id: &str, r: &Record) -> Vec<u8> {
    envelope::sign_bytes(
        key,
        key_id,
        &user_topic(&r.fleet, &r.user),
        &serde_json::to_vec(r).unwrap_or_default(),
    )
}

/// A record that passed every check, and the admin who signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Signed {
    pub record: Record,
    pub admin: String,
    pub role: Clearance,
}

/// Check a record received on `topic`: the size, the signature by a configured admin, the
/// body (this fleet, the user the topic names, sane fields) and the admin's clearance
/// (admin). Never panics on any input. The version is checked by the store, which knows
/// the one it holds.
pub fn open(
    payload: &[u8],
    topic: &str,
    fleet: &str,
    admins: &[Admin],
    max_payload_bytes: usize,
) -> Result<Signed, Refused> {
    let check = Check {
        topic,
        kiosk: "",
        admins,
        now_s: 0,
        max_skew_s: 0,
        max_payload_bytes,
    };
    let (admin, body) = envelope::authentic_body(payload, &check)?;
    let refuse = |kind: Refusal, message: String| Refused {
        kind,
        message,
        key: Some(admin.id.clone()),
        id: None,
    };
    let record: Record = serde_json::from_slice(&body)
        .map_err(|e| refuse(Refusal::Invalid, format!("not a user record: {e}")))?;
    if record.fleet != fleet {
        return Err(refuse(
            Refusal::WrongKiosk,
            format!("a record of fleet {:?}, not {fleet:?}", record.fleet),
        ));
    }
    if topic != user_topic(fleet, &record.user) || !valid_name(&record.user) {
        return Err(refuse(
            Refusal::Invalid,
            format!("the record names user {:?} on {topic}", record.user),
        ));
    }
    if record.version <= 0 || record.kiosks.iter().any(|k| !valid_name(k)) {
        return Err(refuse(Refusal::Invalid, "bad version or kiosk id".into()));
    }
    if admin.role < Clearance::Admin {
        return Err(refuse(
            Refusal::NotAuthorized,
            format!(
                "key {:?} is {}, a fleet record needs admin",
                admin.id, admin.role
            ),
        ));
    }
    Ok(Signed {
        record,
        admin: admin.id.clone(),
        role: admin.role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn admin(id: &str, key: &SigningKey, role: Clearance) -> Admin {
        Admin {
            id: id.into(),
            key: key.verifying_key(),
            role,
            seal_key: [0; 32],
        }
    }

    fn bob(version: i64) -> Record {
        Record {
            fleet: "site".into(),
            user: "bob".into(),
            version,
            role: Role::User,
            enabled: true,
            kiosks: vec!["a".into(), "b".into()],
            removed: false,
        }
    }

    #[test]
    fn a_signed_record_opens_and_every_forgery_is_refused_with_its_kind() {
        let ka = SigningKey::from_bytes(&[1; 32]);
        let kv = SigningKey::from_bytes(&[2; 32]);
        let admins = [
            admin("ada", &ka, Clearance::Admin),
            admin("val", &kv, Clearance::Viewer),
        ];
        let topic = user_topic("site", "bob");
        let good = sign(&ka, "ada", &bob(5));
        let s = open(&good, &topic, "site", &admins, 65536).unwrap();
        assert_eq!((s.record, s.admin.as_str()), (bob(5), "ada"));
        let kind = |p: &[u8], topic: &str, fleet: &str| {
            open(p, topic, fleet, &admins, 65536).unwrap_err().kind
        };
        // Signed by a key nobody configured, or by a known id with another key.
        let stranger = SigningKey::from_bytes(&[3; 32]);
        assert_eq!(
            kind(&sign(&stranger, "eve", &bob(5)), &topic, "site"),
            Refusal::UnknownKey
        );
        assert_eq!(
            kind(&sign(&stranger, "ada", &bob(5)), &topic, "site"),
            Refusal::BadSignature
        );
        // Moved to another user's topic: the signature covers the topic.
        assert_eq!(
            kind(&good, &user_topic("site", "alice"), "site"),
            Refusal::BadSignature
        );
        // A viewer's key, another fleet, a body for another user.
        assert_eq!(
            kind(&sign(&kv, "val", &bob(5)), &topic, "site"),
            Refusal::NotAuthorized
        );
        let mut other = bob(5);
        other.fleet = "elsewhere".into();
        assert_eq!(
            kind(
                &sign(&ka, "ada", &other),
                &user_topic("elsewhere", "bob"),
                "site"
            ),
            Refusal::WrongKiosk,
            "another fleet's record"
        );
        let mut alice = bob(5);
        alice.user = "alice".into();
        assert_eq!(
            kind(
                &envelope::sign_bytes(&ka, "ada", &topic, &serde_json::to_vec(&alice).unwrap()),
                &topic,
                "site"
            ),
            Refusal::Invalid
        );
        assert_eq!(kind(b"{not json", &topic, "site"), Refusal::Invalid);
    }

    #[test]
    fn where_a_record_applies() {
        let r = bob(1);
        assert!(r.applies_to("a") && r.applies_to("b") && !r.applies_to("c"));
        let all = Record {
            kiosks: vec![],
            ..bob(1)
        };
        assert!(all.applies_to("c"));
        let gone = Record {
            removed: true,
            ..all
        };
        assert!(!gone.applies_to("a"));
        assert!(valid_name("k-1.a_b") && !valid_name("a/b") && !valid_name("+") && !valid_name(""));
    }
}
