//! A fleet of kiosks (issue #28): signed, versioned user records, with face templates
//! sealed to each kiosk that may open, carried by a real mosquitto (and a second one
//! bridged to it) to real daemons, each kiosk on its own private bus and store.

mod common;
use common::mqtt::*;
use common::*;
use lockerd::api::Clearance;
use lockerd_client::fleet::{user_topic, Record};
use lockerd_client::mqtt::remote::AdminKeys;
use lockerd_client::types::Role;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

struct Kiosk {
    bus: TestBus,
    daemon: Option<Daemon>,
    db: PathBuf,
    key: PathBuf,
    edits: Vec<(&'static str, String)>,
    dir: tempfile::TempDir,
}

impl Kiosk {
    fn start(&mut self) {
        self.start_and_wait(Some("fleet site: directory in sync"));
    }

    /// Start, and wait for `what` in the log (None: only for the daemon to be ready).
    fn start_and_wait(&mut self, what: Option<&str>) {
        let d = Daemon::start_in(
            &self.bus,
            &self.db,
            &self.key,
            &self.edits,
            self.dir.path(),
            &[],
        );
        if let Some(what) = what {
            d.wait_log(what, Duration::from_secs(20));
        }
        self.daemon = Some(d);
    }

    /// Set a config line (by the prefix of the shipped one) for the next start.
    fn edit(&mut self, prefix: &'static str, line: String) {
        self.edits.retain(|(p, _)| *p != prefix);
        self.edits.push((prefix, line));
    }

    /// The camera replays `clip` from the next start.
    fn camera(&mut self, clip: &Path) {
        self.edit(
            "models",
            format!("models = {:?}", models_dir().display().to_string()),
        );
        self.edit(
            "source",
            format!("source = {:?}", clip.display().to_string()),
        );
    }

