//! lockerd: a walk-up face-unlock appliance for a Raspberry Pi guarding a locker or door.
//!
//! The library holds the daemon's logic; the `lockerd` and `lockerd-lab` binaries only
//! parse arguments, set up logging and call in here (`lockerctl` is the crate
//! `lockerd-client`'s, which links no store, OpenCV or dlib). Module map (see `DESIGN.md`
//! in the shared folder and README "Architecture"). Module dependencies point one way,
//! with no cycle: `store`, `hw` <- `api` <- `access` <- `service` <- `dbus`, `mqtt`,
//! `config` <- `daemon`, `doctor`, `sim`, `eval`.
//! - [`config`]: reads, merges and validates the file; each section's type belongs to its
//!   module (`access::config`, `hw::config`, `mqtt::config`, `lockerd_vision::config`).
//! - [`store`]: the SQLCipher store on its own thread (users, templates, OTP, audit).
//! - [`hw`]: hardware traits with real and simulated implementations.
//! - [`safety`]: emergency locking from the panic hook; [`secret_file`]: owner-only
//!   secrets on disk (`lockerd-client`'s).
//! - [`api`]: the one way in: typed requests, responses, the role table, the secret-free
//!   events (`lockerd-client`'s types, with the store conversions and the event bus);
//!   [`service`]: the serving task that answers them, one file per command group.
//! - [`dbus`]: the `org.lockerd.Locker1` service (its client proxy is
//!   `lockerd-client`'s); [`ctl`]: the admin commands shared by `lockerctl` and
//!   `lockerd admin` (`lockerd-client`'s).
//! - [`access`]: the access controller; [`vision`]: frames to face attempts (the crate
//!   `lockerd-vision`, re-exported; [`types`] and [`timefmt`] are `lockerd-core`'s).
//! - [`daemon`]: `run(config, shutdown)`, systemd notify and watchdog.
//! - [`mqtt`]: remote admin, events, Home Assistant and the ESP32 lock link.
//! - `sim`, `eval` (feature `tools`, on by default): the simulator and the measurement
//!   commands, out of a daemon-only build; [`doctor`]: the first-run checks on a device.

pub mod access;
pub mod api;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod doctor;
#[cfg(feature = "tools")]
pub mod eval;
pub mod hw;
pub mod logging;
pub mod mqtt;
pub mod safety;
pub mod service;
#[cfg(feature = "tools")]
pub mod sim;
pub mod store;
pub use lockerd_client::{ctl, secret_file};
pub use lockerd_core::{timefmt, types};
pub use lockerd_vision as vision;
