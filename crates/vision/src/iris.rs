//! Eye openness from MediaPipe's iris landmark model, the signal blink liveness runs on.
//!
//! The model (`iris_landmark.onnx`: MediaPipe 0.10.14's `iris_landmark.tflite`, Apache-2.0,
//! converted to ONNX by `scripts/setup.sh`) takes a 64x64 RGB crop of one eye, float 0..1,
//! and returns 71 eye-region points and 5 iris points. It was trained on the eye that
//! appears on the image's left; the other eye is mirrored before and after. The crop is a
//! square 2.3x the corner-to-corner width, rotated with the eye line, as MediaPipe makes
//! it. Points 0-8 are the lower lid from corner to corner and 9-15 the upper lid between
//! them; [`openness`] is the mean gap between the three middle pairs over the eye width,
//! so it is independent of the face's size and roll, like the eye aspect ratio it
//! replaces (it is made for eyes: glasses and cameras from below do not bend it the way
//! they bend the 68-point model's six eye points). Owned by [`super::models::Models`].
//!
//! The network is most of a tracked frame's CPU, and a face standing still shows it the
//! same two crops frame after frame. So each call first makes a 16x16 grey thumbnail of
//! both crops; when neither differs from the thumbnails of the last pass the network made
//! by more than `reuse_below` grey levels (mean absolute difference), the openness of that
//! pass is returned again. An eyelid moving changes the crop far more than that (a blink
//! starting, ending or held closed is measured: the comparison is with the last *measured*
//! crops, not the previous frame's), so blinks are still seen; 0 turns it off.

use super::frame::Frame;
use super::VisionError;
use opencv::core::{Mat, Scalar, Size, Vector};
use opencv::dnn::Net;
use opencv::prelude::*;
use std::path::Path;

pub const IRIS: &str = "iris_landmark.onnx";
const INPUT: i32 = 64;
/// The crop's side over the eye's width (MediaPipe's `RectTransformationCalculator`).
const CROP_SCALE: f32 = 2.3;
/// Points of the 71-point output: lower lid 0..=8 (corner to corner), upper lid 9..=15.
const LOWER: [usize; 3] = [3, 4, 5];
const UPPER: [usize; 3] = [11, 12, 13];
const CORNERS: (usize, usize) = (0, 8);
/// 71 points, x y z each.
const CONTOUR_VALUES: usize = 213;

fn cv(e: opencv::Error) -> VisionError {
    VisionError::OpenCv(e.to_string())
}

/// One eye's lid gap over its width, from the model's 71 points (x, y, z per point, in
/// crop pixels). None when the output is too short or the corners coincide.
pub fn openness(points: &[f32]) -> Option<f32> {
    let p =
        |i: usize| -> Option<(f32, f32)> { Some((*points.get(3 * i)?, *points.get(3 * i + 1)?)) };
    let d = |a: (f32, f32), b: (f32, f32)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    let width = d(p(CORNERS.0)?, p(CORNERS.1)?);
    if !width.is_finite() || width <= 1e-3 {
        return None;
    }
    let mut gap = 0.0;
    for (l, u) in LOWER.iter().zip(UPPER) {
        gap += d(p(*l)?, p(u)?);
    }
    let v = gap / LOWER.len() as f32 / width;
    v.is_finite().then_some(v)
}

/// The 2x3 affine map from frame pixels to the model's 64x64 crop of the eye whose
/// corners are `a` and `b` (either order); `mirror` flips the crop left to right.
pub fn crop_transform(a: (f32, f32), b: (f32, f32), mirror: bool) -> Option<[[f64; 3]; 2]> {
    let (ax, ay, bx, by) = (a.0 as f64, a.1 as f64, b.0 as f64, b.1 as f64);
    let (l, r) = if ax <= bx {
        ((ax, ay), (bx, by))
    } else {
        ((bx, by), (ax, ay))
    };
    let (dx, dy) = (r.0 - l.0, r.1 - l.1);
    let width = (dx * dx + dy * dy).sqrt();
    if !width.is_finite() || width < 2.0 {
        return None;
    }
    let side = width * CROP_SCALE as f64;
    let k = INPUT as f64 / side;
    let (cos, sin) = (dx / width, dy / width);
    let (cx, cy) = ((l.0 + r.0) / 2.0, (l.1 + r.1) / 2.0);
    let half = INPUT as f64 / 2.0;
    // Rotate by -angle about the centre, scale to the crop, move the centre to the middle.
    let sx = if mirror { -1.0 } else { 1.0 };
    let m = [[sx * k * cos, sx * k * sin, 0.0], [-k * sin, k * cos, 0.0]];
    let tx = half - (m[0][0] * cx + m[0][1] * cy);
    let ty = half - (m[1][0] * cx + m[1][1] * cy);
    Some([[m[0][0], m[0][1], tx], [m[1][0], m[1][1], ty]])
}

