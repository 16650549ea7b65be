//! Store operations for keypad credentials: per-user TOTP secrets with a keypad number
//! and a salted PIN hash, admin-issued one-time codes (salted hashes, expiry, single use),
//! and the persisted keypad lockout state.

use super::{Db, StoreError};
use crate::types::{User, UserId};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

/// A user's TOTP material.
pub struct TotpRow {
    pub secret: Vec<u8>,
    pub pin_salt: Vec<u8>,
    pub pin_hash: Vec<u8>,
    pub last_step: i64,
}

/// An active one-time code (only its salted hash is stored).
pub struct CodeRow {
    pub id: i64,
    pub slot: u32,
    pub user_id: Option<UserId>,
    pub salt: Vec<u8>,
    pub code_hash: Vec<u8>,
    pub expires_ms: i64,
}

/// Keypad lockout, persisted so a restart does not reset it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockoutState {
    /// Wrong entries since the last lockout or admin reset.
    pub strikes: u32,
    /// Lockouts since the last admin reset (sets the next lockout's length).
    pub level: u32,
    /// Locked until this wall-clock time (ms since the epoch); 0 = not locked.
    pub until_ms: i64,
}

const LOCKOUT_KEY: &str = "keypad.lockout";

impl Db {
    /// Store (or replace) a user's TOTP secret and PIN hash; give them a keypad number
    /// (the smallest free one) if they have none. Returns the keypad number.
    pub fn totp_enroll(
        &mut self,
        user_id: UserId,
        secret: &[u8],
        pin_salt: &[u8],
        pin_hash: &[u8],
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        self.atomically(|db| {
            Self::totp_enroll_in(db.conn(), user_id, secret, pin_salt, pin_hash, now_ms)
        })
    }

    fn totp_enroll_in(
        tx: &rusqlite::Connection,
        user_id: UserId,
        secret: &[u8],
        pin_salt: &[u8],
        pin_hash: &[u8],
        now_ms: i64,
    ) -> Result<u32, StoreError> {
        let existing: Option<Option<u32>> = tx
            .query_row(
                "SELECT keypad_no FROM users WHERE id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(existing) = existing else {
            return Err(StoreError::NotFound(format!("no user with id {user_id}")));
        };
        let no = match existing {
            Some(n) => n,
            None => {
                let used: Vec<u32> = {
                    let mut st =
                        tx.prepare("SELECT keypad_no FROM users WHERE keypad_no IS NOT NULL")?;
                    let v = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                    v
                };
                let n = (1..=999u32).find(|n| !used.contains(n)).ok_or_else(|| {
                    StoreError::Conflict("all 999 keypad numbers are in use".into())
                })?;
                tx.execute(
                    "UPDATE users SET keypad_no = ?1 WHERE id = ?2",
                    params![n, user_id],
                )?;
                n
            }
        };
        tx.execute(
            "INSERT INTO totp_secrets (user_id, secret, pin_salt, pin_hash, last_step, created_ms)
             VALUES (?1, ?2, ?3, ?4, -1, ?5)
             ON CONFLICT(user_id) DO UPDATE SET secret = excluded.secret, pin_salt = excluded.pin_salt,
               pin_hash = excluded.pin_hash, last_step = -1, created_ms = excluded.created_ms",
            params![user_id, secret, pin_salt, pin_hash, now_ms],
        )?;
        Ok(no)
    }

