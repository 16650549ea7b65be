//! Replies to signed commands (`lockerd/<kiosk_id>/reply/<key id>`): `{"id", "ok": true,
//! "result"}` or `{"id", "ok": false, "error", "message"}`. Secrets in a result (an
//! issued code and its keys, a TOTP PIN and URI) never go out in clear: they are moved
//! into `"sealed"`, a libsodium sealed box (`crypto_box_seal`: X25519, XSalsa20-Poly1305)
//! to the requesting admin's `seal_key`, holding a JSON object with those fields.

use crate::api::{ApiError, Response};
use crypto_box::{PublicKey, SecretKey};
use data_encoding::BASE64;
use serde_json::{json, Value};

/// Why a sealed result could not be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the sealed box does not open with this key (or was altered)")]
    Open,
    #[error("sealing failed")]
    Seal,
    #[error("sealed field is not base64 of a JSON object")]
    Format,
}

/// Seal `secret` (a JSON object) to an admin's X25519 public key.
pub fn seal(to: &[u8; 32], secret: &Value) -> Result<String, SealError> {
    let plain = serde_json::to_vec(secret).map_err(|_| SealError::Seal)?;
    let boxed = PublicKey::from_bytes(*to)
        .seal(&mut rand::rngs::OsRng, &plain)
        .map_err(|_| SealError::Seal)?;
    Ok(BASE64.encode(&boxed))
}

/// Open a sealed field with the admin's X25519 secret key (`lockerctl remote`, tests).
pub fn unseal(secret_key: &[u8; 32], sealed: &str) -> Result<Value, SealError> {
    let boxed = BASE64
        .decode(sealed.as_bytes())
        .map_err(|_| SealError::Format)?;
    let plain = SecretKey::from_bytes(*secret_key)
        .unseal(&boxed)
        .map_err(|_| SealError::Open)?;
    serde_json::from_slice(&plain).map_err(|_| SealError::Format)
}

/// The `result` of a reply: the response as JSON with its secrets sealed to `seal_to`.
pub fn result(resp: &Response, seal_to: &[u8; 32]) -> Result<Value, SealError> {
    let mut v = serde_json::to_value(resp).map_err(|_| SealError::Seal)?;
    let secret_fields: &[&str] = match resp {
        Response::Code(_) => &["code", "keys"],
        Response::Totp(_) => &["pin", "uri"],
        _ => &[],
    };
    if secret_fields.is_empty() {
        return Ok(v);
    }
    let obj = v.as_object_mut().ok_or(SealError::Seal)?;
    let mut secret = serde_json::Map::new();
    for f in secret_fields {
        if let Some(x) = obj.remove(*f) {
            secret.insert((*f).to_string(), x);
        }
    }
    obj.insert(
        "sealed".into(),
        Value::String(seal(seal_to, &Value::Object(secret))?),
    );
    Ok(v)
}

/// A successful reply.
pub fn ok(id: &str, resp: &Response, seal_to: &[u8; 32]) -> Result<Value, SealError> {
    Ok(json!({ "id": id, "ok": true, "result": result(resp, seal_to)? }))
}

/// A refused or failed request: `error` is the refusal kind or the API error kind.
pub fn error(id: Option<&str>, kind: &str, message: &str) -> Value {
    json!({ "id": id, "ok": false, "error": kind, "message": message })
}

/// The reply for an API error; the kind in snake_case like the refusals
/// (`NotAuthorized` -> `not_authorized`).
pub fn api_error(id: &str, e: &ApiError) -> Value {
    let mut kind = String::new();
    for (i, c) in e.kind().chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                kind.push('_');
            }
            kind.push(c.to_ascii_lowercase());
        } else {
            kind.push(c);
        }
    }
    error(Some(id), &kind, &e.to_string())
}

/// The error an `error` reply stands for, on the admin's side: the inverse of
/// [`api_error`] for the API's own kinds; a refusal of the envelope itself (replayed,
/// stale, bad_signature, wrong_kiosk, ...) is "not authorized", a malformed one
/// (`invalid`) an invalid argument.
pub fn error_of(kind: &str, message: &str) -> ApiError {
    let camel: String = kind
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let e = ApiError::from_kind(&camel, message.to_string());
    if e.kind() == camel {
        return e;
    }
    match kind {
        "invalid" => ApiError::InvalidArgument(message.to_string()),
        other => ApiError::NotAuthorized(format!("{other}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{IssuedCode, TotpEnrolled};

    #[test]
    fn every_api_error_comes_back_from_its_reply_and_refusals_are_not_authorized() {
        for e in [
            ApiError::NotAuthorized("m".into()),
            ApiError::NoSuchUser("m".into()),
            ApiError::AlreadyExists("m".into()),
            ApiError::InvalidArgument("m".into()),
            ApiError::LockedOut("m".into()),
            ApiError::Busy("m".into()),
            ApiError::Unavailable("m".into()),
            ApiError::Internal("m".into()),
        ] {
            let r = api_error("r1", &e);
            let back = error_of(r["error"].as_str().unwrap(), "m");
            assert_eq!(back.kind(), e.kind(), "{r}");
        }
        assert!(matches!(
            error_of("replayed", "again"),
            ApiError::NotAuthorized(m) if m == "replayed: again"
        ));
        assert!(matches!(
            error_of("invalid", "x"),
            ApiError::InvalidArgument(_)
        ));
    }

    fn keys() -> ([u8; 32], [u8; 32]) {
        let sk = SecretKey::generate(&mut rand::rngs::OsRng);
        (sk.to_bytes(), *sk.public_key().as_bytes())
    }

    #[test]
    fn codes_and_totp_secrets_are_sealed_to_the_admin_and_nowhere_in_clear() {
        let (sk, pk) = keys();
        let code = Response::Code(IssuedCode {
            slot: 7,
            code: "48213907".into(),
            keys: "*7#48213907#".into(),
            expires_ms: 1,
            user: Some("alice".into()),
        });
        let r = ok("r1", &code, &pk).unwrap();
        let text = r.to_string();
        assert!(!text.contains("48213907"), "{text}");
        assert_eq!(r["result"]["slot"], 7);
        let opened = unseal(&sk, r["result"]["sealed"].as_str().unwrap()).unwrap();
        assert_eq!(opened, json!({"code": "48213907", "keys": "*7#48213907#"}));
        // Another admin's key does not open it; a flipped byte does not either.
        let (other, _) = keys();
        assert!(unseal(&other, r["result"]["sealed"].as_str().unwrap()).is_err());
        let mut raw = BASE64
            .decode(r["result"]["sealed"].as_str().unwrap().as_bytes())
            .unwrap();
        raw[40] ^= 1;
        assert!(unseal(&sk, &BASE64.encode(&raw)).is_err());
        let totp = Response::Totp(TotpEnrolled {
            user: "bob".into(),
            keypad_no: 12,
            pin: "4821".into(),
            uri: "otpauth://totp/lockerd:bob?secret=ABC".into(),
        });
        let r = ok("r2", &totp, &pk).unwrap();
        assert!(!r.to_string().contains("4821") && !r.to_string().contains("otpauth"));
        let opened = unseal(&sk, r["result"]["sealed"].as_str().unwrap()).unwrap();
        assert_eq!(opened["pin"], "4821");
        // Nothing secret: passed through as it is.
        let done = Response::Done {
            message: "locked".into(),
        };
        assert_eq!(ok("r3", &done, &pk).unwrap()["result"]["message"], "locked");
        let e = api_error("r4", &ApiError::NotAuthorized("no".into()));
        assert_eq!(e["error"], "not_authorized");
    }
}
