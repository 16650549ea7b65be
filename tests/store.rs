//! The encrypted store against real SQLCipher files: round trip, keys, no plaintext on
//! disk, crash safety under SIGKILL, and tamper detection in the audit chain.

mod common;
use common::*;
use lockerd::store::{AuditEntry, Create, Db, DbKey, Method, Outcome, Store};
use lockerd::types::{Embedding, Role, EMBEDDING_DIM};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const KEY: &str = "correct horse battery staple 42";

fn open(path: &Path, key: &str, create: Create) -> Db {
    let k = DbKey::from_text(key, Path::new("test")).unwrap();
    Db::open(path, &k, create, Duration::from_secs(5))
        .unwrap()
        .0
}

fn emb(seed: f32) -> Embedding {
    let mut v = [0f32; EMBEDDING_DIM];
    for (i, x) in v.iter_mut().enumerate() {
        *x = ((i as f32 + 1.0) * seed).sin() * 0.1;
    }
    Embedding(v)
}

#[test]
fn round_trip_users_templates_settings_audit() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("s.db");
    {
        let mut db = open(&p, KEY, Create::MustBeNew);
        let alice = db.add_user("alice", Role::User).unwrap();
        db.add_user("bob", Role::Admin).unwrap();
        assert!(
            db.add_user("alice", Role::User).is_err(),
            "duplicate name refused"
        );
        assert!(db.add_user("", Role::User).is_err(), "empty name refused");
        db.add_templates(
            alice.id,
            &[
                (emb(1.0), 0.9, "photo:a.jpg".into()),
                (emb(2.0), 0.8, "clip:b.mp4".into()),
            ],
        )
        .unwrap();
        db.set_setting("k", "v1").unwrap();
        db.set_setting("k", "v2").unwrap();
        db.audit_append(
            &AuditEntry::new(Method::Face, Outcome::Grant, "match")
                .user(alice.id, "alice")
                .evidence(serde_json::json!({"distance": 0.31, "blink": true})),
        )
        .unwrap();
        db.set_role("bob", Role::Banned).unwrap();
    }
    let mut db = open(&p, KEY, Create::MustExist);
    let users = db.list_users().unwrap();
    assert_eq!(
        users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_eq!(users[1].role, Role::Banned);
    assert!(!users[1].may_enter());
    let t = db.templates().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].embedding, emb(1.0));
    assert_eq!(t[1].source, "clip:b.mp4");
    assert_eq!(db.setting("k").unwrap().as_deref(), Some("v2"));
    let rows = db.audit_list(i64::MIN, 10).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].user_name.as_deref(), Some("alice"));
    assert!(rows[0].evidence.contains("0.31"));
    // Removing a user removes their templates (cascade).
    db.remove_user("alice").unwrap();
    assert!(db.templates().unwrap().is_empty());
    assert!(db.audit_verify().unwrap().ok);
}

#[test]
fn store_thread_serves_async_and_blocking_callers() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("t.db");
    let k = DbKey::from_text(KEY, Path::new("test")).unwrap();
    let (st, info) = Store::open(&p, k, Create::IfMissing, Duration::from_secs(5)).unwrap();
    assert!(info.created);
    st.call_sync(|db| db.add_user("carol", Role::User)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let n = rt
        .block_on(st.call(|db| Ok(db.list_users()?.len())))
        .unwrap();
    assert_eq!(n, 1);
    // Errors come back typed.
    let e = st.call_sync(|db| db.require_user("nobody")).unwrap_err();
    assert!(e.to_string().contains("nobody"));
}

