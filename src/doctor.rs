//! `lockerd doctor`: the first-run checks on a real device, one line each, ok or what
//! to do. It owns nothing: it reads the configuration, the installed files under a root
//! (`/`, or a mounted image), asks the system bus whether the daemon holds its name, and
//! opens the camera and the store only when the daemon is not running (the daemon owns
//! both while it runs; a second opener would fight it).

use crate::config::{Config, HardwareMode, VisionSource};
use crate::store::{self, Create, Store, StoreError};
use crate::vision::{camera, models, source};
use serde::Serialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something a real device needs is not there yet.
    Warn,
    /// The service will not work until this is fixed.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// The one thing to do, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn bad(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Where the installed pieces are: `/` on the device.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    /// The service user (the unit's `User=`).
    pub service_user: String,
}

impl Layout {
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_owned(),
            service_user: "lockerd".into(),
        }
    }
    fn at(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
    /// An absolute path of the checked system, seen from here.
    pub fn under(&self, abs: &Path) -> PathBuf {
        self.at(&abs.to_string_lossy())
    }
    /// The file the unit hands to the service as the `db-key` credential.
    pub fn credential_key(&self) -> PathBuf {
        self.at("/etc/lockerd/db.key")
    }
    /// Made by the package on a first install; the unit does not start while it exists.
    pub fn setup_marker(&self) -> PathBuf {
        self.at("/etc/lockerd/setup-pending")
    }
}

/// The first moment this build can be running in (TOTP needs a sane clock; a Pi
/// without network or RTC boots in the past).
pub const CLOCK_FLOOR_UNIX: u64 = 1_793_491_200; // 2026-11-01T00:00:00Z

/// Run every check. `bus_owner` is whether the daemon holds its bus name (asked by the
/// caller, [`bus_check`]); when it does, the camera and store are reported as held.
pub fn checks(config: &Config, layout: &Layout, bus: &Check, now_unix: u64) -> Vec<Check> {
    let running = bus.status == Status::Ok;
    let mut out = vec![setup_check(layout)];
    out.push(models_check(config));
    let (key, db_key) = key_check(config, layout);
    let key_ok = key.status == Status::Ok;
    out.push(key);
    out.push(store_check(config, db_key, key_ok, running));
    out.push(bus_policy_check(layout));
    out.push(bus.clone());
    out.push(camera_check(config, layout, running));
    out.push(broker_check(config));
    out.extend(gpio_checks(config, layout));
    out.push(clock_check(layout, now_unix));
    out
}

fn setup_check(layout: &Layout) -> Check {
    let marker = layout.setup_marker();
    if marker.exists() {
        Check::bad(
            "setup",
            Status::Warn,
            format!(
                "{} is there: the service does not start until the configuration is done",
                marker.display()
            ),
            format!(
                "edit /etc/lockerd/lockerd.toml (README \"Install on a Raspberry Pi\"), then `rm {}` and `systemctl start lockerd`",
                "/etc/lockerd/setup-pending"
            ),
        )
    } else {
        Check::ok("setup", "configured (no first-run marker)")
    }
}

fn models_check(config: &Config) -> Check {
    let dir = match models::find(&config.vision.models) {
        Ok(d) => d,
        Err(e) => {
            return Check::bad(
                "models",
                Status::Fail,
                e.to_string(),
                "apt install ./lockerd-models_*_all.deb (or run scripts/setup.sh)",
            )
        }
    };
    match models::verify(&dir) {
        Ok(n) => Check::ok(
            "models",
            format!("{}: {n} files, sha256 as pinned", dir.display()),
        ),
        Err(e) => Check::bad(
            "models",
            Status::Fail,
            e,
            "reinstall the models: apt install --reinstall ./lockerd-models_*_all.deb",
        ),
    }
}

/// What to do when the checks cannot see what they check.
pub const NOT_ROOT_FIX: &str =
    "the configuration and the database key are root's: run it as root, `sudo lockerd doctor`";

