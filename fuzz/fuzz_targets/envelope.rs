//! libFuzzer entry for `fuzz/checks/envelope.rs` (what it checks is documented there).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks/envelope.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
