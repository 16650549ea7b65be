//! The ESP32 lock as the controller's [`LockActuator`]: a handle on the lock link task
//! (`crate::mqtt::lock`), which owns the protocol end, its counters and the lock's MQTT
//! topics. An unlock waits, on the controller's own thread, for the link's answer: the
//! lock acknowledged it, or did not after the retries, and then the grant fails closed.
//! Locking is sent without waiting: the lock ends every pulse by itself and locks when
//! its link drops, so the safe state never depends on that message arriving.

use super::{HwError, LockActuator};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the actuator asks of the link task.
#[derive(Debug)]
pub enum LinkRequest {
    /// Open for `pulse_ms`; the answer comes on `reply` (`Err` says why not).
    Unlock {
        pulse_ms: u32,
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Lock now (no answer).
    Lock,
}

/// What the link task last learned of the lock, read by the actuator.
#[derive(Debug, Default)]
pub struct LinkHealth {
    available: AtomicBool,
    jammed: AtomicBool,
}

impl LinkHealth {
    pub fn set(&self, available: bool, jammed: bool) {
        self.available.store(available, Ordering::SeqCst);
        self.jammed.store(jammed, Ordering::SeqCst);
    }

    pub fn available(&self) -> bool {
        self.available.load(Ordering::SeqCst)
    }

    pub fn jammed(&self) -> bool {
        self.jammed.load(Ordering::SeqCst)
    }
}

pub struct Esp32Lock {
    tx: mpsc::Sender<LinkRequest>,
    health: Arc<LinkHealth>,
    pulse_ms: u32,
    /// The longest an unlock waits for the link (all its tries and a margin).
    wait: Duration,
    locked: bool,
}

impl Esp32Lock {
    pub fn new(
        tx: mpsc::Sender<LinkRequest>,
        health: Arc<LinkHealth>,
        pulse_ms: u32,
        wait: Duration,
    ) -> Esp32Lock {
        Esp32Lock {
            tx,
            health,
            pulse_ms,
            wait,
            locked: true,
        }
    }
}

impl LockActuator for Esp32Lock {
    fn set_locked(&mut self, locked: bool) -> Result<(), HwError> {
        if locked {
            // Best effort: the lock relocks by itself at the end of the pulse.
            let _ = self.tx.try_send(LinkRequest::Lock);
            self.locked = true;
            return Ok(());
        }
        if !self.health.available() {
            return Err(HwError::Unavailable(
                "the ESP32 lock is not reporting".into(),
            ));
        }
        let (reply, answer) = std::sync::mpsc::channel();
        let req = LinkRequest::Unlock {
            pulse_ms: self.pulse_ms,
            reply,
        };
        self.tx
            .try_send(req)
            .map_err(|_| HwError::Unavailable("the ESP32 lock link is not running".into()))?;
        match answer.recv_timeout(self.wait) {
            Ok(Ok(())) => {
                self.locked = false;
                Ok(())
            }
            Ok(Err(why)) => Err(HwError::Unavailable(why)),
            Err(_) => Err(HwError::Unavailable(
                "no answer from the ESP32 lock link".into(),
            )),
        }
    }

    fn is_locked(&self) -> bool {
        self.locked
    }

    fn health(&self) -> Option<bool> {
        self.health.available().then(|| self.health.jammed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(health: &Arc<LinkHealth>) -> (Esp32Lock, mpsc::Receiver<LinkRequest>) {
        let (tx, rx) = mpsc::channel(4);
        let l = Esp32Lock::new(tx, health.clone(), 3000, Duration::from_millis(300));
        (l, rx)
    }

    #[test]
    fn an_unlock_opens_only_when_the_link_says_the_lock_acknowledged() {
        let health = Arc::new(LinkHealth::default());
        let (mut l, mut rx) = lock(&health);
        // Not reporting: refused at once, nothing sent.
        assert!(l.set_locked(false).is_err());
        assert!(rx.try_recv().is_err());
        assert_eq!(l.health(), None);
        health.set(true, false);
        let link = std::thread::spawn(move || {
            let mut answers = vec![Ok(()), Err("not acknowledged after 3 tries".to_string())];
            while let Some(req) = rx.blocking_recv() {
                if let LinkRequest::Unlock { pulse_ms, reply } = req {
                    assert_eq!(pulse_ms, 3000);
                    let _ = reply.send(answers.remove(0));
                }
                if answers.is_empty() {
                    break;
                }
            }
        });
        l.set_locked(false).unwrap();
        assert!(!l.is_locked());
        l.set_locked(true).unwrap();
        assert!(l.is_locked());
        let e = l.set_locked(false).unwrap_err();
        assert!(e.to_string().contains("not acknowledged"), "{e}");
        assert!(l.is_locked(), "a refused unlock leaves it locked");
        link.join().unwrap();
        // The link task is gone: no answer, still locked.
        assert!(l.set_locked(false).is_err());
        assert!(l.is_locked());
        health.set(true, true);
        assert_eq!(l.health(), Some(true));
    }
}
