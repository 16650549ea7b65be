//! Runs the [`Controller`] as one task: inputs arrive on a channel, deadlines come from
//! the controller, events go out on a broadcast channel (the seam for D-Bus and MQTT;
//! alerts are events with `event = alert`). On shutdown the lock is locked.
//!
//! Also the input thread that polls the keypad matrix and the door contact and turns
//! them into [`Input`]s.

use super::controller::{Controller, DbAccess, Input, Snapshot};
use crate::api::event::{Event, EventBus, Timed};
use crate::hw::InputDevices;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Wall-clock milliseconds as the controller sees them.
pub trait Clock: Send {
    fn now_ms(&self) -> i64;
}

/// The real clock.
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> i64 {
        crate::types::now_ms()
    }
}

/// A clock that follows tokio's (possibly paused) time from a fixed start: tests and the
/// simulator run the controller on virtual time with it.
pub struct TokioClock {
    pub base_ms: i64,
    pub start: tokio::time::Instant,
}

impl TokioClock {
    pub fn starting_at(base_ms: i64) -> Self {
        Self {
            base_ms,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now_ms(&self) -> i64 {
        self.base_ms + self.start.elapsed().as_millis() as i64
    }
}

/// Drive the controller until `shutdown` resolves or every input sender is gone.
/// After every input the controller's [`Snapshot`] goes to `state` (when it changed).
pub async fn run<S: DbAccess>(
    mut ctl: Controller<S>,
    clock: impl Clock,
    mut inputs: mpsc::Receiver<Input>,
    events: EventBus,
    state: watch::Sender<Snapshot>,
    shutdown: impl Future<Output = ()>,
) -> Controller<S> {
    tokio::pin!(shutdown);
    let publish = |evs: Vec<Event>, at_ms: i64, ctl: &Controller<S>| {
        // Events are secret-free by construction (see `api::event`).
        let batch: Vec<Timed> = evs
            .into_iter()
            .map(|event| Timed { at_ms, event })
            .collect();
        for t in &batch {
            log::info!("{}", serde_json::to_string(t).unwrap_or_default());
        }
        if !batch.is_empty() {
            events.send_all(batch);
        }
        let snap = ctl.snapshot();
        state.send_if_modified(|s| {
            let changed = *s != snap;
            *s = snap;
            changed
        });
    };
    publish(Vec::new(), clock.now_ms(), &ctl);
    loop {
        let now = clock.now_ms();
        let wait = ctl
            .next_deadline()
            .map(|d| Duration::from_millis((d - now).max(0) as u64));
        let sleep = async {
            match wait {
                Some(w) => tokio::time::sleep(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            msg = inputs.recv() => match msg {
                Some(input) => {
                    let now = clock.now_ms();
                    let evs = ctl.handle(now, input);
                    publish(evs, now, &ctl);
                }
                None => break,
            },
            _ = sleep => {
                let now = clock.now_ms();
                let evs = ctl.handle(now, Input::Tick);
                publish(evs, now, &ctl);
            }
        }
    }
    ctl.lock_now();
    let snap = ctl.snapshot();
    state.send_replace(snap);
    ctl
}

/// Poll the keypad every `scan` and the door every 10 scans until `stop`; send keys and
/// door changes to the controller. Hardware errors are logged (once per kind of error)
/// and polling goes on.
pub fn poll_inputs(
    mut dev: InputDevices,
    tx: mpsc::Sender<Input>,
    stop: Arc<AtomicBool>,
    scan: Duration,
) {
    let mut door: Option<bool> = None;
    let mut last_err = String::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let mut report = |e: crate::hw::HwError| {
            let s = e.to_string();
            if s != last_err {
                log::error!("input device: {s}");
                last_err = s;
            }
        };
        match dev.keypad.scan() {
            Ok(Some(k)) => {
                if tx.blocking_send(Input::Key(k)).is_err() {
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => report(e),
        }
        if n % 10 == 0 {
            match dev.door.is_open() {
                Ok(open) if door != Some(open) => {
                    door = Some(open);
                    if tx.blocking_send(Input::Door { open }).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => report(e),
            }
        }
        n += 1;
        std::thread::sleep(scan);
    }
}
