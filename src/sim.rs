//! `lockerd-lab simulate`: the whole local appliance on virtual time. The real access
//! controller (through its driver task), simulated lock, door, display and indicator, a
//! temporary encrypted store on its thread, the real vision pipeline on replayed clips,
//! and the request API: every admin step is a [`Request`] from the simulator caller, so
//! it behaves exactly as it would over D-Bus. A scenario of timed inputs drives it and
//! every resulting (secret-free) event comes out as a JSON line.
//!
//! Scenario: JSON lines, each `{"at_s": T, ...}` with exactly one of
//! `"keys": "12#345678#"`, `"clip": "path.mp4"`, `"door": "open"|"closed"`, or
//! `"admin": "user_add"|"enroll"|"otp_issue"|"lockout_reset"|"ban"|"unlock"` (with
//! `"user"`, `"role"`, `"from": [paths]`, `"ttl_s"` as the action needs). In `keys`,
//! `{otp}` is the full key sequence of the last issued one-time code and `{bad_otp}` the
//! same with a wrong code. Paths are relative to the scenario file. Blank lines and
//! lines starting with `#` are skipped.

use crate::access::controller::{Controller, Input, Snapshot};
use crate::access::credentials::code_keys;
use crate::access::driver::{self, TokioClock};
use crate::api::{ApiError, Caller, EnrollSource, Request, Response};
use crate::config::Config;
use crate::service::{ApiHandle, Backends, ControllerLink, Service};
use crate::store::{Create, DbKey, Store, StoreError};
use crate::types::Role;
use crate::vision::pipeline::FaceEvent;
use crate::vision::runner::VisionShared;
use crate::vision::{source::open_path, VisionError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("{file}:{line}: {message}")]
    Scenario {
        file: String,
        line: usize,
        message: String,
    },
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error("at {at_s} s: {message}")]
    Step { at_s: f64, message: String },
    #[error(transparent)]
    Api(#[from] ApiError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_s: f64,
    keys: Option<String>,
    clip: Option<PathBuf>,
    door: Option<String>,
    admin: Option<String>,
    user: Option<String>,
    role: Option<String>,
    from: Option<Vec<PathBuf>>,
    ttl_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Keys(String),
    Clip(PathBuf),
    Door(bool),
    UserAdd {
        user: String,
        role: Role,
    },
    Enroll {
        user: String,
        from: Vec<PathBuf>,
    },
    OtpIssue {
        user: Option<String>,
        ttl_s: Option<u64>,
    },
    LockoutReset,
    Ban {
        user: String,
    },
    Unlock,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at_s: f64,
    pub line: usize,
    pub action: Action,
}

