//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lockerd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lockerd")
}

/// A fresh owner-only key file in `dir`.
pub fn key_file(dir: &Path, name: &str, key: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `lockerd --db DB --key-file KEY args...` with no config file from /etc.
pub fn lockerd(db: &Path, key: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(lockerd_bin());
    c.env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("NOTIFY_SOCKET")
        .arg("--config")
        .arg(default_config())
        .arg("--db")
        .arg(db);
    if let Some(k) = key {
        c.arg("--key-file").arg(k);
    }
    c.args(args).output().expect("run lockerd")
}

pub fn default_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lockerd.toml")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Where the shared test data lives (`../shared/data` beside the repo, or $LOCKERD_DATA).
/// Returns None, after saying so, when it is absent.
pub fn shared_data() -> Option<PathBuf> {
    let p = std::env::var_os("LOCKERD_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    if p.join("manifest.json").exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: shared test data not found at {} (set LOCKERD_DATA)",
            p.display()
        );
        None
    }
}

/// The dlib model directory ($LOCKERD_MODELS or the setup default).
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LOCKERD_MODELS") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        });
    base.join("lockerd/models")
}
