//! dlib's HOG detector and 5-point shape predictor, the SFace match embedding
//! ([`super::sface`]), the two presentation-attack CNNs ([`super::pad`]) and the iris
//! landmark CNN ([`super::iris`]), loaded in parallel, and thin safe calls on [`Patch`]es
//! and frames that return frame coordinates. Two dlib models are loaded only on first
//! use: the 68-point predictor (100 MB) by the comparison mode
//! `[vision.blink] eyes = "landmarks"`, and the ResNet encoder (the embedding before
//! SFace) only while the gallery holds users enrolled under it ([`Models::encode_legacy`]).
//! Models are `Send` but not `Sync`: each thread that runs them owns its own `Models`.

use super::frame::{BBox, Frame, Patch};
use super::hog::HogDetector;
use super::iris::{Iris, IRIS};
use super::pad::{Pad, FAS_V1SE, FAS_V2};
use super::sface::{Sface, SFACE};
use super::VisionError;
use dlib_face_recognition::{
    FaceEncoderNetwork, FaceEncoderTrait, FaceLandmarks, LandmarkPredictor, LandmarkPredictorTrait,
    Rectangle,
};
use lockerd_core::types::Embedding;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const LANDMARKS_5: &str = "shape_predictor_5_face_landmarks.dat";
/// Only for `[vision.blink] eyes = "landmarks"` (loaded on first use; not required).
pub const LANDMARKS_68: &str = "shape_predictor_68_face_landmarks.dat";
/// Only for templates made before SFace (loaded on first use; not required).
pub const RESNET: &str = "dlib_face_recognition_resnet_model_v1.dat";
/// Every file [`Models::load`] needs.
pub const REQUIRED: [&str; 5] = [LANDMARKS_5, SFACE, FAS_V2, FAS_V1SE, IRIS];

/// The sha256 of each model the pipeline may load, as pinned in `scripts/setup.sh` (dlib's
/// from the face_recognition_models 0.3.0 sdist on PyPI, MiniFASNet's and SFace's from
/// `../shared/models`, the iris model converted from the mediapipe wheel).
pub const PINNED: [(&str, &str); 6] = [
    (
        LANDMARKS_5,
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    ),
    (
        RESNET,
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    ),
    (
        FAS_V2,
        "4eed38f0bde33c9b805942a5f25e42ce1161e2bda545254be622be957727794e",
    ),
    (
        FAS_V1SE,
        "d819a69bac6b9ade2a0f4d9b60b618e1260f7bf3ba1fddff6c5d82131cb1083f",
    ),
    (
        IRIS,
        "a59366d265dc8b5c5e8fee4b08585bc56a10f2e1baada14061bd7fba4b934678",
    ),
    (
        SFACE,
        "196b3bf8a85939c5f8b79fbcdf681a2c18462e2d4bc62498a0dc5ca9d9ccc338",
    ),
];

/// Check every model in `dir` against [`PINNED`]; the number checked, or what differs.
pub fn verify(dir: &Path) -> Result<usize, String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    for (name, want) in PINNED {
        let path = dir.join(name);
        let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let got = hex::encode(h.finalize());
        if got != want {
            return Err(format!(
                "{}: sha256 {got}, not the pinned {want} (damaged or another model)",
                path.display()
            ));
        }
    }
    Ok(PINNED.len())
}

pub struct Models {
    /// In a RefCell: dlib's scanner keeps scratch buffers (Models is not Sync).
    detector: RefCell<HogDetector>,
    predictor: LandmarkPredictor,
    /// The 68-point predictor, once `ears_68` has needed it (None: not yet asked for).
    predictor_68: Option<LandmarkPredictor>,
    dir: PathBuf,
    sface: Sface,
    /// dlib's ResNet, once a legacy template has needed it (None: not yet asked for).
    encoder: RefCell<Option<FaceEncoderNetwork>>,
    pad: Pad,
    iris: Iris,
    /// Wall seconds spent loading.
    pub load_s: f64,
}

fn loaded<T>(r: Result<T, String>, what: &str) -> Result<T, VisionError> {
    r.map_err(|e| VisionError::Models(format!("{what}: {e}")))
}

