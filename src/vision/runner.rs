//! The vision thread of the daemon: frames from the source, the pipeline, attempts out.
//! New galleries (after enrollment) arrive on a channel and replace the old one between
//! frames. A replayed file is paced at its frame rate so it behaves like a camera.

use super::matcher::Gallery;
use super::models::Models;
use super::pipeline::{Attempt, FaceEvent, Pipeline, PipelineConfig};
use super::source::FrameSource;
use super::VisionError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct VisionHandle {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub gallery: std::sync::mpsc::Sender<Gallery>,
    /// Frames processed so far.
    pub frames: Arc<AtomicU64>,
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

/// Start the vision thread. `on_attempt` returns false when nobody listens any more.
pub fn spawn(
    models: Models,
    gallery: Gallery,
    cfg: PipelineConfig,
    mut source: Box<dyn FrameSource>,
    mut on_attempt: impl FnMut(Attempt) -> bool + Send + 'static,
) -> Result<VisionHandle, VisionError> {
    let stop = Arc::new(AtomicBool::new(false));
    let frames = Arc::new(AtomicU64::new(0));
    let (gtx, grx) = std::sync::mpsc::channel::<Gallery>();
    let (st, fr) = (stop.clone(), frames.clone());
    let thread = std::thread::Builder::new()
        .name("vision".into())
        .spawn(move || {
            let mut pipe = Pipeline::new(models, gallery, cfg);
            // Runs for months: counters only, no per-frame samples.
            pipe.keep_samples(false);
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
            while !st.load(Ordering::SeqCst) {
                while let Ok(g) = grx.try_recv() {
                    log::info!("vision: gallery updated ({} templates)", g.template_count());
                    pipe.set_gallery(g);
                }
                let frame = match source.next_frame() {
                    Ok(Some(f)) => f,
                    Ok(None) => {
                        for e in pipe.finish() {
                            if let FaceEvent::Attempt(a) = e {
                                on_attempt(a);
                            }
                        }
                        log::info!("vision: {} ended", source.describe());
                        return;
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
                match pipe.process(&frame) {
                    Ok(events) => {
                        for e in events {
                            if let FaceEvent::Attempt(a) = e {
                                if !on_attempt(a) {
                                    return;
                                }
                            }
                        }
                    }
                    Err(e) => log::error!("vision: frame {}: {e}", frame.index),
                }
                fr.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(|e| VisionError::Camera(format!("cannot start the vision thread: {e}")))?;
    Ok(VisionHandle {
        stop,
        thread: Some(thread),
        gallery: gtx,
        frames,
    })
}
