//! Configuration: the typed settings every part of the daemon reads.
//!
//! Owns parsing and validation of `lockerd.toml`. The compiled-in defaults are the
//! "embedded default" the daemon runs on when no file is given; `config/lockerd.toml`
//! documents every key and is checked by a test to equal those defaults. Loading rejects
//! unknown keys (named by their dotted path) and out-of-range values (named, with the
//! allowed range), always saying which file was read. Command-line overrides
//! (`--db`, `--key-file`, `--models`) are applied by the binary through [`Overrides`].

use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::path::{Path, PathBuf};

// Each part's settings are its own module's types (the dependency points from here to
// them, never back); this module reads, merges and validates the whole file.
pub use crate::access::config::AccessConfig;
pub use crate::hw::config::{HardwareConfig, HardwareMode};
pub use crate::mqtt::config::{
    topic_safe, HomeAssistantConfig, LockConfig, LockKind, MqttAdmin, MqttConfig,
};
pub use lockerd_vision::config::{VisionConfig, VisionSource};

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lockerd/lockerd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The io error is in the message, not a `source`: `{:#}` would print it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: unknown key `{key}`")]
    UnknownKey { path: PathBuf, key: String },
    #[error("config file {path}: `{key}` = {value} is out of range (allowed: {allowed})")]
    OutOfRange {
        path: PathBuf,
        key: String,
        value: String,
        allowed: String,
    },
}

/// A parser message with its quoted source lines cut to 200 characters each (a
/// 200 KB line is not echoed back).
fn clip(msg: &str) -> String {
    msg.lines()
        .map(|l| {
            if l.chars().count() > 200 {
                format!("{}...", l.chars().take(200).collect::<String>())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every setting of the daemon. `Default` is the embedded default configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub store: StoreConfig,
    pub vision: VisionConfig,
    pub access: AccessConfig,
    pub hardware: HardwareConfig,
    pub lock: LockConfig,
    pub mqtt: MqttConfig,
    /// `[fleet]`: this kiosk is one of a fleet sharing a user directory through the
    /// broker (on when the section is present; needs `[mqtt]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: which fleet's user records this kiosk applies (`lockerd_client::fleet`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// The fleet's id in its topics (`lockerd/fleet/<id>/...`).
    pub id: String,
    /// Cut off from the broker longer than this (seconds since the directory was last
    /// known current), fleet users no longer open by face here; keypad codes and local
    /// users still do. A kiosk that starts without reaching the broker is cut off at once.
    pub offline_after_s: u64,
    /// The largest user record taken (bytes): face shares make a record grow by about
    /// 4 KB per kiosk for five templates.
    pub max_record_bytes: u64,
    /// The groups this kiosk is in: a record naming `@group` keeps its user at every
    /// kiosk of that group.
    pub groups: Vec<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            id: String::new(),
            offline_after_s: 600,
            max_record_bytes: 256 * 1024,
            groups: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// error, warn, info, debug or trace.
    pub log_level: String,
    /// Name of this kiosk in status text (and later MQTT topics).
    pub kiosk_name: String,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            log_level: "info".into(),
            kiosk_name: "kiosk".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// SQLCipher database file.
    pub path: PathBuf,
    /// Owner-only file holding the database passphrase; empty means none.
    pub key_file: PathBuf,
    /// How long a writer waits for another process holding the database lock.
    pub busy_timeout_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/var/lib/lockerd/lockerd.db"),
            key_file: PathBuf::new(),
            busy_timeout_ms: 5000,
        }
    }
}

/// Values from the command line that win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub db: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub models: Option<PathBuf>,
}

impl Config {
    /// What the request API's serving task takes from the configuration.
    pub fn service(&self) -> crate::service::Settings {
        crate::service::Settings {
            kiosk_name: self.daemon.kiosk_name.clone(),
            access: self.access.clone(),
            duplicate_threshold: self.vision.strict_threshold,
            kiosk_id: self.mqtt.kiosk_id.clone(),
            fleet_groups: self
                .fleet
                .as_ref()
                .map(|f| f.groups.clone())
                .unwrap_or_default(),
        }
    }

