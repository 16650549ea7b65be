//! The daemon: `run(config, shutdown)` starts every part, tells systemd it is ready,
//! keeps the watchdog fed while the parts are healthy, and on shutdown stops them in
//! order and leaves the lock locked.
//!
//! Parts and channels: the store thread ([`Store`]); the access controller on its own
//! thread (its driver task, fed by an input channel, publishing secret-free events on a
//! broadcast channel and its state on a watch channel); the vision thread (camera or
//! replay) sending face attempts into the input channel; on a Pi, an input thread
//! polling the keypad and the door contact; the request API's serving task
//! ([`crate::service`]), through which the D-Bus service ([`crate::dbus`]) and
//! every other way in reach the parts. One daemon per database: an exclusive lock on
//! `<db>.lock` is held for the daemon's life.

use crate::access::controller::{Controller, Input, Snapshot};
use crate::access::driver::{self, WallClock};
use crate::api::{event::EventBus, Timed};
use crate::config::{Config, HardwareMode, LockKind, VisionSource};
use crate::hw::{self, HwError};
use crate::mqtt::lock::LockLink;
use crate::service::{self as api_service, Backends, ControllerLink, Service};
use crate::store::{self, AuditEntry, Create, KeySource, Method, Outcome, Store, StoreError};
use crate::vision::{camera::NokhwaCamera, models::Models, pipeline::FaceEvent, runner, source};
use sd_notify::NotifyState;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    // Not `#[from]`: that makes it the source too, and `{:#}` would print it twice.
    #[error("hardware: {0}")]
    Hw(HwError),
    #[error("{0}")]
    Start(String),
    #[error("request API: {0}")]
    Api(crate::api::ApiError),
}

impl From<HwError> for DaemonError {
    fn from(e: HwError) -> Self {
        DaemonError::Hw(e)
    }
}

impl From<crate::api::ApiError> for DaemonError {
    fn from(e: crate::api::ApiError) -> Self {
        DaemonError::Api(e)
    }
}

/// Options that are not configuration (they come from the command line).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Allow a generated database key (kept beside the database).
    pub demo: bool,
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("sd_notify failed: {e}");
    }
}

/// Open the store the way the daemon does: key from credential / key file / demo.
pub fn open_store(
    config: &Config,
    demo: bool,
    create: Create,
) -> Result<(Store, store::OpenInfo, KeySource), StoreError> {
    let (key, source) = store::resolve_key(&config.store.key_file, &config.store.path, demo)?;
    let (st, info) = Store::open(
        &config.store.path,
        key,
        create,
        Duration::from_millis(config.store.busy_timeout_ms),
    )?;
    Ok((st, info, source))
}

/// What the capture thread says about the camera goes to the log; a loss (or a camera
/// that cannot be opened) is also one alert per outage, through the controller (so it is
/// audited and reaches the admin), not one per retry.
fn camera_reporter(
    inputs: mpsc::Sender<Input>,
    shared: Arc<runner::VisionShared>,
) -> impl FnMut(source::CameraStatus) + Send {
    let mut out = false;
    move |status| {
        shared.source_up.store(
            matches!(status, source::CameraStatus::Opened(_)),
            std::sync::atomic::Ordering::SeqCst,
        );
        let why = match status {
            source::CameraStatus::Opened(d) => {
                if out {
                    log::info!("camera back: {d}");
                } else {
                    log::info!("camera opened: {d}");
                }
                out = false;
                return;
            }
            source::CameraStatus::Lost(e) => {
                log::error!("camera lost: {e}; re-opening");
                format!("camera lost: {e}")
            }
            source::CameraStatus::OpenFailed { error, retry_in } => {
                log::error!("{error}; retrying in {} s", retry_in.as_secs());
                format!("camera cannot be opened: {error}")
            }
        };
        if !out {
            out = true;
            let msg = format!("{why}; face unlock is off until it is back, the keypad works");
            if inputs.try_send(Input::Fault(msg)).is_err() {
                log::warn!("camera alert not delivered: the controller is busy or gone");
            }
        }
    }
}