#[test]
fn wrong_key_is_a_clear_one_line_error_and_no_panic() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("w.db");
    let good = key_file(d.path(), "good", KEY);
    let bad = key_file(d.path(), "bad", "not the right key at all");
    let o = lockerd(&db, Some(&good), &["store", "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockerd(&db, Some(&bad), &["store", "check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("the key does not open the database"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    assert!(
        !err.to_lowercase().contains("hmac"),
        "SQLCipher noise leaked: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    // The library says the same with a typed error.
    let k = DbKey::from_text("not the right key at all", Path::new("t")).unwrap();
    let e = Db::open(&db, &k, Create::MustExist, Duration::from_secs(1))
        .err()
        .unwrap();
    assert!(matches!(e, lockerd::store::StoreError::WrongKey(_)));
}

#[test]
fn missing_key_is_refused_and_loose_key_file_too() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("m.db");
    let o = lockerd(&db, None, &["store", "init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no database key"), "{}", stderr(&o));
    assert!(!db.exists(), "nothing created without a key");
    // Daemon refuses to start without a key too (no --demo).
    let o = lockerd(&db, None, &["run"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no database key"));
    let loose = key_file(d.path(), "loose", KEY);
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let o = lockerd(&db, Some(&loose), &["store", "init"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("readable by group or others"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn files_on_disk_hold_no_plaintext() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("plain.db");
    let marker_user = "Zebulon_Plaintextcheck";
    let marker_reason = "reason-marker-7f3a9c";
    let check_files = |when: &str| {
        for suffix in ["", "-wal", "-shm"] {
            let f = d.path().join(format!("plain.db{suffix}"));
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            let hay = String::from_utf8_lossy(&bytes);
            for needle in [
                "SQLite format 3",
                marker_user,
                marker_reason,
                "face_templates",
                "CREATE TABLE",
            ] {
                assert!(
                    !hay.contains(needle),
                    "{when}: {needle:?} found in {}",
                    f.display()
                );
            }
            // The embedding's exact bytes must not appear either.
            let e = emb(3.0).to_bytes();
            assert!(
                !bytes.windows(64).any(|w| w == &e[..64]),
                "{when}: embedding bytes in {}",
                f.display()
            );
        }
    };
    {
        let mut db = open(&p, KEY, Create::MustBeNew);
        let u = db.add_user(marker_user, Role::User).unwrap();
        db.add_template(u.id, &emb(3.0), 1.0, "photo").unwrap();
        db.audit_append(&AuditEntry::new(Method::Face, Outcome::Deny, marker_reason))
            .unwrap();
        check_files("while open (WAL)");
    }
    check_files("after close");
}

#[test]
fn sigkill_during_audit_writes_loses_no_committed_row() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("crash.db");
    let k = key_file(d.path(), "k", KEY);
    let mut child = Command::new(lab_bin())
        .args(["--config"])
        .arg(default_config())
        .arg("--db")
        .arg(&db)
        .arg("--key-file")
        .arg(&k)
        .args(["bench", "store", "--rows", "1000000", "--progress"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut last = 0i64;
    for line in BufReader::new(out).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("committed ") {
            last = n.parse().unwrap();
            if last >= 300 {
                // Kill while it is in the middle of the stream.
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                break;
            }
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed");
    assert!(last >= 300);
    // Opens, passes `store check`, and holds every row whose write had returned.
    let o = lockerd(&db, Some(&k), &["store", "check", "--json"]);
    assert!(
        o.status.success(),
        "store check after SIGKILL: {} {}",
        stdout(&o),
        stderr(&o)
    );
    let rep: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(rep["ok"], true);
    let rows = rep["audit_rows"].as_i64().unwrap();
    assert!(rows >= last, "{rows} rows on disk, {last} acknowledged");
    let o = lockerd(&db, Some(&k), &["audit", "verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    let db2 = open(&db, KEY, Create::MustExist);
    let listed = db2.audit_list(i64::MIN, usize::MAX >> 1).unwrap();
    for seq in 1..=last {
        assert_eq!(listed[(seq - 1) as usize].seq, seq);
    }
}

#[test]
fn editing_an_audit_row_is_caught_by_audit_verify() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("tamper.db");
    let k = key_file(d.path(), "k", KEY);
    {
        let mut db = open(&p, KEY, Create::MustBeNew);
        for i in 0..6 {
            db.audit_append(&AuditEntry::new(
                Method::Face,
                Outcome::Deny,
                format!("no match {i}"),
            ))
            .unwrap();
        }
        // The schema itself refuses edits...
        let e = db
            .conn()
            .execute("UPDATE audit SET reason = 'x' WHERE seq = 2", []);
        assert!(e.is_err(), "append-only trigger");
        assert!(db
            .conn()
            .execute("DELETE FROM audit WHERE seq = 2", [])
            .is_err());
    }
    let o = lockerd(&p, Some(&k), &["audit", "verify"]);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains("ok: 6 rows"));
    {
        // ...but someone holding the key can drop the trigger and edit by hand.
        let db = open(&p, KEY, Create::MustExist);
        db.conn()
            .execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET outcome = 'grant', reason = 'match' WHERE seq = 4;")
            .unwrap();
    }
    let o = lockerd(&p, Some(&k), &["audit", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let rep: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(rep["ok"], false);
    assert_eq!(rep["first_broken_seq"], 4);
    let o = lockerd(&p, Some(&k), &["audit", "verify"]);
    assert!(stdout(&o).contains("BROKEN at row 4"), "{}", stdout(&o));
}

#[test]
fn rekey_switches_keys() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("rk.db");
    let k1 = key_file(d.path(), "k1", KEY);
    let k2 = key_file(d.path(), "k2", "a brand new passphrase 0987");
    assert!(lockerd(&db, Some(&k1), &["store", "init"]).status.success());
    let o = lockerd(
        &db,
        Some(&k1),
        &["store", "rekey", "--new-key-file", k2.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!lockerd(&db, Some(&k1), &["store", "check"])
        .status
        .success());
    let o = lockerd(&db, Some(&k2), &["store", "check"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lockerd(&db, Some(&k2), &["audit", "verify"]);
    assert!(stdout(&o).contains("ok: 2 rows"), "{}", stdout(&o));
}

#[test]
fn bad_config_is_refused_naming_key_and_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("bad.toml");
    std::fs::write(&cfg, "[store]\nbusy_timeout_ms = 100000\n").unwrap();
    let o = Command::new(lockerd_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["store", "check"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("store.busy_timeout_ms") && e.contains("bad.toml"),
        "{e}"
    );
    std::fs::write(&cfg, "[vision]\nmodel = \"/x\"\n").unwrap();
    let o = Command::new(lockerd_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["store", "check"])
        .output()
        .unwrap();
    let e = stderr(&o);
    assert!(
        e.contains("unknown key `vision.model`") && e.contains("bad.toml"),
        "{e}"
    );
}

#[test]
fn closed_store_refuses_calls_and_joins_its_thread() {
    let d = tempfile::tempdir().unwrap();
    let k = DbKey::from_text(KEY, Path::new("test")).unwrap();
    let (st, _) = Store::open(
        &d.path().join("c.db"),
        k,
        Create::IfMissing,
        Duration::from_secs(5),
    )
    .unwrap();
    let other = st.clone();
    st.close();
    assert!(matches!(
        other.call_sync(|db| db.ping()),
        Err(lockerd::store::StoreError::Closed)
    ));
    st.close(); // idempotent
}

#[test]
fn an_empty_database_file_is_refused_not_taken_as_a_new_store() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("s.db");
    let k = key_file(d.path(), "k", "empty file test key 0123456789");
    assert!(lockerd(&db, Some(&k), &["store", "init"]).status.success());
    assert!(lockerd(&db, Some(&k), &["admin", "users", "add", "bob"])
        .status
        .success());
    // Someone without the key empties the file.
    std::fs::write(&db, b"").unwrap();
    for args in [
        vec!["store", "check"],
        vec!["admin", "users", "list"],
        vec!["run"],
    ] {
        let o = lockerd(&db, Some(&k), &args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("empty file"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(
        std::fs::metadata(&db).unwrap().len(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_config_that_is_a_fifo_is_refused_without_blocking() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("cfg.toml");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut child = std::process::Command::new(lockerd_bin())
        .arg("--config")
        .arg(&fifo)
        .args(["store", "check"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("lockerd blocked on a FIFO config");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("not a regular file"), "{err}");
}

/// Open with the test key and run raw SQL (as someone holding the key could).
fn tamper(db: &Path, key: &Path, sql: &str) {
    let k = lockerd::store::resolve_key(key, db, false).unwrap().0;
    let (d, _) = Db::open(db, &k, Create::MustExist, Duration::from_secs(5)).unwrap();
    d.conn().execute_batch(sql).unwrap();
}

#[test]
fn cutting_the_audit_tail_or_emptying_it_shows_and_dropped_triggers_come_back() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("a.db");
    let k = key_file(d.path(), "k", "audit head test key 0123456789");
    assert!(lockerd(&db, Some(&k), &["store", "init"]).status.success());
    for u in ["a1", "a2", "a3", "a4"] {
        assert!(lockerd(&db, Some(&k), &["admin", "users", "add", u])
            .status
            .success());
    }
    let ok = lockerd(&db, Some(&k), &["audit", "verify"]);
    assert!(ok.status.success(), "{}", stdout(&ok));
    let copy = d.path().join("b.db");
    std::fs::copy(&db, &copy).unwrap();

    // Cut the last two rows (the triggers must be dropped first: that shows too).
    tamper(
        &db,
        &k,
        "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > (SELECT max(seq) - 2 FROM audit);",
    );
    let o = lockerd(&db, Some(&k), &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("rows were cut from the end"),
        "{}",
        stdout(&o)
    );
    let o = lockerd(&db, Some(&k), &["store", "check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("audit chain: BROKEN"), "{}", stdout(&o));
    // Opening re-created the dropped trigger and left an alert row saying so.
    let rows = audit_lines(&db, Some(&k));
    assert!(rows.contains("audit_triggers_restored"), "{rows}");
    let k2 = lockerd::store::resolve_key(&k, &db, false).unwrap().0;
    let (h, _) = Db::open(&db, &k2, Create::MustExist, Duration::from_secs(5)).unwrap();
    assert!(
        h.conn().execute("DELETE FROM audit", []).is_err(),
        "trigger back"
    );
    drop(h);

    // Emptying the whole log shows as well.
    tamper(
        &copy,
        &k,
        "DROP TRIGGER audit_no_delete; DELETE FROM audit;",
    );
    let o = lockerd(&copy, Some(&k), &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    // The restore alert is the only row now; the head still points past it.
    assert!(
        stdout(&o).contains("rows were cut") || stdout(&o).contains("emptied"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_closed_output_issues_no_secret_and_output_commands_end_quietly() {
    let d = tempfile::tempdir().unwrap();
    let db = d.path().join("p.db");
    let k = key_file(d.path(), "k", "pipe test key 0123456789");
    assert!(lockerd(&db, Some(&k), &["store", "init"]).status.success());
    assert!(lockerd(&db, Some(&k), &["admin", "users", "add", "u"])
        .status
        .success());
    // stdout is a pipe whose reader has already closed it.
    let run_into_closed_pipe = |args: &[&str]| {
        let mut fds = [0i32; 2];
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        unsafe { libc::close(fds[0]) };
        let out = unsafe { <Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1]) };
        Command::new(lockerd_bin())
            .arg("--config")
            .arg(default_config())
            .arg("--db")
            .arg(&db)
            .arg("--key-file")
            .arg(&k)
            .args(args)
            .stdout(out)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    for args in [
        vec!["admin", "code", "issue", "u", "--ttl", "5m"],
        vec!["admin", "totp", "enroll", "u"],
    ] {
        let o = run_into_closed_pipe(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("nothing issued"), "{}", stderr(&o));
    }
    let audit = stdout(&lockerd(&db, Some(&k), &["audit", "list"]));
    assert!(!audit.contains("one_time_code_issued"), "{audit}");
    assert!(!audit.contains("totp_enrolled"), "{audit}");
    // Commands that only print end quietly: no panic (101), nothing on stderr.
    for args in [vec!["admin", "users", "list"], vec!["audit", "list"]] {
        let o = run_into_closed_pipe(&args);
        assert_ne!(o.status.code(), Some(101), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    }
}

#[test]
fn smaller_faults_weak_policy_modes_keys_names_and_long_lines() {
    let d = tempfile::tempdir().unwrap();
    // A keypad policy that allows about a guess a second is refused, with its budget.
    let weak = d.path().join("weak.toml");
    std::fs::write(
        &weak,
        "[access]\notp_digits = 6\nkeypad_lockout_factor = 1\nkeypad_max_strikes = 10\nkeypad_lockout_s = 10\n",
    )
    .unwrap();
    let o = Command::new(lockerd_bin())
        .arg("--config")
        .arg(&weak)
        .args(["store", "check"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("guesses a year"), "{}", stderr(&o));

    // Directories are made owner-only whatever the umask.
    let db = d.path().join("deep/er/s.db");
    let k = key_file(d.path(), "k", "smaller faults key 0123456789");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} --config {} --db {} --key-file {} store init",
            lockerd_bin(),
            default_config().display(),
            db.display(),
            k.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::PermissionsExt;
    for dir in [d.path().join("deep"), d.path().join("deep/er")] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }

    // A failed `store init --generate-key` leaves no key behind; the retry works.
    let gk = d.path().join("gen.key");
    let o = lockerd(
        Path::new("/dev/null/x.db"),
        None,
        &["store", "init", "--generate-key", gk.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(!gk.exists(), "key file left behind");
    // The error names the path once.
    assert_eq!(stderr(&o).matches("/dev/null").count(), 1, "{}", stderr(&o));
    let db2 = d.path().join("gen.db");
    let o = lockerd(
        &db2,
        None,
        &["store", "init", "--generate-key", gk.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // --demo on a database made with a real key writes no stray demo key.
    let o = Command::new(lockerd_bin())
        .arg("--config")
        .arg(default_config())
        .arg("--demo")
        .arg("--db")
        .arg(&db)
        .args(["store", "check"])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--key-file"), "{}", stderr(&o));
    assert!(!d.path().join("deep/er/s.db.key").exists());

    // Look-alike and invisible names are refused; plain ones pass.
    for bad in [
        "\u{0430}lice",
        "ali\u{202E}ce",
        "ali\u{200B}ce",
        " alice",
        "al\nice",
    ] {
        let o = lockerd(&db, Some(&k), &["admin", "users", "add", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    let o = lockerd(&db, Some(&k), &["admin", "users", "add", "Mary-Ann O.Neil"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The otpauth label names the issuer once.
    let o = lockerd(
        &db,
        Some(&k),
        &["admin", "--json", "totp", "enroll", "Mary-Ann O.Neil"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let uri = serde_json::from_str::<serde_json::Value>(stdout(&o).trim()).unwrap()["uri"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        uri.starts_with("otpauth://totp/lockerd-kiosk:Mary-Ann%20O.Neil?"),
        "{uri}"
    );

    // A 200 KB line in a config is not echoed back.
    let long = d.path().join("long.toml");
    std::fs::write(&long, format!("x = \"{}", "a".repeat(200_000))).unwrap();
    let o = Command::new(lockerd_bin())
        .arg("--config")
        .arg(&long)
        .args(["store", "check"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).len() < 2000,
        "{} bytes of error",
        stderr(&o).len()
    );
}
