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
//! In the strict tier, with at least `min_cohort` other users enrolled, the margin is
//! measured on cohort-normalized distances: each user's distance is divided by that
//! user's *spread* (the mean distance from their templates to every other user's nearest
//! template), scaled by the gallery's mean spread. A person whom nobody enrolled resembles
//! needs less of a lead than one with look-alikes, and a person many others resemble (a
//! "hub") no longer crowds out everyone near them. It never changes who is matched (the
//! nearest user by raw distance must also be nearest after normalization), never applies
//! beyond `strict_threshold` (raw), and the margin tier stays on raw distances.
//!
//! - photo: for a user whose every template came from a still photo (an admin's photo,
//!   not the kiosk's own camera), best <= `photo_threshold` and raw margin >=
//!   `photo_margin`. A photo is another day, light and camera than the walk-up, so the
//!   same person lies further from it than from a template the kiosk's camera made (dev
//!   data: a walk-up to its own clip templates 0.51-0.83, one LFW photo to another up to
//!   1.13), while strangers lie no nearer to it (the nearest of 1,000 LFW strangers to 30
//!   one-photo users: 1.061). The camera tiers above are tuned for the camera's
//!   same-session closeness, where an un-enrolled look-alike came to 0.956.
//!
//! Otherwise the result is `Ambiguous` when another user is what stands in the way (too
//! close behind), else `NoMatch`.
//!
//! Templates are SFace's ([`lockerd_core::types::EmbeddingModel::CURRENT`]). A user enrolled
//! before SFace has only dlib ResNet templates (`legacy`): such users are matched, until
//! they have an SFace template, by dlib probes under dlib's own rule
//! ([`MatchPolicy::DLIB_LEGACY`], the thresholds that shipped with it) against every
//! user's dlib templates, and only when the SFace decision matched nobody
//! ([`Gallery::identify_both`]). Banned
//! and disabled users stay in the gallery so that a match on them can raise an alert;
//! the access policy refuses them.

use lockerd_core::types::{Embedding, EmbeddingModel, Role, UserId};
use serde::Serialize;

#[derive(Debug, Clone)]
pub struct GalleryUser {
    pub user_id: UserId,
    pub name: String,
    pub role: Role,
    pub enabled: bool,
    /// Templates made by the current model (SFace).
    pub templates: Vec<Embedding>,
    /// Every one of `templates` came from a still photo (the photo tier applies).
    pub from_photos: bool,
    /// Templates made by dlib's ResNet before SFace (see the module text).
    pub legacy: Vec<Embedding>,
}

/// The enrolled users and, per user, their spread (see the module text). Built with
/// [`Gallery::new`], so the spreads always belong to these templates.
#[derive(Debug, Clone, Default)]
pub struct Gallery {
    users: Vec<GalleryUser>,
    /// Per user (same index): mean distance from their templates to the other users'
    /// nearest templates; `None` without templates or without others.
    spread: Vec<Option<f32>>,
    /// Mean of the spreads.
    mean_spread: Option<f32>,
    /// Every user with dlib templates, when one of them has no SFace template yet.
    legacy: Option<Box<Legacy>>,
}

/// The gallery of dlib ResNet templates, with each of its users' index in the main one.
#[derive(Debug, Clone)]
struct Legacy {
    gallery: Gallery,
    index: Vec<usize>,
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
    /// The strict tier's margin on cohort-normalized distances (when the cohort is large
    /// enough and the raw and normalized nearest agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalized_margin: Option<f32>,
    pub probes: usize,
    /// The embedding whose distances these are: SFace, or dlib's ResNet for a user
    /// matched by templates enrolled before SFace.
    pub model: EmbeddingModel,
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
    /// The photo tier (see the module text); a threshold of 0 turns it off.
    pub photo_threshold: f32,
    pub photo_margin: f32,
}

impl MatchPolicy {
    /// dlib ResNet's rule as it shipped before SFace (schema 5), for users who still
    /// have only dlib templates.
    pub const DLIB_LEGACY: MatchPolicy = MatchPolicy {
        threshold: 0.56,
        margin: 0.12,
        strict_threshold: 0.40,
        strict_margin: 0.04,
        min_cohort: 5,
        photo_threshold: 0.0,
        photo_margin: 0.0,
    };
}

