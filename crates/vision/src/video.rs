//! Video files through an `ffmpeg` child process: [`VideoFileSource`] decodes any clip
//! to YUV4MPEG on a pipe and turns each frame into RGB here, [`MjpegWriter`] encodes raw
//! frames into an MJPEG `.avi`.
//!
//! Why a child and not OpenCV's `videoio`: linking `videoio` brings OpenCV's codec
//! libraries into every lockerd process (FFmpeg's, and through `imgcodecs` GDAL, poppler,
//! proj: 53 MiB of resident library pages measured in `lockerd-lab replay`), though the
//! daemon on a kiosk reads a V4L2 camera and never decodes a file. Out of process, a
//! malformed file can only crash the child. And the decoders' YUV output is exact on every
//! architecture (H.264 decoding is bit-exact by specification; MJPEG is decoded with
//! FFmpeg's `simple` IDCT and `bitexact`), so with the YUV to RGB conversion done here in
//! integer maths the pixels are the same on x86_64 and arm64 (FFmpeg's swscale, which
//! OpenCV used, is not: README "arm64").
//!
//! Frames are read one at a time (no buffering beyond the pipe); the child is killed when
//! the source is dropped.

use super::frame::{check_size, Frame};
use super::VisionError;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Longest YUV4MPEG stream or frame header line accepted.
const MAX_HEADER: usize = 512;

/// Chroma layout of a YUV4MPEG stream (the `C` tag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chroma {
    /// 4:2:0 (any siting: `420`, `420jpeg`, `420mpeg2`, `420paldv`).
    C420,
    C422,
    C444,
    Mono,
}

impl Chroma {
    /// Right shifts from a luma column and row to the chroma sample's (none for mono).
    fn shifts(self) -> Option<(usize, usize)> {
        match self {
            Chroma::C420 => Some((1, 1)),
            Chroma::C422 => Some((1, 0)),
            Chroma::C444 => Some((0, 0)),
            Chroma::Mono => None,
        }
    }
}

/// What a YUV4MPEG stream header declares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    chroma: Chroma,
    /// `XCOLORRANGE=FULL` (JPEG range); otherwise video range (16-235).
    full_range: bool,
}

impl Y4mHeader {
    /// Parse the stream header line (without the newline).
    pub fn parse(line: &[u8]) -> Result<Y4mHeader, String> {
        let line = std::str::from_utf8(line).map_err(|_| "header is not text".to_string())?;
        let mut tags = line.split(' ');
        if tags.next() != Some("YUV4MPEG2") {
            return Err("not a YUV4MPEG2 stream".into());
        }
        let (mut w, mut h, mut fps) = (None, None, 30.0);
        let (mut chroma, mut full_range) = (Chroma::C420, false);
        for t in tags.filter(|t| !t.is_empty()) {
            // Not `split_at`: a tag may start with a multi-byte character (found by fuzzing).
            let Some((k, v)) = t.split_at_checked(1) else {
                continue;
            };
            match k {
                "W" => w = v.parse::<u32>().ok(),
                "H" => h = v.parse::<u32>().ok(),
                "F" => {
                    let (n, d) = v.split_once(':').ok_or(format!("frame rate {v}"))?;
                    let (n, d) = (n.parse::<f64>(), d.parse::<f64>());
                    if let (Ok(n), Ok(d)) = (n, d) {
                        let f = n / d;
                        if f.is_finite() && f > 0.5 && f < 1000.0 {
                            fps = f;
                        }
                    }
                }
                "C" => {
                    chroma = match v {
                        "420" | "420jpeg" | "420mpeg2" | "420paldv" => Chroma::C420,
                        "422" => Chroma::C422,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => return Err(format!("pixel format C{other} is not supported")),
                    }
                }
                "X" if v == "COLORRANGE=FULL" => full_range = true,
                _ => {}
            }
        }
        let (Some(width), Some(height)) = (w, h) else {
            return Err("no frame size".into());
        };
        check_size(width, height).map_err(|e| e.to_string())?;
        Ok(Y4mHeader {
            width,
            height,
            fps,
            chroma,
            full_range,
        })
    }

