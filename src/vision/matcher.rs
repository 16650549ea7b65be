//! 1:N matching of face embeddings against the templates held in memory.
//!
//! A user's distance to a probe is the smallest distance to any of their templates. With
//! several probes from one track (fusion), a user's score is the mean over the probes of
//! that distance. A match needs a distance threshold AND a margin over the second-best
//! *other* user, in one of two tiers:
//! - strict: best <= `strict_threshold` and margin >= `strict_margin`;
//! - margin: best <= `threshold` and margin >= `margin`, only when at least `min_cohort`
//!   other users are enrolled (with fewer, "far from the others" means little, so a
//!   small gallery only gets the strict tier).
//!
//! Otherwise the result is `Ambiguous` when another user is what stands in the way (too
//! close behind), else `NoMatch`. Banned
//! and disabled users stay in the gallery so that a match on them can raise an alert;
//! the access policy refuses them.

use crate::types::{Embedding, Role, UserId};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct GalleryUser {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    pub templates: Vec<Embedding>,
}

#[derive(Debug, Clone, Default)]
pub struct Gallery {
    pub users: Vec<GalleryUser>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Best user under the threshold with enough margin over the next.
    Match,
    /// Nobody under the threshold.
    NoMatch,
    /// Best under the threshold, but another user too close behind.
    Ambiguous,
    /// No templates at all (or no probes).
    Empty,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchResult {
    pub verdict: Verdict,
    /// Index into `Gallery::users` of the best user.
    #[serde(skip)]
    pub best_index: Option<usize>,
    pub best_user: Option<String>,
    pub distance: Option<f32>,
    pub second_user: Option<String>,
    pub second_distance: Option<f32>,
    pub probes: usize,
}

impl MatchResult {
    pub fn margin(&self) -> Option<f32> {
        Some(self.second_distance? - self.distance?)
    }
}

/// Matching policy numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchPolicy {
    pub threshold: f32,
    pub margin: f32,
    pub strict_threshold: f32,
    pub strict_margin: f32,
    pub min_cohort: usize,
}

impl Gallery {
    pub fn template_count(&self) -> usize {
        self.users.iter().map(|u| u.templates.len()).sum()
    }

