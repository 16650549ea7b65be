//! MQTT (issue #8): sealed replies are libsodium sealed boxes, checked both
//! ways against libsodium itself (PyNaCl, Debian's python3-nacl, with the system Python);
//! signed commands through a real mosquitto on loopback to the running daemon.

mod common;
use common::mqtt::*;
use common::*;
use data_encoding::BASE64;
use lockerd::mqtt::envelope::sign;
use lockerd::mqtt::reply::{seal, unseal};
use rumqttc::QoS;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PY: &str = "/usr/bin/python3";

fn python(script: &str, args: &[&str]) -> String {
    let o = Command::new(PY)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("the system python3 (scripts/setup.sh installs python3-nacl)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

#[test]
fn sealed_replies_open_with_libsodium_and_libsodium_boxes_open_here() {
    // A key pair made by libsodium.
    let kp = python(
        "import nacl.public,base64;k=nacl.public.PrivateKey.generate();\
         print(base64.b64encode(bytes(k)).decode(),base64.b64encode(bytes(k.public_key)).decode())",
        &[],
    );
    let (sk, pk) = kp.split_once(' ').unwrap();
    let bytes32 =
        |s: &str| -> [u8; 32] { BASE64.decode(s.as_bytes()).unwrap().try_into().unwrap() };
    let (sk, pk) = (bytes32(sk), bytes32(pk));
    // Sealed here, opened by libsodium.
    let secret = serde_json::json!({"code": "48213907", "keys": "*7#48213907#"});
    let sealed = seal(&pk, &secret).unwrap();
    let opened = python(
        "import nacl.public,base64,sys;k=nacl.public.PrivateKey(base64.b64decode(sys.argv[1]));\
         print(nacl.public.SealedBox(k).decrypt(base64.b64decode(sys.argv[2])).decode())",
        &[&BASE64.encode(&sk), &sealed],
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&opened).unwrap(),
        secret
    );
    // Sealed by libsodium, opened here.
    let theirs = python(
        "import nacl.public,base64,sys;p=nacl.public.PublicKey(base64.b64decode(sys.argv[1]));\
         print(base64.b64encode(nacl.public.SealedBox(p).encrypt(b'{\"pin\":\"4821\"}')).decode())",
        &[&BASE64.encode(&pk)],
    );
    assert_eq!(unseal(&sk, &theirs).unwrap()["pin"], "4821");
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commands_through_mosquitto_run_once_and_every_forgery_is_refused_with_its_kind() {
    use ed25519_dalek::SigningKey;
    let broker = Broker::start();
    let bus = TestBus::start();
    let d = tempfile::tempdir().unwrap();
    let (db, key) = new_store(d.path(), "mqtt test key 0123456789");
    let ada = SigningKey::generate(&mut rand::rngs::OsRng);
    let vic = SigningKey::generate(&mut rand::rngs::OsRng);
    let seal_sk = crypto_box::SecretKey::generate(&mut rand::rngs::OsRng);
    let seal_pk = BASE64.encode(seal_sk.public_key().as_bytes());
    let admin = |id: &str, k: &SigningKey, role: &str| {
        format!(
            "[[mqtt.admins]]\nid = \"{id}\"\npublic_key = \"{}\"\nseal_key = \"{seal_pk}\"\nrole = \"{role}\"\n",
            BASE64.encode(k.verifying_key().as_bytes())
        )
    };
    let daemon = Daemon::start_in(
        &bus,
        &db,
        &key,
        &[
            ("enabled = false", "enabled = true".into()),
            (
                "url = ",
                format!("url = \"mqtt://127.0.0.1:{}\"", broker.port),
            ),
            ("kiosk_id", "kiosk_id = \"k1\"".into()),
            (
                "# [[mqtt.admins]]",
                format!(
                    "{}{}",
                    admin("ada", &ada, "admin"),
                    admin("vic", &vic, "viewer")
                ),
            ),
        ],
        d.path(),
        &[],
    );
    let c = Client::connect(broker.port).await;
    assert_eq!(c.wait("lockerd/k1/availability", 0).await, "online");
    let topic = "lockerd/k1/cmd";
    let body = |cmd: &str, args: serde_json::Value, n: u8| {
        serde_json::json!({"kiosk": "k1", "id": format!("r{n}"), "ts": now_s(),
            "nonce": BASE64.encode(&[n; 16]), "cmd": cmd, "args": args})
    };
    // One good unlock.
    let good = sign(
        &ada,
        "ada",
        topic,
        &body("unlock", serde_json::json!({"reason": "parcel"}), 1),
    );
    c.send(good.clone()).await;
    let r = c.wait("lockerd/k1/reply/ada", 0).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], "r1");
    // The same bytes again, a forgery, a stale one, one for another kiosk, a viewer's.
    c.send(good.clone()).await;
    assert_eq!(c.wait("lockerd/k1/reply/ada", 1).await["error"], "replayed");
    c.send(sign(
        &vic,
        "ada",
        topic,
        &body("unlock", serde_json::json!({}), 2),
    ))
    .await;
    assert_eq!(
        c.wait("lockerd/k1/rejected", 0).await["error"],
        "bad_signature"
    );
    let mut b = body("unlock", serde_json::json!({}), 3);
    b["ts"] = serde_json::json!(now_s() - 120);
    c.send(sign(&ada, "ada", topic, &b)).await;
    assert_eq!(c.wait("lockerd/k1/reply/ada", 2).await["error"], "stale");
    let mut b = body("unlock", serde_json::json!({}), 4);
    b["kiosk"] = serde_json::json!("k2");
    c.send(sign(&ada, "ada", topic, &b)).await;
    assert_eq!(
        c.wait("lockerd/k1/reply/ada", 3).await["error"],
        "wrong_kiosk"
    );
    c.send(sign(
        &vic,
        "vic",
        topic,
        &body("unlock", serde_json::json!({}), 5),
    ))
    .await;
    assert_eq!(
        c.wait("lockerd/k1/reply/vic", 0).await["error"],
        "not_authorized"
    );
    c.send(b"{not json".to_vec()).await;
    assert_eq!(c.wait("lockerd/k1/rejected", 1).await["error"], "invalid");
    // A code: the reply holds it sealed; it is in no message in clear.
    c.send(sign(
        &ada,
        "ada",
        topic,
        &body("otp_issue", serde_json::json!({"ttl_s": 600}), 6),
    ))
    .await;
    let r = c.wait("lockerd/k1/reply/ada", 4).await;
    assert_eq!(r["ok"], true, "{r}");
    let secret = unseal(&seal_sk.to_bytes(), r["result"]["sealed"].as_str().unwrap()).unwrap();
    let code = secret["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 8);
    // One captured command replayed 60 times: refused every time, but audited and
    // answered at most 10 times a minute for ada's key (3 of those are used above).
    for _ in 0..60 {
        c.send(good.clone()).await;
    }
    // Events arrived too (the unlock), secret-free.
    let ev = c.wait("lockerd/k1/event", 0).await;
    assert!(ev.to_string().contains("unlock"), "{ev}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (t, p) in c.seen.lock().unwrap().iter() {
        assert!(
            !String::from_utf8_lossy(p).contains(&code),
            "code in clear on {t}"
        );
    }
    let log = daemon.stop();
    assert_eq!(unlocks_in(&log), 1, "{log}");
    // Every refusal after the signature is audited with its kind.
    let rows = audit_lines(&db, Some(&key));
    let refused: Vec<String> = rows
        .lines()
        .filter(|l| l.contains("command_refused"))
        .map(|l| l.to_string())
        .collect();
    for kind in [
        "replayed",
        "bad_signature",
        "stale",
        "wrong_kiosk",
        "not_authorized",
        "invalid",
    ] {
        assert!(
            refused.iter().any(|l| l.contains(kind)),
            "{kind}: {refused:?}"
        );
    }
    let signed_rows = refused
        .iter()
        .filter(|l| l.contains("\"key\":\"ada\"") && l.contains("\"signed\":true"))
        .count();
    // 10 a minute (20 if a slow run crosses into a second minute), not 63.
    assert!(
        (10..=20).contains(&signed_rows),
        "{signed_rows} signed refusals of ada's key audited: {refused:?}"
    );
}

#[test]
fn over_tls_only_a_client_certificate_from_the_ca_gets_in() {
    let d = tempfile::tempdir().unwrap();
    let (db, key) = new_store(d.path(), "mqtt tls test key 0123456789");
    let pki = d.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_pki(&pki);
    let broker = Broker::start_with(&format!(
        "cafile {p}/ca.pem\ncertfile {p}/server.pem\nkeyfile {p}/server.key\n\
         require_certificate true\nuse_identity_as_username true\nacl_file {acl}\n",
        p = pki.display(),
        acl = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/mosquitto-lockerd.acl")
            .display()
    ));
    let port = broker.port;
    let bus = TestBus::start();
    let ada = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let seal = BASE64.encode(&[5u8; 32]);
    let admins = format!(
        "[[mqtt.admins]]\nid = \"ada\"\npublic_key = \"{}\"\nseal_key = \"{seal}\"\nrole = \"admin\"\n",
        BASE64.encode(ada.verifying_key().as_bytes())
    );
    let p = |f: &str| pki.join(f).display().to_string();
    // The daemon with a client certificate: from the CA, from another CA, none.
    let run = |cert: Option<&str>| -> String {
        let (c, k) = match cert {
            Some(n) => (p(&format!("{n}.pem")), p(&format!("{n}.key"))),
            None => (String::new(), String::new()),
        };
        let daemon = Daemon::start_in(
            &bus,
            &db,
            &key,
            &[
                ("enabled = false", "enabled = true".into()),
                ("url = ", format!("url = \"mqtts://localhost:{port}\"")),
                ("kiosk_id", "kiosk_id = \"k1\"".into()),
                ("ca_file", format!("ca_file = \"{}\"", p("ca.pem"))),
                ("cert_file", format!("cert_file = \"{c}\"")),
                // The first key_file line is [store]'s (given by --key-file here).
                ("key_file", "# [store] key_file from --key-file".into()),
                // Then [mqtt]'s ([lock]'s names a file: /etc/lockerd/lock.key).
                ("key_file = \"\"", format!("key_file = \"{k}\"")),
                ("# [[mqtt.admins]]", admins.clone()),
            ],
            d.path(),
            &[],
        );
        if cert == Some("kiosk") {
            daemon.wait_log("mqtt: connected", Duration::from_secs(20));
            // A signed status from the admin's side, through the same broker.
            let body = serde_json::json!({"kiosk": "k1", "id": "t1", "ts": now_s(),
                "nonce": BASE64.encode(&[9u8; 16]), "cmd": "status"});
            let env = sign(&ada, "ada", "lockerd/k1/cmd", &body);
            let tls = [
                "--cafile",
                &p("ca.pem"),
                "--cert",
                &p("admin.pem"),
                "--key",
                &p("admin.key"),
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
            ];
            let sub = Command::new("mosquitto_sub")
                .args(tls)
                .args(["-t", "lockerd/k1/reply/ada", "-C", "1", "-W", "15"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(500));
            let o = Command::new("mosquitto_pub")
                .args(tls)
                .args([
                    "-t",
                    "lockerd/k1/cmd",
                    "-m",
                    std::str::from_utf8(&env).unwrap(),
                ])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            let out = sub.wait_with_output().unwrap();
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(r["ok"], true, "{r}");
            assert_eq!(r["result"]["lock"], "locked", "{r}");
        } else {
            std::thread::sleep(Duration::from_secs(3));
        }
        daemon.stop()
    };
    let log = run(Some("kiosk"));
    assert!(log.contains("mqtt: connected"), "{log}");
    for bad in [Some("intruder"), None] {
        let log = run(bad);
        assert!(!log.contains("mqtt: connected"), "{bad:?} got in:\n{log}");
        assert!(
            log.contains("mqtt: "),
            "{bad:?}: no connection error logged:\n{log}"
        );
    }
    drop(broker);
}

/// Broker stopped, 20 events made through D-Bus, the daemon restarted, the broker back:
/// the 20 arrive once each, in order, numbered; nothing waits in the outbox after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_made_while_the_broker_is_down_arrive_once_in_order_after_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let mut broker = Broker::start_with(&format!(
        "persistence true\npersistence_location {}/\nautosave_interval 0\n",
        d.path().display()
    ));
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "mqtt outbox test key 0123456789");
    // A watcher whose session (and queue) the broker keeps across its restart.
    let watcher = Client::connect_as(broker.port, "watcher", false).await;
    let edits = mqtt_edits(broker.port, &[]);
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    assert_eq!(watcher.wait("lockerd/k1/availability", 0).await, "online");
    // What the first daemon publishes on connecting has reached the watcher before the
    // broker goes (its PUBACK may still not have: then it comes again, same seq).
    let first = watcher.wait("lockerd/k1/event", 0).await;
    broker.stop();
    for i in 0..20 {
        ctl(&bus, &["users", "add", &format!("u{i:02}")]);
    }
    daemon.stop();
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart();
    let t0 = Instant::now();
    let added = |w: &Client| -> Vec<serde_json::Value> {
        w.all("lockerd/k1/event")
            .into_iter()
            .filter(|e| e["event"] == "user_changed" && e["reason"] == "added")
            .collect()
    };
    while added(&watcher).len() < 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "only {} of 20 events: {:?}",
            added(&watcher).len(),
            watcher.all("lockerd/k1/event")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = added(&watcher);
    let users: Vec<&str> = got.iter().map(|e| e["user"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("u{i:02}")).collect();
    assert_eq!(users, want, "once each, in order");
    // Delivery is at least once: a publish the broker took but did not acknowledge
    // before it stopped comes again after the restart. A repeat is the same event (same
    // seq, same payload), straight after itself; everything else rises by seq.
    let events = watcher.all("lockerd/k1/event");
    assert_eq!(events[0], first);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    for (w, e) in seqs.windows(2).zip(events.windows(2)) {
        assert!(
            w[0] < w[1] || (w[0] == w[1] && e[0] == e[1]),
            "seq rises, repeats are the same event: {seqs:?}"
        );
    }
    // The audit head is there, retained, and checks against the store.
    let head = watcher.wait("lockerd/k1/audit_head", 0).await;
    let log = daemon.stop();
    assert!(!log.contains("outbox: "), "{log}");
    let o = lockerd(&db, Some(&key), &["store", "check", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let against = format!("{}:{}", head["seq"], head["hash"].as_str().unwrap());
    let o = lockerd(&db, Some(&key), &["audit", "verify", "--against", &against]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = lockerd(
        &db,
        Some(&key),
        &[
            "audit",
            "verify",
            "--against",
            &format!("{}:{}", head["seq"], "00".repeat(32)),
        ],
    );
    assert!(
        !o.status.success(),
        "a head that is not in the chain must fail"
    );
}

/// Home Assistant: the discovery message is retained, the state follows the lock, an
/// unlock needs allow_unlock and a keypad credential, and it is audited as `ha`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_sees_the_kiosk_and_unlocks_only_with_a_keypad_code() {
    let d = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "mqtt ha test key 0123456789");
    let run = |allow: bool| {
        let edits = mqtt_edits(
            broker.port,
            &[("allow_unlock", format!("allow_unlock = {allow}"))],
        );
        Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[])
    };
    let daemon = run(false);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let ha = Client::connect_as(broker.port, "homeassistant", true).await;
    let disc = ha.wait("homeassistant/device/lockerd_k1/config", 0).await;
    assert_eq!(disc["cmps"]["lock"]["p"], "lock", "{disc}");
    assert!(disc["cmps"]["lock"].get("code_format").is_none());
    assert_eq!(ha.wait("lockerd/k1/state", 0).await["lock"], "LOCKED");
    let set = |c: &Client, body: serde_json::Value| {
        let client = c.client.clone();
        async move {
            client
                .publish(
                    "lockerd/k1/ha/set",
                    QoS::AtLeastOnce,
                    false,
                    body.to_string(),
                )
                .await
                .unwrap();
        }
    };
    let code = ctl(&bus, &["--json", "code", "issue"]);
    let code: serde_json::Value = serde_json::from_str(&code).unwrap();
    let keys = format!("*{}#{}", code["slot"], code["code"].as_str().unwrap());
    set(&ha, serde_json::json!({"action": "UNLOCK", "code": keys})).await;
    // HA's user is told why (a denied access, shown in HA), not only the audit log.
    let refused = ha.wait("lockerd/k1/ha/access", 0).await;
    assert_eq!(refused["event_type"], "denied", "{refused}");
    assert!(
        refused["summary"]
            .as_str()
            .unwrap()
            .contains("allow_unlock"),
        "{refused}"
    );
    assert_eq!(ha.wait("lockerd/k1/last_access", 0).await, refused);
    let log = daemon.stop();
    assert!(
        !log.contains("\"event\":\"unlock\""),
        "allow_unlock is off: {log}"
    );
    let daemon = run(true);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let disc = ha.wait("homeassistant/device/lockerd_k1/config", 1).await;
    assert!(disc["cmps"]["lock"]["code_format"].is_string(), "{disc}");
    let n = ha.all("lockerd/k1/ha/access").len();
    set(&ha, serde_json::json!({"action": "UNLOCK", "code": ""})).await;
    let refused = ha.wait("lockerd/k1/ha/access", n).await;
    assert_eq!(refused["reason"], "no keypad credential as the lock code");
    set(&ha, serde_json::json!({"action": "UNLOCK", "code": keys})).await;
    let access = ha.wait("lockerd/k1/ha/access", n + 1).await;
    assert_eq!(access["event_type"], "granted", "{access}");
    assert_eq!(access["method"], "ha", "who and how: {access}");
    let t0 = Instant::now();
    while !ha
        .all("lockerd/k1/state")
        .iter()
        .any(|s| s["lock"] == "UNLOCKED")
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "no UNLOCKED state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Single use: the same code again does not open.
    set(&ha, serde_json::json!({"action": "UNLOCK", "code": keys})).await;
    let again = ha.wait("lockerd/k1/ha/access", n + 2).await;
    assert_eq!(again["event_type"], "denied", "{again}");
    let log = daemon.stop();
    assert_eq!(unlocks_in(&log), 1, "{log}");
    let rows = audit_lines(&db, Some(&key));
    assert!(
        rows.lines().any(|l| l.contains("ha_command_refused")),
        "{rows}"
    );
    assert!(
        rows.lines()
            .any(|l| l.contains("\"method\":\"ha\"") && l.contains("\"grant\"")),
        "{rows}"
    );
    assert!(
        !rows.contains(code["code"].as_str().unwrap()),
        "no code in the audit log"
    );
}

