//! libFuzzer entry for `fuzz/checks/scenario.rs` (what it checks is documented there).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../checks/scenario.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
