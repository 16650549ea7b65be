//! The per-frame pipeline: find the face, follow it as a track, measure blinks, encode
//! good frames, match, and say when a track has made an attempt.
//!
//! Detection: HOG on the whole frame (downscaled to `detect_width`) when there is no
//! track (after a frame where it found nobody, only every `idle_detect_every` frames: a
//! kiosk with nobody in front of it does not search every frame) and every
//! `full_detect_every` frames; between those, HOG only in a region around
//! the tracked face (scaled so the face is about 130 px wide) every `roi_check_every`
//! frames, and on the whole frame when that close look misses; on the other frames the
//! face box follows the previous frame's landmarks. Two misses in a row end the track.
//! dlib's 5 landmarks (eye corners, nose) run on every frame, and the iris model on both
//! eyes (the blink signal, [`super::iris`]).
//!
//! Liveness is bound to identity: a track's blink only counts with encodings of the same
//! track, and after a blink the next good frame (at most `post_blink_frames` later) is
//! encoded so the face that blinked is the face that is matched. A new encoding far from
//! the track's earlier ones (someone swapped a photo in) ends the track and starts a new
//! one with no blink. An attempt is emitted when a live track has been matched (or
//! failed to match), or when a track ends without ever blinking (`live = false`).
//!
//! Every encoded frame is also scored for presentation attacks ([`super::pad`]); an
//! attempt carries the PAD verdict over the same track's scores in the liveness window.
//! With `[vision.challenge]` on, an attempt that would be granted is held back behind a
//! random prompt ([`super::challenge`]) answered on the same track, and carries how it
//! was answered.
//! The track is owned by the frame being processed (taken out of the pipeline and put
//! back), so no step can find it missing.

use super::blink::{BlinkConfig, BlinkTracker, EyeSignal};
use super::challenge::{ChallengeConfig, Outcome, Pending, Picker, Prompt};
use super::frame::{BBox, Frame, Patch};
use super::matcher::{Gallery, MatchPolicy, MatchResult, Verdict};
use super::models::{Models, Shape};
use super::pad::{PadConfig, PadSummary, PadVerdict};
use super::quality::{self, QualityGates};
use super::VisionError;
use lockerd_core::types::{Embedding, Role, UserId};
use serde::Serialize;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Face width (pixels) the close look around a tracked face is scaled to (up to 2x).
const ROI_FACE_PX: f32 = 130.0;

#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    pub detect_width: u32,
    pub roi_check_every: u32,
    pub full_detect_every: u32,
    /// With no track, after a frame where HOG found nobody, the whole frame is searched
    /// again this many frames later (1: every frame).
    pub idle_detect_every: u32,
    pub gates: QualityGates,
    pub policy: MatchPolicy,
    /// The rule for users who have only dlib templates (enrolled before SFace); None:
    /// such users are not matched by face.
    pub legacy_policy: Option<MatchPolicy>,
    pub liveness_window: Duration,
    /// Encodings gathered as soon as a track starts (so a blink can be decided at once).
    pub early_encodings: usize,
    /// Frames between early encodings.
    pub encode_gap_frames: u64,
    /// Frames between refresh encodings once the early ones exist.
    pub refresh_every_frames: u64,
    /// Most recent encodings fused for a decision.
    pub fuse_last: usize,
    /// Encodings kept per track.
    pub max_encodings: usize,
    /// Distance from the track's own mean that means "a different face".
    pub identity_break: f32,
    /// Skip the eye model on a track whose fused distance to every enrolled user is at
    /// least this (0: never skip). Only with a gallery: blinks are measured otherwise.
    pub eyes_gate: f32,
    /// Frames after a blink within which a post-blink encoding is sought.
    pub post_blink_frames: u32,
    pub blink: BlinkConfig,
    pub pad: PadConfig,
    pub challenge: ChallengeConfig,
}

/// Something the pipeline has to say.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FaceEvent {
    TrackStarted {
        track: u64,
        frame: u64,
    },
    Blink {
        track: u64,
        frame: u64,
        depth: f32,
        snr: f32,
        /// Strong enough to prove liveness.
        live: bool,
    },
    /// An active challenge: the person is asked to do this within `window_s`.
    Challenge {
        track: u64,
        frame: u64,
        at_s: f64,
        prompt: Prompt,
        window_s: f32,
    },
    Attempt(Attempt),
    TrackEnded {
        track: u64,
        frame: u64,
        reason: String,
    },
}

