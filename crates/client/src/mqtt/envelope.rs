//! The signed admin command envelope (issue #8, "Signed admin commands"): what arrives on
//! `lockerd/<kiosk_id>/cmd` is checked here and becomes a typed [`Request`] from a known
//! admin, or a [`Refused`] with its kind. Pure: the caller supplies the admins, the clock
//! and the replay guard ([`NonceGuard`], kept in the store so it survives restarts).
//!
//! Wire format. Payload: `{"key": KEY_ID, "body": BASE64(BODY), "sig": BASE64(SIG)}`,
//! SIG = Ed25519 over `lockerd-cmd-v1` 0x00 TOPIC 0x00 BODY, BODY a UTF-8 JSON object
//! `{"kiosk", "id", "ts", "nonce": BASE64(>= 16 bytes), "cmd", "args"}`. The signature is
//! checked on the received BODY bytes, never on a re-serialisation.
//!
//! Order of the checks: size, shape, key, signature; only then is anything in the body
//! believed: kiosk, time, nonce (recorded only for a good signature, so forgeries cannot
//! fill the guard), command, role.

use crate::api::{required_role, Clearance, Request};
use data_encoding::BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The domain separation prefix of every signed command.
pub const DOMAIN: &[u8] = b"lockerd-cmd-v1";
/// Fewest random bytes in a nonce.
pub const MIN_NONCE: usize = 16;
/// Longest nonce, request id and key id accepted (bytes).
const MAX_FIELD: usize = 128;

/// Why a command was refused: the `error` of the reply and of the audit row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    UnknownKey,
    BadSignature,
    WrongKiosk,
    Stale,
    Replayed,
    NotAuthorized,
    TooLarge,
    Invalid,
    UnknownCommand,
    /// The replay guard could not remember the nonce (a full disk, a store fault): not
    /// run, and not called a replay.
    Unavailable,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongKiosk => "wrong_kiosk",
            Refusal::Stale => "stale",
            Refusal::Replayed => "replayed",
            Refusal::NotAuthorized => "not_authorized",
            Refusal::TooLarge => "too_large",
            Refusal::Invalid => "invalid",
            Refusal::UnknownCommand => "unknown_command",
            Refusal::Unavailable => "unavailable",
        }
    }

    /// Refusals decided before the key is known and the signature checked: answered (rate
    /// limited) on the `rejected` topic, not on the claimed admin's reply topic.
    pub fn before_signature(self) -> bool {
        matches!(
            self,
            Refusal::UnknownKey | Refusal::BadSignature | Refusal::TooLarge | Refusal::Invalid
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: the kind, a message for the reply, and what it claimed to be.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Refused {
    pub kind: Refusal,
    pub message: String,
    /// The key id the envelope named (trusted only when the kind is after the signature).
    pub key: Option<String>,
    /// The request id, when the body could be read.
    pub id: Option<String>,
}

/// An admin as configured (`[[mqtt.admins]]`).
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: String,
    pub key: VerifyingKey,
    pub role: Clearance,
    /// X25519 public key that secrets in replies to this admin are sealed to.
    pub seal_key: [u8; 32],
}

/// A command that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub admin: String,
    pub role: Clearance,
    pub seal_key: [u8; 32],
    pub id: String,
    pub ts: i64,
    pub request: Request,
}

/// Remembers nonces for the skew window. `record` returns false for one seen before.
pub trait NonceGuard {
    type Error: std::fmt::Display;
    fn record(&mut self, key: &str, nonce: &[u8], ts: i64, now: i64) -> Result<bool, Self::Error>;
}

/// The bytes the signature covers.
/// A 32-byte key written as base64 (the config's admin keys, the admin's key file).
pub fn key32(text: &str) -> Option<[u8; 32]> {
    BASE64
        .decode(text.trim().as_bytes())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
}

pub fn signed_bytes(topic: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + topic.len() + body.len() + 2);
    m.extend_from_slice(DOMAIN);
    m.push(0);
    m.extend_from_slice(topic.as_bytes());
    m.push(0);
    m.extend_from_slice(body);
    m
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Outer {
    key: String,
    body: String,
    sig: String,
}

