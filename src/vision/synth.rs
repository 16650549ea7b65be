//! Test clips made from a still photo, moved like a hand-held print: slow sway, small
//! tremor, a little tilt and scale change, slight brightness flicker, MJPEG compression.
//! Used by the photo-attack tests and the demo. Deterministic for a given seed.

use super::frame::Frame;
use super::source::load_image;
use super::VisionError;
use opencv::core::{Mat, Point2f, Scalar, Size, Vec3b, BORDER_REPLICATE};
use opencv::prelude::*;
use opencv::videoio::VideoWriter;
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

/// A small deterministic generator (SplitMix64), enough for motion curves.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
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
    let fourcc = VideoWriter::fourcc('M', 'J', 'P', 'G').map_err(cv)?;
    let mut vw = VideoWriter::new(out, fourcc, p.fps, Size::new(w, h), true).map_err(cv)?;
    if !vw.is_opened().map_err(cv)? {
        return Err(VisionError::BadInput(format!(
            "cannot write video {}",
            out.display()
        )));
    }
    let mut rng = Rng(p.seed);
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
        vw.write(&lit).map_err(cv)?;
    }
    vw.release().map_err(cv)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::source::{FrameSource, VideoFileSource};
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