    /// Width and height of each chroma plane (0 for mono).
    fn chroma_size(&self) -> (usize, usize) {
        let (w, h) = (self.width as usize, self.height as usize);
        match self.chroma.shifts() {
            Some((sx, sy)) => (w.div_ceil(1 << sx), h.div_ceil(1 << sy)),
            None => (0, 0),
        }
    }

    /// Bytes of one frame's planes.
    pub fn frame_bytes(&self) -> usize {
        let (cw, ch) = self.chroma_size();
        self.width as usize * self.height as usize + 2 * cw * ch
    }

    /// RGB of one frame's planes (BT.601, as FFmpeg's and OpenCV's default; nearest chroma).
    /// Integer maths only, so every architecture gives the same bytes. Row by row, with
    /// the range's coefficients and the chroma layout chosen once per frame.
    pub fn to_rgb(&self, planes: &[u8]) -> Vec<u8> {
        let (w, h) = (self.width as usize, self.height as usize);
        let (cw, ch) = self.chroma_size();
        let (y_plane, rest) = planes.split_at(w * h);
        let (u_plane, v_plane) = rest.split_at(cw * ch);
        let k = Coef::of(self.full_range);
        // Written in place into a buffer of the final size (no per-pixel capacity check).
        let mut out = vec![0u8; w * h * 3];
        let Some((sx, sy)) = self.chroma.shifts() else {
            for (&y, px) in y_plane.iter().zip(out.chunks_exact_mut(3)) {
                px.copy_from_slice(&k.rgb(i32::from(y), 0, 0));
            }
            return out;
        };
        // The chroma terms of each column, worked out once per chroma row (shared by the
        // 2 luma rows of 4:2:0), so a pixel costs one multiply and three clamps.
        let mut terms = vec![[0i32; 3]; w];
        let mut terms_of = usize::MAX;
        let rows = y_plane
            .chunks_exact(w.max(1))
            .zip(out.chunks_exact_mut((w * 3).max(1)));
        for (row, (ys, orow)) in rows.enumerate() {
            let c0 = (row >> sy) * cw;
            if c0 != terms_of {
                let (us, vs) = (&u_plane[c0..c0 + cw], &v_plane[c0..c0 + cw]);
                for (col, t) in terms.iter_mut().enumerate() {
                    let ci = col >> sx;
                    *t = k.chroma(i32::from(us[ci]) - 128, i32::from(vs[ci]) - 128);
                }
                terms_of = c0;
            }
            for ((&y, t), px) in ys.iter().zip(&terms).zip(orow.chunks_exact_mut(3)) {
                px.copy_from_slice(&k.with_chroma(i32::from(y), *t));
            }
        }
        out
    }
}

/// BT.601 coefficients in 1/256 for one range: video range scales luma by 255/219.
#[derive(Clone, Copy)]
struct Coef {
    y_mul: i32,
    y_off: i32,
    rv: i32,
    gu: i32,
    gv: i32,
    bu: i32,
}

impl Coef {
    fn of(full_range: bool) -> Coef {
        if full_range {
            Coef {
                y_mul: 256,
                y_off: 0,
                rv: 359,
                gu: 88,
                gv: 183,
                bu: 454,
            }
        } else {
            Coef {
                y_mul: 298,
                y_off: 16,
                rv: 409,
                gu: 100,
                gv: 208,
                bu: 516,
            }
        }
    }

    #[inline]
    fn rgb(self, y: i32, d: i32, e: i32) -> [u8; 3] {
        self.with_chroma(y, self.chroma(d, e))
    }

    /// What U - 128 = `d` and V - 128 = `e` add to red, take from green, add to blue.
    #[inline]
    fn chroma(self, d: i32, e: i32) -> [i32; 3] {
        [self.rv * e, self.gu * d + self.gv * e, self.bu * d]
    }

    #[inline]
    fn with_chroma(self, y: i32, t: [i32; 3]) -> [u8; 3] {
        let clamp = |v: i32| ((v + 128) >> 8).clamp(0, 255) as u8;
        let c = self.y_mul * (y - self.y_off);
        [clamp(c + t[0]), clamp(c - t[1]), clamp(c + t[2])]
    }
}

/// One pixel (what [`Y4mHeader::to_rgb`] computes for each).
#[cfg(test)]
fn yuv_to_rgb(y: i32, d: i32, e: i32, full_range: bool) -> [u8; 3] {
    Coef::of(full_range).rgb(y, d, e)
}

