//! The full accuracy evaluations on real people (`../shared/data`): face accuracy on LFW
//! photos, every kiosk replay of the ZJU clips (genuine, strangers, no-blink, photo and
//! video-replay attacks), presentation-attack detection, blink counts. Each takes minutes
//! of CPU, so CI does not run them (`tests/vision.rs` keeps the decisive clip cases: a
//! grant, a photo, a video replay and a look-alike stranger); `bash scripts/accuracy.sh`
//! runs them all (`cargo test --release --test accuracy -- --ignored`) and must pass
//! before a change to vision, matching or their config lands. Bounds are a little looser
//! than the README targets so noise in the data cannot flip them; the security bounds
//! (wrong person, stranger, no blink, photo, replay) are exact.

mod common;
use common::*;
use lockerd::config::Config;
use lockerd::eval;
use lockerd::vision::models::Models;

fn models() -> Models {
    Models::load(&models_dir()).expect("models (run scripts/setup.sh)")
}

/// LFW with `k` photos enrolled per person, the dev impostors probing too: the shipped
/// configuration's tally, printed.
fn lfw(k: usize, impostors: &str) -> eval::FacesReport {
    let data = shared_data().expect("../shared/data");
    let cfg = Config::default().vision;
    let r = eval::eval_faces(
        &models(),
        &cfg,
        &data.join("faces"),
        Some(&data.join(impostors)),
        k,
    )
    .unwrap();
    let d = &r.at_default;
    println!(
        "LFW k={k} ({impostors}): genuine {} rejected {} misidentified {} impostors {} accepted {} frr {} far {}",
        d.genuine_probes,
        d.false_rejects,
        d.misidentified,
        d.impostor_probes,
        d.false_accepts,
        d.frr,
        d.far
    );
    r
}

#[test]
#[ignore = "full evaluation, minutes of CPU: bash scripts/accuracy.sh runs it"]
fn face_accuracy_on_lfw_two_photos_has_no_false_accepts_and_few_rejects() {
    if shared_data().is_none() {
        return;
    }
    let r = lfw(2, "impostors");
    let d = &r.at_default;
    assert_eq!(d.genuine_probes, 120);
    assert_eq!(d.impostor_probes, 70);
    assert_eq!(d.false_accepts, 0, "impostor accepted");
    assert_eq!(d.misidentified, 0, "genuine probe matched to someone else");
    // #24's target: at most 2% rejected.
    assert!(d.frr <= 0.02, "FRR {}", d.frr);
    // The sweep is monotone in the threshold for a fixed margin.
    let m12: Vec<_> = r
        .sweep
        .iter()
        .filter(|t| (t.margin - 0.12).abs() < 1e-6)
        .collect();
    assert!(m12
        .windows(2)
        .all(|w| w[1].false_rejects <= w[0].false_rejects));
}

#[test]
#[ignore = "full evaluation, minutes of CPU: bash scripts/accuracy.sh runs it"]
fn face_accuracy_on_lfw_one_photo_has_no_false_accepts_and_few_rejects() {
    if shared_data().is_none() {
        return;
    }
    let r = lfw(1, "impostors");
    let d = &r.at_default;
    assert_eq!(d.genuine_probes, 150);
    assert_eq!(d.false_accepts, 0, "impostor accepted");
    assert_eq!(d.misidentified, 0, "genuine probe matched to someone else");
    // #24's target: at most 5% rejected.
    assert!(d.frr <= 0.05, "FRR {}", d.frr);
    // 1,000 more LFW strangers against the same one-photo gallery. One of them,
    // Elena_de_Chavez.jpg, shows Hugo Chavez (enrolled) beside her, the only face dlib
    // finds in it: a right match of him, so at most 1 is let in.
    let r = lfw(1, "impostors1000");
    let d = &r.at_default;
    assert!(d.impostor_probes >= 990, "{}", d.impostor_probes);
    assert!(d.false_accepts <= 1, "{} strangers let in", d.false_accepts);
}

/// Walk-ups that dlib's embedding granted as someone else once their own person was
/// removed from the gallery.
const STRANGERS: [&str; 4] = ["000008M_FBN", "000008M_FTN", "000012M_UNN", "000016F_UNN"];

