//! `[vision]` of the configuration file: what the vision thread is given. The daemon's
//! `config` module reads and validates the whole file and re-exports these types; this
//! crate only uses them.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `vision.source`: "camera", or any other text as the path of a video file or an image
/// folder, replayed at its own frame rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum VisionSource {
    Camera,
    Replay(PathBuf),
}

impl From<String> for VisionSource {
    fn from(s: String) -> Self {
        if s == "camera" {
            VisionSource::Camera
        } else {
            VisionSource::Replay(PathBuf::from(s))
        }
    }
}

impl From<VisionSource> for String {
    fn from(s: VisionSource) -> String {
        match s {
            VisionSource::Camera => "camera".into(),
            VisionSource::Replay(p) => p.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Directory holding the model files fetched by `scripts/setup.sh`.
    pub models: PathBuf,
    pub source: VisionSource,
    pub camera_device: String,
    pub camera_width: u32,
    pub camera_height: u32,
    pub camera_fps: u32,
    pub camera_format: String,
    pub detect_width: u32,
    pub roi_check_every: u32,
    pub full_detect_every: u32,
    pub idle_detect_every: u32,
    pub min_face_px: f32,
    pub max_yaw: f32,
    pub min_sharpness: f32,
    pub match_threshold: f32,
    pub match_margin: f32,
    pub strict_threshold: f32,
    pub strict_margin: f32,
    pub min_cohort: u32,
    /// The photo tier, for users enrolled from still photos only (see
    /// [`crate::matcher`]); a threshold of 0 turns it off.
    pub photo_threshold: f32,
    pub photo_margin: f32,
    /// Users enrolled before SFace (dlib templates only) are matched by dlib's rule as it
    /// shipped, until their first grant stores SFace templates; false: they need
    /// re-enrolling before their face opens the door.
    pub match_legacy_templates: bool,
    pub liveness_window_s: f32,
    pub identity_break: f32,
    /// The eye model (most of a frame's cost) is not run on a face whose encodings are
    /// all this far from every enrolled user (no blink could open for it); 0 = always.
    pub eyes_gate: f32,
    pub post_blink_frames: u32,
    pub blink: crate::blink::BlinkConfig,
    /// Presentation-attack detection (`[vision.pad]`).
    pub pad: crate::pad::PadConfig,
    /// The optional active challenge (`[vision.challenge]`).
    pub challenge: crate::challenge::ChallengeConfig,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            models: PathBuf::new(),
            source: VisionSource::Camera,
            camera_device: "/dev/video0".into(),
            camera_width: 640,
            camera_height: 480,
            camera_fps: 15,
            camera_format: "mjpeg".into(),
            detect_width: 320,
            roi_check_every: 5,
            full_detect_every: 30,
            idle_detect_every: 2,
            min_face_px: 80.0,
            max_yaw: 0.4,
            min_sharpness: 15.0,
            match_threshold: 1.0,
            match_margin: 0.25,
            strict_threshold: 0.92,
            strict_margin: 0.04,
            min_cohort: 5,
            photo_threshold: 1.02,
            photo_margin: 0.04,
            match_legacy_templates: true,
            liveness_window_s: 5.0,
            identity_break: 0.85,
            eyes_gate: 1.15,
            post_blink_frames: 3,
            blink: Default::default(),
            pad: Default::default(),
            challenge: Default::default(),
        }
    }
}

impl VisionConfig {
    pub fn policy(&self) -> crate::matcher::MatchPolicy {
        crate::matcher::MatchPolicy {
            threshold: self.match_threshold,
            margin: self.match_margin,
            strict_threshold: self.strict_threshold,
            strict_margin: self.strict_margin,
            min_cohort: self.min_cohort as usize,
            photo_threshold: self.photo_threshold,
            photo_margin: self.photo_margin,
        }
    }

    pub fn gates(&self) -> crate::quality::QualityGates {
        crate::quality::QualityGates {
            min_face_px: self.min_face_px,
            max_yaw: self.max_yaw,
            // The nose base below the eye line, in eye distances (about 0.7 frontal);
            // the same range as the 68-point gate of 0.05-1.2 had (mapped on ZJU frames).
            min_pitch: 0.2,
            max_pitch: 1.8,
            max_roll_deg: 30.0,
            min_sharpness: self.min_sharpness,
        }
    }

    pub fn pipeline(&self) -> crate::pipeline::PipelineConfig {
        crate::pipeline::PipelineConfig {
            detect_width: self.detect_width,
            roi_check_every: self.roi_check_every,
            full_detect_every: self.full_detect_every,
            idle_detect_every: self.idle_detect_every,
            gates: self.gates(),
            policy: self.policy(),
            legacy_policy: self
                .match_legacy_templates
                .then_some(crate::matcher::MatchPolicy::DLIB_LEGACY),
            liveness_window: std::time::Duration::from_secs_f32(self.liveness_window_s),
            early_encodings: 3,
            encode_gap_frames: 2,
            refresh_every_frames: 15,
            fuse_last: 5,
            max_encodings: 12,
            identity_break: self.identity_break,
            eyes_gate: self.eyes_gate,
            post_blink_frames: self.post_blink_frames,
            blink: self.blink.clone(),
            pad: self.pad.clone(),
            challenge: self.challenge.clone(),
        }
    }

    pub fn camera(&self) -> crate::camera::CameraSettings {
        crate::camera::CameraSettings {
            device: self.camera_device.clone(),
            width: self.camera_width,
            height: self.camera_height,
            fps: self.camera_fps,
            format: self.camera_format.clone(),
        }
    }
}
