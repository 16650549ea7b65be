//! lockerd's domain types and time formats, shared by every other crate of the workspace
//! (`lockerd-vision`, the daemon `lockerd`). No I/O, no C library, no async runtime: what
//! depends on it pulls in nothing but serde.

pub mod timefmt;
pub mod types;
