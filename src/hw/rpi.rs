//! Raspberry Pi hardware through rppal: adapters from rppal's pins and I2C bus to this
//! module's pin traits, and [`build`] that claims every pin named in `[hardware]`.
//!
//! Compiled and unit-tested on x86_64 only through the drivers' mock tests: off a Pi,
//! `Gpio::new()` fails with rppal's "unknown model" error, which [`build`] reports. It has
//! not run on a Pi in this project yet (README "What ran only in simulation").

use super::config::HardwareConfig;
use super::door::ReedSwitch;
use super::indicator::LedBuzzer;
use super::keypad::MatrixKeypad;
use super::lcd::Hd44780;
use super::lock::RelayLock;
use super::{Devices, HwError, I2cBus, InputDevices, InputPin, OutputPin};
use rppal::gpio::Gpio;
use rppal::i2c::I2c;

impl OutputPin for rppal::gpio::OutputPin {
    fn set(&mut self, high: bool) -> Result<(), HwError> {
        if high {
            self.set_high();
        } else {
            self.set_low();
        }
        Ok(())
    }
}

impl InputPin for rppal::gpio::InputPin {
    fn is_high(&mut self) -> Result<bool, HwError> {
        Ok(rppal::gpio::InputPin::is_high(self))
    }
}

/// rppal's I2c bound to one bus; the slave address is set per write.
pub struct RpiI2c(I2c);

impl I2cBus for RpiI2c {
    fn write(&mut self, addr: u8, bytes: &[u8]) -> Result<(), HwError> {
        self.0
            .set_slave_address(addr as u16)
            .map_err(|e| HwError::I2c(format!("address 0x{addr:02x}: {e}")))?;
        let n = self
            .0
            .write(bytes)
            .map_err(|e| HwError::I2c(format!("write to 0x{addr:02x}: {e}")))?;
        if n != bytes.len() {
            return Err(HwError::I2c(format!("short write to 0x{addr:02x}")));
        }
        Ok(())
    }
}

fn gpio_err(e: rppal::gpio::Error) -> HwError {
    HwError::Gpio(e.to_string())
}

/// Claim every pin from the config. The relay is driven to its locked level first.
pub fn build(cfg: &HardwareConfig) -> Result<(Devices, InputDevices), HwError> {
    let gpio = Gpio::new().map_err(|e| HwError::Unavailable(format!("GPIO not available: {e}")))?;
    let out = |pin: u8, high: bool| -> Result<rppal::gpio::OutputPin, HwError> {
        let p = gpio.get(pin).map_err(gpio_err)?;
        Ok(if high {
            p.into_output_high()
        } else {
            p.into_output_low()
        })
    };
    let input = |pin: u8| -> Result<rppal::gpio::InputPin, HwError> {
        Ok(gpio.get(pin).map_err(gpio_err)?.into_input_pullup())
    };
    // Relay first, at the locked level (see lock.rs for the polarity rule).
    let locked_level = if cfg.fail_secure {
        !cfg.relay_active_high
    } else {
        cfg.relay_active_high
    };
    let relay = out(cfg.relay_pin, locked_level)?;
    let lock = RelayLock::new(relay, cfg.relay_active_high, cfg.fail_secure)?;
    let rows = cfg
        .keypad_rows
        .iter()
        .map(|&p| out(p, true))
        .collect::<Result<Vec<_>, _>>()?;
    let cols = cfg
        .keypad_cols
        .iter()
        .map(|&p| input(p))
        .collect::<Result<Vec<_>, _>>()?;
    let keypad = MatrixKeypad::new(rows, cols, cfg.keypad_debounce_scans)?;
    let door = ReedSwitch::new(input(cfg.door_pin)?, cfg.door_open_high);
    let indicator = LedBuzzer::new(
        out(cfg.led_green_pin, false)?,
        out(cfg.led_red_pin, false)?,
        out(cfg.buzzer_pin, false)?,
    )?;
    let bus = I2c::with_bus(cfg.lcd_i2c_bus)
        .map_err(|e| HwError::I2c(format!("bus {}: {e}", cfg.lcd_i2c_bus)))?;
    let display = Hd44780::new(RpiI2c(bus), cfg.lcd_address, std::thread::sleep)?;
    Ok((
        Devices {
            lock: Box::new(lock),
            display: Box::new(display),
            indicator: Box::new(indicator),
        },
        InputDevices {
            keypad: Box::new(keypad),
            door: Box::new(door),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_pi_build_fails_with_a_clear_error() {
        if std::path::Path::new("/dev/gpiomem").exists()
            || std::path::Path::new("/dev/gpiomem0").exists()
        {
            return; // on a Pi this test says nothing
        }
        let err = build(&HardwareConfig::default())
            .err()
            .expect("no GPIO here");
        assert!(matches!(err, HwError::Unavailable(_)), "{err}");
    }
}
