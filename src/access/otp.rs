//! One-time passwords: HOTP (RFC 4226) and TOTP (RFC 6238, SHA-1, 6 digits, 30 s), random
//! admin-issued codes, and the salted hashes they are stored as.
//!
//! Secrets are compared in constant time (`subtle`); every TOTP candidate in the drift
//! window is computed and compared, so timing does not say which one matched. Nothing
//! here logs.

use hmac::{Hmac, Mac};
use rand::Rng;
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

pub const TOTP_DIGITS: u32 = 6;
pub const TOTP_PERIOD_S: i64 = 30;
/// Accepted steps either side of now (RFC 6238 §5.2 allows one).
pub const TOTP_SKEW: i64 = 1;

/// RFC 4226 HOTP with dynamic truncation.
pub fn hotp(secret: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return 0, // HMAC accepts any key length; unreachable in practice
    };
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let off = (h[19] & 0x0f) as usize;
    let bin = ((h[off] as u32 & 0x7f) << 24)
        | ((h[off + 1] as u32) << 16)
        | ((h[off + 2] as u32) << 8)
        | h[off + 3] as u32;
    bin % 10u32.pow(digits)
}

/// The TOTP time step for a Unix time.
pub fn totp_step(unix_s: i64) -> i64 {
    unix_s.div_euclid(TOTP_PERIOD_S)
}

pub fn totp_code(secret: &[u8], step: i64) -> String {
    format!("{:06}", hotp(secret, step.max(0) as u64, TOTP_DIGITS))
}

/// The step `code` matches within the drift window and after `last_step`, if any.
/// All candidates are always computed and compared.
pub fn verify_totp(secret: &[u8], code: &str, unix_s: i64, last_step: i64) -> Option<i64> {
    let now = totp_step(unix_s);
    let mut found = None;
    for step in (now - TOTP_SKEW)..=(now + TOTP_SKEW) {
        let cand = totp_code(secret, step);
        let eq: bool = cand.as_bytes().ct_eq(code.as_bytes()).into();
        if eq && step > last_step && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// `otpauth://` URI for authenticator apps (base32 secret without padding).
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={}&period={}",
        enc(issuer),
        enc(account),
        data_encoding::BASE32_NOPAD.encode(secret),
        enc(issuer),
        TOTP_DIGITS,
        TOTP_PERIOD_S
    )
}

/// `n` uniformly random decimal digits from the OS generator.
pub fn random_digits(n: u32) -> String {
    let mut rng = rand::rngs::OsRng;
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

/// HMAC-SHA256(salt, secret): how codes and PINs are stored.
pub fn hash_secret(salt: &[u8], secret: &str) -> [u8; 32] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(salt) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Constant-time check of a typed secret against a stored salted hash.
pub fn matches_hash(salt: &[u8], secret: &str, stored: &[u8]) -> bool {
    hash_secret(salt, secret).ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc4226_appendix_d_vectors() {
        let want = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (c, w) in want.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, c as u64, 6), *w, "counter {c}");
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        // (time, 8-digit TOTP) from RFC 6238 Appendix B, SHA-1 rows.
        for (t, w) in [
            (59i64, 94287082u32),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_SECRET, totp_step(t) as u64, 8), w, "t={t}");
            assert_eq!(
                totp_code(RFC_SECRET, totp_step(t)),
                format!("{:06}", w % 1_000_000)
            );
        }
    }

    #[test]
    fn one_step_of_drift_and_never_twice() {
        let t = 1_111_111_111;
        let s = totp_step(t);
        for d in [-1, 0, 1] {
            let code = totp_code(RFC_SECRET, s + d);
            assert_eq!(verify_totp(RFC_SECRET, &code, t, -1), Some(s + d));
        }
        assert_eq!(
            verify_totp(RFC_SECRET, &totp_code(RFC_SECRET, s + 2), t, -1),
            None
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &totp_code(RFC_SECRET, s - 2), t, -1),
            None
        );
        // Replay: once step s was accepted, the same code (or an older one) is refused.
        let code = totp_code(RFC_SECRET, s);
        assert_eq!(verify_totp(RFC_SECRET, &code, t, s), None);
        assert_eq!(
            verify_totp(RFC_SECRET, &totp_code(RFC_SECRET, s - 1), t, s),
            None
        );
        assert_eq!(verify_totp(RFC_SECRET, "12345", t, -1), None);
    }

    #[test]
    fn uri_is_what_authenticator_apps_read() {
        let u = otpauth_uri(RFC_SECRET, "lockerd", "front door:alice");
        assert_eq!(
            u,
            "otpauth://totp/lockerd:front%20door%3Aalice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=lockerd&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn random_codes_and_hashes() {
        let c = random_digits(8);
        assert_eq!(c.len(), 8);
        assert!(c.chars().all(|c| c.is_ascii_digit()));
        // Digits are roughly uniform (a broken generator would fail this).
        let mut counts = [0u32; 10];
        for _ in 0..2000 {
            for ch in random_digits(5).chars() {
                counts[(ch as u8 - b'0') as usize] += 1;
            }
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        let salt = random_bytes::<16>();
        let h = hash_secret(&salt, "12345678");
        assert!(matches_hash(&salt, "12345678", &h));
        assert!(!matches_hash(&salt, "12345679", &h));
        assert!(!matches_hash(&random_bytes::<16>(), "12345678", &h));
    }
}