/// A decision-ready observation of one track: liveness plus a match result.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub track: u64,
    pub frame: u64,
    pub at_s: f64,
    /// A blink was seen on this track within the liveness window of the encodings.
    pub live: bool,
    /// Blinks strong enough to prove liveness, on this track so far.
    pub blinks: u32,
    pub blink_frame: Option<u64>,
    /// Frames between the blink completing and this attempt.
    pub frames_after_blink: Option<u64>,
    #[serde(flatten)]
    pub result: MatchResult,
    /// Presentation-attack detection over the frames of this attempt.
    pub presentation_attack: PadSummary,
    /// How the active challenge was answered, when one was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<Outcome>,
    #[serde(skip)]
    pub user_id: Option<UserId>,
    #[serde(skip)]
    pub role: Option<Role>,
    #[serde(skip)]
    pub enabled: Option<bool>,
    /// The SFace embeddings of a match made by dlib templates (enrolled before SFace),
    /// to store as the user's templates when the attempt is granted. Never serialised.
    #[serde(skip)]
    pub upgrade: Vec<Embedding>,
    /// The eye model was not run on this track: its face is far from every enrolled
    /// user ([`PipelineConfig::eyes_gate`]), so it is denied as not matching, not for
    /// want of a blink.
    pub eyes_gated: bool,
}

/// Timings gathered while processing (milliseconds). The per-frame sample vectors are
/// for measurement runs (replay, evals); a long-running daemon turns them off with
/// [`Pipeline::keep_samples`] so they do not grow for ever. The counters always count.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// When false, the `*_ms` vectors stay empty.
    pub keep_samples: bool,
    pub frames: u64,
    pub frames_with_face: u64,
    pub detect_ms: Vec<f64>,
    pub landmarks_ms: Vec<f64>,
    pub iris_ms: Vec<f64>,
    /// Eye measurements answered from the last one (the crops had not changed).
    pub iris_reused: u64,
    pub encode_ms: Vec<f64>,
    pub pad_ms: Vec<f64>,
    pub frame_wall_ms: Vec<f64>,
    pub frame_cpu_ms: Vec<f64>,
    pub full_detects: u64,
    /// Frames with no track that were not searched (see `idle_detect_every`).
    pub idle_skipped: u64,
    pub roi_detects: u64,
    pub pad_scored: u64,
}

/// How this frame's face box was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Det {
    Full,
    Roi,
    Tracked,
}

impl Stats {
    fn sample(&mut self, field: impl FnOnce(&mut Stats) -> &mut Vec<f64>, v: f64) {
        if self.keep_samples {
            field(self).push(v);
        }
    }

    /// Empty, recording samples.
    pub fn recording() -> Stats {
        Stats {
            keep_samples: true,
            ..Default::default()
        }
    }
}

struct Track {
    id: u64,
    bbox: BBox,
    /// HOG box expressed relative to the landmarks' bounding box (x, y, w, h).
    rel: [f32; 4],
    blink: BlinkTracker,
    /// (media time, frame, SFace embedding, dlib embedding while the gallery needs one).
    encodings: VecDeque<(Duration, u64, Embedding, Option<Embedding>)>,
    /// Fused PAD live probability of scored frames (media time, score).
    pad: VecDeque<(Duration, f32)>,
    last_encode_frame: Option<u64>,
    since_roi: u32,
    since_full: u32,
    roi_misses: u32,
    last_blink: Option<(Duration, u64)>,
    /// Frames left to find a post-blink encoding; Some(0) = waiting for any encoding.
    post_blink_wait: Option<u32>,
    post_blink_encoded: bool,
    granted: bool,
    attempted: bool,
    /// The active challenge waiting for its answer.
    challenge: Option<Pending>,
    /// A challenge went unanswered: this track is not granted.
    challenge_failed: bool,
    last_frame: u64,
    /// The fused distance of the track's recent encodings to the nearest enrolled user
    /// (None: no encodings, or no gallery).
    nearest: Option<f32>,
    /// The eye model is skipped for this track now.
    eyes_gated: bool,
}

impl Track {
    fn new(id: u64, bbox: BBox, blink: &BlinkConfig, frame: u64) -> Self {
        Self {
            id,
            bbox,
            rel: [0.0, 0.0, 1.0, 1.0],
            blink: BlinkTracker::new(blink.clone()),
            encodings: VecDeque::new(),
            pad: VecDeque::new(),
            last_encode_frame: None,
            since_roi: 0,
            since_full: 0,
            roi_misses: 0,
            last_blink: None,
            post_blink_wait: None,
            post_blink_encoded: false,
            granted: false,
            attempted: false,
            challenge: None,
            challenge_failed: false,
            last_frame: frame,
            nearest: None,
            eyes_gated: false,
        }
    }

    fn mean_encoding(&self) -> Option<Embedding> {
        let v: Vec<Embedding> = self.encodings.iter().map(|e| e.2.clone()).collect();
        Embedding::mean(&v)?.unit()
    }

    /// PAD scores since `from` (all of them when None).
    fn pad_since(&self, from: Option<Duration>) -> impl Iterator<Item = f32> + '_ {
        self.pad
            .iter()
            .filter(move |p| from.is_none_or(|f| p.0 >= f))
            .map(|p| p.1)
    }
}