fn joined<T>(r: std::thread::Result<T>, what: &str) -> Result<T, VisionError> {
    r.map_err(|_| VisionError::Models(format!("{what}: loader thread panicked")))
}

/// dlib's 5 landmark points in frame coordinates ([`super::geometry`] names them).
#[derive(Debug, Clone)]
pub struct Landmarks(pub [(f32, f32); 5]);

/// Landmarks plus dlib's own object, kept for encoding the same patch.
pub struct Shape {
    pub points: Landmarks,
    raw: FaceLandmarks,
}

/// Where the models are looked for, in order: `configured` (`--models` or
/// `vision.models`, when set), `$LOCKERD_MODELS`, `/usr/share/lockerd/models` (the
/// lockerd-models package), then `${XDG_CACHE_HOME:-~/.cache}/lockerd/models` (where
/// `scripts/setup.sh` puts them).
pub fn search_path(configured: &Path) -> Vec<(&'static str, PathBuf)> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    places(
        configured,
        env("LOCKERD_MODELS"),
        env("XDG_CACHE_HOME"),
        env("HOME"),
    )
}

fn places(
    configured: &Path,
    env_models: Option<PathBuf>,
    xdg_cache: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Vec<(&'static str, PathBuf)> {
    let mut v = Vec::new();
    if !configured.as_os_str().is_empty() {
        v.push(("--models / vision.models", configured.to_owned()));
    }
    v.extend(env_models.map(|p| ("$LOCKERD_MODELS", p)));
    v.push((
        "the lockerd-models package",
        PathBuf::from("/usr/share/lockerd/models"),
    ));
    let cache = xdg_cache.or_else(|| home.map(|h| h.join(".cache")));
    v.extend(cache.map(|c| ("scripts/setup.sh", c.join("lockerd/models"))));
    v
}

/// The first directory of [`search_path`] holding every model file; the error lists
/// each place looked at and the one command that fixes it.
pub fn find(configured: &Path) -> Result<PathBuf, VisionError> {
    find_in(&search_path(configured))
}

fn find_in(places: &[(&'static str, PathBuf)]) -> Result<PathBuf, VisionError> {
    let complete = |d: &Path| REQUIRED.iter().all(|f| d.join(f).is_file());
    if let Some((_, d)) = places.iter().find(|(_, d)| complete(d)) {
        return Ok(d.clone());
    }
    let looked: Vec<String> = places
        .iter()
        .map(|(why, d)| format!("{} ({why})", d.display()))
        .collect();
    Err(VisionError::Models(format!(
        "the face models ({}) are in none of: {}. Fix: run `bash \
         scripts/setup.sh` (or install the lockerd-models package, or pass --models DIR)",
        REQUIRED.join(", "),
        looked.join(", ")
    )))
}

/// Give freed heap pages back to the kernel (loading leaves large freed buffers behind).
fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

extern "C" {
    /// From libopenblas, which dlib links for the encoder's matrix maths.
    fn openblas_set_num_threads(n: std::os::raw::c_int);
}

/// `bbox` (frame coordinates) as a dlib rectangle on `patch`.
fn patch_rect(patch: &Patch, bbox: &BBox) -> Rectangle {
    let (l, t) = patch.from_frame(bbox.x, bbox.y);
    let (r, b) = patch.from_frame(bbox.right(), bbox.bottom());
    Rectangle {
        left: l.round() as _,
        top: t.round() as _,
        right: r.round() as _,
        bottom: b.round() as _,
    }
}

impl Models {
    /// Load the models, the dlib file in parallel with the rest, from the first
    /// directory of [`search_path`] that has them (`configured` first when set).
    pub fn load(configured: &Path) -> Result<Models, VisionError> {
        let t0 = Instant::now();
        // One face per call: BLAS threads only spin (and cost system time), so use one.
        // SAFETY: a plain setter in OpenBLAS, safe to call at any time.
        unsafe { openblas_set_num_threads(1) };
        // The same for OpenCV (dnn, resize): the vision thread keeps to one core, as dlib
        // does (no effect on the frame time was measurable on this 2-core VM).
        opencv::core::set_num_threads(1).map_err(|e| VisionError::OpenCv(e.to_string()))?;
        let dir = find(configured)?;
        if dir != configured {
            log::info!("face models from {}", dir.display());
        }
        // SFace first and alone: reading and splitting its 38.7 MB file ([`super::onnx`])
        // is the largest transient of the load; nothing else loading at the same time
        // keeps the process peak down.
        let sface = Sface::load(&dir)?;
        trim();
        let lp = dir.join(LANDMARKS_5);
        // The dlib landmark file (about 0.08 s here) loads beside everything else.
        let predictor = std::thread::spawn(move || LandmarkPredictor::open(&lp));
        let rest = (|| {
            let detector = loaded(HogDetector::load(), "face detector")?;
            Ok::<_, VisionError>((detector, sface, Pad::load(&dir)?, Iris::load(&dir)?))
        })();
        // Joined before `rest` is looked at, so no error leaves a thread running.
        let predictor = joined(predictor.join(), "landmark model");
        let (detector, sface, pad, iris) = rest?;
        let predictor = loaded(predictor?, "landmark model")?;
        // The loader threads' scratch memory stays in their malloc arenas otherwise.
        trim();
        Ok(Models {
            detector: RefCell::new(detector),
            predictor,
            predictor_68: None,
            dir,
            sface,
            encoder: RefCell::new(None),
            pad,
            iris,
            load_s: t0.elapsed().as_secs_f64(),
        })
    }

    /// HOG faces in `patch`, as boxes in frame coordinates.
    pub fn detect(&self, patch: &Patch) -> Result<Vec<BBox>, VisionError> {
        let found = self
            .detector
            .borrow_mut()
            .detect(&patch.matrix)
            .map_err(VisionError::Models)?;
        Ok(found
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
            .collect())
    }

    /// The 5 landmarks of the face in `bbox` (frame coordinates) on `patch`.
    pub fn landmarks(&self, patch: &Patch, bbox: &BBox) -> Option<Shape> {
        let raw = self
            .predictor
            .face_landmarks(&patch.matrix, &patch_rect(patch, bbox));
        let mut points = [(0.0, 0.0); 5];
        if raw.len() != points.len() {
            return None;
        }
        for (p, q) in points.iter_mut().zip(raw.iter()) {
            *p = patch.to_frame(q.x() as f32, q.y() as f32);
        }
        Some(Shape {
            points: Landmarks(points),
            raw,
        })
    }

    /// (image-left, image-right) eye aspect ratios from dlib's 68-point predictor, for
    /// the comparison mode `eyes = "landmarks"`; the predictor (100 MB) is loaded on the
    /// first call. None when it gives no shape.
    pub fn ears_68(
        &mut self,
        patch: &Patch,
        bbox: &BBox,
    ) -> Result<Option<(f32, f32)>, VisionError> {
        let pred = match self.predictor_68.take() {
            Some(p) => p,
            None => loaded(
                LandmarkPredictor::open(self.dir.join(LANDMARKS_68)),
                "68-point landmark model",
            )?,
        };
        let pred = self.predictor_68.insert(pred);
        let raw = pred.face_landmarks(&patch.matrix, &patch_rect(patch, bbox));
        let points: Vec<(f32, f32)> = raw.iter().map(|p| (p.x() as f32, p.y() as f32)).collect();
        Ok(super::geometry::ears_68(&points))
    }

    /// Fused MiniFASNet live probability of the face in `bbox` on `frame` ([`Pad`]).
    pub fn live_probability(
        &mut self,
        frame: &Frame,
        bbox: &BBox,
    ) -> Result<Option<f32>, VisionError> {
        self.pad.live_probability(frame, bbox)
    }

    /// Openness (lid gap over eye width) of the image-left and image-right eye of `lm`
    /// from the iris model ([`super::iris`]); None when either eye gives nothing.
    /// See [`Iris::set_reuse_below`].
    pub fn set_eye_reuse_below(&self, grey_levels: f32) {
        self.iris.set_reuse_below(grey_levels);
    }

    /// Eye measurements answered from the previous one so far ([`Iris::reused`]).
    pub fn eye_reused(&self) -> u64 {
        self.iris.reused()
    }

    pub fn eye_openness(
        &self,
        frame: &Frame,
        lm: &Landmarks,
    ) -> Result<Option<(f32, f32)>, VisionError> {
        self.iris
            .openness_pair(frame, lm.eye_corners(true), lm.eye_corners(false))
    }

    /// The match embedding ([`super::sface`], [`lockerd_core::types::EmbeddingModel::CURRENT`])
    /// of the face whose landmarks are `shape`, aligned on `frame`.
    pub fn encode(&self, frame: &Frame, shape: &Shape) -> Result<Option<Embedding>, VisionError> {
        self.sface.embed(frame, &shape.points)
    }

    /// The match embedding's network.
    pub fn sface(&self) -> &super::sface::Sface {
        &self.sface
    }

    /// dlib's ResNet embedding (the model before SFace) of the face whose landmarks were
    /// found on this same `patch`: only to match templates enrolled under it. The
    /// network (22 MB file, about 42 MiB resident) is loaded on the first call.
    pub fn encode_legacy(
        &self,
        patch: &Patch,
        shape: &Shape,
    ) -> Result<Option<Embedding>, VisionError> {
        let mut slot = self.encoder.borrow_mut();
        if slot.is_none() {
            let net = loaded(
                FaceEncoderNetwork::open(self.dir.join(RESNET)),
                "dlib ResNet encoder (for templates enrolled before SFace)",
            )?;
            log::info!("dlib ResNet encoder loaded for templates enrolled before SFace");
            *slot = Some(net);
        }
        let Some(enc) = slot.as_ref() else {
            return Ok(None);
        };
        let out = enc.get_face_encodings(&patch.matrix, std::slice::from_ref(&shape.raw), 0);
        Ok(out.first().and_then(|e| Embedding::from_f64(e.as_ref())))
    }

    /// Whether dlib's ResNet is loaded (memory reports).
    pub fn legacy_loaded(&self) -> bool {
        self.encoder.borrow().is_some()
    }
}

#[cfg(test)]
mod search_tests {
    use super::*;

    #[test]
    fn models_are_looked_for_in_the_documented_order_and_the_error_lists_every_place() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str, full: bool| {
            let p = d.path().join(n);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join(LANDMARKS_5), b"x").unwrap();
            if full {
                for f in REQUIRED {
                    std::fs::write(p.join(f), b"x").unwrap();
                }
            }
            p
        };
        let (conf, env, cache) = (mk("conf", false), mk("env", true), mk("xdg", true));
        let p = places(&conf, Some(env.clone()), Some(cache.clone()), None);
        let names: Vec<&str> = p.iter().map(|(w, _)| *w).collect();
        assert_eq!(
            names,
            [
                "--models / vision.models",
                "$LOCKERD_MODELS",
                "the lockerd-models package",
                "scripts/setup.sh"
            ]
        );
        assert_eq!(p[3].1, cache.join("lockerd/models"));
        // The configured directory lacks a file: the next complete one is used.
        assert_eq!(find_in(&p).unwrap(), env);
        // Nothing complete anywhere: every place is named, with the fix.
        let p = places(Path::new(""), None, None, Some(d.path().join("home")));
        let e = find_in(&p).unwrap_err().to_string();
        assert!(
            e.contains("/usr/share/lockerd/models (the lockerd-models package)"),
            "{e}"
        );
        assert!(
            e.contains("home/.cache/lockerd/models (scripts/setup.sh)"),
            "{e}"
        );
        assert!(e.contains("run `bash scripts/setup.sh`"), "{e}");
    }

    #[test]
    fn a_model_that_differs_from_the_pinned_sum_is_named() {
        let d = tempfile::tempdir().unwrap();
        for (n, _) in PINNED {
            std::fs::write(d.path().join(n), b"not a model").unwrap();
        }
        let e = verify(d.path()).unwrap_err();
        assert!(
            e.contains(LANDMARKS_5) && e.contains("not the pinned"),
            "{e}"
        );
        std::fs::remove_file(d.path().join(RESNET)).unwrap();
        let e = verify(d.path()).unwrap_err();
        assert!(e.contains(LANDMARKS_5), "{e}");
    }
}
