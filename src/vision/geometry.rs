//! Measures taken from the 68 landmarks: eye aspect ratio, head pose proxies, the
//! landmarks' bounding box. Pure functions, unit-tested on hand-made point sets.

use super::frame::BBox;
use super::models::Landmarks;

/// Indices of the six points of each eye in the iBUG 68-point scheme (p1..p6).
pub const LEFT_EYE: [usize; 6] = [36, 37, 38, 39, 40, 41];
pub const RIGHT_EYE: [usize; 6] = [42, 43, 44, 45, 46, 47];

fn eye_points(left: bool) -> [usize; 6] {
    if left {
        LEFT_EYE
    } else {
        RIGHT_EYE
    }
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
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

impl Landmarks {
    fn eye(&self, idx: [usize; 6]) -> [(f32, f32); 6] {
        idx.map(|i| self.0[i])
    }

    /// (left, right) eye aspect ratios.
    pub fn ears(&self) -> (f32, f32) {
        (ear(self.eye(LEFT_EYE)), ear(self.eye(RIGHT_EYE)))
    }

    /// The two corners of one eye (p1 and p4): the iris model's crop is made from them.
    pub fn eye_corners(&self, left: bool) -> ((f32, f32), (f32, f32)) {
        let e = self.eye(eye_points(left));
        (e[0], e[3])
    }

    /// Centre and width of one eye.
    pub fn eye_box(&self, left: bool) -> ((f32, f32), f32) {
        let e = self.eye(eye_points(left));
        let cx = e.iter().map(|p| p.0).sum::<f32>() / 6.0;
        let cy = e.iter().map(|p| p.1).sum::<f32>() / 6.0;
        ((cx, cy), dist(e[0], e[3]))
    }

    fn centroid(&self, range: std::ops::Range<usize>) -> (f32, f32) {
        let n = range.len() as f32;
        let (sx, sy) = range.fold((0.0, 0.0), |(sx, sy), i| {
            (sx + self.0[i].0, sy + self.0[i].1)
        });
        (sx / n, sy / n)
    }

    /// Distance between the eye centres, in pixels.
    pub fn inter_ocular(&self) -> f32 {
        dist(self.centroid(36..42), self.centroid(42..48))
    }

    pub fn bbox(&self) -> BBox {
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for &(x, y) in &self.0 {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        BBox {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
        }
    }

    /// Head pose proxies: (yaw, pitch, roll_degrees). `yaw` is 0 for a frontal face and
    /// ±1 when the nose tip reaches the jaw outline; `pitch` is the nose tip's height
    /// between the eye line (0) and the mouth (1), about 0.5-0.7 when frontal.
    pub fn pose(&self) -> (f32, f32, f32) {
        let nose = self.0[30];
        let (jl, jr) = (self.0[0], self.0[16]);
        let span = jr.0 - jl.0;
        let yaw = if span.abs() < 1e-3 {
            1.0
        } else {
            ((nose.0 - jl.0) / span - 0.5) * 2.0
        };
        let le = self.centroid(36..42);
        let re = self.centroid(42..48);
        let eyes_y = (le.1 + re.1) / 2.0;
        let mouth = self.centroid(48..68);
        let vspan = mouth.1 - eyes_y;
        let pitch = if vspan.abs() < 1e-3 {
            0.0
        } else {
            (nose.1 - eyes_y) / vspan
        };
        let roll = (re.1 - le.1).atan2(re.0 - le.0).to_degrees();
        (yaw, pitch, roll)
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
    }

    fn synthetic_face(nose_x: f32) -> Landmarks {
        let mut p = vec![(0.0f32, 0.0f32); 68];
        p[0] = (0.0, 50.0);
        p[16] = (100.0, 50.0);
        p[36..42].fill((30.0, 40.0));
        p[42..48].fill((70.0, 40.0));
        p[48..68].fill((50.0, 80.0));
        p[30] = (nose_x, 64.0);
        Landmarks(p)
    }

    #[test]
    fn pose_proxies() {
        let (yaw, pitch, roll) = synthetic_face(50.0).pose();
        assert!(yaw.abs() < 1e-6);
        assert!((pitch - 0.6).abs() < 1e-6);
        assert!(roll.abs() < 1e-6);
        let (yaw, _, _) = synthetic_face(75.0).pose();
        assert!((yaw - 0.5).abs() < 1e-6);
        assert!((synthetic_face(50.0).inter_ocular() - 40.0).abs() < 1e-4);
    }
}
