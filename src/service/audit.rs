//! The audit log through the API: rows since a time, and the chain check. Part of the
//! serving task ([`super::Service`]).

use super::*;

impl Service {
    /// `audit list`.
    pub(super) async fn audit_query(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Response, ApiError> {
        let limit = limit.clamp(1, 10_000) as usize;
        let rows = self
            .b
            .store
            .call(move |db| db.audit_list(since_ms, limit))
            .await?;
        Ok(Response::Audit {
            rows: rows.iter().map(AuditItem::from).collect(),
        })
    }

    /// `audit verify`.
    pub(super) async fn audit_verify(&self) -> Result<Response, ApiError> {
        let v = self.b.store.call(|db| db.audit_verify()).await?;
        Ok(Response::AuditCheck(AuditCheck::from(&v)))
    }
}
