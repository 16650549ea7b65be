//! The D-Bus service `org.lockerd.Locker1` at `/org/lockerd/Locker1`, and the proxy
//! `lockerctl` uses (beside it, so the two cannot drift).
//!
//! A thin adapter onto the request API: each method call becomes one [`Request`] made
//! by a [`Caller`] whose uid and groups come from the bus daemon
//! (`GetConnectionCredentials` on the sender's unique name): the daemon checks every
//! caller itself, the bus policy only narrows who may talk. Errors are typed
//! (`org.lockerd.Locker1.Error.*`, one per [`ApiError`] kind). Structured results are
//! JSON strings (documented in `systemd/org.lockerd.Locker1.xml` and the README).
//!
//! Signals come from the API's secret-free event broadcast; the properties from its
//! status watch (PropertiesChanged on every change). An enrollment is claimed by the
//! caller's bus name and cancelled if that name leaves the bus.

use crate::api::event::{EventKind, Timed};
use crate::api::{ApiError, Caller, EnrollSource, Request, Response, Status};
use crate::service::ApiHandle;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{fdo, interface};

pub use lockerd_client::dbus::{
    api_error, wire, Locker1ClientProxy, BUS_NAME, ERROR_PREFIX, INTERFACE, OBJECT_PATH,
};

pub mod fair;
pub mod received;

/// The typed D-Bus errors (`org.lockerd.Locker1.Error.<Kind>`).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.lockerd.Locker1.Error")]
pub enum LockerError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NotAuthorized(String),
    NoSuchUser(String),
    AlreadyExists(String),
    InvalidArgument(String),
    LockedOut(String),
    Busy(String),
    Unavailable(String),
    Internal(String),
}

impl From<ApiError> for LockerError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::NotAuthorized(m) => LockerError::NotAuthorized(m),
            ApiError::NoSuchUser(m) => LockerError::NoSuchUser(m),
            ApiError::AlreadyExists(m) => LockerError::AlreadyExists(m),
            ApiError::InvalidArgument(m) => LockerError::InvalidArgument(m),
            ApiError::LockedOut(m) => LockerError::LockedOut(m),
            ApiError::Busy(m) => LockerError::Busy(m),
            ApiError::Unavailable(m) => LockerError::Unavailable(m),
            ApiError::Internal(m) => LockerError::Internal(m),
        }
    }
}

fn unexpected(r: Response) -> LockerError {
    LockerError::Internal(format!("unexpected reply {r:?}"))
}

/// The exported object.
pub struct Locker1 {
    api: ApiHandle,
    status: tokio::sync::watch::Receiver<Status>,
    /// Bus name that holds the running enrollment.
    holder: Arc<Mutex<Option<String>>>,
    /// Calls in flight and credentials, per caller connection.
    fair: Arc<fair::Fair>,
}

impl Locker1 {
    /// Who is calling (the bus's credentials for the sender, asked once per connection),
    /// and a slot for this call: a connection with [`fair::MAX_IN_FLIGHT`] calls being
    /// served already is told `Busy` at once.
    async fn caller(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
    ) -> Result<(Caller, fair::Slot), LockerError> {
        let sender = hdr
            .sender()
            .ok_or_else(|| LockerError::NotAuthorized("no sender on the message".into()))?
            .to_owned();
        let slot = self.fair.enter(sender.as_str()).ok_or_else(|| {
            LockerError::Busy(format!(
                "{} calls of this connection are being served; wait for their replies",
                fair::MAX_IN_FLIGHT
            ))
        })?;
        if let Some(c) = self.fair.known(sender.as_str()) {
            return Ok((c, slot));
        }
        let dbus = fdo::DBusProxy::new(conn).await?;
        let cred = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|e| LockerError::NotAuthorized(format!("cannot identify the caller: {e}")))?;
        let uid = cred.unix_user_id().ok_or_else(|| {
            LockerError::NotAuthorized("the bus did not give the caller's uid".into())
        })?;
        let gids = cred.unix_group_ids().cloned().unwrap_or_default();
        let caller = Caller::local(uid, &gids, Some(sender.to_string()));
        self.fair.remember(sender.as_str(), &caller);
        Ok((caller, slot))
    }

    async fn call(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        request: Request,
    ) -> Result<Response, LockerError> {
        let (caller, _slot) = self.caller(conn, hdr).await?;
        Ok(self.api.call(&caller, request).await?)
    }

    async fn done(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        request: Request,
    ) -> Result<String, LockerError> {
        match self.call(conn, hdr, request).await? {
            Response::Done { message } => Ok(message),
            other => Err(unexpected(other)),
        }
    }

    /// A request that changes a user: the user as it now is.
    async fn user(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        request: Request,
    ) -> Result<wire::UserReply, LockerError> {
        match self.call(conn, hdr, request).await? {
            Response::User { user } => Ok(wire::UserReply::from(&user)),
            other => Err(unexpected(other)),
        }
    }

    fn st(&self) -> Status {
        self.status.borrow().clone()
    }

    async fn enroll(
        &self,
        conn: &zbus::Connection,
        hdr: &Header<'_>,
        user: String,
        source: EnrollSource,
        allow_poor_photos: bool,
    ) -> Result<u64, LockerError> {
        let (caller, _slot) = self.caller(conn, hdr).await?;
        let r = self
            .api
            .call(
                &caller,
                Request::Enroll {
                    user,
                    source,
                    allow_poor_photos,
                },
            )
            .await?;
        match r {
            Response::EnrollStarted { job, .. } => {
                if let Ok(mut h) = self.holder.lock() {
                    *h = caller.bus_name.clone();
                }
                Ok(job)
            }
            other => Err(unexpected(other)),
        }
    }
}

