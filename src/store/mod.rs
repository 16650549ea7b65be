//! The encrypted store: users, face templates, OTP material, settings and the
//! hash-chained audit log in one SQLCipher database.
//!
//! In the daemon a single OS thread owns the connection ([`Store::open`]); other parts
//! send it closures over a channel and await the typed result ([`Store::call`]), so the
//! async runtime never blocks on disk and there is exactly one writer in the process.
//! The CLI may open a [`Db`] directly. Key handling lives in [`key`], the schema in
//! [`schema`], the hash chain in [`audit`].

pub mod audit;
pub mod db;
pub mod key;
pub mod lock_counters;
pub mod otp;
pub mod outbox;
pub mod schema;

pub use audit::{AuditEntry, AuditRow, Method, Outcome, VerifyReport};
pub use db::{CheckReport, Create, Db, OpenInfo, Template};
pub use key::{resolve_key, DbKey, KeySource};
pub use otp::{CodeRow, LockoutState, TotpRow};
pub use outbox::OutboxRow;

use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no database key: provide the systemd credential `db-key` (LoadCredential=), or set store.key_file / --key-file to an owner-only file (or use --demo for a throw-away key)")]
    NoKey,
    #[error("key file {path} is readable by group or others (mode {mode:04o}); refusing to use it: run `chmod 600 {path}`")]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    // The io errors are in the message, not `source`s: `{:#}` would print them twice.
    #[error("cannot read key file {path}: {error}")]
    KeyFileRead {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("key file {path} is not usable: {reason}")]
    KeyInvalid { path: PathBuf, reason: String },
    #[error("the key does not open the database {0} (wrong key, or not a lockerd database)")]
    WrongKey(PathBuf),
    #[error("no database at {0} (create it with `lockerd store init`)")]
    Missing(PathBuf),
    #[error("a database already exists at {0}")]
    AlreadyExists(PathBuf),
    #[error("database schema version {found} is newer than this lockerd supports ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("database is corrupt: {0}")]
    Corrupt(String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the store thread has stopped")]
    Closed,
    #[error("lockerd is running on {0}: use `lockerctl` to reach it (or stop it first)")]
    InUse(PathBuf),
}

type Job = Box<dyn FnOnce(&mut Db) + Send>;

enum Msg {
    Job(Job),
    Close,
}

