//! The MQTT pieces a remote admin shares with the kiosk: the configuration section
//! ([`config`]), the broker connection and topics ([`conn`]), the signed command envelope
//! ([`envelope`]), sealed replies ([`reply`]) and `lockerctl --remote`'s sender
//! ([`remote`]). The daemon's bridge, Home Assistant and the lock link stay in `lockerd`.

pub mod config;
pub mod conn;
pub mod envelope;
pub mod remote;
pub mod reply;
