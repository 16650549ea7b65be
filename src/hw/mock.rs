//! Expectation mocks for the pin and bus traits: they record every call, replay scripted
//! input levels, and can be told to fail, so drivers are tested without hardware.

use super::{HwError, I2cBus, InputPin, OutputPin};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Shared record of everything the mocks saw, in order.
#[derive(Debug, Default, Clone)]
pub struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    pub fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    pub fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

/// An output pin that logs `name=0/1`; `fail_after` makes the n-th write fail.
pub struct MockOut {
    pub name: String,
    pub log: Log,
    pub level: Arc<Mutex<Option<bool>>>,
    pub fail_after: Option<usize>,
    writes: usize,
}

impl MockOut {
    pub fn new(name: &str, log: &Log) -> Self {
        Self {
            name: name.into(),
            log: log.clone(),
            level: Arc::new(Mutex::new(None)),
            fail_after: None,
            writes: 0,
        }
    }
}

impl OutputPin for MockOut {
    fn set(&mut self, high: bool) -> Result<(), HwError> {
        self.writes += 1;
        if self.fail_after.is_some_and(|n| self.writes > n) {
            return Err(HwError::Gpio(format!("{}: injected failure", self.name)));
        }
        if let Ok(mut l) = self.level.lock() {
            *l = Some(high);
        }
        self.log.push(format!("{}={}", self.name, high as u8));
        Ok(())
    }
}

/// An input pin whose level comes from a closure (so a test can model a key matrix)
/// or from a script of levels.
pub struct MockIn {
    read: Box<dyn FnMut() -> Result<bool, HwError> + Send>,
}

impl MockIn {
    pub fn from_fn(f: impl FnMut() -> Result<bool, HwError> + Send + 'static) -> Self {
        Self { read: Box::new(f) }
    }
    pub fn script(levels: Vec<bool>) -> Self {
        let mut q: VecDeque<bool> = levels.into();
        let mut last = true;
        Self::from_fn(move || {
            if let Some(l) = q.pop_front() {
                last = l;
            }
            Ok(last)
        })
    }
}

impl InputPin for MockIn {
    fn is_high(&mut self) -> Result<bool, HwError> {
        (self.read)()
    }
}

/// Every (address, bytes) written, in order.
pub type I2cWrites = Arc<Mutex<Vec<(u8, Vec<u8>)>>>;

/// An I2C bus that records writes; `fail` makes every write fail.
#[derive(Default)]
pub struct MockI2c {
    pub writes: I2cWrites,
    pub fail: bool,
}

impl I2cBus for MockI2c {
    fn write(&mut self, addr: u8, bytes: &[u8]) -> Result<(), HwError> {
        if self.fail {
            return Err(HwError::I2c(format!("no ACK from 0x{addr:02x} (injected)")));
        }
        if let Ok(mut w) = self.writes.lock() {
            w.push((addr, bytes.to_vec()));
        }
        Ok(())
    }
}
