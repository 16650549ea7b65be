//! The host lock simulator: `lock_proto::Lock`, the state machine the ESP32 firmware
//! runs, on the daemon's broker, with its counters in a file kept the way the firmware
//! keeps them in flash (written before a frame is acted on or sent; atomically replaced).
//! It stands in for the ESP32 in the tests and the demo (`lockerd-lab lock-sim`), and can be
//! told to jam, open its door, ignore commands or fall silent. Everything it does is one
//! JSON object per line on `out`.

use super::bridge::{Backoff, Connection, MqttError, Topics};
use super::config::{LockConfig, MqttConfig};
use super::lock::{read_key, LockLinkError};
use lock_proto::{Counters, Door, Lock};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Key(#[from] LockLinkError),
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("lock state file {0}: {1}")]
    State(String, String),
}

pub struct SimOptions {
    /// The simulated flash: the lock's counters (16 bytes).
    pub state_file: PathBuf,
    /// Reports at least this often.
    pub heartbeat: Duration,
}

/// What the person running the simulator can do to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// The bolt sensor disagrees (true) or agrees again.
    Jam(bool),
    Door(Door),
    /// Ignore every command (but keep reporting): no acknowledgement.
    Deaf(bool),
    /// Ignore commands and send nothing: a lock that stopped reporting.
    Mute(bool),
    Quit,
}

impl Control {
    /// `jam`, `unjam`, `door open`, `door closed`, `deaf`, `hear`, `mute`, `unmute`, `quit`.
    pub fn parse(line: &str) -> Option<Control> {
        Some(match line.trim() {
            "jam" => Control::Jam(true),
            "unjam" => Control::Jam(false),
            "door open" => Control::Door(Door::Open),
            "door closed" => Control::Door(Door::Closed),
            "deaf" => Control::Deaf(true),
            "hear" => Control::Deaf(false),
            "mute" => Control::Mute(true),
            "unmute" => Control::Mute(false),
            "quit" => Control::Quit,
            _ => return None,
        })
    }
}

/// The counters in `path` (none yet: zeros). A file of another size is refused: a lock
/// that cannot trust its counters does not start.
pub fn load_counters(path: &Path) -> Result<Counters, SimError> {
    let e = |m: String| SimError::State(path.display().to_string(), m);
    match std::fs::read(path) {
        Ok(b) => {
            let b: [u8; Counters::LEN] = b
                .as_slice()
                .try_into()
                .map_err(|_| e(format!("{} bytes, not {}", b.len(), Counters::LEN)))?;
            Ok(Counters::from_bytes(&b))
        }
        Err(x) if x.kind() == std::io::ErrorKind::NotFound => Ok(Counters::default()),
        Err(x) => Err(e(x.to_string())),
    }
}

/// Replace the counters in `path` durably (write, fsync, rename, fsync the directory).
pub fn save_counters(path: &Path, c: Counters) -> Result<(), SimError> {
    let e = |m: std::io::Error| SimError::State(path.display().to_string(), m.to_string());
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(e)?;
    f.write_all(&c.to_bytes()).map_err(e)?;
    f.sync_all().map_err(e)?;
    std::fs::rename(&tmp, path).map_err(e)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(e)?;
    }
    Ok(())
}

struct Sim<F: FnMut(Value)> {
    lock: Lock,
    state_file: PathBuf,
    client: AsyncClient,
    state_topic: String,
    start: Instant,
    deaf: bool,
    mute: bool,
    relay: bool,
    out: F,
}

