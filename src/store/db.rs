//! `Db`: one open SQLCipher connection and the typed operations on it.
//!
//! Only the store thread holds a `Db` in the daemon; the CLI holds one directly. Every
//! method is synchronous and returns a typed [`StoreError`].

use super::audit::{AuditEntry, AuditRow, ChainVerifier, VerifyReport, GENESIS};
use super::key::DbKey;
use super::schema;
use super::StoreError;
use crate::types::{now_ms, Embedding, EmbeddingModel, Role, User, UserId};
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether opening may create the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// The file must exist (`store check`, admin commands).
    MustExist,
    /// Create an empty store when the file is absent (`run`).
    IfMissing,
    /// The file must not exist yet (`store init`).
    MustBeNew,
}

#[derive(Debug, Clone, Serialize)]
pub struct OpenInfo {
    pub created: bool,
    /// Wall time of open + key derivation + first read + migrations.
    pub open_ms: f64,
    pub schema_version: i64,
    /// The append-only triggers were missing and have been re-created (tampering).
    pub triggers_restored: bool,
}

/// A stored face template.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: i64,
    pub user_id: UserId,
    pub embedding: Embedding,
    /// The network that made `embedding`.
    pub model: EmbeddingModel,
    pub quality: f32,
    pub source: String,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub path: PathBuf,
    pub schema_version: i64,
    pub integrity: String,
    pub cipher_integrity: String,
    pub users: i64,
    pub templates: i64,
    pub audit_rows: i64,
    /// `ok`, or where and why the hash chain breaks (cut tails included).
    pub audit_chain: String,
    pub open_ms: f64,
    pub ok: bool,
}

pub struct Db {
    conn: Connection,
    path: PathBuf,
}

fn is_not_a_db(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::NotADatabase)
}

impl Db {
    /// Open (or create) the encrypted database with `key`. A wrong key is
    /// [`StoreError::WrongKey`]; SQLCipher's own stderr logging is silenced first.
    pub fn open(
        path: &Path,
        key: &DbKey,
        create: Create,
        busy_timeout: Duration,
    ) -> Result<(Db, OpenInfo), StoreError> {
        let t0 = Instant::now();
        let exists = path.exists();
        // An existing file must be a store: an empty one would otherwise be taken as a
        // new store (anyone who can write the file, without the key, could erase users,
        // history and lockouts). Creating a store is explicit: `store init`, or `run` on
        // a path that does not exist.
        if exists {
            let meta = std::fs::metadata(path).map_err(|error| StoreError::Io {
                path: path.to_owned(),
                error,
            })?;
            if !meta.is_file() {
                return Err(StoreError::Corrupt(format!(
                    "{} is not a regular file",
                    path.display()
                )));
            }
            if meta.len() == 0 {
                return Err(StoreError::Corrupt(format!(
                    "{} is an empty file, not a lockerd store (refusing to treat it as a new one; restore it from a backup, or remove it and run `lockerd store init`)",
                    path.display()
                )));
            }
        }
        match (create, exists) {
            (Create::MustExist, false) => return Err(StoreError::Missing(path.to_owned())),
            (Create::MustBeNew, true) => return Err(StoreError::AlreadyExists(path.to_owned())),
            _ => {}
        }
        if !exists {
            if let Some(parent) = path.parent() {
                if !parent.as_os_str().is_empty() {
                    // Owner-only whatever the umask (the key and WAL live here too).
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
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if !exists {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(path, flags)?;
        if !exists {
            // Owner-only from the start; SQLite gives -wal/-shm the same mode.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |error| StoreError::Io {
                    path: path.to_owned(),
                    error,
                },
            )?;
        }
        // Must come before the key, or SQLCipher prints its HMAC failure on stderr.
        conn.execute_batch("PRAGMA cipher_log_level = NONE;")?;
        conn.pragma_update(None, "key", key.as_str())?;
        match conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        }) {
            Ok(_) => {}
            Err(e) if is_not_a_db(&e) => return Err(StoreError::WrongKey(path.to_owned())),
            Err(e) => return Err(e.into()),
        }
        conn.busy_timeout(busy_timeout)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA temp_store = MEMORY;
             PRAGMA secure_delete = ON;",
        )?;
        schema::migrate(&mut conn)?;
        let schema_version = schema::version(&conn)?;
        let mut db = Db {
            conn,
            path: path.to_owned(),
        };
        let restored = db.ensure_audit_triggers()?;
        if !restored.is_empty() {
            log::error!(
                "the audit log's append-only triggers were missing ({}): re-created; someone with the key changed the database",
                restored.join(", ")
            );
            db.audit_append(
                &AuditEntry::new(
                    super::Method::System,
                    super::Outcome::Alert,
                    "audit_triggers_restored",
                )
                .evidence(serde_json::json!({ "missing": restored })),
            )?;
        }
        let info = OpenInfo {
            created: !exists,
            open_ms: t0.elapsed().as_secs_f64() * 1000.0,
            schema_version,
            triggers_restored: !restored.is_empty(),
        };
        Ok((db, info))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw connection, for tests and the few maintenance paths that need it.
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Cheap liveness probe used by the watchdog.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// `store check`: key, schema version, SQLite and SQLCipher integrity.
    pub fn check(&self, open_ms: f64) -> Result<CheckReport, StoreError> {
        let integrity: String = self
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        let mut stmt = self.conn.prepare("PRAGMA cipher_integrity_check")?;
        let problems: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        let cipher_integrity = if problems.is_empty() {
            "ok".to_string()
        } else {
            problems.join("; ")
        };
        let count = |t: &str| -> Result<i64, StoreError> {
            Ok(self
                .conn
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?)
        };
        let schema_version = schema::version(&self.conn)?;
        let chain = self.audit_verify()?;
        let audit_chain = if chain.ok {
            "ok".to_string()
        } else {
            format!(
                "BROKEN at row {}: {}",
                chain.first_broken_seq.unwrap_or(0),
                chain.problem.unwrap_or_default()
            )
        };
        let ok = integrity == "ok"
            && cipher_integrity == "ok"
            && chain.ok
            && schema_version == schema::SCHEMA_VERSION;
        Ok(CheckReport {
            path: self.path.clone(),
            schema_version,
            integrity,
            cipher_integrity,
            users: count("users")?,
            templates: count("face_templates")?,
            audit_rows: count("audit")?,
            audit_chain,
            open_ms,
            ok,
        })
    }