/// The key the service will use: the unit's credential file, else `store.key_file`
/// (which the service user must own). Returns the check and the key when readable.
fn key_check(config: &Config, layout: &Layout) -> (Check, Option<store::DbKey>) {
    let cred = layout.credential_key();
    // The owner the key must have: root for the credential, the service user for a key file.
    let cred_there = match std::fs::symlink_metadata(&cred) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // Not "no key": this user may not look (the key and /etc/lockerd are root's).
        Err(e) => {
            return (
                Check::bad(
                    "key",
                    Status::Fail,
                    format!("cannot look at {}: {e}", cred.display()),
                    NOT_ROOT_FIX,
                ),
                None,
            )
        }
    };
    let (path, owner, whose) = if cred_there {
        (cred, Some(0), "root")
    } else if !config.store.key_file.as_os_str().is_empty() {
        (
            layout.under(&config.store.key_file),
            user_id(&layout.service_user),
            "the service user",
        )
    } else {
        return (
            Check::bad(
                "key",
                Status::Fail,
                format!("no database key: neither {} nor store.key_file", cred.display()),
                "reinstall the package (it makes /etc/lockerd/db.key), or `lockerd store init --generate-key /etc/lockerd/db.key`",
            ),
            None,
        );
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) => {
            return (
                Check::bad(
                    "key",
                    Status::Fail,
                    format!("{}: {e}", path.display()),
                    "give store.key_file an existing owner-only file",
                ),
                None,
            )
        }
    };
    let p = path.display();
    if !meta.file_type().is_file() {
        return (
            Check::bad(
                "key",
                Status::Fail,
                format!("{p} is not a regular file"),
                format!("replace {p} with a regular file (mode 0400)"),
            ),
            None,
        );
    }
    if meta.mode() & 0o077 != 0 {
        return (
            Check::bad(
                "key",
                Status::Fail,
                format!(
                    "{p} is readable by group or others (mode {:04o})",
                    meta.mode() & 0o7777
                ),
                format!("chmod 0400 {p}"),
            ),
            None,
        );
    }
    if owner != Some(meta.uid()) {
        return (
            Check::bad(
                "key",
                Status::Fail,
                format!("{p} belongs to uid {}, not {whose}", meta.uid()),
                if whose == "root" {
                    format!("chown root:root {p}")
                } else {
                    format!("chown {}: {p}", layout.service_user)
                },
            ),
            None,
        );
    }
    match store::key::load_key_file(&path) {
        Ok(k) => (
            Check::ok("key", format!("{p}: owner-only, readable by {whose} only")),
            Some(k),
        ),
        // Not root: the file is fine as far as can be seen, but this user cannot read it.
        Err(StoreError::KeyFileRead { error, .. })
            if error.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            (
                Check::ok(
                    "key",
                    format!("{p}: owner-only (not readable by this user, as it should be)"),
                ),
                None,
            )
        }
        Err(e) => (
            Check::bad(
                "key",
                Status::Fail,
                e.to_string(),
                format!("write a new key into {p} (an empty store only), or restore the old one"),
            ),
            None,
        ),
    }
}

fn store_check(config: &Config, key: Option<store::DbKey>, key_ok: bool, running: bool) -> Check {
    let path = &config.store.path;
    if running {
        return Check::ok(
            "store",
            format!("{}: open in the running daemon", path.display()),
        );
    }
    let Some(key) = key else {
        let (why, fix) = if key_ok {
            (
                "this user cannot read the key",
                "run `lockerd doctor` as root",
            )
        } else {
            ("no usable key", "fix the key first (above)")
        };
        return Check::bad(
            "store",
            Status::Warn,
            format!("{}: not checked ({why})", path.display()),
            fix,
        );
    };
    match Store::open(
        path,
        key,
        Create::MustExist,
        Duration::from_millis(config.store.busy_timeout_ms),
    ) {
        Ok((st, info)) => {
            let users = st.call_sync(|db| Ok(db.list_users()?.len()));
            Check::ok(
                "store",
                format!(
                    "{}: opens with the key, schema v{}, {} users",
                    path.display(),
                    info.schema_version,
                    users
                        .map(|n| n.to_string())
                        .unwrap_or_else(|e| e.to_string())
                ),
            )
        }
        Err(StoreError::Missing(_)) => Check::bad(
            "store",
            Status::Warn,
            format!("{}: not created yet", path.display()),
            "the service creates it at its first start (`systemctl start lockerd`)",
        ),
        Err(e @ StoreError::InUse(_)) => Check::ok("store", e.to_string()),
        Err(e) => Check::bad(
            "store",
            Status::Fail,
            e.to_string(),
            "restore the key that made this database (or move the database away to start empty)",
        ),
    }
}