#[test]
#[ignore = "full evaluation, minutes of CPU: bash scripts/accuracy.sh runs it"]
fn kiosk_grants_the_enrolled_and_never_a_photo_or_a_stranger() {
    let Some(data) = shared_data() else { return };
    let cfg = Config::default().vision;
    let (noblink, replays) = (
        data.join("blink/live_noblink"),
        data.join("blink/replay_and_live"),
    );
    let opts = eval::KioskOptions {
        noblink: Some(&noblink),
        photo_attacks: true,
        replays: Some(&replays),
        // The four look-alike strangers the dlib embedding let in (issue 24).
        leave_one_out: Some(&STRANGERS[..]),
        templates: 5,
    };
    let r = eval::eval_kiosk(models(), &cfg, &data.join("blink/zju"), &opts).unwrap();
    println!(
        "enrolled {}/{} granted {}/{} ({}), wrong {}, noblink {}/{}, photo {}/{}, replay {}/{}",
        r.enrolled,
        r.people,
        r.granted,
        r.genuine_clips,
        r.grant_rate,
        r.granted_as_someone_else,
        r.noblink_granted,
        r.noblink_clips,
        r.photo_attacks_granted,
        r.photo_attacks,
        r.replay_attacks_granted,
        r.replay_attacks
    );
    assert_eq!(r.granted_as_someone_else, 0, "granted as someone else");
    assert_eq!(r.noblink_clips, 4);
    assert_eq!(r.noblink_granted, 0, "a clip without a blink was granted");
    assert!(
        r.photo_attacks >= 14,
        "photo attacks made for most enrolled people"
    );
    assert_eq!(r.photo_attacks_granted, 0, "a photo attack was granted");
    // Video replays: the person is enrolled from their own live video first.
    assert_eq!(r.replay_attacks, 2);
    assert_eq!(r.replay_attacks_granted, 0, "a video replay was granted");
    // The monitor replay blinks and matches: only presentation-attack detection stops it.
    let monitor = r
        .clips
        .iter()
        .find(|c| c.file.ends_with("tranvanluyt_replay_monitor.mp4"))
        .unwrap();
    assert_eq!(monitor.reason, "spoof", "{monitor:?}");
    assert!(r.attacks_denied_as_spoof >= 1);
    assert!(
        r.genuine_denied_by_pad <= 1,
        "{} genuine walk-ups denied by PAD",
        r.genuine_denied_by_pad
    );
    assert!(r.enrolled >= 16, "enrollment from the FNN clips");
    // Look-alikes can all be enrolled: nobody's face is within the duplicate check's
    // distance of another person's templates.
    assert!(r.not_enrollable.is_empty(), "{:?}", r.not_enrollable);
    // 48/48 with SFace (46/48 with dlib's ResNet and the cohort-normalized margin).
    assert!(r.grant_rate >= 0.97, "grant rate {}", r.grant_rate);
    // Strangers who resemble someone enrolled: each of these was granted as that person
    // with dlib's embedding; removed from the gallery, they are denied now.
    assert_eq!(r.stranger_clips, STRANGERS.len());
    assert_eq!(r.strangers_granted, 0, "a look-alike stranger was let in");
    for c in r.clips.iter().filter(|c| c.kind == "stranger") {
        println!("{c:?}");
        assert_eq!(c.decision, "deny", "{c:?}");
        assert_ne!(c.user.as_deref(), Some(c.person.as_str()));
    }
    // Decided within 3 frames of the blink completing (grants were made, so this is known).
    let after = r
        .max_frames_after_blink
        .expect("no grant reported how many frames after its blink it was decided");
    assert!(after <= 3, "decided {after} frames after the blink");
}

#[test]
#[ignore = "full evaluation, minutes of CPU: bash scripts/accuracy.sh runs it"]
fn presentation_attack_detection_on_real_attacks_and_live_faces() {
    let Some(data) = shared_data() else { return };
    let cfg = Config::default().vision;
    let r = eval::eval_spoof(models(), &cfg, &data).unwrap();
    let item = |end: &str| r.items.iter().find(|i| i.file.ends_with(end)).unwrap();
    println!(
        "APCER {} ({}/{}), BPCER {} ({}/{}), pad p50 {} ms",
        r.apcer, r.attacks_passed, r.attacks, r.bpcer, r.live_rejected, r.live, r.pad_ms.p50
    );
    // Recorded attacks of a real screen or print: none passes.
    for f in [
        "tranvanluyt_replay_monitor.mp4",
        "printed_photo_attack_F1.jpg",
        "tablet_replay_attack_F2.jpg",
    ] {
        let i = item(f);
        assert_eq!(i.truth, "attack");
        assert!(!i.passed, "{f} passed PAD: {i:?}");
    }
    // Live faces: the still, and (nearly) every live video.
    assert!(item("live_T1.jpg").passed);
    let live_videos: Vec<_> = r
        .items
        .iter()
        .filter(|i| i.truth == "live" && i.source == "video")
        .collect();
    assert_eq!(live_videos.len(), 70);
    let rejected = live_videos.iter().filter(|i| !i.passed).count();
    assert!(rejected <= 3, "{rejected} live videos rejected by PAD");
    // Every ZJU person got a photo attack (synthetic: see the README on what PAD sees).
    assert_eq!(
        r.items
            .iter()
            .filter(|i| i.source == "photo_attack")
            .count(),
        16
    );
}

#[test]
#[ignore = "full evaluation, minutes of CPU: bash scripts/accuracy.sh runs it"]
fn blink_counts_agree_with_the_annotations() {
    let Some(data) = shared_data() else { return };
    let cfg = Config::default().vision;
    let r = eval::eval_blinks(models(), &cfg, &data.join("manifest.json"), None).unwrap();
    println!(
        "within one {}/{}; live {}",
        r.within_one, r.clips, r.clips_with_live_blink
    );
    assert_eq!(r.clips, 64);
    assert!(
        r.within_one_rate >= 0.9,
        "within one: {}",
        r.within_one_rate
    );
    // 64 of 64 with the iris model (57 with the 68-point eye aspect ratio), with the eye
    // model's measurement reused on unchanged eyes.
    println!("eye measurements reused: {}", r.eyes_reused_rate);
    assert_eq!(r.clips_with_live_blink, 64);
    assert_eq!(r.no_blink_clips, 4);
    assert_eq!(r.no_blink_clips_with_live_blinks, 0);
}