/// Unlock events in a daemon log.
fn unlocks_in(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"event\":\"unlock\""))
        .count()
}

/// A remote admin enrolls a user from a photo sent in the signed command: templates are
/// stored and the progress events say so; a photo that is not an image fails with a
/// clear message and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_enroll_with_a_photo_stores_templates_and_a_bad_photo_stores_none() {
    let Some(data) = shared_data() else { return };
    let d = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "mqtt enroll test key 0123456789");
    let ada = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let clip = data.join("blink/zju/000010M_FNN.mp4");
    let edits = mqtt_edits(
        broker.port,
        &[
            (
                "models",
                format!("models = {:?}", models_dir().display().to_string()),
            ),
            (
                "source",
                format!("source = {:?}", clip.display().to_string()),
            ),
        ],
    );
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let c = Client::connect(broker.port).await;
    let mut n = 0u8;
    let mut send = |cmd: &str, args: serde_json::Value| {
        n += 1;
        let body = serde_json::json!({"kiosk": "k1", "id": format!("e{n}"), "ts": now_s(),
            "nonce": BASE64.encode(&[n; 16]), "cmd": cmd, "args": args});
        sign(&ada, "ada", "lockerd/k1/cmd", &body)
    };
    let photo = std::fs::read(data.join("faces/Megawati_Sukarnoputri/1.jpg")).unwrap();
    c.send(send("user_add", serde_json::json!({"name": "meg"})))
        .await;
    assert_eq!(c.wait("lockerd/k1/reply/ada", 0).await["ok"], true);
    let done = |c: &Client, job: &serde_json::Value| {
        c.all("lockerd/k1/event").into_iter().find(|e| {
            e["event"] == "enroll" && e["enroll"]["job"] == *job && e["enroll"]["done"] == true
        })
    };
    for (args, ok) in [
        (
            serde_json::json!({"user": "meg", "source": {"photo": BASE64.encode(b"not a photo")}}),
            false,
        ),
        (
            serde_json::json!({"user": "meg", "source": {"photo": BASE64.encode(&photo)}}),
            true,
        ),
    ] {
        let skip = c.all("lockerd/k1/reply/ada").len();
        c.send(send("enroll", args)).await;
        let r = c.wait("lockerd/k1/reply/ada", skip).await;
        assert_eq!(r["ok"], true, "{r}");
        let job = r["result"]["job"].clone();
        let t0 = Instant::now();
        let ev = loop {
            if let Some(e) = done(&c, &job) {
                break e;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "job {job} did not end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let status = ev["enroll"]["status"].as_str().unwrap().to_string();
        if ok {
            assert_eq!(status, "completed", "{ev}");
        } else {
            assert_eq!(status, "failed", "{ev}");
            let msg = ev["enroll"]["message"].as_str().unwrap();
            assert!(msg.contains("the photo sent"), "a clear message: {msg}");
        }
    }
    let skip = c.all("lockerd/k1/reply/ada").len();
    c.send(send("users_list", serde_json::json!({}))).await;
    let r = c.wait("lockerd/k1/reply/ada", skip).await;
    let meg = r["result"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "meg")
        .cloned()
        .unwrap();
    assert_eq!(meg["templates"], 1, "{meg}");
    daemon.stop();
}

/// One message too large for the client's packet limit used to drop the whole command
/// connection; retained, it came back on every reconnect and nothing was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_message_is_refused_alone_and_the_connection_stays_up() {
    let d = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "mqtt big message key 0123456789");
    let daemon = Daemon::start_in(
        &bus,
        &db,
        &key,
        &mqtt_edits(broker.port, &[]),
        d.path(),
        &[],
    );
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let c = Client::connect(broker.port).await;
    // 100 KB, retained, on the one topic Home Assistant may write, and 100 KB as a command.
    c.client
        .publish(
            "lockerd/k1/ha/set",
            QoS::AtLeastOnce,
            true,
            vec![b'x'; 100_000],
        )
        .await
        .unwrap();
    c.send(vec![b'{'; 100_000]).await;
    assert_eq!(c.wait("lockerd/k1/rejected", 0).await["error"], "too_large");
    // Still connected and answering a signed command.
    let ada = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let body = serde_json::json!({"kiosk": "k1", "id": "s1", "ts": now_s(),
        "nonce": BASE64.encode(&[42u8; 16]), "cmd": "status", "args": {}});
    c.send(sign(&ada, "ada", "lockerd/k1/cmd", &body)).await;
    assert_eq!(c.wait("lockerd/k1/reply/ada", 0).await["ok"], true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = daemon.stop();
    assert_eq!(
        log.matches("mqtt: connected").count(),
        1,
        "the command connection was dropped: {log}"
    );
    // Clean up the retained message for any later test on this broker.
    c.client
        .publish("lockerd/k1/ha/set", QoS::AtLeastOnce, true, Vec::new())
        .await
        .unwrap();
}

