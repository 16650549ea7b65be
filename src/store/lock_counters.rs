//! The counters of each ESP32 lock link (`lock_proto::Counters`), persisted so that after
//! a restart of the daemon no command counter is reused and no old report is accepted.
//! Each field is only ever raised (`max`), whatever order writes arrive in.

use super::{Db, StoreError};
use lock_proto::Counters;
use rusqlite::{params, OptionalExtension};

/// Counters are u64 on the wire and i64 in SQLite: anything above i64::MAX is refused
/// (2^63 frames is beyond any lock's life).
fn to_sql(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("lock counter {v} out of range")))
}

impl Db {
    pub fn lock_counters_load(&self, lock_id: &str) -> Result<Counters, StoreError> {
        let row: Option<(i64, i64)> = self
            .conn()
            .query_row(
                "SELECT reserved, seen FROM lock_counters WHERE lock_id = ?1",
                [lock_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row
            .map(|(r, s)| Counters {
                reserved: r.max(0) as u64,
                seen: s.max(0) as u64,
            })
            .unwrap_or_default())
    }

    /// Raise the stored counters to at least `c` (durable when it returns).
    pub fn lock_counters_save(&mut self, lock_id: &str, c: Counters) -> Result<(), StoreError> {
        let (r, s) = (to_sql(c.reserved)?, to_sql(c.seen)?);
        self.conn().execute(
            "INSERT INTO lock_counters (lock_id, reserved, seen) VALUES (?1, ?2, ?3)
             ON CONFLICT (lock_id) DO UPDATE SET
                reserved = max(reserved, excluded.reserved),
                seen = max(seen, excluded.seen)",
            params![lock_id, r, s],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::test_db;
    use lock_proto::Counters;

    #[test]
    fn counters_only_go_up_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut db = test_db(d.path());
        assert_eq!(db.lock_counters_load("door1").unwrap(), Counters::default());
        let c = |reserved, seen| Counters { reserved, seen };
        db.lock_counters_save("door1", c(64, 5)).unwrap();
        // A write with a lower field never lowers it.
        db.lock_counters_save("door1", c(128, 3)).unwrap();
        db.lock_counters_save("other", c(1, 1)).unwrap();
        assert!(db.lock_counters_save("door1", c(u64::MAX, 9)).is_err());
        drop(db);
        let db = test_db(d.path());
        assert_eq!(db.lock_counters_load("door1").unwrap(), c(128, 5));
        assert_eq!(db.lock_counters_load("other").unwrap(), c(1, 1));
    }
}
