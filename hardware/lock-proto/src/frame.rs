//! The two frames: layout, encoding, and decoding that checks the length, then the
//! HMAC (in constant time), then every field. Nothing of an unauthenticated frame but
//! its length is looked at.

use crate::Key;
use core::fmt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The first byte of every frame. Version 2 binds every command to the lock's boot
/// session and its latest report (version 1 had neither: a frame that was never
/// delivered stayed good).
pub const VERSION: u8 = 0x02;
/// A report's second byte (a command's second byte is its kind, 1 to 3).
pub const REPORT_TAG: u8 = 0x80;
pub const KEY_LEN: usize = 32;
pub const MAC_LEN: usize = 32;
/// A lock's boot session: random, drawn at every boot, never stored.
pub const SESSION_LEN: usize = 8;
/// `0x02 | kind | counter u64 | pulse_ms u32 | session [8] | report u64 | HMAC`
pub const COMMAND_LEN: usize = 1 + 1 + 8 + 4 + SESSION_LEN + 8 + MAC_LEN;
/// `0x02 | 0x80 | counter u64 | acked u64 | state | door | session [8] | HMAC`
pub const REPORT_LEN: usize = 1 + 1 + 8 + 8 + 1 + 1 + SESSION_LEN + MAC_LEN;

/// A lock's boot session.
pub type BootSession = [u8; SESSION_LEN];
/// The longest unlock pulse a lock accepts.
pub const MAX_PULSE_MS: u32 = 60_000;

/// What a command asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Open for `pulse_ms`, then lock by itself.
    Unlock = 1,
    /// Lock now.
    Lock = 2,
    /// Send a report now.
    Report = 3,
}

/// Where the bolt is, as the lock sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockState {
    Locked = 0,
    Unlocked = 1,
    /// Driven but not where it was told to go (bolt sensor), or the relay failed.
    Jammed = 2,
}

/// The door contact (reed switch), when the lock has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Closed = 0,
    Open = 1,
    /// No contact wired.
    None = 2,
}

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not the frame's length (truncated, padded, or the other direction's frame).
    Length { got: usize, want: usize },
    /// The HMAC does not match: forged, corrupted, or another lock's key.
    BadMac,
    /// Authentic but not a frame this version knows (version, kind or tag byte).
    Unknown(u8),
    /// Authentic but a field is out of range.
    Field(&'static str),
    /// Authentic, but its counter is not above the last accepted one.
    Replayed { counter: u64, last: u64 },
    /// An authentic command bound to another boot session of the lock, or to a report
    /// older than the lock's latest: made before something newer was said, never good.
    Stale { report: u64, latest: u64 },
    /// An authentic report from a new boot session whose counter is not above the last
    /// accepted: the lock lost or was reflashed with older counters (or an old report is
    /// replayed). The daemon says so and takes the lock as unavailable.
    WentBack { counter: u64, last: u64 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Length { got, want } => write!(f, "{got} bytes, a frame has {want}"),
            FrameError::BadMac => f.write_str("bad HMAC"),
            FrameError::Unknown(b) => write!(f, "unknown version, kind or tag {b:#04x}"),
            FrameError::Field(w) => write!(f, "bad {w}"),
            FrameError::Replayed { counter, last } => {
                write!(f, "counter {counter} not above the last accepted {last}")
            }
            FrameError::Stale { report, latest } => write!(
                f,
                "bound to report {report} (or another boot), the lock's latest is {latest}"
            ),
            FrameError::WentBack { counter, last } => write!(
                f,
                "a new boot of the lock whose counter {counter} is not above the last accepted {last}: its counters went back"
            ),
        }
    }
}

impl FrameError {
    /// A short name for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Length { .. } => "truncated",
            FrameError::BadMac => "forged",
            FrameError::Unknown(_) | FrameError::Field(_) => "invalid",
            FrameError::Replayed { .. } => "replayed",
            FrameError::Stale { .. } => "stale",
            FrameError::WentBack { .. } => "went_back",
        }
    }
}

/// A command frame's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command {
    pub kind: Kind,
    pub counter: u64,
    /// The pulse length for [`Kind::Unlock`] (1 ..= [`MAX_PULSE_MS`]); 0 otherwise.
    pub pulse_ms: u32,
    /// The lock's boot session, from the report below.
    pub session: BootSession,
    /// The counter of the latest report the daemon accepted from the lock. The lock
    /// takes an unlock or lock command only while this is its latest report of this
    /// boot: any newer report, a reconnection (it reports first) or a reboot kills it.
    pub report: u64,
}

