//! Door contact (reed switch) on one GPIO input with the pull-up enabled. With the switch
//! wired to ground and the magnet on the door, a closed door reads low and an open door
//! high (`open_high = true`). A level must be read twice in a row to count (debounce).

use super::{DoorSensor, HwError, InputPin};

pub struct ReedSwitch<I: InputPin> {
    pin: I,
    open_high: bool,
    last_raw: Option<bool>,
    state: bool,
}

impl<I: InputPin> ReedSwitch<I> {
    pub fn new(pin: I, open_high: bool) -> Self {
        Self {
            pin,
            open_high,
            last_raw: None,
            state: false,
        }
    }
}

impl<I: InputPin> DoorSensor for ReedSwitch<I> {
    fn is_open(&mut self) -> Result<bool, HwError> {
        let open = self.pin.is_high()? == self.open_high;
        if self.last_raw == Some(open) {
            self.state = open;
        }
        self.last_raw = Some(open);
        Ok(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::MockIn;

    #[test]
    fn needs_two_equal_reads_and_respects_polarity() {
        let mut d = ReedSwitch::new(
            MockIn::script(vec![false, true, false, true, true, true]),
            true,
        );
        let got: Vec<bool> = (0..6).map(|_| d.is_open().unwrap()).collect();
        assert_eq!(got, [false, false, false, false, true, true]);
        let mut inv = ReedSwitch::new(MockIn::script(vec![false, false]), false);
        inv.is_open().unwrap();
        assert!(inv.is_open().unwrap());
    }

    #[test]
    fn read_errors_surface() {
        let mut d = ReedSwitch::new(MockIn::from_fn(|| Err(HwError::Gpio("gone".into()))), true);
        assert!(d.is_open().is_err());
    }
}
