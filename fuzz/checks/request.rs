//! The request API's JSON form (the body of a signed MQTT command): any bytes give a
//! request or an error, and a parsed request has a name and a role in the table.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/request.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
use lockerd::api::{authorize, required_role, Caller, Request};

/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<Request>(data) {
        let _ = r.name();
        let _ = required_role(&r);
        let _ = authorize(&Caller::simulator(), &r);
        // What parses serialises and parses back to the same request.
        let again: Request = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }
}
