//! lockerd: a walk-up face-unlock appliance for a Raspberry Pi guarding a locker or door.
//!
//! The library holds all logic; the `lockerd` and `lockerctl` binaries only parse
//! arguments, set up logging and call in here. Module map (see `DESIGN.md` in the shared
//! folder and README "Architecture"):
//! - [`config`]: typed settings, validation, embedded defaults.
//! - [`store`]: the SQLCipher store on its own thread (users, templates, OTP, audit).
//! - [`hw`]: hardware traits with real and simulated implementations.
//! - [`safety`]: emergency locking from the panic hook.
//! - [`daemon`]: `run(config, shutdown)`, systemd notify and watchdog.

pub mod access;
pub mod config;
pub mod daemon;
pub mod hw;
pub mod logging;
pub mod safety;
pub mod sim;
pub mod store;
pub mod timefmt;
pub mod types;
pub mod vision;
