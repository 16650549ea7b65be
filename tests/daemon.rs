//! The daemon under a harness that plays systemd: it provides NOTIFY_SOCKET and
//! WATCHDOG_USEC, expects READY=1 and regular WATCHDOG=1, then sends SIGTERM and expects
//! a clean exit 0 within a second with the lock left locked (audited).

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn recv_all(
    sock: &UnixDatagram,
    until: Instant,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = stop(&msg);
            got.push(msg);
            if done {
                break;
            }
        }
    }
    got
}

#[test]
fn notify_ready_watchdog_and_clean_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let sock_path = d.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let db = d.path().join("daemon.db");
    let mut child = Command::new(lockerd_bin())
        .arg("--config")
        .arg(default_config())
        .arg("--demo")
        .arg("--db")
        .arg(&db)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // READY=1 (with a STATUS=) must come.
    let msgs = recv_all(&sock, Instant::now() + Duration::from_secs(30), |m| {
        m.contains("READY=1")
    });
    let ready = msgs
        .iter()
        .find(|m| m.contains("READY=1"))
        .unwrap_or_else(|| {
            let _ = child.kill();
            panic!("no READY=1; got {msgs:?}")
        });
    assert!(ready.contains("STATUS=ready"), "{ready}");

    // Watchdog pings at half of 200 ms: expect several in 1.2 s.
    let msgs = recv_all(&sock, Instant::now() + Duration::from_millis(1200), |_| {
        false
    });
    let pings = msgs.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(pings >= 3, "only {pings} watchdog pings: {msgs:?}");

    let t0 = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(1), "took {took:?} to stop");
    let msgs = recv_all(&sock, Instant::now() + Duration::from_millis(200), |_| {
        false
    });
    assert!(msgs.iter().any(|m| m.contains("STOPPING=1")), "{msgs:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("lock locked"), "{err}");

    // The start and the stop are in the audit log, chain intact.
    let o = lockerd(
        &db,
        Some(&lockerd::store::key::demo_key_path(&db)),
        &["audit", "list", "--json"],
    );
    let out = stdout(&o);
    assert!(
        out.contains("daemon started") && out.contains("daemon stopped"),
        "{out}"
    );
}

#[test]
fn daemon_without_notify_socket_still_runs_and_stops() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("plain.db");
    let mut child = Command::new(lockerd_bin())
        .arg("--config")
        .arg(default_config())
        .args(["--demo", "--db"])
        .arg(&db)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    let t0 = Instant::now();
    while !seen.contains("ready:") && t0.elapsed() < Duration::from_secs(30) {
        let n = std::io::Read::read(&mut err, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(seen.contains("ready:"), "{seen}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn daemon_grants_an_enrolled_face_from_a_replayed_camera_and_audits_it() {
    let Some(data) = shared_data() else { return };
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("e2e.db");
    let key = key_file(d.path(), "k", "end to end daemon test key 42");
    let cfg = d.path().join("lockerd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[vision]\nmodels = \"{}\"\nsource = \"{}\"\n",
            models_dir().display(),
            data.join("blink/zju/000001M_FTN.mp4").display()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let o = Command::new(lockerd_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--db")
            .arg(&db)
            .arg("--key-file")
            .arg(&key)
            .args(args)
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    cli(&["store", "init"]);
    cli(&["admin", "users", "add", "alice"]);
    let fnn = data.join("blink/zju/000001M_FNN.mp4");
    cli(&["admin", "enroll", "alice", fnn.to_str().unwrap()]);
    let mut child = Command::new(lockerd_bin())
        .arg("--config")
        .arg(&cfg)
        .arg("--db")
        .arg(&db)
        .arg("--key-file")
        .arg(&key)
        .arg("run")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The clip is replayed at its real 30 fps (about 5 s); wait for the grant.
    let err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
            let line = line.unwrap_or_default();
            s.push_str(&line);
            s.push('\n');
            if line.contains("\"event\":\"unlock\"") || line.contains("ended") {
                break;
            }
        }
        s
    });
    let t0 = Instant::now();
    while !reader.is_finished() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("\"event\":\"unlock\""),
        "no unlock in the daemon log:\n{log}"
    );
    let audit = cli(&["audit", "list", "--json"]);
    // The same JSON as `lockerctl audit list --json`.
    let audit: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let grant = audit["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["method"] == "face" && r["outcome"] == "grant")
        .unwrap_or_else(|| panic!("no face grant audited:\n{audit}"))
        .clone();
    assert_eq!(grant["user"], "alice");
    assert!(grant["evidence"]["live"].as_bool().unwrap());
    // The shipped config's match threshold (the margin tier's, SFace distances).
    assert!(grant["evidence"]["distance"].as_f64().unwrap() <= 1.0);
    assert_eq!(grant["evidence"]["model"], "sface_2021dec");
    assert!(cli(&["audit", "verify"]).contains("ok"));
}

#[test]
fn a_daemon_that_fails_after_opening_the_store_exits_cleanly_never_crashes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("rpi.toml");
    // Raspberry Pi hardware on a machine that is not one: the start fails after the
    // store is open. It used to segfault (exit 139) most of the time.
    std::fs::write(&cfg, "[hardware]\nmode = \"rpi\"\n").unwrap();
    let db = d.path().join("x.db");
    for _ in 0..5 {
        let o = Command::new(lockerd_bin())
            .arg("--config")
            .arg(&cfg)
            .arg("--demo")
            .arg("--db")
            .arg(&db)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        let last = e.lines().last().unwrap_or_default().to_string();
        assert!(last.starts_with("lockerd: hardware:"), "{e}");
        // Said once, not twice.
        assert_eq!(last.matches("GPIO not available").count(), 1, "{last}");
    }
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("one.db");
    let start = || {
        Command::new(lockerd_bin())
            .arg("--config")
            .arg(default_config())
            .arg("--demo")
            .arg("--db")
            .arg(&db)
            .arg("run")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start();
    let err = first.stderr.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(err));
    let ready = lines
        .by_ref()
        .map(|l| l.unwrap_or_default())
        .find(|l| l.contains("ready:"));
    assert!(ready.is_some(), "first daemon never ready");
    let second = start().wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("lockerd is running on"),
        "{}",
        stderr(&second)
    );
    unsafe { libc::kill(first.id() as i32, libc::SIGTERM) };
    assert!(first.wait().unwrap().success());
}

/// `kill -SEGV` (or -BUS) ends the daemon the first time (systemd then restarts it); it
/// used to be swallowed by the runtime's stack-overflow handler.
#[test]
fn a_sent_crash_signal_ends_the_daemon_the_first_time() {
    use std::os::unix::process::ExitStatusExt;
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        let d = tempfile::tempdir().unwrap();
        let sock_path = d.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).unwrap();
        let mut child = Command::new(lockerd_bin())
            .arg("--config")
            .arg(default_config())
            .arg("--demo")
            .arg("--db")
            .arg(d.path().join("daemon.db"))
            .arg("run")
            .env("NOTIFY_SOCKET", &sock_path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("CREDENTIALS_DIRECTORY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let msgs = recv_all(&sock, Instant::now() + Duration::from_secs(30), |m| {
            m.contains("READY=1")
        });
        assert!(msgs.iter().any(|m| m.contains("READY=1")), "{msgs:?}");
        unsafe { libc::kill(child.id() as i32, sig) };
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("signal {sig} was swallowed: still running after 5 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(sig), "{status:?}");
    }
}
