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
//! A record may carry the user's face templates ([`SealedFaces`]), each kiosk's share
//! sealed to that kiosk's key (libsodium's sealed box: X25519, XSalsa20-Poly1305) and to
//! no other: a kiosk where the user may not open gets no share, and cannot open
//! another's. The templates never reach the signer in clear: the kiosk where the user was
//! enrolled seals them to the other kiosks' card keys (`Request::FleetExport`), and the
//! admin's `lockerctl fleet publish` puts the sealed shares in the record and signs it.

use crate::api::Clearance;
use crate::mqtt::envelope::{self, Admin, Check, Refusal, Refused};
use data_encoding::BASE64;
use lockerd_core::types::{Embedding, EmbeddingModel, Role};
use serde::{Deserialize, Serialize};

/// The longest fleet id or user name a record may carry.
const MAX_NAME: usize = 64;
/// The most kiosks one record may name or carry faces for.
pub const MAX_KIOSKS: usize = 256;
/// The most templates one kiosk's share may hold.
pub const MAX_TEMPLATES: usize = 32;

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
    /// Where the user may open: kiosk ids, and groups as `@group` (a kiosk's `[fleet]
    /// groups`); empty = every kiosk of the fleet.
    #[serde(default)]
    pub kiosks: Vec<String>,
    /// A tombstone: the user is removed from every kiosk.
    #[serde(default)]
    pub removed: bool,
    /// The user's face templates, one share per kiosk, each sealed to that kiosk. None:
    /// the record says nothing of faces, and a kiosk keeps the ones it holds (a ban or a
    /// role change published without a kiosk to read faces from). Some: the whole truth,
    /// and a kiosk with no share of its own holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub faces: Option<Vec<SealedFaces>>,
}

/// One kiosk's share of a user's face templates: [`Faces`] sealed to `to`, the kiosk's
/// card key when it was sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedFaces {
    pub kiosk: String,
    /// The X25519 public key sealed to (base64).
    pub to: String,
    /// The sealed box (base64).
    pub sealed: String,
}

/// What a share holds once opened: bound to its fleet, user and kiosk, so a share cannot
/// be moved to another user's record or another kiosk's slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faces {
    pub fleet: String,
    pub user: String,
    pub kiosk: String,
    pub templates: Vec<FaceTemplate>,
}

/// One template as it travels: its model, where it came from (a `photo:` source keeps
/// the photo tier), its quality and the embedding (128 little-endian f32, base64).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceTemplate {
    pub model: EmbeddingModel,
    pub source: String,
    pub quality: f32,
    pub embedding: String,
}

impl std::fmt::Debug for FaceTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FaceTemplate({}, {:?}, <redacted>)",
            self.model, self.source
        )
    }
}

impl FaceTemplate {
    pub fn new(model: EmbeddingModel, source: &str, quality: f32, e: &Embedding) -> Self {
        FaceTemplate {
            model,
            source: source.to_string(),
            quality,
            embedding: BASE64.encode(&e.to_bytes()),
        }
    }

    /// The embedding, if it is 128 finite values.
    pub fn embedding(&self) -> Option<Embedding> {
        let bytes = BASE64.decode(self.embedding.as_bytes()).ok()?;
        Embedding::from_bytes(&bytes).filter(|e| e.0.iter().all(|v| v.is_finite()))
    }
}

/// Why a share could not be made or opened.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FacesError {
    #[error("the share is not sealed to this kiosk's key")]
    OtherKey,
    #[error("the share does not open with this kiosk's key (or was altered)")]
    Open,
    #[error("the share was sealed for {0}")]
    Misbound(String),
    #[error("the share is malformed: {0}")]
    Malformed(String),
    #[error("sealing failed")]
    Seal,
}

/// Seal `faces` to the kiosk key `to`.
pub fn seal_faces(to: &[u8; 32], faces: &Faces) -> Result<SealedFaces, FacesError> {
    let plain = serde_json::to_vec(faces).map_err(|_| FacesError::Seal)?;
    let boxed = crypto_box::PublicKey::from_bytes(*to)
        .seal(&mut rand::rngs::OsRng, &plain)
        .map_err(|_| FacesError::Seal)?;
    Ok(SealedFaces {
        kiosk: faces.kiosk.clone(),
        to: BASE64.encode(to),
        sealed: BASE64.encode(&boxed),
    })
}