/// Run the simulated lock until [`Control::Quit`] (a closed control channel only ends
/// the controls).
pub async fn run<F: FnMut(Value)>(
    mqtt: &MqttConfig,
    cfg: &LockConfig,
    opts: SimOptions,
    mut control: mpsc::Receiver<Control>,
    out: F,
) -> Result<(), SimError> {
    let key = read_key(cfg)?;
    let saved = load_counters(&opts.state_file)?;
    let conn = Connection::new(mqtt)?;
    let topics = Topics::new(&mqtt.kiosk_id);
    let cmd_topic = topics.lock_cmd(&cfg.lock_id);
    let (client, mut eventloop) = conn.client(
        format!("lockerd-{}-lock-{}", mqtt.kiosk_id, cfg.lock_id),
        16,
    );
    let mut sim = Sim {
        // Fail-secure on boot: locked, whatever was going on before.
        // A new boot session every start, from the OS RNG (the firmware: its TRNG).
        lock: Lock::boot(*key, saved, Door::Closed, rand::random()),
        state_file: opts.state_file,
        client,
        state_topic: topics.lock_state(&cfg.lock_id),
        start: Instant::now(),
        deaf: false,
        mute: false,
        relay: false,
        out,
    };
    (sim.out)(json!({
        "event": "boot",
        "reserved": saved.reserved,
        "seen": saved.seen,
        "relay_open": false,
    }));
    let mut heartbeat = tokio::time::interval(opts.heartbeat);
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let mut backoff = Backoff::default();
    let mut control_open = true;
    loop {
        tokio::select! {
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    backoff.connected();
                    let _ = sim.client.subscribe(cmd_topic.clone(), QoS::AtLeastOnce).await;
                    (sim.out)(json!({ "event": "connected" }));
                    sim.report().await?;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    (sim.out)(json!({ "event": "subscribed" }));
                }
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                    sim.on_command(&p.payload).await?;
                }
                Ok(_) => {}
                Err(e) => {
                    // Fail-secure on link loss.
                    if sim.lock.link_lost() {
                        sim.relay_follow();
                    }
                    (sim.out)(json!({ "event": "link_lost", "error": e.to_string() }));
                    backoff.failed(format!("lock-sim: {e}")).await;
                }
            },
            _ = heartbeat.tick() => sim.report().await?,
            _ = ticks.tick() => {
                if sim.lock.tick(sim.now_ms()) {
                    sim.relay_follow();
                    sim.report().await?;
                }
            }
            c = control.recv(), if control_open => {
                let Some(c) = c else {
                    control_open = false;
                    continue;
                };
                (sim.out)(json!({ "event": "control", "control": format!("{c:?}") }));
                let changed = match c {
                    Control::Quit => break,
                    Control::Jam(j) => sim.lock.set_jammed(j),
                    Control::Door(d) => sim.lock.set_door(d),
                    Control::Deaf(d) => {
                        sim.deaf = d;
                        false
                    }
                    Control::Mute(m) => {
                        sim.mute = m;
                        false
                    }
                };
                sim.relay_follow();
                if changed {
                    sim.report().await?;
                }
            }
        }
    }
    Ok(())
}

impl<F: FnMut(Value)> Sim<F> {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Drive the (simulated) relay from the state machine, saying when it moves.
    fn relay_follow(&mut self) {
        let open = self.lock.relay_open();
        if open != self.relay {
            self.relay = open;
            (self.out)(json!({ "event": "relay", "open": open }));
        }
    }

    fn save(&mut self, c: Counters) -> Result<(), SimError> {
        save_counters(&self.state_file, c.max(self.lock.counters()))
    }

    async fn on_command(&mut self, frame: &[u8]) -> Result<(), SimError> {
        if self.deaf || self.mute {
            (self.out)(json!({ "event": "ignored", "bytes": frame.len() }));
            return Ok(());
        }
        match self.lock.check(frame, self.now_ms()) {
            Ok(a) => {
                // Persisted before acted on: a power cut cannot make it good twice.
                self.save(a.counters)?;
                let cmd = a.frame;
                self.lock.apply(self.now_ms(), a);
                (self.out)(json!({
                    "event": "accepted",
                    "kind": format!("{:?}", cmd.kind).to_lowercase(),
                    "counter": cmd.counter,
                    "pulse_ms": cmd.pulse_ms,
                }));
                self.relay_follow();
                self.report().await
            }
            Err(e) => {
                let s = self.lock.stats;
                (self.out)(json!({
                    "event": "refused",
                    "why": e.kind(),
                    "error": e.to_string(),
                    "refused": {
                        "forged": s.forged,
                        "replayed": s.replayed,
                        "truncated": s.truncated,
                        "invalid": s.invalid,
                        "stale": s.stale,
                    },
                }));
                Ok(())
            }
        }
    }

    async fn report(&mut self) -> Result<(), SimError> {
        if self.mute {
            return Ok(());
        }
        let frame = match self.lock.report(self.now_ms()) {
            Ok(f) => f,
            Err(c) => {
                self.save(c)?;
                self.lock.reserved(c);
                match self.lock.report(self.now_ms()) {
                    Ok(f) => f,
                    Err(_) => return Ok(()),
                }
            }
        };
        let c = self.lock.counters();
        let _ = self
            .client
            .publish(
                self.state_topic.clone(),
                QoS::AtLeastOnce,
                false,
                frame.to_vec(),
            )
            .await;
        (self.out)(json!({
            "event": "report",
            "state": format!("{:?}", self.lock.state()).to_lowercase(),
            "acked": c.seen,
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_file_round_trips_and_a_bad_one_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lock.state");
        assert_eq!(load_counters(&p).unwrap(), Counters::default());
        let c = Counters {
            reserved: 128,
            seen: 7,
        };
        save_counters(&p, c).unwrap();
        assert_eq!(load_counters(&p).unwrap(), c);
        std::fs::write(&p, b"short").unwrap();
        assert!(load_counters(&p).is_err());
    }

    #[test]
    fn control_lines() {
        assert_eq!(Control::parse("jam"), Some(Control::Jam(true)));
        assert_eq!(
            Control::parse(" door open\n"),
            Some(Control::Door(Door::Open))
        );
        assert_eq!(Control::parse("dance"), None);
    }
}
