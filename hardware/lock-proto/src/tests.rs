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

fn send(d: &mut DaemonEnd, flash: &mut Flash, kind: Kind, pulse_ms: u32) -> (u64, [u8; 46]) {
    match d.command(kind, pulse_ms) {
        Ok(x) => x,
        Err(c) => {
            flash.save(c);
            d.reserved(c);
            d.command(kind, pulse_ms).unwrap()
        }
    }
}

fn report(l: &mut Lock, flash: &mut Flash) -> [u8; REPORT_LEN] {
    match l.report() {
        Ok(f) => f,
        Err(c) => {
            flash.save(c);
            l.reserved(c);
            l.report().unwrap()
        }
    }
}

fn deliver(l: &mut Lock, flash: &mut Flash, now: u64, f: &[u8]) -> Result<(), FrameError> {
    let a = l.check(f)?;
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
    let mut l = Lock::boot(KEY, lf.0, Door::Closed);
    assert_eq!(l.state(), LockState::Locked);
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
    let (_, f) = send(&mut d, &mut df, Kind::Lock, 0);
    deliver(&mut l, &mut lf, 5100, &f).unwrap();
    assert!(!l.relay_open());
}

#[test]
fn replays_are_refused_by_both_ends_and_counted() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = Lock::boot(KEY, lf.0, Door::None);
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
    let mut l = Lock::boot(KEY, lf.0, Door::Closed);
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
            l = Lock::boot(KEY, lf.0, Door::Closed);
        }
        if i % 11 == 5 {
            d = DaemonEnd::new(KEY, df.0);
        }
    }
    assert!(seen_cmd.windows(2).all(|w| w[0] < w[1]));
    assert!(seen_rep.windows(2).all(|w| w[0] < w[1]));
    // Nothing sent before any of the power cuts is accepted after them.
    for f in &captured {
        assert!(l.check(f).is_err());
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
    let lf = Flash::default();
    let mut l = Lock::boot(KEY, lf.0, Door::Closed);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 500);
    let _ = l.check(&f).unwrap();
    assert!(!l.relay_open());
    let mut l = Lock::boot(KEY, lf.0, Door::Closed);
    let a = l.check(&f).unwrap();
    l.apply(0, a);
    assert!(l.relay_open());
}

#[test]
fn fail_secure_on_boot_link_loss_and_jam() {
    let (mut df, mut lf) = (Flash::default(), Flash::default());
    let mut d = DaemonEnd::new(KEY, df.0);
    let mut l = Lock::boot(KEY, lf.0, Door::Closed);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 60_000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    assert!(l.relay_open());
    assert!(l.link_lost());
    assert!(!l.relay_open());
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 60_000);
    deliver(&mut l, &mut lf, 0, &f).unwrap();
    // Power cut mid-pulse: boots locked.
    let l2 = Lock::boot(KEY, lf.0, Door::Open);
    assert!(!l2.relay_open());
    assert!(l.set_jammed(true));
    assert!(!l.relay_open());
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
    let mut l = Lock::boot(KEY, Counters::default(), Door::None);
    let (_, f) = send(&mut d, &mut df, Kind::Unlock, 100);
    assert_eq!(l.check(&f), Err(FrameError::BadMac));
}
