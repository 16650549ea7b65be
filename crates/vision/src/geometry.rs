//! Measures taken from dlib's 5 landmarks (the two corners of each eye and the base of
//! the nose): eye corners and boxes for the iris model, head pose proxies for the quality
//! gates, and a face box for tracking and sharpness. Also the eye aspect ratio of the
//! 68-point scheme, kept for `[vision.blink] eyes = "landmarks"`. Pure functions,
//! unit-tested on hand-made point sets.

use super::frame::BBox;
use super::models::Landmarks;

/// dlib's 5-point scheme: the image-right eye's outer and inner corner, the image-left
/// eye's outer and inner corner, the base of the nose (checked against the 68-point
/// corners 45, 42, 36 and 39 on 2,160 ZJU frames: median 2% of the eye distance apart).
const RIGHT_OUTER: usize = 0;
const RIGHT_INNER: usize = 1;
const LEFT_OUTER: usize = 2;
const LEFT_INNER: usize = 3;
const NOSE: usize = 4;

/// The face box around the eyes' midpoint, in eye distances: the 68-point outline's box
/// (brows to chin, jaw to jaw) measured on the same 2,160 frames (medians; spread
/// 0.03-0.09).
const FACE_LEFT: f32 = -1.08;
const FACE_RIGHT: f32 = 1.08;
const FACE_TOP: f32 = -0.48;
const FACE_BOTTOM: f32 = 1.78;

/// Indices of the six points of each eye in the iBUG 68-point scheme (p1..p6).
pub const LEFT_EYE_68: [usize; 6] = [36, 37, 38, 39, 40, 41];
pub const RIGHT_EYE_68: [usize; 6] = [42, 43, 44, 45, 46, 47];

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

fn mid(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0)
}

/// Eye aspect ratio (Soukupová & Čech 2016): (|p2-p6| + |p3-p5|) / (2 |p1-p4|).
/// Returns 0 for a degenerate eye (corners on top of each other).
pub fn ear(p: [(f32, f32); 6]) -> f32 {
    let w = dist(p[0], p[3]);
    if w < 1e-3 {
        return 0.0;
    }
    (dist(p[1], p[5]) + dist(p[2], p[4])) / (2.0 * w)
}

/// (image-left, image-right) eye aspect ratios of a 68-point shape; None for another count.
pub fn ears_68(points: &[(f32, f32)]) -> Option<(f32, f32)> {
    if points.len() != 68 {
        return None;
    }
    let eye = |idx: [usize; 6]| ear(idx.map(|i| points[i]));
    Some((eye(LEFT_EYE_68), eye(RIGHT_EYE_68)))
}

impl Landmarks {
    /// The two corners of one eye, image-left one first (`left`: the image-left eye):
    /// the iris model's crop is made from them.
    pub fn eye_corners(&self, left: bool) -> ((f32, f32), (f32, f32)) {
        let p = &self.0;
        if left {
            (p[LEFT_OUTER], p[LEFT_INNER])
        } else {
            (p[RIGHT_INNER], p[RIGHT_OUTER])
        }
    }

    /// Centre (midpoint of the corners) and width of one eye.
    pub fn eye_box(&self, left: bool) -> ((f32, f32), f32) {
        let (a, b) = self.eye_corners(left);
        (mid(a, b), dist(a, b))
    }

    /// The (image-left, image-right) eye centres.
    fn eye_centres(&self) -> ((f32, f32), (f32, f32)) {
        (self.eye_box(true).0, self.eye_box(false).0)
    }

    /// Distance between the eye centres, in pixels.
    pub fn inter_ocular(&self) -> f32 {
        let (le, re) = self.eye_centres();
        dist(le, re)
    }

    /// The face's box (about brows to chin, jaw to jaw) estimated from the eyes.
    pub fn bbox(&self) -> BBox {
        let (m, d) = (self.eyes_mid(), self.inter_ocular());
        BBox {
            x: m.0 + FACE_LEFT * d,
            y: m.1 + FACE_TOP * d,
            w: (FACE_RIGHT - FACE_LEFT) * d,
            h: (FACE_BOTTOM - FACE_TOP) * d,
        }
    }

    fn eyes_mid(&self) -> (f32, f32) {
        let (le, re) = self.eye_centres();
        mid(le, re)
    }

