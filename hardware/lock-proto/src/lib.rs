//! The lock protocol between lockerd and an ESP32 lock: the two frames, their HMAC, the
//! counters that make every frame single-use, and the state machines both ends run.
//! `no_std` and allocation-free, so the daemon, the firmware (`hardware/esp32-lock`)
//! and the host lock simulator (`lockerd-lab lock-sim`) share this one implementation.
//!
//! Frames (`hardware/LOCK-PROTOCOL.md` is the prose version):
//! - command, daemon -> lock: `0x02 | kind u8 | counter u64 BE | pulse_ms u32 BE |
//!   session [8] | report u64 BE | HMAC` ([`Command`], [`COMMAND_LEN`] bytes);
//! - report, lock -> daemon: `0x02 | 0x80 | counter u64 BE | acked u64 BE | state u8 |
//!   door u8 | session [8] | HMAC` ([`Report`], [`REPORT_LEN`] bytes);
//!
//! where HMAC is HMAC-SHA256 under the lock's 32-byte key over every byte before it. Each
//! direction has its own counter, strictly increasing and persisted by its sender
//! ([`Sender`], reserved in blocks so flash is not written per frame) and by its receiver
//! ([`Receiver`], written before the frame is acted on): a frame whose counter is not
//! above the last accepted one is refused, also after a power cut. A lock draws a random
//! boot session at every boot and takes an unlock or lock command only when it names
//! that session and the lock's latest report: a command that was not delivered before
//! the lock next reported (it reports on every connection, change and every 10 s) or
//! rebooted is dead, so a captured or delayed frame cannot open the lock later.
//!
//! The I/O (MQTT, flash, relay pins) belongs to whoever runs these machines; nothing
//! here blocks or allocates.

#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod flash_log;
mod frame;
mod link;
mod lock;
pub mod mqtt_wire;
pub mod session;

pub use frame::{BootSession, Command, Door, FrameError, Kind, LockState, Report};
pub use frame::{
    COMMAND_LEN, KEY_LEN, MAC_LEN, MAX_PULSE_MS, REPORT_LEN, REPORT_TAG, SESSION_LEN, VERSION,
};
pub use link::{Accepted, CommandError, Counters, DaemonEnd, Receiver, Sender, Stats, RESERVE};
pub use lock::{Lock, Outgoing, FRESH_MS};

/// The lock's shared secret.
pub type Key = [u8; KEY_LEN];

#[cfg(test)]
mod tests;