fn bus_policy_check(layout: &Layout) -> Check {
    let name = format!("{}.conf", crate::dbus::BUS_NAME);
    let places = [
        layout.at("/usr/share/dbus-1/system.d").join(&name),
        layout.at("/etc/dbus-1/system.d").join(&name),
    ];
    match places.iter().find(|p| p.is_file()) {
        Some(p) => Check::ok("bus policy", p.display().to_string()),
        None => Check::bad(
            "bus policy",
            Status::Fail,
            format!("{name} is in neither /usr/share/dbus-1/system.d nor /etc/dbus-1/system.d"),
            "reinstall the package (the daemon cannot own its bus name without it)",
        ),
    }
}

/// Whether the daemon holds `org.lockerd.Locker1` on the system bus.
pub async fn bus_check(setup_pending: bool) -> Check {
    let name = crate::dbus::BUS_NAME;
    let asked = async {
        let conn = zbus::Connection::system().await?;
        let proxy = zbus::fdo::DBusProxy::new(&conn).await?;
        let owned = proxy.name_has_owner(name.try_into()?).await?;
        Ok::<bool, zbus::Error>(owned)
    };
    let not_running = if setup_pending {
        Status::Warn
    } else {
        Status::Fail
    };
    match tokio::time::timeout(Duration::from_secs(5), asked).await {
        Ok(Ok(true)) => Check::ok("bus", format!("{name} is owned: the daemon is running")),
        Ok(Ok(false)) => Check::bad(
            "bus",
            not_running,
            format!("nobody owns {name}: the daemon is not running"),
            "systemctl start lockerd; if it stops again: journalctl -u lockerd -e",
        ),
        Ok(Err(e)) => Check::bad(
            "bus",
            Status::Fail,
            format!("no system bus: {e}"),
            "systemctl start dbus (or apt install dbus)",
        ),
        Err(_) => Check::bad(
            "bus",
            Status::Fail,
            "the system bus did not answer in 5 s",
            "systemctl status dbus",
        ),
    }
}

fn camera_check(config: &Config, layout: &Layout, running: bool) -> Check {
    if let VisionSource::Replay(path) = &config.vision.source {
        return match source::open_path(path).and_then(|mut s| s.next_frame()) {
            Ok(Some(f)) => Check::bad(
                "camera",
                Status::Warn,
                format!(
                    "no camera: frames are replayed from {} ({}x{})",
                    path.display(),
                    f.width,
                    f.height
                ),
                "set vision.source = \"camera\" on the device",
            ),
            Ok(None) => Check::bad(
                "camera",
                Status::Fail,
                format!("{}: no frames", path.display()),
                "give vision.source a clip or image folder with frames, or \"camera\"",
            ),
            Err(e) => Check::bad(
                "camera",
                Status::Fail,
                e.to_string(),
                "give vision.source an existing clip or image folder, or \"camera\"",
            ),
        };
    }
    let settings = config.vision.camera();
    let dev = layout.at(&settings.device);
    if !dev.exists() {
        return Check::bad(
            "camera",
            Status::Fail,
            format!("{} does not exist", settings.device),
            "plug the camera in (USB) or enable it (`rpicam-hello --list-cameras`), then check vision.camera_device",
        );
    }
    if running {
        return Check::ok(
            "camera",
            format!(
                "{} is present and held by the running daemon",
                settings.device
            ),
        );
    }
    match first_camera_frame(settings, Duration::from_secs(5)) {
        Ok(desc) => Check::ok("camera", desc),
        Err(e) => Check::bad(
            "camera",
            Status::Fail,
            e,
            "check the cable and vision.camera_format/width/height (`v4l2-ctl --list-formats-ext`)",
        ),
    }
}

/// Open the camera and wait for one frame (on a thread: a stuck driver cannot hang the
/// doctor).
fn first_camera_frame(s: camera::CameraSettings, wait: Duration) -> Result<String, String> {
    use source::RawCamera;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = camera::NokhwaCamera::open(&s).and_then(|(mut cam, desc)| {
            let f = cam.grab()?;
            Ok(format!(
                "{desc}: delivered a {}x{} frame",
                f.width, f.height
            ))
        });
        let _ = tx.send(r);
    });
    rx.recv_timeout(wait)
        .unwrap_or_else(|_| Err(format!("no frame within {} s", wait.as_secs())))
}