impl Gallery {
    pub fn new(users: Vec<GalleryUser>) -> Gallery {
        let spread = spreads(&users);
        let known: Vec<f32> = spread.iter().flatten().copied().collect();
        let mean_spread =
            (!known.is_empty()).then(|| known.iter().sum::<f32>() / known.len() as f32);
        let waiting = users
            .iter()
            .any(|u| u.templates.is_empty() && !u.legacy.is_empty());
        let legacy = waiting.then(|| {
            let (index, old): (Vec<usize>, Vec<GalleryUser>) = users
                .iter()
                .enumerate()
                .filter(|(_, u)| !u.legacy.is_empty())
                .map(|(i, u)| {
                    let mut o = u.clone();
                    o.templates = std::mem::take(&mut o.legacy);
                    (i, o)
                })
                .unzip();
            Box::new(Legacy {
                gallery: Gallery::new(old),
                index,
            })
        });
        Gallery {
            users,
            spread,
            mean_spread,
            legacy,
        }
    }

    /// Some user can only be matched by dlib templates: probes need dlib embeddings too.
    pub fn needs_legacy(&self) -> bool {
        self.legacy.is_some()
    }

    /// Users with dlib templates and no SFace template yet.
    pub fn legacy_only_users(&self) -> usize {
        self.users
            .iter()
            .filter(|u| u.templates.is_empty() && !u.legacy.is_empty())
            .count()
    }

    /// The SFace decision; when it matched nobody and `legacy` probes are given, dlib's
    /// decision under `legacy_policy` over the dlib templates, kept only when it matches
    /// a user who has no SFace template (see the module text).
    pub fn identify_both(
        &self,
        probes: &[Embedding],
        policy: MatchPolicy,
        legacy: &[Embedding],
        legacy_policy: MatchPolicy,
    ) -> MatchResult {
        let r = self.identify(probes, policy);
        if r.verdict == Verdict::Match || legacy.is_empty() {
            return r;
        }
        let Some(l) = &self.legacy else { return r };
        let mut lr = l.gallery.identify(legacy, legacy_policy);
        let main = lr.best_index.and_then(|i| l.index.get(i).copied());
        match main {
            Some(i) if lr.verdict == Verdict::Match && self.users[i].templates.is_empty() => {
                lr.best_index = Some(i);
                lr.model = EmbeddingModel::DlibResnet;
                lr
            }
            _ => r,
        }
    }

    pub fn users(&self) -> &[GalleryUser] {
        &self.users
    }

    /// Renumber a user (ids play no part in the spreads).
    pub fn set_user_id(&mut self, index: usize, id: UserId) {
        if let Some(u) = self.users.get_mut(index) {
            u.user_id = id;
        }
    }

    /// The mean of the users' spreads (None with fewer than two users with templates).
    pub fn mean_spread(&self) -> Option<f32> {
        self.mean_spread
    }

