//! Reading a secret from a file that only its owner may read (a lock key, an admin's
//! key file). Refuses a file that is not regular or that group or others can read.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// The bytes of `path`, after checking it is a regular, owner-only file. The error is
/// a sentence saying what to do.
pub fn read_owner_only(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("readable by group or others; chmod 600 it".into());
    }
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| e.to_string())
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
        assert!(read_owner_only(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(&read_owner_only(&p).unwrap()[..], b"secret");
        assert!(read_owner_only(d.path()).is_err());
        assert!(read_owner_only(&d.path().join("missing")).is_err());
    }
}