fn broker_check(config: &Config) -> Check {
    let m = &config.mqtt;
    if !m.enabled {
        return Check::ok("broker", "MQTT not configured (no remote admin)");
    }
    let (host, port) = match crate::mqtt::bridge::endpoint(&m.url) {
        Ok((_, h, p)) => (h, p),
        Err(e) => return Check::bad("broker", Status::Fail, e.to_string(), "fix mqtt.url"),
    };
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::bad(
                "broker",
                Status::Fail,
                format!("{host}: {e}"),
                "check mqtt.url's host name (and DNS)",
            )
        }
    };
    let mut last = String::from("no address");
    for a in &addrs {
        match std::net::TcpStream::connect_timeout(a, Duration::from_secs(3)) {
            Ok(_) => {
                return Check::ok("broker", format!("{host}:{port} accepts connections ({a})"))
            }
            Err(e) => last = format!("{a}: {e}"),
        }
    }
    Check::bad(
        "broker",
        Status::Fail,
        format!("{host}:{port} is not reachable ({last})"),
        "start the broker, and allow its address in the unit's drop-in (systemd/drop-ins/mqtt.conf)",
    )
}

fn gpio_checks(config: &Config, layout: &Layout) -> Vec<Check> {
    let hw = &config.hardware;
    if hw.mode != HardwareMode::Rpi {
        return vec![
            Check::bad(
                "gpio",
                Status::Warn,
                "simulated keypad, relay and door (hardware.mode = \"sim\")",
                "on the Pi set [hardware] mode = \"rpi\"",
            ),
            Check::ok("i2c", "simulated display"),
        ];
    }
    let gpio = ["/dev/gpiochip0", "/dev/gpiomem0", "/dev/gpiomem"];
    let found: Vec<&str> = gpio
        .iter()
        .copied()
        .filter(|d| layout.at(d).exists())
        .collect();
    let gpio_check = if found.contains(&"/dev/gpiochip0") {
        Check::ok("gpio", format!("{} present", found.join(", ")))
    } else {
        Check::bad(
            "gpio",
            Status::Fail,
            "no /dev/gpiochip0",
            "this is not a Raspberry Pi, or its GPIO driver is not loaded",
        )
    };
    let i2c = format!("/dev/i2c-{}", hw.lcd_i2c_bus);
    let i2c_check = if layout.at(&i2c).exists() {
        Check::ok("i2c", format!("{i2c} present"))
    } else {
        Check::bad(
            "i2c",
            Status::Fail,
            format!("no {i2c} (the display)"),
            "raspi-config nonint do_i2c 0, then reboot",
        )
    };
    vec![gpio_check, i2c_check]
}

fn clock_check(layout: &Layout, now_unix: u64) -> Check {
    if now_unix < CLOCK_FLOOR_UNIX {
        return Check::bad(
            "clock",
            Status::Fail,
            format!(
                "the clock says {}, before this build was made",
                crate::timefmt::iso_utc(now_unix as i64 * 1000)
            ),
            "timedatectl set-ntp true (a Pi has no battery clock: it needs the network at boot, or an RTC)",
        );
    }
    if layout.at("/run/systemd/timesync/synchronized").exists() {
        Check::ok("clock", "synchronised (systemd-timesyncd)")
    } else {
        Check::bad(
            "clock",
            Status::Warn,
            "not known to be synchronised: TOTP codes need the time within 30 s",
            "timedatectl set-ntp true",
        )
    }
}

