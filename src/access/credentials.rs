//! Keypad credentials: what the user types, and how it is checked.
//!
//! Entry formats (README "Keypad"):
//! - personal TOTP: `<keypad number>#<PIN><6-digit TOTP>#`, e.g. `12#4821` + `093714` + `#`;
//! - admin-issued one-time code: `*<slot>#<code>#`, e.g. `*7#48213907#`.
//!
//! The keypad number and slot only select which secret to check; the PIN, the TOTP and
//! the one-time code are the secrets. Shared by the CLI (issuing) and the controller
//! (checking), all on a [`Db`].

use super::config::AccessConfig;
use super::otp;
use crate::store::{Db, StoreError};
use crate::types::User;
use serde::Serialize;

/// A code as handed to the admin (the only time the code exists in clear). `Debug`
/// leaves the code out.
#[derive(Clone, Serialize)]
pub struct IssuedCode {
    pub slot: u32,
    pub code: String,
    pub expires_ms: i64,
    pub user: Option<String>,
    /// Exactly what to type on the keypad.
    pub keys: String,
}

impl std::fmt::Debug for IssuedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IssuedCode {{ slot: {}, code: <redacted>, user: {:?} }}",
            self.slot, self.user
        )
    }
}

pub fn code_keys(slot: u32, code: &str) -> String {
    format!("*{slot}#{code}#")
}

/// Issue a one-time code, optionally bound to a user. Only its salted hash is stored.
pub fn issue_code(
    db: &mut Db,
    cfg: &AccessConfig,
    user: Option<&User>,
    ttl_s: Option<u64>,
    now_ms: i64,
) -> Result<IssuedCode, StoreError> {
    let ttl = ttl_s.unwrap_or(cfg.otp_default_ttl_s);
    if ttl == 0 || ttl > cfg.otp_max_ttl_s {
        return Err(StoreError::Invalid(format!(
            "a one-time code may last 1 s to {} s (access.otp_max_ttl_s), not {ttl} s",
            cfg.otp_max_ttl_s
        )));
    }
    if let Some(u) = user {
        if !u.may_enter() {
            return Err(StoreError::Invalid(format!(
                "{} is {} and cannot be given a code",
                u.name,
                if u.enabled { "banned" } else { "disabled" }
            )));
        }
    }
    let slot = db.code_free_slot(now_ms)?;
    let code = otp::random_digits(cfg.otp_digits);
    let salt = otp::random_bytes::<16>();
    let hash = otp::hash_secret(&salt, &code);
    let expires_ms = now_ms + (ttl as i64) * 1000;
    db.code_insert(slot, user.map(|u| u.id), &salt, &hash, now_ms, expires_ms)?;
    Ok(IssuedCode {
        slot,
        keys: code_keys(slot, &code),
        code,
        expires_ms,
        user: user.map(|u| u.name.clone()),
    })
}

/// What `totp enroll` hands to the admin once. `Debug` leaves the PIN and URI out.
#[derive(Clone, Serialize)]
pub struct TotpEnrollment {
    pub user: String,
    pub keypad_no: u32,
    pub pin: String,
    pub uri: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TotpEnrollment {{ user: {:?}, keypad_no: {}, pin and uri: <redacted> }}",
            self.user, self.keypad_no
        )
    }
}

/// Give a user a fresh TOTP secret and PIN (random unless given), and a keypad number.
pub fn enroll_totp(
    db: &mut Db,
    cfg: &AccessConfig,
    user: &User,
    issuer: &str,
    pin: Option<&str>,
    now_ms: i64,
) -> Result<TotpEnrollment, StoreError> {
    let want = cfg.totp_pin_digits as usize;
    let pin = match pin {
        Some(p) if p.len() == want && p.chars().all(|c| c.is_ascii_digit()) => p.to_string(),
        Some(_) => {
            return Err(StoreError::Invalid(format!(
                "the PIN must be exactly {want} digits (access.totp_pin_digits)"
            )))
        }
        None => otp::random_digits(cfg.totp_pin_digits),
    };
    let secret = otp::random_bytes::<20>();
    let salt = otp::random_bytes::<16>();
    let hash = otp::hash_secret(&salt, &pin);
    let keypad_no = db.totp_enroll(user.id, &secret, &salt, &hash, now_ms)?;
    Ok(TotpEnrollment {
        user: user.name.clone(),
        keypad_no,
        pin,
        uri: otp::otpauth_uri(&secret, issuer, &user.name),
    })
}

/// A completed keypad entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Totp {
        keypad_no: u32,
        pin: String,
        code: String,
    },
    Code {
        slot: u32,
        code: String,
    },
    Malformed,
}

