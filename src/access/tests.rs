//! Controller tests on paused tokio time with a real (temporary) SQLCipher store and
//! simulated hardware: the driver runs as a task, the test sends inputs, advances time
//! and watches the events and the simulated lock.

use super::config::AccessConfig;
use super::controller::{AdminRequest, Controller, DbAccess, Input};
use super::driver::{self, TokioClock};
use super::{credentials, otp};
use crate::api::event::{AlertKind, EventKind, Timed};
use crate::api::ApiError;
use crate::hw::sim::{self, SimLockState};
use crate::store::{Create, Db, DbKey, Method, StoreError};
use crate::types::{Role, User};
use crate::vision::matcher::{MatchResult, Verdict};
use crate::vision::pad::{PadSummary, PadVerdict};
use crate::vision::pipeline::Attempt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

const BASE_MS: i64 = 1_800_000_000_000; // a fixed wall-clock start (2027-01-15)
const KEY: &str = "controller test key 0123456789";

fn open_db(path: &Path) -> Db {
    let k = DbKey::from_text(KEY, Path::new("t")).unwrap();
    Db::open(path, &k, Create::IfMissing, Duration::from_secs(5))
        .unwrap()
        .0
}

/// A store wrapper whose calls fail while `fail` is set (fail-closed tests).
struct Flaky {
    db: Db,
    fail: Arc<AtomicBool>,
}

impl DbAccess for Flaky {
    fn with<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::Invalid("injected store failure".into()));
        }
        f(&mut self.db)
    }
}

struct Rig {
    tx: mpsc::Sender<Input>,
    rx: broadcast::Receiver<Timed>,
    lock: Arc<SimLockState>,
    display: sim::SimDisplay,
    fail: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Controller<Flaky>>,
}

impl Rig {
    fn start(db: Db, cfg: AccessConfig) -> Rig {
        Rig::start_gated(db, cfg, None)
    }

    /// In a fleet, with this gate of fleet users' faces.
    fn start_gated(db: Db, cfg: AccessConfig, gate: Option<crate::api::FleetGate>) -> Rig {
        let (devices, kit) = sim::devices();
        let fail = Arc::new(AtomicBool::new(false));
        let store = Flaky {
            db,
            fail: fail.clone(),
        };
        let clock = TokioClock::starting_at(BASE_MS);
        let now = BASE_MS + clock.start.elapsed().as_millis() as i64;
        let (mut ctl, _) = Controller::new(cfg, store, devices, now).unwrap();
        ctl.set_fleet_gate(gate);
        let (tx, inputs) = mpsc::channel(64);
        let etx = crate::api::event::EventBus::new(1024);
        let rx = etx.subscribe();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (state, _) = tokio::sync::watch::channel(Default::default());
        let task = tokio::spawn(driver::run(ctl, clock, inputs, etx, state, async {
            let _ = stopped.await;
        }));
        Rig {
            tx,
            rx,
            lock: kit.lock,
            display: kit.display,
            fail,
            stop: Some(stop),
            task,
        }
    }

    async fn send(&self, i: Input) {
        self.tx.send(i).await.unwrap();
        settle().await;
    }

    async fn keys(&self, s: &str) {
        for k in s.chars() {
            self.send(Input::Key(k)).await;
        }
    }

    fn drain(&mut self) -> Vec<Timed> {
        let mut v = Vec::new();
        while let Ok(e) = self.rx.try_recv() {
            v.push(e);
        }
        v
    }

    fn kinds(&mut self) -> Vec<EventKind> {
        self.drain().into_iter().map(|t| t.event.event).collect()
    }

    async fn stop(mut self) -> Db {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().into_store().db
    }
}

/// Let the driver task run (no virtual time passes).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

async fn advance(d: Duration) {
    tokio::time::advance(d).await;
    settle().await;
}

fn temp() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("ctl.db");
    (d, p)
}

fn issue(db: &mut Db, user: Option<&User>, ttl: u64, now: i64) -> credentials::IssuedCode {
    credentials::issue_code(db, &AccessConfig::default(), user, Some(ttl), now).unwrap()
}

/// alice, a user with TOTP and the PIN 4821: her enrollment and its secret.
fn alice_with_totp(db: &mut Db, cfg: &AccessConfig) -> (credentials::TotpEnrollment, Vec<u8>) {
    let u = db.add_user("alice", Role::User).unwrap();
    let en = credentials::enroll_totp(db, cfg, &u, "lockerd", Some("4821"), BASE_MS).unwrap();
    let secret = totp_secret(&en.uri);
    (en, secret)
}

/// The TOTP secret inside an otpauth:// URI.
fn totp_secret(uri: &str) -> Vec<u8> {
    let b32 = uri
        .split("secret=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap();
    data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).unwrap()
}

