//! The serving task: the one owner that answers [`Request`]s.
//!
//! Callers hold an [`ApiHandle`] and `call(caller, request)`; the request and a oneshot
//! reply travel over a bounded channel to [`Service::run`], which checks the role table
//! ([`super::authorize`]) and then:
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

use super::event::{EnrollProgress, EnrollStatus, Event, EventBus, EventKind, Pending, Timed};
use super::{
    authorize, check_bounds, ApiError, AuditCheck, AuditItem, Caller, CameraState, EnrollSource,
    IssuedCode, LockoutInfo, Mode, Request, Response, Seen, Status, TotpEnrolled, UserInfo,
};
use crate::access::controller::{AdminRequest, Input, Snapshot};
use crate::access::credentials;
use crate::access::driver::Clock;
use crate::config::Config;
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
    for t in db.templates()? {
        by_user
            .entry((t.user_id, t.model))
            .or_default()
            .push(t.embedding);
    }
    Ok(users
        .into_iter()
        .map(|u| GalleryUser {
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
            via: super::Via::Dbus,
            role: super::Role::Admin,
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

pub struct Service {
    cfg: Arc<Config>,
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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    /// Start serving. The returned task ends when every [`ApiHandle`] is dropped.
    pub async fn start(
        cfg: Config,
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
            kiosk: self.cfg.daemon.kiosk_name.clone(),
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
        if let Some(v) = &self.b.vision {
            let _one_at_a_time = self.gallery_reload.lock().await;
            let users = match self.b.store.call(|db| gallery_users(db)).await {
                Ok(u) => u,
                Err(e) => {
                    log::error!("cannot reload the gallery: {e}");
                    return;
                }
            };
            match tokio::task::spawn_blocking(move || Gallery::new(users)).await {
                Ok(g) => v.set_gallery(g),
                Err(e) => log::error!("cannot rebuild the gallery: {e}"),
            }
        }
    }

    /// A user change and its audit row in one transaction; then the event, the user
    /// count and the gallery.
    async fn change_user(
        &self,
        caller: &Caller,
        name: String,
        what: &'static str,
        f: impl FnOnce(&mut Db, &str) -> Result<User, StoreError> + Send + 'static,
    ) -> Result<Response, ApiError> {
        let by = caller.id.clone();
        let via = caller.via.method();
        let (event, pending) = self.stage(
            Event::new(EventKind::UserChanged)
                .user(Some(name.clone()))
                .method(via)
                .reason(what),
        );
        let (count, info) = self
            .b
            .store
            .call(move |db| {
                db.atomically(|db| {
                    let u = f(db, &name)?;
                    db.audit_append(
                        &AuditEntry::new(via, Outcome::Info, format!("user {what}"))
                            .user(u.id, &u.name)
                            .evidence(json!({ "by": by, "role": u.role, "enabled": u.enabled })),
                    )?;
                    pending.write(db)?;
                    let count = db.list_users()?.len();
                    let info = user_info(db, &u)?;
                    Ok((count, info))
                })
            })
            .await?;
        self.users.store(count as u32, Ordering::SeqCst);
        self.changed.notify_one();
        self.publish_staged(event);
        self.push_gallery().await;
        Ok(Response::User { user: info })
    }

    async fn dispatch(
        self: &Arc<Self>,
        caller: &Caller,
        request: Request,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
        match request {
            Request::Status => Ok(Response::Status(self.status_now())),
            Request::Unlock { reason } => {
                // Who, as the audit row and the event name them: the caller's role and id
                // ("operator uid 1001", "admin mqtt:ada").
                let by = format!("{} {by}", caller.role.as_str());
                let message = self
                    .to_controller(AdminRequest::Unlock { by, via, reason })
                    .await?;
                Ok(Response::Done { message })
            }
            Request::Lock => {
                let message = self.to_controller(AdminRequest::Lock { by, via }).await?;
                Ok(Response::Done { message })
            }
            Request::KeypadEntry { keys } => {
                let ctl = self.ctl()?;
                let (reply, rx) = oneshot::channel();
                let gone = || ApiError::Unavailable("the access controller has stopped".into());
                ctl.inputs
                    .send(Input::Credential {
                        keys,
                        via,
                        reply: Some(reply),
                    })
                    .await
                    .map_err(|_| gone())?;
                let message = rx.await.map_err(|_| gone())??;
                Ok(Response::Done { message })
            }
            Request::UsersList => {
                let users = self
                    .b
                    .store
                    .call(|db| {
                        db.list_users()?
                            .iter()
                            .map(|u| user_info(db, u))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await?;
                Ok(Response::Users { users })
            }
            Request::UserAdd { name, role } => {
                if role == UserRole::Banned {
                    return Err(ApiError::InvalidArgument(
                        "add the user, then ban them (the ban is audited on its own)".into(),
                    ));
                }
                self.change_user(caller, name, "added", move |db, n| db.add_user(n, role))
                    .await
            }
            Request::UserRemove { name } => {
                self.change_user(caller, name, "removed", |db, n| db.remove_user(n))
                    .await
            }
            Request::UserRole { name, role } => {
                self.change_user(caller, name, "role changed", move |db, n| {
                    db.set_role(n, role)
                })
                .await
            }
            Request::UserBan { name } => {
                self.change_user(caller, name, "banned", |db, n| {
                    db.set_role(n, UserRole::Banned)
                })
                .await
            }
            Request::UserUnban { name } => {
                self.change_user(caller, name, "unbanned", |db, n| {
                    let u = db.require_user(n)?;
                    if u.role != UserRole::Banned {
                        return Err(StoreError::Invalid(format!("{n} is not banned")));
                    }
                    db.set_role(n, UserRole::User)
                })
                .await
            }
            Request::UserEnable { name } => {
                self.change_user(caller, name, "enabled", |db, n| db.set_enabled(n, true))
                    .await
            }
            Request::UserDisable { name } => {
                self.change_user(caller, name, "disabled", |db, n| db.set_enabled(n, false))
                    .await
            }
            Request::Enroll {
                user,
                source,
                allow_poor_photos,
            } => {
                self.start_enroll(caller, user, source, allow_poor_photos)
                    .await
            }
            Request::EnrollCancel => {
                let mut g = lock(&self.enrolling);
                // The holder (the same bus connection, or the same principal) or any admin.
                let holds = |j: &EnrollJob| match (&j.holder.bus_name, &caller.bus_name) {
                    (Some(a), Some(b)) => a == b,
                    _ => j.holder.id == caller.id,
                };
                match g.as_ref() {
                    Some(job) if !holds(job) && caller.role != super::Role::Admin => {
                        Err(ApiError::Busy(format!(
                            "enrollment job {} belongs to {}",
                            job.id, job.holder.id
                        )))
                    }
                    Some(job) => {
                        // The job stores nothing from now on (checked again in the store's
                        // transaction) and the claim is free at once: the vision work
                        // still under way ends at its next frame.
                        job.cancel.store(true, Ordering::SeqCst);
                        let id = job.id;
                        *g = None;
                        Ok(Response::Done {
                            message: format!("enrollment job {id} cancelled"),
                        })
                    }
                    None => Err(ApiError::InvalidArgument("no enrollment is running".into())),
                }
            }
            Request::OtpIssue { user, ttl_s } => {
                let cfg = self.cfg.access.clone();
                let now = self.b.clock.now_ms();
                let bus = self.b.events.clone();
                let (issued, event) = self
                    .b
                    .store
                    .call(move |db| {
                        db.atomically(|db| {
                            let u = user.as_deref().map(|n| db.require_user(n)).transpose()?;
                            let c = credentials::issue_code(db, &cfg, u.as_ref(), ttl_s, now)?;
                            let mut entry = AuditEntry::new(
                                via,
                                Outcome::Info,
                                "one_time_code_issued",
                            )
                            .evidence(
                                json!({ "slot": c.slot, "expires_ms": c.expires_ms, "by": by }),
                            );
                            if let Some(u) = &u {
                                entry = entry.user(u.id, &u.name);
                            }
                            db.audit_append(&entry)?;
                            let (event, pending) = bus.stage(
                                now,
                                Event::new(EventKind::CodeIssued)
                                    .user(c.user.clone())
                                    .method(via)
                                    .detail(json!({ "slot": c.slot, "expires_ms": c.expires_ms })),
                            );
                            pending.write(db)?;
                            Ok((c, event))
                        })
                    })
                    .await?;
                self.publish_staged(event);
                Ok(Response::Code(IssuedCode {
                    slot: issued.slot,
                    keys: issued.keys.clone(),
                    code: issued.code.clone(),
                    expires_ms: issued.expires_ms,
                    user: issued.user.clone(),
                }))
            }
            Request::OtpRevoke { slot } => {
                let now = self.b.clock.now_ms();
                let n = self
                    .b
                    .store
                    .call(move |db| {
                        db.atomically(|db| {
                            let n = db.code_revoke_slot(slot, now)?;
                            if n > 0 {
                                db.audit_append(
                                    &AuditEntry::new(via, Outcome::Info, "one_time_code_revoked")
                                        .evidence(json!({ "slot": slot, "by": by })),
                                )?;
                            }
                            Ok(n)
                        })
                    })
                    .await?;
                if n == 0 {
                    return Err(ApiError::InvalidArgument(format!(
                        "no live code in slot {slot}"
                    )));
                }
                Ok(Response::Done {
                    message: format!("the code in slot {slot} is revoked"),
                })
            }
            Request::TotpEnroll { user, pin } => {
                let cfg = self.cfg.access.clone();
                let issuer = format!("lockerd-{}", self.cfg.daemon.kiosk_name);
                let now = self.b.clock.now_ms();
                let (event, pending) = self.stage(
                    Event::new(EventKind::UserChanged)
                        .user(Some(user.clone()))
                        .method(via)
                        .reason("totp enrolled"),
                );
                let en = self
                    .b
                    .store
                    .call(move |db| {
                        db.atomically(|db| {
                            let u = db.require_user(&user)?;
                            let en = credentials::enroll_totp(
                                db,
                                &cfg,
                                &u,
                                &issuer,
                                pin.as_deref(),
                                now,
                            )?;
                            db.audit_append(
                                &AuditEntry::new(via, Outcome::Info, "totp_enrolled")
                                    .user(u.id, &u.name)
                                    .evidence(json!({ "keypad_no": en.keypad_no, "by": by })),
                            )?;
                            pending.write(db)?;
                            Ok(en)
                        })
                    })
                    .await?;
                self.publish_staged(event);
                Ok(Response::Totp(TotpEnrolled {
                    user: en.user.clone(),
                    keypad_no: en.keypad_no,
                    pin: en.pin.clone(),
                    uri: en.uri.clone(),
                }))
            }
            Request::LockoutShow => {
                let now = self.b.clock.now_ms();
                let s = match &self.b.controller {
                    Some(c) => c.state.borrow().lockout,
                    None => self.b.store.call(|db| db.lockout_load()).await?,
                };
                Ok(Response::Lockout(LockoutInfo::at(&s, now)))
            }
            Request::LockoutReset => {
                let message = if self.b.controller.is_some() {
                    self.to_controller(AdminRequest::LockoutReset { by, via })
                        .await?
                } else {
                    // The same event the controller sends when it clears the lockout.
                    let (event, pending) = self.stage(
                        Event::new(EventKind::LockoutReset)
                            .method(via)
                            .detail(json!({ "by": by.clone() })),
                    );
                    self.b
                        .store
                        .call(move |db| {
                            db.atomically(|db| {
                                db.lockout_save(&Default::default())?;
                                db.audit_append(
                                    &AuditEntry::new(via, Outcome::Info, "keypad_lockout_reset")
                                        .evidence(json!({ "by": by })),
                                )?;
                                pending.write(db)
                            })
                        })
                        .await?;
                    self.publish_staged(event);
                    "keypad lockout cleared".to_string()
                };
                Ok(Response::Done { message })
            }
            Request::AuditQuery { since_ms, limit } => {
                let limit = limit.clamp(1, 10_000) as usize;
                let rows = self
                    .b
                    .store
                    .call(move |db| db.audit_list(since_ms, limit))
                    .await?;
                Ok(Response::Audit {
                    rows: rows.iter().map(AuditItem::from).collect(),
                })
            }
            Request::AuditVerify => {
                let v = self.b.store.call(|db| db.audit_verify()).await?;
                Ok(Response::AuditCheck(AuditCheck::from(&v)))
            }
            Request::Verify => {
                let v = self.b.vision.as_ref().ok_or_else(|| {
                    ApiError::Unavailable("vision is not running (keypad only)".into())
                })?;
                let seen = v.last_attempt().and_then(|a| {
                    let age = a.at.elapsed();
                    (age < Duration::from_secs(10)).then_some(Seen {
                        user: a.user,
                        live: a.live,
                        distance: a.distance,
                        age_ms: age.as_millis() as i64,
                    })
                });
                Ok(Response::Seen { seen })
            }
        }
    }

    async fn start_enroll(
        self: &Arc<Self>,
        caller: &Caller,
        user: String,
        source: EnrollSource,
        allow_poor_photos: bool,
    ) -> Result<Response, ApiError> {
        let vision =
            self.b.vision.clone().ok_or_else(|| {
                ApiError::Unavailable("vision is not running (keypad only)".into())
            })?;
        if let EnrollSource::Files(paths) = &source {
            if paths.is_empty() {
                return Err(ApiError::InvalidArgument("no files to enroll from".into()));
            }
            if let Some(p) = paths.iter().find(|p| !p.exists()) {
                return Err(ApiError::InvalidArgument(format!(
                    "{}: no such file where the daemon looks (it does not see /home, /root or /tmp; lockerctl sends files open, but a folder of frames goes by path: put it under /var/lib/lockerd)",
                    p.display()
                )));
            }
        }
        let u = user.clone();
        let target = self.b.store.call(move |db| db.require_user(&u)).await?;
        let cancel = Arc::new(AtomicBool::new(false));
        let id = {
            let mut g = lock(&self.enrolling);
            if let Some(job) = g.as_ref() {
                return Err(ApiError::Busy(format!(
                    "enrollment job {} is running for {}",
                    job.id, job.holder.id
                )));
            }
            let id = self.next_job.fetch_add(1, Ordering::SeqCst);
            *g = Some(EnrollJob {
                id,
                holder: caller.clone(),
                cancel: cancel.clone(),
            });
            id
        };
        let ctx = EnrollCtx {
            store: self.b.store.clone(),
            events: self.b.events.clone(),
            vision,
            job: id,
            user: target,
            by: caller.id.clone(),
            via: caller.via.method(),
            // A duplicate is a confident match (the matcher's strict tier), so two look-alikes
            // that the margin tier keeps apart can both enroll.
            threshold: self.cfg.vision.strict_threshold,
            clock: self.b.clock.clone(),
        };
        let svc = self.clone();
        tokio::spawn(async move {
            let changed = ctx.run(source, allow_poor_photos, cancel).await;
            svc.finish_job(id, changed).await;
        });
        Ok(Response::EnrollStarted { job: id, user })
    }

    /// After a job ends: release the claim, then push the gallery if it changed.
    async fn finish_job(&self, id: u64, changed: bool) {
        {
            let mut g = lock(&self.enrolling);
            if g.as_ref().is_some_and(|j| j.id == id) {
                *g = None;
            }
        }
        if changed {
            self.push_gallery().await;
        }
    }
}

fn user_info(db: &Db, u: &User) -> Result<UserInfo, StoreError> {
    Ok(UserInfo::from_user(
        u,
        (
            db.template_count_of(u.id, EmbeddingModel::CURRENT)?,
            db.template_count_of(u.id, EmbeddingModel::DlibResnet)?,
        ),
        db.keypad_no(u.id)?.is_some(),
    ))
}

/// An enrollment job's progress event.
fn progress(user: &str, job: u64, status: EnrollStatus, done: bool, message: String) -> Event {
    Event::enroll(
        user,
        EnrollProgress {
            job,
            status,
            done,
            message,
        },
    )
}

struct EnrollCtx {
    store: Store,
    events: EventBus,
    vision: Arc<VisionShared>,
    job: u64,
    user: User,
    by: String,
    via: Method,
    threshold: f32,
    clock: Arc<dyn Clock + Sync>,
}

impl EnrollCtx {
    fn emit(&self, status: EnrollStatus, done: bool, message: String) {
        let e = progress(&self.user.name, self.job, status, done, message);
        self.send(Timed::at(self.clock.now_ms(), e));
    }

    fn send(&self, t: Timed) {
        log::info!("{}", serde_json::to_string(&t.event).unwrap_or_default());
        self.events.send(t);
    }

    /// Run the job to its end; true when templates were stored.
    async fn run(self, source: EnrollSource, allow_poor: bool, cancel: Arc<AtomicBool>) -> bool {
        let (vision, events, job, name, clock) = (
            self.vision.clone(),
            self.events.clone(),
            self.job,
            self.user.name.clone(),
            self.clock.clone(),
        );
        let src = source.clone();
        let stop = cancel.clone();
        let samples = tokio::task::spawn_blocking(move || {
            vision.enroll(&src, allow_poor, &stop, &mut |what, n| {
                let message = format!("{what}: {n} template(s)");
                let e = progress(&name, job, EnrollStatus::StagePassed, false, message);
                events.send(Timed::at(clock.now_ms(), e));
            })
        })
        .await
        .unwrap_or_else(|e| Err(VisionError::Enroll(Refusal::Cancelled, e.to_string())));
        let samples = match samples {
            Ok(s) if s.is_empty() => {
                self.emit(EnrollStatus::Failed, true, "no templates".into());
                return false;
            }
            Ok(s) => s,
            Err(e) => {
                let status = match &e {
                    VisionError::Enroll(Refusal::NoFace, _) => EnrollStatus::NoFace,
                    VisionError::Enroll(Refusal::NoBlink, _) => EnrollStatus::NoBlink,
                    VisionError::Enroll(Refusal::Poor, _) => EnrollStatus::TooDark,
                    _ => EnrollStatus::Failed,
                };
                if status != EnrollStatus::Failed {
                    self.emit(status, false, e.to_string());
                }
                self.emit(EnrollStatus::Failed, true, e.to_string());
                return false;
            }
        };
        match self.store_samples(samples, cancel).await {
            Ok(Ok((added, completed))) => {
                self.send(completed);
                added > 0
            }
            Ok(Err(other)) => {
                self.emit(
                    EnrollStatus::Duplicate,
                    false,
                    format!("this face is already enrolled as {other}"),
                );
                self.emit(
                    EnrollStatus::Failed,
                    true,
                    format!("refused: the face matches {other}"),
                );
                false
            }
            Err(e) => {
                self.emit(EnrollStatus::Failed, true, format!("not stored: {e}"));
                false
            }
        }
    }

    /// Refuse a face that matches another user; skip exact repeats of the user's own
    /// templates; store the rest with the audit row and the `completed` event in one
    /// transaction. `Ok(Err(name))` names the other user; `Ok(Ok((added, completed)))`
    /// gives the event to send.
    async fn store_samples(
        &self,
        samples: Vec<Sample>,
        cancel: Arc<AtomicBool>,
    ) -> Result<Result<(usize, Timed), String>, StoreError> {
        let (uid, uname, by, via, threshold) = (
            self.user.id,
            self.user.name.clone(),
            self.by.clone(),
            self.via,
            self.threshold,
        );
        let (bus, job, now) = (self.events.clone(), self.job, self.clock.now_ms());
        self.store
            .call(move |db| {
                // Cancelled while the faces were read: nothing is stored. On the store's
                // thread, so a cancel answered before this point always wins.
                if cancel.load(Ordering::SeqCst) {
                    return Err(StoreError::Invalid("the enrollment was cancelled".into()));
                }
                let users = gallery_users(db)?;
                let probes: Vec<Embedding> = samples.iter().map(|s| s.embedding.clone()).collect();
                let Some(mean) = Embedding::mean(&probes).and_then(|m| m.unit()) else {
                    return Ok(Err("nobody".into()));
                };
                for gu in users.iter().filter(|g| g.user_id != uid) {
                    if gu.templates.iter().any(|t| t.distance(&mean) < threshold) {
                        return Ok(Err(gu.name.clone()));
                    }
                }
                let own: Vec<Embedding> = users
                    .iter()
                    .filter(|g| g.user_id == uid)
                    .flat_map(|g| g.templates.clone())
                    .collect();
                let items: Vec<_> = samples
                    .into_iter()
                    .filter(|s| own.iter().all(|t| t.distance(&s.embedding) > 1e-3))
                    .map(|s| (s.embedding, s.quality, s.source))
                    .collect();
                let added = items.len();
                db.atomically(|db| {
                    db.add_templates(uid, &items)?;
                    db.audit_append(
                        &AuditEntry::new(via, Outcome::Info, "face enrolled")
                            .user(uid, &uname)
                            .evidence(json!({ "templates": added, "by": by })),
                    )?;
                    let total = db.template_count(uid)?;
                    let message = format!("{added} template(s) added, {total} in all");
                    let (t, pending) = bus.stage(
                        now,
                        progress(&uname, job, EnrollStatus::Completed, true, message),
                    );
                    pending.write(db)?;
                    Ok(Ok((added, t)))
                })
            })
            .await
    }
}