/// Read one `\n`-terminated header line of at most [`MAX_HEADER`] bytes; None at a clean
/// end of stream.
fn read_line(r: &mut impl BufRead) -> Result<Option<Vec<u8>>, String> {
    let mut line = Vec::new();
    let n = r
        .take(MAX_HEADER as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(if n > MAX_HEADER {
            "header line too long".into()
        } else {
            "stream cut inside a header".into()
        });
    }
    line.pop();
    Ok(Some(line))
}

/// A YUV4MPEG stream read frame by frame from any reader (the `ffmpeg` pipe; fuzzed).
pub struct Y4mReader<R: Read> {
    r: BufReader<R>,
    pub header: Y4mHeader,
    planes: Vec<u8>,
}

impl<R: Read> Y4mReader<R> {
    pub fn new(r: R) -> Result<Self, String> {
        let mut r = BufReader::new(r);
        let line = read_line(&mut r)?.ok_or("empty stream")?;
        let header = Y4mHeader::parse(&line)?;
        Ok(Y4mReader {
            r,
            header,
            planes: vec![0; header.frame_bytes()],
        })
    }

    /// The next frame's RGB bytes; None at the end of the stream.
    pub fn next_rgb(&mut self) -> Result<Option<Vec<u8>>, String> {
        let Some(line) = read_line(&mut self.r)? else {
            return Ok(None);
        };
        if !line.starts_with(b"FRAME") {
            return Err("expected a FRAME header".into());
        }
        self.r
            .read_exact(&mut self.planes)
            .map_err(|e| format!("stream cut inside a frame: {e}"))?;
        Ok(Some(self.header.to_rgb(&self.planes)))
    }
}

/// Keeps the last few KiB of the child's stderr, read on a thread so it never blocks.
fn drain_stderr(child: &mut Child) -> std::thread::JoinHandle<String> {
    let err = child.stderr.take();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut e) = err {
            let mut buf = [0u8; 4096];
            while let Ok(n) = e.read(&mut buf) {
                if n == 0 {
                    break;
                }
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 8192 {
                    kept.drain(..kept.len() - 4096);
                }
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    })
}

/// Kill and reap the child; what it said on stderr, as " (...)" or "".
fn stop(child: &mut Child, stderr: Option<std::thread::JoinHandle<String>>) -> String {
    let _ = child.kill();
    let _ = child.wait();
    let said = stderr
        .map(|h| h.join().unwrap_or_default())
        .unwrap_or_default();
    if said.is_empty() {
        String::new()
    } else {
        format!(" ({said})")
    }
}

