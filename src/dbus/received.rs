//! Files an enrolling caller sends as open descriptors (`EnrollFromOpenFiles`). The
//! daemon cannot see the caller's home or /tmp (the unit's `ProtectHome=`,
//! `PrivateTmp=`), and reading through the caller's own descriptors means it reads only
//! what the caller could. Each file is copied, bounded, into a private directory under
//! the daemon's temporary directory; the copies go when the [`Received`] is dropped
//! (the D-Bus layer keeps it until the job has ended).

use crate::api::ApiError;
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many files in one call: the system bus's `max_message_unix_fds`.
pub const MAX_FILES: usize = 16;
/// Each file at most this large (a few minutes of camera video).
pub const MAX_FILE_BYTES: u64 = 256 << 20;

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The private copies; removed on drop.
#[derive(Debug)]
pub struct Received {
    dir: PathBuf,
    pub paths: Vec<PathBuf>,
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            log::warn!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The extension of `name` the decoders go by (photo or clip), if it is a plain one.
fn extension(name: &str) -> Option<String> {
    let ext = Path::new(name).extension()?.to_str()?;
    (ext.len() <= 8 && ext.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| ext.to_ascii_lowercase())
}

/// Copy `files` (named by `names`, for their type only) into a new private directory
/// under `base`.
pub fn receive(
    base: &Path,
    names: &[String],
    files: Vec<std::os::fd::OwnedFd>,
) -> Result<Received, ApiError> {
    if files.is_empty() || files.len() > MAX_FILES {
        return Err(ApiError::InvalidArgument(format!(
            "{} files; give 1 to {MAX_FILES} in one enrollment",
            files.len()
        )));
    }
    if names.len() != files.len() {
        return Err(ApiError::InvalidArgument(format!(
            "{} names for {} files",
            names.len(),
            files.len()
        )));
    }
    let dir = base.join(format!(
        "lockerd-enroll-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| ApiError::Internal(format!("cannot make {}: {e}", dir.display())))?;
    let mut got = Received {
        dir,
        paths: Vec::new(),
    };
    for (i, (name, fd)) in names.iter().zip(files).enumerate() {
        let what = crate::timefmt::printable(name);
        let file = format!(
            "{i:02}{}",
            extension(name).map(|e| format!(".{e}")).unwrap_or_default()
        );
        let path = got.dir.join(file);
        let mut src = std::fs::File::from(fd).take(MAX_FILE_BYTES + 1);
        let mut dst = std::fs::File::create(&path)
            .map_err(|e| ApiError::Internal(format!("cannot copy {what}: {e}")))?;
        let n = std::io::copy(&mut src, &mut dst)
            .map_err(|e| ApiError::InvalidArgument(format!("cannot read {what}: {e}")))?;
        if n > MAX_FILE_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "{what} is larger than {} MiB",
                MAX_FILE_BYTES >> 20
            )));
        }
        got.paths.push(path);
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(path: &Path) -> std::os::fd::OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn copies_keep_the_type_and_go_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("alice.JPG");
        std::fs::write(&a, b"photo").unwrap();
        let names = vec!["/home/x/alice.JPG".to_string(), "clip.mp4".into()];
        let r = receive(d.path(), &names, vec![fd(&a), fd(&a)]).unwrap();
        assert_eq!(r.paths.len(), 2);
        assert!(r.paths[0].to_string_lossy().ends_with("00.jpg"));
        assert!(r.paths[1].to_string_lossy().ends_with("01.mp4"));
        assert_eq!(std::fs::read(&r.paths[0]).unwrap(), b"photo");
        let dir = r.paths[0].parent().unwrap().to_owned();
        drop(r);
        assert!(!dir.exists());
    }

    #[test]
    fn counts_and_names_are_checked_and_a_failure_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.png");
        std::fs::write(&a, b"x").unwrap();
        assert!(receive(d.path(), &[], vec![]).is_err());
        assert!(receive(d.path(), &["a.png".into()], vec![fd(&a), fd(&a)]).is_err());
        let many: Vec<_> = (0..=MAX_FILES).map(|_| fd(&a)).collect();
        let names = vec!["a.png".to_string(); MAX_FILES + 1];
        assert!(receive(d.path(), &names, many).is_err());
        // A directory descriptor cannot be read: an error, and no copy left behind.
        let dirfd = fd(d.path());
        assert!(receive(d.path(), &["x.png".into()], vec![dirfd]).is_err());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("lockerd-enroll")
            })
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(extension("a.tar.gz").as_deref(), Some("gz"));
        assert_eq!(extension("noext"), None);
        assert_eq!(extension("x.\u{1F600}"), None);
    }
}