    /// A user's spread (see the module text), if they have templates and others do.
    pub fn spread(&self, index: usize) -> Option<f32> {
        self.spread.get(index).copied().flatten()
    }

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
        self.decide(&scores, probes.len(), policy)
    }

    /// The margin on cohort-normalized distances: `None` when a spread is missing or
    /// normalization would put someone else first.
    fn normalized_margin(&self, scores: &[(usize, f32)]) -> Option<f32> {
        let scale = self.mean_spread?;
        let mut normalized = scores
            .iter()
            .map(|&(i, d)| Some((i, d * scale / self.spread(i)?)));
        // `scores` is best first: the first is the raw nearest.
        let (_, best) = normalized.next()??;
        let mut nearest_other = f32::INFINITY;
        for n in normalized {
            let (_, v) = n?;
            nearest_other = nearest_other.min(v);
        }
        (nearest_other >= best).then_some(nearest_other - best)
    }

    /// Apply the threshold and margin to precomputed scores, best first (from
    /// [`Gallery::scores`]; used by threshold sweeps too).
    pub fn decide(
        &self,
        scores: &[(usize, f32)],
        probes: usize,
        policy: MatchPolicy,
    ) -> MatchResult {
        let users = &self.users;
        let best = scores.first().copied();
        let second = scores.get(1).copied();
        let cohort = scores.len().saturating_sub(1);
        // With too small a cohort, "far from the others" and spreads mean little: no
        // margin tier, and raw margins in the strict tier.
        let with_cohort = cohort >= policy.min_cohort;
        let normalized_margin = with_cohort
            .then(|| self.normalized_margin(scores))
            .flatten();
        let verdict = match best {
            None => Verdict::Empty,
            Some((_, d)) => {
                let margin = second.map_or(f32::INFINITY, |s| s.1 - d);
                // With a cohort, the strict tier's margin is the normalized one; a cohort
                // whose normalization would put someone else first gets no strict match.
                let strict_margin = if with_cohort {
                    normalized_margin.unwrap_or(f32::NEG_INFINITY)
                } else {
                    margin
                };
                let strict = d <= policy.strict_threshold && strict_margin >= policy.strict_margin;
                let by_margin = d <= policy.threshold && margin >= policy.margin && with_cohort;
                let photo_tier =
                    best.is_some_and(|(i, _)| users[i].from_photos) && d <= policy.photo_threshold;
                let by_photo = photo_tier && margin >= policy.photo_margin;
                // Ambiguous only when another user is what stands in the way.
                let crowded = (d <= policy.strict_threshold
                    && strict_margin < policy.strict_margin)
                    || (d <= policy.threshold && with_cohort && margin < policy.margin)
                    || (photo_tier && margin < policy.photo_margin);
                if strict || by_margin || by_photo {
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
            normalized_margin,
            probes,
            model: EmbeddingModel::CURRENT,
        }
    }
}

/// Each user's spread: the mean, over their templates and every other user with
/// templates, of the distance to that user's nearest template. Every pair of templates
/// is measured once (squared; one square root per kept minimum).
fn spreads(users: &[GalleryUser]) -> Vec<Option<f32>> {
    let mut sum = vec![(0f32, 0u32); users.len()];
    // Per pair of users: each one's templates' nearest of the other's.
    let (mut near_a, mut near_b) = (Vec::new(), Vec::new());
    for (i, a) in users.iter().enumerate() {
        for (j, b) in users.iter().enumerate().skip(i + 1) {
            if a.templates.is_empty() || b.templates.is_empty() {
                continue;
            }
            near_a.clear();
            near_a.resize(a.templates.len(), f32::INFINITY);
            near_b.clear();
            near_b.resize(b.templates.len(), f32::INFINITY);
            for (x, ta) in a.templates.iter().enumerate() {
                for (y, tb) in b.templates.iter().enumerate() {
                    let d = ta.distance_squared(tb);
                    near_a[x] = near_a[x].min(d);
                    near_b[y] = near_b[y].min(d);
                }
            }
            for (who, near) in [(i, &near_a), (j, &near_b)] {
                sum[who].0 += near.iter().map(|d| d.sqrt()).sum::<f32>();
                sum[who].1 += near.len() as u32;
            }
        }
    }
    sum.into_iter()
        .map(|(s, n)| (n > 0 && s > 0.0).then(|| s / n as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lockerd_core::types::EMBEDDING_DIM;

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
            legacy: vec![],
            from_photos: false,
        };
        Gallery::new(vec![
            u(1, "alice", vec![e(0.0), e(0.1)]),
            u(2, "bob", vec![e(1.0)]),
            u(3, "nobody", vec![]),
        ])
    }

    const P: MatchPolicy = MatchPolicy {
        threshold: 0.5,
        margin: 0.1,
        strict_threshold: 0.5,
        strict_margin: 0.1,
        min_cohort: 1,
        photo_threshold: 0.0,
        photo_margin: 0.0,
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
            photo_threshold: 0.0,
            photo_margin: 0.0,
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
        let mut users = gallery().users().to_vec();
        users[2].templates.push(e(3.0));
        let g3 = Gallery::new(users);
        assert_eq!(g3.identify(&[e(-0.25)], p).verdict, Verdict::Match);
        // A single enrolled user only ever gets the strict tier.
        let one = Gallery::new(vec![g.users()[0].clone()]);
        assert_eq!(one.identify(&[e(-0.25)], p).verdict, Verdict::NoMatch);
        assert_eq!(one.identify(&[e(-0.05)], p).verdict, Verdict::Match);
        assert_eq!(one.identify(&[e(-0.9)], p).verdict, Verdict::NoMatch);
    }

    /// Four people on a line, 0.3 apart: alice and dave at the ends (spread 0.6), bob and
    /// carol in the middle (spread 0.4, each has two close neighbours); mean spread 0.5.
    fn line() -> Gallery {
        let u = |id, name: &str, x: f32| GalleryUser {
            user_id: id,
            name: name.into(),
            role: Role::User,
            enabled: true,
            templates: vec![e(x)],
            legacy: vec![],
            from_photos: false,
        };
        Gallery::new(vec![
            u(1, "alice", 0.0),
            u(2, "bob", 0.3),
            u(3, "carol", 0.6),
            u(4, "dave", 0.9),
        ])
    }

    const STRICT: MatchPolicy = MatchPolicy {
        threshold: 0.3,
        margin: 0.2,
        strict_threshold: 0.3,
        strict_margin: 0.05,
        min_cohort: 2,
        photo_threshold: 0.0,
        photo_margin: 0.0,
    };

    #[test]
    fn spreads_are_the_mean_distance_to_the_others_nearest_templates() {
        let g = line();
        let spreads: Vec<f32> = (0..4).map(|i| g.spread(i).unwrap()).collect();
        for (got, want) in spreads.iter().zip([0.6, 0.4, 0.4, 0.6]) {
            assert!((got - want).abs() < 1e-5, "{spreads:?}");
        }
        assert_eq!(gallery().spread(2), None, "no templates, no spread");
    }

    #[test]
    fn the_strict_tier_measures_the_lead_on_normalized_distances() {
        let g = line();
        // 0.14 from alice, 0.16 from bob: a raw lead of 0.02, under the 0.05 needed. Alice
        // has nobody near her, bob has two: normalized, 0.117 against 0.2.
        let r = g.identify(&[e(0.14)], STRICT);
        assert_eq!(r.verdict, Verdict::Match, "{r:?}");
        assert_eq!(r.best_user.as_deref(), Some("alice"));
        assert!((r.margin().unwrap() - 0.02).abs() < 1e-5);
        assert!(
            (r.normalized_margin.unwrap() - 0.0833).abs() < 1e-3,
            "{r:?}"
        );
        // Without the cohort, raw distances decide: too close to call.
        let small = MatchPolicy {
            min_cohort: 5,
            ..STRICT
        };
        let r = g.identify(&[e(0.14)], small);
        assert_eq!(r.verdict, Verdict::Ambiguous, "{r:?}");
        assert_eq!(r.normalized_margin, None);
        // Beyond the strict threshold the margin tier applies, on raw distances.
        let tight = MatchPolicy {
            strict_threshold: 0.1,
            ..STRICT
        };
        assert_eq!(g.identify(&[e(0.14)], tight).verdict, Verdict::Ambiguous);
    }

    #[test]
    fn normalization_can_take_a_lead_away_but_never_changes_who_is_nearest() {
        let g = line();
        // 0.11 from bob, 0.19 from alice: a raw lead of 0.08 is enough, but bob's
        // neighbours are close, alice's are not: normalized, 0.1375 against 0.158.
        let r = g.identify(&[e(0.19)], STRICT);
        assert_eq!(r.best_user.as_deref(), Some("bob"));
        assert!(r.margin().unwrap() > 0.05);
        assert_eq!(r.verdict, Verdict::Ambiguous, "{r:?}");
        // 0.14 from bob, 0.16 from alice: bob is nearest raw, alice normalized. Nobody
        // is matched.
        let r = g.identify(&[e(0.16)], STRICT);
        assert_eq!(r.best_user.as_deref(), Some("bob"));
        assert_eq!(r.normalized_margin, None);
        assert_eq!(r.verdict, Verdict::Ambiguous, "{r:?}");
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

    #[test]
    fn a_user_with_only_dlib_templates_is_matched_by_dlib_until_upgraded() {
        let u = |id, name: &str, t: Vec<Embedding>, l: Vec<Embedding>| GalleryUser {
            user_id: id,
            name: name.into(),
            role: Role::User,
            enabled: true,
            templates: t,
            legacy: l,
            from_photos: false,
        };
        // carol (enrolled before SFace) has dlib templates only; alice has both.
        let g = Gallery::new(vec![
            u(1, "alice", vec![e(0.0)], vec![e(5.0)]),
            u(2, "carol", vec![], vec![e(3.0)]),
        ]);
        assert!(g.needs_legacy());
        assert_eq!(g.legacy_only_users(), 1);
        // SFace probe far from alice, dlib probe at carol's template: carol, by dlib.
        let r = g.identify_both(&[e(9.0)], P, &[e(3.05)], P);
        assert_eq!(r.verdict, Verdict::Match);
        assert_eq!(r.best_user.as_deref(), Some("carol"));
        assert_eq!(r.best_index, Some(1), "the index is the main gallery's");
        assert_eq!(r.model, EmbeddingModel::DlibResnet);
        // A dlib match on alice (who has SFace templates) never counts: SFace decides.
        let r = g.identify_both(&[e(9.0)], P, &[e(5.0)], P);
        assert_eq!(r.verdict, Verdict::NoMatch);
        assert_eq!(r.model, EmbeddingModel::Sface);
        // An SFace match wins without looking at dlib.
        let r = g.identify_both(&[e(0.01)], P, &[e(3.0)], P);
        assert_eq!(r.best_user.as_deref(), Some("alice"));
        assert_eq!(r.model, EmbeddingModel::Sface);
        // No dlib probes (legacy matching off): carol is not matched.
        let r = g.identify_both(&[e(9.0)], P, &[], P);
        assert_ne!(r.best_user.as_deref(), Some("carol"));
        // Once carol has an SFace template, no dlib gallery is needed.
        let g = Gallery::new(vec![
            u(1, "alice", vec![e(0.0)], vec![e(5.0)]),
            u(2, "carol", vec![e(2.0)], vec![e(3.0)]),
        ]);
        assert!(!g.needs_legacy());
        let r = g.identify_both(&[e(9.0)], P, &[e(3.0)], P);
        assert_ne!(r.verdict, Verdict::Match);
    }

    #[test]
    fn the_photo_tier_applies_only_to_users_enrolled_from_photos() {
        let u = |id, name: &str, x: f32, photos: bool| GalleryUser {
            user_id: id,
            name: name.into(),
            role: Role::User,
            enabled: true,
            templates: vec![e(x)],
            legacy: vec![],
            from_photos: photos,
        };
        let p = MatchPolicy {
            photo_threshold: 0.7,
            photo_margin: 0.1,
            ..P
        };
        // 0.6 from the nearest user, 1.4 from the next: beyond the camera tiers (0.5).
        for (photos, want) in [(true, Verdict::Match), (false, Verdict::NoMatch)] {
            let g = Gallery::new(vec![u(1, "pat", 0.0, photos), u(2, "sam", 2.0, false)]);
            let r = g.identify(&[e(0.6)], p);
            assert_eq!(r.verdict, want, "from photos: {photos}");
            // Off (threshold 0): the camera tiers alone.
            let off = MatchPolicy {
                photo_threshold: 0.0,
                ..p
            };
            assert_eq!(g.identify(&[e(0.6)], off).verdict, Verdict::NoMatch);
        }
        // Within the photo threshold but another user close behind: ambiguous.
        let g = Gallery::new(vec![u(1, "pat", 0.0, true), u(2, "sam", 1.25, false)]);
        assert_eq!(g.identify(&[e(0.6)], p).verdict, Verdict::Ambiguous);
        // Beyond it: nobody.
        assert_eq!(g.identify(&[e(-0.75)], p).verdict, Verdict::NoMatch);
    }
}
