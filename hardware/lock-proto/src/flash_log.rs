//! The lock's counters in flash: an append-only log of 32-byte records over two erase
//! sectors. A record is written only to erased bytes; when a sector is full the other is
//! erased and the log goes on there. Each record carries a sequence number and a CRC, so a
//! write torn by a power cut is skipped on boot and the previous record stands; as
//! counters only rise, the newest valid record is the state. Flash wear: one record per
//! [`crate::RESERVE`] reports or per accepted command; 128 records per 4 KiB sector.

use crate::Counters;

/// Erase-sector size of the ESP32-C3's flash.
pub const SECTOR: u32 = 4096;
pub const RECORD: u32 = 32;
const MAGIC: u32 = 0x4C4B_4331; // "LKC1"

/// Two erase sectors of flash at a fixed place. Erased bytes read `0xFF`; a write may
/// only clear bits.
pub trait Flash {
    type Error;
    fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), Self::Error>;
    fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), Self::Error>;
    /// Erase the sector starting at `offset` (a multiple of [`SECTOR`]).
    fn erase(&mut self, offset: u32) -> Result<(), Self::Error>;
}

/// CRC-32 (IEEE), bitwise: small and fast enough for 28 bytes.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= *b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn encode(seq: u32, c: Counters) -> [u8; RECORD as usize] {
    let mut r = [0u8; RECORD as usize];
    r[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    r[4..8].copy_from_slice(&seq.to_le_bytes());
    r[8..24].copy_from_slice(&c.to_bytes());
    let crc = crc32(&r[..24]);
    r[24..28].copy_from_slice(&crc.to_le_bytes());
    r
}

fn decode(r: &[u8; RECORD as usize]) -> Option<(u32, Counters)> {
    let word = |i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
    if word(0) != MAGIC || word(24) != crc32(&r[..24]) {
        return None;
    }
    let mut c = [0u8; 16];
    c.copy_from_slice(&r[8..24]);
    Some((word(4), Counters::from_bytes(&c)))
}

const SLOTS: u32 = SECTOR / RECORD;

/// The log over the two sectors at `base` and `base + SECTOR`.
pub struct CounterLog<F: Flash> {
    flash: F,
    base: u32,
    /// The sector (0 or 1) holding the newest record, and the slot after it.
    active: u32,
    next: u32,
    seq: u32,
    current: Counters,
}

impl<F: Flash> CounterLog<F> {
    fn at(&self, sector: u32, slot: u32) -> u32 {
        self.base + sector * SECTOR + slot * RECORD
    }

    fn slot(&mut self, sector: u32, slot: u32) -> Result<[u8; RECORD as usize], F::Error> {
        let mut r = [0u8; RECORD as usize];
        let at = self.at(sector, slot);
        self.flash.read(at, &mut r)?;
        Ok(r)
    }

    /// Scan both sectors: the newest valid record is the state (zeros on a blank chip).
    pub fn open(flash: F, base: u32) -> Result<Self, F::Error> {
        let mut log = CounterLog {
            flash,
            base,
            active: 0,
            next: 0,
            seq: 0,
            current: Counters::default(),
        };
        let mut newest: Option<(u32, u32, u32)> = None; // (seq, sector, slot)
        for sector in 0..2 {
            for slot in 0..SLOTS {
                if let Some((seq, c)) = decode(&log.slot(sector, slot)?) {
                    if newest.is_none_or(|(s, _, _)| seq > s) {
                        newest = Some((seq, sector, slot));
                        log.current = log.current.max(c);
                    }
                }
            }
        }
        if let Some((seq, sector, slot)) = newest {
            log.seq = seq;
            log.active = sector;
            log.next = slot + 1;
        }
        Ok(log)
    }

    /// What is persisted.
    pub fn counters(&self) -> Counters {
        self.current
    }

    /// Persist `c` (each field at least what is there). Durable when it returns Ok.
    pub fn save(&mut self, c: Counters) -> Result<(), F::Error> {
        let c = c.max(self.current);
        let free = self.next < SLOTS
            && self
                .slot(self.active, self.next)?
                .iter()
                .all(|b| *b == 0xFF);
        if !free {
            // Full, or a torn write in the way: go on in the other sector. The newest
            // record stays where it is until the new one is written.
            let other = 1 - self.active;
            let at = self.at(other, 0);
            self.flash.erase(at)?;
            self.active = other;
            self.next = 0;
        }
        let seq = self.seq.wrapping_add(1);
        let at = self.at(self.active, self.next);
        self.flash.write(at, &encode(seq, c))?;
        self.seq = seq;
        self.next += 1;
        self.current = c;
        Ok(())
    }