#[interface(name = "org.lockerd.Locker1")]
impl Locker1 {
    /// Status: (kiosk, version, lock, door, keypad_locked_until_ms, camera, mode, users,
    /// running); lock, door, camera and mode by their names as the properties give them.
    /// Any caller.
    async fn status(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::StatusReply, LockerError> {
        match self.call(conn, &hdr, Request::Status).await? {
            Response::Status(s) => Ok(wire::StatusReply::from(&s)),
            other => Err(unexpected(other)),
        }
    }

    /// Open the lock for one pulse (operator). Returns a message.
    async fn unlock(
        &self,
        reason: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, LockerError> {
        self.done(conn, &hdr, Request::Unlock { reason }).await
    }

    /// Lock now (operator).
    async fn lock(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, LockerError> {
        self.done(conn, &hdr, Request::Lock).await
    }

    /// Users: (id, name, role, enabled, templates, legacy_templates, totp, created_ms)
    /// each; role is user, admin or banned (admin).
    async fn list_users(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<wire::UserReply>, LockerError> {
        match self.call(conn, &hdr, Request::UsersList).await? {
            Response::Users { users } => Ok(users.iter().map(wire::UserReply::from).collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Add a user with role user or admin (admin). Returns the user, as ListUsers gives
    /// each; so do the other user changes below.
    async fn add_user(
        &self,
        name: String,
        role: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        let role = parse_user_role(&role)?;
        self.user(conn, &hdr, Request::UserAdd { name, role }).await
    }

    async fn remove_user(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        self.user(conn, &hdr, Request::UserRemove { name }).await
    }

    async fn set_role(
        &self,
        name: String,
        role: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        let role = parse_user_role(&role)?;
        self.user(conn, &hdr, Request::UserRole { name, role })
            .await
    }

    async fn ban(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        self.user(conn, &hdr, Request::UserBan { name }).await
    }

    async fn unban(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        self.user(conn, &hdr, Request::UserUnban { name }).await
    }

    async fn enable(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        self.user(conn, &hdr, Request::UserEnable { name }).await
    }

    async fn disable(
        &self,
        name: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::UserReply, LockerError> {
        self.user(conn, &hdr, Request::UserDisable { name }).await
    }

    /// Start enrolling USER from photos, clips or folders readable by the daemon
    /// (admin). Returns the job id; progress comes as EnrollStatus signals. One job at a
    /// time, claimed by the caller's bus name.
    async fn enroll_from_files(
        &self,
        user: String,
        paths: Vec<String>,
        allow_poor_photos: bool,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<u64, LockerError> {
        let files = paths.into_iter().map(std::path::PathBuf::from).collect();
        self.enroll(
            conn,
            &hdr,
            user,
            EnrollSource::Files(files),
            allow_poor_photos,
        )
        .await
    }

    /// Start enrolling USER from photos or clips the caller sends open (admin): FILES
    /// are descriptors (at most 16, the system bus's limit), NAMES their names (only
    /// the extension is used, for the type). The daemon, which cannot see the caller's
    /// home or /tmp, copies them into its private temporary directory, enrolls from the
    /// copies and removes them when the job ends. Returns the job id, as EnrollFromFiles.
    async fn enroll_from_open_files(
        &self,
        user: String,
        names: Vec<String>,
        files: Vec<zbus::OwnedFd>,
        allow_poor_photos: bool,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<u64, LockerError> {
        // Authorized before anything is copied.
        let (caller, slot) = self.caller(conn, &hdr).await?;
        let probe = Request::Enroll {
            user: user.clone(),
            source: EnrollSource::Files(Vec::new()),
            allow_poor_photos,
        };
        crate::api::authorize(&caller, &probe)?;
        crate::api::check_bounds(&probe)?;
        let fds: Vec<std::os::fd::OwnedFd> = files.into_iter().map(Into::into).collect();
        let copies = tokio::task::spawn_blocking(move || {
            received::receive(&std::env::temp_dir(), &names, fds)
        })
        .await
        .map_err(|e| LockerError::Internal(e.to_string()))??;
        drop(slot);
        // Listen before starting, so the end of the job is not missed.
        let mut events = self.api.subscribe();
        let source = EnrollSource::Files(copies.paths.clone());
        let job = self
            .enroll(conn, &hdr, user, source, allow_poor_photos)
            .await?;
        // The copies stay until the job has ended (at most an hour).
        tokio::spawn(async move {
            let ended = async {
                loop {
                    match events.recv().await {
                        Ok(t)
                            if t.event
                                .enroll
                                .as_ref()
                                .is_some_and(|p| p.job == job && p.done) =>
                        {
                            break
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        _ => {}
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3600), ended).await;
            drop(copies);
        });
        Ok(job)
    }

    /// Start enrolling USER from the kiosk camera for up to SECONDS (admin).
    async fn enroll_from_camera(
        &self,
        user: String,
        seconds: u32,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<u64, LockerError> {
        self.enroll(conn, &hdr, user, EnrollSource::Camera { seconds }, false)
            .await
    }

    /// Cancel the running enrollment: the caller's own, or anyone's for an admin.
    async fn cancel_enroll(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, LockerError> {
        self.done(conn, &hdr, Request::EnrollCancel).await
    }

    /// Issue a one-time keypad code, bound to USER unless empty; TTL_S 0 = default
    /// (admin). The code is in this reply only (JSON: slot, code, keys, expires_ms, user).
    async fn issue_code(
        &self,
        user: String,
        ttl_s: u64,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::CodeReply, LockerError> {
        let req = Request::OtpIssue {
            user: (!user.is_empty()).then_some(user),
            ttl_s: (ttl_s > 0).then_some(ttl_s),
        };
        match self.call(conn, &hdr, req).await? {
            Response::Code(c) => Ok(wire::CodeReply::from(&c)),
            other => Err(unexpected(other)),
        }
    }

    /// Revoke the live one-time code in SLOT (admin).
    async fn revoke_code(
        &self,
        slot: u32,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, LockerError> {
        self.done(conn, &hdr, Request::OtpRevoke { slot }).await
    }

    /// Give USER a TOTP secret and a PIN (random unless PIN is given) (admin). The
    /// secret is in this reply only: (user, keypad_no, pin, uri).
    async fn enroll_totp(
        &self,
        user: String,
        pin: String,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::TotpReply, LockerError> {
        let req = Request::TotpEnroll {
            user,
            pin: (!pin.is_empty()).then_some(pin),
        };
        match self.call(conn, &hdr, req).await? {
            Response::Totp(t) => Ok(wire::TotpReply::from(&t)),
            other => Err(unexpected(other)),
        }
    }

    /// The keypad lockout: (strikes, level, until_ms, locked) (admin).
    async fn lockout_show(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::LockoutReply, LockerError> {
        match self.call(conn, &hdr, Request::LockoutShow).await? {
            Response::Lockout(l) => Ok(wire::LockoutReply::from(&l)),
            other => Err(unexpected(other)),
        }
    }

    /// Clear the keypad lockout and its escalation (admin).
    async fn lockout_reset(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<String, LockerError> {
        self.done(conn, &hdr, Request::LockoutReset).await
    }

    /// Audit rows since SINCE_MS, at most LIMIT, oldest first: (seq, ts_ms, method,
    /// outcome, user, reason, evidence) each, user empty when none, evidence its JSON
    /// text as hashed into the chain (admin).
    async fn audit_list(
        &self,
        since_ms: i64,
        limit: u32,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<Vec<wire::AuditRowReply>, LockerError> {
        match self
            .call(conn, &hdr, Request::AuditQuery { since_ms, limit })
            .await?
        {
            Response::Audit { rows } => Ok(rows.iter().map(wire::AuditRowReply::from).collect()),
            other => Err(unexpected(other)),
        }
    }

    /// Walk the audit hash chain: (ok, rows, first_bad, message), first_bad -1 when the
    /// chain holds (admin).
    async fn audit_verify(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::AuditCheckReply, LockerError> {
        match self.call(conn, &hdr, Request::AuditVerify).await? {
            Response::AuditCheck(c) => Ok(wire::AuditCheckReply::from(&c)),
            other => Err(unexpected(other)),
        }
    }

    /// Who is at the camera now: (present, user, live, distance, age_ms); present false
    /// when nobody was seen, user empty when nobody matched, distance -1 when none was
    /// measured (operator).
    async fn verify(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::SeenReply, LockerError> {
        match self.call(conn, &hdr, Request::Verify).await? {
            Response::Seen { seen } => Ok(wire::SeenReply::from(&seen)),
            other => Err(unexpected(other)),
        }
    }

    /// USER's face templates sealed to each of KIOSKS' card keys (all kiosks of the
    /// fleet with a card when empty), for `lockerctl fleet publish` to sign: (user, role,
    /// enabled, [(kiosk, key sealed to, sealed share)]). Nothing biometric in clear (admin).
    async fn fleet_export(
        &self,
        user: String,
        kiosks: Vec<String>,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(header)] hdr: Header<'_>,
    ) -> Result<wire::FleetFacesReply, LockerError> {
        match self
            .call(conn, &hdr, Request::FleetExport { user, kiosks })
            .await?
        {
            Response::FleetFaces(f) => Ok(wire::FleetFacesReply::from(&f)),
            other => Err(unexpected(other)),
        }
    }

    /// locked, unlocked, jammed, or unavailable (an ESP32 lock that stopped reporting).
    #[zbus(property)]
    fn lock_state(&self) -> String {
        crate::api::snake_name(&self.st().lock)
    }

    /// open, closed or unknown.
    #[zbus(property)]
    fn door(&self) -> String {
        crate::api::snake_name(&self.st().door)
    }

    /// Keypad locked until (ms since the epoch), 0 when not locked.
    #[zbus(property)]
    fn keypad_locked_until(&self) -> i64 {
        self.st().keypad_locked_until_ms
    }

    /// ok, unavailable or ended.
    #[zbus(property)]
    fn camera(&self) -> String {
        crate::api::snake_name(&self.st().camera)
    }

    /// face_and_keypad or keypad_only.
    #[zbus(property)]
    fn mode(&self) -> String {
        crate::api::snake_name(&self.st().mode)
    }

    #[zbus(property)]
    fn users(&self) -> u32 {
        self.st().users
    }

    #[zbus(property)]
    fn version(&self) -> String {
        self.st().version
    }

    /// The fleet's directory here: off, syncing, synced, offline (still granting) or
    /// cut_off (fleet users do not open by face).
    #[zbus(property)]
    fn fleet(&self) -> String {
        crate::api::snake_name(&self.st().fleet)
    }

    #[zbus(property)]
    fn kiosk(&self) -> String {
        self.st().kiosk
    }

    /// A grant: who and how (face, totp, otp, dbus, mqtt, admin).
    #[zbus(signal)]
    async fn access_granted(
        emitter: &SignalEmitter<'_>,
        user: &str,
        method: &str,
    ) -> zbus::Result<()>;

    /// A denial: how and why (no_match, no_blink, wrong_code, ...).
    #[zbus(signal)]
    async fn access_denied(
        emitter: &SignalEmitter<'_>,
        method: &str,
        reason: &str,
    ) -> zbus::Result<()>;

    /// An alert: keypad_lockout, banned_user, door_forced, door_held_open,
    /// face_rate_limited or fault.
    #[zbus(signal)]
    async fn alert(emitter: &SignalEmitter<'_>, kind: &str, message: &str) -> zbus::Result<()>;

    /// Enrollment progress: stage-passed, no-face, no-blink, too-dark, duplicate,
    /// completed, failed; DONE on the last one of a job.
    #[zbus(signal)]
    async fn enroll_status(
        emitter: &SignalEmitter<'_>,
        job: u64,
        user: &str,
        status: &str,
        done: bool,
        message: &str,
    ) -> zbus::Result<()>;

    /// Every event as a JSON object (secret-free), for `lockerctl watch`.
    #[zbus(signal)]
    async fn event(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;
}

fn parse_user_role(s: &str) -> Result<crate::types::Role, LockerError> {
    match crate::types::Role::parse(s) {
        Some(r) => Ok(r),
        None => Err(LockerError::InvalidArgument(format!(
            "role must be user, admin or banned, not {s:?}"
        ))),
    }
}

/// The running service; dropping it leaves the bus.
pub struct BusService {
    pub connection: zbus::Connection,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Fires when the connection to the bus is gone (the bus daemon restarted, or it
    /// dropped us).
    lost: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl BusService {
    /// Wait until the connection to the bus is lost.
    pub async fn lost(&mut self) {
        match self.lost.take() {
            Some(rx) => {
                let _ = rx.await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Keep lockerd on the bus: serve, and whenever the connection is lost (the bus daemon
/// restarted or dropped us), say so and serve again, waiting 1 s doubling to 30 s
/// between tries. `first` is the service already started, if it could be. Abort the
/// task to leave the bus.
pub fn supervise(api: ApiHandle, first: Option<BusService>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut current = first;
        loop {
            if let Some(bus) = current.as_mut() {
                bus.lost().await;
                log::error!("D-Bus: the connection to the bus was lost; reconnecting");
            }
            current = None;
            let mut wait = std::time::Duration::from_secs(1);
            while current.is_none() {
                tokio::time::sleep(wait).await;
                match serve(api.clone()).await {
                    Ok(b) => {
                        log::info!("D-Bus: back on the bus as {BUS_NAME}");
                        current = Some(b);
                    }
                    Err(e) => {
                        log::warn!("D-Bus: not on the bus yet: {e}");
                        wait = (wait * 2).min(std::time::Duration::from_secs(30));
                    }
                }
            }
        }
    })
}

impl Drop for BusService {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Export the service on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` is honoured) and
/// forward events and status changes. Fails if the name is owned already.
pub async fn serve(api: ApiHandle) -> zbus::Result<BusService> {
    let holder: Arc<Mutex<Option<String>>> = Arc::default();
    let fair: Arc<fair::Fair> = Arc::default();
    let iface = Locker1 {
        api: api.clone(),
        status: api.status(),
        holder: holder.clone(),
        fair: fair.clone(),
    };
    let mut events = api.subscribe();
    let connection = zbus::connection::Builder::system()
        .serve_at(OBJECT_PATH, iface)
        .name(BUS_NAME)
        .build()
        .await?;
    let iface_ref = connection
        .object_server()
        .interface::<_, Locker1>(OBJECT_PATH)
        .await?;
    let mut tasks = Vec::new();

    // Events -> signals.
    let emitter = iface_ref.signal_emitter().to_owned();
    tasks.push(tokio::spawn(async move {
        loop {
            let t: Timed = match events.recv().await {
                Ok(t) => t,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    log::warn!("D-Bus: {n} events dropped (slow bus)");
                    continue;
                }
                Err(_) => break,
            };
            let _ = emit(&emitter, &t).await;
        }
    }));

    // Status changes -> PropertiesChanged.
    let mut status = api.status();
    let iref = iface_ref.clone();
    tasks.push(tokio::spawn(async move {
        let mut last = status.borrow().clone();
        while status.changed().await.is_ok() {
            let now = status.borrow_and_update().clone();
            let iface = iref.get().await;
            let em = iref.signal_emitter();
            if now.lock != last.lock {
                let _ = iface.lock_state_changed(em).await;
            }
            if now.door != last.door {
                let _ = iface.door_changed(em).await;
            }
            if now.keypad_locked_until_ms != last.keypad_locked_until_ms {
                let _ = iface.keypad_locked_until_changed(em).await;
            }
            if now.camera != last.camera {
                let _ = iface.camera_changed(em).await;
            }
            if now.mode != last.mode {
                let _ = iface.mode_changed(em).await;
            }
            if now.users != last.users {
                let _ = iface.users_changed(em).await;
            }
            if now.fleet != last.fleet {
                let _ = iface.fleet_changed(em).await;
            }
            last = now;
        }
    }));

    // An enrollment's holder leaving the bus releases it. This stream ends when the
    // connection does: that is how a lost connection is noticed.
    let dbus = fdo::DBusProxy::new(&connection).await?;
    let mut gone = dbus.receive_name_owner_changed().await?;
    let (lost_tx, lost) = tokio::sync::oneshot::channel();
    tasks.push(tokio::spawn(async move {
        let _lost = lost_tx;
        while let Some(sig) = gone.next().await {
            let Ok(args) = sig.args() else { continue };
            if args.new_owner().is_some() {
                continue;
            }
            let name = args.name().to_string();
            fair.forget(&name);
            let held = holder
                .lock()
                .map(|h| h.as_deref() == Some(name.as_str()))
                .unwrap_or(false);
            if held {
                log::info!("D-Bus: {name} left the bus; releasing its enrollment");
                api.release(&name).await;
                if let Ok(mut h) = holder.lock() {
                    *h = None;
                }
            }
        }
    }));
    Ok(BusService {
        connection,
        tasks,
        lost: Some(lost),
    })
}

async fn emit(em: &SignalEmitter<'_>, t: &Timed) -> zbus::Result<()> {
    let e = &t.event;
    let method = e.method.map(|m| m.as_str()).unwrap_or("");
    match e.event {
        EventKind::Unlock => {
            Locker1::access_granted(em, e.user.as_deref().unwrap_or(""), method).await?
        }
        EventKind::Deny => {
            Locker1::access_denied(em, method, e.reason.as_deref().unwrap_or("")).await?
        }
        EventKind::Alert => {
            if let Some(a) = &e.alert {
                Locker1::alert(em, a.kind.as_str(), &a.message).await?;
            }
        }
        EventKind::Enroll => {
            if let Some(p) = &e.enroll {
                Locker1::enroll_status(
                    em,
                    p.job,
                    e.user.as_deref().unwrap_or(""),
                    p.status.as_str(),
                    p.done,
                    &p.message,
                )
                .await?;
            }
        }
        _ => {}
    }
    let body = serde_json::to_string(t).unwrap_or_default();
    Locker1::event(em, &body).await
}

/// What `lockerd-lab bench dbus` measured: round trips of one method through the bus.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub method: String,
    pub calls: u64,
    pub concurrency: u64,
    pub ok: u64,
    pub not_authorized: u64,
    /// Refused for the connection's fair share ([`fair::MAX_IN_FLIGHT`] in flight).
    pub busy: u64,
    pub other_errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub calls_per_s: f64,
}

/// Call `method` (status | users_list | unlock) `calls` times with `concurrency` calls
/// in flight, as whoever runs this, and time every reply. Every call is answered or
/// counted as an error: nothing is dropped silently.
pub async fn bench(method: &str, calls: u64, concurrency: u64) -> Result<BenchReport, ApiError> {
    let conn = zbus::Connection::system()
        .await
        .map_err(|e| api_error(&e))?;
    let proxy = Locker1ClientProxy::new(&conn)
        .await
        .map_err(|e| api_error(&e))?;
    let method_s = method.to_string();
    let t0 = std::time::Instant::now();
    let concurrency = concurrency.clamp(1, 256);
    let per = calls.div_ceil(concurrency);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (p, m) = (proxy.clone(), method_s.clone());
        let n = per.min(calls.saturating_sub(w * per));
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t = std::time::Instant::now();
                let r = match m.as_str() {
                    "users_list" => p.list_users().await.map(|_| ()),
                    "unlock" => p.unlock("bench").await.map(|_| ()),
                    _ => p.status().await.map(|_| ()),
                };
                out.push((
                    t.elapsed().as_secs_f64() * 1000.0,
                    r.map_err(|e| api_error(&e)),
                ));
            }
            out
        }));
    }
    let mut lat = Vec::new();
    let (mut ok, mut na, mut busy, mut other) = (0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        for (ms, r) in t.await.map_err(|e| ApiError::Internal(e.to_string()))? {
            lat.push(ms);
            match r {
                Ok(_) => ok += 1,
                Err(ApiError::NotAuthorized(_)) => na += 1,
                Err(ApiError::Busy(_)) => busy += 1,
                Err(_) => other += 1,
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| {
        if lat.is_empty() {
            0.0
        } else {
            lat[((lat.len() - 1) as f64 * q).round() as usize]
        }
    };
    Ok(BenchReport {
        method: method_s,
        calls: lat.len() as u64,
        concurrency,
        ok,
        not_authorized: na,
        busy,
        other_errors: other,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        calls_per_s: lat.len() as f64 / wall.max(1e-9),
    })
}