/// Most PAD scores a track keeps (a quorum needs a few; a long track must not grow).
const PAD_KEEP: usize = 32;

/// Score PAD for the track's face on this frame and keep the score on the track.
fn score_pad(
    models: &mut Models,
    stats: &mut Stats,
    frame: &Frame,
    t: &mut Track,
) -> Result<(), VisionError> {
    let t0 = Instant::now();
    let p = models.live_probability(frame, &t.bbox)?;
    stats.sample(|s| &mut s.pad_ms, ms_since(t0));
    if let Some(p) = p {
        stats.pad_scored += 1;
        t.pad.push_back((frame.ts, p));
        while t.pad.len() > PAD_KEEP {
            t.pad.pop_front();
        }
    }
    Ok(())
}

/// One row of the optional per-frame trace (`eval blinks --trace`).
#[derive(Debug, Clone, Serialize)]
pub struct TraceRow {
    pub frame: u64,
    pub track: u64,
    pub detection: &'static str,
    pub ear_left: f32,
    pub ear_right: f32,
    pub level: Option<f32>,
    pub blink: bool,
}

pub struct Pipeline {
    models: Models,
    gallery: Gallery,
    cfg: PipelineConfig,
    track: Option<Track>,
    /// Frames still to pass before the next search for a face (no track).
    idle_wait: u32,
    next_track: u64,
    picker: Picker,
    pub stats: Stats,
    /// When set, one row per frame with a face is appended.
    pub trace: Option<Vec<TraceRow>>,
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Process CPU time (all threads), for per-frame CPU accounting.
pub fn process_cpu_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

impl Pipeline {
    pub fn new(models: Models, gallery: Gallery, cfg: PipelineConfig) -> Self {
        models.set_eye_reuse_below(cfg.blink.eye_reuse_below);
        Self {
            models,
            gallery,
            picker: Picker::new(cfg.challenge.seed),
            cfg,
            track: None,
            idle_wait: 0,
            next_track: 1,
            stats: Stats::recording(),
            trace: None,
        }
    }

    /// Keep per-frame timing samples (measurement runs) or only counters (the daemon).
    pub fn keep_samples(&mut self, keep: bool) {
        self.stats.keep_samples = keep;
        if !keep {
            self.stats = Stats::default();
        }
    }

    pub fn models(&self) -> &Models {
        &self.models
    }

    pub fn models_mut(&mut self) -> &mut Models {
        &mut self.models
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.cfg
    }

    pub fn set_gallery(&mut self, g: Gallery) {
        self.gallery = g;
    }

    pub fn gallery(&self) -> &Gallery {
        &self.gallery
    }

    fn detect(
        &mut self,
        frame: &Frame,
        roi: Option<BBox>,
        scale: f32,
    ) -> Result<Vec<BBox>, VisionError> {
        let t0 = Instant::now();
        let faces = match frame.patch(roi, scale)? {
            Some(p) => self.models.detect(&p)?,
            None => Vec::new(),
        };
        self.stats.sample(|s| &mut s.detect_ms, ms_since(t0));
        if roi.is_some() {
            self.stats.roi_detects += 1;
        } else {
            self.stats.full_detects += 1;
        }
        Ok(faces)
    }

    fn full_scale(&self, frame: &Frame) -> f32 {
        (self.cfg.detect_width as f32 / frame.width as f32).min(1.0)
    }

    /// Process one frame; returns what happened.
    pub fn process(&mut self, frame: &Frame) -> Result<Vec<FaceEvent>, VisionError> {
        let (c0, w0) = (process_cpu_ms(), Instant::now());
        let mut ev = Vec::new();
        let r = self.process_inner(frame, &mut ev);
        self.stats.frames += 1;
        let cpu = process_cpu_ms() - c0;
        self.stats.sample(|s| &mut s.frame_cpu_ms, cpu);
        self.stats.sample(|s| &mut s.frame_wall_ms, ms_since(w0));
        r.map(|_| ev)
    }

    /// A new track on `bbox`, not yet announced.
    fn make_track(&mut self, bbox: BBox, frame: u64) -> Track {
        let id = self.next_track;
        self.next_track += 1;
        Track::new(id, bbox, &self.cfg.blink, frame)
    }

    /// A new track on `bbox` (announced).
    fn new_track(&mut self, bbox: BBox, frame: u64, ev: &mut Vec<FaceEvent>) -> Track {
        let t = self.make_track(bbox, frame);
        ev.push(FaceEvent::TrackStarted { track: t.id, frame });
        t
    }