/// Open this kiosk's share with its X25519 secret, and check that it was sealed for
/// `fleet`, `user` and `kiosk` and holds well-formed templates.
pub fn open_faces(
    secret: &[u8; 32],
    share: &SealedFaces,
    fleet: &str,
    user: &str,
    kiosk: &str,
) -> Result<Faces, FacesError> {
    let sk = crypto_box::SecretKey::from_bytes(*secret);
    if share.to != BASE64.encode(sk.public_key().as_bytes()) {
        return Err(FacesError::OtherKey);
    }
    let boxed = BASE64
        .decode(share.sealed.as_bytes())
        .map_err(|_| FacesError::Malformed("not base64".into()))?;
    let plain = sk.unseal(&boxed).map_err(|_| FacesError::Open)?;
    let faces: Faces =
        serde_json::from_slice(&plain).map_err(|e| FacesError::Malformed(e.to_string()))?;
    if (
        faces.fleet.as_str(),
        faces.user.as_str(),
        faces.kiosk.as_str(),
    ) != (fleet, user, kiosk)
    {
        return Err(FacesError::Misbound(format!(
            "fleet {:?}, user {:?}, kiosk {:?}",
            faces.fleet, faces.user, faces.kiosk
        )));
    }
    if faces.templates.len() > MAX_TEMPLATES {
        return Err(FacesError::Malformed(format!(
            "{} templates; at most {MAX_TEMPLATES}",
            faces.templates.len()
        )));
    }
    if faces
        .templates
        .iter()
        .any(|t| t.embedding().is_none() || t.source.len() > 256 || !t.quality.is_finite())
    {
        return Err(FacesError::Malformed(
            "a template is not 128 finite values".into(),
        ));
    }
    Ok(faces)
}

impl Record {
    /// Whether `kiosk`, a member of `groups`, keeps this user (a tombstone keeps them
    /// nowhere).
    pub fn applies_to(&self, kiosk: &str, groups: &[String]) -> bool {
        !self.removed
            && (self.kiosks.is_empty() || self.kiosks.iter().any(|k| names(k, kiosk, groups)))
    }
}

/// Whether the target `t` (a kiosk id, or `@group`) names `kiosk`, a member of `groups`.
pub fn names(t: &str, kiosk: &str, groups: &[String]) -> bool {
    match t.strip_prefix('@') {
        Some(g) => groups.iter().any(|m| m == g),
        None => t == kiosk,
    }
}

