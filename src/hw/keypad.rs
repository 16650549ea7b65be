//! 4x4 matrix keypad: rows are outputs (idle high), columns are inputs with pull-ups. A
//! scan drives one row low at a time and reads the columns (low = pressed). A key counts
//! after `debounce_scans` identical scans; holding it gives one key (no repeat); it must
//! be released for `debounce_scans` scans before it (or another) can count again. Two keys
//! at once are ignored (ghosting on an undiode'd matrix).

use super::{HwError, InputPin, Keypad, OutputPin};

pub const STANDARD_LAYOUT: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

pub struct MatrixKeypad<O: OutputPin, I: InputPin> {
    rows: Vec<O>,
    cols: Vec<I>,
    layout: [[char; 4]; 4],
    debounce_scans: u32,
    candidate: Option<char>,
    stable: u32,
    released: u32,
    armed: bool,
}

impl<O: OutputPin, I: InputPin> MatrixKeypad<O, I> {
    /// Rows are set high (idle) at once.
    pub fn new(mut rows: Vec<O>, cols: Vec<I>, debounce_scans: u32) -> Result<Self, HwError> {
        if rows.len() != 4 || cols.len() != 4 {
            return Err(HwError::Gpio(format!(
                "a 4x4 keypad needs 4 row and 4 column pins (got {} and {})",
                rows.len(),
                cols.len()
            )));
        }
        for r in rows.iter_mut() {
            r.set(true)?;
        }
        Ok(Self {
            rows,
            cols,
            layout: STANDARD_LAYOUT,
            debounce_scans: debounce_scans.max(1),
            candidate: None,
            stable: 0,
            released: u32::MAX,
            armed: true,
        })
    }

    /// Which keys are down right now.
    fn read_matrix(&mut self) -> Result<Vec<char>, HwError> {
        let mut down = Vec::new();
        for r in 0..4 {
            self.rows[r].set(false)?;
            let mut res = Ok(());
            for c in 0..4 {
                match self.cols[c].is_high() {
                    Ok(false) => down.push(self.layout[r][c]),
                    Ok(true) => {}
                    Err(e) => {
                        res = Err(e);
                        break;
                    }
                }
            }
            // Always restore the row, even after a read error.
            self.rows[r].set(true)?;
            res?;
        }
        Ok(down)
    }
}

