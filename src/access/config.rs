//! `[access]` of the configuration file: the access policy. The `config` module reads
//! and validates the whole file and re-exports this type.

use serde::{Deserialize, Serialize};

/// Access policy: unlock pulse, door alarms, keypad codes and lockouts, face rate limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    pub unlock_pulse_s: f64,
    pub door_held_open_s: f64,
    pub door_grace_s: f64,
    pub keypad_max_strikes: u32,
    pub keypad_lockout_s: u64,
    pub keypad_lockout_factor: u32,
    pub keypad_entry_timeout_s: f64,
    pub otp_digits: u32,
    pub otp_default_ttl_s: u64,
    pub otp_max_ttl_s: u64,
    pub totp_pin_digits: u32,
    pub face_fail_limit: u32,
    pub face_fail_window_s: f64,
    pub face_cooldown_s: f64,
}

impl AccessConfig {
    /// The keypad guesser's yearly budget and the chance it buys: (guesses a year,
    /// bound for a one-time code, bound for TOTP with PIN). A TOTP guess is right with
    /// 3 in 10^6 (one step of drift each way) times 1 in 10^pin_digits.
    pub fn guessing_budget(&self) -> (u64, f64, f64) {
        use super::lockout::{success_bound, LockoutPolicy};
        let g = LockoutPolicy {
            max_strikes: self.keypad_max_strikes,
            base_s: self.keypad_lockout_s,
            factor: self.keypad_lockout_factor,
        }
        .guesses_per_year();
        let p_code = success_bound(g, 10f64.powi(-(self.otp_digits as i32)));
        let p_totp = success_bound(g, 3e-6 * 10f64.powi(-(self.totp_pin_digits as i32)));
        (g, p_code, p_totp)
    }
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            unlock_pulse_s: 5.0,
            door_held_open_s: 30.0,
            door_grace_s: 10.0,
            keypad_max_strikes: 3,
            keypad_lockout_s: 120,
            keypad_lockout_factor: 2,
            keypad_entry_timeout_s: 10.0,
            otp_digits: 8,
            otp_default_ttl_s: 3600,
            otp_max_ttl_s: 7 * 86400,
            totp_pin_digits: 4,
            face_fail_limit: 5,
            face_fail_window_s: 60.0,
            face_cooldown_s: 30.0,
        }
    }
}
