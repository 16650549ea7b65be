//! Test clips made from a still photo, moved like a hand-held print: slow sway, small
//! tremor, a little tilt and scale change, slight brightness flicker, MJPEG compression.
//! Used by the photo-attack tests and the demo. Deterministic for a given seed.

use super::frame::Frame;
use super::source::load_image;
use super::video::MjpegWriter;
use super::VisionError;
use opencv::core::{Mat, Point2f, Scalar, Size, Vec3b, BORDER_REPLICATE};
use opencv::prelude::*;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HandHeld {
    pub frames: u32,
    pub fps: f64,
    pub seed: u64,
    /// Largest sway, in pixels.
    pub shift_px: f32,
    /// Largest tilt, in degrees.
    pub tilt_deg: f32,
    /// Largest relative scale change.
    pub scale: f32,
    /// Output width (height keeps the aspect); 0 keeps the photo's size.
    pub width: u32,
}

impl Default for HandHeld {
    fn default() -> Self {
        Self {
            frames: 90,
            fps: 30.0,
            seed: 1,
            shift_px: 6.0,
            tilt_deg: 2.5,
            scale: 0.03,
            width: 0,
        }
    }
}

/// The deterministic generator for motion curves.
struct Rng(lockerd_core::types::SplitMix64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0.next_f32()
    }
    fn signed(&mut self) -> f32 {
        self.next() * 2.0 - 1.0
    }
}

/// Smooth motion: two sinusoids with random phases and rates, in -1..1.
fn sway(rng: &mut Rng) -> impl Fn(f32) -> f32 {
    let (f1, f2) = (0.3 + rng.next() * 0.5, 0.9 + rng.next() * 1.2);
    let (p1, p2) = (
        rng.next() * std::f32::consts::TAU,
        rng.next() * std::f32::consts::TAU,
    );
    move |t| {
        0.7 * (std::f32::consts::TAU * f1 * t + p1).sin()
            + 0.3 * (std::f32::consts::TAU * f2 * t + p2).sin()
    }
}

fn cv(e: opencv::Error) -> VisionError {
    VisionError::OpenCv(e.to_string())
}

/// Write `out` (.avi, MJPEG) from the photo at `image`.
pub fn photo_attack_clip(image: &Path, out: &Path, p: &HandHeld) -> Result<(), VisionError> {
    let frame = load_image(image)?;
    photo_attack_from_frame(&frame, out, p)
}

pub fn photo_attack_from_frame(frame: &Frame, out: &Path, p: &HandHeld) -> Result<(), VisionError> {
    let rgb = frame.as_mat()?;
    let mut bgr = Mat::default();
    opencv::imgproc::cvt_color_def(&rgb, &mut bgr, opencv::imgproc::COLOR_RGB2BGR).map_err(cv)?;
    let (w, h) = if p.width == 0 {
        (frame.width as i32, frame.height as i32)
    } else {
        let w = p.width as i32;
        (
            w,
            (frame.height as f32 * w as f32 / frame.width as f32).round() as i32,
        )
    };
    let (w, h) = (w & !1, h & !1);
    let mut base = Mat::default();
    opencv::imgproc::resize(
        &bgr,
        &mut base,
        Size::new(w, h),
        0.0,
        0.0,
        opencv::imgproc::INTER_AREA,
    )
    .map_err(cv)?;
    let mut vw = MjpegWriter::create(out, w as u32, h as u32, p.fps)?;
    let mut rng = Rng(lockerd_core::types::SplitMix64::new(p.seed));
    let (sx, sy, sr, ss, sb) = (
        sway(&mut rng),
        sway(&mut rng),
        sway(&mut rng),
        sway(&mut rng),
        sway(&mut rng),
    );
    let center = Point2f::new(w as f32 / 2.0, h as f32 / 2.0);
    for i in 0..p.frames {
        let t = i as f32 / p.fps as f32;
        let tremor = (rng.signed() * 0.4, rng.signed() * 0.4);
        let angle = sr(t) * p.tilt_deg;
        let scale = 1.0 + ss(t) * p.scale;
        let mut m = opencv::imgproc::get_rotation_matrix_2d(center, angle as f64, scale as f64)
            .map_err(cv)?;
        *m.at_2d_mut::<f64>(0, 2).map_err(cv)? += (sx(t) * p.shift_px + tremor.0) as f64;
        *m.at_2d_mut::<f64>(1, 2).map_err(cv)? += (sy(t) * p.shift_px + tremor.1) as f64;
        let mut moved = Mat::default();
        opencv::imgproc::warp_affine(
            &base,
            &mut moved,
            &m,
            Size::new(w, h),
            opencv::imgproc::INTER_LINEAR,
            BORDER_REPLICATE,
            Scalar::default(),
        )
        .map_err(cv)?;
        let gain = 1.0 + sb(t) * 0.03;
        let mut lit = Mat::default();
        moved
            .convert_to(&mut lit, opencv::core::CV_8UC3, gain as f64, 0.0)
            .map_err(cv)?;
        debug_assert_eq!(lit.typ(), Vec3b::opencv_type());
        vw.write_bgr(lit.data_bytes().map_err(cv)?)?;
    }
    vw.finish()?;
    Ok(())
}

