//! libFuzzer entry for `fuzz/checks/keypad.rs` (what it checks is documented there).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks/keypad.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
