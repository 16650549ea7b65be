//! The serving task: the one owner that answers [`Request`]s.
//!
//! Callers hold an [`ApiHandle`] and `call(caller, request)`; the request and a oneshot
//! reply travel over a bounded channel to [`Service::run`], which checks the role table
//! ([`crate::api::authorize`]) and then:
//! - lock, unlock and lockout reset go to the access controller as
//!   [`Input::Admin`] with a oneshot reply (only the controller changes the lock and
//!   the lockout, so a reset reaches the running daemon at once and stays reset);
//! - user changes write the change and its audit row in one transaction on the store
//!   thread, then push the new gallery to vision;
//! - codes and TOTP are issued in one transaction with their audit row; the secret goes
//!   only into the reply;
//! - enrollment runs as one job at a time (claimed by its caller), with progress as
//!   events.
//!
//! Without a running controller (`lockerd admin` on the store while no daemon runs)
//! lockout requests act on the store directly and unlock/lock are `Unavailable`.
//! Handlers run concurrently, at most [`MAX_IN_FLIGHT`] at a time: a flood of requests
//! waits in the channel and never reaches the face path, which goes from vision to the
//! controller directly.
//!
//! This file is the task and its routing (`dispatch`); each command group is a file of
//! its own under `service/`: `access.rs` (lock, unlock, keypad entries, lockout, verify),
//! `users.rs`, `enroll.rs`, `codes.rs` (one-time codes, TOTP) and `audit.rs`.

use crate::access::config::AccessConfig;
use crate::access::controller::{AdminRequest, Input, Snapshot};
use crate::access::credentials;
use crate::access::driver::Clock;
use crate::api::event::{EnrollProgress, EnrollStatus, Event, EventBus, EventKind, Pending, Timed};
use crate::api::{
    authorize, check_bounds, ApiError, AuditCheck, AuditItem, Caller, CameraState, EnrollSource,
    IssuedCode, Mode, Request, Response, Seen, Status, TotpEnrolled, UserInfo,
};
use crate::store::{AuditEntry, Db, Method, Outcome, Store, StoreError};
use crate::types::{Embedding, EmbeddingModel, Role as UserRole, User};
use crate::vision::enroll::{Refusal, Sample};
use crate::vision::matcher::{Gallery, GalleryUser};
use crate::vision::runner::VisionShared;
use crate::vision::VisionError;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch, Semaphore};

mod access;
mod audit;
mod codes;
mod enroll;
mod fleet;
mod users;

pub use fleet::{seal_secret, FleetBackend, KioskKey, KioskKeys};

/// Requests handled at the same time; more wait in the channel.
pub const MAX_IN_FLIGHT: usize = 16;
/// Requests queued before callers wait to send.
const QUEUE: usize = 64;
/// At most this many audit rows a minute for refused requests of one caller.
const REFUSALS_AUDITED_PER_MIN: u32 = 5;

/// Build the in-memory gallery from the store: every user with their templates.
pub fn load_gallery(db: &Db) -> Result<Gallery, StoreError> {
    Ok(Gallery::new(gallery_users(db)?))
}

/// Every user with their templates, as read from the store (the gallery's spreads are
/// worked out off the store thread: [`Gallery::new`] is quadratic in templates).
pub fn gallery_users(db: &Db) -> Result<Vec<GalleryUser>, StoreError> {
    let users = db.list_users()?;
    let mut by_user: HashMap<(i64, EmbeddingModel), Vec<Embedding>> = HashMap::new();
    // Users with a current-model template from anything but a still photo.
    let mut not_photo = std::collections::HashSet::new();
    for t in db.templates()? {
        if t.model == EmbeddingModel::CURRENT && !crate::vision::enroll::is_photo_source(&t.source)
        {
            not_photo.insert(t.user_id);
        }
        by_user
            .entry((t.user_id, t.model))
            .or_default()
            .push(t.embedding);
    }
    Ok(users
        .into_iter()
        .map(|u| GalleryUser {
            from_photos: !not_photo.contains(&u.id),
            templates: by_user
                .remove(&(u.id, EmbeddingModel::CURRENT))
                .unwrap_or_default(),
            legacy: by_user
                .remove(&(u.id, EmbeddingModel::DlibResnet))
                .unwrap_or_default(),
            user_id: u.id,
            name: u.name,
            role: u.role,
            enabled: u.enabled,
        })
        .collect())
}

