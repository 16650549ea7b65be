//! Kiosk hardware behind small, fallible traits.
//!
//! Each device is a trait with a real implementation and a simulator (`sim`). The access
//! controller owns the devices; nothing else touches them. Locking is the safe state:
//! every lock driver registers an emergency lock with [`crate::safety`] so a panic
//! anywhere leaves the door locked.

pub mod sim;

#[derive(Debug, thiserror::Error)]
pub enum HwError {
    #[error("GPIO: {0}")]
    Gpio(String),
    #[error("I2C: {0}")]
    I2c(String),
    #[error("{0}")]
    Unavailable(String),
}

/// The lock (relay, or a remote lock). `true` means locked, the safe state.
pub trait LockActuator: Send {
    fn set_locked(&mut self, locked: bool) -> Result<(), HwError>;
    fn is_locked(&self) -> bool;
}