/// Start vision, or say why not (the daemon then runs keypad-only).
fn start_vision(
    config: &Config,
    store: &Store,
    inputs: mpsc::Sender<Input>,
) -> Result<runner::VisionHandle, String> {
    let models = Models::load(&config.vision.models).map_err(|e| e.to_string())?;
    log::info!("face models loaded in {:.2} s", models.load_s);
    let gallery = store
        .call_sync(|db| api_service::load_gallery(db))
        .map_err(|e| e.to_string())?;
    let shared = runner::VisionShared::new(models, gallery, &config.vision);
    let src: Box<dyn source::FrameSource> =
        if let VisionSource::Replay(path) = &config.vision.source {
            source::open_path(path).map_err(|e| e.to_string())?
        } else {
            // Not up until the camera has opened (the D-Bus `Camera` property, `status`
            // and STATUS= say keypad only meanwhile).
            shared
                .source_up
                .store(false, std::sync::atomic::Ordering::SeqCst);
            let settings = config.vision.camera();
            let what = format!("camera {}", settings.device);
            Box::new(
                source::LiveSource::start(
                    what,
                    settings.fps as f64,
                    move || NokhwaCamera::open(&settings),
                    source::Backoff {
                        initial: Duration::from_secs(1),
                        max: Duration::from_secs(30),
                    },
                    camera_reporter(inputs.clone(), shared.clone()),
                )
                .map_err(|e| e.to_string())?,
            )
        };
    log::info!("vision source: {}", src.describe());
    runner::spawn(shared, src, move |e| {
        let input = match e {
            FaceEvent::Attempt(a) => Input::Face(Box::new(a)),
            FaceEvent::Challenge {
                prompt, window_s, ..
            } => Input::Challenge { prompt, window_s },
            _ => return true,
        };
        inputs.blocking_send(input).is_ok()
    })
    .map_err(|e| e.to_string())
}

/// What STATUS= says about face unlock.
fn face_status(vision_started: bool, camera: crate::api::CameraState) -> &'static str {
    use crate::api::CameraState;
    match (vision_started, camera) {
        (false, _) => "vision UNAVAILABLE (keypad only)",
        (true, CameraState::Ok) => "face and keypad",
        (true, CameraState::Unavailable) => "camera UNAVAILABLE, retrying (keypad only)",
        (true, CameraState::Ended) => "camera source ended (keypad only)",
    }
}

/// Run the daemon until `shutdown` resolves.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // A core dump would hold the database key: never dump (the unit sets LimitCORE=0 too).
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    notify(&[NotifyState::Status("opening store")]);
    let _instance = store::InstanceLock::acquire(&config.store.path)?;
    let (store, info, source) = open_store(&config, opts.demo, Create::IfMissing)?;
    let result = run_open(config, store.clone(), info, source, shutdown).await;
    // Every exit path closes the store before the process exits: SQLCipher torn down
    // under a live connection crashes (and would dump core with the key in memory).
    let closing = store.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    result
}