/// The running access controller, as the service reaches it.
#[derive(Clone)]
pub struct ControllerLink {
    pub inputs: mpsc::Sender<Input>,
    pub state: watch::Receiver<Snapshot>,
}

/// What the service serves with.
pub struct Backends {
    pub store: Store,
    /// None: no daemon (offline CLI).
    pub controller: Option<ControllerLink>,
    /// None: vision unavailable (keypad only).
    pub vision: Option<Arc<VisionShared>>,
    pub events: EventBus,
    /// The controller's clock (virtual time in the simulator).
    pub clock: Arc<dyn Clock + Sync>,
    /// In a fleet (`[fleet]`): its gate and its kiosks' keys.
    pub fleet: Option<FleetBackend>,
}

struct Envelope {
    caller: Caller,
    request: Request,
    reply: oneshot::Sender<Result<Response, ApiError>>,
}

/// The way in: cheap to clone, one per adapter.
#[derive(Clone)]
pub struct ApiHandle {
    tx: mpsc::Sender<Envelope>,
    status: watch::Receiver<Status>,
    events: EventBus,
}

impl lockerd_client::ctl::LocalApi for ApiHandle {
    fn call<'a>(
        &'a self,
        caller: &'a Caller,
        r: Request,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response, ApiError>> + Send + 'a>>
    {
        Box::pin(ApiHandle::call(self, caller, r))
    }

    fn subscribe(&self) -> broadcast::Receiver<Timed> {
        ApiHandle::subscribe(self)
    }
}

impl ApiHandle {
    /// Make a request and wait for its reply.
    pub async fn call(&self, caller: &Caller, request: Request) -> Result<Response, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Envelope {
                caller: caller.clone(),
                request,
                reply,
            })
            .await
            .map_err(|_| ApiError::Unavailable("lockerd is shutting down".into()))?;
        rx.await
            .map_err(|_| ApiError::Internal("the request was dropped".into()))?
    }

    /// Cancel the enrollment claimed by `bus_name` (its caller left the bus).
    pub async fn release(&self, bus_name: &str) {
        let caller = Caller {
            id: format!("bus name {bus_name} (gone)"),
            via: crate::api::Via::Dbus,
            role: crate::api::Clearance::Admin,
            bus_name: Some(bus_name.to_owned()),
        };
        let _ = self.call(&caller, Request::EnrollCancel).await;
    }

    /// Secret-free events as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<Timed> {
        self.events.subscribe()
    }

    /// The status, updated whenever it changes (D-Bus properties).
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }
}

struct EnrollJob {
    id: u64,
    holder: Caller,
    cancel: Arc<AtomicBool>,
}

/// What the serving task needs from the configuration ([`crate::config::Config::service`]),
/// and no more: the service depends on no configuration module.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `daemon.kiosk_name`: in the status and the TOTP issuer.
    pub kiosk_name: String,
    /// `[access]`: code and TOTP issuance.
    pub access: AccessConfig,
    /// `vision.strict_threshold`: a new face this close to another user's is refused.
    pub duplicate_threshold: f32,
    /// `mqtt.kiosk_id` and `fleet.groups`: which fleet records keep a user here.
    pub kiosk_id: String,
    pub fleet_groups: Vec<String>,
}