    /// The flash back (tests).
    pub fn into_flash(self) -> F {
        self.flash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Two sectors of NOR flash: writes clear bits; `cut` tears the next write after
    /// that many bytes (a power cut) and fails it.
    struct Nor {
        mem: Vec<u8>,
        cut: Option<usize>,
        erases: usize,
    }

    impl Nor {
        fn new() -> Nor {
            Nor {
                mem: vec![0xFF; 2 * SECTOR as usize],
                cut: None,
                erases: 0,
            }
        }
    }

    impl Flash for Nor {
        type Error = ();
        fn read(&mut self, offset: u32, buf: &mut [u8]) -> Result<(), ()> {
            let o = offset as usize;
            buf.copy_from_slice(&self.mem[o..o + buf.len()]);
            Ok(())
        }
        fn write(&mut self, offset: u32, data: &[u8]) -> Result<(), ()> {
            let o = offset as usize;
            let n = self.cut.take().unwrap_or(data.len()).min(data.len());
            for (i, b) in data[..n].iter().enumerate() {
                self.mem[o + i] &= b;
            }
            if n < data.len() {
                return Err(());
            }
            Ok(())
        }
        fn erase(&mut self, offset: u32) -> Result<(), ()> {
            let o = offset as usize;
            self.mem[o..o + SECTOR as usize].fill(0xFF);
            self.erases += 1;
            Ok(())
        }
    }

    fn c(reserved: u64, seen: u64) -> Counters {
        Counters { reserved, seen }
    }

    #[test]
    fn a_blank_chip_reads_zeros_and_values_survive_a_reopen() {
        let log = CounterLog::open(Nor::new(), 0).unwrap();
        assert_eq!(log.counters(), Counters::default());
        let mut log = log;
        log.save(c(64, 1)).unwrap();
        log.save(c(64, 2)).unwrap();
        let log = CounterLog::open(log.into_flash(), 0).unwrap();
        assert_eq!(log.counters(), c(64, 2));
    }

    #[test]
    fn the_log_wraps_between_sectors_and_never_goes_back() {
        let mut log = CounterLog::open(Nor::new(), 0).unwrap();
        for i in 1..=1000u64 {
            log.save(c(i / 10 * 64, i)).unwrap();
            if i % 97 == 0 {
                log = CounterLog::open(log.into_flash(), 0).unwrap();
                assert_eq!(log.counters().seen, i);
            }
        }
        let flash = log.into_flash();
        // 1000 records of 128 per sector: about 8 erases.
        assert!((7..=9).contains(&flash.erases), "{}", flash.erases);
        let log = CounterLog::open(flash, 0).unwrap();
        assert_eq!(log.counters(), c(6400, 1000));
    }

    #[test]
    fn a_write_torn_by_a_power_cut_leaves_the_previous_record() {
        // Cut every possible byte of writes at every place in the sector cycle.
        for cut in 0..RECORD as usize {
            let mut log = CounterLog::open(Nor::new(), 0).unwrap();
            for i in 1..=300u64 {
                let before = log.counters();
                if i % 37 == 0 {
                    let mut flash = log.into_flash();
                    flash.cut = Some(cut);
                    log = CounterLog::open(flash, 0).unwrap();
                    assert!(log.save(c(i, i)).is_err());
                    // Power back: a record cut before its CRC's end is skipped and the
                    // previous one stands; one cut only in its padding is whole.
                    log = CounterLog::open(log.into_flash(), 0).unwrap();
                    let want = if cut < 28 { before } else { c(i, i) };
                    assert_eq!(log.counters(), want, "cut {cut} at {i}");
                }
                log.save(c(i, i)).unwrap();
                assert_eq!(log.counters(), c(i, i));
            }
            let log = CounterLog::open(log.into_flash(), 0).unwrap();
            assert_eq!(log.counters(), c(300, 300));
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
