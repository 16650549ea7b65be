//! Fleet user records (`lockerd_client::fleet`), applied here only through the request
//! API (`Request::FleetApply`, `Via::Fleet`; the bridge checked the signature): the
//! version must rise above the one held, and the change, the version and the audit row
//! are one transaction. A record that names other kiosks only, or a tombstone, removes
//! the user here. A record's face share for this kiosk is opened with this kiosk's X25519
//! secret (kept in the encrypted store) and replaces the user's templates in the same
//! transaction. `Request::FleetExport` seals a user's templates to other kiosks' card
//! keys (as the fleet task saw them: [`FleetBackend::keys`]) for an admin to sign.
//! Part of the serving task ([`super::Service`]).

use super::*;
use data_encoding::BASE64;
use lockerd_client::fleet::{self as fl, Record};
use std::collections::BTreeMap;

/// What a kiosk's retained card says that exports need: its X25519 public key and its
/// groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KioskKey {
    pub key: [u8; 32],
    pub groups: Vec<String>,
}

/// The fleet's kiosks by id, from their retained cards.
pub type KioskKeys = BTreeMap<String, KioskKey>;

/// The kiosks (and their keys) that `targets` (kiosk ids and `@group`s; none: every
/// kiosk) name among `cards`, each once. A kiosk id with no card is an error: its
/// share could not be sealed.
fn resolve(targets: &[String], cards: &KioskKeys) -> Result<Vec<(String, [u8; 32])>, String> {
    if targets.is_empty() {
        return Ok(cards.iter().map(|(k, c)| (k.clone(), c.key)).collect());
    }
    for t in targets.iter().filter(|t| !t.starts_with('@')) {
        if !cards.contains_key(t) {
            return Err(format!("kiosk {t:?} has no card on the broker"));
        }
    }
    Ok(cards
        .iter()
        .filter(|(k, c)| targets.iter().any(|t| fl::names(t, k, &c.groups)))
        .map(|(k, c)| (k.clone(), c.key))
        .collect())
}

/// What the service knows of the fleet: the gate of fleet users' faces, the kiosks'
/// keys (both kept by the fleet task) and the fleet's id.
#[derive(Debug, Clone)]
pub struct FleetBackend {
    pub id: String,
    pub gate: crate::api::FleetGate,
    pub keys: watch::Receiver<KioskKeys>,
}

/// The store setting that holds this kiosk's X25519 secret (base64).
const SEAL_SECRET: &str = "fleet.seal_secret";

/// This kiosk's X25519 secret, made (and kept in the encrypted store) the first time.
pub fn seal_secret(db: &mut Db) -> Result<[u8; 32], StoreError> {
    if let Some(k) = db
        .setting(SEAL_SECRET)?
        .and_then(|s| lockerd_client::mqtt::envelope::key32(&s))
    {
        return Ok(k);
    }
    let k = crypto_box::SecretKey::generate(&mut rand::rngs::OsRng).to_bytes();
    db.set_setting(SEAL_SECRET, &BASE64.encode(&k))?;
    Ok(k)
}

