//! Eye-blink detection for one face track, from a per-frame eye-openness signal: the
//! iris model's lid gap over eye width ([`super::iris`], the default) or the 68-point
//! landmarks' eye aspect ratio (EAR). Both are "open height over width"; below, "EAR"
//! means whichever is configured (`eyes`).
//!
//! Adaptive to the face: the open-eye level is a high percentile of this track's recent
//! open-eye EAR (a time window, so it behaves the same at 15 and 30 fps), and a blink is a
//! dip relative to that level rather than below a fixed number, which keeps it working
//! with glasses, small faces and people whose eyes are narrow. A blink is: the EAR falls
//! below `close_ratio` x level, reaches `depth_ratio` x level or lower, and recovers above
//! `open_ratio` x level within `max_closed_s`. A dip that starts within `merge_gap_s` of
//! the previous blink's end is the same blink (a double dip from landmark jitter).
//! Longer closures are not blinks: the level is re-learnt afterwards.
//!
//! The EAR is first averaged over `smooth_window_s` (real blinks last several frames,
//! landmark jitter changes frame to frame). Each blink carries a signal-to-noise ratio:
//! its depth over this track's own open-eye EAR noise (median absolute deviation over
//! `noise_window_s`). Counting uses every blink; liveness only trusts blinks with
//! `snr >= liveness_min_snr`, because a still photo moved in front of the camera makes
//! the landmarks jitter into shallow, noise-sized "dips" (README "Liveness").

use std::collections::VecDeque;
use std::time::Duration;

/// What the per-frame eye signal is measured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EyeSignal {
    /// Openness from MediaPipe's iris landmark model ([`super::iris`]).
    Iris,
    /// Eye aspect ratio of the 68-point landmarks' six eye points.
    Landmarks,
}

/// The one signal blinks are found in, from the two eyes' openness: the more open eye.
/// A blink closes both eyes, so one eye's points jittering shut (a print moved in front
/// of the camera) is not a blink. On 48 synthetic photo attacks the mean of the two eyes
/// made one liveness-grade false blink; the more open eye none, and it finds the same
/// real blinks (README "Liveness"). The pipeline, enrollment and the synthetic blink clip
/// all read the eyes through this.
pub fn both_eyes(left: f32, right: f32) -> f32 {
    left.max(right)
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlinkConfig {
    /// The eye signal blinks are found in.
    pub eyes: EyeSignal,
    /// Eyes start closing below this fraction of the open level.
    pub close_ratio: f32,
    /// Eyes are open again above this fraction...
    pub open_ratio: f32,
    /// ...or once the signal has come back this fraction of the way from the dip's bottom
    /// to the open level before it (0.5: the blink is measured at half depth). Some people
    /// open their eyes a little less after a blink than before it.
    pub reopen_fraction: f32,
    /// The dip must reach this fraction or lower to count.
    pub depth_ratio: f32,
    /// Seconds of open-eye history that define the open level.
    pub baseline_window_s: f32,
    /// Percentile (0-1) of that history taken as the open level.
    pub baseline_percentile: f32,
    /// Frames needed before any blink can be detected.
    pub warmup_frames: u32,
    /// Longest closure still counted as a blink.
    pub max_closed_s: f32,
    /// A dip starting this soon after a blink ended is part of it.
    pub merge_gap_s: f32,
    /// Seconds over which the EAR is averaged before anything else.
    pub smooth_window_s: f32,
    /// Seconds of open-eye history used to measure the EAR noise.
    pub noise_window_s: f32,
    /// A blink proves liveness only when its depth is at least this many noise units.
    pub liveness_min_snr: f32,
    /// The eye model's last measurement is reused while both eye crops differ from the
    /// ones it was made on by less than this (mean absolute difference of 16x16 grey
    /// thumbnails, grey levels; [`super::iris`]); 0 = run it on every frame.
    pub eye_reuse_below: f32,
}

impl Default for BlinkConfig {
    fn default() -> Self {
        Self {
            eyes: EyeSignal::Iris,
            close_ratio: 0.85,
            open_ratio: 0.92,
            reopen_fraction: 0.5,
            depth_ratio: 0.80,
            baseline_window_s: 0.5,
            baseline_percentile: 0.7,
            warmup_frames: 5,
            max_closed_s: 0.7,
            merge_gap_s: 0.15,
            smooth_window_s: 0.07,
            noise_window_s: 1.0,
            liveness_min_snr: 8.0,
            eye_reuse_below: 3.0,
        }
    }
}

/// A completed blink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blink {
    pub start: Duration,
    pub end: Duration,
    /// Lowest EAR / open level during the closure.
    pub depth: f32,
    /// The open level at the time.
    pub level: f32,
    /// Depth in units of this track's open-eye EAR noise.
    pub snr: f32,
    /// `snr >= liveness_min_snr`: good enough to prove a live face.
    pub live: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Open,
    Closing {
        start: Duration,
        min_rel: f32,
        /// Median and noise (scaled MAD, floored) of the open EAR / level before the dip.
        open_med: f32,
        noise: f32,
    },
}