    /// Close a track: a last (not live) attempt if it never made one, then the end.
    fn close_track(
        &self,
        t: Track,
        frame: u64,
        at: Duration,
        reason: &str,
        ev: &mut Vec<FaceEvent>,
    ) {
        if let Some(p) = &t.challenge {
            // Gone before answering: the held-back attempt, failed.
            let a = self.answered(&t, frame, at, p.unanswered(at));
            ev.push(FaceEvent::Attempt(a));
        } else if !t.attempted && !t.granted && !t.encodings.is_empty() {
            let a = attempt(&self.gallery, &self.cfg, &t, frame, at, None);
            ev.push(FaceEvent::Attempt(a));
        }
        ev.push(FaceEvent::TrackEnded {
            track: t.id,
            frame,
            reason: reason.into(),
        });
    }

    /// End of a finite stream: close the open track.
    pub fn finish(&mut self) -> Vec<FaceEvent> {
        let mut ev = Vec::new();
        if let Some(t) = self.track.take() {
            let (f, at) = (
                t.last_frame,
                t.encodings.back().map(|e| e.0).unwrap_or_default(),
            );
            self.close_track(t, f, at, "end_of_stream", &mut ev);
        }
        ev
    }

    fn pick(faces: &[BBox], near: Option<&BBox>) -> Option<BBox> {
        match near {
            Some(n) => faces
                .iter()
                .map(|f| (f.iou(n), *f))
                .filter(|(iou, _)| *iou >= 0.2)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|x| x.1),
            None => faces
                .iter()
                .copied()
                .max_by(|a, b| a.area().total_cmp(&b.area())),
        }
    }

    /// The track is owned here for the whole frame, never reached through an `Option`:
    /// every path either puts it back, closes it, or replaces it.
    fn process_inner(&mut self, frame: &Frame, ev: &mut Vec<FaceEvent>) -> Result<(), VisionError> {
        let (mut t, mut fresh) = match self.track.take() {
            Some(t) => (t, false),
            None if self.idle_wait > 0 => {
                self.idle_wait -= 1;
                self.stats.idle_skipped += 1;
                return Ok(());
            }
            None => {
                let faces = self.detect(frame, None, self.full_scale(frame))?;
                let Some(b) = Self::pick(&faces, None) else {
                    // Nobody: a walk-up is found at most this many frames later; a track
                    // that ends is searched for again on the very next frame.
                    self.idle_wait = self.cfg.idle_detect_every.saturating_sub(1);
                    return Ok(());
                };
                (self.new_track(b, frame.index, ev), true)
            }
        };
        loop {
            match self.follow(frame, &mut t, fresh, ev) {
                Ok(Flow::Keep) => {
                    self.track = Some(t);
                    return Ok(());
                }
                Ok(Flow::End(reason)) => {
                    self.close_track(t, frame.index, frame.ts, reason, ev);
                    return Ok(());
                }
                Ok(Flow::Restart(reason, b)) => {
                    self.close_track(t, frame.index, frame.ts, reason, ev);
                    t = self.new_track(b, frame.index, ev);
                    fresh = true;
                }
                Err(e) => {
                    self.track = Some(t);
                    return Err(e);
                }
            }
        }
    }

