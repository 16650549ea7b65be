//! The few MQTT 3.1.1 packets the lock's firmware needs, encoded into and decoded from
//! caller buffers (no allocation): CONNECT, SUBSCRIBE, PUBLISH (QoS 0 and 1), PUBACK,
//! PINGREQ, DISCONNECT out; CONNACK, SUBACK, PUBLISH, PUBACK, PINGRESP in. Host-tested,
//! and tested against a real mosquitto in the daemon's `tests/esp32.rs`.

/// Why a packet could not be encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// The output buffer is too small.
    Full,
    /// A length or field the protocol does not allow.
    Malformed,
}

/// An incoming packet, borrowing from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    ConnAck {
        session_present: bool,
        code: u8,
    },
    SubAck {
        id: u16,
        code: u8,
    },
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        retain: bool,
        id: Option<u16>,
    },
    PubAck {
        id: u16,
    },
    PingResp,
    /// Any other packet type (its first byte), skipped.
    Other(u8),
}

struct Out<'a> {
    buf: &'a mut [u8],
    n: usize,
}

impl Out<'_> {
    fn byte(&mut self, b: u8) -> Result<(), WireError> {
        *self.buf.get_mut(self.n).ok_or(WireError::Full)? = b;
        self.n += 1;
        Ok(())
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), WireError> {
        let end = self.n.checked_add(b.len()).ok_or(WireError::Full)?;
        self.buf
            .get_mut(self.n..end)
            .ok_or(WireError::Full)?
            .copy_from_slice(b);
        self.n = end;
        Ok(())
    }
    fn u16(&mut self, v: u16) -> Result<(), WireError> {
        self.bytes(&v.to_be_bytes())
    }
    fn string(&mut self, b: &[u8]) -> Result<(), WireError> {
        let len = u16::try_from(b.len()).map_err(|_| WireError::Malformed)?;
        self.u16(len)?;
        self.bytes(b)
    }
    /// Fixed header: type byte and the remaining length (variable-length integer).
    fn header(&mut self, first: u8, mut len: usize) -> Result<(), WireError> {
        if len > 268_435_455 {
            return Err(WireError::Malformed);
        }
        self.byte(first)?;
        loop {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            self.byte(b)?;
            if len == 0 {
                return Ok(());
            }
        }
    }
}

/// CONNECT with a clean session; `login` is a user name and password.
pub fn connect(
    buf: &mut [u8],
    client_id: &str,
    keep_alive_s: u16,
    login: Option<(&str, &[u8])>,
) -> Result<usize, WireError> {
    let mut flags = 0x02;
    let mut len = 10 + 2 + client_id.len();
    if let Some((u, p)) = login {
        flags |= 0xC0;
        len += 2 + u.len() + 2 + p.len();
    }
    let mut o = Out { buf, n: 0 };
    o.header(0x10, len)?;
    o.string(b"MQTT")?;
    o.byte(4)?;
    o.byte(flags)?;
    o.u16(keep_alive_s)?;
    o.string(client_id.as_bytes())?;
    if let Some((u, p)) = login {
        o.string(u.as_bytes())?;
        o.string(p)?;
    }
    Ok(o.n)
}

/// SUBSCRIBE to one topic filter.
pub fn subscribe(buf: &mut [u8], id: u16, topic: &str, qos: u8) -> Result<usize, WireError> {
    if id == 0 || qos > 1 {
        return Err(WireError::Malformed);
    }
    let mut o = Out { buf, n: 0 };
    o.header(0x82, 2 + 2 + topic.len() + 1)?;
    o.u16(id)?;
    o.string(topic.as_bytes())?;
    o.byte(qos)?;
    Ok(o.n)
}

/// PUBLISH at QoS 0 (`id` None) or 1 (`id` Some, not 0).
pub fn publish(
    buf: &mut [u8],
    topic: &str,
    payload: &[u8],
    id: Option<u16>,
    retain: bool,
) -> Result<usize, WireError> {
    if id == Some(0) {
        return Err(WireError::Malformed);
    }
    let qos = if id.is_some() { 1 } else { 0 };
    let mut o = Out { buf, n: 0 };
    let len = 2 + topic.len() + if id.is_some() { 2 } else { 0 } + payload.len();
    o.header(0x30 | (qos << 1) | retain as u8, len)?;
    o.string(topic.as_bytes())?;
    if let Some(id) = id {
        o.u16(id)?;
    }
    o.bytes(payload)?;
    Ok(o.n)
}

pub fn puback(buf: &mut [u8], id: u16) -> Result<usize, WireError> {
    let mut o = Out { buf, n: 0 };
    o.header(0x40, 2)?;
    o.u16(id)?;
    Ok(o.n)
}

pub fn pingreq(buf: &mut [u8]) -> Result<usize, WireError> {
    let mut o = Out { buf, n: 0 };
    o.header(0xC0, 0)?;
    Ok(o.n)
}

