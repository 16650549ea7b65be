//! Presentation-attack detection (PAD): is the face in front of the camera a live face,
//! or one shown on a screen or on paper?
//!
//! Two MiniFASNet CNNs (V2 on the face box enlarged 2.7x, V1SE on it enlarged 4.0x; 80x80
//! BGR input, float 0-255) run through OpenCV's `dnn` module; their softmax "live" class
//! (index 1) is averaged into one live probability per frame. The pipeline scores only
//! frames it already selected (those it encodes, and the attempt frame when the track has
//! too few scores), keeps the scores per track, and a [`PadSummary`] over a quorum of
//! frames spread over the attempt goes out with every [`super::pipeline::Attempt`]. Access
//! control grants only a `live` verdict. Owned by whoever owns the [`super::models::Models`]
//! (one per thread: `Net` is `Send`, not `Sync`).

use super::frame::{BBox, Frame};
use super::VisionError;
use opencv::core::{Mat, Rect as CvRect, Scalar, Size};
use opencv::dnn::Net;
use opencv::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FAS_V2: &str = "MiniFASNetV2.onnx";
pub const FAS_V1SE: &str = "MiniFASNetV1SE.onnx";

/// The face box grows by this before the model's own scale: dlib's HOG box is tighter
/// than the SSD box MiniFASNet was trained with (it stops at the eyebrows).
const HOG_TO_SSD: f32 = 1.15;
/// Each model with the scale of its crop.
const NETS: [(&str, f32); 2] = [(FAS_V2, 2.7), (FAS_V1SE, 4.0)];
const INPUT: i32 = 80;

fn cv(e: opencv::Error) -> VisionError {
    VisionError::OpenCv(e.to_string())
}

/// When a track's scores make a verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PadConfig {
    /// A frame is live when its fused live probability is at least this.
    pub live_at: f32,
    /// Frames that must be scored before any verdict.
    pub min_frames: u32,
    /// Share of scored frames that must be live for `live`.
    pub live_share: f32,
    /// At most this share live is a clear `attack`.
    pub attack_share: f32,
}

