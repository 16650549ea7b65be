//! Access control: the only code that decides to unlock.
//!
//! - [`face`]: a vision attempt becomes a decision (liveness required, banned users
//!   alert, disabled users refused).
//! - [`otp`], [`credentials`]: TOTP and one-time codes, keypad entry formats.
//! - [`lockout`]: keypad throttling and the yearly guessing bound.
//! - [`controller`]: the state machine that owns the lock, keypad entry, door alarms and
//!   lockouts; [`driver`] runs it as one task fed by a channel.

pub mod config;
pub mod controller;
pub mod credentials;
pub mod driver;
pub mod face;
pub mod lockout;
pub mod otp;

pub use controller::{AdminRequest, Controller, Input, Snapshot};

#[cfg(test)]
mod tests;
