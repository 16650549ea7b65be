//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn lockerd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockerd")
}

/// `lockerctl`, the crate `lockerd-client`'s binary, beside `lockerd` in the same target
/// directory. `cargo test --workspace` (scripts/test.sh) builds it; a single test file of
/// this crate needs `cargo build --release -p lockerd-client` first.
pub fn lockerctl_bin() -> std::path::PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_lockerd")).with_file_name("lockerctl");
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p lockerd-client (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// The developers' lab binary (eval, replay, simulate, tools, bench, lock-sim).
pub fn lab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockerd-lab")
}

/// Every audit row, read with `lockerd audit list --json` (the API's `{"rows": [...]}`),
/// one JSON object per line: what the tests look through.
pub fn audit_lines(db: &Path, key: Option<&Path>) -> String {
    let o = lockerd(db, key, &["audit", "list", "--json", "--limit", "1000000"]);
    assert!(o.status.success(), "audit list: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("audit list JSON");
    v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A fresh owner-only key file in `dir`.
pub fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `lockerd --db DB --key-file KEY args...` with no config file from /etc.
pub fn lockerd(db: &Path, key: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(lockerd_bin());
    c.env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .arg("--config")
        .arg(default_config())
        .arg("--db")
        .arg(db);
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c.args(args).output().expect("run lockerd")
}

/// A new store `kiosk.db` in `dir` (made world-readable, so the bus and unprivileged
/// callers can reach sockets there) with a key file `key`: (db, key).
pub fn new_store(dir: &Path, key_text: &str) -> (PathBuf, PathBuf) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.join("kiosk.db");
    let key = key_file(dir, "key", key_text);
    let o = lockerd(&db, Some(&key), &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    (db, key)
}

/// `store check` and `audit verify` both pass.
pub fn assert_store_whole(db: &Path, key: &Path) {
    let o = lockerd(db, Some(key), &["store", "check", "--json"]);
    assert!(
        o.status.success(),
        "store check: {} {}",
        stdout(&o),
        stderr(&o)
    );
    let o = lockerd(db, Some(key), &["audit", "verify"]);
    assert!(o.status.success(), "audit verify: {}", stdout(&o));
}

pub fn default_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lockerd.toml")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Where the shared test data lives (`../shared/data` beside the repo, or $LOCKERD_DATA).
/// Its absence fails the test, unless `LOCKERD_ALLOW_NO_DATA=1` says to skip the
/// data-dependent tests on purpose (then None, said on stderr).
pub fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("LOCKERD_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if p.join("manifest.json").exists() {
        return Some(p);
    }
    if std::env::var_os("LOCKERD_ALLOW_NO_DATA").is_some_and(|v| v == "1") {
        eprintln!(
            "SKIPPED (LOCKERD_ALLOW_NO_DATA=1): shared test data not found at {}",
            p.display()
        );
        return None;
    }
    panic!(
        "shared test data not found at {} (set LOCKERD_DATA, or LOCKERD_ALLOW_NO_DATA=1 to skip the tests that need it)",
        p.display()
    );
}

/// The dlib model directory ($LOCKERD_MODELS or the setup default).
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCKERD_MODELS") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("lockerd/models")
}

/// A private dbus-daemon configured like the system bus (default deny own, method
/// calls only where a policy allows them) with the shipped lockerd policy included.
/// Killed on drop.
pub struct TestBus {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: std::process::Child,
}

impl TestBus {
    pub fn start() -> TestBus {
        let dir = tempfile::tempdir().unwrap();
        // The bus socket must be reachable by the unprivileged test uid too.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let policy_dir = dir.path().join("system.d");
        std::fs::create_dir(&policy_dir).unwrap();
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/org.lockerd.Locker1.conf"),
            policy_dir.join("org.lockerd.Locker1.conf"),
        )
        .unwrap();
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path={}/bus</listen><auth>EXTERNAL</auth>
<policy context="default">
  <allow user="*"/>
  <deny own="*"/>
  <deny send_type="method_call"/>
  <allow send_type="signal"/>
  <allow send_requested_reply="true" send_type="method_return"/>
  <allow send_requested_reply="true" send_type="error"/>
  <allow receive_type="method_call"/>
  <allow receive_type="method_return"/>
  <allow receive_type="error"/>
  <allow receive_type="signal"/>
  <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
  <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
</policy>
<includedir>{}</includedir></busconfig>"#,
                dir.path().display(),
                policy_dir.display()
            ),
        )
        .unwrap();
        let child = TestBus::spawn(&conf);
        TestBus {
            address: format!("unix:path={}/bus", dir.path().display()),
            dir,
            child,
        }
    }

    fn spawn(conf: &Path) -> std::process::Child {
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .arg("--print-address")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("dbus-daemon must be installed");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon did not start");
        child
    }

    /// Kill the bus daemon and start a new one at the same address (every client is
    /// disconnected).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.path().join("bus"));
        self.child = TestBus::spawn(&self.dir.path().join("bus.conf"));
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `lockerd run` on a test bus, its stderr (the journal lines) in a log file. Killed on
/// drop; [`Daemon::stop`] is the clean SIGTERM stop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `lockerd run` on `bus` with the default config changed by `edits`
    /// (`(line prefix, replacement line)`), and wait for READY (the "ready:" line).
    pub fn start(bus: &TestBus, db: &Path, key: &Path, edits: &[(&str, String)]) -> Daemon {
        let dir = db.parent().unwrap().to_path_buf();
        Daemon::start_in(bus, db, key, edits, &dir, &[])
    }

    /// As [`Daemon::start`], with the config and log in `dir` and extra environment.
    pub fn start_in(
        bus: &TestBus,
        db: &Path,
        key: &Path,
        edits: &[(&str, String)],
        dir: &Path,
        env: &[(&str, &Path)],
    ) -> Daemon {
        let mut cfg = std::fs::read_to_string(default_config()).unwrap();
        for (prefix, line) in edits {
            let old = cfg
                .lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix} in the config"))
                .to_string();
            cfg = cfg.replacen(&old, line, 1);
        }
        let conf = dir.join("daemon.toml");
        std::fs::write(&conf, cfg).unwrap();
        let log = dir.join("daemon.log");
        let mut cmd = Command::new(lockerd_bin());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .arg("--config")
            .arg(&conf)
            .arg("--db")
            .arg(db)
            .arg("--key-file")
            .arg(key)
            .arg("run")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, log };
        d.wait_log("ready:", Duration::from_secs(60));
        assert!(d.log().contains("D-Bus on"), "{}", d.log());
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, what: &str, limit: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let l = self.log();
            if l.contains(what) {
                return l;
            }
            assert!(t0.elapsed() < limit, "no {what:?} in the log:\n{l}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait, whatever the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        (st, self.log())
    }

    pub fn stop(mut self) -> String {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let st = self.child.wait().unwrap();
        assert!(st.success(), "daemon exit {st:?}: {}", self.log());
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod mqtt;
