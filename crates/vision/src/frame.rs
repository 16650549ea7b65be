//! Frames (RGB8 pixels with an index and a media time) and the conversions the pipeline
//! needs: OpenCV Mat in, cropped/scaled dlib matrices out.

use super::VisionError;
use dlib_face_recognition::ImageMatrix;
use opencv::core::{Mat, Rect as CvRect, Size, Vec3b};
use opencv::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// Largest frame or image accepted (pixels); anything bigger is refused, not decoded.
pub const MAX_PIXELS: u64 = 40_000_000;
/// Largest side accepted.
pub const MAX_SIDE: u32 = 10_000;

/// One RGB8 frame, row-major, tightly packed.
#[derive(Clone)]
pub struct Frame {
    pub index: u64,
    pub ts: Duration,
    pub width: u32,
    pub height: u32,
    pub rgb: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Frame#{}({}x{} @{:?})",
            self.index, self.width, self.height, self.ts
        )
    }
}

/// An axis-aligned box in frame pixels (f32 so tracking can move it smoothly).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl BBox {
    pub fn right(&self) -> f32 {
        self.x + self.w
    }
    pub fn bottom(&self) -> f32 {
        self.y + self.h
    }
    pub fn cx(&self) -> f32 {
        self.x + self.w / 2.0
    }
    pub fn cy(&self) -> f32 {
        self.y + self.h / 2.0
    }
    pub fn area(&self) -> f32 {
        self.w.max(0.0) * self.h.max(0.0)
    }
    pub fn iou(&self, o: &BBox) -> f32 {
        let ix = (self.right().min(o.right()) - self.x.max(o.x)).max(0.0);
        let iy = (self.bottom().min(o.bottom()) - self.y.max(o.y)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
    /// Grow by `m` times the size on every side.
    pub fn expand(&self, m: f32) -> BBox {
        BBox {
            x: self.x - self.w * m,
            y: self.y - self.h * m,
            w: self.w * (1.0 + 2.0 * m),
            h: self.h * (1.0 + 2.0 * m),
        }
    }
    /// Clip to a `w` x `h` image; integer pixel rectangle, or None if empty.
    pub fn clip_px(&self, w: u32, h: u32) -> Option<(i32, i32, i32, i32)> {
        let x0 = self.x.floor().max(0.0) as i32;
        let y0 = self.y.floor().max(0.0) as i32;
        let x1 = (self.right().ceil() as i32).min(w as i32);
        let y1 = (self.bottom().ceil() as i32).min(h as i32);
        if x1 - x0 < 2 || y1 - y0 < 2 {
            None
        } else {
            Some((x0, y0, x1 - x0, y1 - y0))
        }
    }
}

/// A dlib matrix of part of a frame, with the mapping back to frame coordinates:
/// `frame = offset + matrix / scale`.
pub struct Patch {
    pub matrix: ImageMatrix,
    pub ox: f32,
    pub oy: f32,
    pub scale: f32,
    pub width: u32,
    pub height: u32,
}

impl Patch {
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        (self.ox + x / self.scale, self.oy + y / self.scale)
    }
    pub fn from_frame(&self, x: f32, y: f32) -> (f32, f32) {
        ((x - self.ox) * self.scale, (y - self.oy) * self.scale)
    }
}

fn cv(e: opencv::Error) -> VisionError {
    VisionError::OpenCv(e.to_string())
}

impl Frame {
    pub fn from_rgb(
        rgb: Vec<u8>,
        width: u32,
        height: u32,
        index: u64,
        ts: Duration,
    ) -> Result<Frame, VisionError> {
        check_size(width, height)?;
        if rgb.len() != (width as usize) * (height as usize) * 3 {
            return Err(VisionError::BadInput(format!(
                "frame buffer is {} bytes, expected {}x{}x3",
                rgb.len(),
                width,
                height
            )));
        }
        Ok(Frame {
            index,
            ts,
            width,
            height,
            rgb: Arc::new(rgb),
        })
    }