/// A flood of validly signed commands from a viewer's key must not push an admin's
/// commands out of the queue (they wait apart and are served first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admins_commands_are_answered_through_a_viewer_flood() {
    use ed25519_dalek::SigningKey;
    let d = tempfile::tempdir().unwrap();
    let broker = Broker::start();
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "mqtt flood key 0123456789");
    let ada = SigningKey::from_bytes(&[7; 32]);
    let vic = SigningKey::from_bytes(&[8; 32]);
    let viewer = format!(
        "[[mqtt.admins]]\nid = \"vic\"\npublic_key = \"{k}\"\nseal_key = \"{k}\"\nrole = \"viewer\"\n",
        k = BASE64.encode(vic.verifying_key().as_bytes())
    );
    let mut edits = mqtt_edits(broker.port, &[]);
    if let Some(e) = edits.iter_mut().find(|e| e.0 == "# [[mqtt.admins]]") {
        e.1.push_str(&viewer);
    }
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let c = Client::connect(broker.port).await;
    let cmd = |k: &SigningKey, id: &str, n: u32| {
        let mut nonce = [0u8; 16];
        nonce[..4].copy_from_slice(&n.to_le_bytes());
        nonce[4] = id.len() as u8;
        let body = serde_json::json!({"kiosk": "k1", "id": format!("{id}{n}"), "ts": now_s(),
            "nonce": BASE64.encode(&nonce), "cmd": "status", "args": {}});
        sign(k, id, "lockerd/k1/cmd", &body)
    };
    for n in 0..3000 {
        c.send(cmd(&vic, "vic", n)).await;
    }
    for n in 0..10 {
        c.send(cmd(&ada, "ada", n)).await;
    }
    // All ten answered (the 10th reply is the 10th message on ada's reply topic).
    let last = c.wait("lockerd/k1/reply/ada", 9).await;
    assert_eq!(last["ok"], true, "{last}");
    let ids: Vec<String> = c
        .all("lockerd/k1/reply/ada")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    for n in 0..10 {
        assert!(ids.contains(&format!("ada{n}")), "ada{n}: {ids:?}");
    }
    daemon.stop();
}