fn wrong_code_keys(right: &credentials::IssuedCode) -> String {
    let mut c: Vec<char> = right.code.chars().collect();
    c[0] = if c[0] == '9' {
        '0'
    } else {
        ((c[0] as u8) + 1) as char
    };
    credentials::code_keys(right.slot, &c.into_iter().collect::<String>())
}

#[tokio::test(start_paused = true)]
async fn one_time_code_unlocks_once_and_relocks_after_the_pulse() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 600, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    assert!(rig.lock.is_locked());
    rig.keys(&c.keys).await;
    let ev = rig.drain();
    assert_eq!(ev.last().unwrap().event.event, EventKind::Unlock, "{ev:?}");
    assert_eq!(ev.last().unwrap().event.method, Some(Method::Otp));
    assert!(!rig.lock.is_locked());
    advance(Duration::from_millis(4900)).await;
    assert!(!rig.lock.is_locked(), "still within the 5 s pulse");
    advance(Duration::from_millis(200)).await;
    assert!(rig.lock.is_locked(), "re-locked after the pulse");
    assert!(rig.kinds().contains(&EventKind::Relock));
    // Single use.
    rig.keys(&c.keys).await;
    let ev = rig.drain();
    let deny = ev
        .iter()
        .find(|e| e.event.event == EventKind::Deny)
        .unwrap();
    assert_eq!(deny.event.reason.as_deref(), Some("wrong_code"));
    assert!(rig.lock.is_locked());
    let db = rig.stop().await;
    assert!(db.audit_verify().unwrap().ok);
    // The audit log never holds the code itself.
    let rows = db.audit_list(i64::MIN, 100).unwrap();
    assert!(rows
        .iter()
        .all(|r| !r.evidence.contains(&c.code) && !r.reason.contains(&c.code)));
}

#[tokio::test(start_paused = true)]
async fn expired_code_is_refused() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 60, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    advance(Duration::from_secs(61)).await;
    rig.keys(&c.keys).await;
    assert!(rig.kinds().contains(&EventKind::Deny));
    assert!(rig.lock.is_locked());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn three_wrong_codes_lock_the_keypad_for_two_minutes_then_four() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let bad = wrong_code_keys(&c);
    let mut rig = Rig::start(db, AccessConfig::default());
    rig.keys(&bad).await;
    rig.keys(&bad).await;
    assert!(!rig.kinds().contains(&EventKind::Lockout));
    rig.keys(&bad).await;
    let ev = rig.drain();
    assert!(ev.iter().any(|e| e.event.event == EventKind::Lockout));
    let alert = ev.iter().find_map(|e| e.event.alert.clone()).unwrap();
    assert_eq!(alert.kind, AlertKind::KeypadLockout);
    // Locked: even the right code is ignored, and not counted.
    rig.keys(&c.keys).await;
    assert!(rig.lock.is_locked());
    assert!(!rig.kinds().contains(&EventKind::Deny));
    advance(Duration::from_secs(119)).await;
    rig.keys(&c.keys).await;
    assert!(rig.lock.is_locked(), "still locked at 1:59");
    advance(Duration::from_secs(2)).await;
    // Second round: three more wrong codes lock for 4 minutes.
    for _ in 0..3 {
        rig.keys(&bad).await;
    }
    let ev = rig.drain();
    let lo = ev
        .iter()
        .find(|e| e.event.event == EventKind::Lockout)
        .unwrap();
    assert_eq!(lo.event.detail["seconds"], 240);
    assert_eq!(lo.event.detail["level"], 2);
    advance(Duration::from_secs(241)).await;
    rig.keys(&c.keys).await;
    assert!(
        rig.kinds().contains(&EventKind::Unlock),
        "the right code works after the lockout"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn lockout_survives_a_restart_and_an_admin_reset_clears_it() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let bad = wrong_code_keys(&c);
    let mut rig = Rig::start(db, AccessConfig::default());
    for _ in 0..3 {
        rig.keys(&bad).await;
    }
    assert!(rig.kinds().contains(&EventKind::Lockout));
    let db = rig.stop().await;
    drop(db);
    // "Restart": a new controller on the same database file, 30 s later.
    advance(Duration::from_secs(30)).await;
    let db = open_db(&p);
    assert_eq!(db.lockout_load().unwrap().level, 1);
    let mut rig = Rig::start(db, AccessConfig::default());
    // The new rig's clock starts at BASE again; the stored lockout ends BASE + 120 s.
    rig.keys(&c.keys).await;
    assert!(rig.lock.is_locked(), "still locked after the restart");
    rig.send(Input::Admin {
        request: AdminRequest::LockoutReset {
            by: "test".into(),
            via: Method::Admin,
        },
        reply: None,
    })
    .await;
    assert!(rig.kinds().contains(&EventKind::LockoutReset));
    rig.keys(&c.keys).await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    let db = rig.stop().await;
    assert_eq!(db.lockout_load().unwrap(), Default::default());
}

