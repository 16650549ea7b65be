//! Kiosk hardware behind small, fallible traits.
//!
//! Devices: [`Keypad`] (4x4 matrix), [`LockActuator`] (relay), [`DoorSensor`] (reed
//! switch), [`Display`] (16x2 HD44780 on a PCF8574 I2C backpack) and [`Indicator`] (LEDs and
//! buzzer). Each has a real driver written against the tiny pin/bus traits below
//! ([`OutputPin`], [`InputPin`], [`I2cBus`]), so the drivers are unit-tested against
//! expectation mocks ([`mock`]); [`rpi`] adapts rppal's pins to those traits, and [`sim`]
//! has simulators for the demo, `lockerd-lab simulate` and tests. The access controller owns
//! the devices; nothing else touches them. Locked is the safe state: lock drivers register
//! an emergency lock with [`crate::safety`] so a panic anywhere leaves the door locked.

pub mod config;
pub mod door;
pub mod esp32;
pub mod indicator;
pub mod keypad;
pub mod lcd;
pub mod lock;
pub mod mock;
pub mod rpi;
pub mod sim;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HwError {
    #[error("GPIO: {0}")]
    Gpio(String),
    #[error("I2C: {0}")]
    I2c(String),
    #[error("{0}")]
    Unavailable(String),
}

/// One digital output.
pub trait OutputPin: Send {
    fn set(&mut self, high: bool) -> Result<(), HwError>;
}

/// One digital input.
pub trait InputPin: Send {
    fn is_high(&mut self) -> Result<bool, HwError>;
}

/// Writes to an I2C device.
pub trait I2cBus: Send {
    fn write(&mut self, addr: u8, bytes: &[u8]) -> Result<(), HwError>;
}

/// A key matrix. Each call scans once; a key is returned once per debounced press.
pub trait Keypad: Send {
    fn scan(&mut self) -> Result<Option<char>, HwError>;
}

/// The lock (relay, or a remote lock). `true` means locked, the safe state.
pub trait LockActuator: Send {
    fn set_locked(&mut self, locked: bool) -> Result<(), HwError>;
    fn is_locked(&self) -> bool;
    /// What the lock itself last said, for a lock that reports (ESP32): `None` when it
    /// is not heard from (unavailable), `Some(jammed)` otherwise. A relay always answers.
    fn health(&self) -> Option<bool> {
        Some(false)
    }
}

/// The door contact. `Ok(true)` when open.
pub trait DoorSensor: Send {
    fn is_open(&mut self) -> Result<bool, HwError>;
}

/// Two lines of text.
pub trait Display: Send {
    fn show(&mut self, line1: &str, line2: &str) -> Result<(), HwError>;
}

/// LEDs and buzzer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Off,
    Granted,
    Denied,
    Locked,
    Key,
}

pub trait Indicator: Send {
    fn signal(&mut self, s: Signal) -> Result<(), HwError>;
}

/// The outputs the controller drives.
pub struct Devices {
    pub lock: Box<dyn LockActuator>,
    pub display: Box<dyn Display>,
    pub indicator: Box<dyn Indicator>,
}

/// The inputs an input thread polls (keys and door changes become controller inputs).
pub struct InputDevices {
    pub keypad: Box<dyn Keypad>,
    pub door: Box<dyn DoorSensor>,
}

/// Display text limited to what an HD44780 can show: ASCII, at most 16 columns.
pub fn lcd_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .take(16)
        .collect()
}