pub fn disconnect(buf: &mut [u8]) -> Result<usize, WireError> {
    let mut o = Out { buf, n: 0 };
    o.header(0xE0, 0)?;
    Ok(o.n)
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, WireError> {
    match b.get(at..at + 2) {
        Some(x) => Ok(u16::from_be_bytes([x[0], x[1]])),
        None => Err(WireError::Malformed),
    }
}

/// Decode the first packet in `buf`: `Ok(None)` when more bytes are needed, else the
/// packet and how many bytes it took. Packets longer than `buf` can ever hold are
/// `Malformed` (the caller drops the connection).
pub fn decode(buf: &[u8]) -> Result<Option<(Packet<'_>, usize)>, WireError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    for i in 0..4 {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        len |= ((b & 0x7F) as usize) << (7 * i);
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Err(WireError::Malformed);
        }
    }
    let Some(body) = buf.get(at..at + len) else {
        return Ok(None);
    };
    let p = match first >> 4 {
        2 => {
            if len != 2 {
                return Err(WireError::Malformed);
            }
            Packet::ConnAck {
                session_present: body[0] & 1 != 0,
                code: body[1],
            }
        }
        3 => {
            let qos = (first >> 1) & 3;
            if qos > 1 {
                return Err(WireError::Malformed); // never subscribed above QoS 1
            }
            let tlen = u16_at(body, 0)? as usize;
            let topic = body.get(2..2 + tlen).ok_or(WireError::Malformed)?;
            let topic = core::str::from_utf8(topic).map_err(|_| WireError::Malformed)?;
            let mut rest = 2 + tlen;
            let id = if qos == 1 {
                rest += 2;
                Some(u16_at(body, 2 + tlen)?)
            } else {
                None
            };
            Packet::Publish {
                topic,
                payload: body.get(rest..).ok_or(WireError::Malformed)?,
                qos,
                retain: first & 1 != 0,
                id,
            }
        }
        4 => Packet::PubAck {
            id: u16_at(body, 0)?,
        },
        9 => Packet::SubAck {
            id: u16_at(body, 0)?,
            code: *body.get(2).ok_or(WireError::Malformed)?,
        },
        13 => Packet::PingResp,
        _ => Packet::Other(first),
    };
    Ok(Some((p, at + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_matches_the_spec_example_layout() {
        let mut b = [0u8; 64];
        let n = connect(&mut b, "lock", 30, None).unwrap();
        assert_eq!(
            &b[..n],
            &[0x10, 16, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 30, 0, 4, b'l', b'o', b'c', b'k']
        );
        let n = connect(&mut b, "l", 30, Some(("u", b"pw"))).unwrap();
        assert_eq!(b[9], 0xC2);
        assert_eq!(b[1] as usize, n - 2);
        assert_eq!(
            connect(&mut b[..10], "lock", 30, None),
            Err(WireError::Full)
        );
    }

    #[test]
    fn publish_round_trips_and_long_lengths_use_more_bytes() {
        let mut b = [0u8; 300];
        let payload = [7u8; 200];
        let n = publish(&mut b, "a/b", &payload, Some(9), false).unwrap();
        assert_eq!(b[0], 0x32);
        assert_eq!((b[1], b[2]), (0x80 | (207 % 128) as u8, 1)); // 207 = 2+3+2+200
        let (p, used) = decode(&b[..n]).unwrap().unwrap();
        assert_eq!(used, n);
        assert_eq!(
            p,
            Packet::Publish {
                topic: "a/b",
                payload: &payload,
                qos: 1,
                retain: false,
                id: Some(9)
            }
        );
        // Partial input waits for more.
        for k in 0..n {
            assert_eq!(decode(&b[..k]).unwrap(), None);
        }
    }

    #[test]
    fn small_packets_decode() {
        assert_eq!(
            decode(&[0x20, 2, 0, 0]).unwrap().unwrap().0,
            Packet::ConnAck {
                session_present: false,
                code: 0
            }
        );
        assert_eq!(
            decode(&[0x90, 3, 0, 1, 1]).unwrap().unwrap().0,
            Packet::SubAck { id: 1, code: 1 }
        );
        assert_eq!(
            decode(&[0x40, 2, 0, 5]).unwrap().unwrap().0,
            Packet::PubAck { id: 5 }
        );
        assert_eq!(decode(&[0xD0, 0]).unwrap().unwrap().0, Packet::PingResp);
        assert_eq!(decode(&[0x20, 3, 0, 0, 0]), Err(WireError::Malformed));
        assert_eq!(
            decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(WireError::Malformed)
        );
        // A topic length past the packet.
        assert_eq!(decode(&[0x30, 3, 0, 9, b'a']), Err(WireError::Malformed));
    }
}