impl Default for PadConfig {
    fn default() -> Self {
        Self {
            live_at: 0.5,
            min_frames: 3,
            live_share: 0.6,
            attack_share: 0.34,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PadVerdict {
    Live,
    Attack,
    Unknown,
}

/// What PAD says about one attempt (`presentation_attack` in replay and eval output).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PadSummary {
    pub frames_scored: u32,
    pub frames_live: u32,
    pub verdict: PadVerdict,
    /// Median fused live probability of the scored frames.
    pub median: Option<f32>,
}

impl PadSummary {
    /// The verdict over `scores` (one fused live probability per scored frame).
    pub fn over(scores: &[f32], cfg: &PadConfig) -> PadSummary {
        let n = scores.len() as u32;
        let live = scores.iter().filter(|s| **s >= cfg.live_at).count() as u32;
        let share = if n == 0 { 0.0 } else { live as f32 / n as f32 };
        let verdict = if n < cfg.min_frames.max(1) {
            PadVerdict::Unknown
        } else if share >= cfg.live_share {
            PadVerdict::Live
        } else if share <= cfg.attack_share {
            PadVerdict::Attack
        } else {
            PadVerdict::Unknown
        };
        let mut sorted = scores.to_vec();
        sorted.sort_by(f32::total_cmp);
        PadSummary {
            frames_scored: n,
            frames_live: live,
            verdict,
            median: sorted.get(sorted.len() / 2).copied(),
        }
    }
}

/// The crop MiniFASNet expects: the box scaled by `scale` about its centre (less when the
/// frame is too small), shifted to lie inside the frame. Pixel rectangle (x, y, w, h).
pub fn crop_box(face: &BBox, scale: f32, width: u32, height: u32) -> Option<(i32, i32, i32, i32)> {
    let (fw, fh) = (width as f32, height as f32);
    if face.w < 2.0 || face.h < 2.0 || !face.w.is_finite() || !face.h.is_finite() {
        return None;
    }
    let s = scale.min((fh - 1.0) / face.h).min((fw - 1.0) / face.w);
    let (w, h) = (face.w * s, face.h * s);
    let mut x = face.cx() - w / 2.0;
    let mut y = face.cy() - h / 2.0;
    x = x.clamp(0.0, (fw - w).max(0.0));
    y = y.clamp(0.0, (fh - h).max(0.0));
    let r = BBox { x, y, w, h }.clip_px(width, height)?;
    (r.2 >= 8 && r.3 >= 8).then_some(r)
}

pub struct Pad {
    nets: Vec<(Net, f32)>,
}

impl Pad {
    /// Load both models from `dir`.
    pub fn load(dir: &Path) -> Result<Pad, VisionError> {
        let mut nets = Vec::new();
        for (name, scale) in NETS {
            nets.push((onnx_net(&dir.join(name))?, scale));
        }
        Ok(Pad { nets })
    }

    /// Fused live probability (0..1) of the face in `face` (frame pixels); None when the
    /// box is degenerate.
    pub fn live_probability(
        &mut self,
        frame: &Frame,
        face: &BBox,
    ) -> Result<Option<f32>, VisionError> {
        let grown = BBox {
            x: face.cx() - face.w * HOG_TO_SSD / 2.0,
            y: face.cy() - face.h * HOG_TO_SSD / 2.0,
            w: face.w * HOG_TO_SSD,
            h: face.h * HOG_TO_SSD,
        };
        let full = frame.as_mat()?;
        let mut sum = 0.0;
        for (net, scale) in self.nets.iter_mut() {
            let Some((x, y, w, h)) = crop_box(&grown, *scale, frame.width, frame.height) else {
                return Ok(None);
            };
            let view = Mat::roi(&full, CvRect::new(x, y, w, h)).map_err(cv)?;
            let mut small = Mat::default();
            opencv::imgproc::resize(
                &view,
                &mut small,
                Size::new(INPUT, INPUT),
                0.0,
                0.0,
                opencv::imgproc::INTER_LINEAR,
            )
            .map_err(cv)?;
            // Frames are RGB; the models were trained on BGR: swap R and B.
            let blob = opencv::dnn::blob_from_image(
                &small,
                1.0,
                Size::new(INPUT, INPUT),
                Scalar::default(),
                true,
                false,
                opencv::core::CV_32F,
            )
            .map_err(cv)?;
            net.set_input_def(&blob).map_err(cv)?;
            let out = net.forward_single_def().map_err(cv)?;
            let logits: Vec<f32> = (0..3)
                .map(|i| out.at_2d::<f32>(0, i).copied())
                .collect::<Result<_, _>>()
                .map_err(cv)?;
            sum += softmax_live(&logits);
        }
        Ok(Some(sum / self.nets.len() as f32))
    }
}

/// An ONNX network through OpenCV `dnn` (MiniFASNet here, the iris model in
/// [`super::iris`]): a missing file, one OpenCV cannot read and an empty network are errors.
pub(super) fn onnx_net(p: &Path) -> Result<Net, VisionError> {
    if !p.is_file() {
        return Err(VisionError::NotFound(p.to_owned()));
    }
    let net = opencv::dnn::read_net_from_onnx(p)
        .map_err(|e| VisionError::Models(format!("{}: {e}", p.display())))?;
    if net.empty().map_err(cv)? {
        return Err(VisionError::Models(format!(
            "{}: empty network",
            p.display()
        )));
    }
    Ok(net)
}

/// Softmax of three logits, class 1 (live).
fn softmax_live(l: &[f32]) -> f32 {
    let m = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = l.iter().map(|v| (v - m).exp()).collect();
    let total: f32 = e.iter().sum();
    if total > 0.0 && total.is_finite() {
        e[1] / total
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_need_a_quorum() {
        let c = PadConfig::default();
        let v = |s: &[f32]| PadSummary::over(s, &c).verdict;
        assert_eq!(v(&[]), PadVerdict::Unknown);
        assert_eq!(
            v(&[0.9, 0.9]),
            PadVerdict::Unknown,
            "two frames are no quorum"
        );
        assert_eq!(v(&[0.9, 0.9, 0.9]), PadVerdict::Live);
        assert_eq!(v(&[0.9, 0.9, 0.1]), PadVerdict::Live, "2 of 3 >= 0.6");
        assert_eq!(v(&[0.9, 0.9, 0.1, 0.1, 0.1]), PadVerdict::Unknown, "2 of 5");
        assert_eq!(v(&[0.9, 0.9, 0.9, 0.1, 0.9, 0.9]), PadVerdict::Live);
        assert_eq!(v(&[0.1, 0.2, 0.1]), PadVerdict::Attack);
        assert_eq!(v(&[0.9, 0.2, 0.1]), PadVerdict::Attack, "1 of 3 live");
        assert_eq!(v(&[0.9, 0.9, 0.1, 0.1]), PadVerdict::Unknown);
        let s = PadSummary::over(&[0.3, 0.8, 0.6], &c);
        assert_eq!(
            (s.frames_scored, s.frames_live, s.median),
            (3, 2, Some(0.6))
        );
    }

    #[test]
    fn crops_stay_inside_the_frame() {
        let face = BBox {
            x: 10.0,
            y: 10.0,
            w: 100.0,
            h: 100.0,
        };
        // 2.7x a 100 px box is 270 px: shifted right/down to start at 0.
        assert_eq!(crop_box(&face, 2.7, 640, 480), Some((0, 0, 270, 270)));
        // A frame too small for 4x: the scale shrinks to fit.
        let (x, y, w, h) = crop_box(&face, 4.0, 320, 240).unwrap();
        assert!(
            x >= 0 && y >= 0 && x + w <= 320 && y + h <= 240,
            "{x} {y} {w} {h}"
        );
        assert!(h >= 238, "as tall as the frame allows: {h}");
        // Degenerate boxes are refused.
        let nan = BBox {
            w: f32::NAN,
            ..face
        };
        assert_eq!(crop_box(&nan, 2.7, 640, 480), None);
    }

    #[test]
    fn softmax_is_a_probability() {
        assert!((softmax_live(&[0.0, 0.0, 0.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert!(softmax_live(&[-50.0, 50.0, -50.0]) > 0.999);
        assert_eq!(softmax_live(&[f32::NAN, 0.0, 0.0]), 0.0);
    }
}