impl<O: OutputPin, I: InputPin> Keypad for MatrixKeypad<O, I> {
    fn scan(&mut self) -> Result<Option<char>, HwError> {
        let down = self.read_matrix()?;
        match down.as_slice() {
            [] => {
                self.released = self.released.saturating_add(1);
                if self.released >= self.debounce_scans {
                    self.armed = true;
                    self.candidate = None;
                    self.stable = 0;
                }
                Ok(None)
            }
            [k] => {
                self.released = 0;
                if self.candidate == Some(*k) {
                    self.stable += 1;
                } else {
                    self.candidate = Some(*k);
                    self.stable = 1;
                }
                if self.armed && self.stable >= self.debounce_scans {
                    self.armed = false;
                    return Ok(Some(*k));
                }
                Ok(None)
            }
            _ => {
                // Several keys: ignore, and do not count it as a release.
                self.released = 0;
                self.stable = 0;
                self.candidate = None;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hw::mock::{Log, MockIn, MockOut};
    use std::sync::{Arc, Mutex};

    /// A simulated matrix: `pressed` holds (row, col) keys held down; column inputs read
    /// low when their row is driven low and a pressed key connects them.
    fn matrix(pressed: Arc<Mutex<Vec<(usize, usize)>>>) -> (MatrixKeypad<MockOut, MockIn>, Log) {
        let log = Log::default();
        let rows: Vec<MockOut> = (0..4)
            .map(|r| MockOut::new(&format!("r{r}"), &log))
            .collect();
        let levels: Vec<_> = rows.iter().map(|r| r.level.clone()).collect();
        let cols = (0..4)
            .map(|c| {
                let levels = levels.clone();
                let pressed = pressed.clone();
                MockIn::from_fn(move || {
                    let p = pressed.lock().unwrap();
                    let low = p
                        .iter()
                        .any(|&(r, cc)| cc == c && *levels[r].lock().unwrap() == Some(false));
                    Ok(!low)
                })
            })
            .collect();
        (MatrixKeypad::new(rows, cols, 3).unwrap(), log)
    }

    fn scans(k: &mut MatrixKeypad<MockOut, MockIn>, n: usize) -> Vec<char> {
        (0..n).filter_map(|_| k.scan().unwrap()).collect()
    }

    #[test]
    fn rows_idle_high_and_are_driven_low_one_at_a_time() {
        let (mut k, log) = matrix(Arc::default());
        assert_eq!(log.take(), ["r0=1", "r1=1", "r2=1", "r3=1"]);
        k.scan().unwrap();
        assert_eq!(
            log.take(),
            ["r0=0", "r0=1", "r1=0", "r1=1", "r2=0", "r2=1", "r3=0", "r3=1"]
        );
    }

    #[test]
    fn a_held_key_counts_once_after_debounce() {
        let p = Arc::new(Mutex::new(vec![(1, 2)])); // '6'
        let (mut k, _) = matrix(p.clone());
        assert_eq!(k.scan().unwrap(), None);
        assert_eq!(k.scan().unwrap(), None);
        assert_eq!(k.scan().unwrap(), Some('6'));
        assert_eq!(scans(&mut k, 50), Vec::<char>::new(), "no auto-repeat");
        p.lock().unwrap().clear();
        scans(&mut k, 3);
        *p.lock().unwrap() = vec![(3, 2)]; // '#'
        assert_eq!(scans(&mut k, 5), vec!['#']);
    }

    #[test]
    fn bounce_shorter_than_the_debounce_is_ignored() {
        let p = Arc::new(Mutex::new(vec![(0, 0)]));
        let (mut k, _) = matrix(p.clone());
        k.scan().unwrap();
        k.scan().unwrap();
        p.lock().unwrap().clear(); // contact bounced open after 2 scans
        assert_eq!(scans(&mut k, 5), Vec::<char>::new());
    }

    #[test]
    fn release_must_be_stable_before_the_next_press_counts() {
        let p = Arc::new(Mutex::new(vec![(0, 1)])); // '2'
        let (mut k, _) = matrix(p.clone());
        assert_eq!(scans(&mut k, 3), vec!['2']);
        p.lock().unwrap().clear();
        k.scan().unwrap(); // released for one scan only (bounce)
        *p.lock().unwrap() = vec![(0, 1)];
        assert_eq!(
            scans(&mut k, 10),
            Vec::<char>::new(),
            "bounce on release is not a new press"
        );
    }

    #[test]
    fn two_keys_at_once_are_ignored() {
        let p = Arc::new(Mutex::new(vec![(0, 0), (2, 2)]));
        let (mut k, _) = matrix(p);
        assert_eq!(scans(&mut k, 10), Vec::<char>::new());
    }

    #[test]
    fn every_key_of_the_layout_maps() {
        for (r, row) in STANDARD_LAYOUT.iter().enumerate() {
            for (c, key) in row.iter().enumerate() {
                let p = Arc::new(Mutex::new(vec![(r, c)]));
                let (mut k, _) = matrix(p);
                assert_eq!(scans(&mut k, 3), vec![*key]);
            }
        }
    }

    #[test]
    fn pin_errors_surface_and_the_row_is_restored() {
        let log = Log::default();
        let rows: Vec<MockOut> = (0..4)
            .map(|r| MockOut::new(&format!("r{r}"), &log))
            .collect();
        let cols: Vec<MockIn> = (0..4)
            .map(|_| MockIn::from_fn(|| Err(HwError::Gpio("read failed".into()))))
            .collect();
        let mut k = MatrixKeypad::new(rows, cols, 3).unwrap();
        log.take();
        assert!(k.scan().is_err());
        assert_eq!(
            log.take(),
            ["r0=0", "r0=1"],
            "row 0 set back high after the error"
        );
        let rows: Vec<MockOut> = (0..3)
            .map(|r| MockOut::new(&format!("r{r}"), &log))
            .collect();
        assert!(MatrixKeypad::new(rows, Vec::<MockIn>::new(), 3).is_err());
    }
}
