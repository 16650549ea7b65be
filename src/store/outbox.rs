//! The MQTT outbox: secret-free events waiting for the broker. Rows are written before
//! an event is broadcast, in the transaction of its audit row where it has one
//! (`api::event::Pending`), else by the event bus (`api::event::EventBus`); read in `seq` order
//! by the MQTT publisher and deleted when the broker has acknowledged them (PUBACK). The
//! table is bounded: past [`Db::outbox_push`]'s `max`, the oldest tenth goes and one
//! alert row says how many and which numbers, so a dead broker cannot fill the disk.

use super::{Db, StoreError};
use rusqlite::params;

/// One waiting event. `body` is the event's JSON object without its `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub seq: i64,
    pub at_ms: i64,
    pub alert: bool,
    pub body: String,
}

/// The largest event published as it is; a larger row goes out as a stand-in that keeps
/// its place in the sequence (the MQTT client refuses packets over 1 MiB, and one row it
/// could never send blocked every row after it, for good).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

impl OutboxRow {
    /// The published payload: the body with `"seq"` first; a row over [`MAX_EVENT_BYTES`]
    /// as `{"seq": N, "event": "dropped", "reason": "too_large", "bytes": LEN}`.
    pub fn payload(&self) -> String {
        let full = self.full_payload();
        if full.len() <= MAX_EVENT_BYTES {
            return full;
        }
        log::warn!(
            "outbox: event {} is {} bytes (at most {MAX_EVENT_BYTES}): sent as a stand-in",
            self.seq,
            full.len()
        );
        serde_json::json!({
            "seq": self.seq,
            "event": "dropped",
            "reason": "too_large",
            "bytes": full.len(),
        })
        .to_string()
    }

    fn full_payload(&self) -> String {
        match self.body.strip_prefix('{') {
            Some(rest) if rest.trim_start().starts_with('}') => {
                format!("{{\"seq\":{}}}", self.seq)
            }
            Some(rest) => format!("{{\"seq\":{},{rest}", self.seq),
            None => format!("{{\"seq\":{},\"body\":{:?}}}", self.seq, self.body),
        }
    }
}

