//! Counters: each end sends under its own strictly increasing counter and accepts a frame
//! only when its counter is above the last one it accepted. Both survive power cuts:
//! the sender persists a reservation ([`RESERVE`] counters ahead) before using a counter
//! beyond it, so after a restart it resumes above anything it may have sent; the receiver
//! persists what it accepted before acting on it. Persisting is the caller's: these
//! types say what to write and refuse to go on until told it was written.

use crate::frame::{BootSession, Command, FrameError, Kind, Report, COMMAND_LEN, SESSION_LEN};
use crate::Key;

/// Counters reserved per persisted write (flash is not written for every frame).
pub const RESERVE: u64 = 64;

/// What one end persists. Store each field as the maximum of the stored and the new
/// value (or write the whole record from a single owner, in order): neither may go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Every counter up to this one may have been sent.
    pub reserved: u64,
    /// The last counter accepted from the other end (0: none).
    pub seen: u64,
}

impl Counters {
    pub const LEN: usize = 16;

    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.reserved.to_be_bytes());
        b[8..].copy_from_slice(&self.seen.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; 16]) -> Counters {
        let mut r = [0u8; 8];
        let mut s = [0u8; 8];
        r.copy_from_slice(&b[..8]);
        s.copy_from_slice(&b[8..]);
        Counters {
            reserved: u64::from_be_bytes(r),
            seen: u64::from_be_bytes(s),
        }
    }

    /// Field by field maximum.
    pub fn max(self, o: Counters) -> Counters {
        Counters {
            reserved: self.reserved.max(o.reserved),
            seen: self.seen.max(o.seen),
        }
    }
}

/// The sending half: counters from a persisted reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    next: u64,
    reserved: u64,
}

impl Sender {
    /// Resume from the persisted reservation: every counter up to it may have been used.
    pub fn resume(reserved: u64) -> Sender {
        Sender {
            next: reserved.saturating_add(1),
            reserved,
        }
    }

    /// The counter for the next frame; `Err(r)` when the reservation is used up: persist
    /// `r`, call [`Sender::reserved_to`], and ask again.
    pub fn next_counter(&mut self) -> Result<u64, u64> {
        if self.next > self.reserved {
            return Err(self.next.saturating_add(RESERVE - 1));
        }
        let c = self.next;
        self.next = self.next.saturating_add(1);
        Ok(c)
    }

    /// `r` is persisted.
    pub fn reserved_to(&mut self, r: u64) {
        self.reserved = self.reserved.max(r);
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }
}

/// The receiving half: the last accepted counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    seen: u64,
}

impl Receiver {
    pub fn new(seen: u64) -> Receiver {
        Receiver { seen }
    }

    pub fn check(&self, counter: u64) -> Result<(), FrameError> {
        if counter > self.seen {
            Ok(())
        } else {
            Err(FrameError::Replayed {
                counter,
                last: self.seen,
            })
        }
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    fn accept(&mut self, counter: u64) {
        self.seen = self.seen.max(counter);
    }
}

/// An authentic, fresh frame not yet acted on. Persist [`Accepted::counters`], then hand
/// it back to its end's `commit`/`apply` (which marks the counter used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted<T> {
    pub frame: T,
    pub counter: u64,
    /// What to persist before acting.
    pub counters: Counters,
}

/// One end's key and counters (shared by [`DaemonEnd`] and [`crate::Lock`]).
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub key: Key,
    pub tx: Sender,
    pub rx: Receiver,
}

impl Link {
    pub fn new(key: Key, saved: Counters) -> Link {
        Link {
            key,
            tx: Sender::resume(saved.reserved),
            rx: Receiver::new(saved.seen),
        }
    }

    pub fn counters(&self) -> Counters {
        Counters {
            reserved: self.tx.reserved(),
            seen: self.rx.seen(),
        }
    }

    /// The next counter, or the counters to persist first.
    pub fn next_counter(&mut self) -> Result<u64, Counters> {
        self.tx.next_counter().map_err(|r| Counters {
            reserved: r,
            seen: self.rx.seen(),
        })
    }

    pub fn accepted<T>(&self, frame: T, counter: u64) -> Result<Accepted<T>, FrameError> {
        self.rx.check(counter)?;
        Ok(Accepted {
            frame,
            counter,
            counters: Counters {
                reserved: self.tx.reserved(),
                seen: counter,
            },
        })
    }

    pub fn commit(&mut self, counter: u64) {
        self.rx.accept(counter);
    }
}

