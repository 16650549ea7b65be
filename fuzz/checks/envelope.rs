//! The signed MQTT command envelope: any payload is a verified request or a refusal with
//! its kind. First byte 0x01: the rest is a BODY, signed with the configured admin's key,
//! so the body checks behind the signature are reached too.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/envelope.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
use ed25519_dalek::SigningKey;
use lockerd::api::{required_role, Clearance};
use lockerd::mqtt::envelope::{open, sign_bytes, Admin, Check, MemoryNonces};

const TOPIC: &str = "lockerd/k1/cmd";

/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let admins = [Admin {
        id: "ada".into(),
        key: key.verifying_key(),
        role: Clearance::Operator,
        seal_key: [0; 32],
    }];
    let c = Check {
        topic: TOPIC,
        kiosk: "k1",
        admins: &admins,
        now_s: 1_800_000_000,
        max_skew_s: 30,
        max_payload_bytes: 65536,
    };
    let mut g = MemoryNonces::new(30);
    let payload = match data.split_first() {
        Some((1, body)) => sign_bytes(&key, "ada", TOPIC, body),
        _ => data.to_vec(),
    };
    match open(&payload, &c, &mut g) {
        Ok(v) => {
            assert!(required_role(&v.request) <= Clearance::Operator);
            assert!((v.ts - c.now_s).abs() <= 30);
            // Never twice.
            assert!(open(&payload, &c, &mut g).is_err());
        }
        Err(r) => assert!(!r.message.is_empty()),
    }
}
