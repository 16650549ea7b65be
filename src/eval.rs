//! Measurement commands: `eval faces` (accuracy on photo galleries, with a threshold
//! sweep), `eval blinks` (blink counts against annotations) and `replay` (the real
//! pipeline and access decision over a clip, with timings). Each returns a serialisable
//! report; the CLI prints it as one JSON object.

use crate::access::controller::{Controller, Input};
use crate::api::event::EventKind;
use crate::config::{AccessConfig, VisionConfig};
use crate::service::load_gallery;
use crate::store::{Create, Db, DbKey};
use crate::types::{Embedding, Role};
use crate::vision::enroll;
use crate::vision::matcher::{Gallery, MatchPolicy, Verdict};
use crate::vision::models::Models;
use crate::vision::pad::{PadConfig, PadSummary, PadVerdict};
use crate::vision::pipeline::{Attempt, FaceEvent, Pipeline};
use crate::vision::source::{is_image, is_video, list_images, list_videos, open_path, FrameSource};
use crate::vision::VisionError;
use serde::Serialize;

/// Errors of the measurement commands.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// n / mean / p50 / p95 of a sample (linear-interpolated percentiles, like numpy).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

pub fn summarize(v: &[f64]) -> Summary {
    if v.is_empty() {
        return Summary::default();
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let r = |x: f64| (x * 1000.0).round() / 1000.0;
    Summary {
        n: s.len(),
        mean: r(s.iter().sum::<f64>() / s.len() as f64),
        p50: r(percentile(&s, 0.5)),
        p95: r(percentile(&s, 0.95)),
    }
}

/// Peak resident set size of this process, MiB.
pub fn peak_rss_mib() -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    (ru.ru_maxrss as f64 / 1024.0 * 10.0).round() / 10.0
}

/// A throw-away encrypted store in a temp dir (evaluation galleries go through the real
/// store, as enrollment does).
pub struct TempStore {
    pub db: Db,
    _dir: tempfile::TempDir,
}