    /// Head pose proxies: (yaw, pitch, roll_degrees), with the nose base in the frame of
    /// the eye line (turned level, eye distance 1). `yaw` is twice the nose's sideways
    /// offset from the eyes' midpoint: 0 frontal, ±1 when the nose is below one eye's
    /// centre (on the ZJU frames it follows the 68-point jaw-based yaw, correlation
    /// 0.91, with scale 1.94). `pitch` is how far below the eye line the nose is: about
    /// 0.7 frontal, less when the chin goes up, more when it goes down.
    pub fn pose(&self) -> (f32, f32, f32) {
        let (le, re) = self.eye_centres();
        let m = mid(le, re);
        let d = dist(le, re);
        let roll = (re.1 - le.1).atan2(re.0 - le.0);
        if d < 1e-3 {
            return (1.0, 0.0, roll.to_degrees());
        }
        let (c, s) = (roll.cos(), roll.sin());
        let n = self.0[NOSE];
        let (dx, dy) = (n.0 - m.0, n.1 - m.1);
        let along = (dx * c + dy * s) / d;
        let below = (-dx * s + dy * c) / d;
        (2.0 * along, below, roll.to_degrees())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ear_of_open_and_closed_eyes() {
        // Corners 30 px apart, lids 10 px apart: EAR = (10 + 10) / 60.
        let open = [
            (0.0, 0.0),
            (10.0, -5.0),
            (20.0, -5.0),
            (30.0, 0.0),
            (20.0, 5.0),
            (10.0, 5.0),
        ];
        assert!((ear(open) - 1.0 / 3.0).abs() < 1e-6);
        let closed = [
            (0.0, 0.0),
            (10.0, -0.5),
            (20.0, -0.5),
            (30.0, 0.0),
            (20.0, 0.5),
            (10.0, 0.5),
        ];
        assert!((ear(closed) - 1.0 / 30.0).abs() < 1e-6);
        assert_eq!(ear([(1.0, 1.0); 6]), 0.0);
        // Scale invariant.
        let big = open.map(|(x, y)| (x * 3.0, y * 3.0));
        assert!((ear(big) - ear(open)).abs() < 1e-6);
        // Only a 68-point shape has lids.
        assert_eq!(ears_68(&[(0.0, 0.0); 5]), None);
        let mut p = vec![(0.0f32, 0.0f32); 68];
        p[36..42].copy_from_slice(&open);
        p[42..48].copy_from_slice(&closed);
        let (l, r) = ears_68(&p).unwrap();
        assert!((l - 1.0 / 3.0).abs() < 1e-6 && (r - 1.0 / 30.0).abs() < 1e-6);
    }

    /// Eyes at (30,40)-(40,40) and (60,40)-(70,40) (centres 35 and 65, distance 30), the
    /// nose base at (nose_x, 61).
    fn face(nose_x: f32) -> Landmarks {
        Landmarks([
            (70.0, 40.0),
            (60.0, 40.0),
            (30.0, 40.0),
            (40.0, 40.0),
            (nose_x, 61.0),
        ])
    }

    #[test]
    fn pose_proxies() {
        let (yaw, pitch, roll) = face(50.0).pose();
        assert!(yaw.abs() < 1e-6);
        assert!((pitch - 0.7).abs() < 1e-6);
        assert!(roll.abs() < 1e-6);
        // Nose under the image-right eye's centre: yaw 1.
        let (yaw, _, _) = face(65.0).pose();
        assert!((yaw - 1.0).abs() < 1e-6);
        assert!((face(50.0).inter_ocular() - 30.0).abs() < 1e-4);
        // The same face turned 90 degrees in the image: same yaw and pitch, roll 90.
        let turned = Landmarks(face(57.5).0.map(|(x, y)| (-y, x)));
        let (yaw, pitch, roll) = turned.pose();
        assert!((yaw - 0.5).abs() < 1e-5, "{yaw}");
        assert!((pitch - 0.7).abs() < 1e-5, "{pitch}");
        assert!((roll - 90.0).abs() < 1e-4, "{roll}");
    }

    #[test]
    fn corners_run_left_to_right_and_the_face_box_surrounds_the_eyes() {
        let f = face(50.0);
        assert_eq!(f.eye_corners(true), ((30.0, 40.0), (40.0, 40.0)));
        assert_eq!(f.eye_corners(false), ((60.0, 40.0), (70.0, 40.0)));
        assert_eq!(f.eye_box(false), ((65.0, 40.0), 10.0));
        let b = f.bbox();
        assert!((b.x - (50.0 - 1.08 * 30.0)).abs() < 1e-4);
        assert!((b.w - 2.16 * 30.0).abs() < 1e-4);
        assert!(b.y < 40.0 && b.bottom() > 61.0);
    }
}
