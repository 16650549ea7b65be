//! Keypad entries: whatever is typed parses to a TOTP entry, a code entry or Malformed,
//! and a parsed entry keeps only digits in its secrets.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/keypad.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
use lockerd::access::credentials::{parse_entry, Entry};

/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
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
}