    /// One frame of a track. `fresh`: its box was detected on this very frame.
    fn follow(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        fresh: bool,
        ev: &mut Vec<FaceEvent>,
    ) -> Result<Flow, VisionError> {
        // 1. Where is the face?
        let (bbox, det) = if fresh {
            (t.bbox, Det::Full)
        } else {
            let prev = t.bbox;
            let full_due = t.since_full + 1 >= self.cfg.full_detect_every;
            let roi_due = t.since_roi + 1 >= self.cfg.roi_check_every;
            let mut found = None;
            if roi_due && !full_due {
                // A close look around the face: cheap.
                // The face at ROI_FACE_PX wide: HOG finds faces from below and small faces
                // far more often at that size than at its 80 px minimum.
                let scale = (ROI_FACE_PX / prev.w.max(1.0)).min(2.0);
                let faces = self.detect(frame, Some(prev.expand(0.4)), scale)?;
                found = Self::pick(&faces, Some(&prev)).map(|b| (b, Det::Roi));
            }
            if full_due || (roi_due && found.is_none()) {
                // The whole frame: every period (someone else may have stepped in), and
                // when the close look missed (HOG misses some faces on a tight crop, a
                // face seen from below among them, that it finds in the whole frame).
                let faces = self.detect(frame, None, self.full_scale(frame))?;
                match (Self::pick(&faces, Some(&prev)), Self::pick(&faces, None)) {
                    (Some(b), _) => found = Some((b, Det::Full)),
                    (None, Some(b)) if full_due => return Ok(Flow::Restart("lost", b)),
                    _ => {}
                }
            }
            match found {
                Some(f) => f,
                None if full_due || roi_due => {
                    t.roi_misses += 1;
                    t.since_roi = 0;
                    t.since_full = 0;
                    if t.roi_misses >= 2 {
                        return Ok(Flow::End("lost"));
                    }
                    (prev, Det::Tracked)
                }
                None => (prev, Det::Tracked),
            }
        };
        let detected = det != Det::Tracked;

        // 2. Landmarks on a patch around the face (scaled so big faces stay cheap).
        let lscale = (220.0 / bbox.w.max(1.0)).min(2.0);
        let Some(patch) = frame.patch(Some(bbox.expand(0.3)), lscale)? else {
            return Ok(Flow::End("left_frame"));
        };
        let t0 = Instant::now();
        let shape = self.models.landmarks(&patch, &bbox);
        self.stats.sample(|s| &mut s.landmarks_ms, ms_since(t0));
        let Some(shape) = shape else {
            return Ok(Flow::End("no_landmarks"));
        };
        let lb = shape.points.bbox();
        if !detected && lb.iou(&bbox) < 0.15 {
            // The landmarks wandered off: re-detect on the next frame.
            return Ok(Flow::End("lost"));
        }
        self.stats.frames_with_face += 1;

        // 3. Update the track's geometry.
        t.last_frame = frame.index;
        if detected {
            t.rel = [
                (bbox.x - lb.x) / lb.w.max(1.0),
                (bbox.y - lb.y) / lb.h.max(1.0),
                bbox.w / lb.w.max(1.0),
                bbox.h / lb.h.max(1.0),
            ];
            t.roi_misses = 0;
            t.since_roi = 0;
            if det == Det::Full {
                t.since_full = 0;
            }
        }
        t.since_roi += 1;
        t.since_full += 1;
        t.bbox = BBox {
            x: lb.x + t.rel[0] * lb.w,
            y: lb.y + t.rel[1] * lb.h,
            w: t.rel[2] * lb.w,
            h: t.rel[3] * lb.h,
        };

        // 4. Blinks, and 5. encoding: not once the track is granted (nothing it does then
        // changes anything, and the iris model is most of a frame's cost).
        if !t.granted {
            // A face far from every enrolled user: no blink could open for it, so the eye
            // model is not run; it is encoded now and then in case it comes closer.
            t.eyes_gated = self.cfg.eyes_gate > 0.0
                && t.encodings.len() >= self.cfg.early_encodings
                && t.nearest.is_some_and(|d| d >= self.cfg.eyes_gate);
            if t.eyes_gated {
                let since = t.last_encode_frame.map(|f| frame.index.saturating_sub(f));
                if since.is_none_or(|s| s >= self.cfg.refresh_every_frames) {
                    if let Some(replaced) = self.maybe_encode(frame, t, &patch, &shape, ev)? {
                        return Ok(replaced);
                    }
                }
            } else {
                let Some(eyes) = self.eyes(frame, &patch, &bbox, &shape)? else {
                    return Ok(Flow::End("no_eyes"));
                };
                let ear = self.blinks(frame, t, eyes, det, ev);
                if self.wants_encoding(t, frame.index, ear) {
                    if let Some(replaced) = self.maybe_encode(frame, t, &patch, &shape, ev)? {
                        return Ok(replaced);
                    }
                }
            }
        }

        // 6. Decide (or, with a prompt out, see whether it has been answered).
        let yaw = shape.points.pose().0;
        if t.challenge.is_some() {
            self.challenge_step(frame, t, Some(yaw), ev);
        } else {
            self.maybe_attempt(frame, t, yaw, ev)?;
        }
        Ok(Flow::Keep)
    }

    /// How open the (image-left, image-right) eyes are on this frame, by the configured
    /// signal; None when it could not measure both.
    fn eyes(
        &mut self,
        frame: &Frame,
        patch: &Patch,
        bbox: &BBox,
        shape: &Shape,
    ) -> Result<Option<(f32, f32)>, VisionError> {
        match self.cfg.blink.eyes {
            EyeSignal::Landmarks => self.models.ears_68(patch, bbox),
            EyeSignal::Iris => {
                let (t0, before) = (Instant::now(), self.models.eye_reused());
                let o = self.models.eye_openness(frame, &shape.points)?;
                self.stats.sample(|s| &mut s.iris_ms, ms_since(t0));
                self.stats.iris_reused += self.models.eye_reused() - before;
                Ok(o)
            }
        }
    }

    /// Feed the track's blink tracker with this frame's eyes; the signal fed.
    fn blinks(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        (el, er): (f32, f32),
        det: Det,
        ev: &mut Vec<FaceEvent>,
    ) -> f32 {
        let ear = super::blink::both_eyes(el, er);
        let blinked = t.blink.push(frame.ts, ear);
        if let Some(tr) = self.trace.as_mut() {
            tr.push(TraceRow {
                frame: frame.index,
                track: t.id,
                detection: match det {
                    Det::Full => "full",
                    Det::Roi => "roi",
                    Det::Tracked => "tracked",
                },
                ear_left: el,
                ear_right: er,
                level: t.blink.level(),
                blink: blinked.is_some(),
            });
        }
        if let Some(b) = blinked {
            if b.live {
                t.last_blink = Some((frame.ts, frame.index));
                t.post_blink_wait = Some(self.cfg.post_blink_frames);
                t.post_blink_encoded = false;
            }
            ev.push(FaceEvent::Blink {
                track: t.id,
                frame: frame.index,
                depth: b.depth,
                snr: b.snr,
                live: b.live,
            });
        }
        ear
    }