/// What became of a record's face share here.
#[derive(Debug, Clone, Copy, PartialEq)]
enum FacesDone {
    /// The record says nothing of faces: the templates held stay.
    Kept,
    /// Replaced with the share's templates (how many).
    Replaced(usize),
    /// The share could not be opened: the templates are dropped (audited).
    Unreadable,
}

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
        self: &Arc<Self>,
        caller: &Caller,
        record: Record,
        key: String,
    ) -> Result<Response, ApiError> {
        let keep = record.applies_to(&self.cfg.kiosk_id, &self.cfg.fleet_groups);
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
        let kiosk = self.cfg.kiosk_id.clone();
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
                    let (faces, why) = match (&user, &r.faces) {
                        (Some(u), Some(shares)) => apply_faces(db, u, &r, shares, &kiosk)?,
                        _ => (FacesDone::Kept, None),
                    };
                    db.fleet_set_version(&r.user, r.version, &key, keep)?;
                    let mut evidence = evidence;
                    evidence["faces"] = match faces {
                        FacesDone::Kept => json!("kept"),
                        FacesDone::Replaced(n) => json!(n),
                        FacesDone::Unreadable => json!("unreadable"),
                    };
                    if let Some(why) = why {
                        evidence["faces_error"] = json!(why);
                    }
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
                // Not awaited: the next record is applied meanwhile, and the records
                // that come during a reload share the next one. The store has the
                // change already, and a grant reads the user's role and enabled there.
                let svc = self.clone();
                tokio::spawn(async move { svc.push_gallery().await });
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

/// Open this kiosk's share of `r`'s faces and make it `u`'s templates (none when the
/// record has no share for this kiosk, or one that does not open: then say why).
fn apply_faces(
    db: &mut Db,
    u: &User,
    r: &Record,
    shares: &[fl::SealedFaces],
    kiosk: &str,
) -> Result<(FacesDone, Option<String>), StoreError> {
    let Some(share) = shares.iter().find(|s| s.kiosk == kiosk) else {
        db.replace_templates(u.id, &[])?;
        return Ok((FacesDone::Replaced(0), None));
    };
    let secret = seal_secret(db)?;
    match fl::open_faces(&secret, share, &r.fleet, &r.user, kiosk) {
        Ok(faces) => {
            let items: Vec<_> = faces
                .templates
                .iter()
                .filter_map(|t| Some((t.model, t.embedding()?, t.quality, t.source.clone())))
                .collect();
            db.replace_templates(u.id, &items)?;
            Ok((FacesDone::Replaced(items.len()), None))
        }
        Err(e) => {
            // Not ours to open (a store made anew since): no face opens here for them
            // until the admin publishes again.
            db.replace_templates(u.id, &[])?;
            Ok((FacesDone::Unreadable, Some(e.to_string())))
        }
    }
}

impl Service {
    /// `user`'s templates sealed to each of `kiosks`' card keys (every kiosk with a card
    /// when empty), audited as an export.
    pub(super) async fn fleet_export(
        &self,
        caller: &Caller,
        user: String,
        kiosks: Vec<String>,
    ) -> Result<Response, ApiError> {
        let Some(fleet) = self.b.fleet.clone() else {
            return Err(ApiError::Unavailable(
                "this kiosk is in no fleet ([fleet] in lockerd.toml)".into(),
            ));
        };
        let targets = resolve(&kiosks, &fleet.keys.borrow()).map_err(|e| {
            ApiError::InvalidArgument(format!("{e} (never connected to fleet {})", fleet.id))
        })?;
        let by = caller.id.clone();
        let (fleet_id, name) = (fleet.id.clone(), user.clone());
        let (u, faces) = self
            .b
            .store
            .call(move |db| {
                let u = db.require_user(&name)?;
                let templates: Vec<fl::FaceTemplate> = db
                    .templates_of(u.id)?
                    .iter()
                    .map(|t| fl::FaceTemplate::new(t.model, &t.source, t.quality, &t.embedding))
                    .collect();
                let mut faces = Vec::with_capacity(targets.len());
                for (kiosk, key) in &targets {
                    let share = fl::Faces {
                        fleet: fleet_id.clone(),
                        user: u.name.clone(),
                        kiosk: kiosk.clone(),
                        templates: templates.clone(),
                    };
                    faces.push(
                        fl::seal_faces(key, &share)
                            .map_err(|e| StoreError::Corrupt(format!("sealing: {e}")))?,
                    );
                }
                let kiosks: Vec<&str> = faces.iter().map(|f| f.kiosk.as_str()).collect();
                db.audit_append(
                    &AuditEntry::new(Method::Fleet, Outcome::Info, "fleet_faces_exported")
                        .user(u.id, &u.name)
                        .evidence(json!({
                            "by": by, "templates": templates.len(), "kiosks": kiosks,
                        })),
                )?;
                Ok((u, faces))
            })
            .await?;
        Ok(Response::FleetFaces(crate::api::FleetFaces {
            user: u.name,
            role: u.role,
            enabled: u.enabled,
            faces,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_go_to_the_kiosks_and_groups_named_each_once() {
        let card = |n: u8, groups: &[&str]| KioskKey {
            key: [n; 32],
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let cards: KioskKeys = [
            ("k1".to_string(), card(1, &["lobby"])),
            ("k2".to_string(), card(2, &["lobby", "floor1"])),
            ("k3".to_string(), card(3, &[])),
        ]
        .into_iter()
        .collect();
        let ids = |t: &[&str]| {
            let t: Vec<String> = t.iter().map(|s| s.to_string()).collect();
            resolve(&t, &cards).map(|v| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>())
        };
        assert_eq!(ids(&[]).unwrap(), ["k1", "k2", "k3"]);
        assert_eq!(ids(&["@lobby"]).unwrap(), ["k1", "k2"]);
        assert_eq!(ids(&["@floor1", "k2", "k3"]).unwrap(), ["k2", "k3"]);
        assert_eq!(ids(&["@nobody"]).unwrap(), Vec::<String>::new());
        assert!(ids(&["k9"]).unwrap_err().contains("k9"));
        // Each kiosk's share is sealed to its own key.
        let t = resolve(&["k3".to_string()], &cards).unwrap();
        assert_eq!(t, vec![("k3".to_string(), [3; 32])]);
    }
}