    /// The user holding a keypad number, with their TOTP material.
    pub fn totp_by_keypad_no(&self, no: u32) -> Result<Option<(User, TotpRow)>, StoreError> {
        let row = self
            .conn()
            .query_row(
                "SELECT u.name, t.secret, t.pin_salt, t.pin_hash, t.last_step
                 FROM users u JOIN totp_secrets t ON t.user_id = u.id WHERE u.keypad_no = ?1",
                [no],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        TotpRow {
                            secret: r.get(1)?,
                            pin_salt: r.get(2)?,
                            pin_hash: r.get(3)?,
                            last_step: r.get(4)?,
                        },
                    ))
                },
            )
            .optional()?;
        match row {
            Some((name, t)) => Ok(self.user_by_name(&name)?.map(|u| (u, t))),
            None => Ok(None),
        }
    }

    /// Record that `step` was used; false if it (or a later one) already was (replay).
    pub fn totp_mark_step(&mut self, user_id: UserId, step: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE totp_secrets SET last_step = ?1 WHERE user_id = ?2 AND last_step < ?1",
            params![step, user_id],
        )?;
        Ok(n == 1)
    }

    pub fn keypad_no(&self, user_id: UserId) -> Result<Option<u32>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT keypad_no FROM users WHERE id = ?1",
                [user_id],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// A slot (1-99) not used by any unexpired, unused code.
    pub fn code_free_slot(&self, now_ms: i64) -> Result<u32, StoreError> {
        let mut st = self
            .conn()
            .prepare("SELECT slot FROM one_time_codes WHERE used_ms IS NULL AND expires_ms > ?1")?;
        let used: Vec<u32> = st
            .query_map([now_ms], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        (1..=99u32)
            .find(|s| !used.contains(s))
            .ok_or_else(|| StoreError::Conflict("99 one-time codes are already active".into()))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn code_insert(
        &mut self,
        slot: u32,
        user_id: Option<UserId>,
        salt: &[u8],
        code_hash: &[u8],
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<i64, StoreError> {
        // Expired and used codes are removed here: nothing old lingers.
        self.conn().execute(
            "DELETE FROM one_time_codes WHERE expires_ms <= ?1 OR used_ms IS NOT NULL",
            [now_ms],
        )?;
        self.conn().execute(
            "INSERT INTO one_time_codes (slot, user_id, salt, code_hash, created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![slot, user_id, salt, code_hash, now_ms, expires_ms],
        )?;
        Ok(self.conn().last_insert_rowid())
    }

    /// Unused, unexpired codes in a slot. A code issued "in the future" (the wall clock
    /// has gone back more than a minute since) is not active until the clock is there
    /// again: a clock set back never stretches a code's life.
    pub fn codes_active(&self, slot: u32, now_ms: i64) -> Result<Vec<CodeRow>, StoreError> {
        let mut st = self.conn().prepare(
            "SELECT id, slot, user_id, salt, code_hash, expires_ms FROM one_time_codes
             WHERE slot = ?1 AND used_ms IS NULL AND expires_ms > ?2 AND created_ms <= ?3",
        )?;
        let rows = st.query_map(params![slot, now_ms, now_ms.saturating_add(60_000)], |r| {
            Ok(CodeRow {
                id: r.get(0)?,
                slot: r.get(1)?,
                user_id: r.get(2)?,
                salt: r.get(3)?,
                code_hash: r.get(4)?,
                expires_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revoke the live code(s) in a slot; returns how many.
    pub fn code_revoke_slot(&mut self, slot: u32, now_ms: i64) -> Result<usize, StoreError> {
        Ok(self.conn().execute(
            "UPDATE one_time_codes SET used_ms = ?2 WHERE slot = ?1 AND used_ms IS NULL AND expires_ms > ?2",
            params![slot, now_ms],
        )?)
    }

    /// Use a code once: false if it was used (or expired) in the meantime.
    pub fn code_use(&mut self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let n = self.conn().execute(
            "UPDATE one_time_codes SET used_ms = ?2 WHERE id = ?1 AND used_ms IS NULL AND expires_ms > ?2",
            params![id, now_ms],
        )?;
        Ok(n == 1)
    }

    pub fn lockout_load(&self) -> Result<LockoutState, StoreError> {
        match self.setting(LOCKOUT_KEY)? {
            None => Ok(LockoutState::default()),
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| StoreError::Corrupt(format!("keypad lockout state: {e}"))),
        }
    }

    pub fn lockout_save(&mut self, s: &LockoutState) -> Result<(), StoreError> {
        let text = serde_json::to_string(s).map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.set_setting(LOCKOUT_KEY, &text)
    }
}

/// Most remembered MQTT nonces: beyond this the oldest are forgotten first (a valid admin
/// key would have to send this many commands within [`NONCE_RETAIN_S`]).
pub const MAX_NONCES: i64 = 100_000;
/// How long a nonce is remembered, by the command's own time: far longer than the skew
/// window, so that a clock set back (an RTC-less boot, `date -s`) cannot bring a command
/// back unless it is set back by more than this, to the very second.
pub const NONCE_RETAIN_S: i64 = 30 * 86_400;

impl Db {
    /// Record a signed command's nonce (replay guard): false only if this key used this
    /// nonce before. The caller has checked the command's time against the clock (the skew
    /// window); no high-water mark of the clock is kept, so a clock that once ran ahead
    /// does not turn fresh commands away. Nonces are forgotten after [`NONCE_RETAIN_S`]
    /// by the current clock, or oldest first beyond [`MAX_NONCES`]. `_window_s` is the skew
    /// window (kept for the signature of the guard).
    pub fn mqtt_nonce_record(
        &mut self,
        key_id: &str,
        nonce: &[u8],
        ts: i64,
        now_s: i64,
        _window_s: i64,
    ) -> Result<bool, StoreError> {
        self.atomically(|db| {
            db.conn().execute(
                "DELETE FROM mqtt_nonces WHERE ts < ?1",
                [now_s.saturating_sub(NONCE_RETAIN_S)],
            )?;
            let added = db.conn().execute(
                "INSERT OR IGNORE INTO mqtt_nonces (key_id, nonce, ts) VALUES (?1, ?2, ?3)",
                params![key_id, nonce, ts],
            )?;
            let n: i64 = db
                .conn()
                .query_row("SELECT count(*) FROM mqtt_nonces", [], |r| r.get(0))?;
            if n > MAX_NONCES {
                db.conn().execute(
                    "DELETE FROM mqtt_nonces WHERE rowid IN
                     (SELECT rowid FROM mqtt_nonces ORDER BY ts LIMIT ?1)",
                    [n - MAX_NONCES],
                )?;
            }
            Ok(added == 1)
        })
    }
}
