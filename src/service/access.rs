//! Lock, unlock, keypad entries, the lockout and what the camera saw last: the requests
//! the access controller answers (its `Input::Admin` and `Input::Credential`, with a
//! oneshot reply). Part of the serving task ([`super::Service`]).

use super::*;

impl Service {
    /// `unlock`: the controller opens the lock, audited as the caller (role and id).
    pub(super) async fn unlock(
        &self,
        caller: &Caller,
        reason: String,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
        // Who, as the audit row and the event name them: the caller's role and id
        // ("operator uid 1001", "admin mqtt:ada").
        let by = format!("{} {}", caller.role.as_str(), caller.id);
        let message = self
            .to_controller(AdminRequest::Unlock { by, via, reason })
            .await?;
        Ok(Response::Done { message })
    }

    /// `lock`.
    pub(super) async fn lock(&self, caller: &Caller) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
        let message = self.to_controller(AdminRequest::Lock { by, via }).await?;
        Ok(Response::Done { message })
    }

    /// A keypad entry sent over the API (a remote credential): the controller checks it as if typed.
    pub(super) async fn keypad_entry(
        &self,
        caller: &Caller,
        keys: String,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
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

    /// `lockout show`: the live state from the controller, else from the store.
    pub(super) async fn lockout_show(&self) -> Result<Response, ApiError> {
        let now = self.b.clock.now_ms();
        let s = match &self.b.controller {
            Some(c) => c.state.borrow().lockout,
            None => self.b.store.call(|db| db.lockout_load()).await?,
        };
        Ok(Response::Lockout(crate::api::lockout_info(&s, now)))
    }

    /// `lockout reset`: through the controller, or on the store when no daemon runs.
    pub(super) async fn lockout_reset(&self, caller: &Caller) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
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

    /// `verify`: whom the camera saw in the last 10 s.
    pub(super) fn verify(&self) -> Result<Response, ApiError> {
        let v =
            self.b.vision.as_ref().ok_or_else(|| {
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
