//! Fleet user records (`lockerd_client::fleet`), applied here only through the request
//! API (`Request::FleetApply`, `Via::Fleet`; the bridge checked the signature): the
//! version must rise above the one held, and the change, the version and the audit row
//! are one transaction. A record that names other kiosks only, or a tombstone, removes
//! the user here. Part of the serving task ([`super::Service`]).

use super::*;
use lockerd_client::fleet::Record;

/// What a record did here.
enum Applied {
    /// Not above the version held: refused, and audited.
    Stale(i64),
    /// The user as it now is here, or None when the record removed them (or kept
    /// nobody who was not here).
    Done(Option<UserInfo>),
}

impl Service {
    pub(super) async fn fleet_apply(
        &self,
        caller: &Caller,
        record: Record,
        key: String,
    ) -> Result<Response, ApiError> {
        let keep = record.applies_to(&self.cfg.kiosk_id);
        let (event, pending) = self.stage(
            Event::new(EventKind::UserChanged)
                .user(Some(record.user.clone()))
                .method(Method::Fleet)
                .reason(if keep {
                    "fleet record"
                } else {
                    "fleet removal"
                }),
        );
        let by = caller.id.clone();
        let r = record.clone();
        let (applied, count) = self
            .b
            .store
            .call(move |db| {
                db.atomically(|db| {
                    let held = db.fleet_version(&r.user)?;
                    let evidence = json!({
                        "by": by, "key": key, "version": r.version, "held": held,
                        "role": r.role, "enabled": r.enabled, "kept": keep,
                    });
                    if let Some(h) = held.filter(|h| *h >= r.version) {
                        // A replay or a rollback: nothing changes but the audit.
                        db.audit_append(
                            &AuditEntry::new(Method::Fleet, Outcome::Deny, "fleet_record_stale")
                                .evidence(evidence),
                        )?;
                        return Ok((Applied::Stale(h), None));
                    }
                    let existing = db.user_by_name(&r.user)?;
                    let user = match (keep, existing) {
                        (false, Some(_)) => {
                            db.remove_user(&r.user)?;
                            None
                        }
                        (false, None) => None,
                        (true, existing) => {
                            if existing.is_none() {
                                db.add_user(&r.user, UserRole::User)?;
                            }
                            db.set_role(&r.user, r.role)?;
                            Some(db.set_enabled(&r.user, r.enabled)?)
                        }
                    };
                    db.fleet_set_version(&r.user, r.version, &key)?;
                    let mut entry =
                        AuditEntry::new(Method::Fleet, Outcome::Info, "fleet_record_applied")
                            .evidence(evidence);
                    if let Some(u) = &user {
                        entry = entry.user(u.id, &u.name);
                    }
                    db.audit_append(&entry)?;
                    pending.write(db)?;
                    let info = user.as_ref().map(|u| super::users::user_info(db, u));
                    let count = db.list_users()?.len();
                    Ok((Applied::Done(info.transpose()?), Some(count)))
                })
            })
            .await?;
        match applied {
            Applied::Stale(held) => Err(ApiError::InvalidArgument(format!(
                "fleet record {} for {} is not above version {held} held here",
                record.version, record.user
            ))),
            Applied::Done(info) => {
                if let Some(c) = count {
                    self.users.store(c as u32, Ordering::SeqCst);
                }
                self.changed.notify_one();
                self.publish_staged(event);
                self.push_gallery().await;
                Ok(match info {
                    Some(user) => Response::User { user },
                    None => Response::Done {
                        message: format!(
                            "{}: fleet version {} applied: not kept at this kiosk",
                            record.user, record.version
                        ),
                    },
                })
            }
        }
    }
}
