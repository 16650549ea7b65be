//! ESP32 lock frames (hardware/lock-proto): any bytes decode to an error or to a frame
//! that re-encodes to exactly those bytes; a valid frame with any mutation (a flipped
//! byte, cut, extended) is never accepted; the lock's and the daemon's state machines
//! never accept a frame twice.
//!
//! Shared by the fuzz target (`fuzz/fuzz_targets/lock_frame.rs`) and the corpus replay that CI
//! runs as an ordinary test (`tests/fuzz_corpus.rs`).
use lock_proto::{
    Command, CommandError, Counters, DaemonEnd, Door, Kind, Lock, Report, SESSION_LEN,
};

const KEY: [u8; 32] = [0x42; 32];

/// One input: a finding is a panic.
pub fn check(data: &[u8]) {
    // Arbitrary bytes: only an exact, authentic frame decodes.
    if let Ok(c) = Command::decode(data, &KEY) {
        assert_eq!(&c.encode(&KEY)[..], data);
    }
    if let Ok(r) = Report::decode(data, &KEY) {
        assert_eq!(&r.encode(&KEY)[..], data);
    }
    // A valid command, mutated by the input: accepted only if unchanged, and once.
    let Some((&op, rest)) = data.split_first() else {
        return;
    };
    // The lock reports, the daemon takes it, and binds an unlock to it.
    let mut lock = Lock::boot(KEY, Counters::default(), Door::None, [7; SESSION_LEN]);
    let report = match lock.report(0) {
        Ok(f) => f,
        Err(c) => {
            lock.reserved(c);
            lock.report(0).expect("reserved")
        }
    };
    let mut d = DaemonEnd::new(KEY, Counters::default());
    let taken = d.check_report(&report).expect("an authentic report");
    d.commit(taken);
    let (_, frame) = match d.command(Kind::Unlock, 1000) {
        Ok(x) => x,
        Err(CommandError::Persist(c)) => {
            d.reserved(c);
            d.command(Kind::Unlock, 1000).expect("reserved")
        }
        Err(CommandError::NoReport) => unreachable!("a report was taken"),
    };
    let mut m = frame.to_vec();
    match op % 3 {
        0 => {
            for (i, b) in rest.iter().enumerate().take(8) {
                let at = (*b as usize + i * 7) % m.len();
                m[at] ^= rest.get(i + 8).copied().unwrap_or(1) | 1;
            }
        }
        1 => m.truncate(rest.first().map_or(0, |n| *n as usize % m.len())),
        _ => m.extend_from_slice(rest),
    }
    match lock.check(&m, 0) {
        Ok(a) => {
            assert_eq!(m, frame.to_vec(), "a mutated frame was accepted");
            lock.apply(0, a);
            assert!(lock.check(&m, 0).is_err(), "accepted twice");
        }
        Err(_) => assert_ne!(m, frame.to_vec()),
    }
}
