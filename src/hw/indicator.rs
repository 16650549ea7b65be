//! Green and red LEDs and a buzzer on three GPIO outputs (active high). The controller
//! decides how long a signal lasts and sends `Off` afterwards.

use super::{HwError, Indicator, OutputPin, Signal};

pub struct LedBuzzer<O: OutputPin> {
    green: O,
    red: O,
    buzzer: O,
}

impl<O: OutputPin> LedBuzzer<O> {
    pub fn new(green: O, red: O, buzzer: O) -> Result<Self, HwError> {
        let mut s = Self { green, red, buzzer };
        s.signal(Signal::Off)?;
        Ok(s)
    }
}

impl<O: OutputPin> Indicator for LedBuzzer<O> {
    fn signal(&mut self, s: Signal) -> Result<(), HwError> {
        let (g, r, b) = match s {
            Signal::Off => (false, false, false),
            Signal::Granted => (true, false, true),
            Signal::Denied => (false, true, false),
            Signal::Locked => (false, true, true),
            Signal::Key => (false, false, true),
        };
        self.green.set(g)?;
        self.red.set(r)?;
        self.buzzer.set(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::{Log, MockOut};

    #[test]
    fn signals_map_to_pins() {
        let log = Log::default();
        let mut i = LedBuzzer::new(
            MockOut::new("g", &log),
            MockOut::new("r", &log),
            MockOut::new("b", &log),
        )
        .unwrap();
        assert_eq!(log.take(), ["g=0", "r=0", "b=0"]);
        i.signal(Signal::Granted).unwrap();
        assert_eq!(log.take(), ["g=1", "r=0", "b=1"]);
        i.signal(Signal::Denied).unwrap();
        assert_eq!(log.take(), ["g=0", "r=1", "b=0"]);
    }
}
