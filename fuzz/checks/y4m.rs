//! The YUV4MPEG stream lockerd reads from its ffmpeg child: any bytes give frames of the
//! declared size or an error, never a panic or an allocation beyond the size limits.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/y4m.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    if let Ok(mut r) = lockerd::vision::video::Y4mReader::new(data) {
        let want = (r.header.width * r.header.height * 3) as usize;
        while let Ok(Some(rgb)) = r.next_rgb() {
            assert_eq!(rgb.len(), want);
        }
    }
}
