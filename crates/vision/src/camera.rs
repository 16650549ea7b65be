//! The live V4L2 camera through nokhwa. Opening, format negotiation and frame decoding
//! only; re-opening with back-off and newest-frame-wins live in [`super::source`].
//!
//! Only compiled and unit-tested here (no camera on the build machine); see README
//! "What ran only in simulation".

use super::frame::Frame;
use super::source::RawCamera;
use nokhwa::pixel_format::RgbFormat;
use nokhwa::utils::{CameraFormat, CameraIndex, FrameFormat, RequestedFormat, RequestedFormatType};
use std::time::Duration;

/// Camera settings from `[vision]` in the config.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    pub device: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    /// "mjpeg" or "yuyv".
    pub format: String,
}

/// `/dev/video3` -> 3, `2` -> 2.
pub fn device_index(device: &str) -> Result<u32, String> {
    let digits: String = device.trim_start_matches("/dev/video").chars().collect();
    digits
        .parse()
        .map_err(|_| format!("camera device {device:?} is not /dev/videoN or a number"))
}

pub fn frame_format(name: &str) -> Result<FrameFormat, String> {
    match name {
        "mjpeg" => Ok(FrameFormat::MJPEG),
        "yuyv" => Ok(FrameFormat::YUYV),
        other => Err(format!("camera format {other:?} is not mjpeg or yuyv")),
    }
}

pub struct NokhwaCamera {
    cam: nokhwa::Camera,
}

impl NokhwaCamera {
    /// Open and start streaming; the negotiated format is in the returned description.
    pub fn open(s: &CameraSettings) -> Result<(NokhwaCamera, String), String> {
        let index = device_index(&s.device)?;
        let fmt = frame_format(&s.format)?;
        let want = CameraFormat::new_from(s.width, s.height, fmt, s.fps);
        let req = RequestedFormat::new::<RgbFormat>(RequestedFormatType::Closest(want));
        let mut cam = nokhwa::Camera::new(CameraIndex::Index(index), req)
            .map_err(|e| format!("cannot open camera {}: {e}", s.device))?;
        cam.open_stream()
            .map_err(|e| format!("cannot start streaming from {}: {e}", s.device))?;
        let got = cam.camera_format();
        let desc = format!("{} {} ({})", s.device, got, cam.info().human_name());
        Ok((NokhwaCamera { cam }, desc))
    }
}

impl RawCamera for NokhwaCamera {
    fn grab(&mut self) -> Result<Frame, String> {
        let buf = self
            .cam
            .frame()
            .map_err(|e| format!("camera read failed: {e}"))?;
        let img = buf
            .decode_image::<RgbFormat>()
            .map_err(|e| format!("camera frame decode failed: {e}"))?;
        let (w, h) = (img.width(), img.height());
        Frame::from_rgb(img.into_raw(), w, h, 0, Duration::ZERO).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_and_formats_parse() {
        assert_eq!(device_index("/dev/video0"), Ok(0));
        assert_eq!(device_index("/dev/video12"), Ok(12));
        assert_eq!(device_index("3"), Ok(3));
        assert!(device_index("/dev/sda").is_err());
        assert!(frame_format("mjpeg").is_ok());
        assert!(frame_format("h264").is_err());
    }

    #[test]
    fn opening_a_missing_camera_is_an_error_not_a_panic() {
        let s = CameraSettings {
            device: "/dev/video97".into(),
            width: 640,
            height: 480,
            fps: 15,
            format: "mjpeg".into(),
        };
        let err = NokhwaCamera::open(&s).err().expect("no such camera here");
        assert!(err.contains("/dev/video97"), "{err}");
    }
}
