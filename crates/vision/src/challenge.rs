//! The optional active liveness challenge (`[vision.challenge]`): on top of the passive
//! checks (a blink, presentation-attack detection), a random prompt the person must
//! answer on the same track within a window: blink twice, or turn the head left or
//! right (yaw from the 5 landmarks, [`super::models::Landmarks::pose`]). A recording made
//! before the prompt cannot know which one comes.
//!
//! Owned by the pipeline ([`super::pipeline`]): when a track's attempt would be granted
//! and the mode asks for it (`always`, or `on_doubt` when the passive evidence is not
//! clear-cut), the pipeline holds the attempt back, says [`Prompt`] (a `challenge` face
//! event, shown on the display), steps a [`Pending`] on every later frame of the track,
//! and then emits the attempt with its [`Outcome`]: access control grants only a
//! passed one. Pure state, no I/O; unit-tested on hand-made sequences.

use super::matcher::{MatchResult, Verdict};
use super::pad::{PadSummary, PadVerdict};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When a grant needs an answered prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChallengeMode {
    Off,
    /// Only when the passive evidence is not clear-cut (see [`ChallengeConfig::needed`]).
    OnDoubt,
    Always,
}

/// What the person is asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// Two live blinks after the prompt.
    BlinkTwice,
    /// The person's own left: the nose moves to the right of an unmirrored image.
    TurnLeft,
    TurnRight,
}

impl Prompt {
    /// Its name in configuration and events (`blink_twice` ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Prompt::BlinkTwice => "blink_twice",
            Prompt::TurnLeft => "turn_left",
            Prompt::TurnRight => "turn_right",
        }
    }

    /// The display's first line.
    pub fn text(self) -> &'static str {
        match self {
            Prompt::BlinkTwice => "Blink twice",
            Prompt::TurnLeft => "Turn to your left",
            Prompt::TurnRight => "Turn to your right",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChallengeConfig {
    pub mode: ChallengeMode,
    /// Seconds to answer, from the prompt.
    pub window_s: f32,
    /// The prompts drawn from (at random, each equally likely).
    pub prompts: Vec<Prompt>,
    /// Change of yaw from the prompt's frame that counts as a turn (0 frontal, 1 with
    /// the nose below one eye).
    pub turn_yaw: f32,
    /// Frames in a row the turn must be held.
    pub turn_frames: u32,
    /// `on_doubt`: ask when PAD's median live probability is under this, or the match
    /// was not within the strict threshold.
    pub doubt_pad_median: f32,
    /// A fixed seed for the prompt draw: for tests and `lockerd-lab simulate` only (a
    /// kiosk with a seed asks the same sequence after every restart). 0: random.
    pub seed: u64,
}

impl Default for ChallengeConfig {
    fn default() -> Self {
        Self {
            mode: ChallengeMode::Off,
            window_s: 6.0,
            prompts: vec![Prompt::BlinkTwice, Prompt::TurnLeft, Prompt::TurnRight],
            turn_yaw: 0.35,
            turn_frames: 2,
            doubt_pad_median: 0.9,
            seed: 0,
        }
    }
}

impl ChallengeConfig {
    /// Whether an attempt that would be granted must answer a prompt first.
    pub fn needed(&self, result: &MatchResult, pad: &PadSummary, strict_threshold: f32) -> bool {
        let grantable = result.verdict == Verdict::Match && pad.verdict == PadVerdict::Live;
        grantable
            && match self.mode {
                ChallengeMode::Off => false,
                ChallengeMode::Always => true,
                ChallengeMode::OnDoubt => {
                    pad.median.is_none_or(|m| m < self.doubt_pad_median)
                        || result.distance.is_none_or(|d| d >= strict_threshold)
                }
            }
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs_f32(self.window_s)
    }
}

/// Draws prompts: SplitMix64 from the configured seed, or (seed 0) from the OS's
/// randomness.
#[derive(Debug, Clone)]
pub struct Picker {
    rng: lockerd_core::types::SplitMix64,
}

impl Picker {
    pub fn new(seed: u64) -> Picker {
        let seed = if seed == 0 { rand::random() } else { seed };
        Picker {
            rng: lockerd_core::types::SplitMix64::new(seed),
        }
    }

    /// One of `prompts` (blink twice when the list is empty).
    pub fn pick(&mut self, prompts: &[Prompt]) -> Prompt {
        if prompts.is_empty() {
            return Prompt::BlinkTwice;
        }
        let i = (self.rng.next_u64() % prompts.len() as u64) as usize;
        prompts[i]
    }
}

/// How a prompt was answered (`challenge` in an attempt).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub prompt: Prompt,
    pub passed: bool,
    /// Seconds from the prompt to the answer (or to the end of the window).
    pub after_s: f32,
}