#[derive(Deserialize)]
struct Body {
    kiosk: String,
    id: String,
    ts: i64,
    nonce: String,
    cmd: String,
    #[serde(default)]
    args: Option<serde_json::Value>,
}

/// What the checks need besides the payload.
pub struct Check<'a> {
    pub topic: &'a str,
    pub kiosk: &'a str,
    pub admins: &'a [Admin],
    pub now_s: i64,
    pub max_skew_s: i64,
    pub max_payload_bytes: usize,
}

/// A refusal of kind `kind`, naming the key and the command id when they are known.
fn refused(kind: Refusal, message: String, key: Option<&str>, id: Option<&str>) -> Refused {
    Refused {
        kind,
        message,
        key: key.map(str::to_string),
        id: id.map(str::to_string),
    }
}

/// Check a received command. Never panics on any input. In order: the size, the
/// envelope and its signature by a configured admin ([`authentic_body`]); then the body,
/// which is the admin's from there on: its id, kiosk and time ([`check_body`]), its
/// nonce, never seen before; the request it names ([`request_of`]); the admin's role.
pub fn open<G: NonceGuard>(
    payload: &[u8],
    c: &Check<'_>,
    nonces: &mut G,
) -> Result<Verified, Refused> {
    let (admin, body) = authentic_body(payload, c)?;
    let key_id = admin.id.as_str();
    let b: Body = serde_json::from_slice(&body).map_err(|e| {
        refused(
            Refusal::Invalid,
            format!("body: {}", clip(&e.to_string())),
            Some(key_id),
            None,
        )
    })?;
    check_body(&b, c, key_id)?;
    let id = Some(b.id.as_str());
    let nonce = BASE64
        .decode(b.nonce.as_bytes())
        .ok()
        .filter(|n| (MIN_NONCE..=MAX_FIELD).contains(&n.len()))
        .ok_or_else(|| {
            refused(
                Refusal::Invalid,
                format!("nonce must be base64 of {MIN_NONCE}-{MAX_FIELD} bytes"),
                Some(key_id),
                id,
            )
        })?;
    match nonces.record(key_id, &nonce, b.ts, c.now_s) {
        Ok(true) => {}
        Ok(false) => {
            return Err(refused(
                Refusal::Replayed,
                "this nonce was used before".into(),
                Some(key_id),
                id,
            ))
        }
        // Fail closed: a command whose nonce cannot be remembered is not run.
        Err(e) => {
            return Err(refused(
                Refusal::Unavailable,
                format!("the nonce cannot be recorded ({e}); not run"),
                Some(key_id),
                id,
            ))
        }
    }
    let request = request_of(&b, key_id)?;
    let need = required_role(&request);
    if admin.role < need {
        return Err(refused(
            Refusal::NotAuthorized,
            format!(
                "{} needs the {need} role; {key_id} is {}",
                request.name(),
                admin.role
            ),
            Some(key_id),
            id,
        ));
    }
    Ok(Verified {
        admin: admin.id.clone(),
        role: admin.role,
        seal_key: admin.seal_key,
        id: b.id,
        ts: b.ts,
        request,
    })
}

