//! Photo decoding with the header size checks: any bytes give a frame or an error.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/image.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    if let Ok(f) = lockerd::vision::source::decode_image(data, "fuzz") {
        assert_eq!(f.rgb.len(), (f.width * f.height * 3) as usize);
    }
}
