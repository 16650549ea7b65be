//! The match embedding: OpenCV Zoo's SFace (Apache-2.0; 128-d, MobileFaceNet-type CNN)
//! through OpenCV's `dnn`, aligned from dlib's own 5 landmarks (no second detector).
//!
//! Alignment: the least-squares similarity transform (rotation, uniform scale, shift;
//! Umeyama's, which for 2-D points without reflection has the closed form in
//! [`similarity`]) that takes dlib's 5 points, in dlib's order, onto their mean positions
//! in SFace's 112x112 frame ([`TARGET`], `../shared/models/README.md`), then
//! `warpAffine(INTER_LINEAR)` with a black border. Input: the crop as RGB, float 0..255,
//! NCHW (the network subtracts 127.5 and scales by 1/128 itself). Output: 128 floats,
//! L2-normalised here, so the Euclidean distance between two embeddings is
//! `sqrt(2 - 2 cos)` (OpenCV's `FR_NORM_L2`; 0 = the same, 2 = opposite).
//! The network is loaded split ([`super::onnx`]): OpenCV runs the convolutions, and the
//! fully connected head is computed here from its int8 blocks, which keeps about 45 MiB
//! of memory and load peak off the process and gives the same embedding.
//! Owned by [`super::models::Models`]; `Net` is `Send`, not `Sync`.

use super::frame::Frame;
use super::models::Landmarks;
use super::onnx::{split_sface, Head, Split};
use super::VisionError;
use lockerd_core::types::{Embedding, EMBEDDING_DIM};
use opencv::core::{Mat, Scalar, Size};
use opencv::dnn::Net;
use opencv::prelude::*;
use std::cell::RefCell;
use std::path::Path;

/// The float32 form of OpenCV Zoo's block-quantized SFace (what OpenCV 4.6 can load).
pub const SFACE: &str = "face_recognition_sface_2021dec_int8bq_fp32.onnx";
/// Side of the aligned crop.
const SIDE: i32 = 112;
/// Where dlib's 5 points (dlib's order: one eye's outer and inner corner, the other
/// eye's outer and inner corner, the base of the nose) sit in SFace's 112x112 crop.
pub const TARGET: [(f64, f64); 5] = [
    (79.605, 53.576),
    (65.527, 54.194),
    (29.877, 54.018),
    (43.896, 54.374),
    (54.652, 80.973),
];

fn cv(e: opencv::Error) -> VisionError {
    VisionError::OpenCv(e.to_string())
}

/// The least-squares similarity transform taking `src` onto `dst` (no reflection), as a
/// 2x3 affine matrix `[[a, -b, tx], [b, a, ty]]`; None when `src` has no extent or a
/// value is not finite.
pub fn similarity(src: &[(f64, f64)], dst: &[(f64, f64)]) -> Option<[[f64; 3]; 2]> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mean = |p: &[(f64, f64)]| {
        let (sx, sy) = p[..n]
            .iter()
            .fold((0.0, 0.0), |a, q| (a.0 + q.0, a.1 + q.1));
        (sx / n as f64, sy / n as f64)
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut var, mut dot, mut cross) = (0.0, 0.0, 0.0);
    for (s, d) in src.iter().zip(dst).take(n) {
        let (x, y) = (s.0 - ms.0, s.1 - ms.1);
        let (u, v) = (d.0 - md.0, d.1 - md.1);
        var += x * x + y * y;
        dot += x * u + y * v;
        cross += x * v - y * u;
    }
    if !(var.is_finite() && dot.is_finite() && cross.is_finite()) || var < 1e-9 {
        return None;
    }
    let (a, b) = (dot / var, cross / var);
    let tx = md.0 - (a * ms.0 - b * ms.1);
    let ty = md.1 - (b * ms.0 + a * ms.1);
    Some([[a, -b, tx], [b, a, ty]])
}

