//! Fault runs (#11): kill -9 at random points of a mixed workload, a disk that fills up
//! under the running daemon, a database made read-only while it runs, a camera that is
//! not there. Real processes, real SQLCipher files, a real dbus-daemon. The disk tests
//! mount a small tmpfs, which needs root (CI runs as root); each mount is undone on drop.
//!
//! Outcomes the note and the README quote are printed to stderr (`--nocapture`).

mod common;
use common::*;
use lockerd::store::{Create, Db, DbKey};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "fault campaign key 0123456789";

/// A tmpfs mounted on a directory for the life of the value.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            stderr(&o)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn open(db: &Path) -> Db {
    let k = DbKey::from_text(KEY, Path::new("test")).unwrap();
    Db::open(db, &k, Create::MustExist, Duration::from_secs(5))
        .unwrap()
        .0
}

/// A small deterministic generator (xorshift64*), so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn kill_9_at_random_points_of_a_mixed_workload_100_times_loses_no_acknowledged_write() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("crash.db");
    let key = key_file(d.path(), "k", KEY);
    let seed = 0x5EED_0011_u64;
    let mut rng = Rng(seed);
    let (mut users, mut templates) = (Vec::<String>::new(), Vec::<i64>::new());
    let mut last_audit = 0i64;
    let mut acks_total = 0u64;
    let t0 = Instant::now();
    for run in 0..100 {
        let stop_after = 1 + rng.next() % 80;
        let extra_us = rng.next() % 3000;
        let mut child = Command::new(lab_bin())
            .arg("--config")
            .arg(default_config())
            .arg("--db")
            .arg(&db)
            .arg("--key-file")
            .arg(&key)
            .args([
                "bench",
                "store",
                "--mixed",
                "--progress",
                "--rows",
                "1000000",
            ])
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut n = 0u64;
        let mut lockout: Option<u32> = None;
        while let Some(Ok(line)) = lines.next() {
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("ack"), Some("user"), Some(name)) => users.push(name.to_string()),
                (Some("ack"), Some("template"), Some(id)) => templates.push(id.parse().unwrap()),
                (Some("ack"), Some("lockout"), Some(l)) => lockout = Some(l.parse().unwrap()),
                (Some("ack"), Some("audit"), Some(s)) => last_audit = s.parse().unwrap(),
                (Some("ack"), _, _) => {}
                _ => panic!("run {run}: unexpected line {line:?}"),
            }
            n += 1;
            if n >= stop_after {
                // Somewhere in the next write (or between two).
                std::thread::sleep(Duration::from_micros(extra_us));
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                break;
            }
        }
        child.wait().unwrap();
        acks_total += n;
        assert_eq!(
            n, stop_after,
            "run {run} (seed {seed:#x}): the workload ended early"
        );
        // Every acknowledged write is there, the chain (and its head) verifies.
        let db2 = open(&db);
        let v = db2.audit_verify().unwrap();
        assert!(
            v.ok,
            "run {run} (seed {seed:#x}): audit chain broken: {v:?}"
        );
        let rows = db2.audit_list(i64::MIN, usize::MAX >> 1).unwrap();
        assert!(
            rows.last().map_or(0, |r| r.seq) >= last_audit,
            "run {run}: acknowledged audit row {last_audit} lost"
        );
        let names: Vec<String> = db2
            .list_users()
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        for u in &users {
            assert!(names.contains(u), "run {run}: acknowledged user {u} lost");
        }
        let ids: Vec<i64> = db2.templates().unwrap().into_iter().map(|t| t.id).collect();
        for t in &templates {
            assert!(ids.contains(t), "run {run}: acknowledged template {t} lost");
        }
        if let Some(l) = lockout {
            // The levels rise within a run: the acknowledged one or a later one.
            let now = db2.lockout_load().unwrap().level;
            assert!(now >= l, "run {run}: lockout {now}, acknowledged {l}");
        }
        drop(db2);
        if run % 10 == 9 {
            let o = lockerd(&db, Some(&key), &["store", "check", "--json"]);
            assert!(o.status.success(), "run {run}: store check: {}", stdout(&o));
        }
    }
    eprintln!(
        "kill -9 x100 (seed {seed:#x}): {acks_total} acknowledged writes, {} users, {} templates, \
         audit head {last_audit}+, none lost, chain ok every time ({:.0} s)",
        users.len(),
        templates.len(),
        t0.elapsed().as_secs_f64()
    );
}

/// A daemon on a private bus with its database in `fs`, the keypad a named pipe.
struct Kiosk {
    _bus: TestBus,
    daemon: Daemon,
    keys: std::fs::File,
    bus_address: String,
}

impl Kiosk {
    fn start(dir: &Path, db: &Path, key: &Path, edits: &[(&str, String)]) -> Kiosk {
        let bus = TestBus::start();
        let fifo = dir.join("keypad");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let daemon = Daemon::start_in(
            &bus,
            db,
            key,
            edits,
            dir,
            &[("LOCKERD_SIM_KEYPAD", fifo.as_path())],
        );
        let keys = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        Kiosk {
            bus_address: bus.address.clone(),
            _bus: bus,
            daemon,
            keys,
        }
    }