    /// Per-user fused scores for these probes (mean over probes of the nearest template),
    /// best first. Users without templates are skipped.
    pub fn scores(&self, probes: &[Embedding]) -> Vec<(usize, f32)> {
        if probes.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<(usize, f32)> = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| !u.templates.is_empty())
            .map(|(i, u)| {
                let sum: f32 = probes
                    .iter()
                    .map(|p| {
                        u.templates
                            .iter()
                            .map(|t| p.distance(t))
                            .fold(f32::INFINITY, f32::min)
                    })
                    .sum();
                (i, sum / probes.len() as f32)
            })
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        out
    }

    pub fn identify(&self, probes: &[Embedding], policy: MatchPolicy) -> MatchResult {
        let scores = self.scores(probes);
        Self::decide(&self.users, &scores, probes.len(), policy)
    }

    /// Apply the threshold and margin to precomputed scores (used by threshold sweeps).
    pub fn decide(
        users: &[GalleryUser],
        scores: &[(usize, f32)],
        probes: usize,
        policy: MatchPolicy,
    ) -> MatchResult {
        let best = scores.first().copied();
        let second = scores.get(1).copied();
        let cohort = scores.len().saturating_sub(1);
        let verdict = match best {
            None => Verdict::Empty,
            Some((_, d)) => {
                let margin = second.map_or(f32::INFINITY, |s| s.1 - d);
                let strict = d <= policy.strict_threshold && margin >= policy.strict_margin;
                let by_margin =
                    d <= policy.threshold && margin >= policy.margin && cohort >= policy.min_cohort;
                // Ambiguous only when another user is what stands in the way.
                let crowded = (d <= policy.strict_threshold && margin < policy.strict_margin)
                    || (d <= policy.threshold
                        && cohort >= policy.min_cohort
                        && margin < policy.margin);
                if strict || by_margin {
                    Verdict::Match
                } else if crowded {
                    Verdict::Ambiguous
                } else {
                    Verdict::NoMatch
                }
            }
        };
        MatchResult {
            verdict,
            best_index: best.map(|b| b.0),
            best_user: best.map(|b| users[b.0].name.clone()),
            distance: best.map(|b| b.1),
            second_user: second.map(|s| users[s.0].name.clone()),
            second_distance: second.map(|s| s.1),
            probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EMBEDDING_DIM;

    fn e(x: f32) -> Embedding {
        let mut v = [0f32; EMBEDDING_DIM];
        v[0] = x;
        Embedding(v)
    }

    fn gallery() -> Gallery {
        let u = |id, name: &str, t: Vec<Embedding>| GalleryUser {
            user_id: id,
            name: name.into(),
            role: Role::User,
            enabled: true,
            templates: t,
        };
        Gallery {
            users: vec![
                u(1, "alice", vec![e(0.0), e(0.1)]),
                u(2, "bob", vec![e(1.0)]),
                u(3, "nobody", vec![]),
            ],
        }
    }

    const P: MatchPolicy = MatchPolicy {
        threshold: 0.5,
        margin: 0.1,
        strict_threshold: 0.5,
        strict_margin: 0.1,
        min_cohort: 1,
    };

    #[test]
    fn nearest_template_counts_and_threshold_applies() {
        let g = gallery();
        let r = g.identify(&[e(0.12)], P);
        assert_eq!(r.verdict, Verdict::Match);
        assert_eq!(r.best_user.as_deref(), Some("alice"));
        assert!((r.distance.unwrap() - 0.02).abs() < 1e-6);
        assert_eq!(r.second_user.as_deref(), Some("bob"));
        let r = g.identify(&[e(-0.6)], P);
        assert_eq!(r.verdict, Verdict::NoMatch);
    }

    #[test]
    fn margin_over_the_second_user_is_required() {
        let g = gallery();
        // 0.45 from alice's 0.1? no: probe 0.55 -> alice 0.45, bob 0.45: ambiguous.
        let r = g.identify(&[e(0.55)], P);
        assert_eq!(r.verdict, Verdict::Ambiguous);
        // With bob further away it matches.
        let r = g.identify(&[e(0.44)], P);
        assert_eq!(r.verdict, Verdict::Match, "{r:?}");
        assert!(r.margin().unwrap() >= 0.1);
    }

    #[test]
    fn margin_tier_needs_a_cohort_and_strict_tier_does_not() {
        let p = MatchPolicy {
            threshold: 0.5,
            margin: 0.2,
            strict_threshold: 0.2,
            strict_margin: 0.05,
            min_cohort: 2,
        };
        let g = gallery(); // alice and bob have templates: cohort of 1 for either
                           // 0.35 from alice, 0.55 from bob: passes the margin tier's numbers, but the cohort
                           // is too small, and it is not under the strict threshold.
        let r = g.identify(&[e(-0.25)], p);
        assert_eq!(
            r.verdict,
            Verdict::NoMatch,
            "not close enough for the strict tier: {r:?}"
        );
        // Strict tier: close enough on its own.
        assert_eq!(g.identify(&[e(-0.1)], p).verdict, Verdict::Match);
        // With a larger cohort, the margin tier applies.
        let mut g3 = gallery();
        g3.users[2].templates.push(e(3.0));
        assert_eq!(g3.identify(&[e(-0.25)], p).verdict, Verdict::Match);
        // A single enrolled user only ever gets the strict tier.
        let one = Gallery {
            users: vec![g.users[0].clone()],
        };
        assert_eq!(one.identify(&[e(-0.25)], p).verdict, Verdict::NoMatch);
        assert_eq!(one.identify(&[e(-0.05)], p).verdict, Verdict::Match);
        assert_eq!(one.identify(&[e(-0.9)], p).verdict, Verdict::NoMatch);
    }

    #[test]
    fn fusion_averages_over_probes() {
        let g = gallery();
        // One good and one poor probe: mean distance 0.3 for alice.
        let r = g.identify(&[e(0.1), e(0.6)], P);
        assert!((r.distance.unwrap() - 0.25).abs() < 1e-6, "{r:?}");
        assert_eq!(r.probes, 2);
    }

    #[test]
    fn empty_gallery_or_no_probes() {
        assert_eq!(
            Gallery::default().identify(&[e(0.0)], P).verdict,
            Verdict::Empty
        );
        assert_eq!(gallery().identify(&[], P).verdict, Verdict::Empty);
    }
}
