//! `lockerctl`: the local admin CLI that talks to the running daemon over D-Bus.
//!
//! The D-Bus service is a later milestone; until it exists this binary says so and exits
//! with status 2 rather than pretending to work. The `lockerd admin ...` commands act on
//! the store directly in the meantime.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "lockerctl: the D-Bus control interface is not implemented yet; \
         use `lockerd admin ...` / `lockerd audit ...` on the device for now"
    );
    ExitCode::from(2)
}
