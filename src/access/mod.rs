//! Access control: the only code that decides to unlock.
//!
//! [`face`] turns a vision attempt into a decision (liveness required, banned users
//! alert, disabled users refused). The controller task that owns the lock, keypad
//! policy and lockouts builds on it.

pub mod face;