/// A report frame's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    pub counter: u64,
    /// The counter of the last command the lock accepted (0: none yet).
    pub acked: u64,
    pub state: LockState,
    pub door: Door,
    /// The lock's boot session.
    pub session: BootSession,
}

type HmacSha256 = Hmac<Sha256>;

fn keyed(key: &Key, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body);
    m
}

fn seal<const N: usize>(key: &Key, mut frame: [u8; N]) -> [u8; N] {
    let body = N - MAC_LEN;
    let tag = keyed(key, &frame[..body]).finalize().into_bytes();
    frame[body..].copy_from_slice(&tag);
    frame
}

/// Check the length and the HMAC (constant time); the authentic body on success.
fn open<'a>(key: &Key, frame: &'a [u8], want: usize) -> Result<&'a [u8], FrameError> {
    if frame.len() != want {
        return Err(FrameError::Length {
            got: frame.len(),
            want,
        });
    }
    let (body, tag) = frame.split_at(want - MAC_LEN);
    keyed(key, body)
        .verify_slice(tag)
        .map_err(|_| FrameError::BadMac)?;
    if body[0] != VERSION {
        return Err(FrameError::Unknown(body[0]));
    }
    Ok(body)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Command {
    pub fn encode(&self, key: &Key) -> [u8; COMMAND_LEN] {
        let mut f = [0u8; COMMAND_LEN];
        f[0] = VERSION;
        f[1] = self.kind as u8;
        f[2..10].copy_from_slice(&self.counter.to_be_bytes());
        f[10..14].copy_from_slice(&self.pulse_ms.to_be_bytes());
        f[14..22].copy_from_slice(&self.session);
        f[22..30].copy_from_slice(&self.report.to_be_bytes());
        seal(key, f)
    }

    /// Decode an authentic command (no counter check: see [`crate::Receiver`]).
    pub fn decode(frame: &[u8], key: &Key) -> Result<Command, FrameError> {
        let b = open(key, frame, COMMAND_LEN)?;
        let kind = match b[1] {
            1 => Kind::Unlock,
            2 => Kind::Lock,
            3 => Kind::Report,
            k => return Err(FrameError::Unknown(k)),
        };
        let mut p = [0u8; 4];
        p.copy_from_slice(&b[10..14]);
        let pulse_ms = u32::from_be_bytes(p);
        let ok = match kind {
            Kind::Unlock => (1..=MAX_PULSE_MS).contains(&pulse_ms),
            _ => pulse_ms == 0,
        };
        if !ok {
            return Err(FrameError::Field("pulse_ms"));
        }
        let mut session = [0u8; SESSION_LEN];
        session.copy_from_slice(&b[14..22]);
        Ok(Command {
            kind,
            counter: u64_at(b, 2),
            pulse_ms,
            session,
            report: u64_at(b, 22),
        })
    }
}

impl Report {
    pub fn encode(&self, key: &Key) -> [u8; REPORT_LEN] {
        let mut f = [0u8; REPORT_LEN];
        f[0] = VERSION;
        f[1] = REPORT_TAG;
        f[2..10].copy_from_slice(&self.counter.to_be_bytes());
        f[10..18].copy_from_slice(&self.acked.to_be_bytes());
        f[18] = self.state as u8;
        f[19] = self.door as u8;
        f[20..28].copy_from_slice(&self.session);
        seal(key, f)
    }

