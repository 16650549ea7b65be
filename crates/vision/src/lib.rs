//! Vision: frames in, face events out.
//!
//! Runs on its own OS thread (CPU-bound, blocking C++). A [`source::FrameSource`] yields
//! frames (live camera with newest-frame-wins, or a replayed file); the
//! [`pipeline::Pipeline`] detects the face (HOG on a downscaled frame, then in a region
//! around the tracked face), finds dlib's 5 landmarks every frame, measures the eyes with the
//! iris model ([`iris`]) and tracks blinks per face track ([`blink`]), encodes only good
//! frames ([`quality`]) with SFace aligned from the 5 landmarks ([`sface`]), matches them
//! 1:N against templates held in memory ([`matcher`]), scores the encoded frames for
//! presentation attacks ([`pad`]), and emits [`pipeline::FaceEvent`]s.
//! It never decides to unlock: the access module does. [`enroll`] turns photos and clips
//! into templates. Vision imports neither the store nor access control: templates are
//! handed in ([`matcher::Gallery`]), attempts handed out; the measurement commands live in
//! the daemon crate's `eval` (feature `tools`). A crate of its own (`lockerd-vision`): it
//! depends on `lockerd-core` and the C++ libraries (OpenCV, dlib), never on the daemon,
//! so a dependency back into the store or access control is a compile error.

pub mod blink;
pub mod camera;
pub mod challenge;
pub mod config;
pub mod enroll;
pub mod frame;
pub mod geometry;
pub mod hog;
pub mod iris;
pub mod matcher;
pub mod models;
pub mod onnx;
pub mod pad;
pub mod pipeline;
pub mod quality;
pub mod runner;
pub mod sface;
pub mod source;
#[cfg(feature = "tools")]
pub mod synth;
pub mod video;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VisionError {
    #[error("models: {0}")]
    Models(String),
    #[error("{0}: no such file or directory")]
    NotFound(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("{0}")]
    BadInput(String),
    #[error("OpenCV: {0}")]
    OpenCv(String),
    #[error("camera: {0}")]
    Camera(String),
    #[error("no frame from the camera yet")]
    NoFrame,
    #[error("enrollment refused: {1}")]
    Enroll(enroll::Refusal, String),
}