/// Handle to the store thread. Cheap to clone; the thread ends when the last handle
/// is dropped (after finishing the jobs already queued) or at [`Store::close`], which the
/// daemon calls so the connection is closed before the process exits (SQLCipher's
/// crypto library must not be torn down under a live connection).
#[derive(Clone)]
pub struct Store {
    /// Set for [`Store::inline`]: jobs run on the caller's thread.
    inline: Option<std::sync::Arc<std::sync::Mutex<Option<Db>>>>,
    tx: std::sync::mpsc::Sender<Msg>,
    path: std::sync::Arc<PathBuf>,
    thread: std::sync::Arc<std::sync::Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Store {
    /// Open the database on a new thread. Errors (wrong key, missing file, ...) are
    /// returned here, before any handle exists.
    pub fn open(
        path: &Path,
        key: DbKey,
        create: Create,
        busy_timeout: Duration,
    ) -> Result<(Store, OpenInfo), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let owned = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || {
                let mut db = match Db::open(&owned, &key, create, busy_timeout) {
                    Ok((db, info)) => {
                        drop(key);
                        let _ = ready_tx.send(Ok(info));
                        db
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(msg) = rx.recv() {
                    match msg {
                        Msg::Job(job) => job(&mut db),
                        Msg::Close => break,
                    }
                }
                drop(db);
            })
            .map_err(|error| StoreError::Io {
                path: path.to_owned(),
                error,
            })?;
        let info = ready_rx.recv().map_err(|_| StoreError::Closed)??;
        Ok((
            Store {
                inline: None,
                tx,
                path: std::sync::Arc::new(path.to_owned()),
                thread: std::sync::Arc::new(std::sync::Mutex::new(Some(thread))),
            },
            info,
        ))
    }

    /// A store whose jobs run at once on the calling thread, under a mutex. For the
    /// simulator: on paused (virtual) time an await on another thread would let the
    /// clock jump, so nothing may wait on one.
    pub fn inline(db: Db) -> Store {
        let (tx, _) = std::sync::mpsc::channel();
        Store {
            path: std::sync::Arc::new(db.path().to_owned()),
            inline: Some(std::sync::Arc::new(std::sync::Mutex::new(Some(db)))),
            tx,
            thread: std::sync::Arc::new(std::sync::Mutex::new(None)),
        }
    }

    fn run_inline<R>(
        cell: &std::sync::Mutex<Option<Db>>,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut g = cell.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_mut() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }

    /// Finish the queued jobs, close the database and wait for the thread. Calls made
    /// after this fail with [`StoreError::Closed`].
    pub fn close(&self) {
        if let Some(cell) = &self.inline {
            drop(cell.lock().unwrap_or_else(|p| p.into_inner()).take());
            return;
        }
        let _ = self.tx.send(Msg::Close);
        let handle = match self.thread.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        };
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<R, F>(
        &self,
        f: F,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<R, StoreError>>, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    {
        let (rtx, rrx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Msg::Job(Box::new(move |db: &mut Db| {
                let _ = rtx.send(f(db));
            })))
            .map_err(|_| StoreError::Closed)?;
        Ok(rrx)
    }

    /// Run `f` on the store thread and await its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    {
        if let Some(cell) = &self.inline {
            return Self::run_inline(cell, f);
        }
        self.submit(f)?.await.map_err(|_| StoreError::Closed)?
    }

    /// Queue `f` on the store thread without waiting for it. Jobs run in the order they
    /// were queued, so any call queued after this returns sees its effect; a failure is
    /// logged (prefixed with `what`) on the store thread.
    pub fn enqueue<F>(&self, what: &'static str, f: F)
    where
        F: FnOnce(&mut Db) -> Result<(), StoreError> + Send + 'static,
    {
        let r = match &self.inline {
            Some(cell) => Self::run_inline(cell, f),
            None => self
                .tx
                .send(Msg::Job(Box::new(move |db: &mut Db| {
                    if let Err(e) = f(db) {
                        log::error!("{what}: {e}");
                    }
                })))
                .map_err(|_| StoreError::Closed),
        };
        if let Err(e) = r {
            log::error!("{what}: {e}");
        }
    }

    /// Run `f` on the store thread and block until it is done. Usable from any thread,
    /// including one that runs an async runtime (the access controller's own thread).
    pub fn call_sync<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Db) -> Result<R, StoreError> + Send + 'static,
    {
        if let Some(cell) = &self.inline {
            return Self::run_inline(cell, f);
        }
        let (rtx, rrx) = std::sync::mpsc::channel();
        self.tx
            .send(Msg::Job(Box::new(move |db: &mut Db| {
                let _ = rtx.send(f(db));
            })))
            .map_err(|_| StoreError::Closed)?;
        rrx.recv().map_err(|_| StoreError::Closed)?
    }
}

/// One process at a time owns a database: the daemon for its whole life, `lockerd
/// admin` for one command. An exclusive `flock` on `<db>.lock` (owner-only), released
/// when this is dropped or the process dies (kill -9 included).
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl InstanceLock {
    pub fn lock_path(db: &Path) -> PathBuf {
        let mut s = db.as_os_str().to_owned();
        s.push(".lock");
        PathBuf::from(s)
    }

    /// Take the lock or fail with [`StoreError::InUse`] at once (never waits).
    pub fn acquire(db: &Path) -> Result<InstanceLock, StoreError> {
        use std::os::unix::fs::OpenOptionsExt;
        use std::os::unix::io::AsRawFd;
        let path = Self::lock_path(db);
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !parent.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(|error| StoreError::Io {
                        path: parent.to_owned(),
                        error,
                    })?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|error| StoreError::Io {
                path: path.clone(),
                error,
            })?;
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                StoreError::InUse(db.to_owned())
            } else {
                StoreError::Io { path, error: err }
            });
        }
        Ok(InstanceLock { _file: file, path })
    }
}

use std::os::unix::fs::DirBuilderExt;

/// A store in `dir` (created on first use) for unit tests.
#[cfg(test)]
pub(crate) fn test_db(dir: &std::path::Path) -> Db {
    let k = DbKey::from_text("store unit test key 0123456789", std::path::Path::new("t"))
        .expect("test key");
    Db::open(
        &dir.join("t.db"),
        &k,
        Create::IfMissing,
        std::time::Duration::from_secs(5),
    )
    .expect("test store")
    .0
}
