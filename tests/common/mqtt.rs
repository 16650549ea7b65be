//! The MQTT side of the integration tests: a real mosquitto on loopback, a watching
//! client, lockerctl on a test bus, and the config edits that turn MQTT on.

use super::*;
use data_encoding::BASE64;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// mosquitto on a free loopback port, anonymous, no persistence unless `extra` asks for
/// it. Killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    conf: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Broker::start_with("")
    }

    /// With more lines for mosquitto.conf (TLS); it runs as root to read the test keys.
    pub fn start_with(extra: &str) -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let persistence = if extra.contains("persistence") {
            ""
        } else {
            "persistence false\n"
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n{persistence}user root\n{extra}"
            ),
        )
        .unwrap();
        Broker {
            port,
            child: Broker::spawn(&conf, port),
            conf,
            _dir: dir,
        }
    }

    pub fn spawn(conf: &Path, port: u16) -> Child {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/setup.sh installs it)");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "mosquitto did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// A clean stop (SIGTERM: a persistent broker saves its sessions).
    pub fn stop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = Broker::spawn(&self.conf, self.port);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Messages seen: (topic, payload).
pub type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A watcher/sender on the broker: every message under lockerd/k1/ is collected.
pub struct Client {
    pub client: AsyncClient,
    pub seen: Seen,
}

impl Client {
    pub async fn connect(port: u16) -> Client {
        Client::connect_as(port, "test-admin", true).await
    }

    /// With `clean` false the broker keeps the subscriptions and queues QoS 1 messages
    /// while this client is away; the client reconnects by itself.
    pub async fn connect_as(port: u16, id: &str, clean: bool) -> Client {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_max_packet_size(1 << 20, 1 << 20);
        o.set_clean_session(clean);
        let (client, mut ev) = AsyncClient::new(o, 64);
        for t in ["lockerd/k1/#", "homeassistant/#"] {
            client.subscribe(t, QoS::AtLeastOnce).await.unwrap();
        }
        let seen: Seen = Default::default();
        let s2 = seen.clone();
        tokio::spawn(async move {
            loop {
                match ev.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => s2
                        .lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec())),
                    Ok(_) => {}
                    Err(_) if clean => break,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Client { client, seen }
    }

    /// The payloads seen on `topic`, as JSON.
    pub fn all(&self, topic: &str) -> Vec<serde_json::Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, p)| serde_json::from_slice(p).ok())
            .collect()
    }

    pub async fn send(&self, payload: Vec<u8>) {
        self.client
            .publish("lockerd/k1/cmd", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }

    /// The raw payloads seen on `topic`.
    pub fn raw(&self, topic: &str) -> Vec<Vec<u8>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Wait for the next message on `topic` after the first `skip`.
    pub async fn wait(&self, topic: &str, skip: usize) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let got = self.raw(topic);
            if got.len() > skip {
                let p = &got[skip];
                return serde_json::from_slice(p).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(p).into())
                });
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "nothing on {topic}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub fn ctl(bus: &TestBus, args: &[&str]) -> String {
    let o = Command::new(lockerctl_bin())
        .args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
        .output()
        .unwrap();
    assert!(o.status.success(), "lockerctl {args:?}: {}", stderr(&o));
    stdout(&o)
}

pub fn mqtt_edits(port: u16, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("enabled = false", "enabled = true".to_string()),
        ("url = ", format!("url = \"mqtt://127.0.0.1:{port}\"")),
        ("kiosk_id", "kiosk_id = \"k1\"".into()),
        (
            "# [[mqtt.admins]]",
            format!(
                "[[mqtt.admins]]\nid = \"ada\"\npublic_key = \"{k}\"\nseal_key = \"{k}\"\nrole = \"admin\"\n",
                k = BASE64.encode(
                    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                        .verifying_key()
                        .as_bytes()
                )
            ),
        ),
    ];
    e.extend(extra.iter().cloned());
    e
}

/// A test PKI made with openssl: a CA with a server certificate (localhost, 127.0.0.1)
/// and client certificates (kiosk, admin, the ESP32 lock lock-door1, also in DER), and a
/// second, unrelated CA with its own client certificate.
pub fn make_pki(dir: &Path) {
    let sh = |script: &str| {
        let o = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(o.status.success(), "{script}: {}", stderr(&o));
    };
    sh(
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > san.ext
        printf 'extendedKeyUsage=clientAuth\\n' > client.ext
        for ca in ca rogue; do
          openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca 2>/dev/null
        done
        issue() { # NAME CA [EXTFILE]
          openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null
          openssl x509 -req -in $1.csr -CA $2.pem -CAkey $2.key -CAcreateserial \
            -out $1.pem -days 2 ${3:+-extfile $3} 2>/dev/null
        }
        issue server ca san.ext
        issue kiosk ca client.ext
        issue admin ca client.ext
        issue intruder rogue client.ext
        issue lock-door1 ca client.ext
        for n in lock-door1 ca; do openssl x509 -in $n.pem -outform der -out $n.der; done
        openssl ec -in lock-door1.key -outform der -out lock-door1.key.der 2>/dev/null
        chmod 600 *.key",
    );
}
