//! Frame sources: video files (an `ffmpeg` child, [`super::video`]) and still images
//! (`image`) for replay, demo and tests, and the live camera through a capture thread
//! that keeps only the newest frame and re-opens a vanished camera with back-off (see
//! [`capture_loop`]).

use super::frame::{check_size, Frame};
use super::VisionError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Anything that yields frames. `Ok(None)` is the end of a finite stream; a live
/// source that has no frame yet returns `Err(VisionError::NoFrame)` and is asked again.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> Result<Option<Frame>, VisionError>;
    fn describe(&self) -> String;
    /// Nominal frames per second, if known.
    fn fps(&self) -> Option<f64>;
    /// True for a finite recording (every frame is processed, in order).
    fn is_replay(&self) -> bool {
        true
    }
    /// Peak RSS of a decoder process the source runs (MiB, as last sampled), if any.
    fn decoder_peak_rss_mib(&self) -> Option<f64> {
        None
    }
}

const VIDEO_EXT: &[&str] = &["mp4", "avi", "mkv", "mov", "webm", "m4v"];
const IMAGE_EXT: &[&str] = &["jpg", "jpeg", "png"];

fn ext_of(p: &Path) -> String {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default()
}

pub fn is_video(p: &Path) -> bool {
    VIDEO_EXT.contains(&ext_of(p).as_str())
}

pub fn is_image(p: &Path) -> bool {
    IMAGE_EXT.contains(&ext_of(p).as_str())
}

/// Open a file or folder as a source: a video file, one image, or a folder of images.
pub fn open_path(path: &Path) -> Result<Box<dyn FrameSource>, VisionError> {
    if path.is_dir() {
        Ok(Box::new(ImageSource::folder(path)?))
    } else if is_video(path) {
        Ok(Box::new(VideoFileSource::open(path)?))
    } else if is_image(path) {
        Ok(Box::new(ImageSource::single(path)?))
    } else if !path.exists() {
        Err(VisionError::NotFound(path.to_owned()))
    } else {
        Err(VisionError::BadInput(format!(
            "{}: not a video ({}) or image ({}) file",
            path.display(),
            VIDEO_EXT.join(", "),
            IMAGE_EXT.join(", ")
        )))
    }
}

pub use super::video::VideoFileSource;

/// One still image, or a folder of them (sorted by name), one frame each.
pub struct ImageSource {
    files: Vec<PathBuf>,
    next: usize,
    fps: f64,
    what: String,
}

impl ImageSource {
    pub fn single(path: &Path) -> Result<Self, VisionError> {
        if !path.is_file() {
            return Err(VisionError::NotFound(path.to_owned()));
        }
        Ok(Self {
            files: vec![path.to_owned()],
            next: 0,
            fps: 15.0,
            what: format!("image {}", path.display()),
        })
    }

    pub fn folder(dir: &Path) -> Result<Self, VisionError> {
        let files = list_images(dir)?;
        if files.is_empty() {
            return Err(VisionError::BadInput(format!(
                "{}: no .jpg/.jpeg/.png images",
                dir.display()
            )));
        }
        Ok(Self {
            files,
            next: 0,
            fps: 15.0,
            what: format!("image folder {}", dir.display()),
        })
    }
}

/// Image files in a folder, sorted by name.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, VisionError> {
    list_files(dir, is_image)
}

/// The video files in `dir` (by extension), sorted by name.
pub fn list_videos(dir: &Path) -> Result<Vec<PathBuf>, VisionError> {
    list_files(dir, is_video)
}