#[tokio::test(start_paused = true)]
async fn totp_with_pin_one_step_of_drift_never_twice() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let cfg = AccessConfig::default();
    let (en, secret) = alice_with_totp(&mut db, &cfg);
    let mut rig = Rig::start(db, cfg);
    let step = otp::totp_step(BASE_MS / 1000);
    let entry = |s: i64| format!("{}#4821{}#", en.keypad_no, otp::totp_code(&secret, s));
    // The previous step's code (clock drift) is accepted.
    rig.keys(&entry(step - 1)).await;
    let ev = rig.drain();
    let un = ev
        .iter()
        .find(|e| e.event.event == EventKind::Unlock)
        .expect("unlock");
    assert_eq!(un.event.user.as_deref(), Some("alice"));
    assert_eq!(un.event.method, Some(Method::Totp));
    // The same code again: replay, refused.
    rig.keys(&entry(step - 1)).await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter()
            .find(|e| e.event.event == EventKind::Deny)
            .unwrap()
            .event
            .reason
            .as_deref(),
        Some("totp_replayed")
    );
    // Two steps ahead: outside the window.
    rig.keys(&entry(step + 2)).await;
    assert_eq!(
        rig.drain()
            .iter()
            .find(|e| e.event.event == EventKind::Deny)
            .unwrap()
            .event
            .reason
            .as_deref(),
        Some("wrong_totp")
    );
    // Right TOTP, wrong PIN: the third wrong entry, so the keypad locks too.
    rig.keys(&format!(
        "{}#1111{}#",
        en.keypad_no,
        otp::totp_code(&secret, step + 1)
    ))
    .await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter()
            .find(|e| e.event.event == EventKind::Deny)
            .unwrap()
            .event
            .reason
            .as_deref(),
        Some("wrong_pin")
    );
    assert!(ev.iter().any(|e| e.event.event == EventKind::Lockout));
    // After the lockout, the code of the moment works.
    advance(Duration::from_secs(121)).await;
    rig.keys(&entry(step + 4)).await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn entry_times_out_and_clear_key_cancels() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    // Half an entry, then silence: it is dropped, so the full code typed later works.
    rig.keys("*12").await;
    advance(Duration::from_secs(11)).await;
    rig.keys(&c.keys).await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    advance(Duration::from_secs(6)).await;
    rig.keys("123C").await;
    rig.keys(&c.keys).await; // already used now
    let ev = rig.drain();
    assert!(ev
        .iter()
        .any(|e| e.event.reason.as_deref() == Some("wrong_code")));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn forced_door_and_door_held_open_raise_alerts() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    rig.send(Input::Door { open: true }).await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter().find_map(|e| e.event.alert.clone()).unwrap().kind,
        AlertKind::DoorForced
    );
    rig.send(Input::Door { open: false }).await;
    rig.drain();
    // With a grant, opening is fine; held open past 30 s is an alert.
    rig.keys(&c.keys).await;
    advance(Duration::from_secs(2)).await;
    rig.send(Input::Door { open: true }).await;
    assert!(rig.drain().iter().all(|e| e.event.alert.is_none()));
    advance(Duration::from_secs(31)).await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter().find_map(|e| e.event.alert.clone()).unwrap().kind,
        AlertKind::DoorHeldOpen
    );
    assert!(
        rig.lock.is_locked(),
        "re-locked after the pulse even with the door open"
    );
    rig.stop().await;
}

fn attempt(live: bool, verdict: Verdict, user: Option<(&User, Role)>) -> Input {
    attempt_pad(live, verdict, user, PadVerdict::Live)
}

fn attempt_pad(
    live: bool,
    verdict: Verdict,
    user: Option<(&User, Role)>,
    pad: PadVerdict,
) -> Input {
    Input::Face(Box::new(Attempt {
        track: 1,
        frame: 30,
        at_s: 1.0,
        live,
        blinks: live as u32,
        blink_frame: live.then_some(29),
        frames_after_blink: live.then_some(1),
        result: MatchResult {
            verdict,
            best_index: Some(0),
            best_user: user.map(|u| u.0.name.clone()),
            distance: Some(0.3),
            second_user: None,
            second_distance: None,
            normalized_margin: None,
            probes: 3,
            model: crate::types::EmbeddingModel::Sface,
        },
        user_id: user.map(|u| u.0.id),
        role: user.map(|u| u.1),
        enabled: user.map(|_| true),
        presentation_attack: PadSummary {
            frames_scored: 4,
            frames_live: if pad == PadVerdict::Live { 4 } else { 0 },
            verdict: pad,
            median: None,
        },
        challenge: None,
        upgrade: vec![],
        eyes_gated: false,
    }))
}

