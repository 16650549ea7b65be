//! Quality gates that pick the frames worth encoding: face size, sharpness (variance of
//! the Laplacian on a fixed-size grey crop, so it does not depend on the face's size),
//! frontal pose from the landmarks, and open eyes.

use super::frame::{BBox, Frame};
use super::models::Landmarks;
use super::VisionError;
use opencv::core::{Mat, Scalar, Size};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QualityGates {
    pub min_face_px: f32,
    pub max_yaw: f32,
    pub min_pitch: f32,
    pub max_pitch: f32,
    pub max_roll_deg: f32,
    pub min_sharpness: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Quality {
    pub face_px: f32,
    pub yaw: f32,
    pub pitch: f32,
    pub roll: f32,
    pub sharpness: f32,
}

/// Why a frame was not good enough (first failing gate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reject {
    Small,
    Pose,
    Blurry,
}

impl Quality {
    /// A score in 0..1 used to rank good frames (bigger, sharper, more frontal is better).
    pub fn score(&self, g: &QualityGates) -> f32 {
        let size = (self.face_px / (2.0 * g.min_face_px)).min(1.0);
        let sharp = (self.sharpness / (4.0 * g.min_sharpness.max(1e-3))).min(1.0);
        let frontal = 1.0 - (self.yaw.abs() / g.max_yaw.max(1e-3)).min(1.0);
        (size + sharp + frontal) / 3.0
    }

    pub fn check(&self, g: &QualityGates) -> Result<(), Reject> {
        if self.face_px < g.min_face_px {
            return Err(Reject::Small);
        }
        if self.yaw.abs() > g.max_yaw
            || self.pitch < g.min_pitch
            || self.pitch > g.max_pitch
            || self.roll.abs() > g.max_roll_deg
        {
            return Err(Reject::Pose);
        }
        if self.sharpness < g.min_sharpness {
            return Err(Reject::Blurry);
        }
        Ok(())
    }
}

/// Measure the face in `frame` described by `lm`.
pub fn measure(frame: &Frame, lm: &Landmarks) -> Result<Quality, VisionError> {
    let (yaw, pitch, roll) = lm.pose();
    let b = lm.bbox();
    // Size as the eye-to-eye distance scaled to a HOG-box-like width (about 2.5x).
    let face_px = lm.inter_ocular() * 2.5;
    let sharpness = sharpness(frame, b)?;
    Ok(Quality {
        face_px,
        yaw,
        pitch,
        roll,
        sharpness,
    })
}

/// Variance of the Laplacian of the face region scaled to 96x96 grey.
pub fn sharpness(frame: &Frame, region: BBox) -> Result<f32, VisionError> {
    let cv = |e: opencv::Error| VisionError::OpenCv(e.to_string());
    let Some(grey) = frame.grey_crop(region)? else {
        return Ok(0.0);
    };
    let mut small = Mat::default();
    opencv::imgproc::resize(
        &grey,
        &mut small,
        Size::new(96, 96),
        0.0,
        0.0,
        opencv::imgproc::INTER_AREA,
    )
    .map_err(cv)?;
    let mut lap = Mat::default();
    opencv::imgproc::laplacian_def(&small, &mut lap, opencv::core::CV_32F).map_err(cv)?;
    let mut mean = Scalar::default();
    let mut std = Scalar::default();
    opencv::core::mean_std_dev_def(&lap, &mut mean, &mut std).map_err(cv)?;
    Ok((std[0] * std[0]) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const G: QualityGates = QualityGates {
        min_face_px: 80.0,
        max_yaw: 0.35,
        min_pitch: 0.25,
        max_pitch: 0.95,
        max_roll_deg: 25.0,
        min_sharpness: 20.0,
    };

    fn q(face_px: f32, yaw: f32, sharpness: f32) -> Quality {
        Quality {
            face_px,
            yaw,
            pitch: 0.6,
            roll: 0.0,
            sharpness,
        }
    }

    #[test]
    fn gates_reject_in_order() {
        assert_eq!(q(60.0, 0.0, 100.0).check(&G), Err(Reject::Small));
        assert_eq!(q(100.0, 0.5, 100.0).check(&G), Err(Reject::Pose));
        assert_eq!(q(100.0, 0.1, 5.0).check(&G), Err(Reject::Blurry));
        assert_eq!(q(100.0, 0.1, 50.0).check(&G), Ok(()));
        assert!(q(160.0, 0.0, 80.0).score(&G) > q(90.0, 0.3, 25.0).score(&G));
    }

    #[test]
    fn sharp_pattern_scores_higher_than_flat() {
        let (w, h) = (64u32, 64u32);
        let mut checker = vec![0u8; (w * h * 3) as usize];
        for y in 0..h {
            for x in 0..w {
                let v = if (x / 4 + y / 4) % 2 == 0 { 240 } else { 10 };
                let i = ((y * w + x) * 3) as usize;
                checker[i..i + 3].copy_from_slice(&[v, v, v]);
            }
        }
        let sharp = Frame::from_rgb(checker, w, h, 0, Duration::ZERO).unwrap();
        let flat =
            Frame::from_rgb(vec![128; (w * h * 3) as usize], w, h, 0, Duration::ZERO).unwrap();
        let r = BBox {
            x: 0.0,
            y: 0.0,
            w: 64.0,
            h: 64.0,
        };
        assert!(sharpness(&sharp, r).unwrap() > 100.0);
        assert!(sharpness(&flat, r).unwrap() < 1.0);
    }
}
