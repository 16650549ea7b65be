//! 16x2 HD44780 character LCD behind a PCF8574 I2C backpack, 4-bit mode. Backpack bits:
//! P0 = RS, P1 = RW (kept low), P2 = E, P3 = backlight, P4-P7 = D4-D7. Each nibble is written
//! with E high then E low. `show` rewrites both lines in place (no clear, no flicker).

use super::{lcd_text, Display, HwError, I2cBus};
use std::time::Duration;

const RS: u8 = 0x01;
const EN: u8 = 0x04;
const BACKLIGHT: u8 = 0x08;

pub struct Hd44780<B: I2cBus> {
    bus: B,
    addr: u8,
    sleep: fn(Duration),
    shown: Option<(String, String)>,
}

impl<B: I2cBus> Hd44780<B> {
    /// Initialise the display (4-bit, two lines, display on, cursor off, cleared).
    pub fn new(bus: B, addr: u8, sleep: fn(Duration)) -> Result<Self, HwError> {
        let mut d = Self {
            bus,
            addr,
            sleep,
            shown: None,
        };
        (d.sleep)(Duration::from_millis(50));
        // The documented reset-by-instruction: 0x3 three times, then 0x2 for 4-bit.
        for _ in 0..3 {
            d.nibble(0x30, 0)?;
            (d.sleep)(Duration::from_millis(5));
        }
        d.nibble(0x20, 0)?;
        d.command(0x28)?; // 4-bit, 2 lines, 5x8
        d.command(0x0C)?; // display on, cursor off
        d.command(0x01)?; // clear
        (d.sleep)(Duration::from_millis(2));
        d.command(0x06)?; // entry mode: increment
        Ok(d)
    }

    fn nibble(&mut self, hi: u8, mode: u8) -> Result<(), HwError> {
        let b = (hi & 0xF0) | mode | BACKLIGHT;
        self.bus.write(self.addr, &[b | EN])?;
        self.bus.write(self.addr, &[b])
    }

    fn send(&mut self, byte: u8, mode: u8) -> Result<(), HwError> {
        self.nibble(byte & 0xF0, mode)?;
        self.nibble(byte << 4, mode)
    }

    fn command(&mut self, c: u8) -> Result<(), HwError> {
        self.send(c, 0)
    }

    fn line(&mut self, row: u8, text: &str) -> Result<(), HwError> {
        self.command(0x80 | if row == 0 { 0x00 } else { 0x40 })?;
        let t = format!("{:<16}", lcd_text(text));
        for b in t.bytes() {
            self.send(b, RS)?;
        }
        Ok(())
    }
}

impl<B: I2cBus> Display for Hd44780<B> {
    fn show(&mut self, line1: &str, line2: &str) -> Result<(), HwError> {
        let want = (lcd_text(line1), lcd_text(line2));
        if self.shown.as_ref() == Some(&want) {
            return Ok(());
        }
        self.shown = None;
        self.line(0, &want.0)?;
        self.line(1, &want.1)?;
        self.shown = Some(want);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::MockI2c;

    fn bytes(bus: &MockI2c) -> Vec<u8> {
        bus.writes
            .lock()
            .unwrap()
            .iter()
            .map(|(a, b)| {
                assert_eq!(*a, 0x27);
                b[0]
            })
            .collect()
    }

    #[test]
    fn init_sequence_and_text_bytes() {
        let bus = MockI2c::default();
        let writes = bus.writes.clone();
        let mut d = Hd44780::new(bus, 0x27, |_| {}).unwrap();
        let init = bytes(&MockI2c {
            writes: writes.clone(),
            fail: false,
        });
        // 0x3 x3 then 0x2, each nibble E-high then E-low, backlight on.
        assert_eq!(
            &init[..8],
            &[0x3C, 0x38, 0x3C, 0x38, 0x3C, 0x38, 0x2C, 0x28]
        );
        writes.lock().unwrap().clear();
        d.show("Hi", "").unwrap();
        let b = bytes(&MockI2c {
            writes: writes.clone(),
            fail: false,
        });
        // Set DDRAM 0x80: high nibble 0x8, low 0x0, RS=0.
        assert_eq!(&b[..4], &[0x8C, 0x88, 0x0C, 0x08]);
        // 'H' = 0x48 with RS: 0x4D/0x49 then 0x8D/0x89.
        assert_eq!(&b[4..8], &[0x4D, 0x49, 0x8D, 0x89]);
        // Two full lines: 2 commands + 32 characters, 4 writes each.
        assert_eq!(b.len(), 34 * 4);
        // Showing the same text again writes nothing.
        writes.lock().unwrap().clear();
        d.show("Hi", "").unwrap();
        assert!(writes.lock().unwrap().is_empty());
    }

    #[test]
    fn bus_errors_surface() {
        let bus = MockI2c {
            fail: true,
            ..Default::default()
        };
        assert!(matches!(
            Hd44780::new(bus, 0x27, |_| {}),
            Err(HwError::I2c(_))
        ));
    }

    #[test]
    fn text_is_clipped_and_non_ascii_replaced() {
        assert_eq!(lcd_text("Grüß dich, this is long"), "Gr?? dich, this ");
    }
}