/// The pipeline's prompt is shown for its whole window and said on the bus; the
/// attempt it held back is granted only when answered.
#[tokio::test(start_paused = true)]
async fn a_challenge_prompt_is_shown_for_its_window_and_only_an_answer_opens() {
    use crate::vision::challenge::{Outcome, Prompt};
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let alice = db.add_user("alice", Role::User).unwrap();
    let mut rig = Rig::start(db, AccessConfig::default());
    let shown = |rig: &Rig| rig.display.0.lock().unwrap().0.clone();
    rig.send(Input::Challenge {
        prompt: Prompt::BlinkTwice,
        window_s: 6.0,
    })
    .await;
    let ev = rig.drain();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].event.event, EventKind::Challenge);
    assert_eq!(ev[0].event.reason.as_deref(), Some("blink_twice"));
    assert!(shown(&rig).starts_with("Blink twice"), "{:?}", shown(&rig));
    advance(Duration::from_secs(5)).await;
    assert!(shown(&rig).starts_with("Blink twice"), "still up at 5 s");
    let answered = |passed| {
        let Input::Face(mut a) = attempt(true, Verdict::Match, Some((&alice, Role::User))) else {
            unreachable!()
        };
        a.challenge = Some(Outcome {
            prompt: Prompt::BlinkTwice,
            passed,
            after_s: 5.0,
        });
        Input::Face(a)
    };
    rig.send(answered(false)).await;
    let ev = rig.drain();
    let deny = ev
        .iter()
        .find(|e| e.event.event == EventKind::Deny)
        .unwrap();
    assert_eq!(deny.event.reason.as_deref(), Some("challenge_failed"));
    assert_eq!(deny.event.detail["challenge"]["passed"], false);
    assert!(rig.lock.is_locked());
    rig.send(answered(true)).await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_replayed_face_that_blinks_and_matches_is_denied_as_a_spoof_with_an_alert() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let alice = db.add_user("alice", Role::User).unwrap();
    let mut rig = Rig::start(db, AccessConfig::default());
    let alice_on_a_screen = || {
        attempt_pad(
            true,
            Verdict::Match,
            Some((&alice, Role::User)),
            PadVerdict::Attack,
        )
    };
    rig.send(alice_on_a_screen()).await;
    let ev = rig.drain();
    let deny = ev
        .iter()
        .find(|e| e.event.event == EventKind::Deny)
        .unwrap();
    assert_eq!(deny.event.reason.as_deref(), Some("spoof"));
    let alert = ev.iter().find_map(|e| e.event.alert.clone()).unwrap();
    assert_eq!(alert.kind, AlertKind::PresentationAttack);
    assert!(!ev.iter().any(|e| e.event.event == EventKind::Unlock));
    assert!(rig.lock.is_locked());
    // Too few frames to tell: no grant, no alert.
    rig.send(attempt_pad(
        true,
        Verdict::Match,
        Some((&alice, Role::User)),
        PadVerdict::Unknown,
    ))
    .await;
    let ev = rig.drain();
    let deny = ev
        .iter()
        .find(|e| e.event.event == EventKind::Deny)
        .unwrap();
    assert_eq!(deny.event.reason.as_deref(), Some("pad_unsure"));
    assert!(!ev
        .iter()
        .any(|e| e.event.alert.is_some() || e.event.event == EventKind::Unlock));
    assert!(rig.lock.is_locked());
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn faces_grant_deny_alert_and_rate_limit() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let alice = db.add_user("alice", Role::User).unwrap();
    let eve = db.add_user("eve", Role::Banned).unwrap();
    let mut rig = Rig::start(db, AccessConfig::default());
    rig.send(attempt(true, Verdict::Match, Some((&alice, Role::User))))
        .await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    advance(Duration::from_secs(6)).await;
    rig.drain();
    // A photo of alice (no blink): denied.
    rig.send(attempt(false, Verdict::Match, Some((&alice, Role::User))))
        .await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter()
            .find(|e| e.event.event == EventKind::Deny)
            .unwrap()
            .event
            .reason
            .as_deref(),
        Some("no_blink")
    );
    assert!(rig.lock.is_locked());
    // A banned user: denied with an alert.
    rig.send(attempt(true, Verdict::Match, Some((&eve, Role::Banned))))
        .await;
    let ev = rig.drain();
    assert_eq!(
        ev.iter().find_map(|e| e.event.alert.clone()).unwrap().kind,
        AlertKind::BannedUser
    );
    // Strangers: after 5 failed live faces in a minute, faces are ignored for 30 s.
    for _ in 0..4 {
        rig.send(attempt(true, Verdict::NoMatch, None)).await;
    }
    let ev = rig.drain();
    assert_eq!(
        ev.iter().find_map(|e| e.event.alert.clone()).unwrap().kind,
        AlertKind::FaceRateLimited
    );
    rig.send(attempt(true, Verdict::Match, Some((&alice, Role::User))))
        .await;
    assert_eq!(rig.kinds(), vec![EventKind::Ignored]);
    advance(Duration::from_secs(31)).await;
    rig.drain();
    rig.send(attempt(true, Verdict::Match, Some((&alice, Role::User))))
        .await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fleet_users_face_opens_only_while_the_directory_is_current() {
    use crate::api::{FleetGate, FleetLink, FleetState};
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let alice = db.add_user("alice", Role::User).unwrap();
    let bob = db.add_user("bob", Role::User).unwrap();
    db.fleet_set_version("bob", 5, "ada", true).unwrap();
    let at = |link, last| FleetLink {
        link,
        last_synced_ms: last,
    };
    let (link, rx) = tokio::sync::watch::channel(at(FleetState::Synced, Some(BASE_MS)));
    let gate = FleetGate {
        link: rx,
        offline_after_ms: 60_000,
    };
    let mut rig = Rig::start_gated(db, AccessConfig::default(), Some(gate));
    let deny_reason = |ev: &[Timed]| {
        ev.iter()
            .find(|e| e.event.event == EventKind::Deny)
            .and_then(|e| e.event.reason.clone())
    };
    for (state, last, fleet_user_opens, reason) in [
        (FleetState::Synced, Some(BASE_MS), true, None),
        // Offline within the grace: still current enough.
        (FleetState::Offline, Some(BASE_MS), true, None),
        // Longer than the grace, or never synced since the start: cut off.
        (
            FleetState::Offline,
            Some(BASE_MS - 61_000),
            false,
            Some("fleet_cut_off"),
        ),
        (FleetState::Offline, None, false, Some("fleet_cut_off")),
        // Just reconnected, applying what changed: not yet.
        (
            FleetState::Syncing,
            Some(BASE_MS),
            false,
            Some("fleet_syncing"),
        ),
    ] {
        link.send(at(state, last)).unwrap();
        rig.send(attempt(true, Verdict::Match, Some((&bob, Role::User))))
            .await;
        let ev = rig.drain();
        let opened = ev.iter().any(|e| e.event.event == EventKind::Unlock);
        assert_eq!(opened, fleet_user_opens, "{state:?} {last:?}");
        assert_eq!(deny_reason(&ev).as_deref(), reason, "{state:?} {last:?}");
        if !opened {
            assert!(rig.lock.is_locked());
            assert_eq!(rig.display.0.lock().unwrap().0, "Fleet offline");
        }
        // A local user opens whatever the fleet's state.
        advance(Duration::from_secs(6)).await;
        rig.drain();
        rig.send(attempt(true, Verdict::Match, Some((&alice, Role::User))))
            .await;
        assert!(rig.kinds().contains(&EventKind::Unlock), "{state:?}");
        advance(Duration::from_secs(6)).await;
        rig.drain();
    }
    // The idle screen says when the fleet is cut off, and stops saying it when it is back.
    let shown = |rig: &Rig| rig.display.0.lock().unwrap().clone();
    link.send(at(FleetState::Offline, None)).unwrap();
    rig.send(Input::Tick).await;
    assert_eq!(
        shown(&rig),
        ("Fleet offline".to_string(), "Codes still work".to_string())
    );
    link.send(at(FleetState::Synced, Some(BASE_MS))).unwrap();
    rig.send(Input::Tick).await;
    assert_eq!(shown(&rig).0, "Look and blink");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn store_failure_on_the_way_to_a_grant_keeps_the_lock_locked() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let alice = db.add_user("alice", Role::User).unwrap();
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    rig.fail.store(true, Ordering::SeqCst);
    rig.send(attempt(true, Verdict::Match, Some((&alice, Role::User))))
        .await;
    let ev = rig.drain();
    assert!(rig.lock.is_locked());
    assert!(ev
        .iter()
        .any(|e| e.event.reason.as_deref() == Some("fault")));
    rig.keys(&c.keys).await;
    assert!(rig.lock.is_locked(), "cannot check the code: stays locked");
    // The failed check did not burn the code or count a strike.
    rig.fail.store(false, Ordering::SeqCst);
    rig.keys(&c.keys).await;
    assert!(rig.kinds().contains(&EventKind::Unlock));
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn relay_failure_is_an_alert_and_relock_is_retried() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 86_400, BASE_MS);
    let c2 = issue(&mut db, None, 86_400, BASE_MS);
    let mut rig = Rig::start(db, AccessConfig::default());
    rig.lock.fail.store(true, Ordering::SeqCst);
    rig.keys(&c.keys).await;
    let ev = rig.drain();
    assert!(rig.lock.is_locked());
    assert_eq!(
        ev.iter().find_map(|e| e.event.alert.clone()).unwrap().kind,
        AlertKind::Fault
    );
    rig.lock.fail.store(false, Ordering::SeqCst);
    rig.keys(&c2.keys).await;
    assert!(!rig.lock.is_locked());
    rig.lock.fail.store(true, Ordering::SeqCst);
    advance(Duration::from_secs(6)).await;
    let ev = rig.drain();
    assert!(ev.iter().any(|e| e
        .event
        .alert
        .as_ref()
        .is_some_and(|a| a.kind == AlertKind::Fault)));
    rig.lock.fail.store(false, Ordering::SeqCst);
    advance(Duration::from_millis(600)).await;
    assert!(rig.lock.is_locked(), "re-lock retried until it worked");
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_admin_let_in_clears_the_keypad_lockout_a_user_does_not() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let admin = db.add_user("ada", Role::Admin).unwrap();
    let user = db.add_user("bob", Role::User).unwrap();
    let for_user = issue(&mut db, Some(&user), 86_400, BASE_MS);
    let for_admin = issue(&mut db, Some(&admin), 86_400, BASE_MS);
    let bad = wrong_code_keys(&for_user);
    let mut rig = Rig::start(db, AccessConfig::default());
    for _ in 0..3 {
        rig.keys(&bad).await;
    }
    assert!(rig.kinds().contains(&EventKind::Lockout));
    // After the 2 minutes the level stays: a plain user's grant leaves it.
    advance(Duration::from_secs(125)).await;
    rig.keys(&for_user.keys).await;
    let kinds = rig.kinds();
    assert!(kinds.contains(&EventKind::Unlock), "{kinds:?}");
    assert!(!kinds.contains(&EventKind::LockoutReset), "{kinds:?}");
    advance(Duration::from_secs(10)).await;
    // The admin's grant clears it, audited as done at the door.
    rig.keys(&for_admin.keys).await;
    let ev = rig.drain();
    assert!(ev.iter().any(|e| e.event.event == EventKind::Unlock));
    let reset = ev
        .iter()
        .find(|e| e.event.event == EventKind::LockoutReset)
        .expect("lockout reset");
    assert_eq!(reset.event.detail["by"], "ada at the door");
    let db = rig.stop().await;
    assert_eq!(db.lockout_load().unwrap(), Default::default());
}

