//! Users: the list, and every change of one (add, remove, role, ban, unban, enable,
//! disable), each with its audit row and event in one transaction, then the new gallery
//! to vision. Part of the serving task ([`super::Service`]).

use super::*;

impl Service {
    /// `users list`, with each user's templates and credentials.
    pub(super) async fn users_list(&self) -> Result<Response, ApiError> {
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

    /// One of the user changes.
    pub(super) async fn user_change(
        &self,
        caller: &Caller,
        request: Request,
    ) -> Result<Response, ApiError> {
        match request {
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
            other => Err(ApiError::Internal(format!(
                "{} is not a user change",
                other.name()
            ))),
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
}

pub(super) fn user_info(db: &Db, u: &User) -> Result<UserInfo, StoreError> {
    Ok(UserInfo::from_user(
        u,
        (
            db.template_count_of(u.id, EmbeddingModel::CURRENT)?,
            db.template_count_of(u.id, EmbeddingModel::DlibResnet)?,
        ),
        db.keypad_no(u.id)?.is_some(),
    ))
}
