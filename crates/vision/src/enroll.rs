//! Enrollment: photos and clips in, face templates out.
//!
//! A photo gives one template: its subject's face (the only one, or one at least
//! [`DOMINANT`] times as wide as any other; a photo of two people alike is refused). A clip (or a folder of frames, or later
//! the live camera) must show one person who blinks: good, eyes-open frames are encoded,
//! frames that disagree with the rest are dropped, and up to `max_templates` varied ones
//! are kept (farthest-first). A clip with no blink is refused, so a printed photo held up
//! to the camera cannot be enrolled this way.

use super::blink::BlinkTracker;
use super::frame::Frame;
use super::models::Models;
use super::pipeline::{face_at_scale, still_face, DOMINANT};
use super::quality::{self, QualityGates, Reject};
use super::source::FrameSource;
use super::source::{is_image, load_image, open_path};
use super::VisionError;
use crate::config::VisionConfig;
use lockerd_core::types::Embedding;
use serde::Serialize;
use std::path::Path;

// Where enrollment takes its faces from: a domain type (the request API names it
// `EnrollSource`), so that clients of the API link nothing of vision.
pub use lockerd_core::types::EnrollInput;

/// Why an enrollment source was refused (the API turns it into a progress status).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    NoFace,
    SeveralFaces,
    NoBlink,
    /// Too small, turned, blurred or dark.
    Poor,
    /// The face changes during the clip.
    Inconsistent,
    Cancelled,
}

/// A frame this far (SFace distance) from the clip's mean face is someone else or a bad
/// frame, and dropped; a third of them refuses the clip. Same-session frames of one person
/// lie well inside it, two different people well outside (`identity_break` is 0.85).
const OUTLIER: f32 = 0.75;

fn refuse(why: Refusal, msg: String) -> VisionError {
    VisionError::Enroll(why, msg)
}

/// One template ready to store.
#[derive(Debug, Clone)]
pub struct Sample {
    pub embedding: Embedding,
    pub quality: f32,
    pub source: String,
}

/// What a photo gave, with the gates it failed (if any).
#[derive(Debug, Clone)]
pub struct PhotoResult {
    pub sample: Sample,
    pub faces: usize,
    /// The face taken is the photo's subject (see [`super::pipeline::StillFace::dominant`]).
    pub dominant: bool,
    pub rejected: Option<Reject>,
}

/// How a template made from a still photo names its source (`photo:FILE`, `photo:sent`).
pub const PHOTO_SOURCE: &str = "photo:";