    /// Load `path`, or the default path if it exists, or the embedded defaults.
    /// An explicitly named file that does not exist is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None => Self::load_default(Path::new(DEFAULT_CONFIG_PATH)),
        }
    }

    /// The file at `p` if there is one, the embedded defaults if there is none. A file
    /// that may be there but cannot be looked at (`/etc/lockerd` is not readable by
    /// this user) is an error: silently checking or running on the defaults instead
    /// would report on a configuration that is not the installed one.
    fn load_default(p: &Path) -> Result<Self, ConfigError> {
        match std::fs::metadata(p) {
            Ok(_) => Self::from_file(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(error) => Err(ConfigError::Read {
                path: p.to_owned(),
                error,
            }),
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        // A FIFO or device would block or never end: only regular files, and not huge.
        let meta = std::fs::metadata(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        if !meta.is_file() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: "not a regular file".into(),
            });
        }
        if meta.len() > 1024 * 1024 {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!("{} bytes; a config file is at most 1 MiB", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse TOML text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_owned(),
                message: clip(e.to_string().trim()),
            })?;
        let mut known =
            toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: format!("internal: cannot serialise defaults: {e}"),
            })?;
        // `[fleet]` is absent by default: its keys are known all the same.
        if let Ok(f) = toml::Value::try_from(FleetConfig::default()) {
            known.insert("fleet".into(), f);
        }
        if let Some(key) = first_unknown_key(&value, &known, "") {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let cfg: Config =
            Config::deserialize(toml::Value::Table(value)).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: clip(e.to_string().trim()),
            })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(db) = &o.db {
            self.store.path = db.clone();
        }
        if let Some(k) = &o.key_file {
            self.store.key_file = k.clone();
        }
        if let Some(m) = &o.models {
            self.vision.models = m.clone();
        }
    }

    /// Range checks. `path` names the file in the error.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let v = Validator { path };
        v.one_of(
            "daemon.log_level",
            &self.daemon.log_level,
            &["error", "warn", "info", "debug", "trace"],
        )?;
        v.check(
            "daemon.kiosk_name",
            &self.daemon.kiosk_name,
            !self.daemon.kiosk_name.is_empty()
                && self.daemon.kiosk_name.len() <= 64
                && self
                    .daemon
                    .kiosk_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "1-64 characters of a-z, A-Z, 0-9, '-', '_'",
        )?;
        v.check(
            "store.path",
            &self.store.path.display(),
            !self.store.path.as_os_str().is_empty(),
            "a non-empty path",
        )?;
        v.range(
            "store.busy_timeout_ms",
            self.store.busy_timeout_ms,
            0,
            60_000,
        )?;
        self.validate_vision(&v)?;
        self.validate_access(&v)?;
        self.validate_hardware(&v)?;
        self.validate_mqtt(&v)?;
        self.validate_lock(&v)?;
        if let Some(f) = &self.fleet {
            v.check(
                "fleet.id",
                &f.id,
                lockerd_client::fleet::valid_name(&f.id),
                "1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'",
            )?;
            v.check(
                "fleet.id",
                &f.id,
                self.mqtt.enabled,
                "a fleet shares its users through the broker: set [mqtt] enabled = true",
            )?;
            v.range("fleet.offline_after_s", f.offline_after_s, 1, 7 * 86_400)?;
            for g in &f.groups {
                v.check(
                    "fleet.groups",
                    g,
                    lockerd_client::fleet::valid_name(g),
                    "names of 1-64 characters of a-z, A-Z, 0-9, '-', '_', '.'",
                )?;
            }
            v.range(
                "fleet.max_record_bytes",
                f.max_record_bytes,
                4096,
                16 * 1024 * 1024,
            )?;
        }
        Ok(())
    }

    fn validate_lock(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let l = &self.lock;
        v.check(
            "lock.lock_id",
            &l.lock_id,
            topic_safe(&l.lock_id),
            "1-64 characters of a-z, A-Z, 0-9, '-', '_'",
        )?;
        v.range("lock.ack_timeout_ms", l.ack_timeout_ms, 100, 10_000)?;
        v.range("lock.retries", l.retries, 0, 5)?;
        v.range("lock.report_timeout_s", l.report_timeout_s, 2, 600)?;
        if l.kind == LockKind::Esp32 {
            v.check(
                "lock.key_file",
                &l.key_file.display(),
                !l.key_file.as_os_str().is_empty(),
                "the lock's key file (32 raw bytes, owner-only)",
            )?;
            v.check(
                "mqtt.enabled",
                &self.mqtt.enabled,
                self.mqtt.enabled,
                "true: an ESP32 lock is reached through the MQTT broker",
            )?;
        }
        Ok(())
    }

    fn validate_mqtt(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let m = &self.mqtt;
        v.check(
            "mqtt.kiosk_id",
            &m.kiosk_id,
            topic_safe(&m.kiosk_id),
            "1-64 characters of a-z, A-Z, 0-9, '-', '_'",
        )?;
        v.range("mqtt.max_skew_s", m.max_skew_s, 5, 300)?;
        v.range("mqtt.max_payload_bytes", m.max_payload_bytes, 1024, 8 << 20)?;
        v.range(
            "mqtt.outbox_max_events",
            m.outbox_max_events as u64,
            100,
            10_000_000,
        )?;
        v.check(
            "mqtt.home_assistant.prefix",
            &m.home_assistant.prefix,
            topic_safe(&m.home_assistant.prefix),
            "1-64 characters of a-z, A-Z, 0-9, '-', '_'",
        )?;
        if let Err(e) = m.admins() {
            return Err(ConfigError::Parse {
                path: v.path.to_owned(),
                message: e,
            });
        }
        if !m.enabled {
            return Ok(());
        }
        let (scheme, rest) = m.url.split_once("://").unwrap_or(("", ""));
        let host = rest.rsplit_once(':').map_or(rest, |(h, _)| h);
        let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
        v.check(
            "mqtt.url",
            &m.url,
            (scheme == "mqtts" || (scheme == "mqtt" && loopback)) && !host.is_empty(),
            "mqtts://HOST[:PORT] (mqtt:// only to a loopback host)",
        )?;
        let tls = scheme == "mqtts";
        v.check(
            "mqtt.ca_file",
            &m.ca_file.display(),
            !tls || !m.ca_file.as_os_str().is_empty(),
            "the CA that signed the broker's certificate (required with mqtts://)",
        )?;
        v.check(
            "mqtt.cert_file",
            &m.cert_file.display(),
            m.cert_file.as_os_str().is_empty() == m.key_file.as_os_str().is_empty(),
            "cert_file and key_file together",
        )?;
        v.check(
            "mqtt.password_file",
            &m.password_file.display(),
            m.username.is_empty() == m.password_file.as_os_str().is_empty(),
            "username and password_file together",
        )?;
        // No [[mqtt.admins]] is allowed (MQTT only for Home Assistant or an ESP32 lock):
        // every signed command is then refused (`unknown_key`), and the bridge says so.
        Ok(())
    }

    fn validate_vision(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let vi = &self.vision;
        v.check(
            "vision.camera_device",
            &vi.camera_device,
            crate::vision::camera::device_index(&vi.camera_device).is_ok(),
            "/dev/videoN",
        )?;
        v.range("vision.camera_width", vi.camera_width, 160, 4096)?;
        v.range("vision.camera_height", vi.camera_height, 120, 4096)?;
        v.range("vision.camera_fps", vi.camera_fps, 5, 60)?;
        v.one_of(
            "vision.camera_format",
            &vi.camera_format,
            &["mjpeg", "yuyv"],
        )?;
        v.range("vision.detect_width", vi.detect_width, 160, 1920)?;
        v.range("vision.roi_check_every", vi.roi_check_every, 1, 30)?;
        v.range("vision.full_detect_every", vi.full_detect_every, 1, 300)?;
        v.range("vision.idle_detect_every", vi.idle_detect_every, 1, 15)?;
        v.range("vision.min_face_px", vi.min_face_px, 40.0, 1000.0)?;
        v.range("vision.max_yaw", vi.max_yaw, 0.05, 1.0)?;
        v.range("vision.min_sharpness", vi.min_sharpness, 0.0, 10_000.0)?;
        // SFace distances: between unit vectors, 0 (the same) to 2 (opposite).
        v.range("vision.match_threshold", vi.match_threshold, 0.3, 1.4)?;
        v.range("vision.match_margin", vi.match_margin, 0.0, 0.5)?;
        v.range(
            "vision.strict_threshold",
            vi.strict_threshold,
            0.3,
            vi.match_threshold,
        )?;
        v.range("vision.strict_margin", vi.strict_margin, 0.0, 0.5)?;
        v.range("vision.min_cohort", vi.min_cohort, 1, 1000)?;
        v.range("vision.liveness_window_s", vi.liveness_window_s, 0.5, 30.0)?;
        v.range("vision.identity_break", vi.identity_break, 0.3, 1.6)?;
        if vi.eyes_gate != 0.0 {
            v.range("vision.eyes_gate", vi.eyes_gate, 1.0, 2.0)?;
        }
        v.range("vision.post_blink_frames", vi.post_blink_frames, 0, 10)?;
        let pad = &vi.pad;
        // A live verdict can never be had with fewer than 2 frames or under half live.
        v.range("vision.pad.live_at", pad.live_at, 0.05, 0.95)?;
        v.range("vision.pad.min_frames", pad.min_frames, 2, 32)?;
        v.range("vision.pad.live_share", pad.live_share, 0.5, 1.0)?;
        v.range("vision.pad.attack_share", pad.attack_share, 0.0, 0.5)?;
        v.check(
            "vision.pad.attack_share",
            &pad.attack_share,
            pad.attack_share < pad.live_share,
            "less than vision.pad.live_share",
        )?;
        let c = &vi.challenge;
        v.range("vision.challenge.window_s", c.window_s, 2.0, 30.0)?;
        v.range("vision.challenge.turn_yaw", c.turn_yaw, 0.1, 1.5)?;
        v.range("vision.challenge.turn_frames", c.turn_frames, 1, 30)?;
        v.range(
            "vision.challenge.doubt_pad_median",
            c.doubt_pad_median,
            0.0,
            1.0,
        )?;
        v.check(
            "vision.challenge.prompts",
            &c.prompts.len(),
            !c.prompts.is_empty(),
            "at least one of \"blink_twice\", \"turn_left\", \"turn_right\"",
        )?;
        let b = &vi.blink;
        v.range("vision.blink.close_ratio", b.close_ratio, 0.3, 0.99)?;
        v.range("vision.blink.open_ratio", b.open_ratio, 0.3, 1.2)?;
        v.check(
            "vision.blink.open_ratio",
            &b.open_ratio,
            b.open_ratio > b.close_ratio,
            "greater than vision.blink.close_ratio",
        )?;
        v.range(
            "vision.blink.depth_ratio",
            b.depth_ratio,
            0.1,
            b.close_ratio,
        )?;
        v.range(
            "vision.blink.baseline_window_s",
            b.baseline_window_s,
            0.1,
            10.0,
        )?;
        v.range(
            "vision.blink.baseline_percentile",
            b.baseline_percentile,
            0.0,
            1.0,
        )?;
        v.range("vision.blink.warmup_frames", b.warmup_frames, 1, 100)?;
        v.range("vision.blink.reopen_fraction", b.reopen_fraction, 0.2, 1.0)?;
        v.range("vision.blink.max_closed_s", b.max_closed_s, 0.1, 3.0)?;
        v.range("vision.blink.merge_gap_s", b.merge_gap_s, 0.0, 1.0)?;
        v.range("vision.blink.smooth_window_s", b.smooth_window_s, 0.0, 0.5)?;
        v.range("vision.blink.noise_window_s", b.noise_window_s, 0.2, 10.0)?;
        v.range(
            "vision.blink.liveness_min_snr",
            b.liveness_min_snr,
            1.0,
            100.0,
        )?;
        Ok(())
    }

    fn validate_access(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let a = &self.access;
        v.range("access.unlock_pulse_s", a.unlock_pulse_s, 0.5, 60.0)?;
        v.range("access.door_held_open_s", a.door_held_open_s, 5.0, 3600.0)?;
        v.range("access.door_grace_s", a.door_grace_s, 0.0, 120.0)?;
        v.range("access.keypad_max_strikes", a.keypad_max_strikes, 1, 10)?;
        v.range("access.keypad_lockout_s", a.keypad_lockout_s, 10, 86_400)?;
        v.range(
            "access.keypad_lockout_factor",
            a.keypad_lockout_factor,
            1,
            10,
        )?;
        v.range(
            "access.keypad_entry_timeout_s",
            a.keypad_entry_timeout_s,
            2.0,
            120.0,
        )?;
        v.range("access.otp_digits", a.otp_digits, 6, 8)?;
        v.range("access.otp_max_ttl_s", a.otp_max_ttl_s, 60, 30 * 86_400)?;
        v.range(
            "access.otp_default_ttl_s",
            a.otp_default_ttl_s,
            60,
            a.otp_max_ttl_s,
        )?;
        v.range("access.totp_pin_digits", a.totp_pin_digits, 4, 8)?;
        v.range("access.face_fail_limit", a.face_fail_limit, 1, 100)?;
        v.range(
            "access.face_fail_window_s",
            a.face_fail_window_s,
            1.0,
            3600.0,
        )?;
        v.range("access.face_cooldown_s", a.face_cooldown_s, 0.0, 3600.0)?;
        // Each setting may be in range and together still let a keypad guesser in:
        // refuse a policy that gives better than 1 in 1,000 a year, warn above 1 in 10^6.
        let (guesses, p_code, p_totp) = a.guessing_budget();
        let worst = p_code.max(p_totp);
        v.check(
            "access (keypad_max_strikes, keypad_lockout_s, keypad_lockout_factor, otp_digits, totp_pin_digits)",
            &format!(
                "{guesses} guesses a year: a code guessed within a year with probability up to {p_code:.1e}, TOTP+PIN {p_totp:.1e}"
            ),
            worst <= 1e-3,
            "at most 1e-3 a year (the defaults give 5.7e-7)",
        )?;
        if worst > 1e-6 {
            log::warn!(
                "keypad policy allows {guesses} guesses a year: a one-time code could be guessed with probability {p_code:.1e}, TOTP+PIN {p_totp:.1e} (the defaults give 5.7e-7)"
            );
        }
        Ok(())
    }

    fn validate_hardware(&self, v: &Validator<'_>) -> Result<(), ConfigError> {
        let h = &self.hardware;
        let n = |x: &Vec<u8>| format!("{x:?}");
        v.check(
            "hardware.keypad_rows",
            &n(&h.keypad_rows),
            h.keypad_rows.len() == 4,
            "4 pins",
        )?;
        v.check(
            "hardware.keypad_cols",
            &n(&h.keypad_cols),
            h.keypad_cols.len() == 4,
            "4 pins",
        )?;
        v.range("hardware.keypad_scan_ms", h.keypad_scan_ms, 1, 100)?;
        v.range(
            "hardware.keypad_debounce_scans",
            h.keypad_debounce_scans,
            1,
            50,
        )?;
        let pins: Vec<(&str, u8)> = [
            ("hardware.relay_pin", h.relay_pin),
            ("hardware.door_pin", h.door_pin),
            ("hardware.led_green_pin", h.led_green_pin),
            ("hardware.led_red_pin", h.led_red_pin),
            ("hardware.buzzer_pin", h.buzzer_pin),
        ]
        .into_iter()
        .chain(h.keypad_rows.iter().map(|p| ("hardware.keypad_rows", *p)))
        .chain(h.keypad_cols.iter().map(|p| ("hardware.keypad_cols", *p)))
        .collect();
        for (i, (key, pin)) in pins.iter().enumerate() {
            // GPIO 2 and 3 are the display's I2C bus.
            v.check(
                key,
                pin,
                (4..=27).contains(pin),
                "BCM GPIO 4-27 (2 and 3 are the display's I2C)",
            )?;
            if let Some((other, _)) = pins[..i].iter().find(|(_, p)| p == pin) {
                v.check(
                    key,
                    pin,
                    false,
                    &format!("a pin not already used by {other}"),
                )?;
            }
        }
        v.range("hardware.lcd_i2c_bus", h.lcd_i2c_bus, 0, 22)?;
        v.range("hardware.lcd_address", h.lcd_address, 0x03, 0x77)?;
        Ok(())
    }
}

