//! Both ends together, with "flash" as a variable that survives simulated power cuts.

use crate::*;
use std::vec::Vec;

const KEY: Key = [0x5a; 32];

/// An end's flash: what was persisted, field by field maximum.
#[derive(Default)]
struct Flash(Counters);

impl Flash {
    fn save(&mut self, c: Counters) {
        self.0 = self.0.max(c);
    }
}

fn send(
    d: &mut DaemonEnd,
    flash: &mut Flash,
    kind: Kind,
    pulse_ms: u32,
) -> (u64, [u8; COMMAND_LEN]) {
    match d.command(kind, pulse_ms) {
        Ok(x) => x,
        Err(CommandError::Persist(c)) => {
            flash.save(c);
            d.reserved(c);
            d.command(kind, pulse_ms).unwrap()
        }
        Err(CommandError::NoReport) => panic!("no report to bind the command to"),
    }
}

/// A lock booted with a session of its own (`n` stands for the TRNG's bytes).
fn boot(flash: &Flash, door: Door, n: u8) -> Lock {
    Lock::boot(KEY, flash.0, door, [n; SESSION_LEN])
}

/// The lock reports and the daemon takes it: the next commands are bound to it.
fn sync(d: &mut DaemonEnd, df: &mut Flash, l: &mut Lock, lf: &mut Flash) -> Report {
    let f = report(l, lf);
    receive(d, df, &f).unwrap()
}

/// The tests' clock: reports are made at 0 unless a test says otherwise.
fn report(l: &mut Lock, flash: &mut Flash) -> [u8; REPORT_LEN] {
    report_at(l, flash, 0)
}

fn report_at(l: &mut Lock, flash: &mut Flash, now: u64) -> [u8; REPORT_LEN] {
    match l.report(now) {
        Ok(f) => f,
        Err(c) => {
            flash.save(c);
            l.reserved(c);
            l.report(now).unwrap()
        }
    }
}

fn deliver(l: &mut Lock, flash: &mut Flash, now: u64, f: &[u8]) -> Result<(), FrameError> {
    let a = l.check(f, now.min(FRESH_MS))?;
    flash.save(a.counters);
    l.apply(now, a);
    Ok(())
}

fn receive(d: &mut DaemonEnd, flash: &mut Flash, f: &[u8]) -> Result<Report, FrameError> {
    let a = d.check_report(f)?;
    flash.save(a.counters);
    Ok(d.commit(a))
}

#[test]
fn unlock_is_acknowledged_and_the_pulse_ends_by_itself() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::Closed, 1);
    assert_eq!(l.state(), LockState::Locked);
    assert_eq!(
        d.command(Kind::Unlock, 3000).unwrap_err(),
        CommandError::NoReport,
        "nothing to bind an unlock to before the lock has reported"
    );
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (c, f) = send(&mut d, &mut df, Kind::Unlock, 3000);
    deliver(&mut l, &mut lf, 1000, &f).unwrap();
    assert!(l.relay_open());
    let r = receive(&mut d, &mut df, &report(&mut l, &mut lf)).unwrap();
    assert_eq!((r.acked, r.state), (c, LockState::Unlocked));
    assert!(!l.tick(3999));
    assert!(l.tick(4000));
    assert!(!l.relay_open());
    let r = receive(&mut d, &mut df, &report(&mut l, &mut lf)).unwrap();
    assert_eq!(r.state, LockState::Locked);
    // An early lock command ends a pulse.
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 3000);
    deliver(&mut l, &mut lf, 5000, &f).unwrap();
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Lock, 0);
    deliver(&mut l, &mut lf, 5100, &f).unwrap();
    assert!(!l.relay_open());
}

#[test]
fn replays_are_refused_by_both_ends_and_counted() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::None, 1);
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, old) = send(&mut d, &mut df, Kind::Unlock, 1000);
    deliver(&mut l, &mut lf, 0, &old).unwrap();
    l.tick(1000);
    assert!(matches!(
        deliver(&mut l, &mut lf, 2000, &old),
        Err(FrameError::Replayed { .. })
    ));
    assert!(!l.relay_open(), "a replayed unlock does nothing");
    let old_report = report(&mut l, &mut lf);
    receive(&mut d, &mut df, &old_report).unwrap();
    assert!(matches!(
        receive(&mut d, &mut df, &old_report),
        Err(FrameError::Replayed { .. })
    ));
    // Out of order is refused too: counters only go up.
    let (_, a) = send(&mut d, &mut df, Kind::Report, 0);
    let (_, b) = send(&mut d, &mut df, Kind::Report, 0);
    deliver(&mut l, &mut lf, 0, &b).unwrap();
    assert!(deliver(&mut l, &mut lf, 0, &a).is_err());
    assert_eq!(l.stats.replayed, 2);
    assert_eq!(d.stats.replayed, 1);
    // Forged and truncated frames are counted by kind.
    let mut forged = b;
    forged[3] ^= 1;
    assert_eq!(
        deliver(&mut l, &mut lf, 0, &forged),
        Err(FrameError::BadMac)
    );
    assert!(deliver(&mut l, &mut lf, 0, &b[..20]).is_err());
    assert_eq!((l.stats.forged, l.stats.truncated), (1, 1));
    assert_eq!(l.stats.refused(), 4);
}