/// The uid of a local user, if it exists. The buffer grows while the C library says it
/// is too small (an entry from a directory service can be long), up to 1 MiB.
pub fn user_id(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    let mut len = 16 * 1024;
    loop {
        let mut buf = vec![0 as libc::c_char; len];
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r with a passwd and a buffer we own; only the uid (a plain
        // integer) is read from the result, while both are alive.
        let (rc, uid) = unsafe {
            let mut pw: libc::passwd = std::mem::zeroed();
            let rc = libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
            (rc, pw.pw_uid)
        };
        if rc == libc::ERANGE && len < 1024 * 1024 {
            len *= 4;
            continue;
        }
        return (rc == 0 && !out.is_null()).then_some(uid);
    }
}

/// The report as lines: `ok    name  detail`, with `      -> fix` under the others.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!("{tag}  {:<10}  {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            s.push_str(&format!("      {:<10}  -> {f}\n", ""));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn user_ids_come_from_the_password_database() {
        assert_eq!(user_id("root"), Some(0));
        assert_eq!(user_id("no-such-user-lockerd-test"), None);
        assert_eq!(user_id("nul\0inside"), None);
    }

    fn layout() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("etc/lockerd")).expect("mkdir");
        let l = Layout::new(d.path());
        (d, l)
    }

    #[test]
    fn a_key_others_can_read_fails_with_the_chmod_that_fixes_it() {
        let (_d, l) = layout();
        let k = l.credential_key();
        std::fs::write(&k, "a".repeat(64)).expect("write");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (c, key) = key_check(&Config::default(), &l);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert_eq!(
            c.fix.as_deref(),
            Some(format!("chmod 0400 {}", k.display()).as_str())
        );
        assert!(key.is_none());
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        let (c, key) = key_check(&Config::default(), &l);
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(c.status, Status::Ok, "{c:?}");
            assert!(key.is_some());
        } else {
            // Not root: the file belongs to this user, not root, as the unit needs.
            assert_eq!(c.status, Status::Fail, "{c:?}");
            assert!(c.detail.contains("not root"), "{c:?}");
        }
    }

    #[test]
    fn no_key_anywhere_fails_and_names_the_command() {
        let (_d, l) = layout();
        let (c, _) = key_check(&Config::default(), &l);
        assert_eq!(c.status, Status::Fail);
        assert!(c
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("store init --generate-key")));
    }

    #[test]
    fn the_setup_marker_is_a_warning_with_the_way_out() {
        let (_d, l) = layout();
        assert_eq!(setup_check(&l).status, Status::Ok);
        std::fs::write(l.setup_marker(), "").expect("write");
        let c = setup_check(&l);
        assert_eq!(c.status, Status::Warn);
        assert!(c
            .fix
            .as_deref()
            .is_some_and(|f| f.contains("rm /etc/lockerd/setup-pending")));
    }

    #[test]
    fn a_clock_in_the_past_fails_and_an_unsynchronised_one_warns() {
        let (_d, l) = layout();
        assert_eq!(clock_check(&l, 1_000_000_000).status, Status::Fail);
        assert_eq!(clock_check(&l, CLOCK_FLOOR_UNIX + 10).status, Status::Warn);
        let flag = l.at("/run/systemd/timesync/synchronized");
        std::fs::create_dir_all(flag.parent().expect("parent")).expect("mkdir");
        std::fs::write(&flag, "").expect("write");
        assert_eq!(clock_check(&l, CLOCK_FLOOR_UNIX + 10).status, Status::Ok);
    }

    #[test]
    fn on_a_pi_the_gpio_and_i2c_devices_must_be_there() {
        let (_d, l) = layout();
        let mut cfg = Config::default();
        assert_eq!(gpio_checks(&cfg, &l)[0].status, Status::Warn);
        cfg.hardware.mode = HardwareMode::Rpi;
        let c = gpio_checks(&cfg, &l);
        assert_eq!((c[0].status, c[1].status), (Status::Fail, Status::Fail));
        std::fs::create_dir_all(l.at("/dev")).expect("mkdir");
        for d in ["/dev/gpiochip0", "/dev/gpiomem0", "/dev/i2c-1"] {
            std::fs::write(l.at(d), "").expect("write");
        }
        let c = gpio_checks(&cfg, &l);
        assert_eq!(
            (c[0].status, c[1].status),
            (Status::Ok, Status::Ok),
            "{c:?}"
        );
    }

    #[test]
    fn an_unreachable_broker_fails() {
        let mut cfg = Config::default();
        assert_eq!(broker_check(&cfg).status, Status::Ok);
        // A port nothing listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind")
            .port();
        cfg.mqtt.enabled = true;
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{port}");
        let c = broker_check(&cfg);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        cfg.mqtt.url = format!("mqtt://127.0.0.1:{}", l.local_addr().expect("addr").port());
        assert_eq!(broker_check(&cfg).status, Status::Ok);
    }
}