    fn wants_encoding(&self, t: &Track, frame: u64, ear: f32) -> bool {
        if t.granted || t.blink.is_closing() {
            return false;
        }
        if t.blink.relative(ear).is_some_and(|r| r < 0.85) {
            return false;
        }
        let since = t.last_encode_frame.map(|f| frame.saturating_sub(f));
        let post_blink = t.post_blink_wait.is_some() && !t.post_blink_encoded;
        let early = t.encodings.len() < self.cfg.early_encodings
            && since.is_none_or(|s| s >= self.cfg.encode_gap_frames);
        let refresh = since.is_some_and(|s| s >= self.cfg.refresh_every_frames);
        post_blink || early || refresh
    }

    /// Encode a good frame (and score PAD on it). Some(flow) when the face turned out to
    /// be someone else's: the track must restart on it, this frame's encoding first.
    fn maybe_encode(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        patch: &Patch,
        shape: &Shape,
        ev: &mut Vec<FaceEvent>,
    ) -> Result<Option<Flow>, VisionError> {
        let q = quality::measure(frame, &shape.points)?;
        if q.check(&self.cfg.gates).is_err() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let emb = self.models.encode(frame, shape)?;
        let legacy = if self.gallery.needs_legacy() && self.cfg.legacy_policy.is_some() {
            self.models.encode_legacy(patch, shape)?
        } else {
            None
        };
        self.stats.sample(|s| &mut s.encode_ms, ms_since(t0));
        let Some(emb) = emb else { return Ok(None) };
        if let Some(mean) = t.mean_encoding() {
            if t.encodings.len() >= 2 && mean.distance(&emb) > self.cfg.identity_break {
                // A different face in the same place: a new track, with no blink, that
                // starts from this frame's encoding.
                let mut next = self.make_track(t.bbox, frame.index);
                self.keep_encoding(frame, &mut next, emb, legacy)?;
                let old = std::mem::replace(t, next);
                self.close_track(old, frame.index, frame.ts, "identity_changed", ev);
                ev.push(FaceEvent::TrackStarted {
                    track: t.id,
                    frame: frame.index,
                });
                return Ok(Some(Flow::Keep));
            }
        }
        self.keep_encoding(frame, t, emb, legacy)?;
        Ok(None)
    }

    fn keep_encoding(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        emb: Embedding,
        legacy: Option<Embedding>,
    ) -> Result<(), VisionError> {
        t.encodings.push_back((frame.ts, frame.index, emb, legacy));
        while t.encodings.len() > self.cfg.max_encodings {
            t.encodings.pop_front();
        }
        t.last_encode_frame = Some(frame.index);
        if t.post_blink_wait.is_some() {
            t.post_blink_encoded = true;
        }
        // Nearest enrolled user over the encodings a decision would fuse.
        let recent: Vec<Embedding> = t
            .encodings
            .iter()
            .rev()
            .take(self.cfg.fuse_last)
            .map(|e| e.2.clone())
            .collect();
        t.nearest = self.gallery.scores(&recent).first().map(|s| s.1);
        // The frames that are encoded are the ones PAD scores: good, frontal, spread over
        // the track (early, after the blink, refreshes).
        score_pad(&mut self.models, &mut self.stats, frame, t)
    }

    /// A frame of a track with a prompt out: emit the held-back attempt once answered
    /// (or once the window has passed, failed).
    fn challenge_step(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        yaw: Option<f32>,
        ev: &mut Vec<FaceEvent>,
    ) {
        let blinks = t.blink.live_blinks();
        let Some(p) = t.challenge.as_mut() else {
            return;
        };
        let Some(outcome) = p.step(&self.cfg.challenge, frame.ts, blinks, yaw) else {
            return;
        };
        t.challenge = None;
        t.post_blink_wait = None;
        let passed = outcome.passed;
        let a = self.answered(t, frame.index, frame.ts, outcome);
        t.attempted = true;
        if passed {
            t.granted = a.result.verdict == Verdict::Match
                && a.presentation_attack.verdict == PadVerdict::Live;
        } else {
            t.challenge_failed = true;
        }
        ev.push(FaceEvent::Attempt(a));
    }

    /// The attempt a prompt held back, now with how it was answered (over the track's
    /// evidence since its last blink).
    fn answered(&self, t: &Track, frame: u64, at: Duration, outcome: Outcome) -> Attempt {
        let blink_t = t.last_blink.map(|b| b.0);
        let mut a = attempt(&self.gallery, &self.cfg, t, frame, at, blink_t);
        a.challenge = Some(outcome);
        a
    }

