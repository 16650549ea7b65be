//! Logging set-up for both binaries.
//!
//! Everything logs through the `log` facade. Under journald (`JOURNAL_STREAM` names our
//! stderr) records go to the journal with their priority via systemd-journal-logger;
//! otherwise a plain stderr logger prints `LEVEL message`. Callers never pass secrets
//! (keys, codes, embeddings) to a log macro: the store and access modules log ids and
//! outcomes only.

use log::{Level, LevelFilter, Log, Metadata, Record};
use std::io::Write;

/// Parse a level name as used in the config (`info`, `debug`, ...).
pub fn parse_level(name: &str) -> LevelFilter {
    match name {
        "error" => LevelFilter::Error,
        "warn" => LevelFilter::Warn,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => LevelFilter::Info,
    }
}

/// Install the process logger once. Returns which sink was chosen.
pub fn init(level: LevelFilter) -> &'static str {
    log::set_max_level(level);
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            if j.install().is_ok() {
                return "journald";
            }
        }
    }
    // Fall back to stderr; a second init (tests) is harmless.
    let _ = log::set_boxed_logger(Box::new(StderrLogger));
    "stderr"
}

/// Adjust the level after the config is read (the logger is installed before that so
/// config errors are logged too).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let tag = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{tag} {}", record.args());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// A budget for a log line that an outsider can make us write (a forged lock report, a
/// refused command): at most `per_window` lines in each `window`, the rest counted and
/// summarised once the next window begins, so a flood cannot fill the journal.
#[derive(Debug, Clone)]
pub struct LogBudget {
    window: std::time::Duration,
    per_window: u32,
    start: Option<std::time::Instant>,
    used: u32,
    held: u64,
}

impl LogBudget {
    pub fn new(per_window: u32, window: std::time::Duration) -> LogBudget {
        LogBudget {
            window,
            per_window,
            start: None,
            used: 0,
            held: 0,
        }
    }

    /// One more event now: whether it is within the budget.
    pub fn admit(&mut self) -> bool {
        self.take(std::time::Instant::now()).0
    }

    /// One more event at `now`: whether to log it, and how many went unlogged in the
    /// window that has just ended (to say in a summary line, when not zero).
    pub fn take(&mut self, now: std::time::Instant) -> (bool, u64) {
        let mut ended = 0;
        if self
            .start
            .is_none_or(|s| now.saturating_duration_since(s) >= self.window)
        {
            ended = std::mem::take(&mut self.held);
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.per_window {
            self.used += 1;
            (true, ended)
        } else {
            self.held += 1;
            (false, ended)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_flood_is_logged_a_few_times_and_then_summarised() {
        let mut b = LogBudget::new(5, Duration::from_secs(60));
        let t0 = Instant::now();
        // 80,105 forged reports in 6 s: 5 lines.
        let logged = (0..80_105)
            .map(|i| b.take(t0 + Duration::from_micros(75 * i)))
            .filter(|(log, _)| *log)
            .count();
        assert_eq!(logged, 5);
        // The next window starts with the summary of what was held back.
        assert_eq!(b.take(t0 + Duration::from_secs(61)), (true, 80_100));
        assert_eq!(b.take(t0 + Duration::from_secs(62)), (true, 0));
    }
}
