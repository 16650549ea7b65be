//! One-time codes and TOTP: issued in one transaction with their audit row and event;
//! the secret goes only into the reply. Part of the serving task ([`super::Service`]).

use super::*;

impl Service {
    /// `code issue`: a one-time code, for anyone or bound to a user.
    pub(super) async fn otp_issue(
        &self,
        caller: &Caller,
        user: Option<String>,
        ttl_s: Option<u64>,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
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
                    let mut entry = AuditEntry::new(via, Outcome::Info, "one_time_code_issued")
                        .evidence(json!({ "slot": c.slot, "expires_ms": c.expires_ms, "by": by }));
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

    /// `code revoke`.
    pub(super) async fn otp_revoke(
        &self,
        caller: &Caller,
        slot: u32,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
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

    /// `totp enroll`: a TOTP secret (and keypad number, optional PIN) for a user.
    pub(super) async fn totp_enroll(
        &self,
        caller: &Caller,
        user: String,
        pin: Option<String>,
    ) -> Result<Response, ApiError> {
        let via = caller.via.method();
        let by = caller.id.clone();
        let cfg = self.cfg.access.clone();
        let issuer = format!("lockerd-{}", self.cfg.kiosk_name);
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
                    let en = credentials::enroll_totp(db, &cfg, &u, &issuer, pin.as_deref(), now)?;
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
}
