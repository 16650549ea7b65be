//! Versioned schema migrations, applied in order inside one transaction each.
//!
//! The schema version is SQLite's `user_version`. A database newer than this binary is
//! refused rather than guessed at. Append new migrations; never edit a released one.

use super::StoreError;
use rusqlite::Connection;

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // v1: users, face templates, OTP material, audit log, settings.
    r#"
    CREATE TABLE users (
        id          INTEGER PRIMARY KEY,
        name        TEXT    NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 64),
        role        TEXT    NOT NULL CHECK (role IN ('user', 'admin', 'banned')),
        enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        keypad_no   INTEGER UNIQUE CHECK (keypad_no BETWEEN 1 AND 999),
        created_ms  INTEGER NOT NULL
    );
    CREATE TABLE face_templates (
        id          INTEGER PRIMARY KEY,
        user_id     INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        embedding   BLOB    NOT NULL CHECK (length(embedding) = 512),
        quality     REAL    NOT NULL,
        source      TEXT    NOT NULL,
        created_ms  INTEGER NOT NULL
    );
    CREATE INDEX face_templates_user ON face_templates(user_id);
    -- Per-user TOTP (RFC 6238). last_step is the highest time step ever accepted, so a
    -- code is never accepted twice. The keypad PIN is stored as a salted hash.
    CREATE TABLE totp_secrets (
        user_id     INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        secret      BLOB    NOT NULL,
        pin_salt    BLOB    NOT NULL,
        pin_hash    BLOB    NOT NULL,
        last_step   INTEGER NOT NULL DEFAULT -1,
        created_ms  INTEGER NOT NULL
    );
    -- Admin-issued one-time codes: only a salted hash is stored; single use via used_ms.
    CREATE TABLE one_time_codes (
        id          INTEGER PRIMARY KEY,
        slot        INTEGER NOT NULL CHECK (slot BETWEEN 1 AND 99),
        user_id     INTEGER REFERENCES users(id) ON DELETE CASCADE,
        salt        BLOB    NOT NULL,
        code_hash   BLOB    NOT NULL,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        used_ms     INTEGER
    );
    CREATE INDEX one_time_codes_slot ON one_time_codes(slot);
    -- Append-only, hash-chained audit log (see store/audit.rs for the hash).
    CREATE TABLE audit (
        seq         INTEGER PRIMARY KEY,
        ts_ms       INTEGER NOT NULL,
        method      TEXT    NOT NULL,
        outcome     TEXT    NOT NULL,
        user_id     INTEGER,
        user_name   TEXT,
        reason      TEXT    NOT NULL,
        evidence    TEXT    NOT NULL,
        prev_hash   BLOB    NOT NULL,
        hash        BLOB    NOT NULL
    );
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
    CREATE TABLE settings (
        key         TEXT PRIMARY KEY,
        value       TEXT NOT NULL
    );
    "#,
    // v2: the audit chain's head (seq and hash of the last row), written in the same
    // transaction as every row from now on, so cutting rows off the end shows.
    r#"
    INSERT OR REPLACE INTO settings (key, value)
        SELECT 'audit_head', seq || ':' || hex(hash) FROM audit ORDER BY seq DESC LIMIT 1;
    "#,
    // v3: nonces of signed MQTT commands seen within the skew window (replay guard that
    // survives a restart).
    r#"
    CREATE TABLE mqtt_nonces (
        key_id      TEXT    NOT NULL,
        nonce       BLOB    NOT NULL,
        ts          INTEGER NOT NULL,
        PRIMARY KEY (key_id, nonce)
    ) WITHOUT ROWID;
    CREATE INDEX mqtt_nonces_ts ON mqtt_nonces (ts);
    "#,
    // v4: the MQTT outbox: secret-free events waiting for the broker's PUBACK. seq is
    // AUTOINCREMENT so a number is never given twice, even after the rows are deleted.
    r#"
    CREATE TABLE outbox (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms       INTEGER NOT NULL,
        alert       INTEGER NOT NULL CHECK (alert IN (0, 1)),
        body        TEXT    NOT NULL
    );
    "#,
    // v5: the counters of each ESP32 lock link (lock-proto): the reservation of command
    // counters and the last report counter accepted. Only ever raised.
    r#"
    CREATE TABLE lock_counters (
        lock_id     TEXT    PRIMARY KEY,
        reserved    INTEGER NOT NULL CHECK (reserved >= 0),
        seen        INTEGER NOT NULL CHECK (seen >= 0)
    ) WITHOUT ROWID;
    "#,
    // v6: the embedding model that made each template. Every template written before
    // is dlib's ResNet; new ones are SFace (types::EmbeddingModel).
    r#"
    ALTER TABLE face_templates ADD COLUMN model TEXT NOT NULL DEFAULT 'dlib_resnet_v1'
        CHECK (model IN ('dlib_resnet_v1', 'sface_2021dec'));
    "#,
    // v7: the version of each fleet user record applied here (lockerd_client::fleet), and
    // the admin key that signed it: a record must rise above it. Kept after a removal, so
    // a replayed older record cannot bring a removed user back.
    r#"
    CREATE TABLE fleet_records (
        user        TEXT    PRIMARY KEY CHECK (length(user) BETWEEN 1 AND 64),
        version     INTEGER NOT NULL CHECK (version > 0),
        key_id      TEXT    NOT NULL
    ) WITHOUT ROWID;
    "#,
    // v8: whether the last fleet record applied keeps the user at this kiosk: a kept
    // user is a fleet user, whose face opens only while the directory is current.
    r#"
    ALTER TABLE fleet_records ADD COLUMN kept INTEGER NOT NULL DEFAULT 0
        CHECK (kept IN (0, 1));
    UPDATE fleet_records SET kept = (user IN (SELECT name FROM users));
    "#,
    // v9: which outbox row is the "outbox full" alert (one waits at a time, merged with
    // the next), marked, not found by its text. Rows written before are marked once here.
    r#"
    ALTER TABLE outbox ADD COLUMN overflow INTEGER NOT NULL DEFAULT 0
        CHECK (overflow IN (0, 1));
    UPDATE outbox SET overflow = 1 WHERE alert = 1 AND body LIKE '%"outbox_dropped"%';
    "#,
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

pub fn version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Bring the schema up to [`SCHEMA_VERSION`]. Returns the version found before.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Bring the schema up to `target` (at most [`SCHEMA_VERSION`]); tests use it to write a
/// store as an older release did. Returns the version found before.
pub fn migrate_to(conn: &mut Connection, target: i64) -> Result<i64, StoreError> {
    let found = version(conn)?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    let upto = target.clamp(0, SCHEMA_VERSION) as usize;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .take(upto)
        .skip(found as usize)
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        log::info!("store schema migrated to version {}", i + 1);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// v9 marks the "outbox full" alerts already waiting, and nothing else.
    #[test]
    fn v9_marks_the_waiting_outbox_full_alert() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_to(&mut conn, 8).unwrap();
        for (alert, body) in [
            (
                1,
                r#"{"event":"alert","detail":{"outbox_dropped":5,"first_seq":1}}"#,
            ),
            (1, r#"{"event":"alert","alert":{"kind":"fault"}}"#),
            (0, r#"{"event":"unlock"}"#),
        ] {
            conn.execute(
                "INSERT INTO outbox (at_ms, alert, body) VALUES (0, ?1, ?2)",
                rusqlite::params![alert, body],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), 8);
        let marked: Vec<i64> = conn
            .prepare("SELECT overflow FROM outbox ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(marked, [1, 0, 0]);
    }
}