/// Noise below this (relative EAR) is not believed: a perfectly still signal is a
/// frozen or synthetic one, not a precise one.
const NOISE_FLOOR: f32 = 0.02;

#[derive(Debug, Clone)]
pub struct BlinkTracker {
    cfg: BlinkConfig,
    raw: VecDeque<(Duration, f32)>,
    history: VecDeque<(Duration, f32)>,
    noise_hist: VecDeque<(Duration, f32)>,
    state: State,
    last_end: Option<Duration>,
    blinks: u32,
    live_blinks: u32,
    level: Option<f32>,
}

impl BlinkTracker {
    pub fn new(cfg: BlinkConfig) -> Self {
        Self {
            cfg,
            raw: VecDeque::new(),
            history: VecDeque::new(),
            noise_hist: VecDeque::new(),
            state: State::Open,
            last_end: None,
            blinks: 0,
            live_blinks: 0,
            level: None,
        }
    }

    pub fn blinks(&self) -> u32 {
        self.blinks
    }

    /// Blinks strong enough to prove liveness.
    pub fn live_blinks(&self) -> u32 {
        self.live_blinks
    }

    fn trim(q: &mut VecDeque<(Duration, f32)>, now: Duration, window: f32, keep: usize) {
        let window = Duration::from_secs_f32(window.max(0.0));
        while q.len() > keep {
            match q.front() {
                Some((t, _)) if now.saturating_sub(*t) > window => {
                    q.pop_front();
                }
                _ => break,
            }
        }
    }

    /// Median and scaled MAD of the recent open-eye EAR relative to `level`.
    fn open_noise(&self, level: f32) -> (f32, f32) {
        let mut v: Vec<f32> = self.noise_hist.iter().map(|(_, e)| e / level).collect();
        if v.is_empty() {
            return (1.0, NOISE_FLOOR);
        }
        v.sort_by(f32::total_cmp);
        let med = v[v.len() / 2];
        let mut dev: Vec<f32> = v.iter().map(|x| (x - med).abs()).collect();
        dev.sort_by(f32::total_cmp);
        (med, (dev[dev.len() / 2] * 1.4826).max(NOISE_FLOOR))
    }

    /// The current open-eye level, once learnt.
    pub fn level(&self) -> Option<f32> {
        self.level
    }