/// `lockerctl --remote KEY --url URL --kiosk ID COMMAND`: the local commands, signed and
/// sent through a real mosquitto to the running daemon, printed by the same printer as
/// over the bus; secrets come back sealed and are opened with the key; a viewer's key
/// is refused with the same exit code as on the bus; `remote send` takes the same flags.
#[test]
fn lockerctl_remote_runs_the_local_commands_through_the_broker() {
    let broker = Broker::start();
    let bus = TestBus::start();
    let d = tempfile::tempdir().unwrap();
    let (db, key) = new_store(d.path(), "remote ctl test key 0123456789");
    let lockerctl = |args: &[&str]| {
        Command::new(lockerctl_bin())
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
            .output()
            .unwrap()
    };
    let keygen = |id: &str, role: &str| {
        let f = d.path().join(format!("{id}.key"));
        let o = lockerctl(&[
            "remote",
            "keygen",
            "--id",
            id,
            "--out",
            f.to_str().unwrap(),
            "--role",
            role,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let table: String = stdout(&o)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        (f, table)
    };
    let (ada, ada_table) = keygen("ada", "admin");
    let (vic, vic_table) = keygen("vic", "viewer");
    let daemon = Daemon::start_in(
        &bus,
        &db,
        &key,
        &[
            ("enabled = false", "enabled = true".to_string()),
            (
                "url = ",
                format!("url = \"mqtt://127.0.0.1:{}\"", broker.port),
            ),
            ("kiosk_id", "kiosk_id = \"k1\"".into()),
            ("# [[mqtt.admins]]", format!("{ada_table}{vic_table}")),
        ],
        d.path(),
        &[],
    );
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let remote = |k: &Path, args: &[&str]| {
        let mut all = vec![
            "--remote",
            k.to_str().unwrap(),
            "--url",
            &url,
            "--kiosk",
            "k1",
        ];
        all.extend_from_slice(args);
        lockerctl(&all)
    };
    let o = remote(&ada, &["users", "add", "bob"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("bob"), "{}", stdout(&o));
    // The same lines as over the bus.
    let o = remote(&ada, &["users", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), ctl(&bus, &["users", "list"]));
    // A one-time code: sealed on the wire, opened here, usable on the keypad.
    let o = remote(&ada, &["--json", "code", "issue", "--ttl", "10m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let code: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let keys = code["keys"].as_str().unwrap_or_default();
    assert!(keys.ends_with('#') && keys.len() > 8, "{code}");
    // A viewer may read, not change: exit 3 (not authorized), as on the bus.
    let o = remote(&vic, &["users", "add", "eve"]);
    assert_eq!(o.status.code(), Some(3), "{}{}", stdout(&o), stderr(&o));
    assert!(remote(&vic, &["status"]).status.success());
    // `remote send` with the same flags.
    let o = lockerctl(&[
        "remote",
        "send",
        "--remote",
        ada.to_str().unwrap(),
        "--url",
        &url,
        "--kiosk",
        "k1",
        "status",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Without a broker address: a usage error naming the flag.
    let o = lockerctl(&["--remote", ada.to_str().unwrap(), "status"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--url"), "{}", stderr(&o));
    daemon.stop();
}

/// The broker away while the kiosk makes more messages for Home Assistant than the
/// connection's request queue holds (50 unlocks and locks: 200 publishes waiting); the
/// broker back, the kiosk still serves signed commands. (Its poll loop once waited on
/// that full queue to re-subscribe, and so never polled again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_busy_while_the_broker_was_away_serves_commands_when_it_is_back() {
    let mut broker = Broker::start();
    let bus = TestBus::start();
    let d = tempfile::tempdir().unwrap();
    let (db, key) = new_store(d.path(), "mqtt reconnect test key 0123456789");
    let ada = lockerd_client::mqtt::remote::AdminKeys::generate("ada");
    let ada_file = d.path().join("ada.key");
    ada.save(&ada_file).unwrap();
    let edits = vec![
        ("enabled = false", "enabled = true".to_string()),
        (
            "url = ",
            format!("url = \"mqtt://127.0.0.1:{}\"", broker.port),
        ),
        ("kiosk_id", "kiosk_id = \"k1\"".into()),
        (
            "# [[mqtt.admins]]",
            ada.admin_table(lockerd::api::Clearance::Admin),
        ),
    ];
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));
    broker.stop();
    for _ in 0..50 {
        ctl(&bus, &["unlock"]);
        ctl(&bus, &["lock"]);
    }
    broker.restart();
    // Back and subscribed again: it says it is online once its subscription is made.
    let watcher = Client::connect(broker.port).await;
    let t0 = Instant::now();
    while !watcher
        .raw("lockerd/k1/availability")
        .iter()
        .any(|p| p == b"online")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not back online: {}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = Command::new(lockerctl_bin())
        .arg("--remote")
        .arg(&ada_file)
        .args(["--url", &format!("mqtt://127.0.0.1:{}", broker.port)])
        .args(["--kiosk", "k1", "--wait", "30", "--json", "status"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}\n{}", stderr(&o), daemon.log());
    assert!(stdout(&o).contains("\"lock\":\"locked\""), "{}", stdout(&o));
    daemon.stop();
}