pub struct Service {
    cfg: Arc<Settings>,
    b: Backends,
    status: watch::Sender<Status>,
    users: AtomicU32,
    enrolling: Mutex<Option<EnrollJob>>,
    next_job: AtomicU64,
    refusals: Mutex<HashMap<String, (i64, u32)>>,
    /// Wakes the status task after a user change.
    changed: tokio::sync::Notify,
    /// Held through a gallery reload (read, build, hand over), so an older snapshot can
    /// never replace a newer one.
    gallery_reload: tokio::sync::Mutex<()>,
    /// Reloads asked for, and the last one a loaded gallery includes: changes that come
    /// while a reload runs share the next one (a fleet sync of 1,000 records rebuilds
    /// the gallery a few times, not 1,000), and each caller still waits for its own.
    gallery_wanted: AtomicU64,
    gallery_loaded: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    /// Start serving. The returned task ends when every [`ApiHandle`] is dropped.
    pub async fn start(
        cfg: Settings,
        b: Backends,
    ) -> Result<(ApiHandle, tokio::task::JoinHandle<()>), ApiError> {
        let users = b.store.call(|db| Ok(db.list_users()?.len())).await? as u32;
        let (status_tx, status_rx) = watch::channel(Status::default());
        let events = b.events.clone();
        let svc = Arc::new(Service {
            cfg: Arc::new(cfg),
            b,
            status: status_tx,
            users: AtomicU32::new(users),
            enrolling: Mutex::new(None),
            next_job: AtomicU64::new(1),
            refusals: Mutex::new(HashMap::new()),
            changed: tokio::sync::Notify::new(),
            gallery_reload: tokio::sync::Mutex::new(()),
            gallery_wanted: AtomicU64::new(0),
            gallery_loaded: AtomicU64::new(0),
        });
        svc.refresh_status();
        let (tx, rx) = mpsc::channel::<Envelope>(QUEUE);
        let task = tokio::spawn(Service::run(svc, rx));
        Ok((
            ApiHandle {
                tx,
                status: status_rx,
                events,
            },
            task,
        ))
    }

    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Envelope>) {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let status_task = tokio::spawn(self.clone().status_loop());
        let upgrade_task = tokio::spawn(self.clone().upgrade_loop());
        while let Some(env) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let svc = self.clone();
            tokio::spawn(async move {
                let r = svc.handle(&env.caller, env.request).await;
                let _ = env.reply.send(r);
                drop(permit);
            });
        }
        status_task.abort();
        upgrade_task.abort();
        if let Some(job) = lock(&self.enrolling).as_ref() {
            job.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// Reload the gallery when access control has stored SFace templates for a user
    /// matched by pre-SFace ones (`user_changed` / `face_upgraded`).
    async fn upgrade_loop(self: Arc<Self>) {
        let mut rx = self.b.events.subscribe();
        loop {
            match rx.recv().await {
                Ok(t) => {
                    let e = &t.event;
                    if e.event == EventKind::UserChanged
                        && e.reason.as_deref() == Some("face_upgraded")
                    {
                        self.push_gallery().await;
                    }
                }
                // Missed events: reload to be sure nothing was missed.
                Err(broadcast::error::RecvError::Lagged(_)) => self.push_gallery().await,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Keep the status watch current: controller changes, user changes, camera state.
    async fn status_loop(self: Arc<Self>) {
        let mut ctl = self.b.controller.as_ref().map(|c| c.state.clone());
        loop {
            let ctl_changed = async {
                match ctl.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = ctl_changed => {}
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            self.refresh_status();
        }
    }

    fn status_now(&self) -> Status {
        let snap = self
            .b
            .controller
            .as_ref()
            .map(|c| *c.state.borrow())
            .unwrap_or_default();
        let camera = match &self.b.vision {
            Some(v) if v.running.load(Ordering::SeqCst) && v.source_up.load(Ordering::SeqCst) => {
                CameraState::Ok
            }
            // Running but the camera cannot be opened (or was lost): keypad only until
            // it is back.
            Some(v) if v.running.load(Ordering::SeqCst) => CameraState::Unavailable,
            Some(_) if self.b.controller.is_some() => CameraState::Ended,
            _ => CameraState::Unavailable,
        };
        let now = self.b.clock.now_ms();
        Status {
            kiosk: self.cfg.kiosk_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            lock: snap.lock,
            door: snap.door,
            keypad_locked_until_ms: if snap.lockout.until_ms > now {
                snap.lockout.until_ms
            } else {
                0
            },
            camera,
            mode: if camera == CameraState::Ok {
                Mode::FaceAndKeypad
            } else {
                Mode::KeypadOnly
            },
            users: self.users.load(Ordering::SeqCst),
            running: self.b.controller.is_some(),
            fleet: self
                .b
                .fleet
                .as_ref()
                .map_or(crate::api::FleetState::Off, |f| f.gate.state(now)),
        }
    }

    fn refresh_status(&self) {
        let s = self.status_now();
        self.status.send_if_modified(|old| {
            let changed = *old != s;
            *old = s;
            changed
        });
    }

    /// `event` stamped now with its outbox row: write the row in the transaction of the
    /// event's audit row, then [`Self::publish_staged`] the stamped event.
    fn stage(&self, event: Event) -> (Timed, Pending) {
        self.b.events.stage(self.b.clock.now_ms(), event)
    }

    fn publish_staged(&self, t: Timed) {
        log::info!("{}", serde_json::to_string(&t.event).unwrap_or_default());
        self.b.events.send(t);
    }

    async fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        request: Request,
    ) -> Result<Response, ApiError> {
        if let Err(e) = authorize(caller, &request).and_then(|_| check_bounds(&request)) {
            self.audit_refusal(caller, &request, &e).await;
            return Err(e);
        }
        let name = request.name();
        // Names only: a request or reply may hold a secret (a PIN, a code).
        log::debug!("request {name} from {} ({:?})", caller.id, caller.via);
        let r = self.dispatch(caller, request).await;
        match &r {
            Ok(resp) => log::debug!("request {name} from {}: ok ({})", caller.id, resp.kind()),
            Err(e) => log::info!("{name} from {}: {e}", caller.id),
        }
        r
    }

    /// Refused requests are audited, rate-limited per caller so a flood cannot fill
    /// the log or hold up the store thread.
    async fn audit_refusal(&self, caller: &Caller, request: &Request, e: &ApiError) {
        let now = self.b.clock.now_ms();
        let (write, suppressed) = {
            let mut m = lock(&self.refusals);
            if m.len() > 1000 {
                m.clear();
            }
            // Keyed by the principal (`uid N`), not the connection: new connections do
            // not buy more rows.
            let who = caller
                .id
                .split(" (")
                .next()
                .unwrap_or(&caller.id)
                .to_string();
            let slot = m.entry(who).or_insert((now, 0));
            if now - slot.0 > 60_000 {
                *slot = (now, 0);
            }
            slot.1 += 1;
            (slot.1 <= REFUSALS_AUDITED_PER_MIN, slot.1)
        };
        if !write {
            return;
        }
        let entry = AuditEntry::new(caller.via.method(), Outcome::Deny, "request_refused")
            .evidence(json!({
                "by": caller.id,
                "request": request.name(),
                "error": e.kind(),
                "count_this_minute": suppressed,
            }));
        if let Err(err) = self.b.store.call(move |db| db.audit_append(&entry)).await {
            log::error!("could not audit a refused request: {err}");
        }
    }

    fn ctl(&self) -> Result<&ControllerLink, ApiError> {
        self.b.controller.as_ref().ok_or_else(|| {
            ApiError::Unavailable(
                "lockerd is not running: this request needs the daemon (systemctl start lockerd)"
                    .into(),
            )
        })
    }

    async fn to_controller(&self, request: AdminRequest) -> Result<String, ApiError> {
        let ctl = self.ctl()?;
        let (reply, rx) = oneshot::channel();
        ctl.inputs
            .send(Input::Admin {
                request,
                reply: Some(reply),
            })
            .await
            .map_err(|_| ApiError::Unavailable("the access controller has stopped".into()))?;
        rx.await
            .map_err(|_| ApiError::Unavailable("the access controller has stopped".into()))?
    }

    async fn push_gallery(&self) {
        let Some(v) = &self.b.vision else {
            return;
        };
        // Everything committed before this line is in any reload that starts after it.
        let mine = self.gallery_wanted.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = self.gallery_reload.lock().await;
        if self.gallery_loaded.load(Ordering::SeqCst) >= mine {
            // A reload that began after this change (while we waited) has it.
            return;
        }
        let target = self.gallery_wanted.load(Ordering::SeqCst);
        let users = match self.b.store.call(|db| gallery_users(db)).await {
            Ok(u) => u,
            Err(e) => {
                log::error!("cannot reload the gallery: {e}");
                return;
            }
        };
        match tokio::task::spawn_blocking(move || Gallery::new(users)).await {
            Ok(g) => {
                v.set_gallery(g);
                self.gallery_loaded.fetch_max(target, Ordering::SeqCst);
            }
            Err(e) => log::error!("cannot rebuild the gallery: {e}"),
        }
    }

    /// One request, routed to its command group (`service/*.rs`).
    async fn dispatch(
        self: &Arc<Self>,
        caller: &Caller,
        request: Request,
    ) -> Result<Response, ApiError> {
        match request {
            Request::Status => Ok(Response::Status(self.status_now())),
            Request::Verify => self.verify(),
            Request::Unlock { reason } => self.unlock(caller, reason).await,
            Request::Lock => self.lock(caller).await,
            Request::KeypadEntry { keys } => self.keypad_entry(caller, keys).await,
            Request::LockoutShow => self.lockout_show().await,
            Request::LockoutReset => self.lockout_reset(caller).await,
            Request::UsersList => self.users_list().await,
            r @ (Request::UserAdd { .. }
            | Request::UserRemove { .. }
            | Request::UserRole { .. }
            | Request::UserBan { .. }
            | Request::UserUnban { .. }
            | Request::UserEnable { .. }
            | Request::UserDisable { .. }) => self.user_change(caller, r).await,
            Request::Enroll {
                user,
                source,
                allow_poor_photos,
            } => {
                self.start_enroll(caller, user, source, allow_poor_photos)
                    .await
            }
            Request::EnrollCancel => self.enroll_cancel(caller),
            Request::OtpIssue { user, ttl_s } => self.otp_issue(caller, user, ttl_s).await,
            Request::OtpRevoke { slot } => self.otp_revoke(caller, slot).await,
            Request::TotpEnroll { user, pin } => self.totp_enroll(caller, user, pin).await,
            Request::AuditQuery { since_ms, limit } => self.audit_query(since_ms, limit).await,
            Request::AuditVerify => self.audit_verify().await,
            Request::FleetApply { record, key } => self.fleet_apply(caller, record, key).await,
            Request::FleetExport { user, kiosks } => self.fleet_export(caller, user, kiosks).await,
        }
    }
}

#[cfg(test)]
mod ctl_tests {
    //! `lockerctl`'s commands (`lockerd_client::ctl`) on the request API in this process.
    use super::*;
    use crate::api::{ApiError, Caller, Request, Response};
    use crate::store::{Create, DbKey, Store};
    use lockerd_client::ctl::{is_broken_pipe, run, Backend, Cmd, CodeCmd};
    use std::io::Write;

    /// Output whose reader has gone.
    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_code_that_cannot_be_shown_is_revoked() {
        let d = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(
            &d.path().join("c.db"),
            DbKey::generate(),
            Create::MustBeNew,
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let events = crate::api::event::EventBus::new(16);
        let (api, _task) = Service::start(
            crate::config::Config::default().service(),
            Backends {
                store: store.clone(),
                controller: None,
                vision: None,
                events,
                clock: std::sync::Arc::new(crate::access::driver::WallClock),
                fleet: None,
            },
        )
        .await
        .unwrap();
        let backend = Backend::Local {
            api: Box::new(api),
            caller: Caller::offline_cli(),
        };
        let cmd = Cmd::Code(CodeCmd::Issue {
            user: None,
            ttl: Some("5m".into()),
        });
        let e = run(&backend, cmd, false, &mut Closed).await.unwrap_err();
        assert!(e.message.contains("so it was revoked"), "{}", e.message);
        assert!(!is_broken_pipe(&e) || e.message.contains("could not be shown"));
        // Nothing live is left in slot 1, and the revocation is audited.
        let r = backend.call(Request::OtpRevoke { slot: 1 }).await;
        assert!(matches!(r, Err(ApiError::InvalidArgument(_))), "{r:?}");
        let rows = match backend
            .call(Request::AuditQuery {
                since_ms: 0,
                limit: 50,
            })
            .await
            .unwrap()
        {
            Response::Audit { rows } => rows,
            other => panic!("{other:?}"),
        };
        assert!(rows.iter().any(|r| r.reason == "one_time_code_revoked"));
        drop(backend);
        store.close();
    }
}
