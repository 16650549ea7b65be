//! `lockerd simulate` scenario lines: any text gives steps or a `file:line` error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(steps) = lockerd::sim::parse(text, std::path::Path::new("/nonexistent/s.jsonl")) {
            for s in steps {
                assert!(s.at_s.is_finite() && (0.0..=86_400.0).contains(&s.at_s));
            }
        }
    }
});