/// The envelope's body, once its size is allowed and its signature verifies (strictly)
/// with the key of the configured admin it names, over the topic and the body.
pub fn authentic_body<'a>(payload: &[u8], c: &Check<'a>) -> Result<(&'a Admin, Vec<u8>), Refused> {
    if payload.len() > c.max_payload_bytes {
        return Err(refused(
            Refusal::TooLarge,
            format!(
                "{} bytes, at most {} are accepted",
                payload.len(),
                c.max_payload_bytes
            ),
            None,
            None,
        ));
    }
    let outer: Outer = serde_json::from_slice(payload).map_err(|e| {
        refused(
            Refusal::Invalid,
            format!("not a command envelope: {}", clip(&e.to_string())),
            None,
            None,
        )
    })?;
    let key_id = outer.key.as_str();
    let admin = c.admins.iter().find(|a| a.id == key_id).ok_or_else(|| {
        refused(
            Refusal::UnknownKey,
            format!("no admin key {:?}", clip(key_id)),
            Some(key_id),
            None,
        )
    })?;
    let b64 = |what: &str, s: &str| {
        BASE64.decode(s.as_bytes()).map_err(|e| {
            refused(
                Refusal::Invalid,
                format!("{what} is not base64: {e}"),
                Some(key_id),
                None,
            )
        })
    };
    let body = b64("body", &outer.body)?;
    let sig = b64("sig", &outer.sig)?;
    let sig = Signature::from_slice(&sig).map_err(|_| {
        refused(
            Refusal::BadSignature,
            "the signature is not 64 bytes".into(),
            Some(key_id),
            None,
        )
    })?;
    // Strict: no malleable signatures, no small-order keys.
    admin
        .key
        .verify_strict(&signed_bytes(c.topic, &body), &sig)
        .map_err(|_| {
            refused(
                Refusal::BadSignature,
                format!(
                    "the signature does not verify with key {key_id:?} on {}",
                    c.topic
                ),
                Some(key_id),
                None,
            )
        })?;
    Ok((admin, body))
}

/// The body's id (1 to [`MAX_FIELD`] bytes), its kiosk (this one) and its time (within
/// `max_skew_s` of the kiosk's clock).
fn check_body(b: &Body, c: &Check<'_>, key_id: &str) -> Result<(), Refused> {
    let id = Some(b.id.as_str());
    if b.id.is_empty() || b.id.len() > MAX_FIELD {
        return Err(refused(
            Refusal::Invalid,
            format!("id must be 1-{MAX_FIELD} bytes"),
            Some(key_id),
            None,
        ));
    }
    if b.kiosk != c.kiosk {
        return Err(refused(
            Refusal::WrongKiosk,
            format!("for kiosk {:?}, this is {:?}", clip(&b.kiosk), c.kiosk),
            Some(key_id),
            id,
        ));
    }
    let skew = (c.now_s as i128 - b.ts as i128).abs();
    if skew > c.max_skew_s as i128 {
        return Err(refused(
            Refusal::Stale,
            format!(
                "ts {} is {skew} s from the kiosk's clock (at most {} s)",
                b.ts, c.max_skew_s
            ),
            Some(key_id),
            id,
        ));
    }
    Ok(())
}

/// The request the body names: its `cmd` and `args` read as a [`Request`]
/// (`"args": {}` for a command that takes none is the same as no args).
fn request_of(b: &Body, key_id: &str) -> Result<Request, Refused> {
    let id = Some(b.id.as_str());
    let parse = |args: Option<serde_json::Value>| {
        let mut req = serde_json::Map::new();
        req.insert("cmd".into(), serde_json::Value::String(b.cmd.clone()));
        if let Some(a) = args {
            req.insert("args".into(), a);
        }
        serde_json::from_value::<Request>(serde_json::Value::Object(req))
    };
    let mut parsed = parse(b.args.clone());
    if parsed.is_err() && b.args.as_ref().is_some_and(|a| a == &serde_json::json!({})) {
        parsed = parse(None);
    }
    parsed.map_err(|e| {
        let s = e.to_string();
        if s.starts_with("unknown variant") {
            refused(
                Refusal::UnknownCommand,
                format!("no command {:?}", clip(&b.cmd)),
                Some(key_id),
                id,
            )
        } else {
            refused(
                Refusal::Invalid,
                format!("{}: {}", clip(&b.cmd), clip(&s)),
                Some(key_id),
                id,
            )
        }
    })
}

/// Build a signed envelope (the admin's side: `lockerctl remote` and the tests).
pub fn sign(key: &SigningKey, key_id: &str, topic: &str, body: &serde_json::Value) -> Vec<u8> {
    sign_bytes(
        key,
        key_id,
        topic,
        &serde_json::to_vec(body).unwrap_or_default(),
    )
}

/// Sign BODY bytes as they are (the fuzzer reaches the body checks with it).
pub fn sign_bytes(key: &SigningKey, key_id: &str, topic: &str, body: &[u8]) -> Vec<u8> {
    let sig = key.sign(&signed_bytes(topic, body));
    serde_json::to_vec(&serde_json::json!({
        "key": key_id,
        "body": BASE64.encode(body),
        "sig": BASE64.encode(&sig.to_bytes()),
    }))
    .unwrap_or_default()
}