    fn maybe_attempt(
        &mut self,
        frame: &Frame,
        t: &mut Track,
        yaw: f32,
        ev: &mut Vec<FaceEvent>,
    ) -> Result<(), VisionError> {
        if t.challenge_failed {
            // Not granted on this track any more: the person steps away and back.
            t.post_blink_wait = None;
            return Ok(());
        }
        let window = self.cfg.liveness_window;
        let Some(wait) = t.post_blink_wait else {
            return Ok(());
        };
        let Some((blink_t, _)) = t.last_blink else {
            t.post_blink_wait = None;
            return Ok(());
        };
        if frame.ts.saturating_sub(blink_t) > window {
            t.post_blink_wait = None;
            return Ok(());
        }
        let in_window = t
            .encodings
            .iter()
            .any(|e| e.0 + window >= blink_t && e.0 <= frame.ts);
        let mut ready = (t.post_blink_encoded || wait == 0) && in_window;
        // Too few PAD scores for a quorum: score this frame too (it has the face), and
        // wait for more while the post-blink wait lasts.
        let pad_from = blink_t.checked_sub(window);
        let quorum = self.cfg.pad.min_frames as usize;
        if ready && t.pad_since(pad_from).count() < quorum {
            if t.pad.back().is_none_or(|p| p.0 != frame.ts) {
                score_pad(&mut self.models, &mut self.stats, frame, t)?;
            }
            if t.pad_since(pad_from).count() < quorum && wait > 0 {
                ready = false;
            }
        }
        if !ready {
            t.post_blink_wait = Some(wait.saturating_sub(1));
            return Ok(());
        }
        t.post_blink_wait = None;
        let a = attempt(
            &self.gallery,
            &self.cfg,
            t,
            frame.index,
            frame.ts,
            Some(blink_t),
        );
        let c = &self.cfg.challenge;
        if c.needed(
            &a.result,
            &a.presentation_attack,
            self.cfg.policy.strict_threshold,
        ) {
            // Held back until the prompt is answered on this track.
            let prompt = self.picker.pick(&c.prompts);
            t.challenge = Some(Pending::new(prompt, frame.ts, t.blink.live_blinks(), yaw));
            ev.push(FaceEvent::Challenge {
                track: t.id,
                frame: frame.index,
                at_s: frame.ts.as_secs_f64(),
                prompt,
                window_s: c.window_s,
            });
            return Ok(());
        }
        t.attempted = true;
        t.granted =
            a.result.verdict == Verdict::Match && a.presentation_attack.verdict == PadVerdict::Live;
        ev.push(FaceEvent::Attempt(a));
        Ok(())
    }
}