fn list_files(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>, VisionError> {
    let rd = std::fs::read_dir(dir).map_err(|e| VisionError::Io(dir.to_owned(), e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && keep(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Largest still image file read (a photo for enrollment, a frame of a folder clip).
pub const MAX_IMAGE_BYTES: u64 = 32 * 1024 * 1024;

/// Decode a still image with size limits checked from the header before decoding.
pub fn load_image(path: &Path) -> Result<Frame, VisionError> {
    let meta = std::fs::metadata(path).map_err(|e| VisionError::Io(path.to_owned(), e))?;
    if meta.len() > MAX_IMAGE_BYTES {
        return Err(VisionError::BadInput(format!(
            "{}: {} bytes; an image may be at most {MAX_IMAGE_BYTES}",
            path.display(),
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| VisionError::Io(path.to_owned(), e))?;
    decode_image(&bytes, &path.display().to_string())
}

/// Decode image bytes (JPEG or PNG), refusing sizes from the header before decoding.
/// `what` names the input in errors. Fuzzed (`fuzz/`).
/// Pixels a byte of a compressed photo may stand for (plus 1 MP of slack).
pub const MAX_PIXELS_PER_BYTE: u64 = 64;

pub fn decode_image(bytes: &[u8], what: &str) -> Result<Frame, VisionError> {
    let reader = || {
        image::io::Reader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| VisionError::BadInput(format!("{what}: {e}")))
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| VisionError::BadInput(format!("{what}: not a readable image: {e}")))?;
    check_size(w, h).map_err(|e| VisionError::BadInput(format!("{what}: {e}")))?;
    // A decompression bomb: a photo of a face needs far more than a byte per 64 pixels
    // (a 12 MP phone photo is about 3 MB, 4 pixels a byte). Found by fuzzing: 900 bytes
    // declaring 5664x4886 took 0.75 s and 220 MB to fail.
    let budget = bytes.len() as u64 * MAX_PIXELS_PER_BYTE + (1 << 20);
    if w as u64 * h as u64 > budget {
        return Err(VisionError::BadInput(format!(
            "{what}: {w}x{h} pixels from {} bytes is not a photo (at most {MAX_PIXELS_PER_BYTE} pixels a byte)",
            bytes.len()
        )));
    }
    let mut r = reader()?;
    // Memory for what the header declared (planes, upsampling, output: 8 bytes a pixel)
    // plus slack, never more.
    let mut limits = image::io::Limits::default();
    limits.max_alloc = Some((w as u64 * h as u64 * 8 + (8 << 20)).min(512 << 20));
    r.limits(limits);
    let img = r
        .decode()
        .map_err(|e| VisionError::BadInput(format!("{what}: cannot decode: {e}")))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    Frame::from_rgb(img.into_raw(), w, h, 0, Duration::ZERO)
}

impl FrameSource for ImageSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, VisionError> {
        let Some(p) = self.files.get(self.next) else {
            return Ok(None);
        };
        let mut f = load_image(p)?;
        f.index = self.next as u64;
        f.ts = Duration::from_secs_f64(self.next as f64 / self.fps);
        self.next += 1;
        Ok(Some(f))
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
}

// ----- live camera plumbing -------------------------------------------------------------

/// A one-frame mailbox: the producer overwrites, the consumer takes the newest.
/// Vision never works through a queue of stale frames.
pub struct LatestSlot<T> {
    inner: Mutex<SlotState<T>>,
    cv: Condvar,
}

struct SlotState<T> {
    item: Option<T>,
    closed: bool,
    dropped: u64,
}

impl<T> Default for LatestSlot<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(SlotState {
                item: None,
                closed: false,
                dropped: 0,
            }),
            cv: Condvar::new(),
        }
    }
}

impl<T> LatestSlot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<T>> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Replace whatever is waiting (counted as dropped) with `item`.
    pub fn put(&self, item: T) {
        let mut g = self.lock();
        if g.item.replace(item).is_some() {
            g.dropped += 1;
        }
        self.cv.notify_one();
    }

    /// Take the newest item, waiting up to `timeout`. `Err(())` once closed and empty.
    #[allow(clippy::result_unit_err)]
    pub fn take(&self, timeout: Duration) -> Result<Option<T>, ()> {
        let mut g = self.lock();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(x) = g.item.take() {
                return Ok(Some(x));
            }
            if g.closed {
                return Err(());
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            g = match self.cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }
}

/// A camera once opened: hands out frames until it fails.
pub trait RawCamera {
    fn grab(&mut self) -> Result<Frame, String>;
}

/// Exponential back-off for re-opening: `initial`, doubled per failure, capped.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    pub fn delay(&self, failures: u32) -> Duration {
        let f = failures.saturating_sub(1).min(16);
        (self.initial * (1u32 << f)).min(self.max)
    }
}

/// What the capture loop reports about the camera.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraStatus {
    Opened(String),
    Lost(String),
    OpenFailed { error: String, retry_in: Duration },
}

/// Run until `stop`: open the camera with `open`, push every frame into `slot`, and when
/// opening or grabbing fails, report it and try again after a growing delay. `sleep` is
/// injected so tests run without waiting.
pub fn capture_loop<O, C>(
    mut open: O,
    slot: &LatestSlot<Frame>,
    stop: &AtomicBool,
    backoff: Backoff,
    mut report: impl FnMut(CameraStatus),
    mut sleep: impl FnMut(Duration),
) where
    O: FnMut() -> Result<(C, String), String>,
    C: RawCamera,
{
    let mut failures = 0u32;
    let mut next_index = 0u64;
    let started = std::time::Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let (mut cam, name) = match open() {
            Ok(c) => c,
            Err(error) => {
                failures += 1;
                let retry_in = backoff.delay(failures);
                report(CameraStatus::OpenFailed { error, retry_in });
                sleep(retry_in);
                continue;
            }
        };
        report(CameraStatus::Opened(name));
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match cam.grab() {
                Ok(mut f) => {
                    failures = 0;
                    f.index = next_index;
                    f.ts = started.elapsed();
                    next_index += 1;
                    slot.put(f);
                }
                Err(e) => {
                    failures += 1;
                    report(CameraStatus::Lost(e));
                    sleep(backoff.delay(failures));
                    break;
                }
            }
        }
    }
}

/// The live camera as a [`FrameSource`]: a capture thread fills a [`LatestSlot`].
pub struct LiveSource {
    slot: Arc<LatestSlot<Frame>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    what: String,
    fps: f64,
    wait: Duration,
}

