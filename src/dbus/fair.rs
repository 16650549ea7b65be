//! Fair shares of the daemon for D-Bus callers: at most [`MAX_IN_FLIGHT`] calls of one
//! connection are served at a time (the excess is answered `Busy` at once), so a caller
//! that pipelines thousands of calls, or 64 of them, cannot queue ahead of an admin's
//! call or slow the walk-up; and a connection's credentials are asked of the bus once,
//! not once per call. Both are per bus connection of the daemon (a new bus after a
//! reconnect starts empty: unique names are only unique within one bus).

use crate::api::Caller;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Calls of one connection served at a time.
pub const MAX_IN_FLIGHT: usize = 4;
/// Connections whose credentials are remembered (then the memory starts over).
const MAX_REMEMBERED: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Calls in flight per unique bus name, and the credentials of the names seen.
#[derive(Default)]
pub struct Fair {
    in_flight: Mutex<HashMap<String, usize>>,
    known: Mutex<HashMap<String, Caller>>,
}

/// One call's slot; freed when dropped.
pub struct Slot {
    fair: Arc<Fair>,
    sender: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = lock(&self.fair.in_flight);
        if let Some(n) = m.get_mut(&self.sender) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.sender);
            }
        }
    }
}

impl Fair {
    /// A slot for a call of `sender`, or None when it has [`MAX_IN_FLIGHT`] already.
    pub fn enter(self: &Arc<Self>, sender: &str) -> Option<Slot> {
        let mut m = lock(&self.in_flight);
        let n = m.entry(sender.to_string()).or_insert(0);
        if *n >= MAX_IN_FLIGHT {
            return None;
        }
        *n += 1;
        Some(Slot {
            fair: self.clone(),
            sender: sender.to_string(),
        })
    }

    /// The caller behind `sender` if already identified on this bus.
    pub fn known(&self, sender: &str) -> Option<Caller> {
        lock(&self.known).get(sender).cloned()
    }

    pub fn remember(&self, sender: &str, caller: &Caller) {
        let mut m = lock(&self.known);
        if m.len() >= MAX_REMEMBERED {
            m.clear();
        }
        m.insert(sender.to_string(), caller.clone());
    }

    /// `sender` left the bus: forget it (its name is never given again on this bus).
    pub fn forget(&self, sender: &str) {
        lock(&self.known).remove(sender);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_gets_its_own_few_slots() {
        let f = Arc::new(Fair::default());
        let mine: Vec<Slot> = (0..MAX_IN_FLIGHT)
            .map(|_| f.enter(":1.7").unwrap())
            .collect();
        assert!(
            f.enter(":1.7").is_none(),
            "a fifth call of the same connection"
        );
        // Another connection (an admin's) is not affected.
        let admin = f.enter(":1.8");
        assert!(admin.is_some());
        drop(mine);
        assert!(
            f.enter(":1.7").is_some(),
            "slots come back when the calls end"
        );
        drop(admin);
        assert!(
            lock(&f.in_flight).get(":1.8").is_none(),
            "nothing kept for idle names"
        );
    }

    #[test]
    fn credentials_are_remembered_per_name_and_forgotten_when_it_leaves() {
        let f = Fair::default();
        let c = Caller::local(1000, &[], Some(":1.9".into()));
        assert!(f.known(":1.9").is_none());
        f.remember(":1.9", &c);
        assert_eq!(f.known(":1.9").map(|k| k.id), Some(c.id.clone()));
        f.forget(":1.9");
        assert!(f.known(":1.9").is_none());
    }
}