/// A prompt waiting for its answer on one track.
#[derive(Debug, Clone)]
pub struct Pending {
    pub prompt: Prompt,
    since: Duration,
    blinks_at_prompt: u32,
    yaw_at_prompt: f32,
    turned: u32,
}

impl Pending {
    /// Asked at `ts`, when the track had `blinks` live blinks and this yaw.
    pub fn new(prompt: Prompt, ts: Duration, blinks: u32, yaw: f32) -> Pending {
        Pending {
            prompt,
            since: ts,
            blinks_at_prompt: blinks,
            yaw_at_prompt: yaw,
            turned: 0,
        }
    }

    /// The track ended (left the camera, end of a clip) at `ts` before an answer.
    pub fn unanswered(&self, ts: Duration) -> Outcome {
        Outcome {
            prompt: self.prompt,
            passed: false,
            after_s: ts.saturating_sub(self.since).as_secs_f32(),
        }
    }

    /// One more frame of the track: its time, its live blinks so far and its yaw (None
    /// when the landmarks were not measured). The outcome once there is one.
    pub fn step(
        &mut self,
        cfg: &ChallengeConfig,
        ts: Duration,
        blinks: u32,
        yaw: Option<f32>,
    ) -> Option<Outcome> {
        let after_s = ts.saturating_sub(self.since).as_secs_f32();
        let passed = match self.prompt {
            Prompt::BlinkTwice => blinks.saturating_sub(self.blinks_at_prompt) >= 2,
            Prompt::TurnLeft | Prompt::TurnRight => {
                let sign = if self.prompt == Prompt::TurnLeft {
                    1.0
                } else {
                    -1.0
                };
                let turned = yaw.is_some_and(|y| sign * (y - self.yaw_at_prompt) >= cfg.turn_yaw);
                self.turned = if turned { self.turned + 1 } else { 0 };
                self.turned >= cfg.turn_frames.max(1)
            }
        };
        let out = |passed| {
            Some(Outcome {
                prompt: self.prompt,
                passed,
                after_s,
            })
        };
        if passed && after_s <= cfg.window_s {
            out(true)
        } else if after_s > cfg.window_s {
            out(false)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn two_blinks_within_the_window_pass_and_one_does_not() {
        let cfg = ChallengeConfig::default();
        let mut p = Pending::new(Prompt::BlinkTwice, ms(1000), 1, 0.0);
        assert_eq!(p.step(&cfg, ms(1500), 1, Some(0.0)), None);
        assert_eq!(p.step(&cfg, ms(2500), 2, Some(0.0)), None, "one blink");
        let o = p.step(&cfg, ms(3000), 3, Some(0.0)).unwrap();
        assert!(o.passed && (o.after_s - 2.0).abs() < 1e-6, "{o:?}");

        let mut p = Pending::new(Prompt::BlinkTwice, ms(0), 4, 0.0);
        assert_eq!(p.step(&cfg, ms(3000), 5, None), None);
        let o = p.step(&cfg, ms(6001), 5, None).unwrap();
        assert!(!o.passed, "{o:?}");
        // Blinks that come after the window are too late.
        let mut p = Pending::new(Prompt::BlinkTwice, ms(0), 0, 0.0);
        assert!(!p.step(&cfg, ms(6500), 2, None).unwrap().passed);
    }

    #[test]
    fn a_turn_counts_in_its_own_direction_held_from_where_the_face_was() {
        let cfg = ChallengeConfig::default();
        // A face that starts turned a little (yaw 0.1): the change is what counts.
        let mut p = Pending::new(Prompt::TurnLeft, ms(0), 0, 0.1);
        assert_eq!(p.step(&cfg, ms(100), 0, Some(0.3)), None, "not far enough");
        assert_eq!(p.step(&cfg, ms(200), 0, Some(0.5)), None, "one frame");
        assert_eq!(p.step(&cfg, ms(300), 0, None), None, "landmarks lost");
        assert_eq!(p.step(&cfg, ms(400), 0, Some(0.5)), None);
        assert!(p.step(&cfg, ms(500), 0, Some(0.6)).unwrap().passed);
        // The other way is not a left turn; nor is blinking.
        let mut p = Pending::new(Prompt::TurnLeft, ms(0), 0, 0.0);
        for i in 1..60 {
            assert_eq!(p.step(&cfg, ms(i * 100), i as u32, Some(-0.8)), None);
        }
        assert!(!p.step(&cfg, ms(6100), 60, Some(-0.8)).unwrap().passed);
        let mut p = Pending::new(Prompt::TurnRight, ms(0), 0, 0.0);
        p.step(&cfg, ms(100), 0, Some(-0.4));
        assert!(p.step(&cfg, ms(200), 0, Some(-0.4)).unwrap().passed);
    }

    fn result(verdict: Verdict, distance: f32) -> MatchResult {
        MatchResult {
            verdict,
            best_index: Some(0),
            best_user: Some("a".into()),
            distance: Some(distance),
            second_user: None,
            second_distance: None,
            normalized_margin: None,
            probes: 3,
            model: lockerd_core::types::EmbeddingModel::Sface,
        }
    }

    fn pad(verdict: PadVerdict, median: f32) -> PadSummary {
        PadSummary {
            frames_scored: 5,
            frames_live: 5,
            verdict,
            median: Some(median),
        }
    }

    #[test]
    fn only_an_attempt_that_would_be_granted_is_challenged_and_on_doubt_only_when_unsure() {
        let mut cfg = ChallengeConfig::default();
        let sure = (result(Verdict::Match, 0.3), pad(PadVerdict::Live, 0.99));
        assert!(!cfg.needed(&sure.0, &sure.1, 0.4), "off");
        cfg.mode = ChallengeMode::Always;
        assert!(cfg.needed(&sure.0, &sure.1, 0.4));
        let denied = [
            (result(Verdict::NoMatch, 0.7), pad(PadVerdict::Live, 0.99)),
            (result(Verdict::Ambiguous, 0.3), pad(PadVerdict::Live, 0.99)),
            (result(Verdict::Match, 0.3), pad(PadVerdict::Attack, 0.1)),
            (result(Verdict::Match, 0.3), pad(PadVerdict::Unknown, 0.6)),
        ];
        for (r, p) in &denied {
            assert!(!cfg.needed(r, p, 0.4), "{r:?} {p:?}");
        }
        cfg.mode = ChallengeMode::OnDoubt;
        assert!(!cfg.needed(&sure.0, &sure.1, 0.4), "clear-cut");
        let far = result(Verdict::Match, 0.45);
        assert!(cfg.needed(&far, &sure.1, 0.4), "matched beyond strict");
        let weak = pad(PadVerdict::Live, 0.7);
        assert!(cfg.needed(&sure.0, &weak, 0.4), "PAD live but weak");
    }

    #[test]
    fn a_seed_repeats_its_draws_and_every_prompt_comes_up() {
        let all = ChallengeConfig::default().prompts;
        let draw = |seed| {
            let mut p = Picker::new(seed);
            (0..30).map(|_| p.pick(&all)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for prompt in &all {
            assert!(draw(7).contains(prompt), "{prompt:?}");
        }
        let mut p = Picker::new(0);
        assert_eq!(p.pick(&[Prompt::TurnLeft]), Prompt::TurnLeft);
        assert_eq!(p.pick(&[]), Prompt::BlinkTwice);
    }
}
