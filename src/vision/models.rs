//! The three dlib models (HOG detector, 68-point shape predictor, ResNet encoder),
//! loaded in parallel, and thin safe calls on [`Patch`]es that return frame coordinates.
//! Models are `Send` but not `Sync`: each thread that runs them owns its own `Models`.

use super::frame::{BBox, Patch};
use super::VisionError;
use crate::types::Embedding;
use dlib_face_recognition::{
    FaceDetector, FaceDetectorTrait, FaceEncoderNetwork, FaceEncoderTrait, FaceLandmarks,
    LandmarkPredictor, LandmarkPredictorTrait, Rectangle,
};
use std::path::Path;
use std::time::Instant;

pub const LANDMARKS_68: &str = "shape_predictor_68_face_landmarks.dat";
pub const RESNET: &str = "dlib_face_recognition_resnet_model_v1.dat";

pub struct Models {
    detector: FaceDetector,
    predictor: LandmarkPredictor,
    encoder: FaceEncoderNetwork,
    /// Wall seconds spent loading.
    pub load_s: f64,
}

fn joined<T>(r: std::thread::Result<Result<T, String>>, what: &str) -> Result<T, VisionError> {
    match r {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(VisionError::Models(format!("{what}: {e}"))),
        Err(_) => Err(VisionError::Models(format!(
            "{what}: loader thread panicked"
        ))),
    }
}

/// 68 landmark points in frame coordinates.
#[derive(Debug, Clone)]
pub struct Landmarks(pub Vec<(f32, f32)>);

/// Landmarks plus dlib's own object, kept for encoding the same patch.
pub struct Shape {
    pub points: Landmarks,
    raw: FaceLandmarks,
}

extern "C" {
    /// From libopenblas, which dlib links for the encoder's matrix maths.
    fn openblas_set_num_threads(n: std::os::raw::c_int);
}

impl Models {
    /// Load all three models from `dir`, in parallel (the 68-point file dominates).
    pub fn load(dir: &Path) -> Result<Models, VisionError> {
        let t0 = Instant::now();
        // One face per call: BLAS threads only spin (and cost system time), so use one.
        // SAFETY: a plain setter in OpenBLAS, safe to call at any time.
        unsafe { openblas_set_num_threads(1) };
        for f in [LANDMARKS_68, RESNET] {
            if !dir.join(f).is_file() {
                return Err(VisionError::Models(format!(
                    "{} is missing in {} (run scripts/setup.sh, or pass --models DIR)",
                    f,
                    dir.display()
                )));
            }
        }
        let lp = dir.join(LANDMARKS_68);
        let rn = dir.join(RESNET);
        let predictor = std::thread::spawn(move || LandmarkPredictor::open(&lp));
        let encoder = std::thread::spawn(move || FaceEncoderNetwork::open(&rn));
        let detector = FaceDetector::new();
        let predictor = joined(predictor.join(), "landmark model")?;
        let encoder = joined(encoder.join(), "encoder model")?;
        // The loader threads' scratch memory stays in their malloc arenas otherwise.
        #[cfg(target_env = "gnu")]
        // SAFETY: malloc_trim only returns free pages to the kernel.
        unsafe {
            libc::malloc_trim(0);
        }
        Ok(Models {
            detector,
            predictor,
            encoder,
            load_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// HOG faces in `patch`, as boxes in frame coordinates.
    pub fn detect(&self, patch: &Patch) -> Vec<BBox> {
        self.detector
            .face_locations(&patch.matrix)
            .iter()
            .map(|r| {
                let (x0, y0) = patch.to_frame(r.left as f32, r.top as f32);
                let (x1, y1) = patch.to_frame(r.right as f32, r.bottom as f32);
                BBox {
                    x: x0,
                    y: y0,
                    w: x1 - x0,
                    h: y1 - y0,
                }
            })
            .collect()
    }

    /// 68 landmarks for the face in `bbox` (frame coordinates) on `patch`.
    pub fn landmarks(&self, patch: &Patch, bbox: &BBox) -> Option<Shape> {
        let (l, t) = patch.from_frame(bbox.x, bbox.y);
        let (r, b) = patch.from_frame(bbox.right(), bbox.bottom());
        let rect = Rectangle {
            left: l.round() as _,
            top: t.round() as _,
            right: r.round() as _,
            bottom: b.round() as _,
        };
        let raw = self.predictor.face_landmarks(&patch.matrix, &rect);
        if raw.len() != 68 {
            return None;
        }
        let points = raw
            .iter()
            .map(|p| patch.to_frame(p.x() as f32, p.y() as f32))
            .collect();
        Some(Shape {
            points: Landmarks(points),
            raw,
        })
    }

    /// ResNet embedding of the face whose landmarks were found on this same `patch`.
    pub fn encode(&self, patch: &Patch, shape: &Shape) -> Option<Embedding> {
        let enc =
            self.encoder
                .get_face_encodings(&patch.matrix, std::slice::from_ref(&shape.raw), 0);
        enc.first().and_then(|e| Embedding::from_f64(e.as_ref()))
    }
}