    /// Type `keys` and wait until the log has `n` lines with `what` in all.
    fn type_and_wait(&mut self, keys: &str, what: &str, n: usize) -> String {
        self.keys.write_all(keys.as_bytes()).unwrap();
        let t0 = Instant::now();
        loop {
            let log = self.daemon.log();
            if log.lines().filter(|l| l.contains(what)).count() >= n {
                return log;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no {what:?} x{n} after {keys}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `lockerctl --json status` as root.
    fn status(&self) -> serde_json::Value {
        let o = Command::new(lockerctl_bin())
            .args(["--json", "status"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
            .unwrap();
        assert!(o.status.success(), "status: {}", stderr(&o));
        serde_json::from_str(stdout(&o).trim()).unwrap()
    }
}

fn unlocks(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"event\":\"unlock\""))
        .count()
}

/// Issue a one-time code with `lockerd admin`; returns the keys to type.
fn issue_code(db: &Path, key: &Path) -> String {
    let o = lockerd(
        db,
        Some(key),
        &["admin", "--json", "code", "issue", "--ttl", "1h"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    v["keys"].as_str().unwrap().to_string()
}

/// A store on a fresh 8 MiB tmpfs with two codes issued; (tmpfs, db, key, codes).
fn store_on_tmpfs(dir: &Path) -> (Tmpfs, PathBuf, PathBuf, [String; 2]) {
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fs = Tmpfs::mount(&dir.join("fs"), "8m");
    let db = dir.join("fs/kiosk.db");
    let key = key_file(dir, "k", KEY);
    let o = lockerd(&db, Some(&key), &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let codes = [issue_code(&db, &key), issue_code(&db, &key)];
    (fs, db, key, codes)
}

fn audit_rows(db: &Path) -> i64 {
    open(db)
        .audit_list(i64::MIN, usize::MAX >> 1)
        .unwrap()
        .len() as i64
}

#[test]
fn a_full_disk_keeps_the_lock_locked_and_the_store_recovers_when_space_returns() {
    let d = tempfile::tempdir().unwrap();
    let (_fs, db, key, codes) = store_on_tmpfs(d.path());
    let before = audit_rows(&db);
    let mut k = Kiosk::start(d.path(), &db, &key, &[]);
    // Fill the file system to the last byte.
    let filler = d.path().join("fs/filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0xA5u8; 64 * 1024];
    let mut small = vec![0u8; 512];
    loop {
        if f.write_all(&block).is_err() {
            while f.write_all(&small).is_ok() {}
            small.truncate(1);
            while f.write_all(&small).is_ok() {}
            break;
        }
    }
    let _ = f.sync_all();
    // A right code while the disk is full: no audit row, so no unlock, and an alert.
    let log = k.type_and_wait(&codes[0], "\"event\":\"alert\"", 1);
    assert_eq!(unlocks(&log), 0, "opened without an audit row:\n{log}");
    assert_eq!(k.status()["lock"], "locked");
    // Space comes back: the same code (its use was not committed) opens now.
    drop(f);
    std::fs::remove_file(&filler).unwrap();
    let log = k.type_and_wait(&codes[0], "\"event\":\"unlock\"", 1);
    assert_eq!(unlocks(&log), 1);
    // And the second code too, each once.
    let log = k.type_and_wait(&codes[1], "\"event\":\"unlock\"", 2);
    assert_eq!(unlocks(&log), 2);
    k.daemon.stop();
    assert_store_whole(&db, &key);
    assert!(audit_rows(&db) >= before + 2);
    eprintln!("disk full: right code refused with an alert, lock locked; space back: both codes opened once; store check and audit verify ok");
}

/// An ext4 image on a loop device, mounted with `errors=remount-ro` (as Raspberry Pi OS
/// mounts its root): `fail()` makes ext4 report an error, as a failing SD card does, and
/// the kernel turns the file system read-only under the running daemon.
struct Ext4 {
    img: PathBuf,
    dir: PathBuf,
    mounted: bool,
}

impl Ext4 {
    fn new(img: &Path, dir: &Path) -> Ext4 {
        let run = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(o.status.success(), "{c:?}: {}", stderr(&o));
        };
        run(Command::new("truncate").args(["-s", "32M"]).arg(img));
        run(Command::new("mkfs.ext4").arg("-q").arg(img));
        std::fs::create_dir_all(dir).unwrap();
        let mut e = Ext4 {
            img: img.to_path_buf(),
            dir: dir.to_path_buf(),
            mounted: false,
        };
        e.mount();
        e
    }

    fn mount(&mut self) {
        let o = Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&self.img)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a loop device needs root (CI runs as root): {}",
            stderr(&o)
        );
        self.mounted = true;
    }

    fn fail(&self) {
        let src = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .unwrap();
        let dev = stdout(&src).trim().rsplit('/').next().unwrap().to_string();
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "fault test").unwrap();
        let opts = Command::new("findmnt")
            .args(["-n", "-o", "OPTIONS"])
            .arg(&self.dir)
            .output()
            .unwrap();
        // Older kernels show `ro`, newer ones keep `rw` and add `emergency_ro`.
        let o = stdout(&opts);
        assert!(o.starts_with("ro") || o.contains("emergency_ro"), "{o}");
    }

    /// Unmount, `e2fsck -fy`, mount again read-write (what an admin does after the error).
    fn repair(&mut self) -> String {
        self.unmount();
        let o = Command::new("e2fsck")
            .arg("-fy")
            .arg(&self.img)
            .output()
            .unwrap();
        self.mount();
        format!("e2fsck exit {:?}", o.status.code())
    }

    fn unmount(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
            self.mounted = false;
        }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[test]
fn a_file_system_turned_read_only_under_the_daemon_fails_closed_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut fs = Ext4::new(&d.path().join("sd.img"), &d.path().join("fs"));
    let db = d.path().join("fs/kiosk.db");
    let key = key_file(d.path(), "k", KEY);
    let o = lockerd(&db, Some(&key), &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let codes = [issue_code(&db, &key), issue_code(&db, &key)];
    let mut k = Kiosk::start(d.path(), &db, &key, &[]);
    let log = k.type_and_wait(&codes[0], "\"event\":\"unlock\"", 1);
    assert_eq!(unlocks(&log), 1);
    std::thread::sleep(Duration::from_secs(6)); // the pulse ends
    fs.fail();
    let log = k.type_and_wait(&codes[1], "\"event\":\"alert\"", 1);
    assert_eq!(unlocks(&log), 1, "opened without an audit row:\n{log}");
    assert_eq!(k.status()["lock"], "locked");
    // The daemon stays up and answers; stopping it must not crash (the store's close
    // fails on a read-only file system).
    let (st, log) = k.daemon.terminate();
    assert!(
        std::os::unix::process::ExitStatusExt::signal(&st).is_none(),
        "daemon died of a signal: {st:?}\n{log}"
    );
    drop(k.keys);
    let fsck = fs.repair();
    // After the repair: the store is whole, the first code's grant is audited, the second
    // code was never used and opens now.
    assert_store_whole(&db, &key);
    let rows = audit_lines(&db, Some(&key));
    let grants = rows
        .lines()
        .filter(|l| l.contains("\"outcome\":\"grant\""))
        .count();
    assert_eq!(grants, 1, "{rows}");
    std::fs::remove_file(d.path().join("keypad")).unwrap();
    let mut k = Kiosk::start(d.path(), &db, &key, &[]);
    let log = k.type_and_wait(&codes[1], "\"event\":\"unlock\"", 1);
    assert_eq!(unlocks(&log), 1);
    k.daemon.stop();
    eprintln!("read-only file system (ext4 error, remount-ro): right code refused with an alert, lock locked, clean stop; after e2fsck ({fsck}): store check and audit verify ok, the unused code opened");
}

#[test]
fn a_missing_camera_is_one_alert_and_the_keypad_still_opens() {
    let d = tempfile::tempdir().unwrap();
    let (db, key) = new_store(d.path(), KEY);
    let code = issue_code(&db, &key);
    let models = models_dir();
    let mut k = Kiosk::start(
        d.path(),
        &db,
        &key,
        &[
            (
                "models",
                format!("models = {:?}", models.display().to_string()),
            ),
            ("source", "source = \"camera\"".into()),
            ("camera_device", "camera_device = \"/dev/video63\"".into()),
        ],
    );
    let log = k
        .daemon
        .wait_log("camera cannot be opened", Duration::from_secs(30));
    assert!(log.contains("\"event\":\"alert\""), "{log}");
    // Said plainly everywhere: STATUS= (logged with it), `lockerctl status` and the
    // D-Bus `Camera` property say keypad only, not a working camera.
    assert!(
        log.contains("camera UNAVAILABLE, retrying (keypad only)"),
        "{log}"
    );
    let status = Command::new(lockerctl_bin())
        .args(["--json", "status"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &k.bus_address)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["camera"], "unavailable", "{status}");
    assert_eq!(status["mode"], "keypad_only", "{status}");
    let prop = Command::new("busctl")
        .arg(format!("--address={}", k.bus_address))
        .args([
            "get-property",
            lockerd::dbus::BUS_NAME,
            lockerd::dbus::OBJECT_PATH,
            lockerd::dbus::BUS_NAME,
            "Camera",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&prop).trim(),
        "s \"unavailable\"",
        "{}",
        stderr(&prop)
    );
    let log = k.type_and_wait(&code, "\"event\":\"unlock\"", 1);
    // The capture thread retried (1 s, 2 s, ...) but the admin heard of it once.
    let alerts = log
        .lines()
        .filter(|l| l.contains("\"event\":\"alert\"") && l.contains("camera"))
        .count();
    assert_eq!(alerts, 1, "{log}");
    k.daemon.stop();
    let rows = audit_lines(&db, Some(&key));
    assert!(rows.contains("camera cannot be opened"), "{rows}");
}