/// [`run`] once the store is open.
async fn run_open(
    config: Config,
    store: Store,
    info: store::OpenInfo,
    source: KeySource,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    log::info!(
        "store {} open in {:.0} ms (key from {source}, schema v{}{})",
        config.store.path.display(),
        info.open_ms,
        info.schema_version,
        if info.created { ", newly created" } else { "" }
    );
    store
        .call(|db| {
            db.audit_append(&AuditEntry::new(
                Method::System,
                Outcome::Info,
                "daemon started",
            ))
        })
        .await?;

    // Hardware: the lock is driven to locked as soon as it exists.
    let (devices, input_devices, lock_link) = build_devices(&config)?;

    // The access controller on its own thread (its store calls block only that thread).
    let (in_tx, in_rx) = mpsc::channel::<Input>(256);
    let mut ev_tx = EventBus::new(1024);
    if config.mqtt.enabled {
        ev_tx = ev_tx.with_outbox(store.clone(), config.mqtt.outbox_max_events);
    }
    // In a fleet: the gate of fleet users' faces and the kiosks' keys, kept by the
    // fleet task (started below, once the API is up), read by the controller and the API.
    let fleet_watch = config
        .fleet
        .as_ref()
        .filter(|_| config.mqtt.enabled)
        .map(|f| {
            let (link, link_rx) = watch::channel(crate::api::FleetLink::default());
            let (keys, keys_rx) = watch::channel(crate::service::KioskKeys::new());
            let gate = crate::api::FleetGate {
                link: link_rx,
                offline_after_ms: f.offline_after_s.saturating_mul(1000) as i64,
            };
            let backend = crate::service::FleetBackend {
                id: f.id.clone(),
                gate,
                keys: keys_rx,
            };
            (crate::mqtt::fleet::FleetWatch { link, keys }, backend)
        });
    let (fleet_watch, fleet_backend) = match fleet_watch {
        Some((w, b)) => (Some(w), Some(b)),
        None => (None, None),
    };

    let (state_tx, state_rx) = watch::channel(Snapshot::default());
    let gate = fleet_backend.as_ref().map(|b| b.gate.clone());
    // A change of the fleet link wakes the controller (its idle screen says when the
    // fleet is cut off; the time it turns so is one of its deadlines).
    let fleet_ticks = gate.clone().map(|g| {
        let (mut link, tx) = (g.link, in_tx.clone());
        tokio::spawn(async move {
            while link.changed().await.is_ok() {
                if tx.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        })
    });
    let (controller, stop_ctl) = start_controller(
        &config,
        &store,
        devices,
        in_rx,
        ev_tx.clone(),
        state_tx,
        gate,
    )
    .await?;

    // Keypad and door polling on a Pi.
    let stop_inputs = Arc::new(AtomicBool::new(false));
    let input_thread = input_devices.map(|dev| {
        let (tx, stop, scan) = (
            in_tx.clone(),
            stop_inputs.clone(),
            Duration::from_millis(config.hardware.keypad_scan_ms),
        );
        std::thread::Builder::new()
            .name("inputs".into())
            .spawn(move || driver::poll_inputs(dev, tx, stop, scan))
    });

    // Vision (keypad-only if it cannot start).
    let (store3, cfg3, tx3) = (store.clone(), config.clone(), in_tx.clone());
    let vision = tokio::task::spawn_blocking(move || start_vision(&cfg3, &store3, tx3))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(e) = &vision {
        log::error!("vision unavailable, keypad only: {e}");
    }
    let vision_started = vision.is_ok();
    let mut vision = vision.ok();

    // The request API, and the D-Bus service on it.
    let (api, api_task) = Service::start(
        config.service(),
        Backends {
            store: store.clone(),
            controller: Some(ControllerLink {
                inputs: in_tx.clone(),
                state: state_rx,
            }),
            vision: vision.as_ref().map(|v| v.shared.clone()),
            events: ev_tx.clone(),
            clock: Arc::new(WallClock),
            fleet: fleet_backend,
        },
    )
    .await?;
    let bus = match crate::dbus::serve(api.clone()).await {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!("D-Bus service not started: {e} (lockerctl cannot reach this daemon)");
            None
        }
    };
    // The MQTT bridge on the same API (when configured). A broker that is down is
    // retried inside; a bridge that cannot start leaves the kiosk working locally.
    let mqtt = if config.mqtt.enabled {
        let lock = lock_link.map(|l| (l, in_tx.clone()));
        match crate::mqtt::bridge::spawn(&config.mqtt, api.clone(), store.clone(), lock) {
            Ok(tasks) => Some(tasks),
            Err(e) => {
                log::error!("MQTT not started: {e}");
                None
            }
        }
    } else {
        None
    };
    // The fleet's user directory, on a connection of its own (when `[fleet]` is set).
    let fleet = match (&config.fleet, fleet_watch) {
        (Some(f), Some(w)) => {
            let settings = crate::mqtt::fleet::FleetSettings {
                id: f.id.clone(),
                max_record_bytes: f.max_record_bytes,
                groups: f.groups.clone(),
            };
            match crate::mqtt::fleet::spawn(&config.mqtt, settings, api.clone(), store.clone(), w)
                .await
            {
                Ok(task) => Some(task),
                Err(e) => {
                    log::error!("fleet {} not started: {e}", f.id);
                    None
                }
            }
        }
        _ => None,
    };
    let bus_status = if bus.is_some() {
        "D-Bus on"
    } else {
        "D-Bus OFF"
    };
    // Once on the bus, stay on it: a lost connection is re-made (dbus/mod.rs).
    let bus = bus.map(|b| crate::dbus::supervise(api.clone(), Some(b)));

    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        let (store, tx) = (store.clone(), in_tx.clone());
        tokio::spawn(watchdog_loop(store, tx, period))
    });

    // READY=1 with a STATUS= line, and STATUS= again whenever what it says changes.
    let status_task = notify_ready(&config, &api, vision_started, bus_status);

    shutdown.await;

    log::info!("shutting down");
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    status_task.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    if let Some(f) = fleet {
        f.abort();
    }
    if let Some(t) = fleet_ticks {
        t.abort();
    }
    if let Some(m) = mqtt {
        m.stop().await;
    }
    if let Some(b) = bus {
        b.abort();
        let _ = b.await;
    }
    drop(api);
    api_task.abort();
    if let Some(mut v) = vision.take() {
        let _ = tokio::task::spawn_blocking(move || v.stop()).await;
    }
    stop_inputs.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(Ok(t)) = input_thread {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    // The driver locks the lock as it ends.
    let _ = stop_ctl.send(());
    let _ = tokio::task::spawn_blocking(move || controller.join()).await;
    drop(in_tx);
    let audit = store
        .call(|db| {
            db.audit_append(&AuditEntry::new(
                Method::System,
                Outcome::Info,
                "daemon stopped",
            ))
        })
        .await;
    if let Err(e) = &audit {
        log::error!("could not write the shutdown audit row: {e}");
    }
    log::info!("stopped; lock locked");
    Ok(())
}

