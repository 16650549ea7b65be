//! The vision thread of the daemon, and [`VisionShared`]: the one pipeline (models and
//! gallery) that the thread, enrollment and the simulator share.
//!
//! The thread takes frames from the source, runs the pipeline and hands attempts out.
//! New galleries are pushed in ([`VisionShared::set_gallery`], by the request API after
//! every change) and take effect before the next frame. Enrollment borrows the same
//! models: from files it holds the pipeline for the duration (walk-ups pause), from the
//! camera it taps the thread's frames for a few seconds. A replayed file is paced at its
//! frame rate so it behaves like a camera.

use super::enroll::{self, EnrollInput, Refusal, Sample};
use super::frame::Frame;
use super::matcher::Gallery;
use super::models::Models;
use super::pipeline::{Attempt, FaceEvent, Pipeline, PipelineConfig};
use super::source::FrameSource;
use super::VisionError;
use crate::config::VisionConfig;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The last attempt seen (for `verify`: who is at the camera now).
#[derive(Debug, Clone)]
pub struct LastAttempt {
    pub at: Instant,
    pub user: Option<String>,
    pub live: bool,
    pub distance: Option<f32>,
}

/// The pipeline shared by the vision thread, enrollment and the simulator. Models load
/// on first use when none were given.
pub struct VisionShared {
    models_dir: PathBuf,
    vcfg: VisionConfig,
    pcfg: PipelineConfig,
    pipe: Mutex<Option<Pipeline>>,
    /// Set while a camera enrollment takes the thread's frames.
    tap: Mutex<Option<std::sync::mpsc::SyncSender<Frame>>>,
    /// A thread is feeding frames (camera or replay) and has not ended.
    pub running: AtomicBool,
    /// The frame source is delivering: false while a camera cannot be opened or was
    /// lost (the thread keeps retrying meanwhile). A replay is up from the start.
    pub source_up: AtomicBool,
    last: Mutex<Option<LastAttempt>>,
    /// Frames processed so far by the thread.
    pub frames: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on another thread aborts the daemon (panic hook); poisoning cannot be
    // observed there, and elsewhere the data is still consistent (replaced whole).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl VisionShared {
    /// With models already loaded (the daemon).
    pub fn new(models: Models, gallery: Gallery, vcfg: &VisionConfig) -> Arc<VisionShared> {
        let pcfg = vcfg.pipeline();
        let pipe = Pipeline::new(models, gallery, pcfg.clone());
        Arc::new(VisionShared {
            models_dir: vcfg.models.clone(),
            vcfg: vcfg.clone(),
            pcfg,
            pipe: Mutex::new(Some(pipe)),
            tap: Mutex::new(None),
            running: AtomicBool::new(false),
            source_up: AtomicBool::new(true),
            last: Mutex::new(None),
            frames: AtomicU64::new(0),
        })
    }

    /// Models load when first needed (the simulator, `lockerd admin enroll`).
    pub fn lazy(vcfg: &VisionConfig) -> Arc<VisionShared> {
        Arc::new(VisionShared {
            models_dir: vcfg.models.clone(),
            vcfg: vcfg.clone(),
            pcfg: vcfg.pipeline(),
            pipe: Mutex::new(None),
            tap: Mutex::new(None),
            running: AtomicBool::new(false),
            source_up: AtomicBool::new(true),
            last: Mutex::new(None),
            frames: AtomicU64::new(0),
        })
    }

    /// Run `f` on the pipeline (loading the models first if needed).
    pub fn with_pipe<R>(&self, f: impl FnOnce(&mut Pipeline) -> R) -> Result<R, VisionError> {
        let mut g = lock(&self.pipe);
        if g.is_none() {
            let models = Models::load(&self.models_dir)?;
            *g = Some(Pipeline::new(models, Gallery::default(), self.pcfg.clone()));
        }
        match g.as_mut() {
            Some(p) => Ok(f(p)),
            None => Err(VisionError::Models("not loaded".into())),
        }
    }

    /// Replace the gallery; takes effect before the next frame. A pipeline not loaded
    /// yet gets it when it loads (the caller pushes again after loading).
    pub fn set_gallery(&self, g: Gallery) {
        if let Some(p) = lock(&self.pipe).as_mut() {
            log::info!("vision: gallery updated ({} templates)", g.template_count());
            p.set_gallery(g);
        }
    }

    pub fn last_attempt(&self) -> Option<LastAttempt> {
        lock(&self.last).clone()
    }

    fn note_attempt(&self, a: &Attempt) {
        *lock(&self.last) = Some(LastAttempt {
            at: Instant::now(),
            user: a.result.best_user.clone(),
            live: a.live,
            distance: a.result.distance,
        });
    }

