//! `[hardware]` of the configuration file: simulated devices or the Pi's GPIO, and where
//! everything is wired. The `config` module reads and validates the whole file and
//! re-exports these types.

use serde::{Deserialize, Serialize};
use std::fmt::Display;

/// `hardware.mode`: simulated devices, or the Raspberry Pi's GPIO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HardwareMode {
    #[default]
    Sim,
    Rpi,
}

impl Display for HardwareMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HardwareMode::Sim => "sim",
            HardwareMode::Rpi => "rpi",
        })
    }
}

/// Which hardware, and where it is wired (BCM GPIO numbers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HardwareConfig {
    pub mode: HardwareMode,
    pub keypad_rows: Vec<u8>,
    pub keypad_cols: Vec<u8>,
    pub keypad_scan_ms: u64,
    pub keypad_debounce_scans: u32,
    pub relay_pin: u8,
    pub relay_active_high: bool,
    pub fail_secure: bool,
    pub door_pin: u8,
    pub door_open_high: bool,
    pub led_green_pin: u8,
    pub led_red_pin: u8,
    pub buzzer_pin: u8,
    pub lcd_i2c_bus: u8,
    pub lcd_address: u8,
}

impl Default for HardwareConfig {
    fn default() -> Self {
        Self {
            mode: HardwareMode::Sim,
            keypad_rows: vec![5, 6, 13, 19],
            keypad_cols: vec![12, 16, 20, 21],
            keypad_scan_ms: 5,
            keypad_debounce_scans: 4,
            relay_pin: 17,
            relay_active_high: false,
            fail_secure: true,
            door_pin: 27,
            door_open_high: true,
            led_green_pin: 22,
            led_red_pin: 23,
            buzzer_pin: 24,
            lcd_i2c_bus: 1,
            lcd_address: 0x27,
        }
    }
}