/// The devices the controller drives (the lock is locked as soon as it exists), the
/// keypad and door to poll on a Pi, and the ESP32 lock's link when that lock replaces the
/// relay (the controller drives its actuator, the MQTT bridge carries its link).
fn build_devices(
    config: &Config,
) -> Result<(hw::Devices, Option<hw::InputDevices>, Option<LockLink>), DaemonError> {
    let (devices, input_devices) = match config.hardware.mode {
        HardwareMode::Rpi => {
            let (d, i) = hw::rpi::build(&config.hardware)?;
            (d, Some(i))
        }
        HardwareMode::Sim => {
            // Simulated hardware; `LOCKERD_SIM_KEYPAD=PATH` types keys from a named pipe.
            let inputs = match std::env::var_os("LOCKERD_SIM_KEYPAD") {
                Some(p) => Some(hw::InputDevices {
                    keypad: Box::new(hw::sim::FifoKeypad::open(std::path::Path::new(&p))?),
                    door: Box::new(hw::sim::SimDoor::default()),
                }),
                None => None,
            };
            (hw::sim::devices().0, inputs)
        }
    };

    let mut devices = devices;
    let mut lock_link = None;
    if config.lock.kind == LockKind::Esp32 {
        let pulse_ms = (config.access.unlock_pulse_s * 1000.0).round() as u32;
        let (actuator, link) = crate::mqtt::lock::pair(&config.lock, pulse_ms)
            .map_err(|e| DaemonError::Start(e.to_string()))?;
        devices.lock = Box::new(actuator);
        lock_link = Some(link);
    }
    Ok((devices, input_devices, lock_link))
}

