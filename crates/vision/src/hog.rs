//! dlib's HOG frontal face detector, loaded in milliseconds.
//!
//! Owns one detector object on the C++ side (`hog.cpp`, built by `build.rs`). dlib keeps
//! this detector in its headers as base64 text of a compressed stream and
//! `get_frontal_face_detector()` decompresses it on every start: 0.3-0.4 s, most of
//! lockerd's model load. The same detector is embedded here serialized without
//! compression ([`EMBEDDED`], 155 KB), which deserializes in a few milliseconds. The
//! test `embedded_detector_is_dlibs_own_byte_for_byte` re-serializes dlib's built-in
//! detector and compares, so the file cannot drift from the library it came from.
//! [`super::models::Models`] owns the detector and calls [`HogDetector::detect`].

use dlib_face_recognition::{ImageMatrix, Rectangle};
use std::ffi::c_void;
use std::os::raw::{c_char, c_long};
use std::ptr::NonNull;

/// dlib's frontal face detector (dlib 19.24, Boost Software License), as written by
/// `dlib::serialize`.
pub const EMBEDDED: &[u8] = include_bytes!("frontal_face_detector.dat");

/// At most this many faces are read back from one call (more are counted, not kept).
const MAX_FACES: usize = 32;

extern "C" {
    fn lockerd_hog_load(data: *const c_char, len: usize, err: *mut c_char, n: usize)
        -> *mut c_void;
    fn lockerd_hog_builtin(err: *mut c_char, n: usize) -> *mut c_void;
    fn lockerd_hog_serialize(det: *const c_void, out: *mut c_char, cap: usize) -> usize;
    fn lockerd_hog_detect(
        det: *mut c_void,
        image: *const c_void,
        rects: *mut c_long,
        max: usize,
    ) -> c_long;
    fn lockerd_hog_free(det: *mut c_void);
}

/// One detector. `Send` (it may be built on a loader thread) but not `Sync`: dlib's
/// scanner keeps scratch buffers, so calls must not overlap.
pub struct HogDetector {
    ptr: NonNull<c_void>,
    _not_sync: std::marker::PhantomData<std::cell::Cell<()>>,
}

// SAFETY: the C++ object has no thread affinity; it only must not be used from two
// threads at once, which `!Sync` and `&mut self` in `detect` rule out.
unsafe impl Send for HogDetector {}

fn made(ptr: *mut c_void, err: &[c_char]) -> Result<HogDetector, String> {
    match NonNull::new(ptr) {
        Some(ptr) => Ok(HogDetector {
            ptr,
            _not_sync: std::marker::PhantomData,
        }),
        None => {
            let bytes: Vec<u8> = err
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as u8)
                .collect();
            Err(String::from_utf8_lossy(&bytes).into_owned())
        }
    }
}

impl HogDetector {
    /// The embedded detector.
    pub fn load() -> Result<HogDetector, String> {
        Self::from_bytes(EMBEDDED)
    }

    /// A detector from dlib's serialized bytes; an error (never a crash) for anything
    /// else.
    pub fn from_bytes(data: &[u8]) -> Result<HogDetector, String> {
        let mut err = [0 as c_char; 256];
        // SAFETY: `data` and `err` are valid for the lengths passed; the callee catches
        // every C++ exception and only reads `data`.
        let p = unsafe {
            lockerd_hog_load(
                data.as_ptr().cast(),
                data.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        made(p, &err)
    }

    /// dlib's own `get_frontal_face_detector()`, the slow way.
    pub fn builtin() -> Result<HogDetector, String> {
        let mut err = [0 as c_char; 256];
        // SAFETY: `err` is valid for its length; the callee catches every exception.
        let p = unsafe { lockerd_hog_builtin(err.as_mut_ptr(), err.len()) };
        made(p, &err)
    }

    /// The detector as `dlib::serialize` writes it.
    pub fn serialize(&self) -> Result<Vec<u8>, String> {
        // SAFETY: a null buffer with capacity 0 only asks for the size.
        let n = unsafe { lockerd_hog_serialize(self.ptr.as_ptr(), std::ptr::null_mut(), 0) };
        if n == 0 {
            return Err("dlib could not serialize the detector".into());
        }
        let mut out = vec![0u8; n];
        // SAFETY: `out` has room for the `n` bytes the callee said it needs.
        let m = unsafe { lockerd_hog_serialize(self.ptr.as_ptr(), out.as_mut_ptr().cast(), n) };
        if m != n {
            return Err(format!("dlib serialized {m} bytes, then {n}"));
        }
        Ok(out)
    }

    /// Faces in `image`, as `get_frontal_face_detector()(image)` finds them (no
    /// upsampling, threshold 0).
    pub fn detect(&mut self, image: &ImageMatrix) -> Result<Vec<Rectangle>, String> {
        let mut rects = [0 as c_long; 4 * MAX_FACES];
        // SAFETY: `ImageMatrix` is the crate's `cpp_class!` wrapper, laid out as the
        // `dlib::matrix<dlib::rgb_pixel>` it holds (the crate passes it to C++ by pointer
        // the same way); `rects` has room for MAX_FACES rectangles; `&mut self` makes
        // this the only call on the detector.
        let n = unsafe {
            lockerd_hog_detect(
                self.ptr.as_ptr(),
                (image as *const ImageMatrix).cast(),
                rects.as_mut_ptr(),
                MAX_FACES,
            )
        };
        if n < 0 {
            return Err("dlib's face detector failed on this image".into());
        }
        Ok(rects
            .chunks_exact(4)
            .take((n as usize).min(MAX_FACES))
            .map(|r| Rectangle {
                left: r[0],
                top: r[1],
                right: r[2],
                bottom: r[3],
            })
            .collect())
    }
}

impl Drop for HogDetector {
    fn drop(&mut self) {
        // SAFETY: the pointer came from `new` in hog.cpp and is freed once, here.
        unsafe { lockerd_hog_free(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_detector_is_dlibs_own_byte_for_byte() {
        let builtin = HogDetector::builtin().unwrap().serialize().unwrap();
        assert_eq!(builtin.len(), EMBEDDED.len());
        assert!(
            builtin == EMBEDDED,
            "the embedded detector differs from dlib's"
        );
        // And it loads back to the same bytes.
        assert!(HogDetector::load().unwrap().serialize().unwrap() == EMBEDDED);
    }

    #[test]
    fn damaged_detector_bytes_are_an_error_not_a_crash() {
        for bad in [
            &b""[..],
            b"not a detector",
            &EMBEDDED[..EMBEDDED.len() / 2],
            &EMBEDDED[..17],
        ] {
            let e = HogDetector::from_bytes(bad).err().expect("refused");
            assert!(!e.is_empty());
        }
    }
}