    /// EAR relative to the open level (1.0 = normally open), once learnt.
    pub fn relative(&self, ear: f32) -> Option<f32> {
        self.level.filter(|l| *l > 1e-3).map(|l| ear / l)
    }

    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing { .. })
    }

    fn update_level(&mut self, now: Duration) {
        let keep = self.cfg.warmup_frames.max(1) as usize;
        Self::trim(&mut self.history, now, self.cfg.baseline_window_s, keep);
        Self::trim(&mut self.noise_hist, now, self.cfg.noise_window_s, keep);
        if self.history.len() < keep {
            self.level = None;
            return;
        }
        let mut v: Vec<f32> = self.history.iter().map(|(_, e)| *e).collect();
        v.sort_by(f32::total_cmp);
        let p = self.cfg.baseline_percentile.clamp(0.0, 1.0);
        let idx = ((v.len() - 1) as f32 * p).round() as usize;
        self.level = Some(v[idx.min(v.len() - 1)]);
    }

    /// Feed the EAR of one frame at media time `now`. Returns a blink when one completes.
    pub fn push(&mut self, now: Duration, raw_ear: f32) -> Option<Blink> {
        if !raw_ear.is_finite() || raw_ear <= 0.0 {
            return None;
        }
        self.raw.push_back((now, raw_ear));
        Self::trim(&mut self.raw, now, self.cfg.smooth_window_s, 1);
        let ear = self.raw.iter().map(|(_, e)| e).sum::<f32>() / self.raw.len() as f32;
        let mut done = None;
        if let Some(level) = self.level.filter(|l| *l > 1e-3) {
            let rel = ear / level;
            match self.state {
                State::Open => {
                    if rel < self.cfg.close_ratio {
                        let (open_med, noise) = self.open_noise(level);
                        self.state = State::Closing {
                            start: now,
                            min_rel: rel,
                            open_med,
                            noise,
                        };
                    }
                }
                State::Closing {
                    start,
                    min_rel,
                    open_med,
                    noise,
                } => {
                    let min_rel = min_rel.min(rel);
                    let too_long =
                        now.saturating_sub(start) > Duration::from_secs_f32(self.cfg.max_closed_s);
                    if too_long {
                        // Not a blink (eyes shut, looking down): forget the level.
                        self.state = State::Open;
                        self.history.clear();
                        self.noise_hist.clear();
                        self.level = None;
                    } else if rel > self.cfg.open_ratio
                        || rel >= min_rel + self.cfg.reopen_fraction * (open_med - min_rel)
                    {
                        self.state = State::Open;
                        if min_rel <= self.cfg.depth_ratio {
                            let merged = self.last_end.is_some_and(|e| {
                                start.saturating_sub(e)
                                    <= Duration::from_secs_f32(self.cfg.merge_gap_s)
                            });
                            if !merged {
                                let snr = (open_med - min_rel) / noise;
                                let live = snr >= self.cfg.liveness_min_snr;
                                self.blinks += 1;
                                self.live_blinks += live as u32;
                                done = Some(Blink {
                                    start,
                                    end: now,
                                    depth: min_rel,
                                    level,
                                    snr,
                                    live,
                                });
                            }
                            self.last_end = Some(now);
                        }
                    } else {
                        self.state = State::Closing {
                            start,
                            min_rel,
                            open_med,
                            noise,
                        };
                    }
                }
            }
        }
        if matches!(self.state, State::Open) {
            self.history.push_back((now, ear));
            self.noise_hist.push_back((now, ear));
            self.update_level(now);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unsmoothed tracker, so the tests can place single-frame events exactly.
    fn raw_cfg() -> BlinkConfig {
        BlinkConfig {
            smooth_window_s: 0.0,
            ..Default::default()
        }
    }

    fn run(fps: f64, ears: &[f32]) -> (u32, Vec<usize>) {
        run_cfg(raw_cfg(), fps, ears).0
    }

    fn run_cfg(cfg: BlinkConfig, fps: f64, ears: &[f32]) -> ((u32, Vec<usize>), Vec<Blink>) {
        let mut t = BlinkTracker::new(cfg);
        let mut all = Vec::new();
        let mut at = Vec::new();
        for (i, e) in ears.iter().enumerate() {
            if let Some(b) = t.push(Duration::from_secs_f64(i as f64 / fps), *e) {
                at.push(i);
                all.push(b);
            }
        }
        ((t.blinks(), at), all)
    }

    fn open(n: usize, level: f32) -> Vec<f32> {
        (0..n)
            .map(|i| level + if i % 2 == 0 { 0.005 } else { -0.005 })
            .collect()
    }

    #[test]
    fn one_clear_blink_at_30fps_is_found_when_the_eyes_reopen() {
        let mut s = open(30, 0.30);
        s.extend([0.22, 0.12, 0.08, 0.10, 0.18, 0.29]);
        s.extend(open(30, 0.30));
        let (n, at) = run(30.0, &s);
        assert_eq!(n, 1);
        assert_eq!(at, vec![35], "completes on the first reopened frame");
    }

    #[test]
    fn a_blink_after_which_the_eyes_open_a_little_less_still_counts() {
        // Open at 0.38, a dip to 0.29, then the eyes stay at 0.33-0.34 (87-89% of the
        // level, under open_ratio) for a second: back more than half way, so a blink.
        let mut s = open(30, 0.38);
        s.extend([0.30, 0.29, 0.29, 0.29, 0.30]);
        s.extend(open(30, 0.335));
        let (n, _) = run(30.0, &s);
        assert_eq!(n, 1);
        // Asking for the full open level again (the old rule) the closure runs too long.
        let full = BlinkConfig {
            reopen_fraction: 1.0,
            ..raw_cfg()
        };
        assert_eq!(run_cfg(full, 30.0, &s).0 .0, 0);
    }

    #[test]
    fn a_one_frame_blink_at_15fps_counts() {
        let mut s = open(15, 0.28);
        s.push(0.12);
        s.extend(open(15, 0.28));
        assert_eq!(run(15.0, &s).0, 1);
    }

    #[test]
    fn adapts_to_narrow_eyes_and_glasses() {
        // Open level 0.18 (well under the usual fixed 0.21 threshold): dips to 0.12 count,
        // the steady level does not.
        let mut s = open(20, 0.18);
        s.extend([0.13, 0.11, 0.12, 0.175]);
        s.extend(open(20, 0.18));
        s.extend([0.12, 0.10, 0.176]);
        s.extend(open(20, 0.18));
        assert_eq!(run(30.0, &s).0, 2);
        assert_eq!(run(30.0, &open(120, 0.18)).0, 0);
    }

    #[test]
    fn jitter_and_shallow_dips_are_not_blinks() {
        // +-6% noise around the level never reaches the 80% depth.
        let s: Vec<f32> = (0..200)
            .map(|i| 0.28 * (1.0 + 0.06 * ((i as f32) * 1.7).sin()))
            .collect();
        assert_eq!(run(30.0, &s).0, 0);
        let mut s = open(20, 0.30);
        s.extend([0.255, 0.25, 0.29]); // 83%: too shallow
        s.extend(open(20, 0.30));
        assert_eq!(run(30.0, &s).0, 0);
    }

    #[test]
    fn long_closure_is_not_a_blink_and_relearns_the_level() {
        let mut s = open(20, 0.30);
        s.extend(std::iter::repeat_n(0.08, 40)); // 1.3 s shut at 30 fps
        s.extend(open(20, 0.30));
        assert_eq!(run(30.0, &s).0, 0);
    }

    #[test]
    fn double_dip_within_the_merge_gap_is_one_blink() {
        let mut s = open(20, 0.30);
        s.extend([0.15, 0.10, 0.29, 0.14, 0.10, 0.29]);
        s.extend(open(20, 0.30));
        assert_eq!(run(30.0, &s).0, 1);
        // ...but two blinks half a second apart are two.
        let mut s = open(20, 0.30);
        s.extend([0.15, 0.10, 0.29]);
        s.extend(open(15, 0.30));
        s.extend([0.15, 0.10, 0.29]);
        s.extend(open(20, 0.30));
        assert_eq!(run(30.0, &s).0, 2);
    }

    #[test]
    fn no_blink_before_the_level_is_learnt() {
        // Starts with closed eyes: nothing until 5 open frames exist.
        let s = [0.08, 0.08, 0.30, 0.30, 0.30];
        assert_eq!(run(30.0, &s).0, 0);
    }

    #[test]
    fn clean_deep_blink_is_live_but_a_dip_the_size_of_the_noise_is_not() {
        // Steady eyes (+-1.5%): a 60% dip is many noise units deep.
        let mut s = open(30, 0.30);
        s.extend([0.20, 0.12, 0.10, 0.14, 0.29]);
        s.extend(open(10, 0.30));
        let (_, b) = run_cfg(BlinkConfig::default(), 30.0, &s);
        assert_eq!(b.len(), 1);
        assert!(b[0].live, "{:?}", b[0]);
        // Very jittery landmarks (+-20%): a dip of the same size is only a few noise
        // units: counted as a blink, but it does not prove liveness.
        // Slow jitter (a few frames per swing), which smoothing does not remove.
        let mut s: Vec<f32> = (0..40)
            .map(|i| {
                let i = i as f32;
                0.30 * (1.0 + 0.2 * (i * 0.7).sin() + 0.1 * (i * 1.3).sin())
            })
            .collect();
        s.extend([0.18, 0.12, 0.12, 0.15, 0.33]);
        s.extend(open(10, 0.33));
        let (_, b) = run_cfg(BlinkConfig::default(), 30.0, &s);
        assert!(b.iter().all(|b| !b.live), "{b:?}");
    }

    #[test]
    fn smoothing_holds_back_single_frame_spikes_at_30fps() {
        // One-frame dropouts (landmark glitches) at 30 fps are averaged away.
        let mut s = open(30, 0.30);
        s.push(0.15);
        s.extend(open(30, 0.30));
        s.push(0.15);
        s.extend(open(30, 0.30));
        let ((n, _), _) = run_cfg(BlinkConfig::default(), 30.0, &s);
        assert_eq!(n, 0);
    }

    #[test]
    fn bad_values_are_ignored() {
        let mut s = open(20, 0.3);
        s.extend([f32::NAN, 0.0, -1.0]);
        s.extend(open(5, 0.3));
        assert_eq!(run(30.0, &s).0, 0);
    }
}