/// Small helper that turns failed checks into [`ConfigError::OutOfRange`].
pub(crate) struct Validator<'a> {
    pub path: &'a Path,
}

impl Validator<'_> {
    pub fn check(
        &self,
        key: &str,
        value: &dyn Display,
        ok: bool,
        allowed: &str,
    ) -> Result<(), ConfigError> {
        if ok {
            Ok(())
        } else {
            Err(ConfigError::OutOfRange {
                path: self.path.to_owned(),
                key: key.into(),
                value: value.to_string(),
                allowed: allowed.into(),
            })
        }
    }

    pub fn range<T: PartialOrd + Display>(
        &self,
        key: &str,
        value: T,
        min: T,
        max: T,
    ) -> Result<(), ConfigError> {
        let ok = value >= min && value <= max;
        self.check(key, &value, ok, &format!("{min} to {max}"))
    }

    pub fn one_of(&self, key: &str, value: &str, allowed: &[&str]) -> Result<(), ConfigError> {
        self.check(
            key,
            &format!("\"{value}\""),
            allowed.contains(&value),
            &allowed.join(", "),
        )
    }
}

/// The first key in `given` that the defaults do not have, as a dotted path.
/// A table that is empty in the defaults is a free-form map and accepts any key.
fn first_unknown_key(given: &toml::Table, known: &toml::Table, prefix: &str) -> Option<String> {
    for (k, v) in given {
        let dotted = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match known.get(k) {
            None => return Some(dotted),
            Some(toml::Value::Table(kt)) if !kt.is_empty() => {
                if let toml::Value::Table(gt) = v {
                    if let Some(bad) = first_unknown_key(gt, kt, &dotted) {
                        return Some(bad);
                    }
                }
            }
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mqtt_section_is_checked_even_when_off() {
        let pk = data_encoding::BASE64.encode(
            ed25519_dalek::SigningKey::from_bytes(&[3; 32])
                .verifying_key()
                .as_bytes(),
        );
        let seal = data_encoding::BASE64.encode(&[9u8; 32]);
        let admin = |id: &str, pk: &str| {
            format!("[[mqtt.admins]]\nid = \"{id}\"\npublic_key = \"{pk}\"\nseal_key = \"{seal}\"\nrole = \"admin\"\n")
        };
        let c = parse(&format!(
            "[mqtt]\nenabled = true\nurl = \"mqtts://broker.lan:8883\"\nca_file = \"/etc/lockerd/ca.pem\"\n{}",
            admin("ada", &pk)
        ))
        .unwrap();
        assert_eq!(c.mqtt.admins().unwrap()[0].id, "ada");
        assert_eq!(c.mqtt.max_skew_s, 30);
        let bad = |text: String, what: &str| {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(what), "{what}: {e}");
        };
        bad(admin("ada", "AAAA"), "public_key");
        bad(
            format!("{}{}", admin("ada", &pk), admin("ada", &pk)),
            "twice",
        );
        bad(admin("a/b", &pk), "mqtt.admins[0].id");
        bad(format!("{}unknown = 1\n", admin("ada", &pk)), "unknown");
        bad("[mqtt]\nkiosk_id = \"k/#\"\n".into(), "mqtt.kiosk_id");
        bad(
            format!(
                "[mqtt]\nenabled = true\nurl = \"mqtt://broker.lan:1883\"\n{}",
                admin("ada", &pk)
            ),
            "mqtt.url",
        );
        bad(
            format!(
                "[mqtt]\nenabled = true\nurl = \"mqtts://b:8883\"\n{}",
                admin("ada", &pk)
            ),
            "mqtt.ca_file",
        );
        // No remote admin at all is allowed (Home Assistant or an ESP32 lock only).
        let c = parse("[mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:1883\"\n").unwrap();
        assert!(c.mqtt.admins().unwrap().is_empty());
        // One public key under two admin ids is refused.
        bad(
            format!(
                "[mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:1883\"\n{}{}",
                admin("ada", &pk),
                admin("bob", &pk)
            ),
            "is also the key of \"ada\"",
        );
        // Plain TCP to loopback is for tests, and allowed.
        parse(&format!(
            "[mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:1883\"\n{}",
            admin("ada", &pk)
        ))
        .unwrap();
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/test.toml"))
    }

    #[test]
    fn shipped_file_equals_embedded_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lockerd.toml");
        let cfg = Config::from_file(&path).expect("shipped config parses");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn shipped_file_documents_every_key() {
        // Every key of the defaults appears in the shipped file (not only by default).
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lockerd.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let given: toml::Table = text.parse().unwrap();
        let mut known = toml::Table::try_from(Config::default()).unwrap();
        // [[mqtt.admins]] has no entries by default: the file shows one, commented out.
        if let Some(toml::Value::Table(m)) = known.get_mut("mqtt") {
            m.remove("admins");
        }
        assert!(text.contains("# [[mqtt.admins]]"));
        // [fleet] is off by default: the file shows it commented out.
        assert!(text.contains("# [fleet]\n# id = "));
        assert_eq!(first_unknown_key(&known, &given, ""), None);
    }

    #[test]
    fn a_fleet_needs_mqtt_and_a_topic_safe_id() {
        let on = "[mqtt]\nenabled = true\nurl = \"mqtt://127.0.0.1:1883\"\n";
        let cfg = parse(&format!("{on}[fleet]\nid = \"site-1\"\n")).unwrap();
        assert_eq!(cfg.fleet.unwrap().id, "site-1");
        assert!(parse("[fleet]\nid = \"site\"\n").is_err(), "without mqtt");
        for bad in ["a/b", "+", ""] {
            let e = parse(&format!("{on}[fleet]\nid = \"{bad}\"\n")).unwrap_err();
            assert!(e.to_string().contains("fleet.id"), "{e}");
        }
        let e = parse(&format!("{on}[fleet]\nid = \"s\"\nsize = 3\n")).unwrap_err();
        assert!(e.to_string().contains("`fleet.size`"), "{e}");
        assert_eq!(parse("").unwrap().fleet, None);
    }

    #[test]
    fn unknown_key_is_named_with_its_section_and_file() {
        let err = parse("[store]\npath = \"/x.db\"\nbusy_timeout = 3\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`store.busy_timeout`"), "{msg}");
        assert!(msg.contains("/etc/test.toml"), "{msg}");
        let err = parse("[nosuch]\na = 1\n").unwrap_err();
        assert!(err.to_string().contains("`nosuch`"), "{err}");
    }

    #[test]
    fn out_of_range_value_is_named() {
        let err = parse("[store]\nbusy_timeout_ms = 999999\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`store.busy_timeout_ms`"), "{msg}");
        assert!(msg.contains("0 to 60000"), "{msg}");
        let err = parse("[daemon]\nlog_level = \"loud\"\n").unwrap_err();
        assert!(err.to_string().contains("`daemon.log_level`"), "{err}");
    }

    #[test]
    fn wrong_type_is_a_parse_error_naming_the_file() {
        let err = parse("[store]\nbusy_timeout_ms = \"soon\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/test.toml"), "{msg}");
        assert!(msg.contains("busy_timeout_ms"), "{msg}");
    }

    #[test]
    fn pin_conflicts_and_i2c_pins_are_refused() {
        let err = parse("[hardware]\nrelay_pin = 27\n").unwrap_err();
        assert!(
            err.to_string().contains("`hardware.door_pin`")
                || err.to_string().contains("`hardware.relay_pin`"),
            "{err}"
        );
        let err = parse("[hardware]\nbuzzer_pin = 3\n").unwrap_err();
        assert!(err.to_string().contains("`hardware.buzzer_pin`"), "{err}");
        let err = parse("[access]\notp_digits = 4\n").unwrap_err();
        assert!(err.to_string().contains("`access.otp_digits`"), "{err}");
    }

    #[test]
    fn vision_values_are_range_checked() {
        let err = parse("[vision]\nmatch_threshold = 1.5\n").unwrap_err();
        assert!(
            err.to_string().contains("`vision.match_threshold`"),
            "{err}"
        );
        // The strict tier can never be looser than the margin tier.
        let err = parse("[vision]\nmatch_threshold = 0.9\n").unwrap_err();
        assert!(
            err.to_string().contains("`vision.strict_threshold`"),
            "{err}"
        );
        let err = parse("[vision.blink]\nclose_ratio = 0.95\nopen_ratio = 0.9\n").unwrap_err();
        assert!(
            err.to_string().contains("`vision.blink.open_ratio`"),
            "{err}"
        );
        let err = parse("[vision]\ncamera_device = \"/dev/sda\"\n").unwrap_err();
        assert!(err.to_string().contains("`vision.camera_device`"), "{err}");
        // PAD can never be set so that fewer than 2 frames or a minority of live frames
        // grant, nor so that one verdict is both live and attack.
        for (text, key) in [
            ("min_frames = 1", "`vision.pad.min_frames`"),
            ("live_share = 0.4", "`vision.pad.live_share`"),
            (
                "live_share = 0.5\nattack_share = 0.5",
                "`vision.pad.attack_share`",
            ),
            ("unknown = 1", "unknown"),
        ] {
            let err = parse(&format!("[vision.pad]\n{text}\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
        assert!(parse("[vision.pad]\nlive_share = 0.8\nmin_frames = 4\n").is_ok());
    }

    #[test]
    fn overrides_win() {
        let mut cfg = Config::default();
        cfg.apply(&Overrides {
            db: Some("/tmp/a.db".into()),
            key_file: Some("/tmp/k".into()),
            models: Some("/m".into()),
        });
        assert_eq!(cfg.store.path, Path::new("/tmp/a.db"));
        assert_eq!(cfg.store.key_file, Path::new("/tmp/k"));
        assert_eq!(cfg.vision.models, Path::new("/m"));
    }

    #[test]
    fn a_default_file_that_cannot_be_looked_at_is_an_error_not_the_defaults() {
        // No file: the embedded defaults.
        assert!(Config::load_default(Path::new("/nonexistent/lockerd.toml")).is_ok());
        // Cannot tell (here: a path through a regular file; on a device: /etc/lockerd
        // not readable by a non-root user): an error naming the file.
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, "").unwrap();
        let err = Config::load_default(&file.join("lockerd.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    }

    #[test]
    fn missing_named_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/lockerd.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