/// The network, in a `RefCell` because OpenCV's forward pass mutates it (see
/// [`super::iris::Iris`]).
pub struct Sface {
    net: RefCell<Net>,
    /// The fully connected head, computed here; None when the net is the whole file.
    head: Option<Head>,
}

impl Sface {
    /// The network, split (see the module comment); a file the split does not know is
    /// loaded whole, with a warning.
    pub fn load(dir: &Path) -> Result<Sface, VisionError> {
        let p = dir.join(SFACE);
        if !p.is_file() {
            return Err(VisionError::NotFound(p));
        }
        let bytes = std::fs::read(&p).map_err(|e| VisionError::Io(p.clone(), e))?;
        let split = split_sface(&bytes);
        drop(bytes);
        match split {
            Ok(Split { body, head, folded }) => {
                log::debug!(
                    "{SFACE}: {folded} BatchNormalizations folded, head {} KB ({})",
                    head.weight_bytes() / 1000,
                    if head.quantized() {
                        "int8 blocks"
                    } else {
                        "floats"
                    }
                );
                let buf = opencv::core::Vector::<u8>::from_slice(&body);
                drop(body);
                let net = opencv::dnn::read_net_from_onnx_buffer(&buf)
                    .map_err(|e| VisionError::Models(format!("{}: {e}", p.display())))?;
                Ok(Sface {
                    net: RefCell::new(net),
                    head: Some(head),
                })
            }
            Err(e) => {
                log::warn!("{}: {e}; loading it whole (more memory)", p.display());
                Self::load_whole(dir)
            }
        }
    }

    /// The network as one OpenCV net, as the file is.
    pub fn load_whole(dir: &Path) -> Result<Sface, VisionError> {
        Ok(Sface {
            net: RefCell::new(super::pad::onnx_net(&dir.join(SFACE))?),
            head: None,
        })
    }

    /// Whether the head is computed here from int8 blocks (the split load).
    pub fn split(&self) -> bool {
        self.head.as_ref().is_some_and(Head::quantized)
    }

    /// The aligned 112x112 RGB crop of the face whose landmarks (frame pixels) are `lm`.
    pub fn align(frame: &Frame, lm: &Landmarks) -> Result<Option<Mat>, VisionError> {
        let src: Vec<(f64, f64)> = lm.0.iter().map(|p| (p.0 as f64, p.1 as f64)).collect();
        let Some(t) = similarity(&src, &TARGET) else {
            return Ok(None);
        };
        frame
            .warp(&t, SIDE, opencv::core::BORDER_CONSTANT)
            .map(Some)
    }

    /// The L2-normalised embedding of the face whose landmarks are `lm`; None when the
    /// landmarks are degenerate or the network gives nothing usable.
    pub fn embed(&self, frame: &Frame, lm: &Landmarks) -> Result<Option<Embedding>, VisionError> {
        let Some(crop) = Self::align(frame, lm)? else {
            return Ok(None);
        };
        // Frames are RGB, which is what SFace takes: no channel swap.
        let blob = opencv::dnn::blob_from_image(
            &crop,
            1.0,
            Size::new(SIDE, SIDE),
            Scalar::default(),
            false,
            false,
            opencv::core::CV_32F,
        )
        .map_err(cv)?;
        let mut net = self.net.borrow_mut();
        net.set_input_def(&blob).map_err(cv)?;
        let out = net.forward_single_def().map_err(cv)?;
        if let Some(head) = &self.head {
            let mut flat = Mat::default();
            out.reshape(1, 1)
                .map_err(cv)?
                .copy_to(&mut flat)
                .map_err(cv)?;
            let x = flat.data_typed::<f32>().map_err(cv)?;
            let Some(y) = head.apply(x) else {
                return Err(VisionError::Models(format!(
                    "{SFACE}: {} values into a head that takes {}",
                    x.len(),
                    head.input_len()
                )));
            };
            return Ok(normalized(&y));
        }
        if out.total() != EMBEDDING_DIM {
            return Err(VisionError::Models(format!(
                "{SFACE}: {} output values, not {EMBEDDING_DIM}",
                out.total()
            )));
        }
        let mut flat = Mat::default();
        out.reshape(1, 1)
            .map_err(cv)?
            .copy_to(&mut flat)
            .map_err(cv)?;
        Ok(normalized(flat.data_typed::<f32>().map_err(cv)?))
    }
}

