//! The ESP32 lock (issue #12) through a real mosquitto on loopback: the daemon with
//! `[lock] kind = "esp32"` and the host lock simulator (`lockerd-lab lock-sim`, the
//! firmware's state machine from `hardware/lock-proto`) as separate processes.

mod common;
use common::mqtt::*;
use common::*;
use rumqttc::QoS;
use serde_json::Value;
use std::io::{BufRead, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CMD: &str = "lockerd/k1/lock/door1/cmd";
const STATE: &str = "lockerd/k1/lock/door1/state";
const AVAIL: &str = "lockerd/k1/lock/door1/availability";

/// `lockerd-lab lock-sim` with its stdin (controls) and its JSON lines.
struct LockSim {
    child: Child,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl LockSim {
    fn start(conf: &Path, state: &Path) -> LockSim {
        let mut child = Command::new(lab_bin())
            .arg("--config")
            .arg(conf)
            .args(["lock-sim", "--heartbeat-s", "0.5", "--state"])
            .arg(state)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines: Arc<Mutex<Vec<Value>>> = Default::default();
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    l2.lock().unwrap().push(v);
                }
            }
        });
        let s = LockSim { child, lines };
        s.wait(|v| v["event"] == "subscribed");
        s
    }

    fn say(&mut self, control: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{control}").unwrap();
        stdin.flush().unwrap();
        self.wait(|v| v["event"] == "control");
    }

    fn count(&self, f: impl Fn(&Value) -> bool) -> usize {
        self.lines.lock().unwrap().iter().filter(|v| f(v)).count()
    }

    /// Wait for a line (after the lines already seen with the same test) and return it.
    fn wait(&self, f: impl Fn(&Value) -> bool) -> Value {
        self.wait_n(1, f)
    }

    fn wait_n(&self, n: usize, f: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let got: Vec<Value> = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .filter(|v| f(v))
                .cloned()
                .collect();
            if got.len() >= n {
                return got[n - 1].clone();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "lock-sim never said it; it said:\n{:#?}",
                self.lines.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LockSim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rig {
    d: tempfile::TempDir,
    broker: Broker,
    bus: TestBus,
    db: PathBuf,
    key: PathBuf,
    edits: Vec<(&'static str, String)>,
    watcher: Client,
}

impl Rig {
    async fn new() -> Rig {
        let d = tempfile::tempdir().unwrap();
        let broker = Broker::start();
        let bus = TestBus::start();
        let (db, key) = new_store(d.path(), "esp32 lock test key 0123456789");
        let lock_key = d.path().join("lock.key");
        let bytes: [u8; 32] = rand_bytes();
        std::fs::write(&lock_key, bytes).unwrap();
        std::fs::set_permissions(&lock_key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let edits = mqtt_edits(
            broker.port,
            &[
                ("kind = \"relay\"", "kind = \"esp32\"".into()),
                (
                    "key_file = \"/etc/lockerd/lock.key\"",
                    format!("key_file = \"{}\"", lock_key.display()),
                ),
                ("ack_timeout_ms", "ack_timeout_ms = 400".into()),
                ("report_timeout_s", "report_timeout_s = 3".into()),
            ],
        );
        let watcher = Client::connect(broker.port).await;
        Rig {
            d,
            broker,
            bus,
            db,
            key,
            edits,
            watcher,
        }
    }

    fn daemon(&self) -> Daemon {
        Daemon::start_in(
            &self.bus,
            &self.db,
            &self.key,
            &self.edits,
            self.d.path(),
            &[],
        )
    }

    fn sim(&self) -> LockSim {
        LockSim::start(
            &self.d.path().join("daemon.toml"),
            &self.d.path().join("lock.state"),
        )
    }

    /// Raw frames seen on a topic.
    fn frames(&self, topic: &str) -> Vec<Vec<u8>> {
        self.watcher.raw(topic)
    }

    async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.watcher
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    fn lockerctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(lockerctl_bin())
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus.address)
            .output()
            .unwrap()
    }

    fn lock_state(&self) -> String {
        let o = self.lockerctl(&["status", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["lock"].as_str().unwrap_or_default().to_string()
    }
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    b
}

fn counter(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[2..10].try_into().unwrap())
}

fn wait_for(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An unlock is acknowledged and the relay opens, then closes at the end of the pulse;
/// forged, replayed and truncated frames are refused and counted by both ends; both
/// counters survive a restart of either side (an old frame stays refused after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_esp32_lock_opens_on_an_acknowledged_unlock_and_refuses_forged_replayed_and_truncated_frames(
) {
    let rig = Rig::new().await;
    let daemon = rig.daemon();
    let sim = rig.sim();
    daemon.wait_log("lock door1: available", Duration::from_secs(20));
    assert_eq!(rig.watcher.wait(AVAIL, 0).await, "offline");

    // An unlock through D-Bus: acknowledged, the relay opens, then closes by itself.
    let o = rig.lockerctl(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let acc = sim.wait(|v| v["event"] == "accepted" && v["kind"] == "unlock");
    assert_eq!(acc["pulse_ms"], 5000, "access.unlock_pulse_s: {acc}");
    sim.wait(|v| v["event"] == "relay" && v["open"] == true);
    sim.wait(|v| v["event"] == "relay" && v["open"] == false);
    assert!(daemon.log().contains("unlock #"), "{}", daemon.log());
    assert_eq!(rig.lock_state(), "locked");

    // To the lock: a replay of that unlock (stale: the lock has reported since; frames
    // are bound to the latest report), a forgery, a truncated frame.
    let unlock = rig
        .frames(CMD)
        .into_iter()
        .find(|f| f.len() == lock_proto::COMMAND_LEN && f[1] == 1)
        .unwrap();
    // (The daemon's own frame may have been stale once already, when a heartbeat crossed
    // it and it was sent again: count from here.)
    let is_stale = |v: &Value| v["event"] == "refused" && v["why"] == "stale";
    let stale_before = sim.count(is_stale);
    rig.publish(CMD, unlock.clone()).await;
    let mut forged = unlock.clone();
    forged[13] ^= 0x40; // a longer pulse
    rig.publish(CMD, forged).await;
    rig.publish(CMD, unlock[..30].to_vec()).await;
    sim.wait_n(stale_before + 1, is_stale);
    for why in ["forged", "truncated"] {
        sim.wait(|v| v["event"] == "refused" && v["why"] == why);
    }
    let last = sim.wait(|v| v["event"] == "refused" && v["why"] == "truncated");
    assert_eq!(last["refused"]["stale"], stale_before as u64 + 1, "{last}");
    assert_eq!(last["refused"]["forged"], 1);
    assert_eq!(sim.count(|v| v["event"] == "relay" && v["open"] == true), 1);

    // To the daemon: an old report again, a forgery, a truncated one.
    let report = rig.frames(STATE).first().unwrap().clone();
    rig.publish(STATE, report.clone()).await;
    let mut f = report.clone();
    f[18] = 1; // "unlocked"
    rig.publish(STATE, f).await;
    rig.publish(STATE, report[..lock_proto::REPORT_LEN - 1].to_vec())
        .await;
    let log = daemon.wait_log("refused a report (truncated)", Duration::from_secs(10));
    assert!(log.contains("refused a report (replayed)"), "{log}");
    assert!(log.contains("refused a report (forged)"), "{log}");
    assert!(log.contains("1 forged, 1 replayed, 1 truncated"), "{log}");

    // Restart the lock (from its state file), then the daemon: counters go on, an old
    // frame stays refused, and an unlock still opens.
    let seen_before = counter(&unlock);
    sim.kill();
    let mut sim = rig.sim();
    let boot = sim.wait(|v| v["event"] == "boot");
    assert!(boot["seen"].as_u64().unwrap() >= seen_before, "{boot}");
    // An old frame after the lock's reboot: another boot session, dead.
    rig.publish(CMD, unlock.clone()).await;
    sim.wait(|v| v["event"] == "refused" && v["why"] == "stale");
    let old_report = rig.frames(STATE).last().unwrap().clone();
    daemon.stop();
    let daemon = rig.daemon();
    daemon.wait_log("lock door1: available", Duration::from_secs(20));
    rig.publish(STATE, old_report).await;
    daemon.wait_log("refused a report (replayed)", Duration::from_secs(10));
    let o = rig.lockerctl(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    sim.wait(|v| v["event"] == "relay" && v["open"] == true);
    let cmds: Vec<u64> = rig
        .frames(CMD)
        .iter()
        .filter(|f| f.len() == lock_proto::COMMAND_LEN)
        .map(|f| counter(f))
        .collect();
    // Ours (not the test's replays) rise across the restart.
    let ours: Vec<u64> = {
        let mut seen = std::collections::BTreeSet::new();
        cmds.iter().copied().filter(|c| seen.insert(*c)).collect()
    };
    assert!(ours.windows(2).all(|w| w[0] < w[1]), "{ours:?}");
    sim.say("quit");
    daemon.stop();
    drop(rig.broker);
}

/// A lock that does not acknowledge: the unlock is sent again under new counters, then
/// fails closed with a fault alert. A jam is an alert. A lock that stops reporting is
/// unavailable on D-Bus and to Home Assistant, and grants fail at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_unlock_is_retried_then_fails_closed_and_a_silent_lock_is_unavailable() {
    let rig = Rig::new().await;
    let daemon = rig.daemon();
    let mut sim = rig.sim();
    daemon.wait_log("lock door1: available", Duration::from_secs(20));

    sim.say("deaf");
    let before = rig.frames(CMD).len();
    let o = rig.lockerctl(&["unlock"]);
    assert!(!o.status.success(), "a lock that never acknowledged opened");
    assert!(stderr(&o).contains("did not acknowledge"), "{}", stderr(&o));
    let unlocks: Vec<u64> = rig.frames(CMD)[before..]
        .iter()
        .filter(|f| f[1] == 1)
        .map(|f| counter(f))
        .collect();
    assert_eq!(unlocks.len(), 3, "first try and two retries: {unlocks:?}");
    assert!(
        unlocks.windows(2).all(|w| w[0] < w[1]),
        "new counters: {unlocks:?}"
    );
    let alert = |kind: &str, text: &str| {
        rig.watcher.all("lockerd/k1/event").into_iter().any(|e| {
            e["event"] == "alert"
                && e["alert"]["kind"] == kind
                && e["alert"]["message"].as_str().unwrap_or("").contains(text)
        })
    };
    wait_for("a fault alert for the unlock", || {
        alert("fault", "did not acknowledge")
    });
    assert_eq!(sim.count(|v| v["event"] == "relay" && v["open"] == true), 0);

    // Red team #25.1: the unlock frames nobody received, kept by a subscriber and
    // published once the lock hears again, never open it: it has reported since (a
    // lock back on the broker reports first; here, its next heartbeat).
    sim.say("hear");
    let reports = sim.count(|v| v["event"] == "report");
    sim.wait_n(reports + 1, |v| v["event"] == "report");
    let kept: Vec<Vec<u8>> = rig.frames(CMD)[before..]
        .iter()
        .filter(|f| f[1] == 1)
        .cloned()
        .collect();
    for f in &kept {
        rig.publish(CMD, f.clone()).await;
    }
    sim.wait_n(kept.len(), |v| {
        v["event"] == "refused" && v["why"] == "stale"
    });
    assert_eq!(sim.count(|v| v["event"] == "relay" && v["open"] == true), 0);
    assert_eq!(rig.lock_state(), "locked");

    sim.say("jam");
    wait_for("a jam alert", || alert("fault", "jammed"));
    wait_for("jammed on D-Bus", || rig.lock_state() == "jammed");
    sim.say("unjam");
    wait_for("no longer jammed", || rig.lock_state() == "locked");

    sim.say("mute");
    daemon.wait_log("lock door1: unavailable", Duration::from_secs(10));
    wait_for("unavailable on D-Bus", || rig.lock_state() == "unavailable");
    wait_for("offline to Home Assistant", || {
        rig.frames(AVAIL).last().is_some_and(|v| v == b"offline")
    });
    let t0 = Instant::now();
    let o = rig.lockerctl(&["unlock"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not reporting"), "{}", stderr(&o));
    assert!(t0.elapsed() < Duration::from_secs(5), "refused at once");
    let ha = rig.watcher.all("homeassistant/device/lockerd_k1/config");
    let lock = &ha.last().unwrap()["cmps"]["lock"];
    assert_eq!(lock["availability"][1]["topic"], AVAIL);

    sim.say("unmute");
    daemon.wait_log("lock door1: available (reporting)", Duration::from_secs(10));
    wait_for("locked again", || rig.lock_state() == "locked");

    // Red team #25.2: the lock comes back without its counters (its state lost): the
    // daemon says so, shows it unavailable and refuses grants, instead of "locked".
    sim.kill();
    std::fs::remove_file(rig.d.path().join("lock.state")).unwrap();
    let mut sim = rig.sim();
    daemon.wait_log("counters went back", Duration::from_secs(10));
    wait_for("unavailable on D-Bus", || rig.lock_state() == "unavailable");
    wait_for("a fault alert about the counters", || {
        alert("fault", "counters behind")
    });
    let o = rig.lockerctl(&["unlock"]);
    assert!(
        !o.status.success(),
        "a lock whose counters went back opened"
    );
    assert_eq!(sim.count(|v| v["event"] == "relay" && v["open"] == true), 0);
    sim.say("quit");
    daemon.stop();
}

/// Two sectors of RAM standing in for the ESP32's flash (survives a "reboot" of the
/// session: it is handed to the next one).
struct RamFlash(Vec<u8>);

impl lock_proto::flash_log::Flash for RamFlash {
    type Error = ();
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), ()> {
        for (i, b) in data.iter().enumerate() {
            self.0[offset as usize + i] &= b;
        }
        Ok(())
    }
    fn erase(&mut self, offset: u32) -> Result<(), ()> {
        let o = offset as usize;
        self.0[o..o + 4096].fill(0xFF);
        Ok(())
    }
}

type FwSession = lock_proto::session::Session<RamFlash>;

/// Run the firmware's session over a plain TCP socket to the broker until `stop`; the
/// relay's moves go to `relay`. Returns the session (its flash inside) for a reboot.
fn run_firmware(
    port: u16,
    mut s: FwSession,
    relay: Arc<Mutex<Vec<bool>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> FwSession {
    use std::io::Read;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let t0 = Instant::now();
    let now = || t0.elapsed().as_millis() as u64;
    let mut out = [0u8; lock_proto::session::OUT_MAX];
    let n = s.on_connect(now(), None, &mut out).unwrap();
    sock.write_all(&out[..n]).unwrap();
    let mut was = false;
    let mut buf = [0u8; 256];
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                let o = s.on_bytes(now(), &buf[..k], &mut out).unwrap();
                sock.write_all(&out[..o.send]).unwrap();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
        let n = s.poll(now(), &mut out).unwrap();
        sock.write_all(&out[..n]).unwrap();
        if s.relay_open() != was {
            was = s.relay_open();
            relay.lock().unwrap().push(was);
        }
    }
    s.link_lost();
    s
}

/// The firmware's own protocol code (`lock_proto::session`: MQTT, frames, counters in a
/// flash log, fail-secure) over a plain socket, in place of the ESP32: the daemon's
/// unlock opens it and it closes by itself; after a reboot from its flash an unlock
/// still opens (nothing reused, nothing lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firmware_session_opens_for_the_daemon_and_keeps_its_counters_across_a_reboot() {
    use lock_proto::flash_log::CounterLog;
    use std::sync::atomic::{AtomicBool, Ordering};
    let rig = Rig::new().await;
    let key: [u8; 32] = std::fs::read(rig.d.path().join("lock.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let daemon = rig.daemon();
    let relay: Arc<Mutex<Vec<bool>>> = Default::default();
    let boot = |flash: RamFlash| {
        let log = CounterLog::open(flash, 0).unwrap();
        FwSession::boot(
            key,
            log,
            "k1",
            "door1",
            lock_proto::Door::Closed,
            rand::random(),
        )
        .unwrap()
    };
    let start = |s: FwSession| {
        let stop = Arc::new(AtomicBool::new(false));
        let (port, r, st) = (rig.broker.port, relay.clone(), stop.clone());
        (
            stop,
            std::thread::spawn(move || run_firmware(port, s, r, st)),
        )
    };
    let (stop, fw) = start(boot(RamFlash(vec![0xFF; 8192])));
    daemon.wait_log("lock door1: available", Duration::from_secs(20));
    let o = rig.lockerctl(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("the relay opened and closed", || {
        *relay.lock().unwrap() == [true, false]
    });
    stop.store(true, Ordering::SeqCst);
    let s = fw.join().unwrap();
    let seen = s.lock().counters().seen;
    assert!(seen > 0);
    // Reboot from flash: boots locked with the same counters, and still opens.
    let s = boot(s.into_log().into_flash());
    assert!(!s.relay_open());
    assert_eq!(s.lock().counters().seen, seen);
    let (stop, fw) = start(s);
    std::thread::sleep(Duration::from_millis(500)); // connected and subscribed
    let o = rig.lockerctl(&["unlock"]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("opened again", || relay.lock().unwrap().len() >= 3);
    stop.store(true, Ordering::SeqCst);
    let s = fw.join().unwrap();
    assert!(s.lock().counters().seen > seen);
    assert_eq!(s.lock().stats.refused(), 0);
    daemon.stop();
}

/// The firmware's TLS 1.3 client settings (`lock-tls`: the broker checked against
/// the compiled-in CA and its name, the lock's own client certificate) with embedded-tls,
/// the firmware's TLS stack, over a host socket: through a mosquitto that requires client
/// certificates and enforces the shipped ACL (the lock may only read its commands and
/// write its reports), the daemon's unlock opens it. A broker with a certificate from
/// another CA is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_firmware_session_over_tls_opens_for_the_daemon_and_refuses_a_foreign_broker() {
    use embedded_io_adapters::std::FromStd;
    use embedded_tls::blocking::{TlsConfig, TlsConnection, TlsContext};
    use lock_proto::flash_log::CounterLog;
    use lock_tls::LockTls;
    let d = tempfile::tempdir().unwrap();
    let pki = d.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    make_pki(&pki);
    let p = |f: &str| pki.join(f).display().to_string();
    let acl = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/mosquitto-lockerd.acl");
    let tls_broker = |server: &str| {
        Broker::start_with(&format!(
            "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
             use_identity_as_username true\nacl_file {}\nset_tcp_nodelay true\n",
            p("ca.pem"),
            p(&format!("{server}.pem")),
            p(&format!("{server}.key")),
            acl.display()
        ))
    };
    let broker = tls_broker("server");
    let bus = TestBus::start();
    let (db, key) = new_store(d.path(), "esp32 tls test key 0123456789");
    let lock_key = d.path().join("lock.key");
    let secret = rand_bytes();
    std::fs::write(&lock_key, secret).unwrap();
    std::fs::set_permissions(&lock_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut edits = mqtt_edits(broker.port, &[]);
    edits[1] = (
        "url = ",
        format!("url = \"mqtts://localhost:{}\"", broker.port),
    );
    edits.extend([
        ("ca_file", format!("ca_file = \"{}\"", p("ca.pem"))),
        ("cert_file", format!("cert_file = \"{}\"", p("kiosk.pem"))),
        (
            "key_file = \"\"",
            "# [store] key_file from --key-file".to_string(),
        ),
        (
            "key_file = \"\"",
            format!("key_file = \"{}\"", p("kiosk.key")),
        ),
        ("kind = \"relay\"", "kind = \"esp32\"".into()),
        (
            "key_file = \"/etc/lockerd/lock.key\"",
            format!("key_file = \"{}\"", lock_key.display()),
        ),
    ]);
    let daemon = Daemon::start_in(&bus, &db, &key, &edits, d.path(), &[]);
    daemon.wait_log("mqtt: connected", Duration::from_secs(20));

    let read = |n: &str| std::fs::read(pki.join(n)).unwrap();
    let (ca, cert, ckey) = (
        read("ca.der"),
        read("lock-door1.der"),
        read("lock-door1.key.der"),
    );
    // Connect with TLS and run the session until the relay opens; Err on a failed handshake.
    let firmware = Arc::new(move |port: u16| -> Result<u64, String> {
        let sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        // A session that never opens fails (as an error) instead of hanging.
        sock.set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let (mut rbuf, mut wbuf) = (vec![0u8; 16_640], vec![0u8; 16_640]);
        let mut tls = TlsConnection::new(FromStd::new(sock), &mut rbuf, &mut wbuf);
        let config = TlsConfig::new().with_server_name("localhost");
        let provider = LockTls::new(rand::rngs::OsRng, &ca, &cert, &ckey).unwrap();
        tls.open(TlsContext::new(&config, provider))
            .map_err(|e| format!("{e:?}"))?;
        let log = CounterLog::open(RamFlash(vec![0xFF; 8192]), 0).unwrap();
        let mut s = FwSession::boot(
            secret,
            log,
            "k1",
            "door1",
            lock_proto::Door::Closed,
            rand::random(),
        )
        .unwrap();
        let t0 = Instant::now();
        let mut out = [0u8; lock_proto::session::OUT_MAX];
        let n = s.on_connect(0, None, &mut out).unwrap();
        tls.write(&out[..n]).unwrap();
        tls.flush().unwrap();
        let mut buf = [0u8; 512];
        while !s.relay_open() {
            let k = tls.read(&mut buf).map_err(|e| format!("{e:?}"))?;
            let o = s
                .on_bytes(t0.elapsed().as_millis() as u64, &buf[..k], &mut out)
                .unwrap();
            tls.write(&out[..o.send]).unwrap();
            tls.flush().unwrap();
        }
        Ok(s.lock().counters().seen)
    });
    let (port, f2) = (broker.port, firmware.clone());
    let fw = std::thread::spawn(move || f2(port));
    daemon.wait_log("lock door1: available", Duration::from_secs(20));
    let o = Command::new(lockerctl_bin())
        .arg("unlock")
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let seen = fw.join().unwrap().expect("TLS session");
    assert!(seen > 0, "the unlock was accepted over TLS");
    daemon.stop();

    // A broker whose certificate another CA signed: the firmware refuses the handshake.
    let rogue = {
        let mut b = tls_broker("server");
        b.stop();
        drop(b);
        // Reissue the server certificate from the rogue CA for this broker.
        let o = Command::new("sh")
            .arg("-ec")
            .arg(
                "openssl x509 -req -in server.csr -CA rogue.pem -CAkey rogue.key -CAcreateserial \
                 -out rogue-server.pem -days 2 -extfile san.ext 2>/dev/null; \
                 cp server.key rogue-server.key",
            )
            .current_dir(&pki)
            .output()
            .unwrap();
        assert!(o.status.success());
        tls_broker("rogue-server")
    };
    let err = firmware(rogue.port).unwrap_err();
    assert!(err.contains("InvalidCertificate"), "{err}");
}
