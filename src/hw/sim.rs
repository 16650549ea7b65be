//! Simulated devices for the demo, `lockerd-lab simulate` and tests. Their state is shared
//! through `Arc`s so a test or the simulator can observe (and, for the door, drive) it.

use super::{Display, DoorSensor, HwError, Indicator, Keypad, LockActuator, Signal};
use crate::safety;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Observable state of a simulated lock.
#[derive(Debug, Default)]
pub struct SimLockState {
    unlocked: AtomicBool,
    unlock_count: AtomicU64,
    /// Set to make every write fail (fail-closed tests).
    pub fail: AtomicBool,
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
        if self.state.fail.load(Ordering::SeqCst) {
            return Err(HwError::Gpio("simulated relay failure".into()));
        }
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

/// A door the simulator opens and closes.
#[derive(Clone, Default)]
pub struct SimDoor(pub Arc<AtomicBool>);

impl DoorSensor for SimDoor {
    fn is_open(&mut self) -> Result<bool, HwError> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

/// A display that remembers what it shows.
#[derive(Clone, Default)]
pub struct SimDisplay(pub Arc<Mutex<(String, String)>>);

impl Display for SimDisplay {
    fn show(&mut self, l1: &str, l2: &str) -> Result<(), HwError> {
        if let Ok(mut g) = self.0.lock() {
            *g = (super::lcd_text(l1), super::lcd_text(l2));
        }
        Ok(())
    }
}

/// An indicator that remembers the last signal.
#[derive(Clone)]
pub struct SimIndicator(pub Arc<Mutex<Signal>>);

impl Default for SimIndicator {
    fn default() -> Self {
        Self(Arc::new(Mutex::new(Signal::Off)))
    }
}

impl Indicator for SimIndicator {
    fn signal(&mut self, s: Signal) -> Result<(), HwError> {
        if let Ok(mut g) = self.0.lock() {
            *g = s;
        }
        Ok(())
    }
}

/// A keypad typed through a named pipe (simulated hardware only: the demo and
/// tests type codes into a running daemon with `printf '*1#12345678#' > FIFO`). The pipe
/// is created owner-only; keys other than 0-9 A-D * # are ignored.
pub struct FifoKeypad {
    file: std::fs::File,
    pending: std::collections::VecDeque<char>,
}

impl FifoKeypad {
    pub fn open(path: &std::path::Path) -> Result<FifoKeypad, HwError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let err = |e: std::io::Error| HwError::Unavailable(format!("{}: {e}", path.display()));
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_fifo() => {}
            Ok(_) => {
                return Err(HwError::Unavailable(format!(
                    "{}: exists and is not a named pipe",
                    path.display()
                )))
            }
            Err(_) => {
                let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                    .map_err(|_| HwError::Unavailable("bad keypad pipe path".into()))?;
                // SAFETY: mkfifo with a valid C string.
                if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                    return Err(err(std::io::Error::last_os_error()));
                }
            }
        }
        // Read-write so the pipe never reports end-of-file between writers.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(err)?;
        Ok(FifoKeypad {
            file,
            pending: Default::default(),
        })
    }
}

impl Keypad for FifoKeypad {
    fn scan(&mut self) -> Result<Option<char>, HwError> {
        use std::io::Read;
        if self.pending.is_empty() {
            let mut buf = [0u8; 64];
            match self.file.read(&mut buf) {
                Ok(n) => self.pending.extend(
                    buf[..n]
                        .iter()
                        .map(|b| *b as char)
                        .filter(|c| "0123456789ABCD*#".contains(*c)),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(HwError::Unavailable(format!("keypad pipe: {e}"))),
            }
        }
        Ok(self.pending.pop_front())
    }
}

/// All simulated devices plus the handles to observe and drive them.
pub struct SimKit {
    pub lock: Arc<SimLockState>,
    pub door: SimDoor,
    pub display: SimDisplay,
    pub indicator: SimIndicator,
}

pub fn devices() -> (super::Devices, SimKit) {
    let lock = SimLock::new();
    let kit = SimKit {
        lock: lock.state(),
        door: SimDoor::default(),
        display: SimDisplay::default(),
        indicator: SimIndicator::default(),
    };
    (
        super::Devices {
            lock: Box::new(lock),
            display: Box::new(kit.display.clone()),
            indicator: Box::new(kit.indicator.clone()),
        },
        kit,
    )
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

#[cfg(test)]
mod fifo_tests {
    use super::*;

    #[test]
    fn fifo_keypad_reads_keys_and_ignores_others() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("keys");
        let mut k = FifoKeypad::open(&p).unwrap();
        assert_eq!(k.scan().unwrap(), None);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"*1#x9\n"))
            .unwrap();
        let got: Vec<char> = std::iter::from_fn(|| k.scan().unwrap()).collect();
        assert_eq!(got, vec!['*', '1', '#', '9']);
        let plain = d.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(FifoKeypad::open(&plain).is_err());
    }
}