/// What happens to a track after a frame.
enum Flow {
    Keep,
    End(&'static str),
    /// The track ended; a new one starts on this box (found on the same frame).
    Restart(&'static str, BBox),
}

/// The attempt a track makes now: fused match over its recent encodings and the PAD
/// verdict over its scored frames, those within the liveness window of the blink when
/// there is one (`live`), all of them otherwise.
fn attempt(
    gallery: &Gallery,
    cfg: &PipelineConfig,
    t: &Track,
    frame: u64,
    at: Duration,
    blink_t: Option<Duration>,
) -> Attempt {
    let window = cfg.liveness_window;
    let used: Vec<_> = t
        .encodings
        .iter()
        .rev()
        .filter(|e| blink_t.is_none_or(|b| e.0 + window >= b))
        .take(cfg.fuse_last)
        .collect();
    let probes: Vec<Embedding> = used.iter().map(|e| e.2.clone()).collect();
    // dlib probes only when every fused frame has one (a gallery that came to need them
    // mid-track gets them from the next frames).
    let legacy: Vec<Embedding> = used.iter().filter_map(|e| e.3.clone()).collect();
    let legacy = match cfg.legacy_policy {
        Some(_) if legacy.len() == probes.len() => legacy,
        _ => Vec::new(),
    };
    let result = gallery.identify_both(
        &probes,
        cfg.policy,
        &legacy,
        cfg.legacy_policy.unwrap_or(MatchPolicy::DLIB_LEGACY),
    );
    let scores: Vec<f32> = t
        .pad_since(blink_t.and_then(|b| b.checked_sub(window)))
        .collect();
    let pad = PadSummary::over(&scores, &cfg.pad);
    let user = result.best_index.map(|i| &gallery.users()[i]);
    let matched = result.verdict == Verdict::Match;
    // A user matched by dlib templates gets this attempt's SFace probes as templates
    // once access control grants it (see `crate::access`).
    let upgrade = if matched && result.model != lockerd_core::types::EmbeddingModel::CURRENT {
        probes
    } else {
        Vec::new()
    };
    Attempt {
        track: t.id,
        frame,
        at_s: at.as_secs_f64(),
        live: blink_t.is_some(),
        blinks: t.blink.live_blinks(),
        blink_frame: t.last_blink.map(|b| b.1),
        frames_after_blink: t.last_blink.map(|b| frame.saturating_sub(b.1)),
        user_id: user.filter(|_| matched).map(|u| u.user_id),
        role: user.filter(|_| matched).map(|u| u.role),
        enabled: user.filter(|_| matched).map(|u| u.enabled),
        result,
        presentation_attack: pad,
        challenge: None,
        upgrade,
        eyes_gated: t.eyes_gated,
    }
}

/// Landmarks of the most prominent face in a still image, with the patch they were
/// found on (for enrollment and photo evaluation).
pub struct StillFace {
    pub patch: Patch,
    pub shape: Shape,
    pub bbox: BBox,
    pub faces: usize,
    /// Width of the largest of the other faces (None when this one is alone).
    pub next_width: Option<f32>,
}

impl StillFace {
    /// This face is the photo's subject: alone, or at least [`DOMINANT`] times as wide
    /// as every other face (a bystander further back).
    pub fn dominant(&self) -> bool {
        self.next_width.is_none_or(|w| self.bbox.w >= DOMINANT * w)
    }
}

/// How much wider than any other face a photo's largest face must be to be taken as its
/// subject (a face 1.5x as wide is about 1.5x nearer the camera).
pub const DOMINANT: f32 = 1.5;

/// Find the largest face in a still image: HOG on the image (downscaled to at most 1024
/// px wide; small images are upsampled 2x first so faces under 80 px are found).
pub fn still_face(models: &Models, frame: &Frame) -> Result<Option<StillFace>, VisionError> {
    let scale = if frame.width < 400 {
        2.0
    } else {
        (1024.0 / frame.width as f32).min(1.0)
    };
    face_at_scale(models, frame, scale)
}

/// The largest face with HOG run at `scale` (video frames: no upsampling).
pub fn face_at_scale(
    models: &Models,
    frame: &Frame,
    scale: f32,
) -> Result<Option<StillFace>, VisionError> {
    let Some(p) = frame.patch(None, scale)? else {
        return Ok(None);
    };
    let faces = models.detect(&p)?;
    let mut by_size = faces.clone();
    by_size.sort_by(|a, b| b.area().total_cmp(&a.area()));
    let Some(&bbox) = by_size.first() else {
        return Ok(None);
    };
    let next_width = by_size.get(1).map(|b| b.w);
    let lscale = (220.0 / bbox.w.max(1.0)).min(2.0);
    let Some(patch) = frame.patch(Some(bbox.expand(0.3)), lscale)? else {
        return Ok(None);
    };
    let Some(shape) = models.landmarks(&patch, &bbox) else {
        return Ok(None);
    };
    Ok(Some(StillFace {
        patch,
        shape,
        bbox,
        faces: faces.len(),
        next_width,
    }))
}

/// The four rotations of a still; the first in which HOG finds a face is "upright".
pub fn upright_face(
    models: &Models,
    frame: &Frame,
) -> Result<Option<(Frame, crate::frame::BBox)>, VisionError> {
    use opencv::core::{rotate, ROTATE_180, ROTATE_90_CLOCKWISE, ROTATE_90_COUNTERCLOCKWISE};
    use opencv::prelude::*;
    for code in [
        None,
        Some(ROTATE_90_CLOCKWISE),
        Some(ROTATE_90_COUNTERCLOCKWISE),
        Some(ROTATE_180),
    ] {
        let f = match code {
            None => frame.clone(),
            Some(c) => {
                let mut out = opencv::core::Mat::default();
                rotate(&frame.as_mat()?, &mut out, c)
                    .map_err(|e| VisionError::OpenCv(e.to_string()))?;
                let bytes = out
                    .data_bytes()
                    .map_err(|e| VisionError::OpenCv(e.to_string()))?
                    .to_vec();
                Frame::from_rgb(
                    bytes,
                    out.cols() as u32,
                    out.rows() as u32,
                    0,
                    Duration::ZERO,
                )?
            }
        };
        if let Some(face) = still_face(models, &f)? {
            return Ok(Some((f, face.bbox)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_only_when_asked() {
        let mut on = Stats::recording();
        let mut off = Stats::default();
        for i in 0..1000 {
            on.sample(|s| &mut s.frame_cpu_ms, i as f64);
            off.sample(|s| &mut s.frame_cpu_ms, i as f64);
            off.frames += 1;
        }
        assert_eq!(on.frame_cpu_ms.len(), 1000);
        assert!(
            off.frame_cpu_ms.is_empty(),
            "a daemon's stats must not grow per frame"
        );
        assert_eq!(off.frames, 1000);
    }
}