impl LiveSource {
    /// Start capturing with `open` on a new thread. `status` receives camera events.
    pub fn start<O, C>(
        what: String,
        fps: f64,
        open: O,
        backoff: Backoff,
        status: impl FnMut(CameraStatus) + Send + 'static,
    ) -> Result<Self, VisionError>
    where
        O: FnMut() -> Result<(C, String), String> + Send + 'static,
        C: RawCamera,
    {
        let slot = Arc::new(LatestSlot::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s2, st2) = (slot.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("camera".into())
            .spawn(move || {
                // Back-off sleeps wake up when asked to stop, so shutdown stays quick.
                let st3 = st2.clone();
                let sleep = move |d: Duration| {
                    let end = std::time::Instant::now() + d;
                    while !st3.load(Ordering::SeqCst) {
                        let left = end.saturating_duration_since(std::time::Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(Duration::from_millis(50)));
                    }
                };
                capture_loop(open, &s2, &st2, backoff, status, sleep);
                s2.close();
            })
            .map_err(|e| VisionError::Camera(format!("cannot start capture thread: {e}")))?;
        Ok(Self {
            slot,
            stop,
            thread: Some(thread),
            what,
            fps,
            wait: Duration::from_millis(500),
        })
    }

    pub fn dropped_frames(&self) -> u64 {
        self.slot.dropped()
    }
}

impl FrameSource for LiveSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, VisionError> {
        match self.slot.take(self.wait) {
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => Err(VisionError::NoFrame),
            Err(()) => Ok(None),
        }
    }
    fn describe(&self) -> String {
        self.what.clone()
    }
    fn fps(&self) -> Option<f64> {
        Some(self.fps)
    }
    fn is_replay(&self) -> bool {
        false
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn a_jpeg_whose_second_frame_header_claims_27_megapixels_fails_fast() {
        // Found by `scripts/fuzz.sh 600 image` (a 10 s timeout under ASan; 0.75 s and 220 MB
        // in release): 900 bytes whose later frame header declares 5664x4886.
        let bytes = include_bytes!("../../../tests/fuzz-regressions/image-second-frame-header.jpg");
        let t0 = std::time::Instant::now();
        let r = decode_image(bytes, "fuzzed.jpg");
        let took = t0.elapsed();
        assert!(
            matches!(&r, Err(VisionError::BadInput(m)) if m.contains("not a photo")),
            "{r:?}"
        );
        eprintln!("fuzzed jpeg refused in {took:?}");
    }

    fn frame() -> Frame {
        Frame::from_rgb(vec![0; 12], 2, 2, 0, Duration::ZERO).unwrap()
    }

    #[test]
    fn slot_keeps_only_the_newest() {
        let s = LatestSlot::default();
        s.put(1);
        s.put(2);
        s.put(3);
        assert_eq!(s.take(Duration::ZERO), Ok(Some(3)));
        assert_eq!(s.dropped(), 2);
        assert_eq!(s.take(Duration::from_millis(1)), Ok(None));
        s.close();
        assert_eq!(s.take(Duration::ZERO), Err(()));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
        };
        let d: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(d, [500, 1000, 2000, 4000, 5000, 5000]);
    }

    /// A fake camera that yields `n` frames and then "vanishes".
    struct Fake(u32);
    impl RawCamera for Fake {
        fn grab(&mut self) -> Result<Frame, String> {
            if self.0 == 0 {
                return Err("device unplugged".into());
            }
            self.0 -= 1;
            Ok(frame())
        }
    }

    #[test]
    fn vanished_camera_is_reported_and_reopened_with_backoff() {
        // Script of open() results: fail, fail, ok(3 frames), fail, ok(2 frames), then stop.
        let script: VecDeque<Result<u32, &str>> = VecDeque::from(vec![
            Err("no /dev/video0"),
            Err("busy"),
            Ok(3),
            Err("gone"),
            Ok(2),
        ]);
        let script = std::cell::RefCell::new(script);
        let slot = LatestSlot::default();
        let stop = AtomicBool::new(false);
        let mut events = Vec::new();
        let mut sleeps = Vec::new();
        let frames = std::cell::Cell::new(0u32);
        capture_loop(
            || match script.borrow_mut().pop_front() {
                Some(Ok(n)) => Ok((Fake(n), "fake".to_string())),
                Some(Err(e)) => Err(e.to_string()),
                None => {
                    stop.store(true, Ordering::SeqCst);
                    Err("end of script".into())
                }
            },
            &slot,
            &stop,
            Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_millis(1000),
            },
            |s| {
                if let CameraStatus::Opened(_) = s {}
                events.push(s)
            },
            |d| {
                sleeps.push(d.as_millis());
                if let Ok(Some(_)) = slot.take(Duration::ZERO) {
                    frames.set(frames.get() + 1);
                }
            },
        );
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                CameraStatus::Opened(_) => "opened",
                CameraStatus::Lost(_) => "lost",
                CameraStatus::OpenFailed { .. } => "open_failed",
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "open_failed",
                "open_failed",
                "opened",
                "lost",
                "open_failed",
                "opened",
                "lost",
                "open_failed"
            ]
        );
        // Back-off grows while failing and resets after frames flow again.
        assert_eq!(sleeps, [100, 200, 100, 200, 100, 200]);
        assert!(frames.get() >= 2, "frames reached the slot");
    }
}
