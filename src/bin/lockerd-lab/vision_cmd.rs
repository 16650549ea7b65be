//! `lockerd-lab eval ...` and `lockerd-lab replay`: measurement commands, one JSON object out.

use crate::Ctx;
use anyhow::Context;
use clap::Subcommand;
use lockerd::eval;
use lockerd::store::Create;
use lockerd::vision::{models::Models, pipeline::Pipeline};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum EvalCmd {
    /// Face-match accuracy on a photo gallery (DIR/<person>/<photos>) with a threshold sweep.
    Faces {
        #[arg(long, value_name = "DIR")]
        gallery: PathBuf,
        #[arg(long, value_name = "DIR")]
        impostors: Option<PathBuf>,
        /// Photos per person enrolled (the first K that enrollment accepts, by name); the
        /// rest are probes.
        #[arg(long, default_value_t = 2)]
        enroll_per_person: usize,
        #[arg(long)]
        json: bool,
    },
    /// Kiosk conditions: enroll each person from DIR/<person>_FNN.mp4, replay the rest,
    /// the no-blink clips and a photo attack per person.
    Kiosk {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, value_name = "DIR")]
        noblink: Option<PathBuf>,
        /// Also make and replay a photo attack of each enrolled person.
        #[arg(long)]
        photo_attacks: bool,
        /// Video replay attacks: each <name>_replay_* video here is replayed after
        /// enrolling <name> from its <name>_live_* video.
        #[arg(long, value_name = "DIR")]
        replays: Option<PathBuf>,
        /// Also replay each person's walk-ups with that person removed from the gallery:
        /// strangers who resemble someone enrolled (none may be granted).
        #[arg(long)]
        leave_one_out: bool,
        /// Templates kept per enrollment clip (1: a single frame, as good as one photo).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=20))]
        templates: u16,
        #[arg(long)]
        json: bool,
    },
    /// Presentation-attack detection alone on every live and attack clip and still under
    /// DIR (the shared data folder), plus a photo attack per ZJU person: APCER and BPCER.
    Spoof {
        #[arg(long, value_name = "DIR")]
        data: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Blink counts of the pipeline against a manifest's annotations.
    Blinks {
        #[arg(long, value_name = "FILE")]
        manifest: PathBuf,
        /// Write a per-frame CSV trace (eye aspect ratios, open level, blinks) here.
        #[arg(long, value_name = "FILE")]
        trace: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn load_models(ctx: &Ctx) -> anyhow::Result<Models> {
    Models::load(&ctx.config.vision.models).context("loading the face models")
}

fn print(json: bool, v: &impl serde::Serialize, human: impl FnOnce()) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(v)?);
    } else {
        human();
    }
    Ok(())
}

