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

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/lockerd/lockerd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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

/// Every setting of the daemon. `Default` is the embedded default configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[derive(Default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub store: StoreConfig,
    pub vision: VisionConfig,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisionConfig {
    /// Directory holding the dlib model files fetched by `scripts/setup.sh`.
    pub models: PathBuf,
    pub camera_device: String,
    pub camera_width: u32,
    pub camera_height: u32,
    pub camera_fps: u32,
    pub camera_format: String,
    pub detect_width: u32,
    pub roi_check_every: u32,
    pub full_detect_every: u32,
    pub min_face_px: f32,
    pub max_yaw: f32,
    pub min_sharpness: f32,
    pub match_threshold: f32,
    pub match_margin: f32,
    pub strict_threshold: f32,
    pub strict_margin: f32,
    pub min_cohort: u32,
    pub liveness_window_s: f32,
    pub identity_break: f32,
    pub post_blink_frames: u32,
    pub blink: crate::vision::blink::BlinkConfig,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            models: PathBuf::from("/usr/share/lockerd/models"),
            camera_device: "/dev/video0".into(),
            camera_width: 640,
            camera_height: 480,
            camera_fps: 15,
            camera_format: "mjpeg".into(),
            detect_width: 320,
            roi_check_every: 5,
            full_detect_every: 30,
            min_face_px: 80.0,
            max_yaw: 0.4,
            min_sharpness: 15.0,
            match_threshold: 0.56,
            match_margin: 0.12,
            strict_threshold: 0.40,
            strict_margin: 0.04,
            min_cohort: 5,
            liveness_window_s: 5.0,
            identity_break: 0.55,
            post_blink_frames: 3,
            blink: Default::default(),
        }
    }
}

impl VisionConfig {
    pub fn policy(&self) -> crate::vision::matcher::MatchPolicy {
        crate::vision::matcher::MatchPolicy {
            threshold: self.match_threshold,
            margin: self.match_margin,
            strict_threshold: self.strict_threshold,
            strict_margin: self.strict_margin,
            min_cohort: self.min_cohort as usize,
        }
    }

    pub fn gates(&self) -> crate::vision::quality::QualityGates {
        crate::vision::quality::QualityGates {
            min_face_px: self.min_face_px,
            max_yaw: self.max_yaw,
            min_pitch: 0.05,
            max_pitch: 1.2,
            max_roll_deg: 30.0,
            min_sharpness: self.min_sharpness,
        }
    }

    pub fn pipeline(&self) -> crate::vision::pipeline::PipelineConfig {
        crate::vision::pipeline::PipelineConfig {
            detect_width: self.detect_width,
            roi_check_every: self.roi_check_every,
            full_detect_every: self.full_detect_every,
            gates: self.gates(),
            policy: self.policy(),
            liveness_window: std::time::Duration::from_secs_f32(self.liveness_window_s),
            early_encodings: 3,
            encode_gap_frames: 2,
            refresh_every_frames: 15,
            fuse_last: 5,
            max_encodings: 12,
            identity_break: self.identity_break,
            post_blink_frames: self.post_blink_frames,
            blink: self.blink.clone(),
        }
    }

    pub fn camera(&self) -> crate::vision::camera::CameraSettings {
        crate::vision::camera::CameraSettings {
            device: self.camera_device.clone(),
            width: self.camera_width,
            height: self.camera_height,
            fps: self.camera_fps,
            format: self.camera_format.clone(),
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
    /// Load `path`, or the default path if it exists, or the embedded defaults.
    /// An explicitly named file that does not exist is an error.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        match path {
            Some(p) => Self::from_file(p),
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.exists() {
                    Self::from_file(p)
                } else {
                    Ok(Self::default())
                }
            }
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parse TOML text; `path` is only used in error messages.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let value: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string().trim().to_string(),
            })?;
        let known = toml::Table::try_from(Config::default()).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: format!("internal: cannot serialise defaults: {e}"),
        })?;
        if let Some(key) = first_unknown_key(&value, &known, "") {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let cfg: Config =
            Config::deserialize(toml::Value::Table(value)).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string().trim().to_string(),
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
        let known = toml::Table::try_from(Config::default()).unwrap();
        assert_eq!(first_unknown_key(&known, &given, ""), None);
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
    fn missing_named_file_is_an_error() {
        let err = Config::load(Some(Path::new("/nonexistent/lockerd.toml"))).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
    }
}