#[test]
fn counters_survive_power_cuts_of_either_end_without_reuse() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::Closed, 0);
    let mut seen_cmd = Vec::new();
    let mut seen_rep = Vec::new();
    let mut captured = Vec::new();
    // 200 rounds with a power cut of the lock every 7th and of the daemon every 11th;
    // each reboots from flash alone.
    for i in 0..200u64 {
        let (c, f) = send(&mut d, &mut df, Kind::Report, 0);
        seen_cmd.push(c);
        captured.push(f);
        deliver(&mut l, &mut lf, i, &f).unwrap();
        let r = receive(&mut d, &mut df, &report(&mut l, &mut lf)).unwrap();
        seen_rep.push(r.counter);
        if i % 7 == 3 {
            l = boot(&lf, Door::Closed, (i % 251) as u8 + 1);
        }
        if i % 11 == 5 {
            d = DaemonEnd::new(KEY, df.0);
        }
    }
    assert!(seen_cmd.windows(2).all(|w| w[0] < w[1]));
    assert!(seen_rep.windows(2).all(|w| w[0] < w[1]));
    // Nothing sent before any of the power cuts is accepted after them.
    for f in &captured {
        assert!(l.check(f, 0).is_err());
    }
    // Flash was written about once per RESERVE frames, not per frame.
    assert!(df.0.reserved < 200 + 20 * RESERVE);
}

#[test]
fn a_counter_not_persisted_is_not_acted_on() {
    // The lock checks, loses power before persisting: nothing happened, and the frame is
    // still good once (it was never acted on).
    let mut df = Flash::default();
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut lf = Flash::default();
    let mut l = boot(&lf, Door::Closed, 1);
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Report, 0);
    let _ = l.check(&f, 0).unwrap();
    let mut l = boot(&lf, Door::Closed, 2);
    let a = l.check(&f, 0).unwrap();
    l.apply(0, a);
    assert_eq!(l.counters().seen, a.counter);
}

#[test]
fn fail_secure_on_boot_link_loss_and_jam() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::Closed, 1);
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 60_000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    assert!(l.relay_open());
    assert!(l.link_lost());
    assert!(!l.relay_open());
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 60_000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    // Power cut mid-pulse: boots locked.
    let l2 = boot(&lf, Door::Open, 2);
    assert!(!l2.relay_open());
    assert!(l.set_jammed(true));
    assert!(!l.relay_open());
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 1000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    assert!(!l.relay_open(), "a jammed lock ignores unlocks");
    let r = receive(&mut d, &mut df, &report(&mut l, &mut lf)).unwrap();
    assert_eq!(r.state, LockState::Jammed);
}

#[test]
fn another_locks_key_is_a_forgery() {
    let mut df = Flash::default();
    let mut d = DaemonEnd::new([1; 32], df.0);
    let mut l = Lock::boot(KEY, Counters::default(), Door::None, [1; SESSION_LEN]);
    let (_, f) = send(&mut d, &mut df, Kind::Report, 0);
    assert_eq!(l.check(&f, 0), Err(FrameError::BadMac));
}

/// Red team #25.1: an unlock that was never delivered (the lock offline), kept by a
/// subscriber and published once the lock is back, must not open it: the lock reported
/// when it came back (or rebooted), and the frame is bound to the report before that.
#[test]
fn a_command_not_delivered_before_the_next_report_or_boot_never_opens() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::Closed, 1);
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, kept) = send(&mut d, &mut df, Kind::Unlock, 3000);
    // Back on the broker: it reports first.
    let _ = report(&mut l, &mut lf);
    assert!(matches!(
        deliver(&mut l, &mut lf, 0, &kept),
        Err(FrameError::Stale { .. })
    ));
    assert!(!l.relay_open());
    // Or it rebooted (same counters, new session): dead as well, even before it reports.
    let (_, kept) = send(&mut d, &mut df, Kind::Unlock, 3000);
    let mut l = boot(&lf, Door::Closed, 2);
    assert!(matches!(l.check(&kept, 0), Err(FrameError::Stale { .. })));
    let _ = report(&mut l, &mut lf);
    assert!(matches!(l.check(&kept, 0), Err(FrameError::Stale { .. })));
    assert_eq!(l.stats.stale, 2);
    // The daemon, told of the new report, makes a frame that works...
    sync(&mut d, &mut df, &mut l, &mut lf);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 3000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    assert!(l.relay_open());
    // ...but only while its report is fresh: kept back longer than FRESH_MS (the daemon
    // gave up on it, nothing reported since), it is dead too.
    l.tick(u64::MAX);
    let f = report_at(&mut l, &mut lf, 10_000);
    receive(&mut d, &mut df, &f).unwrap();
    let (_, kept) = send(&mut d, &mut df, Kind::Unlock, 3000);
    assert!(matches!(
        l.check(&kept, 10_000 + FRESH_MS + 1),
        Err(FrameError::Stale { .. })
    ));
    assert!(l.check(&kept, 10_000 + FRESH_MS).is_ok());
}

/// Red team #25.2: a lock that lost its counters (reflashed, flash lost) boots with a
/// new session: no frame ever captured works on it, and the daemon says its counters
/// went back instead of calling its reports replays.
#[test]
fn a_lock_that_lost_its_counters_takes_no_old_frame_and_the_daemon_notices() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = boot(&lf, Door::Closed, 1);
    let mut captured = Vec::new();
    for _ in 0..5 {
        sync(&mut d, &mut df, &mut l, &mut lf);
        let (_, f) = send(&mut d, &mut df, Kind::Unlock, 1000);
        captured.push(f);
        deliver(&mut l, &mut lf, 0, &f).unwrap();
        l.tick(u64::MAX);
    }
    // Flash lost: zero counters, a new session.
    let mut lost = Flash::default();
    let mut l = boot(&lost, Door::Closed, 9);
    let _ = report(&mut l, &mut lost);
    for f in &captured {
        assert!(matches!(l.check(f, 0), Err(FrameError::Stale { .. })));
    }
    assert!(!l.relay_open());
    let r = report(&mut l, &mut lost);
    assert!(matches!(
        d.check_report(&r),
        Err(FrameError::WentBack { .. })
    ));
    assert_eq!(d.stats.went_back, 1);
}