/// `v` scaled to unit length; None when it is not 128 finite values or is all zero.
pub fn normalized(v: &[f32]) -> Option<Embedding> {
    let arr: [f32; EMBEDDING_DIM] = v.try_into().ok()?;
    if arr.iter().any(|x| !x.is_finite()) {
        return None;
    }
    Embedding(arr).unit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(t: &[[f64; 3]; 2], p: (f64, f64)) -> (f64, f64) {
        (
            t[0][0] * p.0 + t[0][1] * p.1 + t[0][2],
            t[1][0] * p.0 + t[1][1] * p.1 + t[1][2],
        )
    }

    #[test]
    fn a_rotated_scaled_shifted_copy_of_the_target_maps_back_exactly() {
        // Points made from TARGET by a known similarity: the fit inverts it.
        let (s, th, tx, ty) = (2.5f64, 0.3f64, 140.0, -20.0);
        let src: Vec<(f64, f64)> = TARGET
            .iter()
            .map(|p| {
                (
                    s * (th.cos() * p.0 - th.sin() * p.1) + tx,
                    s * (th.sin() * p.0 + th.cos() * p.1) + ty,
                )
            })
            .collect();
        let t = similarity(&src, &TARGET).unwrap();
        for (p, q) in src.iter().zip(TARGET) {
            let r = apply(&t, *p);
            assert!(
                (r.0 - q.0).abs() < 1e-9 && (r.1 - q.1).abs() < 1e-9,
                "{r:?} {q:?}"
            );
        }
        // Uniform scale, no shear: [[a, -b], [b, a]].
        assert!((t[0][0] - t[1][1]).abs() < 1e-12 && (t[0][1] + t[1][0]).abs() < 1e-12);
        assert!(((t[0][0].hypot(t[1][0])) - 1.0 / s).abs() < 1e-12);
    }

    #[test]
    fn the_fit_is_least_squares_and_never_reflects() {
        // A mirrored face cannot be fitted by a reflection: the residual stays.
        let src: Vec<(f64, f64)> = TARGET.iter().map(|p| (112.0 - p.0, p.1)).collect();
        let t = similarity(&src, &TARGET).unwrap();
        let det = t[0][0] * t[1][1] - t[0][1] * t[1][0];
        assert!(det > 0.0, "a similarity without reflection has det > 0");
        // Noise on one point: the fit moves less than the noise (least squares spreads it).
        let mut noisy: Vec<(f64, f64)> = TARGET.to_vec();
        noisy[4].1 += 5.0;
        let t = similarity(&noisy, &TARGET).unwrap();
        let r = apply(&t, noisy[4]);
        assert!((r.1 - TARGET[4].1).abs() < 5.0);
        assert!(similarity(&[(1.0, 1.0); 5], &TARGET).is_none(), "no extent");
        assert!(similarity(&[(f64::NAN, 1.0), (2.0, 2.0)], &TARGET[..2]).is_none());
    }

    #[test]
    fn embeddings_are_unit_length_and_zero_or_bad_output_is_refused() {
        let mut v = vec![0f32; EMBEDDING_DIM];
        v[0] = 3.0;
        v[1] = 4.0;
        let e = normalized(&v).unwrap();
        assert!((e.0[0] - 0.6).abs() < 1e-6 && (e.0[1] - 0.8).abs() < 1e-6);
        assert!(normalized(&[0.0; EMBEDDING_DIM]).is_none());
        assert!(normalized(&v[..10]).is_none());
        v[5] = f32::NAN;
        assert!(normalized(&v).is_none());
    }
}