/// The network, in a `RefCell` because OpenCV's forward pass mutates it: `Iris` (like
/// [`super::models::Models`]) is `Send`, not `Sync`, so one thread uses it at a time and
/// enrollment can measure eyes through a shared `&Models`.
pub struct Iris {
    net: std::cell::RefCell<Net>,
    outputs: Vector<String>,
    memo: std::cell::RefCell<Option<Memo>>,
    reuse_below: std::cell::Cell<f32>,
    reused: std::cell::Cell<u64>,
}

/// The thumbnails of the crops the network last measured, and what it measured.
struct Memo {
    thumbs: [Vec<u8>; 2],
    value: Option<(f32, f32)>,
}

/// Side of the grey thumbnail two crops are compared by.
const THUMB: i32 = 16;

/// The grey 16x16 thumbnail of the crop's middle half (the eye itself, its lids and
/// iris; area-averaged 2x2, so pixel noise mostly cancels).
fn thumbnail(crop: &Mat) -> Result<Vec<u8>, VisionError> {
    let q = INPUT / 4;
    let middle = Mat::roi(crop, opencv::core::Rect::new(q, q, 2 * q, 2 * q)).map_err(cv)?;
    let mut grey = Mat::default();
    opencv::imgproc::cvt_color_def(&middle, &mut grey, opencv::imgproc::COLOR_RGB2GRAY)
        .map_err(cv)?;
    let mut small = Mat::default();
    opencv::imgproc::resize(
        &grey,
        &mut small,
        Size::new(THUMB, THUMB),
        0.0,
        0.0,
        opencv::imgproc::INTER_AREA,
    )
    .map_err(cv)?;
    Ok(small.data_bytes().map_err(cv)?.to_vec())
}

/// Mean absolute difference of two thumbnails, in grey levels (infinite when they are
/// not the same size).
pub fn thumb_difference(a: &[u8], b: &[u8]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return f32::INFINITY;
    }
    let sum: u32 = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y) as u32).sum();
    sum as f32 / a.len() as f32
}

impl Iris {
    pub fn load(dir: &Path) -> Result<Iris, VisionError> {
        let net = super::pad::onnx_net(&dir.join(IRIS))?;
        let outputs = net.get_unconnected_out_layers_names().map_err(cv)?;
        Ok(Iris {
            net: std::cell::RefCell::new(net),
            outputs,
            memo: std::cell::RefCell::new(None),
            reuse_below: std::cell::Cell::new(0.0),
            reused: std::cell::Cell::new(0),
        })
    }

    /// Reuse the last measurement while both crops differ from the ones it was made on by
    /// less than `grey_levels` (see the module text); 0 = measure every call.
    pub fn set_reuse_below(&self, grey_levels: f32) {
        self.reuse_below.set(grey_levels.max(0.0));
    }

    /// Calls answered from the last measurement so far.
    pub fn reused(&self) -> u64 {
        self.reused.get()
    }

    /// Openness of the image-left eye (corners `left`) and the image-right eye (corners
    /// `right`, mirrored for the model), frame pixels, in one batched forward pass (the
    /// network is many small layers: two eyes in one pass cost far less than two passes).
    /// None when an eye is degenerate or the output unusable.
    pub fn openness_pair(
        &self,
        frame: &Frame,
        left: ((f32, f32), (f32, f32)),
        right: ((f32, f32), (f32, f32)),
    ) -> Result<Option<(f32, f32)>, VisionError> {
        let mut crops = Vector::<Mat>::new();
        for ((a, b), mirror) in [(left, false), (right, true)] {
            let Some(t) = crop_transform(a, b, mirror) else {
                return Ok(None);
            };
            crops.push(frame.warp(&t, INPUT, opencv::core::BORDER_REPLICATE)?);
        }
        let limit = self.reuse_below.get();
        let thumbs = if limit > 0.0 {
            let t = [
                thumbnail(&crops.get(0).map_err(cv)?)?,
                thumbnail(&crops.get(1).map_err(cv)?)?,
            ];
            if let Some(m) = self.memo.borrow().as_ref() {
                if m.thumbs
                    .iter()
                    .zip(&t)
                    .all(|(a, b)| thumb_difference(a, b) < limit)
                {
                    self.reused.set(self.reused.get() + 1);
                    return Ok(m.value);
                }
            }
            Some(t)
        } else {
            None
        };
        let value = self.measure(&crops)?;
        if let Some(thumbs) = thumbs {
            *self.memo.borrow_mut() = Some(Memo { thumbs, value });
        }
        Ok(value)
    }

