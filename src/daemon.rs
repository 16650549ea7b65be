//! The daemon: `run(config, shutdown)` starts every part, tells systemd it is ready,
//! keeps the watchdog fed while the parts are healthy, and on shutdown stops them in
//! order and leaves the lock locked.
//!
//! Parts talk over channels: the store thread is reached through [`Store`]; later parts
//! (vision thread, access controller, D-Bus, MQTT) are started here the same way.

use crate::config::Config;
use crate::hw::{self, HwError, LockActuator};
use crate::store::{self, AuditEntry, Create, KeySource, Method, Outcome, Store, StoreError};
use sd_notify::NotifyState;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("hardware: {0}")]
    Hw(#[from] HwError),
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

/// Run the daemon until `shutdown` resolves.
pub async fn run(
    config: Config,
    opts: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    notify(&[NotifyState::Status("opening store")]);
    let (store, info, source) = open_store(&config, opts.demo, Create::IfMissing)?;
    log::info!(
        "store {} open in {:.0} ms (key from {source}, schema v{}{})",
        config.store.path.display(),
        info.open_ms,
        info.schema_version,
        if info.created { ", newly created" } else { "" }
    );

    // The lock starts, and always ends, locked.
    let mut lock: Box<dyn LockActuator> = Box::new(hw::sim::SimLock::new());
    lock.set_locked(true)?;

    let users = store.call(|db| Ok(db.list_users()?.len())).await?;
    store
        .call(|db| {
            db.audit_append(&AuditEntry::new(
                Method::System,
                Outcome::Info,
                "daemon started",
            ))
        })
        .await?;

    let watchdog = sd_notify::watchdog_enabled().map(|period| {
        let store = store.clone();
        tokio::spawn(watchdog_loop(store, period))
    });

    let status = format!(
        "ready: kiosk {}, {} user(s), lock locked",
        config.daemon.kiosk_name, users
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    log::info!("{status}");

    shutdown.await;

    log::info!("shutting down");
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    if let Some(w) = watchdog {
        w.abort();
    }
    let lock_result = lock.set_locked(true);
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
    let closing = store.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    lock_result?;
    log::info!("stopped; lock locked");
    Ok(())
}

/// Ping systemd at half the watchdog period, but only while the parts answer: a hung
/// store thread stops the pings and systemd restarts us.
async fn watchdog_loop(store: Store, period: Duration) {
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
        let healthy = matches!(
            tokio::time::timeout(every, store.call(|db| db.ping())).await,
            Ok(Ok(()))
        );
        if healthy {
            notify(&[NotifyState::Watchdog]);
        } else {
            log::error!("store did not answer the health check; withholding the watchdog ping");
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
