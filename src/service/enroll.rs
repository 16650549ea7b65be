//! Enrollment: one job at a time, claimed by its caller, fed by files, a photo or the
//! camera, its templates stored with an audit row; progress as `enroll` events. Part of
//! the serving task ([`super::Service`]).

use super::*;

impl Service {
    /// `enroll cancel`: by the job's holder (the same bus connection or principal) or an admin.
    pub(super) fn enroll_cancel(&self, caller: &Caller) -> Result<Response, ApiError> {
        let mut g = lock(&self.enrolling);
        // The holder (the same bus connection, or the same principal) or any admin.
        let holds = |j: &EnrollJob| match (&j.holder.bus_name, &caller.bus_name) {
            (Some(a), Some(b)) => a == b,
            _ => j.holder.id == caller.id,
        };
        match g.as_ref() {
            Some(job) if !holds(job) && caller.role != crate::api::Clearance::Admin => {
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

    pub(super) async fn start_enroll(
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
            threshold: self.cfg.duplicate_threshold,
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
