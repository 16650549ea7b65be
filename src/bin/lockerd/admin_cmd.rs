//! `lockerd admin ...`: the `lockerctl` commands, served in this process by the request
//! API on the store, for when no daemon runs (first set-up, recovery). One behaviour:
//! while a daemon runs on the same database, this refuses (the database's instance lock
//! is held) and says to use `lockerctl`, which reaches the daemon over D-Bus.

use crate::Ctx;
use anyhow::Context;
use lockerd::api::Caller;
use lockerd::ctl::{self, Backend, Cmd};
use lockerd::service::{Backends, Service};
use lockerd::store::{Create, InstanceLock};
use lockerd::vision::runner::VisionShared;
use std::io::Write;
use std::process::ExitCode;

pub fn admin(ctx: &Ctx, cmd: Cmd, json: bool) -> anyhow::Result<ExitCode> {
    let _instance = InstanceLock::acquire(&ctx.config.store.path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (store, _, _) = lockerd::daemon::open_store(&ctx.config, ctx.demo, Create::MustExist)?;
    let vision = matches!(cmd, Cmd::Enroll(_)).then(|| VisionShared::lazy(&ctx.config.vision));
    // With MQTT on, what is done offline is queued too and goes out with the daemon.
    let mut events = lockerd::api::event::EventBus::new(256);
    if ctx.config.mqtt.enabled {
        events = events.with_outbox(store.clone(), ctx.config.mqtt.outbox_max_events);
    }
    let result = rt.block_on(async {
        let (api, task) = Service::start(
            ctx.config.service(),
            Backends {
                store: store.clone(),
                controller: None,
                vision,
                events,
                clock: std::sync::Arc::new(lockerd::access::driver::WallClock),
                fleet: None,
            },
        )
        .await?;
        let backend = Backend::Local {
            api: Box::new(api),
            caller: Caller::offline_cli(),
        };
        let mut out = std::io::stdout().lock();
        let r = ctl::run(&backend, cmd, json, &mut out).await;
        drop(backend);
        let _ = task.await;
        Ok::<_, anyhow::Error>(r)
    });
    store.close();
    match result? {
        Ok(code) => Ok(ExitCode::from(code)),
        Err(e) if ctl::is_broken_pipe(&e) && !e.message.contains("could not be shown") => {
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lockerd admin: {}", e.message);
            Ok(ExitCode::from(e.code))
        }
    }
}