/// An in-memory guard (tests, fuzzing): nonces within the window, pruned as time passes.
#[derive(Debug, Default)]
pub struct MemoryNonces {
    seen: std::collections::HashMap<(String, Vec<u8>), i64>,
    pub window_s: i64,
}

impl MemoryNonces {
    pub fn new(window_s: i64) -> Self {
        Self {
            seen: Default::default(),
            window_s,
        }
    }
}

impl NonceGuard for MemoryNonces {
    type Error = std::convert::Infallible;
    fn record(&mut self, key: &str, nonce: &[u8], ts: i64, now: i64) -> Result<bool, Self::Error> {
        let w = self.window_s;
        self.seen.retain(|_, t| (now - *t).abs() <= w);
        Ok(self
            .seen
            .insert((key.to_string(), nonce.to_vec()), ts)
            .is_none())
    }
}

fn clip(s: &str) -> String {
    if s.len() <= 80 {
        return s.to_string();
    }
    let mut end = 80;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOPIC: &str = "lockerd/k1/cmd";
    const NOW: i64 = 1_800_000_000;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn admins() -> Vec<Admin> {
        vec![
            Admin {
                id: "ada".into(),
                key: key(1).verifying_key(),
                role: Clearance::Admin,
                seal_key: [1; 32],
            },
            Admin {
                id: "vic".into(),
                key: key(2).verifying_key(),
                role: Clearance::Viewer,
                seal_key: [2; 32],
            },
        ]
    }

    fn body(cmd: &str, args: serde_json::Value, nonce: u8) -> serde_json::Value {
        json!({"kiosk": "k1", "id": format!("r{nonce}"), "ts": NOW, "nonce": BASE64.encode(&[nonce; 16]), "cmd": cmd, "args": args})
    }

    fn check<'a>(admins: &'a [Admin]) -> Check<'a> {
        Check {
            topic: TOPIC,
            kiosk: "k1",
            admins,
            now_s: NOW,
            max_skew_s: 30,
            max_payload_bytes: 65536,
        }
    }

    fn guard() -> MemoryNonces {
        MemoryNonces::new(30)
    }

    fn kind(r: Result<Verified, Refused>) -> Refusal {
        r.expect_err("refused").kind
    }

    #[test]
    fn a_signed_command_opens_once_and_every_forgery_has_its_kind() {
        let a = admins();
        let c = check(&a);
        let mut g = guard();
        let good = sign(
            &key(1),
            "ada",
            TOPIC,
            &body("unlock", json!({"reason": "parcel"}), 1),
        );
        let v = open(&good, &c, &mut g).unwrap();
        assert_eq!(v.admin, "ada");
        assert_eq!(v.id, "r1");
        assert_eq!(
            v.request,
            Request::Unlock {
                reason: "parcel".into()
            }
        );
        // The same bytes again.
        assert_eq!(kind(open(&good, &c, &mut g)), Refusal::Replayed);
        // Signed by another key than the one named.
        let forged = sign(&key(9), "ada", TOPIC, &body("unlock", json!({}), 2));
        assert_eq!(kind(open(&forged, &c, &mut g)), Refusal::BadSignature);
        // A key nobody configured.
        let unknown = sign(&key(9), "mallory", TOPIC, &body("unlock", json!({}), 3));
        assert_eq!(kind(open(&unknown, &c, &mut g)), Refusal::UnknownKey);
        // A guard that cannot write (a full disk) refuses, and does not call it a replay.
        struct Full;
        impl NonceGuard for Full {
            type Error = &'static str;
            fn record(&mut self, _: &str, _: &[u8], _: i64, _: i64) -> Result<bool, Self::Error> {
                Err("database or disk is full")
            }
        }
        let fresh = sign(&key(1), "ada", TOPIC, &body("unlock", json!({}), 31));
        assert_eq!(kind(open(&fresh, &c, &mut Full)), Refusal::Unavailable);
        // A kiosk with no remote admin at all refuses even a correctly signed command.
        let nobody = check(&[]);
        let fresh = sign(&key(1), "ada", TOPIC, &body("unlock", json!({}), 30));
        assert_eq!(kind(open(&fresh, &nobody, &mut g)), Refusal::UnknownKey);
        // Signed for another topic (another kiosk's) and replayed here.
        let moved = sign(
            &key(1),
            "ada",
            "lockerd/k2/cmd",
            &body("unlock", json!({}), 4),
        );
        assert_eq!(kind(open(&moved, &c, &mut g)), Refusal::BadSignature);
        // Body for another kiosk.
        let mut b = body("unlock", json!({}), 5);
        b["kiosk"] = json!("k2");
        assert_eq!(
            kind(open(&sign(&key(1), "ada", TOPIC, &b), &c, &mut g)),
            Refusal::WrongKiosk
        );
        // Too old, too new.
        for ts in [NOW - 31, NOW + 31, i64::MIN, i64::MAX] {
            let mut b = body("unlock", json!({}), 6);
            b["ts"] = json!(ts);
            assert_eq!(
                kind(open(&sign(&key(1), "ada", TOPIC, &b), &c, &mut g)),
                Refusal::Stale
            );
        }
        // A viewer may look, not unlock.
        let v = sign(&key(2), "vic", TOPIC, &body("unlock", json!({}), 7));
        assert_eq!(kind(open(&v, &c, &mut g)), Refusal::NotAuthorized);
        let v = sign(&key(2), "vic", TOPIC, &body("status", json!(null), 8));
        assert_eq!(open(&v, &c, &mut g).unwrap().request, Request::Status);
        // Unknown command, bad args, short nonce.
        let u = sign(&key(1), "ada", TOPIC, &body("self_destruct", json!({}), 9));
        assert_eq!(kind(open(&u, &c, &mut g)), Refusal::UnknownCommand);
        let u = sign(
            &key(1),
            "ada",
            TOPIC,
            &body("user_add", json!({"nom": 1}), 10),
        );
        assert_eq!(kind(open(&u, &c, &mut g)), Refusal::Invalid);
        let mut b = body("status", json!(null), 11);
        b["nonce"] = json!(BASE64.encode(&[1u8; 8]));
        assert_eq!(
            kind(open(&sign(&key(1), "ada", TOPIC, &b), &c, &mut g)),
            Refusal::Invalid
        );
    }

    #[test]
    fn the_signature_covers_the_received_bytes_not_a_reserialisation() {
        let a = admins();
        let c = check(&a);
        let mut g = guard();
        // The same JSON with other spacing: a different BODY, so the old signature fails.
        let good = sign(&key(1), "ada", TOPIC, &body("lock", json!(null), 1));
        let outer: serde_json::Value = serde_json::from_slice(&good).unwrap();
        let bytes = BASE64
            .decode(outer["body"].as_str().unwrap().as_bytes())
            .unwrap();
        let spaced = String::from_utf8(bytes).unwrap().replace(':', ": ");
        let tampered =
            json!({"key": "ada", "body": BASE64.encode(spaced.as_bytes()), "sig": outer["sig"]});
        let r = open(&serde_json::to_vec(&tampered).unwrap(), &c, &mut g);
        assert_eq!(kind(r), Refusal::BadSignature);
        // A forgery's nonce was not recorded: the genuine command still runs.
        assert!(open(&good, &c, &mut g).is_ok());
    }

    #[test]
    fn oversized_and_malformed_payloads_are_refused_before_any_work() {
        let a = admins();
        let mut c = check(&a);
        c.max_payload_bytes = 100;
        let mut g = guard();
        assert_eq!(kind(open(&[b'{'; 101], &c, &mut g)), Refusal::TooLarge);
        for p in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"key\":1}",
            b"{\"key\":\"ada\",\"body\":\"%%\",\"sig\":\"\"}",
            b"\xff\xfe",
        ] {
            let r = open(p, &c, &mut g).expect_err("refused");
            assert!(r.kind.before_signature(), "{p:?}: {r:?}");
        }
    }
}
