//! `lockerd-lab simulate` end to end: scenario files in, JSON lines out.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

fn simulate(dir: &std::path::Path, scenario: &str) -> Vec<serde_json::Value> {
    simulate_with(dir, &default_config(), scenario)
}

fn simulate_with(
    dir: &std::path::Path,
    config: &std::path::Path,
    scenario: &str,
) -> Vec<serde_json::Value> {
    let f = dir.join("scenario.jsonl");
    std::fs::write(&f, scenario).unwrap();
    run_simulate(config, &[], &f)
}

/// `lockerd --config CONFIG --models M [global...] simulate FILE --json [--from-store]`:
/// the output lines.
fn run_simulate(
    config: &std::path::Path,
    global: &[&std::ffi::OsStr],
    f: &std::path::Path,
) -> Vec<serde_json::Value> {
    let from_store = global.iter().any(|a| *a == "--db");
    let o = Command::new(lab_bin())
        .arg("--config")
        .arg(config)
        .arg("--models")
        .arg(models_dir())
        .args(global)
        .arg("simulate")
        .arg(f)
        .arg("--json")
        .args(from_store.then_some("--from-store"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn events<'a>(v: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    v.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn one_time_code_then_three_wrong_codes_lock_out_with_an_alert() {
    let d = tempfile::tempdir().unwrap();
    let out = simulate(
        d.path(),
        r#"{"at_s": 0.0, "admin": "user_add", "user": "alice"}
{"at_s": 1.0, "admin": "otp_issue", "user": "alice"}
{"at_s": 2.0, "keys": "{otp}"}
{"at_s": 10.0, "admin": "otp_issue"}
{"at_s": 11.0, "keys": "{bad_otp}"}
{"at_s": 15.0, "keys": "{bad_otp}"}
{"at_s": 20.0, "keys": "{bad_otp}"}
{"at_s": 25.0, "keys": "{otp}"}
{"at_s": 150.0, "keys": "{otp}"}
"#,
    );
    let unlocks = events(&out, "unlock");
    assert_eq!(unlocks.len(), 2, "{out:#?}");
    assert_eq!(unlocks[0]["user"], "alice");
    assert_eq!(unlocks[0]["method"], "otp");
    assert!(
        unlocks[1]["at_s"].as_f64().unwrap() > 150.0,
        "the right code only works after the lockout"
    );
    let denies = events(&out, "deny");
    assert_eq!(denies.len(), 3);
    assert!(denies.iter().all(|d| d["reason"] == "wrong_code"));
    let lockout = events(&out, "lockout");
    assert_eq!(lockout.len(), 1);
    assert_eq!(lockout[0]["detail"]["seconds"], 120);
    let alerts = events(&out, "alert");
    assert!(alerts.iter().any(|a| a["kind"] == "keypad_lockout"));
    assert_eq!(events(&out, "relock").len(), 2);
}

#[test]
fn door_forced_and_held_open() {
    let d = tempfile::tempdir().unwrap();
    let out = simulate(
        d.path(),
        r#"{"at_s": 1.0, "door": "open"}
{"at_s": 2.0, "door": "closed"}
{"at_s": 3.0, "admin": "unlock"}
{"at_s": 4.0, "door": "open"}
"#,
    );
    let kinds: Vec<&str> = events(&out, "alert")
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    // Tail of 10 s is not enough for the 30 s held-open alarm: only the forced door.
    assert_eq!(kinds, ["door_forced"], "{out:#?}");
    let out = simulate(
        d.path(),
        r#"{"at_s": 3.0, "admin": "unlock"}
{"at_s": 4.0, "door": "open"}
{"at_s": 40.0, "door": "closed"}
"#,
    );
    let kinds: Vec<&str> = events(&out, "alert")
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["door_held_open"], "{out:#?}");
}

#[test]
fn face_unlock_from_a_real_clip_and_a_photo_of_the_same_person_is_denied() {
    let Some(data) = shared_data() else { return };
    let d = tempfile::tempdir().unwrap();
    // A photo of the enrolled person (a frame of another session), moved like a print.
    let still = d.path().join("still.png");
    assert!(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-ss", "2.0", "-i"])
        .arg(data.join("blink/zju/000001M_UNN.mp4"))
        .args(["-frames:v", "1"])
        .arg(&still)
        .status()
        .unwrap()
        .success());
    let attack = d.path().join("attack.avi");
    let o = Command::new(lab_bin())
        .args(["tools", "photo-attack"])
        .arg(&still)
        .arg(&attack)
        .args(["--frames", "120"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let z = data.join("blink/zju");
    let out = simulate(
        d.path(),
        &format!(
            r#"{{"at_s": 0.0, "admin": "user_add", "user": "alice"}}
{{"at_s": 0.5, "admin": "enroll", "user": "alice", "from": ["{}"]}}
{{"at_s": 2.0, "clip": "{}"}}
{{"at_s": 20.0, "clip": "{}"}}
{{"at_s": 40.0, "clip": "{}"}}
"#,
            z.join("000001M_FNN.mp4").display(),
            z.join("000001M_FTN.mp4").display(),
            attack.display(),
            z.join("000010M_FNN.mp4").display(),
        ),
    );
    let unlocks = events(&out, "unlock");
    assert_eq!(unlocks.len(), 1, "{out:#?}");
    assert_eq!(unlocks[0]["user"], "alice");
    assert_eq!(unlocks[0]["method"], "face");
    let t = unlocks[0]["at_s"].as_f64().unwrap();
    assert!(
        (2.0..7.0).contains(&t),
        "unlocked during the walk-up clip: {t}"
    );
    let denies = events(&out, "deny");
    assert!(
        denies.iter().any(|d| d["reason"] == "no_blink"
            && d["at_s"].as_f64().unwrap() >= 20.0
            && d["at_s"].as_f64().unwrap() < 40.0),
        "photo denied: {out:#?}"
    );
    assert!(
        denies
            .iter()
            .any(|d| d["reason"] == "no_match" && d["at_s"].as_f64().unwrap() >= 40.0),
        "stranger denied: {out:#?}"
    );
}

/// The active challenge on real clips: 000008M blinks six times in a walk-up clip, so
/// after the first blink's attempt is held back, "blink twice" is answered and the door
/// opens; nobody in the ZJU clips turns, so "turn left" goes unanswered and is denied.
#[test]
fn an_active_challenge_is_answered_by_blinking_twice_and_a_turn_nobody_makes_is_denied() {
    let Some(data) = shared_data() else { return };
    let z = data.join("blink/zju");
    let shipped = std::fs::read_to_string(default_config()).unwrap();
    for (prompt, opens) in [("blink_twice", true), ("turn_left", false)] {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("lockerd.toml");
        let text = shipped
            .replacen("mode = \"off\"", "mode = \"always\"", 1)
            .replacen("seed = 0", "seed = 7", 1)
            .replacen(
                "prompts = [\"blink_twice\", \"turn_left\", \"turn_right\"]",
                &format!("prompts = [\"{prompt}\"]"),
                1,
            );
        assert_ne!(text, shipped);
        std::fs::write(&cfg, text).unwrap();
        let out = simulate_with(
            d.path(),
            &cfg,
            &format!(
                r#"{{"at_s": 0.0, "admin": "user_add", "user": "alice"}}
{{"at_s": 0.5, "admin": "enroll", "user": "alice", "from": ["{}"]}}
{{"at_s": 2.0, "clip": "{}"}}
"#,
                z.join("000008M_FNN.mp4").display(),
                z.join("000008M_FTN.mp4").display(),
            ),
        );
        let asked = events(&out, "challenge");
        assert_eq!(asked.len(), 1, "{prompt}: {out:#?}");
        assert_eq!(asked[0]["reason"], prompt);
        let unlocks = events(&out, "unlock");
        let denies = events(&out, "deny");
        let at = |e: &serde_json::Value| e["at_s"].as_f64().unwrap();
        if opens {
            assert_eq!(unlocks.len(), 1, "{out:#?}");
            assert_eq!(unlocks[0]["user"], "alice");
            assert!(at(unlocks[0]) > at(asked[0]), "opened after the prompt");
            assert!(denies.is_empty(), "{out:#?}");
        } else {
            assert!(unlocks.is_empty(), "{out:#?}");
            assert_eq!(denies.len(), 1, "{out:#?}");
            assert_eq!(denies[0]["reason"], "challenge_failed");
            assert_eq!(denies[0]["detail"]["challenge"]["prompt"], "turn_left");
            assert_eq!(denies[0]["detail"]["challenge"]["passed"], false);
        }
    }
}

#[test]
fn bad_scenarios_are_refused_with_the_line() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"at_s\": 1, \"keys\": \"1\"}\n{\"at_s\": 2, \"clip\": \"nope.mp4\"}\n",
    )
    .unwrap();
    let o = Command::new(lab_bin())
        .arg("simulate")
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("bad.jsonl:2:") && stderr(&o).contains("no such file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_tail_is_refused_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let sc = d.path().join("s.jsonl");
    std::fs::write(&sc, "{\"at_s\": 0.0, \"door\": \"open\"}\n").unwrap();
    for tail in ["-5", "nan", "inf", "1e300"] {
        let o = std::process::Command::new(lab_bin())
            .arg("--config")
            .arg(default_config())
            .arg("simulate")
            .arg(&sc)
            .arg(format!("--tail={tail}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{tail}: {}", stderr(&o));
        assert!(stderr(&o).contains("--tail"), "{tail}: {}", stderr(&o));
    }
}

/// A store as the release before SFace wrote it (schema 5: templates are dlib ResNet
/// embeddings, no model column), holding `who` enrolled from `clip` (every 10th frame
/// with a face, up to 5 templates, made with dlib's ResNet as that release did).
fn schema5_store(dir: &std::path::Path, who: &str, clip: &std::path::Path) -> (PathBuf, PathBuf) {
    use lockerd::vision::models::Models;
    use lockerd::vision::pipeline::still_face;
    let key_text = "0123456789abcdef0123456789abcdef";
    let key = key_file(dir, "key", key_text);
    let db = dir.join("old.db");
    let models = Models::load(&models_dir()).expect("models (run scripts/setup.sh)");
    let mut src = lockerd::vision::source::open_path(clip).unwrap();
    let mut templates = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        if f.index % 10 != 0 || templates.len() >= 5 {
            continue;
        }
        if let Some(face) = still_face(&models, &f).unwrap() {
            if let Some(e) = models.encode_legacy(&face.patch, &face.shape).unwrap() {
                templates.push(e);
            }
        }
    }
    assert!(
        templates.len() >= 3,
        "dlib templates from {}",
        clip.display()
    );
    let mut conn = rusqlite::Connection::open(&db).unwrap();
    conn.pragma_update(None, "key", key_text).unwrap();
    lockerd::store::schema::migrate_to(&mut conn, 5).unwrap();
    conn.execute(
        "INSERT INTO users (id, name, role, created_ms) VALUES (1, ?1, 'user', 0)",
        [who],
    )
    .unwrap();
    for t in &templates {
        conn.execute(
            "INSERT INTO face_templates (user_id, embedding, quality, source, created_ms)
             VALUES (1, ?1, 0.9, 'release 5', 0)",
            [t.to_bytes()],
        )
        .unwrap();
    }
    assert_eq!(lockerd::store::schema::version(&conn).unwrap(), 5);
    drop(conn);
    (db, key)
}

#[test]
fn a_user_enrolled_before_sface_is_still_granted_and_upgraded_at_that_grant() {
    let Some(data) = shared_data() else { return };
    let d = tempfile::tempdir().unwrap();
    let z = data.join("blink/zju");
    let (db, key) = schema5_store(d.path(), "carol", &z.join("000008M_FNN.mp4"));
    let f = d.path().join("scenario.jsonl");
    std::fs::write(
        &f,
        format!(
            "{{\"at_s\": 0.0, \"clip\": \"{}\"}}\n{{\"at_s\": 20.0, \"clip\": \"{}\"}}\n",
            z.join("000008M_FTN.mp4").display(),
            z.join("000008M_FBN.mp4").display(),
        ),
    )
    .unwrap();
    let global = [
        "--db".as_ref(),
        db.as_os_str(),
        "--key-file".as_ref(),
        key.as_os_str(),
    ];
    let run = || run_simulate(&default_config(), &global, &f);
    let out = run();
    let unlocks = events(&out, "unlock");
    assert_eq!(unlocks.len(), 2, "{out:#?}");
    // The first walk-up: matched by the dlib templates, as before the upgrade.
    assert_eq!(unlocks[0]["user"], "carol");
    assert_eq!(unlocks[0]["detail"]["model"], "dlib_resnet_v1", "{out:#?}");
    // That grant stored SFace templates, and the next walk-up is matched by them.
    let upgraded: Vec<_> = events(&out, "user_changed")
        .into_iter()
        .filter(|e| e["reason"] == "face_upgraded")
        .collect();
    assert_eq!(upgraded.len(), 1, "{out:#?}");
    assert_eq!(upgraded[0]["user"], "carol");
    assert!(upgraded[0]["at_s"].as_f64().unwrap() < 20.0);
    assert_eq!(unlocks[1]["user"], "carol");
    assert_eq!(unlocks[1]["detail"]["model"], "sface_2021dec", "{out:#?}");
    // The store itself was only read: still schema 5 on disk, the same on a second run.
    assert_eq!(
        events(&run(), "unlock")[0]["detail"]["model"],
        "dlib_resnet_v1"
    );
}
