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
    fn status(&self) -> zbus::Result<String>;
    fn unlock(&self, reason: &str) -> zbus::Result<String>;
    fn lock(&self) -> zbus::Result<String>;
    fn list_users(&self) -> zbus::Result<String>;
    fn add_user(&self, name: &str, role: &str) -> zbus::Result<String>;
    fn remove_user(&self, name: &str) -> zbus::Result<String>;
    fn set_role(&self, name: &str, role: &str) -> zbus::Result<String>;
    fn ban(&self, name: &str) -> zbus::Result<String>;
    fn unban(&self, name: &str) -> zbus::Result<String>;
    fn enable(&self, name: &str) -> zbus::Result<String>;
    fn disable(&self, name: &str) -> zbus::Result<String>;
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
    fn issue_code(&self, user: &str, ttl_s: u64) -> zbus::Result<String>;
    fn revoke_code(&self, slot: u32) -> zbus::Result<String>;
    fn enroll_totp(&self, user: &str, pin: &str) -> zbus::Result<String>;
    fn lockout_show(&self) -> zbus::Result<String>;
    fn lockout_reset(&self) -> zbus::Result<String>;
    fn audit_list(&self, since_ms: i64, limit: u32) -> zbus::Result<String>;
    fn audit_verify(&self) -> zbus::Result<String>;
    fn verify(&self) -> zbus::Result<String>;

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
