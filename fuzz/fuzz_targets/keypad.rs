//! Keypad entries: whatever is typed parses to a TOTP entry, a code entry or Malformed,
//! and a parsed entry keeps only digits in its secrets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lockerd::access::credentials::{parse_entry, Entry};

fuzz_target!(|data: &[u8]| {
    let keys: String = data
        .iter()
        .map(|b| b"0123456789ABCD*#"[(*b % 16) as usize] as char)
        .collect();
    let cfg = lockerd::config::AccessConfig::default();
    match parse_entry(&keys, &cfg) {
        Entry::Totp { pin, code, .. } => {
            assert!(pin.chars().chain(code.chars()).all(|c| c.is_ascii_digit()));
        }
        Entry::Code { slot, code } => {
            assert!((1..=99).contains(&slot));
            assert!(code.chars().all(|c| c.is_ascii_digit()));
        }
        Entry::Malformed => {}
    }
});