/// Parse a scenario; every error names the file and line.
pub fn parse(text: &str, file: &Path) -> Result<Vec<Step>, SimError> {
    let base = file.parent().unwrap_or(Path::new("."));
    let fname = file.display().to_string();
    let mut steps = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let err = |m: String| SimError::Scenario {
            file: fname.clone(),
            line: line_no,
            message: m,
        };
        let raw: RawStep = serde_json::from_str(t).map_err(|e| err(e.to_string()))?;
        if !raw.at_s.is_finite() || raw.at_s < 0.0 || raw.at_s > 86_400.0 {
            return Err(err(format!("at_s = {} must be 0 to 86400", raw.at_s)));
        }
        let given = [
            raw.keys.is_some(),
            raw.clip.is_some(),
            raw.door.is_some(),
            raw.admin.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if given != 1 {
            return Err(err(
                "each line needs exactly one of keys, clip, door, admin".into(),
            ));
        }
        let resolve = |p: &PathBuf| -> Result<PathBuf, SimError> {
            let full = if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            };
            if full.exists() {
                Ok(full)
            } else {
                Err(err(format!("{}: no such file", full.display())))
            }
        };
        let need_user = || {
            raw.user
                .clone()
                .ok_or_else(|| err("this admin action needs \"user\"".into()))
        };
        let action = if let Some(k) = &raw.keys {
            let stripped = k.replace("{otp}", "").replace("{bad_otp}", "");
            if let Some(c) = stripped.chars().find(|c| !"0123456789ABCD*#".contains(*c)) {
                return Err(err(format!(
                    "key {c:?} is not on a 4x4 keypad (0-9 A-D * #)"
                )));
            }
            Action::Keys(k.clone())
        } else if let Some(c) = &raw.clip {
            Action::Clip(resolve(c)?)
        } else if let Some(d) = &raw.door {
            match d.as_str() {
                "open" => Action::Door(true),
                "closed" | "close" => Action::Door(false),
                other => {
                    return Err(err(format!(
                        "door must be \"open\" or \"closed\", not {other:?}"
                    )))
                }
            }
        } else {
            match raw.admin.as_deref().unwrap_or_default() {
                "user_add" => Action::UserAdd {
                    user: need_user()?,
                    role: match raw.role.as_deref().unwrap_or("user") {
                        "user" => Role::User,
                        "admin" => Role::Admin,
                        other => return Err(err(format!("role must be user or admin, not {other:?}"))),
                    },
                },
                "enroll" => Action::Enroll {
                    user: need_user()?,
                    from: raw
                        .from
                        .as_ref()
                        .ok_or_else(|| err("enroll needs \"from\": [paths]".into()))?
                        .iter()
                        .map(&resolve)
                        .collect::<Result<_, _>>()?,
                },
                "otp_issue" => Action::OtpIssue {
                    user: raw.user.clone(),
                    ttl_s: raw.ttl_s,
                },
                "lockout_reset" => Action::LockoutReset,
                "ban" => Action::Ban { user: need_user()? },
                "unlock" => Action::Unlock,
                other => return Err(err(format!("unknown admin action {other:?} (user_add, enroll, otp_issue, lockout_reset, ban, unlock)"))),
            }
        };
        steps.push(Step {
            at_s: raw.at_s,
            line: line_no,
            action,
        });
    }
    steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(steps)
}

/// One line of simulator output.
#[derive(Debug, Clone, Serialize)]
pub struct OutLine {
    pub at_s: f64,
    #[serde(flatten)]
    pub body: serde_json::Value,
}

#[derive(Clone)]
pub struct SimOptions {
    /// Virtual seconds between two key presses.
    pub key_spacing_s: f64,
    /// Virtual seconds to keep running after the last step (re-locks, alarms).
    pub tail_s: f64,
    /// Start from a copy of this store (opened with this key; migrated as the daemon
    /// would) instead of an empty one. The store itself is never written.
    pub from_store: Option<(PathBuf, DbKey)>,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            key_spacing_s: 0.15,
            tail_s: 10.0,
            from_store: None,
        }
    }
}

/// Copy a store (with its `-wal` file, if any) into `dir`; the copy's path.
fn copy_store(src: &Path, dir: &Path) -> Result<PathBuf, SimError> {
    let dst = dir.join("sim.db");
    std::fs::copy(src, &dst).map_err(|e| SimError::Read(src.to_owned(), e))?;
    let mut wal = src.as_os_str().to_owned();
    wal.push("-wal");
    let wal = PathBuf::from(wal);
    if wal.is_file() {
        std::fs::copy(&wal, dir.join("sim.db-wal")).map_err(|e| SimError::Read(wal, e))?;
    }
    Ok(dst)
}

const BASE_MS: i64 = 1_800_000_000_000;

