//! Every committed fuzz corpus (`fuzz/corpus/<target>`) replayed through the same checks the
//! fuzz targets run (`fuzz/checks/<target>.rs`), as ordinary tests: an input that once made
//! a check fail, once minimised into the corpus, keeps failing here until it is mended. The
//! corpora grow from `scripts/fuzz.sh` (libFuzzer, nightly, ASan), which CI does not run.

use std::path::Path;

#[path = "../fuzz/checks/config.rs"]
mod config;
#[path = "../fuzz/checks/envelope.rs"]
mod envelope;
#[path = "../fuzz/checks/image.rs"]
mod image;
#[path = "../fuzz/checks/keypad.rs"]
mod keypad;
#[path = "../fuzz/checks/lock_frame.rs"]
mod lock_frame;
#[path = "../fuzz/checks/request.rs"]
mod request;
#[path = "../fuzz/checks/scenario.rs"]
mod scenario;
#[path = "../fuzz/checks/y4m.rs"]
mod y4m;

/// Runs `check` on every file of `fuzz/corpus/<target>` and says which input failed.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{}: corpus missing", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{target}: the check failed on {}", f.display());
        }
    }
    println!("{target}: {} inputs", files.len());
}

#[test]
fn config_corpus() {
    replay("config", config::check);
}

#[test]
fn envelope_corpus() {
    replay("envelope", envelope::check);
}

#[test]
fn image_corpus() {
    replay("image", image::check);
}

#[test]
fn keypad_corpus() {
    replay("keypad", keypad::check);
}

#[test]
fn lock_frame_corpus() {
    replay("lock_frame", lock_frame::check);
}

#[test]
fn request_corpus() {
    replay("request", request::check);
}

#[test]
fn scenario_corpus() {
    replay("scenario", scenario::check);
}

#[test]
fn y4m_corpus() {
    replay("y4m", y4m::check);
}