/// Parse `buf` (the keys before the final `#`).
pub fn parse_entry(buf: &str, cfg: &AccessConfig) -> Entry {
    let (code_mode, rest) = match buf.strip_prefix('*') {
        Some(r) => (true, r),
        None => (false, buf),
    };
    let Some((id, secret)) = rest.split_once('#') else {
        return Entry::Malformed;
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    if !digits(id) || !digits(secret) || id.len() > 3 {
        return Entry::Malformed;
    }
    let Ok(n) = id.parse::<u32>() else {
        return Entry::Malformed;
    };
    if code_mode {
        if !(1..=99).contains(&n) || secret.len() != cfg.otp_digits as usize {
            return Entry::Malformed;
        }
        Entry::Code {
            slot: n,
            code: secret.into(),
        }
    } else {
        let pin_len = cfg.totp_pin_digits as usize;
        if !(1..=999).contains(&n) || secret.len() != pin_len + otp::TOTP_DIGITS as usize {
            return Entry::Malformed;
        }
        Entry::Totp {
            keypad_no: n,
            pin: secret[..pin_len].into(),
            code: secret[pin_len..].into(),
        }
    }
}

/// The result of checking an entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// TOTP (with PIN) correct for this user; the step is now used.
    TotpOk { user: User, step: i64 },
    /// One-time code correct (and now used); `user` if it was bound to one.
    CodeOk { slot: u32, user: Option<User> },
    /// Wrong, with an internal reason for the audit log (never shown on the keypad).
    Wrong(&'static str),
}

/// Check an entry against the store, consuming the TOTP step or the code on success.
pub fn verify(db: &mut Db, entry: &Entry, now_ms: i64) -> Result<Verdict, StoreError> {
    match entry {
        Entry::Malformed => Ok(Verdict::Wrong("malformed")),
        Entry::Totp {
            keypad_no,
            pin,
            code,
        } => {
            let Some((user, t)) = db.totp_by_keypad_no(*keypad_no)? else {
                // Same work as a real check, so timing does not reveal unused numbers.
                let _ = otp::matches_hash(&[0u8; 16], pin, &[0u8; 32]);
                let _ = otp::verify_totp(&[0u8; 20], code, now_ms / 1000, i64::MAX);
                return Ok(Verdict::Wrong("unknown_keypad_number"));
            };
            let pin_ok = otp::matches_hash(&t.pin_salt, pin, &t.pin_hash);
            let step = otp::verify_totp(&t.secret, code, now_ms.div_euclid(1000), t.last_step);
            // Any-step match ignoring the replay guard, only to tell "replayed" apart.
            let any_step = otp::verify_totp(&t.secret, code, now_ms.div_euclid(1000), i64::MIN);
            match (pin_ok, step) {
                (true, Some(step)) => {
                    if db.totp_mark_step(user.id, step)? {
                        Ok(Verdict::TotpOk { user, step })
                    } else {
                        Ok(Verdict::Wrong("totp_replayed"))
                    }
                }
                (true, None) if any_step.is_some() => Ok(Verdict::Wrong("totp_replayed")),
                (false, _) => Ok(Verdict::Wrong("wrong_pin")),
                (true, None) => Ok(Verdict::Wrong("wrong_totp")),
            }
        }
        Entry::Code { slot, code } => {
            let mut hit = None;
            for row in db.codes_active(*slot, now_ms)? {
                if otp::matches_hash(&row.salt, code, &row.code_hash) && hit.is_none() {
                    hit = Some(row);
                }
            }
            let Some(row) = hit else {
                return Ok(Verdict::Wrong("wrong_code"));
            };
            if !db.code_use(row.id, now_ms)? {
                return Ok(Verdict::Wrong("code_already_used"));
            }
            let user = match row.user_id {
                Some(id) => db.user_by_id(id)?,
                None => None,
            };
            Ok(Verdict::CodeOk {
                slot: row.slot,
                user,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccessConfig {
        AccessConfig::default()
    }

    #[test]
    fn parses_both_formats_and_refuses_the_rest() {
        let c = cfg();
        assert_eq!(
            parse_entry("12#4821093714", &c),
            Entry::Totp {
                keypad_no: 12,
                pin: "4821".into(),
                code: "093714".into()
            }
        );
        assert_eq!(
            parse_entry("*7#48213907", &c),
            Entry::Code {
                slot: 7,
                code: "48213907".into()
            }
        );
        for bad in [
            "",
            "12",
            "12#",
            "#123",
            "12#12345",
            "*7#1234567",
            "*0#48213907",
            "*100#48213907",
            "1234#4821093714",
            "12#48210937145",
            "1a#4821093714",
            "*7#4821390x",
        ] {
            assert_eq!(parse_entry(bad, &c), Entry::Malformed, "{bad:?}");
        }
    }
}