impl TempStore {
    pub fn new() -> Result<Self, EvalError> {
        let dir = tempfile::tempdir().map_err(|e| VisionError::Io(std::env::temp_dir(), e))?;
        let (db, _) = Db::open(
            &dir.path().join("eval.db"),
            &DbKey::generate(),
            Create::MustBeNew,
            Duration::from_secs(5),
        )?;
        Ok(Self { db, _dir: dir })
    }
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, EvalError> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| VisionError::Io(dir.to_owned(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    Ok(v)
}

/// A photo attack clip (a hand-held print, [`crate::vision::synth::HandHeld`]) made from
/// the 15th frame of `src`, written to `out`; false when `src` is too short.
fn photo_attack_of(src: &Path, out: &Path, seed: u64) -> Result<bool, VisionError> {
    let mut s = crate::vision::source::VideoFileSource::open(src)?;
    let mut still = None;
    for _ in 0..15 {
        still = s.next_frame()?;
    }
    let Some(still) = still else { return Ok(false) };
    let p = crate::vision::synth::HandHeld {
        frames: 120,
        seed,
        ..Default::default()
    };
    crate::vision::synth::photo_attack_from_frame(&still, out, &p)?;
    Ok(true)
}

fn name_of(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

// ----- eval faces -------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct FacesTally {
    pub threshold: f32,
    pub margin: f32,
    pub genuine_probes: u32,
    pub true_accepts: u32,
    pub false_rejects: u32,
    pub misidentified: u32,
    pub impostor_probes: u32,
    pub false_accepts: u32,
    /// (false_rejects + misidentified) / genuine_probes.
    pub frr: f64,
    /// (false_accepts + misidentified) / (impostor_probes + genuine_probes).
    pub far: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FacesReport {
    #[serde(flatten)]
    pub at_default: FacesTally,
    pub enroll_per_person: usize,
    pub people: usize,
    pub templates: usize,
    pub enroll_failures: Vec<String>,
    pub no_face_genuine: u32,
    pub no_face_impostor: u32,
    pub genuine_distance: Summary,
    pub impostor_best_distance: Summary,
    /// The gallery's mean spread: how far apart its people are (see `vision::matcher`).
    pub gallery_mean_spread: Option<f32>,
    pub sweep: Vec<FacesTally>,
    /// Every probe at the configured policy (compared across builds: arm64 against amd64).
    pub probes: Vec<ProbeResult>,
    pub model_load_s: f64,
    pub elapsed_s: f64,
}

/// One probe photo: whom it shows, the nearest enrolled user and the decision.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeResult {
    pub file: String,
    /// `None` for an impostor photo.
    pub person: Option<String>,
    pub nearest: Option<String>,
    pub distance: Option<f32>,
    /// The second-nearest user's distance (the margin is the difference).
    pub second_distance: Option<f32>,
    /// The distance to the probe's own user (genuine probes).
    pub own_distance: Option<f32>,
    /// The user granted at the configured policy, if any.
    pub granted_as: Option<String>,
}

struct Probe {
    file: String,
    person: Option<String>,
    scores: Vec<(usize, f32)>,
}

fn tally(
    gallery: &Gallery,
    probes: &[Probe],
    no_face: (u32, u32),
    policy: MatchPolicy,
) -> FacesTally {
    let mut t = FacesTally {
        threshold: policy.threshold,
        margin: policy.margin,
        genuine_probes: no_face.0,
        true_accepts: 0,
        false_rejects: no_face.0,
        misidentified: 0,
        impostor_probes: no_face.1,
        false_accepts: 0,
        frr: 0.0,
        far: 0.0,
    };
    for p in probes {
        let r = gallery.decide(&p.scores, 1, policy);
        let matched = (r.verdict == Verdict::Match)
            .then_some(r.best_user.as_deref())
            .flatten();
        match (&p.person, matched) {
            (Some(who), Some(m)) if m == who => t.true_accepts += 1,
            (Some(_), Some(_)) => t.misidentified += 1,
            (Some(_), None) => t.false_rejects += 1,
            (None, Some(_)) => t.false_accepts += 1,
            (None, None) => {}
        }
        if p.person.is_some() {
            t.genuine_probes += 1;
        } else {
            t.impostor_probes += 1;
        }
    }
    let r = |x: f64| (x * 10000.0).round() / 10000.0;
    t.frr = r((t.false_rejects + t.misidentified) as f64 / t.genuine_probes.max(1) as f64);
    t.far = r((t.false_accepts + t.misidentified) as f64
        / (t.impostor_probes + t.genuine_probes).max(1) as f64);
    t
}

/// `eval faces`: enroll the first `k` photos of each `gallery/<person>/` into a temporary
/// store, probe with every other photo and every impostor photo.
pub fn eval_faces(
    models: &Models,
    cfg: &VisionConfig,
    gallery_dir: &Path,
    impostors: Option<&Path>,
    k: usize,
) -> Result<FacesReport, EvalError> {
    let t0 = Instant::now();
    let gates = cfg.gates();
    let mut store = TempStore::new()?;
    let people = subdirs(gallery_dir)?;
    if people.is_empty() {
        return Err(VisionError::BadInput(format!(
            "{}: expected one folder per person",
            gallery_dir.display()
        ))
        .into());
    }
    let mut enroll_failures = Vec::new();
    let mut held_out: Vec<(String, PathBuf)> = Vec::new();
    for dir in &people {
        let person = name_of(dir);
        let photos = list_images(dir)?;
        let user = store.db.add_user(&person, Role::User)?;
        // The first `k` photos that enrollment accepts (an admin whose photo is refused,
        // e.g. for showing two faces, takes the next one); every other photo is a probe.
        let mut taken = 0;
        for p in &photos {
            if taken < k {
                match enroll::from_photo(models, &gates, p) {
                    Ok(r) => {
                        store.db.add_template(
                            user.id,
                            &r.sample.embedding,
                            r.sample.quality,
                            &r.sample.source,
                        )?;
                        taken += 1;
                        continue;
                    }
                    Err(e) => enroll_failures.push(e.to_string()),
                }
            }
            held_out.push((person.clone(), p.clone()));
        }
    }
    let gallery = load_gallery(&store.db)?;
    let mut probes = Vec::new();
    let mut no_face = (0u32, 0u32);
    // A probe is what the kiosk would judge: the largest face, even with others behind it.
    let mut probe = |person: Option<String>, p: &Path| -> Result<(), EvalError> {
        let frame = crate::vision::source::load_image(p)?;
        match enroll::from_frame(models, &gates, &frame, "probe")? {
            Some(r) => probes.push(Probe {
                file: p
                    .file_name()
                    .map(|f| {
                        format!(
                            "{}/{}",
                            person.as_deref().unwrap_or("impostor"),
                            f.to_string_lossy()
                        )
                    })
                    .unwrap_or_default(),
                person,
                scores: gallery.scores(std::slice::from_ref(&r.sample.embedding)),
            }),
            None => {
                if person.is_some() {
                    no_face.0 += 1
                } else {
                    no_face.1 += 1
                }
            }
        }
        Ok(())
    };
    for (person, p) in &held_out {
        probe(Some(person.clone()), p)?;
    }
    if let Some(dir) = impostors {
        for p in list_images(dir)? {
            probe(None, &p)?;
        }
    }
    let genuine: Vec<f64> = probes
        .iter()
        .filter_map(|p| {
            let who = p.person.as_ref()?;
            p.scores
                .iter()
                .find(|(i, _)| &gallery.users()[*i].name == who)
                .map(|s| s.1 as f64)
        })
        .collect();
    let impostor_best: Vec<f64> = probes
        .iter()
        .filter(|p| p.person.is_none())
        .filter_map(|p| p.scores.first().map(|s| s.1 as f64))
        .collect();
    let policy = cfg.policy();
    // Threshold x margin grid for the margin and photo tiers (the strict tier stays as
    // configured),
    // thresholds from 0.30 below the configured one to 0.30 above.
    let mut sweep = Vec::new();
    for margin in [0.0f32, 0.04, 0.08, 0.10, 0.11, 0.12, 0.14, 0.16] {
        for i in 0..=30 {
            let th = ((policy.threshold - 0.30 + 0.02 * i as f32) * 100.0).round() / 100.0;
            // The photo tier (the one one-photo users meet) moves with it, when it is on.
            let photo = |v: f32| if policy.photo_threshold > 0.0 { v } else { 0.0 };
            let p = MatchPolicy {
                threshold: th,
                margin,
                photo_threshold: photo(th),
                photo_margin: margin,
                ..policy
            };
            sweep.push(tally(&gallery, &probes, no_face, p));
        }
    }
    let per_probe = probes
        .iter()
        .map(|p| {
            let r = gallery.decide(&p.scores, 1, policy);
            let nearest = p.scores.first();
            ProbeResult {
                file: p.file.clone(),
                person: p.person.clone(),
                nearest: nearest.map(|(i, _)| gallery.users()[*i].name.clone()),
                distance: nearest.map(|s| s.1),
                second_distance: p.scores.get(1).map(|s| s.1),
                own_distance: p.person.as_ref().and_then(|who| {
                    p.scores
                        .iter()
                        .find(|(i, _)| &gallery.users()[*i].name == who)
                        .map(|s| s.1)
                }),
                granted_as: (r.verdict == Verdict::Match)
                    .then_some(r.best_user)
                    .flatten(),
            }
        })
        .collect();
    Ok(FacesReport {
        at_default: tally(&gallery, &probes, no_face, policy),
        enroll_per_person: k,
        people: people.len(),
        templates: gallery.template_count(),
        enroll_failures,
        no_face_genuine: no_face.0,
        no_face_impostor: no_face.1,
        genuine_distance: summarize(&genuine),
        impostor_best_distance: summarize(&impostor_best),
        gallery_mean_spread: gallery.mean_spread(),
        sweep,
        probes: per_probe,
        model_load_s: models.load_s,
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

// ----- eval blinks ------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct BlinkClip {
    pub file: String,
    pub found: u32,
    /// Of those, strong enough to prove liveness.
    pub live: u32,
    /// The strongest blink's depth in noise units (0 if none).
    pub max_snr: f32,
    /// Every blink's depth in noise units, in order.
    pub snrs: Vec<f32>,
    pub annotated: u32,
    pub annotated_merged: u32,
    pub within_one: bool,
    pub frames: u64,
    pub frames_with_face: u64,
    /// Frames whose eye measurement reused the previous one (unchanged eye crops).
    pub eyes_reused: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlinksReport {
    pub clips: usize,
    pub within_one: usize,
    pub within_one_rate: f64,
    pub exact: usize,
    pub found_total: u32,
    pub annotated_total: u32,
    pub annotated_merged_total: u32,
    /// Clips with annotated blinks in which at least one liveness-grade blink was found.
    pub clips_with_live_blink: usize,
    pub no_blink_clips: usize,
    pub no_blink_clips_with_blinks: usize,
    /// No-blink clips in which a liveness-grade blink was (wrongly) found.
    pub no_blink_clips_with_live_blinks: usize,
    /// Share of the frames with a face whose eye measurement was reused.
    pub eyes_reused_rate: f64,
    pub per_clip: Vec<BlinkClip>,
}

/// Blinks found in one clip by the real pipeline (no gallery, no encoding).
pub struct BlinkCount {
    pub all: u32,
    pub live: u32,
    pub max_snr: f32,
    pub snrs: Vec<f32>,
    pub frames: u64,
    pub frames_with_face: u64,
    pub eyes_reused: u64,
}

pub fn count_blinks(pipe: &mut Pipeline, path: &Path) -> Result<BlinkCount, EvalError> {
    let mut src = open_path(path)?;
    pipe.stats = crate::vision::pipeline::Stats::recording();
    let (mut all, mut live, mut max_snr) = (0, 0, 0f32);
    let mut snrs = Vec::new();
    let mut count = |ev: Vec<FaceEvent>| {
        for e in ev {
            if let FaceEvent::Blink { live: l, snr, .. } = e {
                all += 1;
                live += l as u32;
                max_snr = max_snr.max(snr);
                snrs.push((snr * 100.0).round() / 100.0);
            }
        }
    };
    while let Some(f) = src.next_frame()? {
        count(pipe.process(&f)?);
    }
    count(pipe.finish());
    Ok(BlinkCount {
        all,
        live,
        max_snr,
        snrs,
        frames: pipe.stats.frames,
        frames_with_face: pipe.stats.frames_with_face,
        eyes_reused: pipe.stats.iris_reused,
    })
}

/// `eval blinks`: every clip in a manifest shaped like `shared/data/manifest.json`
/// (`clips[].file`, `blinks`, `blinks_if_adjacent_ids_merged`), paths relative to it.
pub fn eval_blinks(
    models: Models,
    cfg: &VisionConfig,
    manifest: &Path,
    trace: Option<&Path>,
) -> Result<BlinksReport, EvalError> {
    let text =
        std::fs::read_to_string(manifest).map_err(|e| VisionError::Io(manifest.to_owned(), e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| VisionError::BadInput(format!("{}: {e}", manifest.display())))?;
    let base = manifest.parent().unwrap_or(Path::new("."));
    let clips = json["clips"].as_array().ok_or_else(|| {
        VisionError::BadInput(format!("{}: no \"clips\" array", manifest.display()))
    })?;
    let mut pc = cfg.pipeline();
    pc.early_encodings = 0;
    pc.refresh_every_frames = u64::MAX;
    pc.post_blink_frames = 0;
    let mut pipe = Pipeline::new(models, Gallery::default(), pc);
    let mut per_clip = Vec::new();
    let mut csv = String::from("file,frame,track,detection,ear_left,ear_right,level,blink\n");
    for c in clips {
        let (Some(file), Some(ann)) = (c["file"].as_str(), c["blinks"].as_u64()) else {
            continue;
        };
        if c["attack"].as_bool().is_none_or(|a| a) {
            continue;
        }
        let merged = c["blinks_if_adjacent_ids_merged"].as_u64().unwrap_or(ann) as u32;
        if trace.is_some() {
            pipe.trace = Some(Vec::new());
        }
        let n = count_blinks(&mut pipe, &base.join(file))?;
        for r in pipe.trace.take().unwrap_or_default() {
            csv.push_str(&format!(
                "{file},{},{},{},{:.4},{:.4},{},{}\n",
                r.frame,
                r.track,
                r.detection,
                r.ear_left,
                r.ear_right,
                r.level.map(|l| format!("{l:.4}")).unwrap_or_default(),
                r.blink as u8
            ));
        }
        let ann = ann as u32;
        per_clip.push(BlinkClip {
            file: file.to_owned(),
            found: n.all,
            live: n.live,
            max_snr: (n.max_snr * 100.0).round() / 100.0,
            snrs: n.snrs,
            annotated: ann,
            annotated_merged: merged,
            within_one: n.all.abs_diff(merged) <= 1,
            frames: n.frames,
            frames_with_face: n.frames_with_face,
            eyes_reused: n.eyes_reused,
        });
    }
    if let Some(t) = trace {
        std::fs::write(t, csv).map_err(|e| VisionError::Io(t.to_owned(), e))?;
    }
    let with_blinks: Vec<&BlinkClip> = per_clip.iter().filter(|c| c.annotated > 0).collect();
    let within = with_blinks.iter().filter(|c| c.within_one).count();
    let no_blink: Vec<&BlinkClip> = per_clip.iter().filter(|c| c.annotated == 0).collect();
    Ok(BlinksReport {
        clips: with_blinks.len(),
        within_one: within,
        within_one_rate: (within as f64 / with_blinks.len().max(1) as f64 * 10000.0).round()
            / 10000.0,
        exact: with_blinks
            .iter()
            .filter(|c| c.found == c.annotated_merged)
            .count(),
        found_total: with_blinks.iter().map(|c| c.found).sum(),
        annotated_total: with_blinks.iter().map(|c| c.annotated).sum(),
        annotated_merged_total: with_blinks.iter().map(|c| c.annotated_merged).sum(),
        clips_with_live_blink: with_blinks.iter().filter(|c| c.live > 0).count(),
        no_blink_clips: no_blink.len(),
        no_blink_clips_with_blinks: no_blink.iter().filter(|c| c.found > 0).count(),
        no_blink_clips_with_live_blinks: no_blink.iter().filter(|c| c.live > 0).count(),
        eyes_reused_rate: {
            let faces: u64 = per_clip.iter().map(|c| c.frames_with_face).sum();
            let reused: u64 = per_clip.iter().map(|c| c.eyes_reused).sum();
            (reused as f64 / faces.max(1) as f64 * 10000.0).round() / 10000.0
        },
        per_clip,
    })
}

// ----- replay -----------------------------------------------------------------------

/// Enroll a gallery folder into `db`: `DIR/<person>/` holding photos and/or clips, or
/// `DIR/<person>.jpg|.mp4` files. Returns the number of templates stored.
pub fn enroll_gallery_dir(
    models: &Models,
    cfg: &VisionConfig,
    db: &mut Db,
    dir: &Path,
) -> Result<usize, EvalError> {
    let mut entries: Vec<(String, Vec<PathBuf>)> = Vec::new();
    for p in subdirs(dir)? {
        let files: Vec<PathBuf> = std::fs::read_dir(&p)
            .map_err(|e| VisionError::Io(p.clone(), e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| is_image(f) || is_video(f))
            .collect();
        entries.push((name_of(&p), files));
    }
    let mut loose: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| VisionError::Io(dir.to_owned(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && (is_image(f) || is_video(f)))
        .collect();
    loose.sort();
    for f in loose {
        entries.push((name_of(&f), vec![f]));
    }
    let mut n = 0;
    for (person, mut files) in entries {
        files.sort();
        let user = match db.user_by_name(&person)? {
            Some(u) => u,
            None => db.add_user(&person, Role::User)?,
        };
        let mut samples = Vec::new();
        for f in &files {
            samples.extend(enroll::samples_from_path(models, cfg, f, true)?);
        }
        let items: Vec<_> = samples
            .into_iter()
            .map(|s| (s.embedding, s.quality, s.source))
            .collect();
        n += db.add_templates(user.id, &items)?.len();
    }
    Ok(n)
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptOutcome {
    #[serde(flatten)]
    pub attempt: Attempt,
    pub decision: String,
    pub reason: String,
    pub alert: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub clip: String,
    pub decision: String,
    pub user: Option<String>,
    pub reason: String,
    pub distance: Option<f32>,
    pub margin: Option<f32>,
    pub blinks: u32,
    pub frames: u64,
    pub frames_with_face: u64,
    pub decision_frame: Option<u64>,
    pub frames_after_blink: Option<u64>,
    pub alert: bool,
    /// PAD over the deciding attempt's frames.
    pub presentation_attack: Option<PadSummary>,
    pub attempts: Vec<AttemptOutcome>,
    pub fps: Option<f64>,
    pub model_load_s: f64,
    pub gallery_templates: usize,
    pub ms: ReplayStages,
    pub frame_cpu_ms: Summary,
    pub frame_wall_ms: Summary,
    pub full_detects: u64,
    pub idle_skipped: u64,
    pub roi_detects: u64,
    /// Frames whose eye measurement was the previous one reused (unchanged eye crops).
    pub iris_reused: u64,
    pub wall_s: f64,
    pub peak_rss_mib: f64,
    /// The video decoder child's peak (a separate process, running at the same time);
    /// None for stills.
    pub decoder_peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayStages {
    pub detect: Summary,
    pub landmarks: Summary,
    /// The iris model on both eyes of one frame (blinks with `eyes = "iris"`).
    pub iris: Summary,
    pub encode: Summary,
    /// Both MiniFASNet models on one frame.
    pub pad: Summary,
}

/// The daemon's own access decision for replays: the real [`Controller`] with simulated
/// devices and a fresh temporary store holding the gallery's users (never the device's
/// store, whose audit log a measurement must not write to).
pub struct Decider {
    ctl: Controller<Db>,
    base_ms: i64,
    _dir: tempfile::TempDir,
}

/// What the controller did with one attempt.
pub struct Decision {
    pub granted: bool,
    pub reason: String,
    pub alert: bool,
}

impl Decider {
    /// A fresh store with `gallery`'s users (same names, roles and enabled flags); the
    /// gallery's user ids are rewritten to the fresh store's.
    pub fn new(gallery: &mut Gallery, cfg: &AccessConfig) -> Result<Decider, EvalError> {
        let TempStore { mut db, _dir } = TempStore::new()?;
        for i in 0..gallery.users().len() {
            let u = &gallery.users()[i];
            let fresh = match db.user_by_name(&u.name)? {
                Some(x) => x,
                None => db.add_user(&u.name, u.role)?,
            };
            if !u.enabled {
                db.set_enabled(&u.name, false)?;
            }
            gallery.set_user_id(i, fresh.id);
        }
        let (devices, _kit) = crate::hw::sim::devices();
        let base_ms = crate::types::now_ms();
        let (ctl, _) = Controller::new(cfg.clone(), db, devices, base_ms)?;
        Ok(Decider { ctl, base_ms, _dir })
    }

    /// The next clip starts an hour later: no pulse, cooldown or lockout carries over.
    fn next_clip(&mut self) {
        self.base_ms += 3_600_000;
        let _ = self.ctl.handle(self.base_ms, Input::Tick);
    }

    /// Hand the attempt to the controller, as the daemon's vision bridge does.
    pub fn decide(&mut self, a: &Attempt) -> Decision {
        let now = self.base_ms + (a.at_s * 1000.0).round() as i64;
        let ev = self.ctl.handle(now, Input::Face(Box::new(a.clone())));
        let granted = ev.iter().any(|e| e.event == EventKind::Unlock);
        let reason = if granted {
            "match".to_string()
        } else {
            ev.iter()
                .filter(|e| matches!(e.event, EventKind::Deny | EventKind::Ignored))
                .find_map(|e| e.reason.clone())
                .unwrap_or_else(|| "no_decision".into())
        };
        Decision {
            granted,
            reason,
            alert: ev.iter().any(|e| e.alert.is_some()),
        }
    }
}

/// The outcome of a clip: the first grant if any; else the last denial.
fn decisive_of(attempts: &[AttemptOutcome]) -> Option<&AttemptOutcome> {
    attempts
        .iter()
        .find(|a| a.decision == "grant")
        .or_else(|| attempts.last())
}

impl ReplayReport {
    /// The attempt that decided the clip.
    pub fn decisive(&self) -> Option<&AttemptOutcome> {
        decisive_of(&self.attempts)
    }
}

/// Run the pipeline over every frame of `clip`, each attempt decided by the real access
/// controller ([`Decider`]).
pub fn replay(
    pipe: &mut Pipeline,
    decider: &mut Decider,
    clip: &Path,
) -> Result<ReplayReport, EvalError> {
    decider.next_clip();
    let t0 = Instant::now();
    let mut src = open_path(clip)?;
    pipe.stats = crate::vision::pipeline::Stats::recording();
    let mut attempts = Vec::new();
    let mut blinks = 0u32;
    let mut handle = |ev: Vec<FaceEvent>| {
        for e in ev {
            match e {
                FaceEvent::Blink { .. } => blinks += 1,
                FaceEvent::Attempt(a) => {
                    let d = decider.decide(&a);
                    attempts.push(AttemptOutcome {
                        decision: if d.granted { "grant" } else { "deny" }.into(),
                        reason: d.reason,
                        alert: d.alert,
                        attempt: a,
                    });
                }
                _ => {}
            }
        }
    };
    while let Some(f) = src.next_frame()? {
        handle(pipe.process(&f)?);
    }
    handle(pipe.finish());
    let st = &pipe.stats;
    let decisive = decisive_of(&attempts);
    let (decision, reason, user, distance, margin, frame, after) = match decisive {
        Some(a) => (
            a.decision.clone(),
            a.reason.clone(),
            a.attempt.result.best_user.clone(),
            a.attempt.result.distance,
            a.attempt.result.margin(),
            Some(a.attempt.frame),
            a.attempt.frames_after_blink.filter(|_| a.attempt.live),
        ),
        None => (
            "deny".into(),
            "no_face".into(),
            None,
            None,
            None,
            None,
            None,
        ),
    };
    let user = if decision == "grant" { user } else { None };
    let presentation_attack = decisive.map(|a| a.attempt.presentation_attack.clone());
    Ok(ReplayReport {
        clip: clip.display().to_string(),
        decision,
        user,
        reason,
        distance,
        margin,
        blinks,
        frames: st.frames,
        frames_with_face: st.frames_with_face,
        decision_frame: frame,
        frames_after_blink: after,
        alert: attempts.iter().any(|a| a.alert),
        presentation_attack,
        attempts,
        fps: src.fps(),
        model_load_s: pipe.models().load_s,
        gallery_templates: pipe.gallery().template_count(),
        ms: ReplayStages {
            detect: summarize(&st.detect_ms),
            landmarks: summarize(&st.landmarks_ms),
            iris: summarize(&st.iris_ms),
            encode: summarize(&st.encode_ms),
            pad: summarize(&st.pad_ms),
        },
        frame_cpu_ms: summarize(&st.frame_cpu_ms),
        frame_wall_ms: summarize(&st.frame_wall_ms),
        full_detects: st.full_detects,
        idle_skipped: st.idle_skipped,
        roi_detects: st.roi_detects,
        iris_reused: st.iris_reused,
        wall_s: t0.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        decoder_peak_rss_mib: src.decoder_peak_rss_mib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.5), 2.5);
        assert!((percentile(&s, 0.95) - 3.85).abs() < 1e-9);
        let sm = summarize(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((sm.n, sm.mean, sm.p50), (4, 2.5, 2.5));
        assert_eq!(summarize(&[]).n, 0);
    }
}

// ----- eval kiosk -------------------------------------------------------------------

#[derive(Debug, Clone, Serialize)]
pub struct KioskClip {
    pub file: String,
    pub person: String,
    pub kind: String,
    pub decision: String,
    pub user: Option<String>,
    pub reason: String,
    pub distance: Option<f32>,
    /// The deciding attempt's margin to the nearest other user, and who that was (for a
    /// clip denied `ambiguous`, who stood in the way).
    pub margin: Option<f32>,
    pub nearest_other: Option<String>,
    /// The same margin on cohort-normalized distances (the strict tier's; see
    /// [`crate::vision::matcher`]).
    pub normalized_margin: Option<f32>,
    pub frames_after_blink: Option<u64>,
    pub presentation_attack: Option<PadSummary>,
    /// How the deciding attempt answered the active challenge, when one was asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub challenge: Option<crate::vision::challenge::Outcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct KioskReport {
    pub people: usize,
    pub enrolled: usize,
    pub enroll_failures: Vec<String>,
    pub genuine_clips: usize,
    pub granted: usize,
    pub granted_as_someone_else: usize,
    pub grant_rate: f64,
    pub noblink_clips: usize,
    pub noblink_granted: usize,
    pub photo_attacks: usize,
    pub photo_attacks_granted: usize,
    pub replay_attacks: usize,
    pub replay_attacks_granted: usize,
    /// Attacks (photo and replay) denied as `spoof`.
    pub attacks_denied_as_spoof: usize,
    /// Genuine clips denied as `spoof` or `pad_unsure`.
    pub genuine_denied_by_pad: usize,
    pub max_frames_after_blink: Option<u64>,
    /// The kiosk gallery's mean spread (see `vision::matcher`).
    pub gallery_mean_spread: Option<f32>,
    /// People whose FNN templates the enrollment duplicate check (the API's rule: the
    /// mean of the new samples within `strict_threshold` of another user's template)
    /// would refuse, were they enrolled after everyone else.
    pub not_enrollable: Vec<String>,
    /// With `leave_one_out`: each person's genuine clips replayed with that person
    /// removed from the gallery (kind `stranger`): none may be granted.
    pub stranger_clips: usize,
    pub strangers_granted: usize,
    pub clips: Vec<KioskClip>,
    pub elapsed_s: f64,
}

/// Who, of `gallery`'s users, the enrollment duplicate check would refuse if enrolled
/// last: the unit mean of their templates within `threshold` of another user's template.
pub fn not_enrollable(gallery: &Gallery, threshold: f32) -> Vec<String> {
    let users = gallery.users();
    users
        .iter()
        .filter(|u| {
            let Some(mean) = Embedding::mean(&u.templates).and_then(|m| m.unit()) else {
                return false;
            };
            users
                .iter()
                .filter(|o| o.user_id != u.user_id)
                .any(|o| o.templates.iter().any(|t| t.distance(&mean) < threshold))
        })
        .map(|u| u.name.clone())
        .collect()
}

/// What `eval kiosk` replays besides the genuine walk-ups, and how it enrolls.
#[derive(Debug, Clone, Copy)]
pub struct KioskOptions<'a> {
    /// Clips without a blink (must deny).
    pub noblink: Option<&'a Path>,
    /// A photo attack made from a still of each enrolled person (must deny).
    pub photo_attacks: bool,
    /// `<name>_replay_*` videos, each after enrolling `<name>` from `<name>_live_*`.
    pub replays: Option<&'a Path>,
    /// Each person's walk-ups with that person removed from the gallery (`Some(&[])`:
    /// every clip; else the clips named).
    pub leave_one_out: Option<&'a [&'a str]>,
    /// Templates kept per enrollment clip (5 as `lockerctl enroll` does; 1 = one frame,
    /// as good as one photo).
    pub templates: usize,
}

impl Default for KioskOptions<'_> {
    fn default() -> Self {
        KioskOptions {
            noblink: None,
            photo_attacks: false,
            replays: None,
            leave_one_out: None,
            templates: 5,
        }
    }
}

/// `eval kiosk`: enroll each person from `<person>_FNN.mp4` in `dir`, replay their other
/// clips (must grant them, never someone else), every clip in `noblink` (must deny), a
/// photo attack made from a still of each enrolled person (must deny), and with
/// `replays`, each `<name>_replay_*` video there after enrolling `<name>` from their
/// `<name>_live_*` video (must deny); with `leave_one_out`, each person's walk-ups with
/// that person removed from the gallery (`Some(&[])`: every clip; else the clips whose
/// names are listed), which must deny.
pub fn eval_kiosk(
    models: Models,
    cfg: &VisionConfig,
    dir: &Path,
    opts: &KioskOptions<'_>,
) -> Result<KioskReport, EvalError> {
    let t0 = Instant::now();
    let KioskOptions {
        noblink,
        photo_attacks,
        replays,
        leave_one_out,
        templates,
    } = *opts;
    let clips = list_videos(dir)?;
    let person_of = |p: &Path| name_of(p).split('_').next().unwrap_or_default().to_string();
    let mut store = TempStore::new()?;
    let mut people: Vec<String> = clips.iter().map(|p| person_of(p)).collect();
    people.dedup();
    let mut enroll_failures = Vec::new();
    for person in &people {
        let Some(fnn) = clips.iter().find(|p| name_of(p) == format!("{person}_FNN")) else {
            enroll_failures.push(format!("{person}: no FNN clip"));
            continue;
        };
        match enroll::from_clip(&models, cfg, fnn, templates) {
            Ok((samples, _)) => {
                let u = store.db.add_user(person, Role::User)?;
                let items: Vec<_> = samples
                    .into_iter()
                    .map(|s| (s.embedding, s.quality, s.source))
                    .collect();
                store.db.add_templates(u.id, &items)?;
            }
            Err(e) => enroll_failures.push(e.to_string()),
        }
    }
    // Replay attacks: the person is enrolled from their own live video.
    let mut replay_clips = Vec::new();
    if let Some(rd) = replays {
        let files = list_videos(rd)?;
        for f in &files {
            let n = name_of(f);
            let Some((who, _)) = n.split_once("_replay_") else {
                continue;
            };
            let Some(live) = files
                .iter()
                .find(|p| name_of(p).starts_with(&format!("{who}_live_")))
            else {
                enroll_failures.push(format!("{who}: no live clip to enroll from"));
                continue;
            };
            match enroll::from_clip(&models, cfg, live, templates) {
                Ok((samples, _)) => {
                    let u = match store.db.user_by_name(who)? {
                        Some(u) => u,
                        None => store.db.add_user(who, Role::User)?,
                    };
                    let items: Vec<_> = samples
                        .into_iter()
                        .map(|s| (s.embedding, s.quality, s.source))
                        .collect();
                    store.db.add_templates(u.id, &items)?;
                    replay_clips.push((f.clone(), who.to_string()));
                }
                Err(e) => enroll_failures.push(format!("{who}: {e}")),
            }
        }
    }
    let mut gallery = load_gallery(&store.db)?;
    let enrolled: Vec<String> = gallery.users().iter().map(|u| u.name.clone()).collect();
    let refused_dup = not_enrollable(&gallery, cfg.strict_threshold);
    let gallery_mean_spread = gallery.mean_spread();
    let mut decider = Decider::new(&mut gallery, &AccessConfig::default())?;
    let mut pipe = Pipeline::new(models, gallery, cfg.pipeline());
    let mut out = Vec::new();
    let mut run =
        |pipe: &mut Pipeline, file: &Path, person: &str, kind: &str| -> Result<(), EvalError> {
            let r = replay(pipe, &mut decider, file)?;
            let decisive = r.decisive();
            let nearest_other = decisive.and_then(|a| a.attempt.result.second_user.clone());
            let challenge = decisive.and_then(|a| a.attempt.challenge.clone());
            let normalized_margin = decisive.and_then(|a| a.attempt.result.normalized_margin);
            out.push(KioskClip {
                file: file.display().to_string(),
                person: person.to_string(),
                kind: kind.to_string(),
                decision: r.decision,
                user: r.user,
                reason: r.reason,
                distance: r.distance,
                margin: r.margin,
                nearest_other,
                normalized_margin,
                frames_after_blink: r.frames_after_blink,
                presentation_attack: r.presentation_attack,
                challenge,
            });
            Ok(())
        };
    for c in &clips {
        let person = person_of(c);
        if name_of(c).ends_with("_FNN") {
            continue;
        }
        run(&mut pipe, c, &person, "genuine")?;
    }
    if let Some(only) = leave_one_out {
        // Each person a stranger in turn: the gallery without them, their walk-ups (all
        // of them, or only the clips named in `only`).
        let wanted = |c: &Path| only.is_empty() || only.contains(&name_of(c).as_str());
        let full = pipe.gallery().clone();
        for person in people.iter().filter(|p| enrolled.contains(p)) {
            let others: Vec<_> = full
                .users()
                .iter()
                .filter(|u| &u.name != person)
                .cloned()
                .collect();
            pipe.set_gallery(Gallery::new(others));
            for c in clips
                .iter()
                .filter(|c| person_of(c) == *person && !name_of(c).ends_with("_FNN") && wanted(c))
            {
                run(&mut pipe, c, person, "stranger")?;
            }
        }
        pipe.set_gallery(full);
    }
    if let Some(nb) = noblink {
        for c in list_videos(nb)? {
            let person = person_of(&c);
            run(&mut pipe, &c, &person, "noblink")?;
        }
    }
    if photo_attacks {
        let tmp = tempfile::tempdir().map_err(|e| VisionError::Io(std::env::temp_dir(), e))?;
        for (i, person) in enrolled.iter().enumerate() {
            // A still of the enrolled person from another session (not the enrollment clip).
            let Some(src) = clips
                .iter()
                .find(|p| person_of(p) == *person && !name_of(p).ends_with("_FNN"))
            else {
                continue;
            };
            let out_clip = tmp.path().join(format!("{person}_photo_attack.avi"));
            if photo_attack_of(src, &out_clip, 1000 + i as u64)? {
                run(&mut pipe, &out_clip, person, "photo_attack")?;
            }
        }
    }
    for (c, who) in &replay_clips {
        run(&mut pipe, c, who, "replay_attack")?;
    }
    let genuine: Vec<&KioskClip> = out.iter().filter(|c| c.kind == "genuine").collect();
    let granted = genuine
        .iter()
        .filter(|c| c.decision == "grant" && c.user.as_deref() == Some(&c.person))
        .count();
    let wrong = out
        .iter()
        .filter(|c| c.decision == "grant" && c.user.as_deref() != Some(&c.person))
        .count();
    let noblink: Vec<&KioskClip> = out.iter().filter(|c| c.kind == "noblink").collect();
    let attacks: Vec<&KioskClip> = out.iter().filter(|c| c.kind == "photo_attack").collect();
    let replayed: Vec<&KioskClip> = out.iter().filter(|c| c.kind == "replay_attack").collect();
    let strangers: Vec<&KioskClip> = out.iter().filter(|c| c.kind == "stranger").collect();
    let is_attack = |c: &&KioskClip| c.kind == "photo_attack" || c.kind == "replay_attack";
    Ok(KioskReport {
        people: people.len() + replay_clips.len(),
        enrolled: enrolled.len(),
        enroll_failures,
        genuine_clips: genuine.len(),
        granted,
        granted_as_someone_else: wrong,
        grant_rate: (granted as f64 / genuine.len().max(1) as f64 * 10000.0).round() / 10000.0,
        noblink_clips: noblink.len(),
        noblink_granted: noblink.iter().filter(|c| c.decision == "grant").count(),
        photo_attacks: attacks.len(),
        photo_attacks_granted: attacks.iter().filter(|c| c.decision == "grant").count(),
        replay_attacks: replayed.len(),
        replay_attacks_granted: replayed.iter().filter(|c| c.decision == "grant").count(),
        attacks_denied_as_spoof: out
            .iter()
            .filter(is_attack)
            .filter(|c| c.reason == "spoof")
            .count(),
        genuine_denied_by_pad: genuine
            .iter()
            .filter(|c| c.reason == "spoof" || c.reason == "pad_unsure")
            .count(),
        max_frames_after_blink: out
            .iter()
            .filter(|c| c.decision == "grant")
            .filter_map(|c| c.frames_after_blink)
            .max(),
        gallery_mean_spread,
        not_enrollable: refused_dup,
        stranger_clips: strangers.len(),
        strangers_granted: strangers.iter().filter(|c| c.decision == "grant").count(),
        clips: out,
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

// ----- eval spoof -------------------------------------------------------------------

/// One clip or still of `eval spoof`.
#[derive(Debug, Clone, Serialize)]
pub struct SpoofItem {
    pub file: String,
    /// "live" or "attack" (from the data's own labels: `_replay_`/`attack` in the name).
    pub truth: &'static str,
    /// "video", "still", or "photo_attack" (made here from a ZJU frame).
    pub source: &'static str,
    /// The deciding attempt's PAD (the first `live` one, else the last); for a still, its
    /// one frame.
    pub presentation_attack: Option<PadSummary>,
    /// Every scored frame of the item (all tracks).
    pub frames_scored: u64,
    /// PAD would let it through (a `live` verdict on some attempt).
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SpoofReport {
    pub items: Vec<SpoofItem>,
    pub attacks: usize,
    pub attacks_passed: usize,
    /// Attack presentations classified live / attack presentations (ISO/IEC 30107-3).
    pub apcer: f64,
    pub live: usize,
    pub live_rejected: usize,
    /// Live presentations not classified live / live presentations.
    pub bpcer: f64,
    /// Both models on one frame (ms).
    pub pad_ms: Summary,
    pub elapsed_s: f64,
}

/// `eval spoof`: presentation-attack detection alone, on every live and attack video and
/// still under `data` (`blink/zju`, `blink/live_noblink`, `blink/replay_and_live`,
/// `spoof_stills`) and a photo attack made from a frame of each ZJU person. Videos run
/// through the pipeline (PAD scores only the frames it encodes) with nobody enrolled.
pub fn eval_spoof(
    models: Models,
    cfg: &VisionConfig,
    data: &Path,
) -> Result<SpoofReport, EvalError> {
    let t0 = Instant::now();
    let mut items = Vec::new();
    let mut nobody = Gallery::default();
    let mut decider = Decider::new(&mut nobody, &AccessConfig::default())?;
    let mut pipe = Pipeline::new(models, nobody, cfg.pipeline());
    let mut pad_ms = Vec::new();
    let mut run_clip = |pipe: &mut Pipeline,
                        clip: &Path,
                        truth: &'static str,
                        source: &'static str|
     -> Result<(), EvalError> {
        let r = replay(pipe, &mut decider, clip)?;
        pad_ms.extend_from_slice(&pipe.stats.pad_ms);
        let pads: Vec<&PadSummary> = r
            .attempts
            .iter()
            .map(|a| &a.attempt.presentation_attack)
            .collect();
        let decisive = pads
            .iter()
            .find(|p| p.verdict == PadVerdict::Live)
            .or_else(|| pads.last())
            .map(|p| (*p).clone());
        items.push(SpoofItem {
            file: clip.display().to_string(),
            truth,
            source,
            passed: decisive
                .as_ref()
                .is_some_and(|p| p.verdict == PadVerdict::Live),
            presentation_attack: decisive,
            frames_scored: pipe.stats.pad_scored,
        });
        Ok(())
    };
    let blink = data.join("blink");
    for sub in ["zju", "live_noblink", "replay_and_live"] {
        let dir = blink.join(sub);
        if !dir.is_dir() {
            continue;
        }
        for c in list_videos(&dir)? {
            let truth = if name_of(&c).contains("_replay_") {
                "attack"
            } else {
                "live"
            };
            run_clip(&mut pipe, &c, truth, "video")?;
        }
    }
    // Photo attacks: one per ZJU person, from a session that is not FNN.
    let zju = blink.join("zju");
    if zju.is_dir() {
        let tmp = tempfile::tempdir().map_err(|e| VisionError::Io(std::env::temp_dir(), e))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, c) in list_videos(&zju)?.iter().enumerate() {
            let n = name_of(c);
            let person = n.split('_').next().unwrap_or_default().to_string();
            if n.ends_with("_FNN") || !seen.insert(person.clone()) {
                continue;
            }
            let out = tmp.path().join(format!("{person}_photo_attack.avi"));
            if photo_attack_of(c, &out, 2000 + i as u64)? {
                run_clip(&mut pipe, &out, "attack", "photo_attack")?;
            }
        }
    }
    let stills = data.join("spoof_stills");
    if stills.is_dir() {
        for p in list_images(&stills)? {
            let truth = if name_of(&p).contains("attack") {
                "attack"
            } else {
                "live"
            };
            let frame = crate::vision::source::load_image(&p)?;
            let (summary, scored) =
                match crate::vision::pipeline::upright_face(pipe.models(), &frame)? {
                    Some((f, bbox)) => {
                        let t = Instant::now();
                        let score = pipe.models_mut().live_probability(&f, &bbox)?;
                        pad_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                        let scores: Vec<f32> = score.into_iter().collect();
                        // One frame is all a still has: judged by that frame alone.
                        let one = PadConfig {
                            min_frames: 1,
                            ..cfg.pad.clone()
                        };
                        (Some(PadSummary::over(&scores, &one)), scores.len() as u64)
                    }
                    None => (None, 0),
                };
            items.push(SpoofItem {
                file: p.display().to_string(),
                truth,
                source: "still",
                passed: summary
                    .as_ref()
                    .is_some_and(|s| s.verdict == PadVerdict::Live),
                presentation_attack: summary,
                frames_scored: scored,
            });
        }
    }
    let attacks = items.iter().filter(|i| i.truth == "attack").count();
    let attacks_passed = items
        .iter()
        .filter(|i| i.truth == "attack" && i.passed)
        .count();
    let live = items.iter().filter(|i| i.truth == "live").count();
    let live_rejected = items
        .iter()
        .filter(|i| i.truth == "live" && !i.passed)
        .count();
    let ratio = |a: usize, b: usize| (a as f64 / b.max(1) as f64 * 10000.0).round() / 10000.0;
    Ok(SpoofReport {
        apcer: ratio(attacks_passed, attacks),
        bpcer: ratio(live_rejected, live),
        items,
        attacks,
        attacks_passed,
        live,
        live_rejected,
        pad_ms: summarize(&pad_ms),
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}