// ----- wall-clock jumps (#11) ---------------------------------------------------------

/// The controller alone, driven with explicit wall-clock times.
fn bare(db: Db) -> (Controller<Db>, Arc<SimLockState>) {
    let (devices, kit) = sim::devices();
    let (ctl, _) = Controller::new(AccessConfig::default(), db, devices, BASE_MS).unwrap();
    (ctl, kit.lock)
}

fn admin_unlock() -> Input {
    Input::Admin {
        request: AdminRequest::Unlock {
            by: "test".into(),
            via: Method::Admin,
            reason: "test".into(),
        },
        reply: None,
    }
}

#[test]
fn a_clock_set_back_during_a_pulse_does_not_hold_the_lock_open() {
    let (_d, p) = temp();
    let (mut ctl, lock) = bare(open_db(&p));
    let pulse = (AccessConfig::default().unlock_pulse_s * 1000.0) as i64;
    ctl.handle(BASE_MS, admin_unlock());
    assert!(!lock.is_locked());
    ctl.handle(BASE_MS + 1000, Input::Tick);
    // Then NTP (or an admin) sets the clock back an hour.
    let back = BASE_MS + 1000 - 3_600_000;
    let ev = ctl.handle(back, Input::Tick);
    assert!(ev
        .iter()
        .any(|e| e.alert.as_ref().is_some_and(|a| a.kind == AlertKind::Fault)));
    assert!(!lock.is_locked(), "the pulse goes on");
    // The pulse keeps its remaining length (4 s), not the hour.
    assert!(ctl.next_deadline().unwrap() <= back + pulse - 1000);
    ctl.handle(back + pulse - 1001, Input::Tick);
    assert!(!lock.is_locked());
    ctl.handle(back + pulse - 1000, Input::Tick);
    assert!(
        lock.is_locked(),
        "re-locked when the pulse would have ended"
    );
    // A jump forward ends the pulse at once (early re-lock is the safe side).
    ctl.handle(back + 10_000, admin_unlock());
    assert!(!lock.is_locked());
    ctl.handle(back + 10_000 + 86_400_000, Input::Tick);
    assert!(lock.is_locked());
}

