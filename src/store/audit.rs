//! Audit records and their hash chain.
//!
//! Every row carries `prev_hash` (the previous row's `hash`, 32 zero bytes for the first)
//! and `hash = SHA-256(domain tag, seq, ts_ms, method, outcome, user, reason, evidence,
//! prev_hash)`, each field length-prefixed. Editing, deleting or reordering a row breaks
//! the chain at that row, which [`verify_rows`] reports. Appending the chain anew after
//! the last row needs the database key; see README "Audit log" for what that leaves.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use lockerd_core::types::Method;

/// What came of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Grant,
    Deny,
    Alert,
    Info,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Grant => "grant",
            Outcome::Deny => "deny",
            Outcome::Alert => "alert",
            Outcome::Info => "info",
        }
    }
}

/// A record to append. `evidence` holds distances, liveness, etc., never a secret.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub method: Method,
    pub outcome: Outcome,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub reason: String,
    pub evidence: serde_json::Value,
}

impl AuditEntry {
    pub fn new(method: Method, outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            method,
            outcome,
            user_id: None,
            user_name: None,
            reason: reason.into(),
            evidence: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn user(mut self, id: i64, name: &str) -> Self {
        self.user_id = Some(id);
        self.user_name = Some(name.to_owned());
        self
    }

    pub fn evidence(mut self, evidence: serde_json::Value) -> Self {
        self.evidence = evidence;
        self
    }
}

/// A stored row, as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    pub seq: i64,
    pub ts_ms: i64,
    pub method: String,
    pub outcome: String,
    pub user_id: Option<i64>,
    pub user_name: Option<String>,
    pub reason: String,
    /// JSON text exactly as stored (and hashed).
    pub evidence: String,
    #[serde(serialize_with = "ser_hex")]
    pub prev_hash: Vec<u8>,
    #[serde(serialize_with = "ser_hex")]
    pub hash: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

pub const GENESIS: [u8; 32] = [0u8; 32];
const DOMAIN: &[u8] = b"lockerd-audit-v1\0";

/// The chain hash of one row's content.
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    seq: i64,
    ts_ms: i64,
    method: &str,
    outcome: &str,
    user_id: Option<i64>,
    user_name: Option<&str>,
    reason: &str,
    evidence: &str,
    prev_hash: &[u8],
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(seq.to_be_bytes());
    h.update(ts_ms.to_be_bytes());
    let mut field = |b: &[u8]| {
        h.update((b.len() as u32).to_be_bytes());
        h.update(b);
    };
    field(method.as_bytes());
    field(outcome.as_bytes());
    match user_id {
        Some(id) => field(&id.to_be_bytes()),
        None => field(b""),
    }
    match user_name {
        Some(n) => field(n.as_bytes()),
        None => field(b"\xff"),
    }
    field(reason.as_bytes());
    field(evidence.as_bytes());
    field(prev_hash);
    h.finalize().into()
}

impl AuditRow {
    pub fn computed_hash(&self) -> [u8; 32] {
        row_hash(
            self.seq,
            self.ts_ms,
            &self.method,
            &self.outcome,
            self.user_id,
            self.user_name.as_deref(),
            &self.reason,
            &self.evidence,
            &self.prev_hash,
        )
    }
}

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    pub rows: u64,
    pub ok: bool,
    /// The first row whose link is broken, and why.
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
    #[serde(serialize_with = "ser_hex")]
    pub head_hash: Vec<u8>,
}

/// Incremental verifier: feed rows in `seq` order.
pub struct ChainVerifier {
    expected_prev: Vec<u8>,
    expected_seq: Option<i64>,
    rows: u64,
    broken: Option<(i64, String)>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_prev: GENESIS.to_vec(),
            expected_seq: None,
            rows: 0,
            broken: None,
        }
    }
}

impl ChainVerifier {
    /// Returns false once a broken link has been found (the caller may stop).
    pub fn push(&mut self, row: &AuditRow) -> bool {
        if self.broken.is_some() {
            return false;
        }
        self.rows += 1;
        if let Some(seq) = self.expected_seq {
            if row.seq != seq {
                self.broken = Some((
                    row.seq,
                    format!("row {} follows row {}: rows are missing", row.seq, seq - 1),
                ));
                return false;
            }
        }
        if row.prev_hash != self.expected_prev {
            self.broken = Some((
                row.seq,
                "prev_hash does not match the previous row's hash (a row before it was changed or removed)"
                    .into(),
            ));
            return false;
        }
        if row.computed_hash().as_slice() != row.hash.as_slice() {
            self.broken = Some((
                row.seq,
                "row content does not match its hash (the row was edited)".into(),
            ));
            return false;
        }
        self.expected_prev = row.hash.clone();
        self.expected_seq = Some(row.seq + 1);
        true
    }

    pub fn finish(self) -> VerifyReport {
        let ok = self.broken.is_none();
        let (first_broken_seq, problem) = match self.broken {
            Some((s, p)) => (Some(s), Some(p)),
            None => (None, None),
        };
        VerifyReport {
            rows: self.rows,
            ok,
            first_broken_seq,
            problem,
            head_hash: self.expected_prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRow> {
        let mut prev = GENESIS.to_vec();
        (1..=n)
            .map(|seq| {
                let mut r = AuditRow {
                    seq,
                    ts_ms: 1000 + seq,
                    method: "face".into(),
                    outcome: "deny".into(),
                    user_id: None,
                    user_name: None,
                    reason: format!("r{seq}"),
                    evidence: "{}".into(),
                    prev_hash: prev.clone(),
                    hash: vec![],
                };
                r.hash = r.computed_hash().to_vec();
                prev = r.hash.clone();
                r
            })
            .collect()
    }

    fn verify(rows: &[AuditRow]) -> VerifyReport {
        let mut v = ChainVerifier::default();
        for r in rows {
            if !v.push(r) {
                break;
            }
        }
        v.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let rep = verify(&chain(5));
        assert!(rep.ok);
        assert_eq!(rep.rows, 5);
    }

    #[test]
    fn edit_delete_and_reorder_are_caught_at_the_right_row() {
        let mut rows = chain(5);
        rows[2].reason = "granted".into();
        let rep = verify(&rows);
        assert_eq!(rep.first_broken_seq, Some(3));

        let mut rows = chain(5);
        rows.remove(1);
        assert_eq!(verify(&rows).first_broken_seq, Some(3));

        let mut rows = chain(5);
        rows.swap(3, 4);
        assert_eq!(verify(&rows).first_broken_seq, Some(5));

        // Changing the user of a row changes its hash too.
        let mut rows = chain(3);
        rows[0].user_name = Some("mallory".into());
        assert_eq!(verify(&rows).first_broken_seq, Some(1));
    }
}