/// The template was made from a still photo, not the kiosk's camera or a clip.
pub fn is_photo_source(source: &str) -> bool {
    source.starts_with(PHOTO_SOURCE)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Embed the largest face of a photo.
pub fn from_photo(
    models: &Models,
    gates: &QualityGates,
    path: &Path,
) -> Result<PhotoResult, VisionError> {
    let frame = load_image(path)?;
    one_face(
        models,
        gates,
        &frame,
        &format!("{PHOTO_SOURCE}{}", file_name(path)),
        &path.display().to_string(),
    )
}

/// The one face of a photo (`what` names it in refusals).
fn one_face(
    models: &Models,
    gates: &QualityGates,
    frame: &Frame,
    source: &str,
    what: &str,
) -> Result<PhotoResult, VisionError> {
    let r = from_frame(models, gates, frame, source)?
        .ok_or_else(|| refuse(Refusal::NoFace, format!("no face found in {what}")))?;
    if !r.dominant {
        return Err(refuse(
            Refusal::SeveralFaces,
            format!(
                "{what}: {} faces in the photo and none at least {DOMINANT}x as wide as the others; \
                 enroll from a photo of one person (or crop it)",
                r.faces
            ),
        ));
    }
    Ok(r)
}

/// Embed the largest face in a frame; `Ok(None)` when there is none.
pub fn from_frame(
    models: &Models,
    gates: &QualityGates,
    frame: &Frame,
    source: &str,
) -> Result<Option<PhotoResult>, VisionError> {
    let Some(face) = still_face(models, frame)? else {
        return Ok(None);
    };
    let q = quality::measure(frame, &face.shape.points)?;
    let Some(embedding) = models.encode(frame, &face.shape)? else {
        return Ok(None);
    };
    Ok(Some(PhotoResult {
        sample: Sample {
            embedding,
            quality: q.score(gates),
            source: source.to_owned(),
        },
        faces: face.faces,
        dominant: face.dominant(),
        rejected: q.check(gates).err(),
    }))
}

/// What a clip gave.
#[derive(Debug, Clone, Serialize)]
pub struct ClipReport {
    pub frames: u64,
    pub frames_with_face: u64,
    pub frames_with_several_faces: u64,
    pub blinks: u32,
    pub candidates: usize,
    pub outliers_dropped: usize,
    pub kept: usize,
}

/// Enroll from a clip or folder of frames: needs one person and a blink.
pub fn from_clip(
    models: &Models,
    cfg: &VisionConfig,
    path: &Path,
    max_templates: usize,
) -> Result<(Vec<Sample>, ClipReport), VisionError> {
    let mut src = open_path(path)?;
    let never = std::sync::atomic::AtomicBool::new(false);
    from_source(
        models,
        cfg,
        src.as_mut(),
        &path.display().to_string(),
        &file_name(path),
        max_templates,
        &never,
    )
}

/// Enroll from any frame source (a clip, or the live camera for a while); `cancel`
/// stops it between frames.
pub fn from_source(
    models: &Models,
    cfg: &VisionConfig,
    src: &mut dyn FrameSource,
    what: &str,
    name: &str,
    max_templates: usize,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<(Vec<Sample>, ClipReport), VisionError> {
    let gates = cfg.gates();
    let live_source = !src.is_replay();
    let mut blink = BlinkTracker::new(cfg.blink.clone());
    let mut cands: Vec<(Embedding, f32)> = Vec::new();
    let mut rep = ClipReport {
        frames: 0,
        frames_with_face: 0,
        frames_with_several_faces: 0,
        blinks: 0,
        candidates: 0,
        outliers_dropped: 0,
        kept: 0,
    };
    let mut last_encoded: Option<u64> = None;
    while let Some(frame) = src.next_frame()? {
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(refuse(Refusal::Cancelled, format!("{what}: cancelled")));
        }
        rep.frames += 1;
        let scale = (cfg.detect_width as f32 / frame.width as f32).min(1.0);
        let Some(face) = face_at_scale(models, &frame, scale)? else {
            continue;
        };
        rep.frames_with_face += 1;
        if face.faces > 1 {
            rep.frames_with_several_faces += 1;
        }
        // The eyes as the pipeline sees them.
        let Some((l, r)) = models.eye_openness(&frame, &face.shape.points)? else {
            continue;
        };
        let ear = super::blink::both_eyes(l, r);
        blink.push(frame.ts, ear);
        let open = blink.relative(ear).is_some_and(|x| x >= 0.9) && !blink.is_closing();
        let spaced = last_encoded.is_none_or(|f| frame.index >= f + 3);
        if cands.len() >= 40 {
            if live_source && blink.blinks() > 0 {
                // The camera: enough good frames and a blink; no need to wait longer.
                break;
            }
            continue;
        }
        if !open || !spaced {
            continue;
        }
        let q = quality::measure(&frame, &face.shape.points)?;
        if q.check(&gates).is_err() {
            continue;
        }
        if let Some(e) = models.encode(&frame, &face.shape)? {
            cands.push((e, q.score(&gates)));
            last_encoded = Some(frame.index);
        }
    }
    rep.blinks = blink.blinks();
    rep.candidates = cands.len();
    if rep.frames_with_face == 0 {
        return Err(refuse(
            Refusal::NoFace,
            format!("{what}: no face in {} frames", rep.frames),
        ));
    }
    if rep.frames_with_several_faces * 5 > rep.frames_with_face.max(1) {
        return Err(refuse(
            Refusal::SeveralFaces,
            format!(
                "{what}: more than one face in {} of {} frames; enroll one person at a time",
                rep.frames_with_several_faces, rep.frames_with_face
            ),
        ));
    }
    if rep.blinks == 0 {
        return Err(refuse(Refusal::NoBlink, format!(
            "{what}: no blink seen in {} frames with a face; a clip must show a live person blinking",
            rep.frames_with_face
        )));
    }
    if cands.len() < 2 {
        return Err(refuse(
            Refusal::Poor,
            format!(
                "{what}: only {} good frame(s) (face too small, turned, blurred or eyes closed)",
                cands.len()
            ),
        ));
    }
    // Drop frames that disagree with the rest (another person passing, a bad frame).
    let all: Vec<Embedding> = cands.iter().map(|c| c.0.clone()).collect();
    let Some(mean) = Embedding::mean(&all).and_then(|m| m.unit()) else {
        return Err(refuse(Refusal::Poor, format!("{what}: no usable face")));
    };
    let before = cands.len();
    cands.retain(|c| c.0.distance(&mean) <= OUTLIER);
    rep.outliers_dropped = before - cands.len();
    if cands.len() * 3 < before * 2 {
        return Err(refuse(
            Refusal::Inconsistent,
            format!(
                "{what}: the face changes during the clip ({} of {before} frames disagree)",
                rep.outliers_dropped
            ),
        ));
    }
    let chosen = farthest_first(&cands, max_templates);
    rep.kept = chosen.len();
    Ok((
        chosen
            .into_iter()
            .map(|i| Sample {
                embedding: cands[i].0.clone(),
                quality: cands[i].1,
                source: format!("clip:{name}#{i}"),
            })
            .collect(),
        rep,
    ))
}

/// Pick up to `k` items: the best quality first, then each time the one farthest from
/// those already picked (varied pose and expression).
fn farthest_first(c: &[(Embedding, f32)], k: usize) -> Vec<usize> {
    if c.is_empty() || k == 0 {
        return Vec::new();
    }
    let first = (0..c.len())
        .max_by(|&a, &b| c[a].1.total_cmp(&c[b].1))
        .unwrap_or(0);
    let mut chosen = vec![first];
    while chosen.len() < k.min(c.len()) {
        let next = (0..c.len())
            .filter(|i| !chosen.contains(i))
            .max_by(|&a, &b| {
                let da = chosen
                    .iter()
                    .map(|&j| c[a].0.distance(&c[j].0))
                    .fold(f32::MAX, f32::min);
                let db = chosen
                    .iter()
                    .map(|&j| c[b].0.distance(&c[j].0))
                    .fold(f32::MAX, f32::min);
                da.total_cmp(&db)
            });
        match next {
            Some(n) => chosen.push(n),
            None => break,
        }
    }
    chosen
}

/// Templates for one path given to `enroll --from`: a photo, or a clip/folder.
pub fn samples_from_path(
    models: &Models,
    cfg: &VisionConfig,
    path: &Path,
    allow_poor_photo: bool,
) -> Result<Vec<Sample>, VisionError> {
    if is_image(path) {
        let r = from_photo(models, &cfg.gates(), path)?;
        gated(r, allow_poor_photo, &path.display().to_string())
    } else {
        Ok(from_clip(models, cfg, path, 5)?.0)
    }
}

/// Templates from a photo sent in a request (JPEG or PNG bytes, decoded with the same
/// size and decompression-bomb limits as a file).
pub fn samples_from_image_bytes(
    models: &Models,
    cfg: &VisionConfig,
    bytes: &[u8],
    allow_poor_photo: bool,
) -> Result<Vec<Sample>, VisionError> {
    let what = "the photo sent";
    let frame = super::source::decode_image(bytes, what)?;
    let r = one_face(
        models,
        &cfg.gates(),
        &frame,
        &format!("{PHOTO_SOURCE}sent"),
        what,
    )?;
    gated(r, allow_poor_photo, what)
}

/// A photo's sample, unless it fails the quality gate (and poor photos are not allowed).
fn gated(r: PhotoResult, allow_poor: bool, what: &str) -> Result<Vec<Sample>, VisionError> {
    if let (Some(rej), false) = (r.rejected, allow_poor) {
        return Err(refuse(
            Refusal::Poor,
            format!(
                "{what}: photo fails the quality gate ({rej:?}); use a sharper, frontal, larger photo"
            ),
        ));
    }
    Ok(vec![r.sample])
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerd_core::types::EMBEDDING_DIM;

    fn e(x: f32, y: f32) -> Embedding {
        let mut v = [0f32; EMBEDDING_DIM];
        v[0] = x;
        v[1] = y;
        Embedding(v)
    }

    #[test]
    fn farthest_first_starts_with_best_quality_and_spreads() {
        let c = vec![
            (e(0.0, 0.0), 0.5),
            (e(0.01, 0.0), 0.9),
            (e(0.3, 0.0), 0.4),
            (e(0.0, 0.3), 0.4),
            (e(0.02, 0.0), 0.8),
        ];
        let got = farthest_first(&c, 3);
        assert_eq!(got[0], 1);
        assert!(got.contains(&2) && got.contains(&3), "{got:?}");
        assert_eq!(farthest_first(&c, 10).len(), 5);
        assert!(farthest_first(&[], 3).is_empty());
    }
}