/// `ffmpeg` quiet but for errors, never reading the terminal, stdout and stderr piped;
/// the caller adds its arguments and stdin.
fn ffmpeg() -> Command {
    let mut c = Command::new("ffmpeg");
    c.args(["-nostdin", "-v", "error"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn spawn(cmd: &mut Command, what: &Path) -> Result<Child, VisionError> {
    cmd.spawn().map_err(|e| {
        VisionError::BadInput(format!(
            "{}: cannot run ffmpeg to read or write video ({e}); install it (`apt-get \
             install -y ffmpeg`, which scripts/setup.sh does)",
            what.display()
        ))
    })
}

/// `file:PATH`, so that a name like `pipe:1` or `http://...` is never taken for a protocol.
fn file_url(path: &Path) -> std::ffi::OsString {
    let mut s = std::ffi::OsString::from("file:");
    s.push(path.as_os_str());
    s
}

/// A video file decoded by an `ffmpeg` child (any container and codec it reads).
pub struct VideoFileSource {
    child: Child,
    reader: Y4mReader<ChildStdout>,
    stderr: Option<std::thread::JoinHandle<String>>,
    path: PathBuf,
    next: u64,
    /// The child's VmHWM (peak RSS, KiB), sampled every [`HWM_EVERY`] frames.
    hwm_kib: Option<u64>,
}

/// Frames between samples of the decoder's peak RSS (a /proc read, for the benchmarks).
const HWM_EVERY: u64 = 16;

/// VmHWM of a live process, KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl VideoFileSource {
    pub fn open(path: &Path) -> Result<Self, VisionError> {
        if !path.is_file() {
            return Err(VisionError::NotFound(path.to_owned()));
        }
        let mut cmd = ffmpeg();
        // One decoding thread: 3 MiB less, and the pipeline is the slow side anyway.
        cmd.args(["-threads", "1", "-flags:v", "+bitexact", "-idct", "simple"])
            .args(["-protocol_whitelist", "file", "-i"])
            .arg(file_url(path))
            .args(["-map", "0:v:0"])
            // Full-range 4:2:0 (MJPEG) is written only when asked for non-strictly.
            .args([
                "-strict",
                "-1",
                "-f",
                "yuv4mpegpipe",
                "-fflags",
                "+bitexact",
                "pipe:1",
            ])
            .stdin(Stdio::null());
        let mut child = spawn(&mut cmd, path)?;
        let stderr = drain_stderr(&mut child);
        let out = child.stdout.take().ok_or_else(|| {
            VisionError::BadInput(format!("{}: ffmpeg gave no output pipe", path.display()))
        })?;
        match Y4mReader::new(out) {
            Ok(reader) => Ok(VideoFileSource {
                child,
                reader,
                stderr: Some(stderr),
                path: path.to_owned(),
                next: 0,
                hwm_kib: None,
            }),
            Err(e) => {
                let said = stop(&mut child, Some(stderr));
                Err(VisionError::BadInput(format!(
                    "{}: cannot decode as video ({e}){said}",
                    path.display(),
                )))
            }
        }
    }

    /// Frame width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.reader.header.width, self.reader.header.height)
    }

    fn failed(&mut self, e: String) -> VisionError {
        let said = stop(&mut self.child, self.stderr.take());
        VisionError::BadInput(format!(
            "{}: frame {}: {e}{said}",
            self.path.display(),
            self.next,
        ))
    }
}

impl super::source::FrameSource for VideoFileSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, VisionError> {
        let rgb = match self.reader.next_rgb() {
            Ok(Some(rgb)) => rgb,
            Ok(None) => {
                // The end: a decoder that stopped on an error says so.
                let status = self.child.wait().map_err(|e| self.failed(e.to_string()))?;
                if !status.success() && self.next == 0 {
                    return Err(self.failed(format!("ffmpeg failed ({status})")));
                }
                return Ok(None);
            }
            Err(e) => return Err(self.failed(e)),
        };
        if self.next % HWM_EVERY == 0 {
            // A high-water mark: a late sample covers everything before it.
            self.hwm_kib = vm_hwm_kib(self.child.id()).or(self.hwm_kib);
        }
        let (w, h) = self.size();
        let ts = Duration::from_secs_f64(self.next as f64 / self.reader.header.fps);
        let f = Frame::from_rgb(rgb, w, h, self.next, ts)?;
        self.next += 1;
        Ok(Some(f))
    }
    fn describe(&self) -> String {
        format!("video {}", self.path.display())
    }
    fn fps(&self) -> Option<f64> {
        Some(self.reader.header.fps)
    }
    fn decoder_peak_rss_mib(&self) -> Option<f64> {
        self.hwm_kib
            .map(|k| (k as f64 / 1024.0 * 10.0).round() / 10.0)
    }
}

impl Drop for VideoFileSource {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An MJPEG `.avi` written by an `ffmpeg` child from raw BGR frames of one size.
pub struct MjpegWriter {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<std::thread::JoinHandle<String>>,
    path: PathBuf,
    frame_bytes: usize,
}

impl MjpegWriter {
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<Self, VisionError> {
        check_size(width, height)?;
        let mut cmd = ffmpeg();
        cmd.args(["-y", "-f", "rawvideo", "-pix_fmt", "bgr24"])
            .arg("-s")
            .arg(format!("{width}x{height}"))
            .arg("-r")
            .arg(format!("{fps}"))
            .args([
                "-i", "pipe:0", "-c:v", "mjpeg", "-q:v", "3", "-pix_fmt", "yuvj420p",
            ])
            .args(["-flags:v", "+bitexact", "-fflags", "+bitexact"])
            .arg(file_url(path))
            .stdin(Stdio::piped());
        let mut child = spawn(&mut cmd, path)?;
        let stderr = drain_stderr(&mut child);
        let stdin = child.stdin.take();
        Ok(MjpegWriter {
            child,
            stdin,
            stderr: Some(stderr),
            path: path.to_owned(),
            frame_bytes: width as usize * height as usize * 3,
        })
    }