/// A kiosk id, or `@` and a group name.
pub fn valid_target(t: &str) -> bool {
    valid_name(t.strip_prefix('@').unwrap_or(t))
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
    /// The groups this kiosk is in (`[fleet] groups`): records may name them as `@group`.
    #[serde(default)]
    pub groups: Vec<String>,
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
    let shares = record.faces.as_deref().unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    if record.version <= 0
        || record.kiosks.len() > MAX_KIOSKS
        || shares.len() > MAX_KIOSKS
        || record.kiosks.iter().any(|k| !valid_target(k))
        || shares
            .iter()
            .any(|s| !valid_name(&s.kiosk) || !seen.insert(s.kiosk.as_str()))
    {
        return Err(refuse(
            Refusal::Invalid,
            "bad version, kiosk id or face share".into(),
        ));
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
            faces: None,
        }
    }

    fn faces(kiosk: &str, n: usize) -> Faces {
        let mut e = Embedding([0.0; 128]);
        e.0[0] = 1.0;
        Faces {
            fleet: "site".into(),
            user: "bob".into(),
            kiosk: kiosk.into(),
            templates: (0..n)
                .map(|i| FaceTemplate::new(EmbeddingModel::Sface, &format!("photo:{i}"), 0.9, &e))
                .collect(),
        }
    }

    #[test]
    fn a_share_opens_only_at_its_kiosk_for_its_user() {
        let ka = crypto_box::SecretKey::from_bytes([7; 32]);
        let kb = crypto_box::SecretKey::from_bytes([8; 32]);
        let share = seal_faces(ka.public_key().as_bytes(), &faces("a", 3)).unwrap();
        let opened = open_faces(&ka.to_bytes(), &share, "site", "bob", "a").unwrap();
        assert_eq!(opened, faces("a", 3));
        assert_eq!(opened.templates[0].embedding().unwrap().0[0], 1.0);
        // Another kiosk's key: not for it (and, were `to` rewritten, it does not open).
        assert_eq!(
            open_faces(&kb.to_bytes(), &share, "site", "bob", "a"),
            Err(FacesError::OtherKey)
        );
        let relabelled = SealedFaces {
            to: BASE64.encode(kb.public_key().as_bytes()),
            ..share.clone()
        };
        assert_eq!(
            open_faces(&kb.to_bytes(), &relabelled, "site", "bob", "a"),
            Err(FacesError::Open)
        );
        // Moved to another user's record, or another kiosk's slot: bound inside.
        assert!(matches!(
            open_faces(&ka.to_bytes(), &share, "site", "alice", "a"),
            Err(FacesError::Misbound(_))
        ));
        assert!(matches!(
            open_faces(&ka.to_bytes(), &share, "site", "bob", "b"),
            Err(FacesError::Misbound(_))
        ));
        // Altered in transit.
        let mut bytes = BASE64.decode(share.sealed.as_bytes()).unwrap();
        bytes[40] ^= 1;
        let altered = SealedFaces {
            sealed: BASE64.encode(&bytes),
            ..share.clone()
        };
        assert_eq!(
            open_faces(&ka.to_bytes(), &altered, "site", "bob", "a"),
            Err(FacesError::Open)
        );
        // Too many templates, or one that is not 128 finite values.
        let big = seal_faces(ka.public_key().as_bytes(), &faces("a", MAX_TEMPLATES + 1)).unwrap();
        assert!(matches!(
            open_faces(&ka.to_bytes(), &big, "site", "bob", "a"),
            Err(FacesError::Malformed(_))
        ));
        let mut bad = faces("a", 1);
        bad.templates[0].embedding = BASE64.encode(&[0u8; 100]);
        let bad = seal_faces(ka.public_key().as_bytes(), &bad).unwrap();
        assert!(matches!(
            open_faces(&ka.to_bytes(), &bad, "site", "bob", "a"),
            Err(FacesError::Malformed(_))
        ));
        // Nothing of the template in its Debug form.
        assert!(!format!("{:?}", faces("a", 1)).contains("AACAPw"));
    }

    #[test]
    fn a_record_with_two_shares_for_one_kiosk_is_refused() {
        let ka = SigningKey::from_bytes(&[1; 32]);
        let admins = [admin("ada", &ka, Clearance::Admin)];
        let share = SealedFaces {
            kiosk: "a".into(),
            to: "x".into(),
            sealed: "y".into(),
        };
        let mut r = bob(5);
        r.faces = Some(vec![share.clone()]);
        let topic = user_topic("site", "bob");
        assert!(open(&sign(&ka, "ada", &r), &topic, "site", &admins, 65536).is_ok());
        r.faces = Some(vec![share.clone(), share]);
        assert_eq!(
            open(&sign(&ka, "ada", &r), &topic, "site", &admins, 65536)
                .unwrap_err()
                .kind,
            Refusal::Invalid
        );
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
        let none: &[String] = &[];
        let r = bob(1);
        assert!(r.applies_to("a", none) && r.applies_to("b", none) && !r.applies_to("c", none));
        let all = Record {
            kiosks: vec![],
            ..bob(1)
        };
        assert!(all.applies_to("c", none));
        let gone = Record {
            removed: true,
            ..all
        };
        assert!(!gone.applies_to("a", none));
        // Groups: `@lobby` names every kiosk in that group, and only those.
        let lobby = Record {
            kiosks: vec!["@lobby".into(), "z".into()],
            ..bob(1)
        };
        let groups = ["lobby".to_string(), "floor1".to_string()];
        assert!(lobby.applies_to("c", &groups) && lobby.applies_to("z", none));
        assert!(!lobby.applies_to("c", &groups[1..]) && !lobby.applies_to("lobby", none));
        assert!(
            valid_target("@lobby")
                && valid_target("k1")
                && !valid_target("@")
                && !valid_target("@a/b")
        );
        assert!(valid_name("k-1.a_b") && !valid_name("a/b") && !valid_name("+") && !valid_name(""));
    }
}
