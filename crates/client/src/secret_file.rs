//! Reading a secret from a file that only its owner may read (the database key, a lock
//! key, an admin's key file). Refuses a file that is not regular or that group or others
//! can read. The checks are made on the opened file, so what is checked is what is read.

use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Why a secret file was not read. The text is a sentence saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("not a regular file")]
    NotRegular,
    #[error("readable by group or others (mode {mode:04o}); chmod 600 it")]
    Permissions { mode: u32 },
    #[error("{len} bytes; a secret file is at most {MAX_LEN} bytes")]
    TooLarge { len: u64 },
}

/// The largest secret file read (the biggest, an admin key file, is under 1 KiB).
pub const MAX_LEN: u64 = 64 * 1024;

/// The bytes of `path`, after checking it is a regular, owner-only file.
pub fn read_owner_only(path: &Path) -> Result<Zeroizing<Vec<u8>>, SecretFileError> {
    // Non-blocking, so a FIFO in its place is refused instead of waited on (it makes no
    // difference to reading a regular file).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(SecretFileError::NotRegular);
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Permissions { mode });
    }
    if meta.len() > MAX_LEN {
        return Err(SecretFileError::TooLarge { len: meta.len() });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    // Bounded even if the file grows after the check.
    f.take(MAX_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_LEN {
        return Err(SecretFileError::TooLarge {
            len: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_an_owner_only_regular_file_is_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        std::fs::write(&p, b"secret").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_owner_only(&p).unwrap_err();
        assert!(
            matches!(e, SecretFileError::Permissions { mode: 0o640 }),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&read_owner_only(&p).unwrap()[..], b"secret");
        assert!(matches!(
            read_owner_only(d.path()),
            Err(SecretFileError::NotRegular)
        ));
        assert!(matches!(
            read_owner_only(&d.path().join("missing")),
            Err(SecretFileError::Read(_))
        ));
        // A FIFO is refused at once, not waited on.
        let fifo = d.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_owner_only(&fifo),
            Err(SecretFileError::NotRegular)
        ));
        let big = d.path().join("big");
        std::fs::write(&big, vec![7u8; MAX_LEN as usize + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_owner_only(&big),
            Err(SecretFileError::TooLarge { .. })
        ));
    }
}