    /// Append one frame of packed BGR bytes (the size given to `create`).
    pub fn write_bgr(&mut self, bgr: &[u8]) -> Result<(), VisionError> {
        if bgr.len() != self.frame_bytes {
            return Err(VisionError::BadInput(format!(
                "{}: a frame of {} bytes, not {}",
                self.path.display(),
                bgr.len(),
                self.frame_bytes
            )));
        }
        let r = match self.stdin.as_mut() {
            Some(s) => s.write_all(bgr),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        r.map_err(|e| self.error(format!("ffmpeg stopped taking frames ({e})")))
    }

    /// Close the stream and wait for the file to be complete.
    pub fn finish(mut self) -> Result<(), VisionError> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| self.error(e.to_string()))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.error(format!("ffmpeg failed ({status})")))
        }
    }

    fn error(&mut self, e: String) -> VisionError {
        drop(self.stdin.take());
        let said = stop(&mut self.child, self.stderr.take());
        VisionError::BadInput(format!(
            "{}: cannot write video: {e}{said}",
            self.path.display()
        ))
    }
}

impl Drop for MjpegWriter {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(header: &str, frames: &[Vec<u8>]) -> Vec<u8> {
        let mut s = format!("{header}\n").into_bytes();
        for f in frames {
            s.extend_from_slice(b"FRAME\n");
            s.extend_from_slice(f);
        }
        s
    }