#[test]
fn a_clock_set_back_never_stretches_a_lockout_or_a_code() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let c = issue(&mut db, None, 600, BASE_MS);
    let bad = wrong_code_keys(&c);
    let (mut ctl, lock) = bare(db);
    let type_keys = |ctl: &mut Controller<Db>, now: i64, keys: &str| {
        let mut ev = Vec::new();
        for k in keys.chars() {
            ev.extend(ctl.handle(now, Input::Key(k)));
        }
        ev
    };
    for _ in 0..3 {
        type_keys(&mut ctl, BASE_MS, &bad);
    }
    assert!(ctl.lockout().until_ms > BASE_MS, "locked for two minutes");
    // The clock goes back a day: the lockout still ends two minutes after it began.
    let back = BASE_MS - 86_400_000;
    ctl.handle(back, Input::Tick);
    assert_eq!(ctl.lockout().until_ms, back + 120_000);
    ctl.handle(back + 119_999, Input::Tick);
    assert!(ctl.lockout().until_ms > 0);
    ctl.handle(back + 120_000, Input::Tick);
    assert_eq!(ctl.lockout().until_ms, 0, "over after its own length");
    // The code was issued "tomorrow" as the clock now reads: it does not open.
    let ev = type_keys(&mut ctl, back + 130_000, &c.keys);
    assert!(ev.iter().any(|e| e.event == EventKind::Deny), "{ev:?}");
    assert!(lock.is_locked());
    // Once the clock is right again the code works (it was never used).
    let ev = type_keys(&mut ctl, BASE_MS + 60_000, &c.keys);
    assert!(ev.iter().any(|e| e.event == EventKind::Unlock), "{ev:?}");
}

