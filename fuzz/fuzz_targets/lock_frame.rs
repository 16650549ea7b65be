//! libFuzzer entry for `fuzz/checks/lock_frame.rs` (what it checks is documented there).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks/lock_frame.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