    /// Borrow as an OpenCV matrix (RGB order).
    pub fn as_mat(&self) -> Result<opencv::boxed_ref::BoxedRef<'_, Mat>, VisionError> {
        Mat::new_rows_cols_with_bytes::<Vec3b>(self.height as i32, self.width as i32, &self.rgb)
            .map_err(cv)
    }

    /// Crop `roi` (frame pixels, clipped) and scale it by `scale` into a dlib matrix.
    /// `roi = None` takes the whole frame.
    pub fn patch(&self, roi: Option<BBox>, scale: f32) -> Result<Option<Patch>, VisionError> {
        let (x, y, w, h) = match roi {
            Some(b) => match b.clip_px(self.width, self.height) {
                Some(r) => r,
                None => return Ok(None),
            },
            None => (0, 0, self.width as i32, self.height as i32),
        };
        let full = self.as_mat()?;
        let view = Mat::roi(&full, CvRect::new(x, y, w, h)).map_err(cv)?;
        let (tw, th) = (
            ((w as f32) * scale).round().max(1.0) as i32,
            ((h as f32) * scale).round().max(1.0) as i32,
        );
        let mut owned = Mat::default();
        if (scale - 1.0).abs() < 1e-3 {
            view.copy_to(&mut owned).map_err(cv)?;
        } else {
            let interp = if scale < 1.0 {
                opencv::imgproc::INTER_AREA
            } else {
                opencv::imgproc::INTER_LINEAR
            };
            opencv::imgproc::resize(&view, &mut owned, Size::new(tw, th), 0.0, 0.0, interp)
                .map_err(cv)?;
        }
        let (pw, ph) = (owned.cols() as u32, owned.rows() as u32);
        let bytes = owned.data_bytes().map_err(cv)?;
        Ok(Some(Patch {
            matrix: rgb_to_matrix(bytes, pw, ph)?,
            ox: x as f32,
            oy: y as f32,
            scale: pw as f32 / w as f32,
            width: pw,
            height: ph,
        }))
    }

    /// The frame mapped by the 2x3 affine transform `t` (frame pixels to output pixels)
    /// into a `side` x `side` RGB image, bilinear, the outside filled as `border` says
    /// (an OpenCV `BORDER_*`, black for `BORDER_CONSTANT`).
    pub fn warp(&self, t: &[[f64; 3]; 2], side: i32, border: i32) -> Result<Mat, VisionError> {
        let m = Mat::from_slice_2d(t).map_err(cv)?;
        let full = self.as_mat()?;
        let mut out = Mat::default();
        opencv::imgproc::warp_affine(
            &full,
            &mut out,
            &m,
            Size::new(side, side),
            opencv::imgproc::INTER_LINEAR,
            border,
            opencv::core::Scalar::default(),
        )
        .map_err(cv)?;
        Ok(out)
    }

    /// Grey-level crop for sharpness measurement.
    pub fn grey_crop(&self, roi: BBox) -> Result<Option<Mat>, VisionError> {
        let Some((x, y, w, h)) = roi.clip_px(self.width, self.height) else {
            return Ok(None);
        };
        let full = self.as_mat()?;
        let view = Mat::roi(&full, CvRect::new(x, y, w, h)).map_err(cv)?;
        let mut grey = Mat::default();
        opencv::imgproc::cvt_color_def(&view, &mut grey, opencv::imgproc::COLOR_RGB2GRAY)
            .map_err(cv)?;
        Ok(Some(grey))
    }
}

/// Refuse frames/images that are empty or absurdly large.
pub fn check_size(w: u32, h: u32) -> Result<(), VisionError> {
    if w == 0 || h == 0 {
        return Err(VisionError::BadInput("empty image".into()));
    }
    if w > MAX_SIDE || h > MAX_SIDE || (w as u64) * (h as u64) > MAX_PIXELS {
        return Err(VisionError::BadInput(format!(
            "image {w}x{h} is too large (limit {MAX_SIDE} px a side, {} MP)",
            MAX_PIXELS / 1_000_000
        )));
    }
    Ok(())
}

/// Safe wrapper over dlib's matrix constructor: checks the buffer length first.
pub fn rgb_to_matrix(bytes: &[u8], w: u32, h: u32) -> Result<ImageMatrix, VisionError> {
    let need = (w as usize) * (h as usize) * 3;
    if bytes.len() < need {
        return Err(VisionError::BadInput(format!(
            "pixel buffer too short: {} < {need}",
            bytes.len()
        )));
    }
    // SAFETY: dlib reads exactly w*h*3 bytes from the pointer, checked above.
    Ok(unsafe { ImageMatrix::new(w as usize, h as usize, bytes.as_ptr()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bbox_geometry() {
        let a = BBox {
            x: 0.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        let b = BBox {
            x: 5.0,
            y: 0.0,
            w: 10.0,
            h: 10.0,
        };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(
            a.expand(0.5),
            BBox {
                x: -5.0,
                y: -5.0,
                w: 20.0,
                h: 20.0
            }
        );
        assert_eq!(a.expand(0.5).clip_px(8, 8), Some((0, 0, 8, 8)));
        assert_eq!(
            BBox {
                x: 20.0,
                y: 0.0,
                w: 5.0,
                h: 5.0
            }
            .clip_px(8, 8),
            None
        );
    }

    #[test]
    fn oversized_and_short_buffers_are_refused() {
        assert!(check_size(20_000, 10).is_err());
        assert!(check_size(8000, 8000).is_err());
        assert!(check_size(0, 10).is_err());
        assert!(check_size(640, 480).is_ok());
        assert!(Frame::from_rgb(vec![0; 10], 4, 4, 0, Duration::ZERO).is_err());
        assert!(rgb_to_matrix(&[0; 10], 4, 4).is_err());
    }

    #[test]
    fn patch_maps_coordinates_back() {
        let f = Frame::from_rgb(vec![128; 100 * 80 * 3], 100, 80, 0, Duration::ZERO).unwrap();
        let p = f
            .patch(
                Some(BBox {
                    x: 20.0,
                    y: 10.0,
                    w: 40.0,
                    h: 40.0,
                }),
                0.5,
            )
            .unwrap()
            .unwrap();
        assert_eq!((p.width, p.height), (20, 20));
        let (x, y) = p.to_frame(10.0, 10.0);
        assert!((x - 40.0).abs() < 1e-4 && (y - 30.0).abs() < 1e-4);
        let (px, py) = p.from_frame(40.0, 30.0);
        assert!((px - 10.0).abs() < 1e-4 && (py - 10.0).abs() < 1e-4);
    }
}