/// A clip of a still photo in which the person blinks (twice): each eye region is
/// squeezed vertically toward its centre line over a few frames, the way lids close.
/// Used by the demo when no real blink clips are available; it is synthetic and the demo
/// says so.
pub fn blink_clip(
    models: &super::models::Models,
    photo: &Frame,
    out: &Path,
    frames: u32,
    fps: f64,
) -> Result<(), VisionError> {
    // Frame the face as a kiosk camera would: head and shoulders, 640x480.
    let found = super::pipeline::still_face(models, photo)?
        .ok_or_else(|| VisionError::BadInput("no face in the photo".into()))?;
    let b = found.shape.points.bbox();
    let cw = (b.w * 3.2)
        .min(photo.width as f32)
        .min(photo.height as f32 * 4.0 / 3.0);
    let ch = cw * 3.0 / 4.0;
    let crop = super::frame::BBox {
        x: (b.cx() - cw / 2.0).clamp(0.0, photo.width as f32 - cw),
        y: (b.cy() - ch * 0.45).clamp(0.0, photo.height as f32 - ch),
        w: cw,
        h: ch,
    };
    let patch_rgb = {
        let full = photo.as_mat()?;
        let (x, y, w, h) = crop
            .clip_px(photo.width, photo.height)
            .ok_or_else(|| VisionError::BadInput("face at the edge of the photo".into()))?;
        let view = Mat::roi(&full, opencv::core::Rect::new(x, y, w, h)).map_err(cv)?;
        let mut out = Mat::default();
        opencv::imgproc::resize(
            &view,
            &mut out,
            Size::new(640, 480),
            0.0,
            0.0,
            opencv::imgproc::INTER_AREA,
        )
        .map_err(cv)?;
        out
    };
    let framed = Frame::from_rgb(
        patch_rgb.data_bytes().map_err(cv)?.to_vec(),
        640,
        480,
        0,
        std::time::Duration::ZERO,
    )?;
    let photo = &framed;
    let face = super::pipeline::still_face(models, photo)?
        .ok_or_else(|| VisionError::BadInput("no face after framing the photo".into()))?;
    let lm = face.shape.points;
    let rgb = photo.as_mat()?;
    let mut bgr = Mat::default();
    opencv::imgproc::cvt_color_def(&rgb, &mut bgr, opencv::imgproc::COLOR_RGB2BGR).map_err(cv)?;
    let (w, h) = ((photo.width & !1) as i32, (photo.height & !1) as i32);
    let base = Mat::roi(&bgr, opencv::core::Rect::new(0, 0, w, h))
        .map_err(cv)?
        .try_clone()
        .map_err(cv)?;
    let mut vw = MjpegWriter::create(out, w as u32, h as u32, fps)?;
    // How hard to squeeze for the iris model to read "closed" depends on the face: try a
    // few warps and keep the one whose openness (the more open eye, as the pipeline
    // reads it) drops the most.
    let openness = |f: &Frame, lm: &super::models::Landmarks| -> Result<Option<f32>, VisionError> {
        Ok(models
            .eye_openness(f, lm)?
            .map(|(l, r)| super::blink::both_eyes(l, r)))
    };
    let open_ear = openness(photo, &lm)?
        .ok_or_else(|| VisionError::BadInput("the iris model sees no eyes in the photo".into()))?;
    let mut best: Option<(f32, f32, f32)> = None;
    for strength in [1.5f32, 2.5, 4.0, 6.0] {
        for ry_factor in [0.35f32, 0.5, 0.7] {
            let warped = squeeze_eyes(&base, &lm, strength, ry_factor)?;
            let mut rgbm = Mat::default();
            opencv::imgproc::cvt_color_def(&warped, &mut rgbm, opencv::imgproc::COLOR_BGR2RGB)
                .map_err(cv)?;
            let f = Frame::from_rgb(
                rgbm.data_bytes().map_err(cv)?.to_vec(),
                w as u32,
                h as u32,
                0,
                std::time::Duration::ZERO,
            )?;
            if let Some(fc) = super::pipeline::still_face(models, &f)? {
                let Some(ear) = openness(&f, &fc.shape.points)? else {
                    continue;
                };
                if best.is_none_or(|b| ear < b.0) {
                    best = Some((ear, strength, ry_factor));
                }
            }
        }
    }
    let (closed_ear, strength, ry_factor) =
        best.ok_or_else(|| VisionError::BadInput("the face is lost under every eye warp".into()))?;
    if closed_ear > open_ear * 0.7 {
        return Err(VisionError::BadInput(format!(
            "no eye warp closes these eyes for the iris model (openness {open_ear:.2} -> {closed_ear:.2})"
        )));
    }
    // Closure profile of one blink (fraction of the lid gap closed), at 30 fps.
    let profile = [0.35f32, 0.75, 1.0, 1.0, 0.7, 0.3];
    let blink_starts = [frames / 3, (2 * frames) / 3];
    for i in 0..frames {
        let c = blink_starts
            .iter()
            .find_map(|&s| {
                i.checked_sub(s)
                    .and_then(|k| profile.get(k as usize))
                    .copied()
            })
            .unwrap_or(0.0);
        let img = if c > 0.0 {
            squeeze_eyes(&base, &lm, c * strength, ry_factor)?
        } else {
            base.try_clone().map_err(cv)?
        };
        vw.write_bgr(img.data_bytes().map_err(cv)?)?;
    }
    vw.finish()?;
    Ok(())
}