#[test]
fn a_lockout_saved_under_a_later_clock_is_cut_to_its_length_on_start() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    // Saved at a time ten years ahead of the clock the daemon now boots with.
    db.lockout_save(&crate::store::LockoutState {
        strikes: 0,
        level: 1,
        until_ms: BASE_MS + 10 * 365 * 86_400_000,
    })
    .unwrap();
    let (ctl, _) = bare(db);
    assert_eq!(ctl.lockout().until_ms, BASE_MS + 120_000);
    assert_eq!(ctl.lockout().level, 1, "the escalation level is kept");
}

#[test]
fn a_totp_code_used_before_the_clock_went_back_is_not_accepted_again() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let cfg = AccessConfig::default();
    let (en, secret) = alice_with_totp(&mut db, &cfg);
    let (mut ctl, _lock) = bare(db);
    let keys = format!(
        "{}#4821{}#",
        en.keypad_no,
        otp::totp_code(&secret, otp::totp_step(BASE_MS / 1000))
    );
    let mut run = |now: i64| {
        let mut ev = Vec::new();
        for k in keys.chars() {
            ev.extend(ctl.handle(now, Input::Key(k)));
        }
        ev
    };
    assert!(run(BASE_MS).iter().any(|e| e.event == EventKind::Unlock));
    // An hour back and forward to the same 30 s step: the seen code stays used.
    let ev = run(BASE_MS - 3_600_000);
    assert!(ev.iter().all(|e| e.event != EventKind::Unlock), "{ev:?}");
    let ev = run(BASE_MS + 5_000);
    assert!(ev.iter().all(|e| e.event != EventKind::Unlock), "{ev:?}");
}

// ----- a credential from Home Assistant (#8) ------------------------------------------

fn remote(
    keys: &str,
) -> (
    Input,
    tokio::sync::oneshot::Receiver<Result<String, ApiError>>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let i = Input::Credential {
        keys: keys.trim_end_matches('#').to_owned(),
        via: Method::Ha,
        reply: Some(tx),
    };
    (i, rx)
}

#[test]
fn a_remote_credential_is_a_keypad_entry_audited_as_its_channel() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let good = issue(&mut db, None, 600, BASE_MS);
    let other = issue(&mut db, None, 600, BASE_MS);
    let bad = wrong_code_keys(&other);
    let (mut ctl, lock) = bare(db);
    // Wrong codes are strikes, shared with the keypad: three lock it out.
    for i in 0..3 {
        let (input, mut rx) = remote(&bad);
        let ev = ctl.handle(BASE_MS + i, input);
        assert!(matches!(rx.try_recv(), Ok(Err(ApiError::NotAuthorized(_)))));
        assert!(ev
            .iter()
            .any(|e| e.event == EventKind::Deny && e.method == Some(Method::Ha)));
    }
    assert!(lock.is_locked());
    let (input, mut rx) = remote(&good.keys);
    ctl.handle(BASE_MS + 10, input);
    assert!(
        matches!(rx.try_recv(), Ok(Err(ApiError::Busy(_)))),
        "refused while locked out"
    );
    assert!(lock.is_locked());
    // After the lockout the right code opens, once, audited as `ha`.
    let later = BASE_MS + 121_000;
    let (input, mut rx) = remote(&good.keys);
    let ev = ctl.handle(later, input);
    assert!(matches!(rx.try_recv(), Ok(Ok(_))));
    assert!(!lock.is_locked());
    let unlock = ev.iter().find(|e| e.event == EventKind::Unlock).unwrap();
    assert_eq!(unlock.method, Some(Method::Ha));
    assert_eq!(unlock.reason.as_deref(), Some("one_time_code"));
    let (input, mut rx) = remote(&good.keys);
    ctl.handle(later + 100, input);
    assert!(matches!(rx.try_recv(), Ok(Err(_))), "single use");
}