    /// Change the passphrase. SQLCipher cannot rekey in WAL mode, so the journal is
    /// switched to DELETE for the rekey and back afterwards.
    pub fn rekey(&mut self, new_key: &DbKey) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))?;
        if mode != "delete" {
            return Err(StoreError::Invalid(format!(
                "cannot leave WAL mode for the rekey (journal_mode is {mode}); is another process using the database?"
            )));
        }
        self.conn.pragma_update(None, "rekey", new_key.as_str())?;
        self.conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))?;
        Ok(())
    }

    // ----- users -----

    pub fn add_user(&mut self, name: &str, role: Role) -> Result<User, StoreError> {
        validate_name(name)?;
        let created_ms = now_ms();
        let res = self.conn.execute(
            "INSERT INTO users (name, role, enabled, created_ms) VALUES (?1, ?2, 1, ?3)",
            params![name, role.as_str(), created_ms],
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(f, _))
                if f.code == ErrorCode::ConstraintViolation =>
            {
                return Err(StoreError::Conflict(format!(
                    "user '{name}' already exists"
                )))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(User {
            id: self.conn.last_insert_rowid(),
            name: name.to_owned(),
            role,
            enabled: true,
            created_ms,
        })
    }

    fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
        let role: String = r.get(2)?;
        Ok(User {
            id: r.get(0)?,
            name: r.get(1)?,
            role: Role::parse(&role).unwrap_or(Role::Banned),
            enabled: r.get::<_, i64>(3)? != 0,
            created_ms: r.get(4)?,
        })
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, role, enabled, created_ms FROM users WHERE name = ?1",
                [name],
                Self::user_from_row,
            )
            .optional()?)
    }

    pub fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, name, role, enabled, created_ms FROM users WHERE id = ?1",
                [id],
                Self::user_from_row,
            )
            .optional()?)
    }

    /// The user or a [`StoreError::NotFound`] naming it.
    pub fn require_user(&self, name: &str) -> Result<User, StoreError> {
        self.user_by_name(name)?
            .ok_or_else(|| StoreError::NotFound(format!("no user named '{name}'")))
    }

    pub fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, name, role, enabled, created_ms FROM users ORDER BY id")?;
        let rows = stmt.query_map([], Self::user_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_role(&mut self, name: &str, role: Role) -> Result<User, StoreError> {
        let n = self.conn.execute(
            "UPDATE users SET role = ?1 WHERE name = ?2",
            params![role.as_str(), name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no user named '{name}'")));
        }
        self.require_user(name)
    }

    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<User, StoreError> {
        let n = self.conn.execute(
            "UPDATE users SET enabled = ?1 WHERE name = ?2",
            params![enabled as i64, name],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("no user named '{name}'")));
        }
        self.require_user(name)
    }

    /// Remove a user and (by cascade) their templates and OTP material.
    pub fn remove_user(&mut self, name: &str) -> Result<User, StoreError> {
        let user = self.require_user(name)?;
        self.conn
            .execute("DELETE FROM users WHERE id = ?1", [user.id])?;
        Ok(user)
    }

    // ----- face templates -----

    /// Add one template made by the current model ([`EmbeddingModel::CURRENT`]).
    pub fn add_template(
        &mut self,
        user_id: UserId,
        embedding: &Embedding,
        quality: f32,
        source: &str,
    ) -> Result<i64, StoreError> {
        let item = [(embedding.clone(), quality, source.to_owned())];
        let ids = self.add_templates_of(user_id, EmbeddingModel::CURRENT, &item)?;
        ids.first()
            .copied()
            .ok_or_else(|| StoreError::Corrupt("no template id".into()))
    }

    /// Add several templates made by the current model for one user in one transaction
    /// (all or nothing).
    pub fn add_templates(
        &mut self,
        user_id: UserId,
        items: &[(Embedding, f32, String)],
    ) -> Result<Vec<i64>, StoreError> {
        self.add_templates_of(user_id, EmbeddingModel::CURRENT, items)
    }

    /// Add several templates made by `model` for one user in one transaction.
    pub fn add_templates_of(
        &mut self,
        user_id: UserId,
        model: EmbeddingModel,
        items: &[(Embedding, f32, String)],
    ) -> Result<Vec<i64>, StoreError> {
        self.atomically(|db| {
            let mut ids = Vec::with_capacity(items.len());
            let mut stmt = db.conn.prepare(
                "INSERT INTO face_templates (user_id, embedding, quality, source, created_ms, model)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (e, q, src) in items {
                stmt.execute(params![
                    user_id,
                    e.to_bytes(),
                    *q as f64,
                    src,
                    now_ms(),
                    model.as_str()
                ])?;
                ids.push(db.conn.last_insert_rowid());
            }
            Ok(ids)
        })
    }

    pub fn templates(&self) -> Result<Vec<Template>, StoreError> {
        self.query_templates("", [])
    }

    /// Every template of one user, with its model, oldest first.
    pub fn templates_of(&self, user_id: UserId) -> Result<Vec<Template>, StoreError> {
        self.query_templates("WHERE user_id = ?1", [user_id])
    }

    fn query_templates<P: rusqlite::Params>(
        &self,
        filter: &str,
        params: P,
    ) -> Result<Vec<Template>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT id, user_id, embedding, quality, source, created_ms, model FROM face_templates {filter} ORDER BY id"
        ))?;
        let rows = stmt.query_map(params, |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, f64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, user_id, blob, quality, source, created_ms, model) = row?;
            let embedding = Embedding::from_bytes(&blob).ok_or_else(|| {
                StoreError::Corrupt(format!("face template {id} has a malformed embedding"))
            })?;
            let model = EmbeddingModel::parse(&model).ok_or_else(|| {
                StoreError::Corrupt(format!("face template {id} names no known model"))
            })?;
            out.push(Template {
                id,
                user_id,
                embedding,
                model,
                quality: quality as f32,
                source,
                created_ms,
            });
        }
        Ok(out)
    }

    /// A user's templates made by `model`.
    pub fn template_count_of(
        &self,
        user_id: UserId,
        model: EmbeddingModel,
    ) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM face_templates WHERE user_id = ?1 AND model = ?2",
            params![user_id, model.as_str()],
            |r| r.get(0),
        )?)
    }

    pub fn template_count(&self, user_id: UserId) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM face_templates WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )?)
    }

    // ----- settings -----

    /// The version of `user`'s fleet record applied here, if any.
    pub fn fleet_version(&self, user: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT version FROM fleet_records WHERE user = ?1",
                [user],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Record that `user`'s fleet record `version`, signed by `key_id`, is applied here,
    /// and whether it keeps them here.
    pub fn fleet_set_version(
        &mut self,
        user: &str,
        version: i64,
        key_id: &str,
        kept: bool,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO fleet_records (user, version, key_id, kept) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (user) DO UPDATE SET version = excluded.version,
                 key_id = excluded.key_id, kept = excluded.kept",
            rusqlite::params![user, version, key_id, kept],
        )?;
        Ok(())
    }

    /// Whether `user` is here through the fleet (their last record keeps them).
    pub fn fleet_user(&self, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT kept FROM fleet_records WHERE user = ?1",
                [user],
                |r| r.get::<_, bool>(0),
            )
            .optional()?
            .unwrap_or(false))
    }

    /// Replace every template of one user with `items` (model, embedding, quality,
    /// source), in one transaction.
    pub fn replace_templates(
        &mut self,
        user_id: UserId,
        items: &[(EmbeddingModel, Embedding, f32, String)],
    ) -> Result<(), StoreError> {
        self.atomically(|db| {
            db.conn
                .execute("DELETE FROM face_templates WHERE user_id = ?1", [user_id])?;
            let mut models: Vec<EmbeddingModel> = Vec::new();
            for (m, ..) in items {
                if !models.contains(m) {
                    models.push(*m);
                }
            }
            for model in models {
                let of_model: Vec<_> = items
                    .iter()
                    .filter(|i| i.0 == model)
                    .map(|(_, e, q, src)| (e.clone(), *q, src.clone()))
                    .collect();
                db.add_templates_of(user_id, model, &of_model)?;
            }
            Ok(())
        })
    }

    /// The highest fleet record version applied here (0 when none).
    pub fn fleet_head(&self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT COALESCE(MAX(version), 0) FROM fleet_records",
            [],
            |r| r.get(0),
        )?)
    }

    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Run `f` in one IMMEDIATE transaction: a change and its audit row commit
    /// together or not at all.
    pub fn atomically<R>(
        &mut self,
        f: impl FnOnce(&mut Db) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if !self.conn.is_autocommit() {
            return f(self);
        }
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(r) => {
                if let Err(e) = self.conn.execute_batch("COMMIT") {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(e.into());
                }
                Ok(r)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    // ----- audit -----

    /// Append one record to the hash chain. Durable (synchronous=FULL) when it returns.
    pub fn audit_append(&mut self, entry: &AuditEntry) -> Result<i64, StoreError> {
        let evidence = serde_json::to_string(&entry.evidence)
            .map_err(|e| StoreError::Invalid(format!("audit evidence: {e}")))?;
        let ts_ms = now_ms();
        // IMMEDIATE: take the write lock before reading the head, so two processes
        // (daemon and CLI) can never fork the chain. Inside [`Db::atomically`] the
        // outer transaction already holds it and commits this row with the change.
        if !self.conn.is_autocommit() {
            return Self::audit_insert(&self.conn, entry, &evidence, ts_ms);
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq = Self::audit_insert(&tx, entry, &evidence, ts_ms)?;
        tx.commit()?;
        Ok(seq)
    }

    fn audit_insert(
        tx: &Connection,
        entry: &AuditEntry,
        evidence: &str,
        ts_ms: i64,
    ) -> Result<i64, StoreError> {
        let head: Option<(i64, Vec<u8>)> = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (seq, prev) = match head {
            Some((s, h)) => (s + 1, h),
            None => (1, GENESIS.to_vec()),
        };
        let hash = super::audit::row_hash(
            seq,
            ts_ms,
            entry.method.as_str(),
            entry.outcome.as_str(),
            entry.user_id,
            entry.user_name.as_deref(),
            &entry.reason,
            evidence,
            &prev,
        );
        tx.execute(
            "INSERT INTO audit (seq, ts_ms, method, outcome, user_id, user_name, reason, evidence, prev_hash, hash)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                seq,
                ts_ms,
                entry.method.as_str(),
                entry.outcome.as_str(),
                entry.user_id,
                entry.user_name,
                entry.reason,
                evidence,
                prev,
                hash.to_vec()
            ],
        )?;
        // The head moves only along an intact end: if it does not name the row this one
        // follows (rows were cut, or the head removed), it stays, so the cut keeps
        // showing in `audit verify` until someone looks into it.
        let recorded: Option<String> = tx
            .query_row(
                "SELECT value FROM settings WHERE key = 'audit_head'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let follows = match &recorded {
            None => seq == 1,
            Some(h) => *h == format!("{}:{}", seq - 1, hex::encode_upper(&prev)),
        };
        if follows {
            tx.execute(
                "INSERT OR REPLACE INTO settings (key, value) VALUES ('audit_head', ?1)",
                [format!("{seq}:{}", hex::encode_upper(hash))],
            )?;
        }
        Ok(seq)
    }

    fn audit_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRow> {
        Ok(AuditRow {
            seq: r.get(0)?,
            ts_ms: r.get(1)?,
            method: r.get(2)?,
            outcome: r.get(3)?,
            user_id: r.get(4)?,
            user_name: r.get(5)?,
            reason: r.get(6)?,
            evidence: r.get(7)?,
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        })
    }

    /// Rows with `ts_ms >= since_ms`, oldest first, at most `limit` (newest kept).
    pub fn audit_list(&self, since_ms: i64, limit: usize) -> Result<Vec<AuditRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, ts_ms, method, outcome, user_id, user_name, reason, evidence, prev_hash, hash
             FROM audit WHERE ts_ms >= ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![since_ms, limit as i64], Self::audit_from_row)?;
        let mut out: Vec<AuditRow> = rows.collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// The recorded head of the audit chain: the seq and upper-case hex hash of the last
    /// row written through [`Db::audit_append`] (a malformed record reads as seq -1).
    pub fn audit_head(&self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self.setting("audit_head")?.map(|h| {
            let (seq, hash) = h.split_once(':').unwrap_or(("", ""));
            (seq.parse().unwrap_or(-1), hash.to_owned())
        }))
    }

    /// Is there a row with this hash (at this seq, when given)? Checks a head published
    /// earlier (`lockerd audit verify --against`).
    pub fn audit_contains(&self, seq: Option<i64>, hash: &[u8]) -> Result<bool, StoreError> {
        let n: i64 = match seq {
            Some(s) => self.conn.query_row(
                "SELECT count(*) FROM audit WHERE seq = ?1 AND hash = ?2",
                params![s, hash],
                |r| r.get(0),
            )?,
            None => self.conn.query_row(
                "SELECT count(*) FROM audit WHERE hash = ?1",
                params![hash],
                |r| r.get(0),
            )?,
        };
        Ok(n > 0)
    }

    pub fn audit_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))?)
    }

    /// Walk the whole chain and report the first broken link.
    pub fn audit_verify(&self) -> Result<VerifyReport, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT seq, ts_ms, method, outcome, user_id, user_name, reason, evidence, prev_hash, hash
             FROM audit ORDER BY seq",
        )?;
        let mut rows = stmt.query([])?;
        let mut v = ChainVerifier::default();
        let mut last: Option<(i64, Vec<u8>)> = None;
        while let Some(r) = rows.next()? {
            let row = Self::audit_from_row(r)?;
            last = Some((row.seq, row.hash.clone()));
            if !v.push(&row) {
                break;
            }
        }
        let mut rep = v.finish();
        if rep.ok {
            // The rows link up; do they reach the recorded head?
            let head = self.audit_head()?;
            let problem = match (head, &last) {
                (None, None) => None,
                (None, Some((seq, _))) => Some((
                    *seq,
                    "the chain's head record is missing (it was removed)".to_string(),
                )),
                (Some((hseq, hhash)), last) => {
                    match last {
                        Some((seq, hash))
                            if *seq == hseq && hex::encode_upper(hash) == hhash => None,
                        Some((seq, _)) => Some((
                            *seq,
                            format!(
                                "the chain ends at row {seq} but its head is row {hseq}: rows were cut from the end"
                            ),
                        )),
                        None => Some((
                            0,
                            format!("no rows, but the head is row {hseq}: the log was emptied"),
                        )),
                    }
                }
            };
            if let Some((seq, p)) = problem {
                rep.ok = false;
                rep.first_broken_seq = Some(seq);
                rep.problem = Some(p);
            }
        }
        Ok(rep)
    }

    /// The append-only triggers, re-created if someone dropped them. Returns which
    /// were missing (the caller reports it: it is evidence of tampering).
    pub fn ensure_audit_triggers(&mut self) -> Result<Vec<&'static str>, StoreError> {
        let mut missing = Vec::new();
        for (name, sql) in [
            (
                "audit_no_update",
                "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
            ),
            (
                "audit_no_delete",
                "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
                 BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;",
            ),
        ] {
            let n: i64 = self.conn.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [name],
                |r| r.get(0),
            )?;
            if n == 0 {
                self.conn.execute_batch(sql)?;
                missing.push(name);
            }
        }
        Ok(missing)
    }
}

/// User names are a safe set (README "Users"): 1-64 of ASCII letters, digits, space,
/// `.`, `_`, `-`, `@`, starting and ending with a letter or digit. No look-alikes
/// (Cyrillic "а" for "a"), no invisible or direction-changing characters (U+200B,
/// U+202E), so a name in a log or on the display is what it seems.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || " ._-@".contains(c);
    let n = name.chars().count();
    let ends_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if n == 0 || n > 64 || !name.chars().all(ok_char) || !ends_ok {
        return Err(StoreError::Invalid(format!(
            "user name {:?}: use 1-64 of A-Z a-z 0-9 space . _ - @, starting and ending with a letter or digit",
            name.escape_default().to_string()
        )));
    }
    Ok(())
}
