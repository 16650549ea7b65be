//! The lock's end, as the firmware and the host simulator run it: fail-secure on boot and
//! on link loss, an unlock pulse that ends by itself, reports with the last command it
//! accepted, and commands taken only when bound to this boot and the latest report.

use crate::frame::{BootSession, Command, Door, FrameError, Kind, LockState, Report, REPORT_LEN};
use crate::link::{Accepted, Counters, Link, Stats};
use crate::Key;

/// The lock's state machine. The caller owns the relay (drive it from
/// [`Lock::relay_open`] after every call), the door contact, flash and the link.
#[derive(Debug, Clone)]
pub struct Lock {
    link: Link,
    open_until: Option<u64>,
    jammed: bool,
    door: Door,
    /// Drawn at boot by the caller (a hardware RNG), never stored.
    session: BootSession,
    /// The counter of the latest report made in this boot, and when (ms).
    latest_report: Option<(u64, u64)>,
    pub stats: Stats,
}

/// A report frame ready to publish (see [`Lock::report`]).
pub type Outgoing = [u8; REPORT_LEN];

/// How long after a report the commands bound to it are taken (ms). A command that was
/// kept back longer (the lock was off the broker, the daemon gave up on it) is dead even
/// if the lock has not reported since; the daemon asks for a fresh report before an
/// unlock when its latest is older than half of this.
pub const FRESH_MS: u64 = 3_000;

impl Lock {
    /// Start locked, whatever the state before the reset or power cut. `session` must be
    /// fresh random bytes at every boot (the firmware's TRNG, the simulator's OS RNG):
    /// commands made for an earlier boot name another session and are refused.
    pub fn boot(key: Key, saved: Counters, door: Door, session: BootSession) -> Lock {
        Lock {
            link: Link::new(key, saved),
            open_until: None,
            jammed: false,
            door,
            session,
            latest_report: None,
            stats: Stats::default(),
        }
    }

    /// This boot's session.
    pub fn session(&self) -> BootSession {
        self.session
    }

    pub fn counters(&self) -> Counters {
        self.link.counters()
    }

    pub fn state(&self) -> LockState {
        if self.jammed {
            LockState::Jammed
        } else if self.open_until.is_some() {
            LockState::Unlocked
        } else {
            LockState::Locked
        }
    }

    /// When the current pulse ends (ms, the clock given to [`Lock::apply`]): a relay
    /// driver can close at this time by itself, whatever else the firmware is doing.
    pub fn open_until(&self) -> Option<u64> {
        self.open_until.filter(|_| !self.jammed)
    }

    /// Whether the relay should be in its unlocking position now.
    pub fn relay_open(&self) -> bool {
        self.open_until.is_some() && !self.jammed
    }

    /// Check a command at `now_ms`: authentic, well formed, bound to this boot and to
    /// the latest report, made at most [`FRESH_MS`] ago (a request for a report needs no
    /// binding: it changes nothing), and a counter above the last accepted (counted
    /// either way). Nothing changes until [`Lock::apply`].
    pub fn check(&mut self, frame: &[u8], now_ms: u64) -> Result<Accepted<Command>, FrameError> {
        let r = Command::decode(frame, &self.link.key)
            .and_then(|c| self.bound(&c, now_ms).map(|()| c))
            .and_then(|c| self.link.accepted(c, c.counter));
        self.stats.count(&r);
        r
    }

    fn bound(&self, c: &Command, now_ms: u64) -> Result<(), FrameError> {
        if c.kind == Kind::Report {
            return Ok(());
        }
        match self.latest_report {
            Some((latest, at))
                if c.session == self.session
                    && c.report == latest
                    && now_ms.saturating_sub(at) <= FRESH_MS =>
            {
                Ok(())
            }
            latest => Err(FrameError::Stale {
                report: c.report,
                latest: latest.map_or(0, |l| l.0),
            }),
        }
    }

    /// Act on a checked command whose counters are persisted. Send a report after it.
    pub fn apply(&mut self, now_ms: u64, a: Accepted<Command>) {
        self.link.commit(a.counter);
        match a.frame.kind {
            Kind::Unlock if !self.jammed => {
                self.open_until = Some(now_ms.saturating_add(a.frame.pulse_ms as u64));
            }
            Kind::Unlock | Kind::Report => {}
            Kind::Lock => self.open_until = None,
        }
    }

    /// End a pulse whose time is up. True when the state changed (send a report).
    pub fn tick(&mut self, now_ms: u64) -> bool {
        match self.open_until {
            Some(t) if now_ms >= t => {
                self.open_until = None;
                true
            }
            _ => false,
        }
    }

    /// The link to the broker is gone: lock now. True when that changed the state.
    pub fn link_lost(&mut self) -> bool {
        self.open_until.take().is_some()
    }

    /// The door contact moved. True when it changed.
    pub fn set_door(&mut self, door: Door) -> bool {
        let changed = self.door != door;
        self.door = door;
        changed
    }

    /// The bolt sensor disagrees with the relay (or agrees again). A jammed lock stays
    /// locked (the relay is released) and ignores unlocks until it clears.
    pub fn set_jammed(&mut self, jammed: bool) -> bool {
        let changed = self.jammed != jammed;
        self.jammed = jammed;
        if jammed {
            self.open_until = None;
        }
        changed
    }

    /// The next report frame, made at `now_ms`; `Err(c)`: persist `c`, call
    /// [`Lock::reserved`], ask again.
    pub fn report(&mut self, now_ms: u64) -> Result<Outgoing, Counters> {
        let counter = self.link.next_counter()?;
        // From now on only commands bound to this report are taken.
        self.latest_report = Some((counter, now_ms));
        Ok(Report {
            counter,
            acked: self.link.rx.seen(),
            state: self.state(),
            door: self.door,
            session: self.session,
        }
        .encode(&self.link.key))
    }

    /// `c` (from [`Lock::report`]'s error) is persisted.
    pub fn reserved(&mut self, c: Counters) {
        self.link.tx.reserved_to(c.reserved);
    }
}
