//! Keypad lockout policy (RFC 4226 §7.3 style throttling): after `max_strikes` wrong
//! entries the keypad locks for `base_s`; each further lockout lasts `factor` times
//! longer, until an admin resets it. Strikes are cleared only by a lockout or an admin
//! reset, never by a correct entry, so an attacker cannot use genuine users' successes to
//! get extra guesses. The state is persisted (store) so a restart does not reset it.
//!
//! [`LockoutPolicy::guesses_per_year`] is the attacker's budget behind the README's
//! "chance to get in within a year" arithmetic.

use crate::store::LockoutState;

/// Ten years: the longest a single lockout can last (keeps the arithmetic finite).
const MAX_LOCKOUT_MS: i64 = 10 * 365 * 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LockoutPolicy {
    pub max_strikes: u32,
    pub base_s: u64,
    pub factor: u32,
}

impl LockoutPolicy {
    /// Length of lockout number `level` (1 = the first).
    pub fn duration_ms(&self, level: u32) -> i64 {
        let mut ms = (self.base_s as i64).saturating_mul(1000);
        for _ in 1..level.max(1) {
            ms = ms.saturating_mul(self.factor as i64);
            if ms >= MAX_LOCKOUT_MS {
                return MAX_LOCKOUT_MS;
            }
        }
        ms.min(MAX_LOCKOUT_MS)
    }

    pub fn is_locked(&self, s: &LockoutState, now_ms: i64) -> bool {
        now_ms < s.until_ms
    }

    /// Count a wrong entry. Returns the new lockout end when this one locks the keypad.
    pub fn wrong(&self, s: &mut LockoutState, now_ms: i64) -> Option<i64> {
        s.strikes += 1;
        if s.strikes < self.max_strikes {
            return None;
        }
        s.strikes = 0;
        s.level = s.level.saturating_add(1);
        s.until_ms = now_ms.saturating_add(self.duration_ms(s.level));
        Some(s.until_ms)
    }

    pub fn reset(&self, s: &mut LockoutState) {
        *s = LockoutState::default();
    }

    /// Most wrong entries an attacker alone at the keypad can make in `seconds`, typing
    /// instantly and waiting out every lockout, with no admin reset.
    pub fn guesses_in(&self, seconds: u64) -> u64 {
        let budget = seconds as i64 * 1000;
        let mut spent = 0i64;
        let mut guesses = 0u64;
        let mut lockout = self.duration_ms(1);
        loop {
            guesses += self.max_strikes as u64;
            spent = spent.saturating_add(lockout);
            if spent > budget {
                return guesses;
            }
            lockout = lockout
                .saturating_mul(self.factor as i64)
                .min(MAX_LOCKOUT_MS);
        }
    }

    pub fn guesses_per_year(&self) -> u64 {
        self.guesses_in(365 * 86_400)
    }
}

/// Upper bound on the chance of at least one success in `guesses` tries at `p` each.
pub fn success_bound(guesses: u64, p: f64) -> f64 {
    (guesses as f64 * p).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: LockoutPolicy = LockoutPolicy {
        max_strikes: 3,
        base_s: 120,
        factor: 2,
    };

    #[test]
    fn three_strikes_lock_for_two_minutes_then_four_then_eight() {
        let mut s = LockoutState::default();
        assert_eq!(P.wrong(&mut s, 0), None);
        assert_eq!(P.wrong(&mut s, 0), None);
        assert_eq!(P.wrong(&mut s, 1000), Some(121_000));
        assert!(P.is_locked(&s, 120_999));
        assert!(!P.is_locked(&s, 121_000));
        for _ in 0..2 {
            P.wrong(&mut s, 200_000);
        }
        assert_eq!(P.wrong(&mut s, 200_000), Some(200_000 + 240_000));
        for _ in 0..2 {
            P.wrong(&mut s, 500_000);
        }
        assert_eq!(P.wrong(&mut s, 500_000), Some(500_000 + 480_000));
        assert_eq!(s.level, 3);
        P.reset(&mut s);
        assert_eq!(s, LockoutState::default());
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(P.duration_ms(1), 120_000);
        assert_eq!(P.duration_ms(20), 120_000 << 19);
        assert_eq!(P.duration_ms(30), MAX_LOCKOUT_MS);
        assert_eq!(P.duration_ms(u32::MAX), MAX_LOCKOUT_MS);
        let flat = LockoutPolicy { factor: 1, ..P };
        assert_eq!(flat.duration_ms(50), 120_000);
    }

    #[test]
    fn yearly_guess_budget() {
        // 2 min doubling: lockouts 1..18 fit in a year (2 min x (2^18 - 1) = 364 days),
        // so 19 rounds of 3 entries.
        assert_eq!(P.guesses_per_year(), 57);
        // Without growth an attacker gets 3 every 2 minutes.
        let flat = LockoutPolicy { factor: 1, ..P };
        assert_eq!(flat.guesses_per_year(), 3 * 262_800 + 3);
        assert!(success_bound(57, 1e-8) < 1e-6);
        assert!(success_bound(57, 3e-6) > 1e-6);
    }
}