pub fn eval_cmd(ctx: &Ctx, cmd: EvalCmd) -> anyhow::Result<ExitCode> {
    let models = load_models(ctx)?;
    match cmd {
        EvalCmd::Faces {
            gallery,
            impostors,
            enroll_per_person,
            json,
        } => {
            let r = eval::eval_faces(
                &models,
                &ctx.config.vision,
                &gallery,
                impostors.as_deref(),
                enroll_per_person,
            )?;
            print(json, &r, || {
                let d = &r.at_default;
                println!(
                    "threshold {:.2} margin {:.2}: genuine {} (rejected {}, misidentified {}), impostors {} (accepted {}); FRR {:.1}%, FAR {:.2}%",
                    d.threshold, d.margin, d.genuine_probes, d.false_rejects, d.misidentified,
                    d.impostor_probes, d.false_accepts, d.frr * 100.0, d.far * 100.0
                );
            })?;
        }
        EvalCmd::Kiosk {
            dir,
            noblink,
            photo_attacks,
            replays,
            leave_one_out,
            templates,
            json,
        } => {
            let opts = eval::KioskOptions {
                noblink: noblink.as_deref(),
                photo_attacks,
                replays: replays.as_deref(),
                leave_one_out: leave_one_out.then_some(&[][..]),
                templates: templates.into(),
            };
            let r = eval::eval_kiosk(models, &ctx.config.vision, &dir, &opts)?;
            print(json, &r, || {
                for c in &r.clips {
                    let ok = match c.kind.as_str() {
                        "genuine" => c.decision == "grant" && c.user.as_deref() == Some(&c.person),
                        _ => c.decision == "deny",
                    };
                    println!(
                        "{:<60} {:<12} {:<5} {:<10} {}",
                        c.file,
                        c.kind,
                        c.decision,
                        c.reason,
                        if ok { "" } else { "WRONG" }
                    );
                }
                println!(
                    "enrolled {}/{}; granted {}/{} ({:.1}%), as someone else {}; no-blink granted {}/{}; photo attacks granted {}/{}; replay attacks granted {}/{}",
                    r.enrolled, r.people, r.granted, r.genuine_clips, r.grant_rate * 100.0, r.granted_as_someone_else,
                    r.noblink_granted, r.noblink_clips, r.photo_attacks_granted, r.photo_attacks,
                    r.replay_attacks_granted, r.replay_attacks
                );
                println!(
                    "not enrollable (duplicate check, enrolled last): {}; strangers granted {}/{}",
                    if r.not_enrollable.is_empty() {
                        "none".to_string()
                    } else {
                        r.not_enrollable.join(", ")
                    },
                    r.strangers_granted,
                    r.stranger_clips
                );
            })?;
        }
        EvalCmd::Spoof { data, json } => {
            let r = eval::eval_spoof(models, &ctx.config.vision, &data)?;
            print(json, &r, || {
                for i in &r.items {
                    let pa = i.presentation_attack.as_ref();
                    println!(
                        "{:<62} {:<6} {:<12} scored {:>3} live {:>3} median {:<5} {}",
                        i.file,
                        i.truth,
                        i.source,
                        pa.map_or(0, |p| p.frames_scored),
                        pa.map_or(0, |p| p.frames_live),
                        pa.and_then(|p| p.median)
                            .map_or("-".into(), |m| format!("{m:.2}")),
                        if i.passed == (i.truth == "live") {
                            ""
                        } else {
                            "WRONG"
                        }
                    );
                }
                println!(
                    "APCER {:.1}% ({} of {} attacks passed), BPCER {:.1}% ({} of {} live rejected); PAD per frame p50 {:.1} ms",
                    r.apcer * 100.0, r.attacks_passed, r.attacks, r.bpcer * 100.0, r.live_rejected, r.live, r.pad_ms.p50
                );
            })?;
        }
        EvalCmd::Blinks {
            manifest,
            trace,
            json,
        } => {
            let r = eval::eval_blinks(models, &ctx.config.vision, &manifest, trace.as_deref())?;
            print(json, &r, || {
                for c in &r.per_clip {
                    println!(
                        "{:<55} found {:>2} (live {:>2})  annotated {:>2} (merged {:>2}) {}",
                        c.file,
                        c.found,
                        c.live,
                        c.annotated,
                        c.annotated_merged,
                        if c.within_one || c.annotated == 0 {
                            ""
                        } else {
                            "OFF"
                        }
                    );
                }
                println!(
                    "{} of {} clips within one ({:.1}%); {} had a liveness-grade blink; {} of {} no-blink clips had a blink ({} liveness-grade)",
                    r.within_one, r.clips, r.within_one_rate * 100.0, r.clips_with_live_blink, r.no_blink_clips_with_blinks, r.no_blink_clips, r.no_blink_clips_with_live_blinks
                );
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn replay_cmd(
    ctx: &Ctx,
    clip: PathBuf,
    gallery: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let models = load_models(ctx)?;
    let cfg = &ctx.config.vision;
    let gal = match gallery {
        Some(dir) => {
            let mut tmp = eval::TempStore::new()?;
            eval::enroll_gallery_dir(&models, cfg, &mut tmp.db, &dir)
                .with_context(|| format!("enrolling the gallery {}", dir.display()))?;
            lockerd::service::load_gallery(&tmp.db)?
        }
        None => {
            let (db, _, _) = crate::ctx::open_db(ctx, Create::MustExist)?;
            lockerd::service::load_gallery(&db)?
        }
    };
    // The daemon's decision: its controller on simulated devices and a throwaway store
    // with the same users (the device's own store and audit log are never written).
    let mut gal = gal;
    let mut decider = eval::Decider::new(&mut gal, &ctx.config.access)?;
    let mut pipe = Pipeline::new(models, gal, cfg.pipeline());
    let r = eval::replay(&mut pipe, &mut decider, &clip)?;
    print(json, &r, || {
        println!(
            "{}: {} ({}){} after {} frames; blinks {}, distance {}, PAD {}; frame CPU p50 {:.1} ms",
            r.clip,
            r.decision,
            r.reason,
            r.user
                .as_deref()
                .map(|u| format!(" as {u}"))
                .unwrap_or_default(),
            r.decision_frame.map(|f| f + 1).unwrap_or(r.frames),
            r.blinks,
            r.distance
                .map(|d| format!("{d:.3}"))
                .unwrap_or_else(|| "-".into()),
            r.presentation_attack
                .as_ref()
                .map(|p| format!(
                    "{:?} ({} of {} frames live)",
                    p.verdict, p.frames_live, p.frames_scored
                ))
                .unwrap_or_else(|| "-".into()),
            r.frame_cpu_ms.p50
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum ToolsCmd {
    /// Make a clip (.avi) of a photo in which the person blinks twice (synthetic: the eye
    /// regions are squeezed shut). For demos without real blink clips.
    BlinkClip {
        image: PathBuf,
        out: PathBuf,
        #[arg(long, default_value_t = 90)]
        frames: u32,
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
    },
    /// What the pipeline sees in a photo (or one frame of a clip), stage by stage, as one
    /// JSON object: the decoded pixels' sha256, the face box, the 68 landmarks and the
    /// 128-d embedding (used to find where two builds, e.g. arm64 and amd64, differ).
    Inspect {
        image: PathBuf,
        /// The frame of a clip (from 0).
        #[arg(long, default_value_t = 0)]
        frame: u64,
    },
    /// Make a photo-attack clip (.avi): the photo moved like a hand-held print.
    PhotoAttack {
        image: PathBuf,
        out: PathBuf,
        #[arg(long, default_value_t = 90)]
        frames: u32,
        #[arg(long, default_value_t = 30.0)]
        fps: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output width (0 = the photo's own).
        #[arg(long, default_value_t = 0)]
        width: u32,
    },
}

pub fn tools_cmd(ctx: &Ctx, cmd: ToolsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ToolsCmd::BlinkClip {
            image,
            out,
            frames,
            fps,
        } => {
            let models = load_models(ctx)?;
            let photo = lockerd::vision::source::load_image(&image)?;
            lockerd::vision::synth::blink_clip(&models, &photo, &out, frames, fps)?;
            println!(
                "wrote {} ({frames} frames at {fps} fps, two synthetic blinks)",
                out.display()
            );
        }
        ToolsCmd::Inspect { image, frame: n } => {
            use sha2::Digest;
            let models = load_models(ctx)?;
            let mut src = lockerd::vision::source::open_path(&image)?;
            let mut frame = None;
            for _ in 0..=n {
                frame = src.next_frame()?;
            }
            let frame = frame.with_context(|| format!("{}: no frame {n}", image.display()))?;
            let pixels = hex::encode(sha2::Sha256::digest(frame.rgb.as_slice()));
            let face = lockerd::vision::pipeline::still_face(&models, &frame)?;
            let v = match face {
                None => {
                    serde_json::json!({ "image": image, "pixels_sha256": pixels, "face": null })
                }
                Some(f) => {
                    let emb = models.encode(&frame, &f.shape)?;
                    serde_json::json!({
                        "image": image,
                        "width": frame.width,
                        "height": frame.height,
                        "pixels_sha256": pixels,
                        "faces": f.faces,
                        "next_face_width": f.next_width,
                        "bbox": [f.bbox.x, f.bbox.y, f.bbox.w, f.bbox.h],
                        "landmarks": f.shape.points.0,
                        "embedding": emb.map(|e| e.0.to_vec()),
                    })
                }
            };
            println!("{v}");
        }
        ToolsCmd::PhotoAttack {
            image,
            out,
            frames,
            fps,
            seed,
            width,
        } => {
            let p = lockerd::vision::synth::HandHeld {
                frames,
                fps,
                seed,
                width,
                ..Default::default()
            };
            lockerd::vision::synth::photo_attack_clip(&image, &out, &p)?;
            println!("wrote {} ({frames} frames at {fps} fps)", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