    /// The network's openness of the two crops (the second one mirrored already).
    fn measure(&self, crops: &Vector<Mat>) -> Result<Option<(f32, f32)>, VisionError> {
        // RGB in, 0..1 (measured: -1..1 gives shallower, noisier closures on our clips).
        let blob = opencv::dnn::blob_from_images(
            crops,
            1.0 / 255.0,
            Size::new(INPUT, INPUT),
            Scalar::default(),
            false,
            false,
            opencv::core::CV_32F,
        )
        .map_err(cv)?;
        let mut net = self.net.borrow_mut();
        net.set_input_def(&blob).map_err(cv)?;
        let mut outs = Vector::<Mat>::new();
        net.forward(&mut outs, &self.outputs).map_err(cv)?;
        for out in outs.iter() {
            if out.total() == 2 * CONTOUR_VALUES {
                let mut v = Mat::default();
                out.reshape(1, 1).map_err(cv)?.copy_to(&mut v).map_err(cv)?;
                let pts = v.data_typed::<f32>().map_err(cv)?;
                let (l, r) = pts.split_at(CONTOUR_VALUES);
                return Ok(openness(l).zip(openness(r)));
            }
        }
        Err(VisionError::Models(format!(
            "{IRIS}: no eye-contour output of 2 x {CONTOUR_VALUES} values"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(t: &[[f64; 3]; 2], p: (f32, f32)) -> (f64, f64) {
        let (x, y) = (p.0 as f64, p.1 as f64);
        (
            t[0][0] * x + t[0][1] * y + t[0][2],
            t[1][0] * x + t[1][1] * y + t[1][2],
        )
    }

    #[test]
    fn the_crop_centres_the_eye_level_and_mirrors_on_request() {
        // Corners 20 px apart on a level line: centred, 64/2.3 px apart.
        let t = crop_transform((100.0, 50.0), (120.0, 50.0), false).unwrap();
        let (l, r) = (apply(&t, (100.0, 50.0)), apply(&t, (120.0, 50.0)));
        let w = 64.0 / 2.3;
        assert!((l.0 - (32.0 - w / 2.0)).abs() < 1e-6 && (l.1 - 32.0).abs() < 1e-6);
        assert!((r.0 - (32.0 + w / 2.0)).abs() < 1e-6 && (r.1 - 32.0).abs() < 1e-6);
        // A rolled eye comes out level.
        let t = crop_transform((0.0, 0.0), (10.0, 10.0), false).unwrap();
        let (a, b) = (apply(&t, (0.0, 0.0)), apply(&t, (10.0, 10.0)));
        assert!((a.1 - b.1).abs() < 1e-9 && b.0 > a.0);
        // Mirrored: the right-hand corner lands on the left.
        let t = crop_transform((120.0, 50.0), (100.0, 50.0), true).unwrap();
        assert!(apply(&t, (120.0, 50.0)).0 < apply(&t, (100.0, 50.0)).0);
        assert!(crop_transform((1.0, 1.0), (1.5, 1.0), false).is_none());
        assert!(crop_transform((f32::NAN, 1.0), (10.0, 1.0), false).is_none());
    }

    #[test]
    fn openness_is_the_lid_gap_over_the_width() {
        let mut pts = vec![0.0f32; 213];
        let mut set = |i: usize, x: f32, y: f32| {
            pts[3 * i] = x;
            pts[3 * i + 1] = y;
        };
        set(0, 10.0, 32.0);
        set(8, 50.0, 32.0);
        for (k, (l, u)) in LOWER.iter().zip(UPPER).enumerate() {
            let x = 20.0 + 10.0 * k as f32;
            set(*l, x, 36.0);
            set(u, x, 28.0);
        }
        assert!((openness(&pts).unwrap() - 8.0 / 40.0).abs() < 1e-6);
        assert_eq!(openness(&pts[..30]), None, "too short");
        assert_eq!(openness(&[0.0; 213]), None, "corners coincide");
    }

    #[test]
    fn thumbnails_differ_by_their_mean_absolute_difference() {
        let a = vec![100u8; 256];
        let mut b = a.clone();
        assert_eq!(thumb_difference(&a, &b), 0.0);
        // A dark band (a lid coming down) over a quarter of the thumbnail: 20 grey levels.
        for v in b.iter_mut().take(64) {
            *v = 20;
        }
        assert!((thumb_difference(&a, &b) - 20.0).abs() < 1e-6);
        assert_eq!(thumb_difference(&a, &b), thumb_difference(&b, &a));
        assert_eq!(
            thumb_difference(&a, &b[..10]),
            f32::INFINITY,
            "sizes differ"
        );
        assert_eq!(thumb_difference(&[], &[]), f32::INFINITY);
    }
}
