//! The configuration file parser and validator: any bytes give a config or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = lockerd::config::Config::from_toml(text, std::path::Path::new("fuzz.toml")) {
            // A config that validates must survive its own budget arithmetic.
            let _ = c.access.guessing_budget();
        }
    }
});