    #[test]
    fn bt601_corners_of_the_colour_cube() {
        // Video range: black, white, and saturated red/blue.
        assert_eq!(yuv_to_rgb(16, 0, 0, false), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 0, 0, false), [255, 255, 255]);
        assert_eq!(yuv_to_rgb(81, 90 - 128, 240 - 128, false), [255, 0, 0]);
        assert_eq!(yuv_to_rgb(41, 240 - 128, 110 - 128, false), [0, 0, 255]);
        // Full range: grey stays grey, red from the JPEG formula.
        assert_eq!(yuv_to_rgb(128, 0, 0, true), [128, 128, 128]);
        assert_eq!(yuv_to_rgb(76, 85 - 128, 255 - 128, true), [254, 0, 0]);
    }

    /// The row-wise conversion gives the bytes of the plain per-pixel one, for every
    /// chroma layout and range, on odd sizes too.
    #[test]
    fn rgb_conversion_matches_the_per_pixel_definition() {
        let mut seed = 0x1234_5678_u32;
        let mut byte = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 24) as u8
        };
        for chroma in [Chroma::C420, Chroma::C422, Chroma::C444, Chroma::Mono] {
            for full_range in [false, true] {
                for (width, height) in [(1, 1), (7, 5), (16, 9)] {
                    let h = Y4mHeader {
                        width,
                        height,
                        fps: 25.0,
                        chroma,
                        full_range,
                    };
                    let planes: Vec<u8> = (0..h.frame_bytes()).map(|_| byte()).collect();
                    let (w, hh) = (width as usize, height as usize);
                    let (cw, ch) = h.chroma_size();
                    let (sx, sy) = match chroma {
                        Chroma::C420 => (1, 1),
                        Chroma::C422 => (1, 0),
                        _ => (0, 0),
                    };
                    let mut want = Vec::new();
                    for row in 0..hh {
                        for col in 0..w {
                            let y = i32::from(planes[row * w + col]);
                            let (d, e) = if chroma == Chroma::Mono {
                                (0, 0)
                            } else {
                                let ci = (row >> sy) * cw + (col >> sx);
                                (
                                    i32::from(planes[w * hh + ci]) - 128,
                                    i32::from(planes[w * hh + cw * ch + ci]) - 128,
                                )
                            };
                            want.extend_from_slice(&yuv_to_rgb(y, d, e, full_range));
                        }
                    }
                    assert_eq!(
                        h.to_rgb(&planes),
                        want,
                        "{chroma:?} {full_range} {width}x{height}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_420_stream_is_read_frame_by_frame_with_shared_chroma() {
        // 4x2, 4:2:0: two chroma samples per plane, each shared by a 2x2 block.
        let y = vec![16u8, 16, 235, 235, 16, 16, 235, 235];
        let frame = [y, vec![128, 128], vec![128, 240]].concat();
        let s = stream(
            "YUV4MPEG2 W4 H2 F15:1 Ip A1:1 C420mpeg2",
            &[frame.clone(), frame],
        );
        let mut r = Y4mReader::new(&s[..]).unwrap();
        assert_eq!(
            (r.header.width, r.header.height, r.header.fps),
            (4, 2, 15.0)
        );
        let rgb = r.next_rgb().unwrap().unwrap();
        assert_eq!(rgb.len(), 4 * 2 * 3);
        assert_eq!(&rgb[0..3], &[0, 0, 0]);
        // Right half: white luma with a red-shifted chroma sample.
        assert_eq!(rgb[6], 255);
        assert!(rgb[7] < 200);
        assert_eq!(&rgb[12..15], &[0, 0, 0]);
        assert!(r.next_rgb().unwrap().is_some());
        assert!(r.next_rgb().unwrap().is_none());
    }

    #[test]
    fn bad_streams_are_refused_with_a_reason() {
        let err = |s: &[u8]| match Y4mReader::new(s) {
            Ok(mut r) => r.next_rgb().map(|_| ()).unwrap_err(),
            Err(e) => e,
        };
        assert!(err(b"").contains("empty"));
        assert!(err(b"RIFF....\n").contains("not a YUV4MPEG2"));
        assert!(err(b"YUV4MPEG2 W4 H2 C420p10\n").contains("not supported"));
        assert!(err(b"YUV4MPEG2 H2\n").contains("no frame size"));
        assert!(err(b"YUV4MPEG2 W100000 H100000\n").contains("100000"));
        assert!(err(&[b'Y'; 2000]).contains("too long"));
        assert!(err(b"YUV4MPEG2 W4 H2\nFRAME\n\x10\x10").contains("cut inside a frame"));
        assert!(err(b"YUV4MPEG2 W4 H2\nFRAMEabc").contains("cut inside a header"));
        assert!(err(b"YUV4MPEG2 W4 H2\nJUNK\n").contains("expected a FRAME"));
        // A tag starting with a two-byte character is skipped (fuzzing found `split_at`
        // panicking on it).
        let h = Y4mHeader::parse("YUV4MPEG2 W2 H2 \u{33b}P W2".as_bytes()).unwrap();
        assert_eq!((h.width, h.height), (2, 2));
    }

    #[test]
    fn a_written_clip_reads_back_with_its_size_rate_and_frames() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("pipe:1.avi");
        let (w, h) = (64u32, 48u32);
        let mut wr = MjpegWriter::create(&out, w, h, 10.0).unwrap();
        for i in 0..5u8 {
            // Grey levels 40, 80, ...: MJPEG keeps flat grey nearly exact.
            wr.write_bgr(&vec![40 * (i + 1); (w * h * 3) as usize])
                .unwrap();
        }
        // A frame of the wrong size is refused before anything reaches the child, and
        // the stream goes on.
        assert!(wr.write_bgr(&[0; 3]).is_err());
        wr.finish().unwrap();
        use super::super::source::FrameSource;
        let mut src = VideoFileSource::open(&out).unwrap();
        assert_eq!(src.size(), (w, h));
        assert_eq!(src.fps(), Some(10.0));
        let mut n = 0u8;
        while let Some(f) = src.next_frame().unwrap() {
            let px = f.rgb[((h / 2) * w * 3 + w / 2 * 3) as usize];
            let want = 40 * (n + 1);
            assert!(px.abs_diff(want) <= 2, "frame {n}: {px} vs {want}");
            assert_eq!(f.index, u64::from(n));
            n += 1;
        }
        assert_eq!(n, 5);
    }

    #[test]
    fn a_file_that_is_not_a_video_names_the_file_and_ffmpeg_s_reason() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fake.mp4");
        std::fs::write(&p, b"this is not a video").unwrap();
        let e = VideoFileSource::open(&p).err().unwrap().to_string();
        assert!(
            e.contains("fake.mp4") && e.contains("cannot decode as video"),
            "{e}"
        );
    }
}
