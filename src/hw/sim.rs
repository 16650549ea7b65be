//! Simulated devices for the demo, `lockerd simulate` and tests. Their state is shared
//! through `Arc`s so a test or the simulator can observe what the controller did.

use super::{HwError, LockActuator};
use crate::safety;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Observable state of a simulated lock.
#[derive(Debug, Default)]
pub struct SimLockState {
    unlocked: AtomicBool,
    unlock_count: AtomicU64,
}

impl SimLockState {
    pub fn is_locked(&self) -> bool {
        !self.unlocked.load(Ordering::SeqCst)
    }
    pub fn unlock_count(&self) -> u64 {
        self.unlock_count.load(Ordering::SeqCst)
    }
}

pub struct SimLock {
    state: Arc<SimLockState>,
    _emergency: safety::Registration,
}

impl SimLock {
    pub fn new() -> Self {
        let state = Arc::new(SimLockState::default());
        let s = state.clone();
        let reg =
            safety::register_emergency_lock(move || s.unlocked.store(false, Ordering::SeqCst));
        Self {
            state,
            _emergency: reg,
        }
    }

    pub fn state(&self) -> Arc<SimLockState> {
        self.state.clone()
    }
}

impl Default for SimLock {
    fn default() -> Self {
        Self::new()
    }
}

impl LockActuator for SimLock {
    fn set_locked(&mut self, locked: bool) -> Result<(), HwError> {
        let was_unlocked = self.state.unlocked.swap(!locked, Ordering::SeqCst);
        if !locked && !was_unlocked {
            self.state.unlock_count.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn is_locked(&self) -> bool {
        self.state.is_locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emergency_lock_relocks_a_sim_lock() {
        let mut l = SimLock::new();
        l.set_locked(false).unwrap();
        assert!(!l.is_locked());
        assert_eq!(l.state().unlock_count(), 1);
        safety::emergency_lock_all();
        assert!(l.is_locked());
    }
}