/// Run a scenario. `out` gets every line as it happens (in virtual-time order).
pub fn run(
    steps: Vec<Step>,
    config: &Config,
    opts: &SimOptions,
    mut out: impl FnMut(OutLine),
) -> Result<(), SimError> {
    let dir = tempfile::tempdir().map_err(|e| SimError::Read(std::env::temp_dir(), e))?;
    let (path, key, create) = match &opts.from_store {
        Some((src, key)) => (copy_store(src, dir.path())?, key.clone(), Create::MustExist),
        None => (
            dir.path().join("sim.db"),
            DbKey::generate(),
            Create::MustBeNew,
        ),
    };
    let (db, _) = crate::store::Db::open(&path, &key, create, Duration::from_secs(5))?;
    // Inline: virtual time must not move while a store call is under way.
    let store = Store::inline(db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| SimError::Read(PathBuf::from("tokio runtime"), e))?;
    let lines: Arc<Mutex<Vec<OutLine>>> = Arc::default();
    let result = rt.block_on(async {
        let (devices, _kit) = crate::hw::sim::devices();
        let clock = TokioClock::starting_at(BASE_MS);
        let (ctl, _) = Controller::new(config.access.clone(), store.clone(), devices, BASE_MS)?;
        let (tx, inputs) = mpsc::channel::<Input>(256);
        let etx = crate::api::event::EventBus::new(4096);
        let mut erx = etx.subscribe();
        let (state_tx, state_rx) = tokio::sync::watch::channel(Snapshot::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let driver = tokio::spawn(driver::run(ctl, clock, inputs, etx.clone(), state_tx, async {
            let _ = stop_rx.await;
        }));
        let vision = VisionShared::lazy(&config.vision);
        let (api, api_task) = Service::start(
            config.service(),
            Backends {
                store: store.clone(),
                controller: Some(ControllerLink {
                    inputs: tx.clone(),
                    state: state_rx,
                }),
                vision: Some(vision.clone()),
                events: etx.clone(),
                clock: Arc::new(TokioClock::starting_at(BASE_MS)),
                fleet: None,
            },
        )
        .await?;
        if opts.from_store.is_some() {
            // The daemon matches against the store's users from the start.
            let g = store
                .call(|db| crate::service::load_gallery(db))
                .await?;
            vision.with_pipe(|p| p.set_gallery(g))?;
        }
        let me = Caller::simulator();
        let start = tokio::time::Instant::now();
        // Collect every event at the virtual time it happens.
        let l2 = lines.clone();
        let collector = tokio::spawn(async move {
            while let Ok(t) = erx.recv().await {
                let at_s = start.elapsed().as_secs_f64();
                let mut body = serde_json::to_value(&t.event).unwrap_or_default();
                if let Some(a) = &t.event.alert {
                    body["kind"] = serde_json::to_value(a.kind).unwrap_or_default();
                    body["message"] = a.message.clone().into();
                    if let Some(o) = body.as_object_mut() {
                        o.remove("alert");
                    }
                }
                l2.lock().unwrap_or_else(|p| p.into_inner()).push(OutLine { at_s, body });
            }
        });
        let at = |s: f64| start + Duration::from_secs_f64(s);
        let note = |lines: &Arc<Mutex<Vec<OutLine>>>, at_s: f64, body: serde_json::Value| {
            lines.lock().unwrap_or_else(|p| p.into_inner()).push(OutLine { at_s, body });
        };
        let mut last_code: Option<(u32, String)> = None;
        let mut last_at = 0.0f64;
        for step in steps {
            tokio::time::sleep_until(at(step.at_s)).await;
            settle().await;
            last_at = step.at_s;
            let step_err = |m: String| SimError::Step { at_s: step.at_s, message: m };
            match step.action {
                Action::Keys(k) => {
                    let keys = expand_keys(&k, last_code.as_ref()).map_err(step_err)?;
                    note(&lines, step.at_s, serde_json::json!({ "event": "keys", "count": keys.len() }));
                    for (i, c) in keys.chars().enumerate() {
                        if i > 0 {
                            tokio::time::sleep(Duration::from_secs_f64(opts.key_spacing_s)).await;
                        }
                        let _ = tx.send(Input::Key(c)).await;
                        settle().await;
                    }
                }
                Action::Door(open) => {
                    let _ = tx.send(Input::Door { open }).await;
                }
                Action::Clip(path) => {
                    // The pipeline runs now (virtual time stands still); its attempts are
                    // delivered at their frame times from the step's start.
                    let ClipRun {
                        inputs,
                        frames,
                        blinks,
                    } = clip_inputs(&vision, &path)?;
                    note(
                        &lines,
                        step.at_s,
                        serde_json::json!({ "event": "clip", "file": path.file_name().map(|f| f.to_string_lossy().into_owned()), "frames": frames, "live_blinks": blinks, "attempts": inputs.iter().filter(|i| matches!(i.1, Input::Face(_))).count() }),
                    );
                    // One task, so inputs at nearby times keep their order.
                    let timed: Vec<_> = inputs.into_iter().map(|(t, i)| (at(step.at_s + t), i)).collect();
                    let tx2 = tx.clone();
                    tokio::spawn(async move {
                        for (when, input) in timed {
                            tokio::time::sleep_until(when).await;
                            let _ = tx2.send(input).await;
                        }
                    });
                }
                Action::UserAdd { user, role } => {
                    api.call(&me, Request::UserAdd { name: user, role }).await?;
                }
                Action::Enroll { user, from } => {
                    // Models load now, so the gallery reaches the fresh pipeline.
                    vision.with_pipe(|_| ())?;
                    enroll_and_wait(&api, &me, user, from)
                        .await?
                        .map_err(step_err)?;
                    settle().await;
                }
                Action::Ban { user } => {
                    api.call(&me, Request::UserBan { name: user }).await?;
                }
                Action::OtpIssue { user, ttl_s } => {
                    match api.call(&me, Request::OtpIssue { user, ttl_s }).await? {
                        Response::Code(c) => {
                            // The code is in the reply only; the event has slot and expiry.
                            note(&lines, step.at_s, serde_json::json!({ "event": "code_reply", "slot": c.slot, "keys": c.keys }));
                            last_code = Some((c.slot, c.code));
                        }
                        other => return Err(step_err(format!("unexpected reply {other:?}"))),
                    }
                }
                Action::LockoutReset => {
                    api.call(&me, Request::LockoutReset).await?;
                }
                Action::Unlock => {
                    api.call(&me, Request::Unlock { reason: "scenario".into() }).await?;
                }
            }
            settle().await;
        }
        tokio::time::sleep_until(at(last_at + opts.tail_s)).await;
        settle().await;
        drop(api);
        api_task.abort();
        let _ = stop_tx.send(());
        let _ = driver.await;
        settle().await;
        collector.abort();
        Ok::<(), SimError>(())
    });
    store.close();
    let mut v = std::mem::take(&mut *lines.lock().unwrap_or_else(|p| p.into_inner()));
    v.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    for l in v {
        out(l);
    }
    result
}

/// A scenario's keys with `{otp}` (the last issued code, typed as the keypad wants it) and
/// `{bad_otp}` (the same with its first digit changed) filled in.
fn expand_keys(k: &str, last_code: Option<&(u32, String)>) -> Result<String, String> {
    if !k.contains("{otp}") && !k.contains("{bad_otp}") {
        return Ok(k.to_string());
    }
    let (slot, code) = last_code.ok_or_else(|| "{otp} used before any otp_issue".to_string())?;
    let bad: String = code
        .chars()
        .enumerate()
        .map(|(i, c)| match (i, c) {
            (0, '9') => '0',
            (0, c) => (c as u8 + 1) as char,
            (_, c) => c,
        })
        .collect();
    Ok(k.replace("{otp}", &code_keys(*slot, code))
        .replace("{bad_otp}", &code_keys(*slot, &bad)))
}

/// What the controller hears from a clip, at each input's media time, with the clip's
/// frame count and liveness-grade blinks. The pipeline runs now: virtual time stands
/// still meanwhile.
fn clip_inputs(vision: &VisionShared, path: &Path) -> Result<ClipRun, SimError> {
    let mut src = open_path(path)?;
    Ok(vision.with_pipe(|pipe| {
        let mut inputs: Vec<(f64, Input)> = Vec::new();
        let (mut frames, mut blinks) = (0u64, 0u32);
        let mut take = |evs: Vec<FaceEvent>| {
            for e in evs {
                match e {
                    FaceEvent::Attempt(a) => inputs.push((a.at_s, Input::Face(Box::new(a)))),
                    FaceEvent::Challenge {
                        at_s,
                        prompt,
                        window_s,
                        ..
                    } => inputs.push((at_s, Input::Challenge { prompt, window_s })),
                    FaceEvent::Blink { live: true, .. } => blinks += 1,
                    _ => {}
                }
            }
        };
        while let Some(f) = src.next_frame()? {
            frames += 1;
            take(pipe.process(&f)?);
        }
        take(pipe.finish());
        Ok::<_, VisionError>(ClipRun {
            inputs,
            frames,
            blinks,
        })
    })??)
}

/// A clip through the pipeline ([`clip_inputs`]).
struct ClipRun {
    /// What the controller hears, at each input's media time (s).
    inputs: Vec<(f64, Input)>,
    frames: u64,
    /// Liveness-grade blinks.
    blinks: u32,
}

/// Start an enrollment job through the API and wait for its end (virtual time stands
/// still while it runs). The outer error is the API's; the inner one the job's failure.
async fn enroll_and_wait(
    api: &ApiHandle,
    me: &Caller,
    user: String,
    from: Vec<PathBuf>,
) -> Result<Result<(), String>, SimError> {
    let mut events = api.subscribe();
    let request = Request::Enroll {
        user,
        source: EnrollSource::Files(from),
        allow_poor_photos: true,
    };
    let job = match api.call(me, request).await? {
        Response::EnrollStarted { job, .. } => job,
        other => return Ok(Err(format!("unexpected reply {other:?}"))),
    };
    loop {
        match events.recv().await {
            Ok(t) => {
                if let Some(p) = &t.event.enroll {
                    if p.job == job && p.done {
                        if p.status != crate::api::event::EnrollStatus::Completed {
                            return Ok(Err(p.message.clone()));
                        }
                        return Ok(Ok(()));
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return Ok(Err("the event channel closed".into())),
        }
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Vec<Step>, SimError> {
        parse(text, Path::new("/tmp/s.jsonl"))
    }

    #[test]
    fn parses_the_documented_lines_in_time_order() {
        let s = p(r#"{"at_s": 2.0, "door": "open"}
# comment
{"at_s": 1.0, "keys": "12#345678#"}
{"at_s": 4.0, "admin": "otp_issue", "user": "alice"}
{"at_s": 5.0, "admin": "lockout_reset"}
{"at_s": 6.0, "keys": "{otp}"}"#)
        .unwrap();
        assert_eq!(s[0].action, Action::Keys("12#345678#".into()));
        assert_eq!(s[1].action, Action::Door(true));
        assert_eq!(
            s[2].action,
            Action::OtpIssue {
                user: Some("alice".into()),
                ttl_s: None
            }
        );
        assert_eq!(s[3].action, Action::LockoutReset);
    }

    #[test]
    fn errors_name_the_line() {
        let e =
            p("{\"at_s\": 1.0, \"keys\": \"1\"}\n{\"at_s\": 2.0, \"door\": \"ajar\"}").unwrap_err();
        assert!(e.to_string().contains("s.jsonl:2:"), "{e}");
        let e = p("{\"at_s\": 1.0}").unwrap_err();
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = p("{\"at_s\": 1.0, \"keys\": \"12x\"}").unwrap_err();
        assert!(e.to_string().contains("not on a 4x4 keypad"), "{e}");
        let e = p("{\"at_s\": 1.0, \"clip\": \"missing.mp4\"}").unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
        let e = p("{\"at_s\": 1.0, \"admin\": \"reboot\"}").unwrap_err();
        assert!(e.to_string().contains("unknown admin action"), "{e}");
        let e = p("{\"at_s\": 1.0, \"keys\": \"1\", \"colour\": 3}").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = p("not json").unwrap_err();
        assert!(e.to_string().contains("s.jsonl:1:"), "{e}");
    }
}
