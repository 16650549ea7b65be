//! The D-Bus client side: the names, the typed proxy of `org.lockerd.Locker1` (what the
//! daemon's `dbus` module serves) and the mapping of its error names back to
//! [`ApiError`].

use crate::api::ApiError;
use zbus::proxy;

pub const BUS_NAME: &str = "org.lockerd.Locker1";
pub const OBJECT_PATH: &str = "/org/lockerd/Locker1";
pub const INTERFACE: &str = "org.lockerd.Locker1";
pub const ERROR_PREFIX: &str = "org.lockerd.Locker1.Error";

/// Turn an error from a proxy call back into the API's error (the CLI side).
pub fn api_error(e: &zbus::Error) -> ApiError {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            let msg = msg.clone().unwrap_or_default();
            match name.as_str().strip_prefix(ERROR_PREFIX) {
                Some(kind) => ApiError::from_kind(kind.trim_start_matches('.'), msg),
                None if name.as_str() == "org.freedesktop.DBus.Error.ServiceUnknown"
                    || name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
                {
                    ApiError::Unavailable("lockerd is not running".into())
                }
                None if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied" => {
                    ApiError::NotAuthorized(format!("the bus policy refused the call: {msg}"))
                }
                None => ApiError::Internal(format!("{name}: {msg}")),
            }
        }
        zbus::Error::InputOutput(_) | zbus::Error::Address(_) => ApiError::Unavailable(
            "cannot reach the system bus (is dbus running? DBUS_SYSTEM_BUS_ADDRESS?)".into(),
        ),
        other => ApiError::Internal(other.to_string()),
    }
}