    fn stop(&mut self) {
        if let Some(d) = self.daemon.take() {
            d.stop();
        }
    }
}

fn kiosk(port: u16, id: &str, admins: &str) -> Kiosk {
    let bus = TestBus::start();
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = new_store(dir.path(), "fleet test key 0123456789");
    let edits = vec![
        ("enabled = false", "enabled = true".to_string()),
        ("url = ", format!("url = \"mqtt://127.0.0.1:{port}\"")),
        ("kiosk_id", format!("kiosk_id = \"{id}\"")),
        ("# [[mqtt.admins]]", admins.to_string()),
        ("# [fleet]", "[fleet]".to_string()),
        ("# id = \"my-site\"", "id = \"site\"".to_string()),
    ];
    let mut k = Kiosk {
        bus,
        daemon: None,
        db,
        key,
        edits,
        dir,
    };
    k.start();
    k
}

/// `lockerctl fleet ...` against the broker, from a machine with no kiosk (no faces).
fn fleet(port: u16, key: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = fleet_cmd(port, key, args);
    if args[0] == "publish" {
        cmd.arg("--no-faces");
    }
    cmd.output().unwrap()
}

/// `lockerctl fleet ...` at kiosk `k` (on its bus): `publish` seals the faces there.
fn fleet_at(k: &Kiosk, port: u16, key: &Path, args: &[&str]) -> serde_json::Value {
    let o = fleet_cmd(port, key, args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &k.bus.address)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn fleet_cmd(port: u16, key: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(lockerctl_bin());
    cmd.args(["--json", "fleet"])
        .args(args)
        .arg("--key")
        .arg(key)
        .args(["--fleet", "site", "--url"])
        .arg(format!("mqtt://127.0.0.1:{port}"));
    cmd
}

/// `lockerctl fleet status --json`: the cards by kiosk id.
fn cards(port: u16) -> serde_json::Value {
    let o = Command::new(lockerctl_bin())
        .args(["--json", "fleet", "status", "--fleet", "site", "--url"])
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mut by = serde_json::Map::new();
    for c in v["kiosks"].as_array().unwrap() {
        by.insert(c["kiosk"].as_str().unwrap().to_string(), c.clone());
    }
    serde_json::Value::Object(by)
}

/// The user as this kiosk holds them (None: not there).
fn user(k: &Kiosk, name: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value =
        serde_json::from_str(&ctl(&k.bus, &["--json", "users", "list"])).unwrap();
    v["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .cloned()
}

/// Wait until `ok` holds of `name` at `k`; how long it took.
fn until(k: &Kiosk, name: &str, ok: impl Fn(Option<&serde_json::Value>) -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if ok(user(k, name).as_ref()) {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{name} at {:?}: {:?}",
            k.bus.address,
            user(k, name)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn audit(k: &Kiosk) -> String {
    ctl(&k.bus, &["--json", "audit", "list", "--limit", "1000"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_every_kiosk_bans_apply_at_once_and_forgeries_change_nothing() {
    let broker = Broker::start();
    let keys = tempfile::tempdir().unwrap();
    let ada_file: PathBuf = keys.path().join("ada.key");
    let ada = AdminKeys::generate("ada");
    ada.save(&ada_file).unwrap();
    let val_file = keys.path().join("val.key");
    let val = AdminKeys::generate("val");
    val.save(&val_file).unwrap();
    let admins = format!(
        "{}{}",
        ada.admin_table(Clearance::Admin),
        val.admin_table(Clearance::Viewer)
    );
    let mut a = kiosk(broker.port, "k1", &admins);
    let mut b = kiosk(broker.port, "k2", &admins);
    // The fleet view: both kiosks online, each with an X25519 key of its own.
    let view = cards(broker.port);
    for k in ["k1", "k2"] {
        assert_eq!(view[k]["online"], true, "{view}");
        assert_eq!(view[k]["lock"], "locked", "{view}");
        assert_eq!(view[k]["seal_key"].as_str().unwrap().len(), 44, "{view}");
    }
    assert_ne!(view["k1"]["seal_key"], view["k2"]["seal_key"]);

    // bob for every kiosk: both hold him.
    let o = fleet(broker.port, &ada_file, &["publish", "bob"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for k in [&a, &b] {
        until(k, "bob", |u| u.is_some_and(|u| u["role"] == "user"));
    }
    // carol for k1 only: k2 never holds her.
    let o = fleet(
        broker.port,
        &ada_file,
        &["publish", "carol", "--kiosks", "k1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    until(&a, "carol", |u| u.is_some());
    assert!(user(&b, "carol").is_none());
    // k2 joins the group "lobby"; dave for @lobby: k2 holds him, k1 never does.
    b.stop();
    b.edit("# groups", r#"groups = ["lobby"]"#.into());
    b.start();
    assert_eq!(
        cards(broker.port)["k2"]["groups"],
        serde_json::json!(["lobby"])
    );
    let o = fleet(
        broker.port,
        &ada_file,
        &["publish", "dave", "--kiosks", "@lobby"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    until(&b, "dave", |u| u.is_some());
    let o = fleet(broker.port, &ada_file, &["publish", "erin"]);
    assert!(o.status.success(), "{}", stderr(&o));
    until(&a, "erin", |u| u.is_some());
    assert!(user(&a, "dave").is_none());

    // bob banned through the fleet: both kiosks within 2 s.
    let t0 = Instant::now();
    let o = fleet(
        broker.port,
        &ada_file,
        &["publish", "bob", "--role", "banned"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for k in [&a, &b] {
        until(k, "bob", |u| u.is_some_and(|u| u["role"] == "banned"));
    }
    let ban = t0.elapsed();
    // Measured, not asserted (scripts/bench-fleet.sh reports p50/p99).
    println!(
        "ban applied at both kiosks {} ms after lockerctl started",
        ban.as_millis()
    );

    // Forgeries, each refused and audited, nothing changed: a viewer's key, a record for
    // another fleet on this fleet's topic, a replayed older version, a bad signature.
    let o = fleet(broker.port, &val_file, &["publish", "bob"]);
    assert!(o.status.success(), "the broker takes it: {}", stderr(&o));
    let c = {
        let mut o = MqttOptions::new("fleet-test", "127.0.0.1", broker.port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (c, mut ev) = AsyncClient::new(o, 16);
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        c
    };
    let bob = |version: i64, fleet: &str| Record {
        fleet: fleet.into(),
        user: "bob".into(),
        version,
        role: Role::User,
        enabled: true,
        kiosks: vec![],
        removed: false,
        faces: None,
    };
    let topic = user_topic("site", "bob");
    let other_fleet = lockerd::mqtt::envelope::sign_bytes(
        &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        "nobody",
        &topic,
        b"{}",
    );
    let mut forged = ada.sign_record(&bob(i64::MAX - 1, "site"));
    let n = forged.len();
    forged[n - 5] ^= 1; // inside the base64 signature
    for payload in [
        ada.sign_record(&bob(5, "site")),
        ada.sign_record(&bob(lockerd::types::now_ms(), "elsewhere")),
        other_fleet,
        forged,
    ] {
        c.publish(topic.clone(), QoS::AtLeastOnce, true, payload)
            .await
            .unwrap();
    }
    for k in [&a, &b] {
        let t0 = Instant::now();
        loop {
            let log = audit(k);
            let refused = log.matches("fleet_record_refused").count();
            if refused >= 4 && log.contains("fleet_record_stale") {
                // Another fleet's record cannot be moved here: its signature covers its
                // topic (a body naming another fleet is `wrong_kiosk`: the unit tests).
                for kind in ["not_authorized", "bad_signature", "unknown_key", "invalid"] {
                    assert!(log.contains(kind), "{kind}: {log}");
                }
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "{log}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(user(k, "bob").unwrap()["role"], "banned", "unchanged");
    }

    // The fleet's audit, gathered through the broker: both kiosks' rows (each refused
    // forgery among them), one list in time order.
    let gathered = |want_ok: bool| {
        let o = fleet_cmd(broker.port, &ada_file, &["audit", "--limit", "1000"])
            .output()
            .unwrap();
        assert_eq!(o.status.success(), want_ok, "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let rows = v["rows"].as_array().unwrap().clone();
        let ts: Vec<i64> = rows
            .iter()
            .map(|r| r["row"]["ts_ms"].as_i64().unwrap())
            .collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "in time order: {ts:?}");
        (rows, v["unanswered"].clone())
    };
    let (rows, unanswered) = gathered(true);
    assert_eq!(unanswered, serde_json::json!([]));
    for k in ["k1", "k2"] {
        let refused = rows
            .iter()
            .filter(|r| r["kiosk"] == k && r["row"].to_string().contains("fleet_record_refused"))
            .count();
        assert!(refused >= 4, "{k}: {refused} refusals in {rows:?}");
    }

    // k2 stopped; bob unbanned and then revoked meanwhile; k2 back: the retained
    // tombstone removes him before anything else (and carol, never k2's, stays away).
    b.stop();
    let t0 = Instant::now();
    while cards(broker.port)["k2"]["online"] != false {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{}",
            cards(broker.port)
        );
    }
    // The gathered audit names the kiosk it could not ask, and says so in its exit code.
    let (rows, unanswered) = gathered(false);
    assert!(rows.iter().all(|r| r["kiosk"] == "k1") && !rows.is_empty());
    assert_eq!(unanswered[0]["kiosk"], "k2", "{unanswered}");
    let key_k2 = cards(broker.port)["k2"]["seal_key"].clone();
    for args in [["publish", "bob"], ["revoke", "bob"]] {
        let o = fleet(broker.port, &ada_file, &args);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    until(&a, "bob", |u| u.is_none());
    b.start();
    until(&b, "bob", |u| u.is_none());
    assert!(user(&b, "carol").is_none());
    let log = audit(&b);
    assert!(log.contains(r#""kept":false"#), "{log}");
    // Back online, with the same key (kept in its encrypted store), and k1's card
    // shows the directory version it applied last.
    let view = cards(broker.port);
    assert_eq!(view["k2"]["online"], true, "{view}");
    assert_eq!(view["k2"]["seal_key"], key_k2);
    assert!(
        view["k1"]["directory_version"].as_i64().unwrap() > 0,
        "{view}"
    );
    a.stop();
    b.stop();
}

/// A user's face-template counts at `k` (None: not there).
fn templates(k: &Kiosk, name: &str) -> Option<i64> {
    user(k, name).map(|u| u["templates"].as_i64().unwrap())
}

/// The face rows of `k`'s audit log, oldest first.
fn face_rows(k: &Kiosk) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_str(&audit(k)).unwrap();
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["method"] == "face")
        .cloned()
        .collect()
}

/// `lockerctl status --json` at `k`: the fleet state.
fn fleet_state(k: &Kiosk) -> String {
    let v: serde_json::Value = serde_json::from_str(&ctl(&k.bus, &["--json", "status"])).unwrap();
    v["fleet"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faces_reach_only_the_kiosks_that_may_open_and_a_stale_directory_opens_for_nobody() {
    let Some(data) = shared_data() else { return };
    let zju = data.join("blink/zju");
    let broker = Broker::start();
    // A second broker bridged to the first, as a site that outgrew one broker.
    let bridged = Broker::start_with(&format!(
        "connection site1\naddress 127.0.0.1:{}\ntopic lockerd/fleet/# both 1\n",
        broker.port
    ));
    let keys = tempfile::tempdir().unwrap();
    let ada_file: PathBuf = keys.path().join("ada.key");
    let ada = AdminKeys::generate("ada");
    ada.save(&ada_file).unwrap();
    let admins = ada.admin_table(Clearance::Admin);
    // A enrolls (its camera replays a stranger); B and C are on the same broker, D on
    // the bridged one.
    let mut a = kiosk(broker.port, "k1", &admins);
    a.stop();
    a.camera(&zju.join("000010M_FNN.mp4"));
    a.edit("# offline_after_s", "offline_after_s = 2".into());
    a.start();
    let mut b = kiosk(broker.port, "k2", &admins);
    let mut c = kiosk(broker.port, "k3", &admins);
    let d = kiosk(bridged.port, "k4", &admins);
    // Every card reaches the first broker (D's over the bridge): A can seal to each.
    let t0 = Instant::now();
    while !(1..=4).all(|i| cards(broker.port)[format!("k{i}")]["online"] == true) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{}",
            cards(broker.port)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (u, clip) in [("alice", "000001M_FNN.mp4"), ("bob", "000002M_FNN.mp4")] {
        ctl(&a.bus, &["users", "add", u]);
        ctl(&a.bus, &["enroll", u, zju.join(clip).to_str().unwrap()]);
    }
    let held = templates(&a, "alice").unwrap();
    assert!(held >= 2, "{held}");

    // alice for k1 and k2: B holds her templates; C and D never get a share of them.
    let r = fleet_at(
        &a,
        broker.port,
        &ada_file,
        &["publish", "alice", "--kiosks", "k1,k2"],
    );
    assert_eq!(r["faces"], serde_json::json!(["k1", "k2"]), "{r}");
    until(&b, "alice", |u| u.is_some_and(|u| u["templates"] == held));
    // A applied its own record: the same templates, opened from its own share.
    until(&a, "alice", |u| u.is_some_and(|u| u["templates"] == held));
    // The same from an admin far away: A seals them on a signed `fleet_export`.
    let o = fleet_cmd(
        broker.port,
        &ada_file,
        &["publish", "alice", "--kiosks", "k1,k2"],
    )
    .args(["--from", "k1"])
    .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent")
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(r["faces"], serde_json::json!(["k1", "k2"]), "{r}");
    let v = r["version"].as_i64().unwrap();
    let t0 = Instant::now();
    while cards(broker.port)["k2"]["directory_version"].as_i64() < Some(v) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{}",
            cards(broker.port)
        );
    }
    assert_eq!(templates(&b, "alice"), Some(held));
    // bob for every kiosk: each holds his templates, D over the bridge.
    let r = fleet_at(&a, broker.port, &ada_file, &["publish", "bob"]);
    assert_eq!(
        r["faces"],
        serde_json::json!(["k1", "k2", "k3", "k4"]),
        "{r}"
    );
    for k in [&b, &c, &d] {
        until(k, "bob", |u| {
            u.is_some_and(|u| u["templates"].as_i64() > Some(1))
        });
    }
    for k in [&c, &d] {
        assert!(user(k, "alice").is_none());
        assert!(!audit(k).contains("alice"), "{}", audit(k));
    }
    let exported = audit(&a);
    assert!(exported.contains("fleet_faces_exported"), "{exported}");

    // alice walks up at B (her other session): let in by the faces A sealed to B.
    b.stop();
    b.camera(&zju.join("000001M_FTN.mp4"));
    b.start();
    let log = b
        .daemon
        .as_ref()
        .unwrap()
        .wait_log("\"event\":\"unlock\"", Duration::from_secs(60));
    assert!(log.contains("\"user\":\"alice\""), "{log}");

    // bob, published for every kiosk, walks up at C: let in. alice walks up at C, which
    // never held her: not recognised.
    for (clip, opens) in [("000002M_FTN.mp4", true), ("000001M_FTN.mp4", false)] {
        c.stop();
        c.camera(&zju.join(clip));
        c.start();
        let log = c.daemon.as_ref().unwrap().wait_log(
            if opens {
                "\"event\":\"unlock\""
            } else {
                "mp4 ended"
            },
            Duration::from_secs(60),
        );
        if opens {
            assert!(log.contains("\"user\":\"bob\""), "{log}");
        } else {
            assert!(!log.contains("\"event\":\"unlock\""), "{log}");
        }
    }
    let before = face_rows(&c).len();

    // bob banned from a machine with no kiosk: applied everywhere, D over the bridge.
    c.stop();
    let o = fleet(
        broker.port,
        &ada_file,
        &["publish", "bob", "--role", "banned"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    for k in [&a, &b, &d] {
        until(k, "bob", |u| u.is_some_and(|u| u["role"] == "banned"));
    }
    // The ban kept the faces (a record without faces says nothing of them).
    assert!(templates(&b, "bob") > Some(1));
    // C was off during the ban; bob walks up at C as it starts: denied as banned, the
    // ban applied before its first decision.
    c.camera(&zju.join("000002M_FTN.mp4"));
    c.start();
    let log = c
        .daemon
        .as_ref()
        .unwrap()
        .wait_log("mp4 ended", Duration::from_secs(60));
    assert!(!log.contains("\"event\":\"unlock\""), "{log}");
    let rows = face_rows(&c);
    let first = rows
        .get(before)
        .unwrap_or_else(|| panic!("no face decision at C: {log}"));
    assert_eq!(
        (first["outcome"].as_str(), first["reason"].as_str()),
        (Some("deny"), Some("banned")),
        "{rows:?}"
    );

    // The broker goes: A is offline, then cut off after its 2 s.
    drop(bridged);
    let mut broker = broker;
    broker.stop();
    let t0 = Instant::now();
    let mut seen = vec![fleet_state(&a)];
    while seen.last().map(String::as_str) != Some("cut_off") {
        assert!(t0.elapsed() < Duration::from_secs(15), "{seen:?}");
        std::thread::sleep(Duration::from_millis(100));
        let s = fleet_state(&a);
        if seen.last() != Some(&s) {
            seen.push(s);
        }
    }
    assert!(seen.contains(&"offline".to_string()), "{seen:?}");
    // B restarts with no broker: it cannot know its directory is current, so alice's
    // walk-up is refused (a local user and the keypad would still open).
    b.stop();
    b.start_and_wait(None);
    let log = b
        .daemon
        .as_ref()
        .unwrap()
        .wait_log("mp4 ended", Duration::from_secs(60));
    assert!(!log.contains("\"event\":\"unlock\""), "{log}");
    assert_eq!(fleet_state(&b), "cut_off");
    let rows = face_rows(&b);
    assert!(
        rows.iter()
            .any(|r| r["reason"] == "fleet_cut_off" && r["user"] == "alice"),
        "{rows:?}"
    );
    for mut k in [a, b, c] {
        k.stop();
    }
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_that_syncs_a_large_directory_still_applies_the_next_change() {
    // 600 retained records: a sync long enough that the card and its queue were once
    // the connection's undoing (the sync's last card waited on a full queue that only
    // its own task drained, and nothing was applied after it).
    let broker = Broker::start_with("max_queued_messages 100000\n");
    let keys = tempfile::tempdir().unwrap();
    let ada_file: PathBuf = keys.path().join("ada.key");
    let ada = AdminKeys::generate("ada");
    ada.save(&ada_file).unwrap();
    let mut o = MqttOptions::new("fleet-filler", "127.0.0.1", broker.port);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (c, mut ev) = AsyncClient::new(o, 1024);
    let n = 600;
    let version = lockerd::types::now_ms();
    let filler = tokio::spawn(async move {
        let mut acked = 0;
        while acked < n {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) = ev.poll().await {
                acked += 1;
            }
        }
    });
    for i in 0..n {
        let r = Record {
            fleet: "site".into(),
            user: format!("u{i:04}"),
            version: version + i as i64,
            role: Role::User,
            enabled: true,
            kiosks: vec![],
            removed: false,
            faces: None,
        };
        c.publish(
            user_topic("site", &r.user),
            QoS::AtLeastOnce,
            true,
            ada.sign_record(&r),
        )
        .await
        .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), filler)
        .await
        .unwrap()
        .unwrap();
    let mut k = kiosk(broker.port, "k1", &ada.admin_table(Clearance::Admin));
    let o = fleet(
        broker.port,
        &ada_file,
        &["publish", "u0000", "--role", "banned"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    until(&k, "u0000", |u| u.is_some_and(|u| u["role"] == "banned"));
    let listed: serde_json::Value =
        serde_json::from_str(&ctl(&k.bus, &["--json", "users", "list"])).unwrap();
    assert_eq!(listed["users"].as_array().unwrap().len(), n as usize);
    k.stop();
}