/// With an outbox, every event the controller sends is queued by the controller, once,
/// in order, each audited one with its audit row; none is left for the bus to queue.
#[test]
fn each_event_is_queued_once_in_order_with_its_audit_row() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let good = issue(&mut db, None, 600, BASE_MS);
    let bad = wrong_code_keys(&issue(&mut db, None, 600, BASE_MS));
    let (mut ctl, _lock) = bare(db);
    ctl.set_outbox(Some(1000));
    let mut sent = Vec::new();
    let mut type_keys = |ctl: &mut Controller<Db>, keys: &str, now: i64| {
        for k in keys.chars() {
            sent.extend(ctl.handle(now, Input::Key(k)));
        }
    };
    for i in 0..3 {
        type_keys(&mut ctl, &bad, BASE_MS + i);
    }
    type_keys(&mut ctl, &good.keys, BASE_MS + 121_000);
    sent.extend(ctl.handle(BASE_MS + 121_500, Input::Door { open: true }));
    sent.extend(ctl.handle(BASE_MS + 125_000, Input::Door { open: false }));
    sent.extend(ctl.handle(BASE_MS + 200_000, Input::Tick));
    let kinds: Vec<EventKind> = sent.iter().map(|e| e.event).collect();
    for k in [
        EventKind::Deny,
        EventKind::Lockout,
        EventKind::Alert,
        EventKind::Unlock,
        EventKind::DoorClosed,
        EventKind::Relock,
    ] {
        assert!(kinds.contains(&k), "{k:?} in {kinds:?}");
    }
    assert!(sent.iter().all(|e| e.queued), "{sent:?}");
    let db = ctl.into_store();
    let rows = db.outbox_after(0, 1000).unwrap();
    let queued: Vec<String> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect();
    let want: Vec<String> = sent
        .iter()
        .map(|e| {
            serde_json::to_value(e).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        queued, want,
        "the outbox holds what was sent, in order, once"
    );
    // Every audited outcome has its event: denials, the alert and the grant.
    let audit = db.audit_list(0, 100).unwrap();
    let denials = audit.iter().filter(|r| r.outcome == "deny").count();
    assert_eq!(
        denials,
        kinds.iter().filter(|k| **k == EventKind::Deny).count()
    );
    // Reasons in one style: the alert's row names its kind as the event does.
    let alert = audit
        .iter()
        .find(|r| r.outcome == "alert")
        .expect("alert row");
    assert_eq!(alert.reason, AlertKind::KeypadLockout.as_str(), "{alert:?}");
    assert!(audit
        .iter()
        .all(|r| r.reason.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}

/// The event and its audit row are kept or lost together: when the outbox cannot be
/// written, the grant's audit row is rolled back with it and the lock stays locked.
#[test]
fn an_outbox_that_cannot_be_written_fails_the_grant_closed() {
    let (_d, p) = temp();
    let mut db = open_db(&p);
    let good = issue(&mut db, None, 600, BASE_MS);
    db.conn()
        .execute_batch(
            "CREATE TEMP TRIGGER full BEFORE INSERT ON outbox
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
    let grants_before = grants(&db);
    let (mut ctl, lock) = bare(db);
    ctl.set_outbox(Some(1000));
    let mut ev = Vec::new();
    for k in good.keys.chars() {
        ev.extend(ctl.handle(BASE_MS, Input::Key(k)));
    }
    assert!(lock.is_locked());
    assert!(ev.iter().all(|e| e.event != EventKind::Unlock), "{ev:?}");
    assert!(ev.iter().any(|e| e.reason.as_deref() == Some("fault")));
    let db = ctl.into_store();
    assert_eq!(grants(&db), grants_before, "no grant row without its event");
}

fn grants(db: &Db) -> usize {
    db.audit_list(0, 1000)
        .unwrap()
        .iter()
        .filter(|r| r.outcome == "grant")
        .count()
}
