//! Where the database passphrase comes from, and the checks on it.
//!
//! Order: the systemd credential `db-key` (`$CREDENTIALS_DIRECTORY/db-key`), then the key
//! file from config or `--key-file` (which must be owner-only), else refuse. Only the
//! explicit demo mode may generate a key, stored owner-only beside the database. The key
//! lives in a zeroizing buffer and is never logged or printed.

use super::StoreError;
use rand::RngCore;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Minimum passphrase length accepted from a key file or credential.
pub const MIN_KEY_LEN: usize = 16;

/// A database passphrase. Not `Debug`/`Display` on purpose.
#[derive(Clone)]
pub struct DbKey(Zeroizing<String>);

impl DbKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Build from text; used by tests and by [`load_key_file`].
    pub fn from_text(text: &str, origin: &Path) -> Result<DbKey, StoreError> {
        let trimmed = text.strip_suffix('\n').unwrap_or(text);
        let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
        let invalid = |reason: &str| StoreError::KeyInvalid {
            path: origin.to_owned(),
            reason: reason.into(),
        };
        if trimmed.chars().count() < MIN_KEY_LEN {
            return Err(invalid(&format!(
                "the key must be at least {MIN_KEY_LEN} characters"
            )));
        }
        if trimmed.contains('\0') {
            return Err(invalid("the key contains a NUL byte"));
        }
        Ok(DbKey(Zeroizing::new(trimmed.to_owned())))
    }

    /// A fresh random key: 32 bytes from the OS, hex-encoded.
    pub fn generate() -> DbKey {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        DbKey(Zeroizing::new(hex::encode(bytes.as_ref())))
    }
}

/// Which source supplied the key (for logs and `store check`, never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Credential(PathBuf),
    KeyFile(PathBuf),
    DemoGenerated(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            KeySource::KeyFile(p) => write!(f, "key file {}", p.display()),
            KeySource::DemoGenerated(p) => write!(f, "demo key {}", p.display()),
        }
    }
}

/// Find the key: credential, then key file, then (demo only) a generated one.
pub fn resolve_key(
    key_file: &Path,
    db_path: &Path,
    demo: bool,
) -> Result<(DbKey, KeySource), StoreError> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let cred = Path::new(&dir).join("db-key");
        if cred.exists() {
            let key = load_key_file(&cred)?;
            return Ok((key, KeySource::Credential(cred)));
        }
    }
    if !key_file.as_os_str().is_empty() {
        let key = load_key_file(key_file)?;
        return Ok((key, KeySource::KeyFile(key_file.to_owned())));
    }
    if demo {
        let path = demo_key_path(db_path);
        let key = if path.exists() {
            load_key_file(&path)?
        } else if db_path.exists() {
            // A key made now could not open a database made with another one.
            return Err(StoreError::KeyInvalid {
                path: path.clone(),
                reason: format!(
                    "{} exists but was not made in demo mode (no demo key beside it): give its key with --key-file",
                    db_path.display()
                ),
            });
        } else {
            let key = DbKey::generate();
            write_key_file(&path, &key)?;
            key
        };
        return Ok((key, KeySource::DemoGenerated(path)));
    }
    Err(StoreError::NoKey)
}

/// Where demo mode keeps its generated key: beside the database.
pub fn demo_key_path(db_path: &Path) -> PathBuf {
    let mut s = db_path.as_os_str().to_owned();
    s.push(".key");
    PathBuf::from(s)
}

/// Read a key file after checking it is a regular file that only its owner can read.
pub fn load_key_file(path: &Path) -> Result<DbKey, StoreError> {
    use crate::secret_file::{read_owner_only, SecretFileError};
    let bytes = read_owner_only(path).map_err(|e| match e {
        SecretFileError::Read(error) => StoreError::KeyFileRead {
            path: path.to_owned(),
            error,
        },
        SecretFileError::Permissions { mode } => StoreError::KeyFilePermissions {
            path: path.to_owned(),
            mode,
        },
        e @ (SecretFileError::NotRegular | SecretFileError::TooLarge { .. }) => {
            StoreError::KeyInvalid {
                path: path.to_owned(),
                reason: e.to_string(),
            }
        }
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| StoreError::KeyInvalid {
        path: path.to_owned(),
        reason: "the key file is not UTF-8 text".into(),
    })?;
    DbKey::from_text(text, path)
}

/// Write a key file, owner-only, refusing to overwrite an existing one.
pub fn write_key_file(path: &Path, key: &DbKey) -> Result<(), StoreError> {
    let io_err = |error| StoreError::KeyFileRead {
        path: path.to_owned(),
        error,
    };
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err)?;
    // create_new + mode is subject to the umask only in the permissive direction.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io_err)?;
    f.write_all(key.as_str().as_bytes()).map_err(io_err)?;
    f.write_all(b"\n").map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn group_or_world_readable_key_file_is_refused_with_reason() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o640, 0o604, 0o660, 0o644] {
            let p = write_mode(
                d.path(),
                &format!("k{mode:o}"),
                "0123456789abcdef0123",
                mode,
            );
            let err = load_key_file(&p).err().expect("must refuse");
            let msg = err.to_string();
            assert!(
                matches!(err, StoreError::KeyFilePermissions { .. }),
                "{msg}"
            );
            assert!(msg.contains("chmod 600"), "{msg}");
        }
        let ok = write_mode(d.path(), "ok", "0123456789abcdef0123\n", 0o600);
        assert_eq!(load_key_file(&ok).unwrap().as_str(), "0123456789abcdef0123");
        let ro = write_mode(d.path(), "ro", "0123456789abcdef0123", 0o400);
        assert!(load_key_file(&ro).is_ok());
    }

    #[test]
    fn short_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write_mode(d.path(), "short", "abc\n", 0o600);
        assert!(matches!(
            load_key_file(&p),
            Err(StoreError::KeyInvalid { .. })
        ));
    }

    #[test]
    fn no_source_is_refused_unless_demo() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("x.db");
        // The test process has no CREDENTIALS_DIRECTORY unless run under systemd.
        if std::env::var_os("CREDENTIALS_DIRECTORY").is_some() {
            return;
        }
        assert!(matches!(
            resolve_key(Path::new(""), &db, false),
            Err(StoreError::NoKey)
        ));
        let (k1, src) = resolve_key(Path::new(""), &db, true).unwrap();
        assert_eq!(src, KeySource::DemoGenerated(demo_key_path(&db)));
        let meta = std::fs::metadata(demo_key_path(&db)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second demo start reuses the same key.
        let (k2, _) = resolve_key(Path::new(""), &db, true).unwrap();
        assert_eq!(k1.as_str(), k2.as_str());
        assert_eq!(k1.as_str().len(), 64);
    }
}
