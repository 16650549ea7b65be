//! The firmware's whole protocol logic, independent of the chip: an MQTT session (over
//! any byte stream the caller provides) carrying the lock's frames, the lock's state
//! machine, and its counters in a flash log. The ESP32 main loop only moves bytes
//! between its TCP socket and this, and drives the relay from [`Session::relay_open`];
//! the host runs the very same code against a real broker and daemon (`tests/esp32.rs`).
//!
//! Fail-secure: the lock boots locked, locks when the link is lost ([`Session::link_lost`]),
//! and acts on a command only after its counter is in flash.

use crate::flash_log::{CounterLog, Flash};
use crate::lock::Lock;
use crate::mqtt_wire::{self, Packet, WireError};
use crate::{Door, Key, COMMAND_LEN, REPORT_LEN};

/// Longest topic: `lockerd/<64>/lock/<64>/state`.
const TOPIC_MAX: usize = 160;
/// Reports at least this often.
pub const HEARTBEAT_MS: u64 = 10_000;
/// MQTT keep-alive.
pub const KEEP_ALIVE_S: u16 = 30;
/// Room for any one outgoing burst (a PUBACK and a report).
pub const OUT_MAX: usize = 512;
/// Largest packet the session takes in; anything larger drops the link.
pub const IN_MAX: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionError<E> {
    /// The broker sent something this session cannot take: drop the connection.
    Protocol(&'static str),
    /// Flash failed: the frame was not acted on; drop the connection and retry later.
    Flash(E),
    Wire(WireError),
}

impl<E> From<WireError> for SessionError<E> {
    fn from(e: WireError) -> Self {
        SessionError::Wire(e)
    }
}

struct Topic {
    buf: [u8; TOPIC_MAX],
    len: usize,
}

impl Topic {
    fn new(parts: &[&str]) -> Option<Topic> {
        let mut t = Topic {
            buf: [0; TOPIC_MAX],
            len: 0,
        };
        for p in parts {
            let end = t.len + p.len();
            t.buf.get_mut(t.len..end)?.copy_from_slice(p.as_bytes());
            t.len = end;
        }
        Some(t)
    }
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// What happened in one call, for the caller's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Bytes written to `out` (send them all).
    pub send: usize,
    /// A command was accepted and acted on.
    pub accepted: bool,
    /// A frame was refused (counted in [`Lock::stats`]).
    pub refused: bool,
}

pub struct Session<F: Flash> {
    lock: Lock,
    log: CounterLog<F>,
    cmd: Topic,
    state: Topic,
    client_id: Topic,
    next_id: u16,
    inbuf: [u8; IN_MAX],
    inlen: usize,
    subscribed: bool,
    last_report_ms: u64,
    last_sent_ms: u64,
}

impl<F: Flash> Session<F> {
    /// Boot: locked, counters from flash, `session` fresh random bytes (see
    /// [`Lock::boot`]). `None` when an id is too long for a topic.
    pub fn boot(
        key: Key,
        log: CounterLog<F>,
        kiosk: &str,
        lock_id: &str,
        door: Door,
        session: crate::BootSession,
    ) -> Option<Self> {
        let base = ["lockerd/", kiosk, "/lock/", lock_id];
        Some(Session {
            lock: Lock::boot(key, log.counters(), door, session),
            log,
            cmd: Topic::new(&[base[0], base[1], base[2], base[3], "/cmd"])?,
            state: Topic::new(&[base[0], base[1], base[2], base[3], "/state"])?,
            client_id: Topic::new(&["lockerd-", kiosk, "-lock-", lock_id])?,
            next_id: 1,
            inbuf: [0; IN_MAX],
            inlen: 0,
            subscribed: false,
            last_report_ms: 0,
            last_sent_ms: 0,
        })
    }

    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// The counter log back (to reboot from the same flash).
    pub fn into_log(self) -> CounterLog<F> {
        self.log
    }

    /// Whether the relay should be in its unlocking position now.
    pub fn relay_open(&self) -> bool {
        self.lock.relay_open()
    }

    /// A new connection is up: CONNECT and SUBSCRIBE to send.
    pub fn on_connect(
        &mut self,
        now_ms: u64,
        login: Option<(&str, &[u8])>,
        out: &mut [u8],
    ) -> Result<usize, SessionError<F::Error>> {
        self.inlen = 0;
        self.subscribed = false;
        let mut n = mqtt_wire::connect(out, self.client_id.as_str(), KEEP_ALIVE_S, login)?;
        let id = self.packet_id();
        n += mqtt_wire::subscribe(&mut out[n..], id, self.cmd.as_str(), 1)?;
        self.last_sent_ms = now_ms;
        Ok(n)
    }

    /// The connection is gone: lock now (fail-secure). True when the relay changed.
    pub fn link_lost(&mut self) -> bool {
        self.inlen = 0;
        self.subscribed = false;
        self.lock.link_lost()
    }

    /// Bytes from the broker. Writes what to send back into `out`.
    pub fn on_bytes(
        &mut self,
        now_ms: u64,
        data: &[u8],
        out: &mut [u8],
    ) -> Result<Outcome, SessionError<F::Error>> {
        let mut r = Outcome::default();
        let mut data = data;
        while !data.is_empty() {
            let room = IN_MAX - self.inlen;
            if room == 0 {
                return Err(SessionError::Protocol(
                    "packet larger than the input buffer",
                ));
            }
            let take = room.min(data.len());
            self.inbuf[self.inlen..self.inlen + take].copy_from_slice(&data[..take]);
            self.inlen += take;
            data = &data[take..];
            loop {
                let buf = self.inbuf;
                let Some((p, used)) = mqtt_wire::decode(&buf[..self.inlen])? else {
                    break;
                };
                let o = self.on_packet(now_ms, p, &mut out[r.send..])?;
                r.send += o.send;
                r.accepted |= o.accepted;
                r.refused |= o.refused;
                self.inbuf.copy_within(used..self.inlen, 0);
                self.inlen -= used;
            }
        }
        Ok(r)
    }

    fn on_packet(
        &mut self,
        now_ms: u64,
        p: Packet<'_>,
        out: &mut [u8],
    ) -> Result<Outcome, SessionError<F::Error>> {
        let mut r = Outcome::default();
        match p {
            Packet::ConnAck { code: 0, .. } => {}
            Packet::ConnAck { .. } => return Err(SessionError::Protocol("connection refused")),
            Packet::SubAck { code, .. } if code <= 1 => {
                self.subscribed = true;
                r.send = self.report(now_ms, out)?;
            }
            Packet::SubAck { .. } => return Err(SessionError::Protocol("subscription refused")),
            Packet::Publish {
                topic, payload, id, ..
            } => {
                if let Some(id) = id {
                    r.send += mqtt_wire::puback(out, id)?;
                }
                if topic == self.cmd.as_str() {
                    match self.lock.check(payload, now_ms) {
                        Ok(a) => {
                            // In flash before it is acted on.
                            self.log.save(a.counters).map_err(SessionError::Flash)?;
                            self.lock.apply(now_ms, a);
                            r.accepted = true;
                            r.send += self.report(now_ms, &mut out[r.send..])?;
                        }
                        Err(_) => r.refused = true,
                    }
                }
            }
            Packet::PubAck { .. } | Packet::PingResp | Packet::Other(_) => {}
        }
        Ok(r)
    }

    /// Time passes: the end of a pulse, the heartbeat, the keep-alive ping.
    pub fn poll(&mut self, now_ms: u64, out: &mut [u8]) -> Result<usize, SessionError<F::Error>> {
        let changed = self.lock.tick(now_ms);
        if self.subscribed
            && (changed || now_ms.saturating_sub(self.last_report_ms) >= HEARTBEAT_MS)
        {
            return self.report(now_ms, out);
        }
        if now_ms.saturating_sub(self.last_sent_ms) >= (KEEP_ALIVE_S as u64 * 1000) / 2 {
            self.last_sent_ms = now_ms;
            return Ok(mqtt_wire::pingreq(out)?);
        }
        Ok(0)
    }

    /// The door contact or the bolt sensor moved: report at once when connected.
    pub fn set_inputs(
        &mut self,
        now_ms: u64,
        door: Door,
        jammed: bool,
        out: &mut [u8],
    ) -> Result<usize, SessionError<F::Error>> {
        let changed = self.lock.set_door(door) | self.lock.set_jammed(jammed);
        if changed && self.subscribed {
            return self.report(now_ms, out);
        }
        Ok(0)
    }

    fn report(&mut self, now_ms: u64, out: &mut [u8]) -> Result<usize, SessionError<F::Error>> {
        let frame = match self.lock.report(now_ms) {
            Ok(f) => f,
            Err(c) => {
                self.log.save(c).map_err(SessionError::Flash)?;
                self.lock.reserved(c);
                self.lock
                    .report(now_ms)
                    .map_err(|_| SessionError::Protocol("counter reservation"))?
            }
        };
        let id = self.packet_id();
        let n = mqtt_wire::publish(out, self.state.as_str(), &frame, Some(id), false)?;
        self.last_report_ms = now_ms;
        self.last_sent_ms = now_ms;
        Ok(n)
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }
}

// The frames fit the buffers.
const _: () = assert!(COMMAND_LEN + 200 < IN_MAX && REPORT_LEN + TOPIC_MAX + 16 < OUT_MAX);
