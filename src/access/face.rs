//! The face rule: grant only a live (blinked) track that presentation-attack detection
//! calls live, matched to an enabled, non-banned user. Everything else is a denial with a
//! reason; a match on a banned user and a clear presentation attack are alerts.

use crate::types::Role;
use crate::vision::matcher::Verdict;
use crate::vision::pad::PadVerdict;
use crate::vision::pipeline::Attempt;
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum FaceDecision {
    Grant {
        user_id: i64,
        user: String,
    },
    Deny {
        reason: DenyReason,
        user: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The face matched but never blinked (a photo, or someone who did not blink).
    NoBlink,
    /// Live, but nobody under the threshold.
    NoMatch,
    /// Live, under the threshold, but another user too close behind.
    Ambiguous,
    /// Matched a banned user (also an alert).
    Banned,
    /// Matched a disabled user.
    Disabled,
    /// Nobody is enrolled.
    NoTemplates,
    /// A face was seen but never good enough to encode.
    NoFace,
    /// Presentation-attack detection: a face on a screen or on paper (also an alert).
    Spoof,
    /// Matched and blinked, but too few frames were scored live or attack to decide.
    PadUnsure,
    /// The active challenge's prompt was not answered in time.
    Challenge,
}

impl DenyReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::NoBlink => "no_blink",
            DenyReason::NoMatch => "no_match",
            DenyReason::Ambiguous => "ambiguous",
            DenyReason::Banned => "banned",
            DenyReason::Disabled => "disabled",
            DenyReason::NoTemplates => "no_templates",
            DenyReason::NoFace => "no_face",
            DenyReason::Spoof => "spoof",
            DenyReason::PadUnsure => "pad_unsure",
            DenyReason::Challenge => "challenge_failed",
        }
    }
}

impl FaceDecision {
    pub fn is_grant(&self) -> bool {
        matches!(self, FaceDecision::Grant { .. })
    }

    /// A banned user's face at the door is worth an alert, live or not; so is a clear
    /// presentation attack.
    pub fn is_alert(&self) -> bool {
        matches!(
            self,
            FaceDecision::Deny {
                reason: DenyReason::Banned | DenyReason::Spoof,
                ..
            }
        )
    }

    pub fn reason(&self) -> &'static str {
        match self {
            FaceDecision::Grant { .. } => "match",
            FaceDecision::Deny { reason, .. } => reason.as_str(),
        }
    }
}