/// Compress the rows around each eye toward its centre line (strength 0 = unchanged):
/// the lids appear to close. The weight fades to zero at the region's edge (no seams).
fn squeeze_eyes(
    base: &Mat,
    lm: &super::models::Landmarks,
    strength: f32,
    ry_factor: f32,
) -> Result<Mat, VisionError> {
    let (w, h) = (base.cols(), base.rows());
    let mut map_x = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_32FC1, Scalar::all(0.0))
        .map_err(cv)?;
    let mut map_y = Mat::new_rows_cols_with_default(h, w, opencv::core::CV_32FC1, Scalar::all(0.0))
        .map_err(cv)?;
    for y in 0..h {
        for x in 0..w {
            *map_x.at_2d_mut::<f32>(y, x).map_err(cv)? = x as f32;
            *map_y.at_2d_mut::<f32>(y, x).map_err(cv)? = y as f32;
        }
    }
    for left in [true, false] {
        let ((cx, cy), ew) = lm.eye_box(left);
        let (rx, ry) = (0.8 * ew, ry_factor * ew);
        let (x0, x1) = (
            (cx - rx).floor().max(0.0) as i32,
            (cx + rx).ceil().min(w as f32 - 1.0) as i32,
        );
        let (y0, y1) = (
            (cy - ry).floor().max(0.0) as i32,
            (cy + ry).ceil().min(h as f32 - 1.0) as i32,
        );
        for y in y0..=y1 {
            for x in x0..=x1 {
                let (dx, dy) = ((x as f32 - cx) / rx, (y as f32 - cy) / ry);
                let wgt = ((1.0 - dx * dx).max(0.0) * (1.0 - dy * dy).max(0.0)).powf(0.5);
                *map_y.at_2d_mut::<f32>(y, x).map_err(cv)? =
                    cy + (y as f32 - cy) * (1.0 + strength * wgt);
            }
        }
    }
    let mut warped = Mat::default();
    opencv::imgproc::remap(
        base,
        &mut warped,
        &map_x,
        &map_y,
        opencv::imgproc::INTER_LINEAR,
        BORDER_REPLICATE,
        Scalar::default(),
    )
    .map_err(cv)?;
    Ok(warped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{FrameSource, VideoFileSource};
    use std::time::Duration;

    #[test]
    fn writes_a_moving_clip_of_the_requested_length() {
        let (w, h) = (64u32, 48u32);
        let mut px = vec![0u8; (w * h * 3) as usize];
        for (i, v) in px.iter_mut().enumerate() {
            *v = ((i * 7) % 251) as u8;
        }
        let f = Frame::from_rgb(px, w, h, 0, Duration::ZERO).unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a.avi");
        let p = HandHeld {
            frames: 12,
            ..Default::default()
        };
        photo_attack_from_frame(&f, &out, &p).unwrap();
        let mut src = VideoFileSource::open(&out).unwrap();
        let mut n = 0;
        let mut prev: Option<Frame> = None;
        let mut moved = false;
        while let Some(fr) = src.next_frame().unwrap() {
            assert_eq!((fr.width, fr.height), (w, h));
            if let Some(p) = &prev {
                moved |= p.rgb != fr.rgb;
            }
            prev = Some(fr);
            n += 1;
        }
        assert_eq!(n, 12);
        assert!(moved, "frames differ (the print moves)");
    }
}