/// The access controller on a thread of its own, once it has loaded its state; returns
/// the thread and the sender that stops it (the driver locks the lock as it ends).
async fn start_controller(
    config: &Config,
    store: &Store,
    devices: hw::Devices,
    in_rx: mpsc::Receiver<Input>,
    ev_tx: EventBus,
    state_tx: watch::Sender<Snapshot>,
    fleet_gate: Option<crate::api::FleetGate>,
) -> Result<(std::thread::JoinHandle<()>, oneshot::Sender<()>), DaemonError> {
    let (stop_ctl, ctl_stopped) = oneshot::channel::<()>();
    let (ctl_ready_tx, ctl_ready) = oneshot::channel::<Result<(), String>>();
    let (cfg2, store2, ev2) = (config.access.clone(), store.clone(), ev_tx);
    let controller = std::thread::Builder::new()
        .name("access".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ctl_ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let (mut ctl, events) =
                    match Controller::new(cfg2, store2, devices, crate::types::now_ms()) {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ctl_ready_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                ctl.set_outbox(ev2.outbox_max());
                ctl.set_fleet_gate(fleet_gate);
                let at_ms = crate::types::now_ms();
                ev2.send_all(
                    events
                        .into_iter()
                        .map(|event| Timed { at_ms, event })
                        .collect(),
                );
                let _ = ctl_ready_tx.send(Ok(()));
                driver::run(ctl, WallClock, in_rx, ev2, state_tx, async {
                    let _ = ctl_stopped.await;
                })
                .await;
            });
        })
        .map_err(|e| DaemonError::Start(format!("cannot start the access thread: {e}")))?;
    match ctl_ready.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DaemonError::Start(format!("access controller: {e}"))),
        Err(_) => return Err(DaemonError::Start("access controller thread died".into())),
    }
    Ok((controller, stop_ctl))
}

/// READY=1 with a STATUS= line, and a task that sends STATUS= again whenever what it
/// says changes (a camera that goes away or comes back, users added).
fn notify_ready(
    config: &Config,
    api: &crate::service::ApiHandle,
    vision_started: bool,
    bus_status: &'static str,
) -> tokio::task::JoinHandle<()> {
    let line = {
        let (kiosk, hw_mode) = (config.daemon.kiosk_name.clone(), config.hardware.mode);
        move |s: &crate::api::Status| {
            format!(
                "ready: kiosk {kiosk}, {} user(s), {}, {bus_status}, hardware {hw_mode}",
                s.users,
                face_status(vision_started, s.camera)
            )
        }
    };
    let mut status_rx = api.status();
    let first = line(&status_rx.borrow_and_update());
    notify(&[NotifyState::Ready, NotifyState::Status(&first)]);
    log::info!("{first}; lock locked");
    let status_task = tokio::spawn(async move {
        let mut last = first;
        while status_rx.changed().await.is_ok() {
            let now = line(&status_rx.borrow_and_update());
            if now != last {
                notify(&[NotifyState::Status(&now)]);
                log::info!("{now}");
                last = now;
            }
        }
    });
    status_task
}

/// Ping systemd at half the watchdog period, but only while the store thread and the
/// access controller answer: a hung part stops the pings and systemd restarts us.
async fn watchdog_loop(store: Store, ctl: mpsc::Sender<Input>, period: Duration) {
    let every = period / 2;
    log::info!(
        "watchdog enabled: {} ms, pinging every {} ms",
        period.as_millis(),
        every.as_millis()
    );
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store_ok = matches!(
            tokio::time::timeout(every, store.call(|db| db.ping())).await,
            Ok(Ok(()))
        );
        let (tx, rx) = oneshot::channel();
        let ctl_ok = ctl.send(Input::Ping(tx)).await.is_ok()
            && matches!(tokio::time::timeout(every, rx).await, Ok(Ok(())));
        if store_ok && ctl_ok {
            notify(&[NotifyState::Watchdog]);
        } else {
            log::error!(
                "health check failed (store {}, access controller {}); withholding the watchdog ping",
                if store_ok { "ok" } else { "NOT answering" },
                if ctl_ok { "ok" } else { "NOT answering" }
            );
        }
    }
}

/// Register SIGTERM and SIGINT handlers now (so a signal that arrives right after
/// `READY=1` is not lost to the default action) and return a future that resolves on
/// either. Must be called inside the runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => log::info!("SIGTERM received"),
            _ = int.recv() => log::info!("SIGINT received"),
        }
    })
}