/// Refused and accepted frames, by kind (both ends count).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    pub accepted: u32,
    pub forged: u32,
    pub replayed: u32,
    pub truncated: u32,
    pub invalid: u32,
    /// Commands bound to an older report or another boot.
    pub stale: u32,
    /// Reports of a lock whose counters went back.
    pub went_back: u32,
}

impl Stats {
    pub(crate) fn count<T>(&mut self, r: &Result<T, FrameError>) {
        let n = match r {
            Ok(_) => &mut self.accepted,
            Err(FrameError::BadMac) => &mut self.forged,
            Err(FrameError::Replayed { .. }) => &mut self.replayed,
            Err(FrameError::Length { .. }) => &mut self.truncated,
            Err(FrameError::Unknown(_) | FrameError::Field(_)) => &mut self.invalid,
            Err(FrameError::Stale { .. }) => &mut self.stale,
            Err(FrameError::WentBack { .. }) => &mut self.went_back,
        };
        *n = n.saturating_add(1);
    }

    pub fn refused(&self) -> u32 {
        self.forged + self.replayed + self.truncated + self.invalid + self.stale + self.went_back
    }
}

/// Why [`DaemonEnd::command`] made no frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Persist these counters, call [`DaemonEnd::reserved`], and ask again.
    Persist(Counters),
    /// No authentic report from the lock yet (since this end started): an unlock or lock
    /// command has nothing to be bound to. Ask for a report ([`Kind::Report`]).
    NoReport,
}

/// The daemon's end: sends commands, accepts reports.
#[derive(Debug, Clone)]
pub struct DaemonEnd {
    link: Link,
    /// The lock's boot session and latest report counter, from the last accepted report.
    bound: Option<(BootSession, u64)>,
    /// An authentic report that was not fresh: its session and counter (a second one of
    /// the same session, counting up, is a live lock whose counters went back).
    behind: Option<(BootSession, u64)>,
    pub stats: Stats,
}

impl DaemonEnd {
    pub fn new(key: Key, saved: Counters) -> DaemonEnd {
        DaemonEnd {
            link: Link::new(key, saved),
            bound: None,
            behind: None,
            stats: Stats::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.link.counters()
    }

    /// The lock's session and latest report the next command is bound to.
    pub fn bound(&self) -> Option<(BootSession, u64)> {
        self.bound
    }

    /// A command frame and its counter, bound to the latest report accepted.
    pub fn command(
        &mut self,
        kind: Kind,
        pulse_ms: u32,
    ) -> Result<(u64, [u8; COMMAND_LEN]), CommandError> {
        let (session, report) = match (kind, self.bound) {
            (_, Some(b)) => b,
            (Kind::Report, None) => ([0; SESSION_LEN], 0),
            (_, None) => return Err(CommandError::NoReport),
        };
        let counter = self.link.next_counter().map_err(CommandError::Persist)?;
        let c = Command {
            kind,
            counter,
            pulse_ms: if kind == Kind::Unlock { pulse_ms } else { 0 },
            session,
            report,
        };
        Ok((counter, c.encode(&self.link.key)))
    }

    /// `c` (from [`CommandError::Persist`]) is persisted.
    pub fn reserved(&mut self, c: Counters) {
        self.link.tx.reserved_to(c.reserved);
    }

    /// Check a report: authentic, well formed and fresh (counted either way). An
    /// authentic report that is not fresh is [`FrameError::WentBack`] when it comes from
    /// a boot session other than the current one, or is the second of one session
    /// counting up: the lock's counters went back (lost flash, reflashed).
    pub fn check_report(&mut self, frame: &[u8]) -> Result<Accepted<Report>, FrameError> {
        let r = Report::decode(frame, &self.link.key).and_then(|r| {
            self.link.accepted(r, r.counter).map_err(|e| match e {
                FrameError::Replayed { counter, last } => {
                    let other_boot = self.bound.is_some_and(|(s, _)| s != r.session);
                    let counting_up = self
                        .behind
                        .is_some_and(|(s, c)| s == r.session && r.counter > c);
                    self.behind = Some((r.session, r.counter));
                    if other_boot || counting_up {
                        FrameError::WentBack { counter, last }
                    } else {
                        e
                    }
                }
                e => e,
            })
        });
        self.stats.count(&r);
        r
    }

    /// Take a checked report whose counters are persisted; the next commands are bound
    /// to it.
    pub fn commit(&mut self, a: Accepted<Report>) -> Report {
        self.link.commit(a.counter);
        self.bound = Some((a.frame.session, a.counter));
        self.behind = None;
        a.frame
    }
}