/// The client side, for `lockerctl` and the tests.
#[proxy(
    interface = "org.lockerd.Locker1",
    default_service = "org.lockerd.Locker1",
    default_path = "/org/lockerd/Locker1"
)]
pub trait Locker1Client {
    fn status(&self) -> zbus::Result<wire::StatusReply>;
    fn unlock(&self, reason: &str) -> zbus::Result<String>;
    fn lock(&self) -> zbus::Result<String>;
    fn list_users(&self) -> zbus::Result<Vec<wire::UserReply>>;
    fn add_user(&self, name: &str, role: &str) -> zbus::Result<wire::UserReply>;
    fn remove_user(&self, name: &str) -> zbus::Result<wire::UserReply>;
    fn set_role(&self, name: &str, role: &str) -> zbus::Result<wire::UserReply>;
    fn ban(&self, name: &str) -> zbus::Result<wire::UserReply>;
    fn unban(&self, name: &str) -> zbus::Result<wire::UserReply>;
    fn enable(&self, name: &str) -> zbus::Result<wire::UserReply>;
    fn disable(&self, name: &str) -> zbus::Result<wire::UserReply>;
    fn enroll_from_files(
        &self,
        user: &str,
        paths: &[&str],
        allow_poor_photos: bool,
    ) -> zbus::Result<u64>;
    fn enroll_from_open_files(
        &self,
        user: &str,
        names: &[&str],
        files: &[zbus::Fd<'_>],
        allow_poor_photos: bool,
    ) -> zbus::Result<u64>;
    fn enroll_from_camera(&self, user: &str, seconds: u32) -> zbus::Result<u64>;
    fn cancel_enroll(&self) -> zbus::Result<String>;
    fn issue_code(&self, user: &str, ttl_s: u64) -> zbus::Result<wire::CodeReply>;
    fn revoke_code(&self, slot: u32) -> zbus::Result<String>;
    fn enroll_totp(&self, user: &str, pin: &str) -> zbus::Result<wire::TotpReply>;
    fn lockout_show(&self) -> zbus::Result<wire::LockoutReply>;
    fn lockout_reset(&self) -> zbus::Result<String>;
    fn audit_list(&self, since_ms: i64, limit: u32) -> zbus::Result<Vec<wire::AuditRowReply>>;
    fn audit_verify(&self) -> zbus::Result<wire::AuditCheckReply>;
    fn verify(&self) -> zbus::Result<wire::SeenReply>;
    fn fleet_export(&self, user: &str, kiosks: &[&str]) -> zbus::Result<wire::FleetFacesReply>;

    #[zbus(property)]
    fn lock_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn door(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn keypad_locked_until(&self) -> zbus::Result<i64>;
    #[zbus(property)]
    fn camera(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn mode(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn users(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn fleet(&self) -> zbus::Result<String>;

    #[zbus(signal)]
    fn event(&self, json: &str) -> zbus::Result<()>;
    #[zbus(signal)]
    fn enroll_status(
        &self,
        job: u64,
        user: &str,
        status: &str,
        done: bool,
        message: &str,
    ) -> zbus::Result<()>;
}

/// The typed replies of `org.lockerd.Locker1`, as D-Bus structures (fprintd-like: every
/// field a basic D-Bus type, named in the interface XML). Enumerations travel as their
/// snake_case names, absent values as an empty string or -1, the audit evidence as its
/// JSON text. [`crate::api`]'s types convert into them (the daemon) and back (`lockerctl`).
pub mod wire {
    use crate::api::{
        snake_name as name, ApiError, AuditCheck, AuditItem, FleetFaces, IssuedCode, LockoutInfo,
        Seen, Status, TotpEnrolled, UserInfo,
    };
    use crate::fleet::SealedFaces;
    use serde::{de::DeserializeOwned, Deserialize, Serialize};
    use zbus::zvariant::Type;

    /// An enumeration from its name; an unknown one is the daemon speaking a newer
    /// interface than this client.
    fn named<T: DeserializeOwned>(s: &str, what: &str) -> Result<T, ApiError> {
        serde_json::from_value(serde_json::Value::String(s.to_owned()))
            .map_err(|_| ApiError::Internal(format!("unknown {what} {s:?} from lockerd")))
    }

    /// `Status`: `(ssssxssubs)`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct StatusReply {
        pub kiosk: String,
        pub version: String,
        pub lock: String,
        pub door: String,
        pub keypad_locked_until_ms: i64,
        pub camera: String,
        pub mode: String,
        pub users: u32,
        pub running: bool,
        pub fleet: String,
    }

    impl From<&Status> for StatusReply {
        fn from(s: &Status) -> Self {
            StatusReply {
                kiosk: s.kiosk.clone(),
                version: s.version.clone(),
                lock: name(&s.lock),
                door: name(&s.door),
                keypad_locked_until_ms: s.keypad_locked_until_ms,
                camera: name(&s.camera),
                mode: name(&s.mode),
                users: s.users,
                running: s.running,
                fleet: name(&s.fleet),
            }
        }
    }

    impl TryFrom<StatusReply> for Status {
        type Error = ApiError;
        fn try_from(s: StatusReply) -> Result<Self, ApiError> {
            Ok(Status {
                kiosk: s.kiosk,
                version: s.version,
                lock: named(&s.lock, "lock state")?,
                door: named(&s.door, "door state")?,
                keypad_locked_until_ms: s.keypad_locked_until_ms,
                camera: named(&s.camera, "camera state")?,
                mode: named(&s.mode, "mode")?,
                users: s.users,
                running: s.running,
                fleet: named(&s.fleet, "fleet state")?,
            })
        }
    }

    /// `FleetExport`: `(ssba(sss))`: the user, role, enabled, and per kiosk (kiosk, the
    /// key sealed to, the sealed share).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct FleetFacesReply {
        pub user: String,
        pub role: String,
        pub enabled: bool,
        pub faces: Vec<(String, String, String)>,
    }

    impl From<&FleetFaces> for FleetFacesReply {
        fn from(f: &FleetFaces) -> Self {
            FleetFacesReply {
                user: f.user.clone(),
                role: name(&f.role),
                enabled: f.enabled,
                faces: f
                    .faces
                    .iter()
                    .map(|s| (s.kiosk.clone(), s.to.clone(), s.sealed.clone()))
                    .collect(),
            }
        }
    }

    impl TryFrom<FleetFacesReply> for FleetFaces {
        type Error = ApiError;
        fn try_from(f: FleetFacesReply) -> Result<Self, ApiError> {
            Ok(FleetFaces {
                user: f.user,
                role: named(&f.role, "role")?,
                enabled: f.enabled,
                faces: f
                    .faces
                    .into_iter()
                    .map(|(kiosk, to, sealed)| SealedFaces { kiosk, to, sealed })
                    .collect(),
            })
        }
    }

    /// A user: `(xssbxxbx)`.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct UserReply {
        pub id: i64,
        pub name: String,
        pub role: String,
        pub enabled: bool,
        pub templates: i64,
        pub legacy_templates: i64,
        pub totp: bool,
        pub created_ms: i64,
    }

    impl From<&UserInfo> for UserReply {
        fn from(u: &UserInfo) -> Self {
            UserReply {
                id: u.id,
                name: u.name.clone(),
                role: u.role.as_str().to_owned(),
                enabled: u.enabled,
                templates: u.templates,
                legacy_templates: u.legacy_templates,
                totp: u.totp,
                created_ms: u.created_ms,
            }
        }
    }

    impl TryFrom<UserReply> for UserInfo {
        type Error = ApiError;
        fn try_from(u: UserReply) -> Result<Self, ApiError> {
            Ok(UserInfo {
                id: u.id,
                role: lockerd_core::types::Role::parse(&u.role).ok_or_else(|| {
                    ApiError::Internal(format!("unknown role {:?} from lockerd", u.role))
                })?,
                name: u.name,
                enabled: u.enabled,
                templates: u.templates,
                legacy_templates: u.legacy_templates,
                totp: u.totp,
                created_ms: u.created_ms,
            })
        }
    }

    /// An issued one-time code: `(ussxs)`; `user` empty when the code is anyone's.
    #[derive(Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct CodeReply {
        pub slot: u32,
        pub code: String,
        pub keys: String,
        pub expires_ms: i64,
        pub user: String,
    }

    impl std::fmt::Debug for CodeReply {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "CodeReply {{ slot: {}, code: <redacted> }}", self.slot)
        }
    }

    impl From<&IssuedCode> for CodeReply {
        fn from(c: &IssuedCode) -> Self {
            CodeReply {
                slot: c.slot,
                code: c.code.clone(),
                keys: c.keys.clone(),
                expires_ms: c.expires_ms,
                user: c.user.clone().unwrap_or_default(),
            }
        }
    }

    impl From<CodeReply> for IssuedCode {
        fn from(c: CodeReply) -> Self {
            IssuedCode {
                slot: c.slot,
                code: c.code,
                keys: c.keys,
                expires_ms: c.expires_ms,
                user: (!c.user.is_empty()).then_some(c.user),
            }
        }
    }

    /// A TOTP enrollment: `(suss)`.
    #[derive(Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct TotpReply {
        pub user: String,
        pub keypad_no: u32,
        pub pin: String,
        pub uri: String,
    }

    impl std::fmt::Debug for TotpReply {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "TotpReply {{ user: {:?}, <redacted> }}", self.user)
        }
    }

    impl From<&TotpEnrolled> for TotpReply {
        fn from(t: &TotpEnrolled) -> Self {
            TotpReply {
                user: t.user.clone(),
                keypad_no: t.keypad_no,
                pin: t.pin.clone(),
                uri: t.uri.clone(),
            }
        }
    }

    impl From<TotpReply> for TotpEnrolled {
        fn from(t: TotpReply) -> Self {
            TotpEnrolled {
                user: t.user,
                keypad_no: t.keypad_no,
                pin: t.pin,
                uri: t.uri,
            }
        }
    }

    /// The keypad lockout: `(uuxb)`.
    #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Type)]
    pub struct LockoutReply {
        pub strikes: u32,
        pub level: u32,
        pub until_ms: i64,
        pub locked: bool,
    }

    impl From<&LockoutInfo> for LockoutReply {
        fn from(l: &LockoutInfo) -> Self {
            LockoutReply {
                strikes: l.strikes,
                level: l.level,
                until_ms: l.until_ms,
                locked: l.locked,
            }
        }
    }

    impl From<LockoutReply> for LockoutInfo {
        fn from(l: LockoutReply) -> Self {
            LockoutInfo {
                strikes: l.strikes,
                level: l.level,
                until_ms: l.until_ms,
                locked: l.locked,
            }
        }
    }

    /// An audit row: `(xxsssss)`; `user` empty when none, `evidence` its JSON text.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct AuditRowReply {
        pub seq: i64,
        pub ts_ms: i64,
        pub method: String,
        pub outcome: String,
        pub user: String,
        pub reason: String,
        pub evidence: String,
    }

    impl From<&AuditItem> for AuditRowReply {
        fn from(r: &AuditItem) -> Self {
            AuditRowReply {
                seq: r.seq,
                ts_ms: r.ts_ms,
                method: r.method.clone(),
                outcome: r.outcome.clone(),
                user: r.user.clone().unwrap_or_default(),
                reason: r.reason.clone(),
                evidence: r.evidence.to_string(),
            }
        }
    }

    impl From<AuditRowReply> for AuditItem {
        fn from(r: AuditRowReply) -> Self {
            AuditItem {
                seq: r.seq,
                ts_ms: r.ts_ms,
                method: r.method,
                outcome: r.outcome,
                user: (!r.user.is_empty()).then_some(r.user),
                reason: r.reason,
                evidence: serde_json::from_str(&r.evidence).unwrap_or(serde_json::Value::Null),
            }
        }
    }

    /// The audit chain's check: `(bxxs)`; `first_bad` -1 when the chain holds.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct AuditCheckReply {
        pub ok: bool,
        pub rows: i64,
        pub first_bad: i64,
        pub message: String,
    }

    impl From<&AuditCheck> for AuditCheckReply {
        fn from(c: &AuditCheck) -> Self {
            AuditCheckReply {
                ok: c.ok,
                rows: c.rows,
                first_bad: c.first_bad.unwrap_or(-1),
                message: c.message.clone(),
            }
        }
    }

    impl From<AuditCheckReply> for AuditCheck {
        fn from(c: AuditCheckReply) -> Self {
            AuditCheck {
                ok: c.ok,
                rows: c.rows,
                first_bad: (c.first_bad >= 0).then_some(c.first_bad),
                message: c.message,
            }
        }
    }

    /// The face in front of the camera now: `(bsbdx)`; `present` false when nobody was
    /// seen (the rest then empty), `user` empty when nobody matched, `distance` -1 when
    /// none was measured.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Type)]
    pub struct SeenReply {
        pub present: bool,
        pub user: String,
        pub live: bool,
        pub distance: f64,
        pub age_ms: i64,
    }

    impl From<&Option<Seen>> for SeenReply {
        fn from(s: &Option<Seen>) -> Self {
            match s {
                None => SeenReply {
                    present: false,
                    user: String::new(),
                    live: false,
                    distance: -1.0,
                    age_ms: 0,
                },
                Some(s) => SeenReply {
                    present: true,
                    user: s.user.clone().unwrap_or_default(),
                    live: s.live,
                    distance: s.distance.map_or(-1.0, f64::from),
                    age_ms: s.age_ms,
                },
            }
        }
    }

    impl From<SeenReply> for Option<Seen> {
        fn from(s: SeenReply) -> Self {
            s.present.then(|| Seen {
                user: (!s.user.is_empty()).then_some(s.user),
                live: s.live,
                distance: (s.distance >= 0.0).then_some(s.distance as f32),
                age_ms: s.age_ms,
            })
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::api::{CameraState, DoorState, LockState, Mode};
        use lockerd_core::types::Role;
        use zbus::zvariant::Type;

        #[test]
        fn replies_have_the_signatures_the_interface_xml_names() {
            assert_eq!(StatusReply::SIGNATURE.to_string(), "(ssssxssubs)");
            assert_eq!(FleetFacesReply::SIGNATURE.to_string(), "(ssba(sss))");
            assert_eq!(UserReply::SIGNATURE.to_string(), "(xssbxxbx)");
            assert_eq!(CodeReply::SIGNATURE.to_string(), "(ussxs)");
            assert_eq!(TotpReply::SIGNATURE.to_string(), "(suss)");
            assert_eq!(LockoutReply::SIGNATURE.to_string(), "(uuxb)");
            assert_eq!(AuditRowReply::SIGNATURE.to_string(), "(xxsssss)");
            assert_eq!(AuditCheckReply::SIGNATURE.to_string(), "(bxxs)");
            assert_eq!(SeenReply::SIGNATURE.to_string(), "(bsbdx)");
        }

        #[test]
        fn every_reply_comes_back_as_it_went() {
            let st = Status {
                kiosk: "k".into(),
                version: "1".into(),
                lock: LockState::Jammed,
                door: DoorState::Open,
                keypad_locked_until_ms: 7,
                camera: CameraState::Ended,
                mode: Mode::FaceAndKeypad,
                users: 3,
                running: true,
                fleet: crate::api::FleetState::CutOff,
            };
            let w = StatusReply::from(&st);
            assert_eq!(
                (w.lock.as_str(), w.mode.as_str()),
                ("jammed", "face_and_keypad")
            );
            assert_eq!(Status::try_from(w).unwrap(), st);
            let mut bad = StatusReply::from(&st);
            bad.lock = "ajar".into();
            assert!(matches!(Status::try_from(bad), Err(ApiError::Internal(_))));
            let u = UserInfo {
                id: 4,
                name: "ada".into(),
                role: Role::Banned,
                enabled: false,
                templates: 2,
                legacy_templates: 1,
                totp: true,
                created_ms: 9,
            };
            assert_eq!(UserInfo::try_from(UserReply::from(&u)).unwrap(), u);
            for user in [None, Some("ada".to_string())] {
                let c = IssuedCode {
                    slot: 2,
                    code: "1234".into(),
                    keys: "*2#1234#".into(),
                    expires_ms: 5,
                    user: user.clone(),
                };
                assert_eq!(IssuedCode::from(CodeReply::from(&c)), c);
                let a = AuditItem {
                    seq: 1,
                    ts_ms: 2,
                    method: "dbus".into(),
                    outcome: "grant".into(),
                    user,
                    reason: "unlock".into(),
                    evidence: serde_json::json!({ "d": 0.5 }),
                };
                assert_eq!(AuditItem::from(AuditRowReply::from(&a)), a);
            }
            let l = LockoutInfo {
                strikes: 1,
                level: 2,
                until_ms: 3,
                locked: true,
            };
            assert_eq!(LockoutInfo::from(LockoutReply::from(&l)), l);
            for first_bad in [None, Some(0), Some(12)] {
                let c = AuditCheck {
                    ok: first_bad.is_none(),
                    rows: 12,
                    first_bad,
                    message: "m".into(),
                };
                assert_eq!(AuditCheck::from(AuditCheckReply::from(&c)), c);
            }
            for seen in [
                None,
                Some(Seen {
                    user: None,
                    live: false,
                    distance: None,
                    age_ms: 3,
                }),
                Some(Seen {
                    user: Some("ada".into()),
                    live: true,
                    distance: Some(0.5),
                    age_ms: 4,
                }),
            ] {
                assert_eq!(Option::<Seen>::from(SeenReply::from(&seen)), seen);
            }
            let t = TotpEnrolled {
                user: "ada".into(),
                keypad_no: 3,
                pin: "1234".into(),
                uri: "otpauth://x".into(),
            };
            let back = TotpEnrolled::from(TotpReply::from(&t));
            assert_eq!(
                (back.user, back.keypad_no, back.pin, back.uri),
                (t.user, t.keypad_no, t.pin, t.uri)
            );
        }
    }
}