pub fn decide(a: &Attempt) -> FaceDecision {
    let who = a.result.best_user.clone();
    let deny = |reason| FaceDecision::Deny {
        reason,
        user: who.clone(),
    };
    let pad = a.presentation_attack.verdict;
    let matched = a.result.verdict == Verdict::Match;
    if pad == PadVerdict::Attack && !(matched && a.role == Some(Role::Banned)) {
        return deny(DenyReason::Spoof);
    }
    match a.result.verdict {
        Verdict::Empty => deny(DenyReason::NoTemplates),
        // A face the eye model was not run on (far from everyone enrolled) is denied as
        // not matching, not for want of a blink.
        Verdict::NoMatch => deny(if a.live || a.eyes_gated {
            DenyReason::NoMatch
        } else {
            DenyReason::NoBlink
        }),
        Verdict::Ambiguous => deny(if a.live {
            DenyReason::Ambiguous
        } else {
            DenyReason::NoBlink
        }),
        Verdict::Match => {
            if a.role == Some(Role::Banned) {
                deny(DenyReason::Banned)
            } else if !a.live {
                deny(DenyReason::NoBlink)
            } else if a.enabled != Some(true) {
                deny(DenyReason::Disabled)
            } else if pad != PadVerdict::Live {
                deny(DenyReason::PadUnsure)
            } else if a.challenge.as_ref().is_some_and(|c| !c.passed) {
                deny(DenyReason::Challenge)
            } else {
                match (a.user_id, who.clone()) {
                    (Some(user_id), Some(user)) => FaceDecision::Grant { user_id, user },
                    // A match without a user id cannot be granted: fail closed.
                    _ => deny(DenyReason::NoMatch),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::matcher::MatchResult;

    fn attempt(verdict: Verdict, live: bool, role: Role, enabled: bool) -> Attempt {
        with_pad(verdict, live, role, enabled, PadVerdict::Live)
    }

    fn with_pad(
        verdict: Verdict,
        live: bool,
        role: Role,
        enabled: bool,
        pad: PadVerdict,
    ) -> Attempt {
        Attempt {
            track: 1,
            frame: 10,
            at_s: 0.3,
            live,
            blinks: live as u32,
            blink_frame: None,
            frames_after_blink: None,
            result: MatchResult {
                verdict,
                best_index: Some(0),
                best_user: Some("alice".into()),
                distance: Some(0.3),
                second_user: None,
                second_distance: None,
                normalized_margin: None,
                probes: 3,
                model: crate::types::EmbeddingModel::Sface,
            },
            user_id: (verdict == Verdict::Match).then_some(7),
            role: (verdict == Verdict::Match).then_some(role),
            enabled: (verdict == Verdict::Match).then_some(enabled),
            presentation_attack: crate::vision::pad::PadSummary {
                frames_scored: 3,
                frames_live: if pad == PadVerdict::Live { 3 } else { 0 },
                verdict: pad,
                median: None,
            },
            challenge: None,
            upgrade: vec![],
            eyes_gated: false,
        }
    }

    #[test]
    fn an_unanswered_challenge_is_denied_and_an_answered_one_granted() {
        use crate::vision::challenge::{Outcome, Prompt};
        let mut a = attempt(Verdict::Match, true, Role::User, true);
        let outcome = |passed| Outcome {
            prompt: Prompt::TurnLeft,
            passed,
            after_s: 2.0,
        };
        a.challenge = Some(outcome(false));
        assert_eq!(decide(&a).reason(), "challenge_failed");
        assert!(!decide(&a).is_alert());
        a.challenge = Some(outcome(true));
        assert!(decide(&a).is_grant());
        // A failed prompt never hides what else is wrong.
        a.role = Some(Role::Banned);
        a.challenge = Some(outcome(false));
        assert_eq!(decide(&a).reason(), "banned");
    }

    #[test]
    fn a_face_the_eye_model_skipped_is_denied_as_not_matching() {
        let mut a = attempt(Verdict::NoMatch, false, Role::User, true);
        assert_eq!(decide(&a).reason(), "no_blink");
        a.eyes_gated = true;
        assert_eq!(decide(&a).reason(), "no_match");
        // It never turns a match into anything but the rules for a match.
        let mut m = attempt(Verdict::Match, false, Role::User, true);
        m.eyes_gated = true;
        assert_eq!(decide(&m).reason(), "no_blink");
    }

    #[test]
    fn only_live_enabled_unbanned_matches_are_granted() {
        let g = decide(&attempt(Verdict::Match, true, Role::User, true));
        assert_eq!(
            g,
            FaceDecision::Grant {
                user_id: 7,
                user: "alice".into()
            }
        );
        assert_eq!(
            decide(&attempt(Verdict::Match, false, Role::User, true)).reason(),
            "no_blink"
        );
        assert_eq!(
            decide(&attempt(Verdict::Match, true, Role::User, false)).reason(),
            "disabled"
        );
        assert_eq!(
            decide(&attempt(Verdict::NoMatch, true, Role::User, true)).reason(),
            "no_match"
        );
        assert_eq!(
            decide(&attempt(Verdict::Ambiguous, true, Role::User, true)).reason(),
            "ambiguous"
        );
        assert_eq!(
            decide(&attempt(Verdict::Empty, true, Role::User, true)).reason(),
            "no_templates"
        );
        assert!(decide(&attempt(Verdict::Match, true, Role::Admin, true)).is_grant());
    }

    #[test]
    fn banned_match_is_denied_and_alerts_live_or_not() {
        for live in [true, false] {
            let d = decide(&attempt(Verdict::Match, live, Role::Banned, true));
            assert!(!d.is_grant());
            assert!(d.is_alert());
        }
    }

    #[test]
    fn presentation_attacks_are_denied_and_alert_and_only_live_is_granted() {
        for v in [
            Verdict::Match,
            Verdict::NoMatch,
            Verdict::Ambiguous,
            Verdict::Empty,
        ] {
            for live in [true, false] {
                let d = decide(&with_pad(v, live, Role::User, true, PadVerdict::Attack));
                assert_eq!(d.reason(), "spoof", "{v:?} live={live}");
                assert!(d.is_alert());
            }
        }
        let d = decide(&with_pad(
            Verdict::Match,
            true,
            Role::User,
            true,
            PadVerdict::Unknown,
        ));
        assert_eq!(d.reason(), "pad_unsure");
        assert!(!d.is_grant() && !d.is_alert());
        // A banned user's photo still names the banned user.
        let d = decide(&with_pad(
            Verdict::Match,
            false,
            Role::Banned,
            true,
            PadVerdict::Attack,
        ));
        assert_eq!(d.reason(), "banned");
    }
}