    /// Decode an authentic report (no counter check: see [`crate::Receiver`]).
    pub fn decode(frame: &[u8], key: &Key) -> Result<Report, FrameError> {
        let b = open(key, frame, REPORT_LEN)?;
        if b[1] != REPORT_TAG {
            return Err(FrameError::Unknown(b[1]));
        }
        let state = match b[18] {
            0 => LockState::Locked,
            1 => LockState::Unlocked,
            2 => LockState::Jammed,
            _ => return Err(FrameError::Field("state")),
        };
        let door = match b[19] {
            0 => Door::Closed,
            1 => Door::Open,
            2 => Door::None,
            _ => return Err(FrameError::Field("door")),
        };
        let mut session = [0u8; SESSION_LEN];
        session.copy_from_slice(&b[20..28]);
        Ok(Report {
            counter: u64_at(b, 2),
            acked: u64_at(b, 10),
            state,
            door,
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: Key = [7u8; 32];

    fn unlock() -> Command {
        Command {
            kind: Kind::Unlock,
            counter: 0x0102_0304_0506_0708,
            pulse_ms: 3000,
            session: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7],
            report: 9,
        }
    }

    fn report() -> Report {
        Report {
            counter: 9,
            acked: 0x0102_0304_0506_0708,
            state: LockState::Unlocked,
            door: Door::Closed,
            session: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7],
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let f = unlock().encode(&KEY);
        assert_eq!(f.len(), 62);
        assert_eq!(
            &f[..30],
            &[
                2, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x0b, 0xb8, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5,
                0xa6, 0xa7, 0, 0, 0, 0, 0, 0, 0, 9
            ][..]
        );
        let r = report().encode(&KEY);
        assert_eq!(r.len(), 60);
        assert_eq!(&r[..2], &[2, 0x80]);
        assert_eq!(&r[2..10], &9u64.to_be_bytes());
        assert_eq!(&r[18..20], &[1, 0]);
        assert_eq!(
            &r[20..28],
            &[0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7]
        );
        // HMAC-SHA256 over the body, checked against an independent computation (RFC
        // 4231 test case 2 exercises the same primitive below).
        let mut m = <HmacSha256 as Mac>::new_from_slice(&KEY).unwrap();
        m.update(&f[..30]);
        assert_eq!(&f[30..], &m.finalize().into_bytes()[..]);
    }

    #[test]
    fn hmac_sha256_matches_rfc4231_case_2() {
        let mut m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let want = [
            0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24, 0x26, 0x08, 0x95,
            0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27, 0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9,
            0x64, 0xec, 0x38, 0x43,
        ];
        assert_eq!(&m.finalize().into_bytes()[..], &want[..]);
    }

    #[test]
    fn round_trip_both_frames() {
        assert_eq!(Command::decode(&unlock().encode(&KEY), &KEY), Ok(unlock()));
        assert_eq!(Report::decode(&report().encode(&KEY), &KEY), Ok(report()));
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let f = unlock().encode(&KEY);
        for i in 0..f.len() * 8 {
            let mut g = f;
            g[i / 8] ^= 1 << (i % 8);
            assert_eq!(
                Command::decode(&g, &KEY),
                Err(FrameError::BadMac),
                "bit {i}"
            );
        }
        let r = report().encode(&KEY);
        for i in 0..r.len() * 8 {
            let mut g = r;
            g[i / 8] ^= 1 << (i % 8);
            assert_eq!(Report::decode(&g, &KEY), Err(FrameError::BadMac), "bit {i}");
        }
    }

    #[test]
    fn truncated_padded_wrong_key_and_wrong_direction_are_refused() {
        let f = unlock().encode(&KEY);
        for n in 0..f.len() {
            assert!(matches!(
                Command::decode(&f[..n], &KEY),
                Err(FrameError::Length { .. })
            ));
        }
        let mut long = [0u8; COMMAND_LEN + 1];
        long[..COMMAND_LEN].copy_from_slice(&f);
        assert!(matches!(
            Command::decode(&long, &KEY),
            Err(FrameError::Length { .. })
        ));
        assert_eq!(Command::decode(&f, &[8u8; 32]), Err(FrameError::BadMac));
        // A report reflected back to the lock as a command, and the other way round.
        let r = report().encode(&KEY);
        assert!(Command::decode(&r, &KEY).is_err());
        assert!(Report::decode(&f, &KEY).is_err());
    }

    #[test]
    fn authentic_frames_with_bad_fields_are_refused() {
        let bad = |kind: Kind, pulse_ms: u32| {
            let c = Command {
                kind,
                counter: 1,
                pulse_ms,
                session: [0; SESSION_LEN],
                report: 0,
            };
            Command::decode(&c.encode(&KEY), &KEY)
        };
        assert_eq!(bad(Kind::Unlock, 0), Err(FrameError::Field("pulse_ms")));
        assert_eq!(
            bad(Kind::Unlock, MAX_PULSE_MS + 1),
            Err(FrameError::Field("pulse_ms"))
        );
        assert_eq!(bad(Kind::Lock, 5), Err(FrameError::Field("pulse_ms")));
        assert!(bad(Kind::Unlock, MAX_PULSE_MS).is_ok());
        let mut body = [0u8; COMMAND_LEN];
        body[0] = VERSION;
        body[1] = 9;
        assert_eq!(
            Command::decode(&seal(&KEY, body), &KEY),
            Err(FrameError::Unknown(9))
        );
        // Version 1 frames (no session binding) are refused.
        body[0] = 1;
        body[1] = 1;
        assert_eq!(
            Command::decode(&seal(&KEY, body), &KEY),
            Err(FrameError::Unknown(1))
        );
        let mut r = [0u8; REPORT_LEN];
        r[0] = VERSION;
        r[1] = REPORT_TAG;
        r[18] = 3;
        assert_eq!(
            Report::decode(&seal(&KEY, r), &KEY),
            Err(FrameError::Field("state"))
        );
    }
}
