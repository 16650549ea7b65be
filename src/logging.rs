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
