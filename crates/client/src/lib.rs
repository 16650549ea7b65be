//! What a client of lockerd links: the request API's types ([`api`]: requests, responses,
//! errors, callers, the role table, the broadcast event), the D-Bus proxy ([`dbus`]), the
//! signed MQTT admin envelope and sealed replies ([`mqtt`]), and `lockerctl`'s commands
//! and printers ([`ctl`]), and the fleet's signed user records ([`fleet`]). No store, no OpenCV, no dlib: the daemon crate (`lockerd`)
//! serves these types, and re-exports them under the same paths.

pub mod api;
pub mod ctl;
pub mod dbus;
pub mod fleet;
pub mod mqtt;
pub mod secret_file;

pub use lockerd_core::{timefmt, types};