impl Db {
    /// Queue events (at_ms, is_alert, JSON object) in one transaction. Past `max` rows
    /// the oldest tenth is dropped and an alert row says so. Returns the numbers given.
    pub fn outbox_push(
        &mut self,
        events: &[(i64, bool, String)],
        max: usize,
    ) -> Result<Vec<i64>, StoreError> {
        let max = max.max(10) as i64;
        self.atomically(|db| {
            let mut seqs = Vec::with_capacity(events.len());
            for (at_ms, alert, body) in events {
                db.conn().execute(
                    "INSERT INTO outbox (at_ms, alert, body) VALUES (?1, ?2, ?3)",
                    params![at_ms, *alert as i64, body],
                )?;
                seqs.push(db.conn().last_insert_rowid());
            }
            let n: i64 = db
                .conn()
                .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
            if n > max {
                // Earlier "outbox full" alerts still waiting are merged into this one, so
                // the first ranges dropped are never lost with them: one such alert waits
                // at a time, covering every event dropped since the last one was sent.
                let (mut merged, mut first_ever) = (0i64, None::<i64>);
                {
                    let mut st = db.conn().prepare(
                        "SELECT seq, body FROM outbox WHERE overflow = 1",
                    )?;
                    let earlier = st
                        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (seq, body) in earlier {
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                        merged += v["detail"]["outbox_dropped"].as_i64().unwrap_or(0);
                        if let Some(f) = v["detail"]["first_seq"].as_i64() {
                            first_ever = Some(first_ever.map_or(f, |e: i64| e.min(f)));
                        }
                        db.conn().execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
                    }
                }
                let n: i64 = db
                    .conn()
                    .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
                let drop_n = (n - max + max / 10).max(0);
                let (first, last): (Option<i64>, Option<i64>) = db.conn().query_row(
                    "SELECT min(seq), max(seq) FROM
                        (SELECT seq FROM outbox ORDER BY seq LIMIT ?1)",
                    [drop_n],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                if let Some(last) = last {
                    db.conn()
                        .execute("DELETE FROM outbox WHERE seq <= ?1", [last])?;
                }
                let total = merged + drop_n;
                let first = first_ever.into_iter().chain(first).min().unwrap_or_default();
                let last = last.unwrap_or(first);
                let at_ms = events.last().map(|e| e.0).unwrap_or_default();
                let body = serde_json::json!({
                    "at_ms": at_ms,
                    "event": "alert",
                    "alert": {
                        "kind": "fault",
                        "message": format!(
                            "the MQTT outbox is full ({max} events): {total} events between \
                             seq {first} and {last} dropped; the audit log still has them"
                        ),
                    },
                    "detail": {"outbox_dropped": total, "first_seq": first, "last_seq": last},
                });
                db.conn().execute(
                    "INSERT INTO outbox (at_ms, alert, overflow, body) VALUES (?1, 1, 1, ?2)",
                    params![at_ms, body.to_string()],
                )?;
                log::warn!(
                    "mqtt outbox full: {drop_n} oldest events dropped ({total} between seq {first} and {last} since the last alert was sent)"
                );
            }
            Ok(seqs)
        })
    }

    /// Up to `limit` waiting events with `seq > after`, oldest first.
    pub fn outbox_after(&self, after: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let mut st = self.conn().prepare_cached(
            "SELECT seq, at_ms, alert, body FROM outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st.query_map(params![after, limit as i64], |r| {
            Ok(OutboxRow {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                alert: r.get::<_, i64>(2)? != 0,
                body: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forget acknowledged events.
    pub fn outbox_delete(&mut self, seqs: &[i64]) -> Result<(), StoreError> {
        self.atomically(|db| {
            for s in seqs {
                db.conn()
                    .execute("DELETE FROM outbox WHERE seq = ?1", [s])?;
            }
            Ok(())
        })
    }

    pub fn outbox_len(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn()
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?)
    }
}

#[cfg(test)]
mod tests {
    use super::OutboxRow;

    #[test]
    fn a_row_too_large_to_send_keeps_its_place_and_blocks_nothing() {
        let row = |body: String| OutboxRow {
            seq: 42,
            at_ms: 0,
            alert: false,
            body,
        };
        let small = row(r#"{"event":"unlock"}"#.into());
        assert_eq!(small.payload(), r#"{"seq":42,"event":"unlock"}"#);
        // A 2 MB reason, as the red team sent before requests were bounded.
        let big = row(format!(
            r#"{{"event":"unlock","reason":"{}"}}"#,
            "r".repeat(2_000_000)
        ));
        let p = big.payload();
        assert!(p.len() < 200, "{p}");
        let v: serde_json::Value = serde_json::from_str(&p).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(v["event"], "dropped");
        assert_eq!(v["reason"], "too_large");
    }

    use crate::store::test_db as db;

    fn ev(i: i64) -> (i64, bool, String) {
        (i, false, format!("{{\"at_ms\":{i},\"event\":\"unlock\"}}"))
    }

    #[test]
    fn numbers_are_never_given_twice_and_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut db = db(d.path());
            assert_eq!(db.outbox_push(&[ev(1), ev(2)], 100).unwrap(), vec![1, 2]);
            db.outbox_delete(&[1, 2]).unwrap();
            assert_eq!(db.outbox_push(&[ev(3)], 100).unwrap(), vec![3]);
        }
        let mut db = db(d.path());
        let rows = db.outbox_after(0, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].payload(),
            "{\"seq\":3,\"at_ms\":3,\"event\":\"unlock\"}"
        );
        assert_eq!(db.outbox_push(&[ev(4)], 100).unwrap(), vec![4]);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_says_so() {
        let d = tempfile::tempdir().unwrap();
        let mut db = db(d.path());
        for i in 0..100 {
            db.outbox_push(&[ev(i)], 50).unwrap();
        }
        let n = db.outbox_len().unwrap();
        assert!(n <= 51, "bounded: {n}");
        let rows = db.outbox_after(0, 1000).unwrap();
        let alerts: Vec<_> = rows.iter().filter(|r| r.alert).collect();
        assert!(!alerts.is_empty());
        let v: serde_json::Value = serde_json::from_str(&alerts[0].payload()).unwrap();
        assert_eq!(v["alert"]["kind"], "fault");
        assert!(v["detail"]["outbox_dropped"].as_i64().unwrap() > 0);
        // The newest event is always kept, and the order is the order of writing.
        assert_eq!(rows.last().unwrap().body, ev(99).2);
        assert!(rows.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    /// Red team #25 ("also seen"): the alerts for the earliest dropped ranges were dropped
    /// themselves by later overflows. One alert waits, covering every drop since seq 1.
    #[test]
    fn the_outbox_full_alert_is_never_itself_dropped() {
        let d = tempfile::tempdir().unwrap();
        let mut db = db(d.path());
        for i in 0..500 {
            db.outbox_push(&[ev(i)], 10).unwrap();
        }
        let rows = db.outbox_after(0, 1000).unwrap();
        assert!(rows.len() <= 11, "bounded: {}", rows.len());
        let alerts: Vec<serde_json::Value> = rows
            .iter()
            .filter(|r| r.alert)
            .map(|r| serde_json::from_str(&r.payload()).unwrap())
            .collect();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0]["detail"]["first_seq"], 1, "{alerts:?}");
        let kept = rows.iter().filter(|r| !r.alert).count() as i64;
        // Every event pushed is either still waiting or counted as dropped.
        assert_eq!(
            alerts[0]["detail"]["outbox_dropped"].as_i64().unwrap() + kept,
            500,
            "{alerts:?}"
        );
    }

    /// The "outbox full" alert is a marked row: another alert that merely has the same
    /// words in it is neither merged into it nor deleted.
    #[test]
    fn an_alert_that_only_looks_like_the_outbox_full_alert_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let mut db = db(d.path());
        for i in 0..20 {
            db.outbox_push(&[ev(i)], 20).unwrap();
        }
        let lookalike = r#"{"at_ms":20,"event":"alert","detail":{"outbox_dropped":1000}}"#;
        let seq = db.outbox_push(&[(20, true, lookalike.into())], 20).unwrap()[0];
        let rows = db.outbox_after(0, 1000).unwrap();
        assert!(rows.iter().any(|r| r.seq == seq), "kept: {rows:?}");
        let full: Vec<serde_json::Value> = rows
            .iter()
            .filter(|r| r.alert && r.seq != seq)
            .map(|r| serde_json::from_str(&r.payload()).unwrap())
            .collect();
        assert_eq!(full.len(), 1, "{full:?}");
        let dropped = full[0]["detail"]["outbox_dropped"].as_i64().unwrap();
        assert!(dropped < 20, "not merged with the look-alike: {dropped}");
    }
}
