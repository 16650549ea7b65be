//! The lock relay on one GPIO pin. `active_high` is the relay board's polarity;
//! `fail_secure` (the default, electric strikes and bolts) means the lock is locked when
//! unpowered, so the relay is energised only to unlock. A fail-safe lock (a maglock, locked
//! while powered) is the reverse. The pin is shared with an emergency-lock closure in
//! [`crate::safety`], so a panic anywhere drives it to the locked level.

use super::{HwError, LockActuator, OutputPin};
use crate::safety;
use std::sync::{Arc, Mutex};

pub struct RelayLock<O: OutputPin + 'static> {
    pin: Arc<Mutex<O>>,
    locked_level: bool,
    locked: bool,
    _emergency: safety::Registration,
}

impl<O: OutputPin + 'static> RelayLock<O> {
    /// Takes the pin and drives it to the locked level at once.
    pub fn new(pin: O, active_high: bool, fail_secure: bool) -> Result<Self, HwError> {
        // Energised = active level. Fail-secure: energise to unlock.
        let locked_level = if fail_secure {
            !active_high
        } else {
            active_high
        };
        let pin = Arc::new(Mutex::new(pin));
        let p = pin.clone();
        let reg = safety::register_emergency_lock(move || {
            if let Ok(mut g) = p.try_lock() {
                let _ = g.set(locked_level);
            }
        });
        let mut lock = Self {
            pin,
            locked_level,
            locked: false,
            _emergency: reg,
        };
        lock.set_locked(true)?;
        Ok(lock)
    }
}

impl<O: OutputPin + 'static> LockActuator for RelayLock<O> {
    fn set_locked(&mut self, locked: bool) -> Result<(), HwError> {
        let level = if locked {
            self.locked_level
        } else {
            !self.locked_level
        };
        let mut g = self
            .pin
            .lock()
            .map_err(|_| HwError::Gpio("lock pin mutex poisoned".into()))?;
        match g.set(level) {
            Ok(()) => {
                self.locked = locked;
                Ok(())
            }
            Err(e) => {
                // Unknown state: report locked only if we meant to lock and the write
                // failed (the caller treats any error as "fail closed").
                Err(e)
            }
        }
    }

    fn is_locked(&self) -> bool {
        self.locked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::{Log, MockOut};

    #[test]
    fn fail_secure_active_low_board_locks_high_and_unlocks_low() {
        let log = Log::default();
        let mut l = RelayLock::new(MockOut::new("relay", &log), false, true).unwrap();
        assert_eq!(
            log.take(),
            ["relay=1"],
            "locked at construction (relay off)"
        );
        l.set_locked(false).unwrap();
        l.set_locked(true).unwrap();
        assert_eq!(log.take(), ["relay=0", "relay=1"]);
        assert!(l.is_locked());
    }

    #[test]
    fn fail_safe_maglock_is_energised_to_lock() {
        let log = Log::default();
        let mut l = RelayLock::new(MockOut::new("relay", &log), true, false).unwrap();
        assert_eq!(log.take(), ["relay=1"]);
        l.set_locked(false).unwrap();
        assert_eq!(log.take(), ["relay=0"]);
    }

    #[test]
    fn emergency_lock_drives_the_locked_level() {
        let log = Log::default();
        let mut l = RelayLock::new(MockOut::new("relay", &log), true, true).unwrap();
        l.set_locked(false).unwrap();
        log.take();
        safety::emergency_lock_all();
        assert!(log.take().contains(&"relay=0".to_string()));
    }

    #[test]
    fn a_failing_pin_is_an_error_not_a_silent_unlock() {
        let log = Log::default();
        let mut pin = MockOut::new("relay", &log);
        pin.fail_after = Some(1);
        let mut l = RelayLock::new(pin, true, true).unwrap();
        assert!(l.set_locked(false).is_err());
        assert!(l.is_locked(), "state unchanged after a failed write");
    }
}