    /// Enroll (blocking): templates from files or the camera. `progress(source,
    /// templates)` is called after each source that gave templates; the first refused
    /// source ends it with [`VisionError::Enroll`].
    pub fn enroll(
        &self,
        input: &EnrollInput,
        allow_poor_photos: bool,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(&str, usize),
    ) -> Result<Vec<Sample>, VisionError> {
        match input {
            EnrollInput::Files(paths) => {
                let mut all = Vec::new();
                for p in paths {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(VisionError::Enroll(Refusal::Cancelled, "cancelled".into()));
                    }
                    let s = self.with_pipe(|pipe| {
                        enroll::samples_from_path(pipe.models(), &self.vcfg, p, allow_poor_photos)
                    })??;
                    progress(&p.display().to_string(), s.len());
                    all.extend(s);
                }
                Ok(all)
            }
            EnrollInput::Photo(base64) => {
                let bytes = data_encoding::BASE64
                    .decode(base64.trim().as_bytes())
                    .map_err(|e| VisionError::BadInput(format!("the photo is not base64: {e}")))?;
                let s = self.with_pipe(|pipe| {
                    enroll::samples_from_image_bytes(
                        pipe.models(),
                        &self.vcfg,
                        &bytes,
                        allow_poor_photos,
                    )
                })??;
                progress("the photo sent", s.len());
                Ok(s)
            }
            EnrollInput::Camera { seconds } => {
                if !self.running.load(Ordering::SeqCst) {
                    return Err(VisionError::Camera(
                        "the camera is not running (vision is unavailable)".into(),
                    ));
                }
                let (tx, rx) = std::sync::mpsc::sync_channel::<Frame>(8);
                *lock(&self.tap) = Some(tx);
                let mut src = TapSource {
                    rx,
                    until: Instant::now() + Duration::from_secs((*seconds).max(1) as u64),
                };
                let r = self.with_pipe(|pipe| {
                    enroll::from_source(
                        pipe.models(),
                        &self.vcfg,
                        &mut src,
                        "the camera",
                        "camera",
                        5,
                        cancel,
                    )
                });
                *lock(&self.tap) = None;
                let (samples, _) = r??;
                progress("camera", samples.len());
                Ok(samples)
            }
        }
    }
}

/// Frames tapped from the vision thread until a deadline.
struct TapSource {
    rx: std::sync::mpsc::Receiver<Frame>,
    until: Instant,
}

impl FrameSource for TapSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, VisionError> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        match self.rx.recv_timeout(left) {
            Ok(f) => Ok(Some(f)),
            Err(_) => Ok(None),
        }
    }
    fn describe(&self) -> String {
        "the camera (enrollment)".into()
    }
    fn fps(&self) -> Option<f64> {
        None
    }
    fn is_replay(&self) -> bool {
        false
    }
}

pub struct VisionHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub shared: Arc<VisionShared>,
}

impl VisionHandle {
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for VisionHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the vision thread. `on_event` gets each attempt and each active-challenge
/// prompt, and returns false when nobody listens any more.
pub fn spawn(
    shared: Arc<VisionShared>,
    mut source: Box<dyn FrameSource>,
    mut on_event: impl FnMut(FaceEvent) -> bool + Send + 'static,
) -> Result<VisionHandle, VisionError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (st, sh) = (stop.clone(), shared.clone());
    shared.running.store(true, Ordering::SeqCst);
    let thread = std::thread::Builder::new()
        .name("vision".into())
        .spawn(move || {
            // Runs for months: counters only, no per-frame samples.
            let _ = sh.with_pipe(|p| p.keep_samples(false));
            let pace = source
                .is_replay()
                .then(|| {
                    source
                        .fps()
                        .map(|f| Duration::from_secs_f64(1.0 / f.max(1.0)))
                })
                .flatten();
            let start = Instant::now();
            let mut n = 0u32;
            let mut deliver = |sh: &VisionShared, events: Vec<FaceEvent>| -> bool {
                for e in events {
                    match &e {
                        FaceEvent::Attempt(a) => sh.note_attempt(a),
                        FaceEvent::Challenge { .. } => {}
                        _ => continue,
                    }
                    if !on_event(e) {
                        return false;
                    }
                }
                true
            };
            while !st.load(Ordering::SeqCst) {
                let frame = match source.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        if let Ok(evs) = sh.with_pipe(|p| p.finish()) {
                            deliver(&sh, evs);
                        }
                        log::info!("vision: {} ended", source.describe());
                        break;
                    }
                    Err(VisionError::NoFrame) => continue,
                    Err(e) => {
                        log::error!("vision: {e}");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                if let Some(p) = pace {
                    let due = start + p * n;
                    if let Some(w) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(w);
                    }
                    n += 1;
                }
                // A camera enrollment takes the frames for a while.
                if let Some(tap) = lock(&sh.tap).as_ref() {
                    let _ = tap.try_send(frame);
                    continue;
                }
                let index = frame.index;
                match sh.with_pipe(|p| p.process(&frame)) {
                    Ok(Ok(events)) => {
                        if !deliver(&sh, events) {
                            break;
                        }
                    }
                    Ok(Err(e)) | Err(e) => log::error!("vision: frame {index}: {e}"),
                }
                sh.frames.fetch_add(1, Ordering::Relaxed);
            }
            sh.running.store(false, Ordering::SeqCst);
        })
        .map_err(|e| VisionError::Camera(format!("cannot start the vision thread: {e}")))?;
    Ok(VisionHandle {
        stop,
        thread: Some(thread),
        shared,
    })
}
