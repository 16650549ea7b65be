//! `lockerd-lab simulate` scenario lines: any text gives steps or a `file:line` error.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/scenario.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(steps) = lockerd::sim::parse(text, std::path::Path::new("/nonexistent/s.jsonl")) {
            for s in steps {
                assert!(s.at_s.is_finite() && (0.0..=86_400.0).contains(&s.at_s));
            }
        }
    }
}
