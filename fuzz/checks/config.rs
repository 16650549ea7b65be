//! The configuration file parser and validator: any bytes give a config or an error.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/config.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = lockerd::config::Config::from_toml(text, std::path::Path::new("fuzz.toml")) {
            // A config that validates must survive its own budget arithmetic.
            let _ = c.access.guessing_budget();
        }
    }
}
