//! Online garbage collection. The algorithm, and why it cannot delete a blob that a push is
//! using, is written down in ARCHITECTURE.md ("Registry garbage collection").

use std::sync::atomic::Ordering;

use crate::storage::meta::MetaError;
use crate::Registry;

#[derive(Debug, Default)]
pub struct GcReport {
    pub blobs_deleted: usize,
    pub uploads_expired: usize,
}

impl Registry {
    /// One full pass: expire idle upload sessions, then sweep unreferenced blobs.
    pub fn collect_garbage(&self) -> Result<GcReport, MetaError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut report = GcReport::default();

        for id in self
            .meta
            .expire_uploads(now - self.config.gc.upload_expiry as i64)?
        {
            self.sessions.forget(&id);
            self.backend.delete_upload(&id)?;
            report.uploads_expired += 1;
        }
        // Files with no session row: a session cancelled or expired by a process that died
        // before the file went, or a manifest PUT's staging file. The latter is live for
        // milliseconds, so only files idle longer than the grace period are touched.
        let idle_before = std::time::SystemTime::now()
            - std::time::Duration::from_secs(self.config.gc.grace.max(60));
        for (id, modified) in self.backend.list_uploads()? {
            if modified < idle_before && self.meta.upload(&id)?.is_none() {
                self.backend.delete_upload(&id)?;
            }
        }

        let deleted = self
            .meta
            .sweep(now - self.config.gc.grace as i64, self.backend.as_ref())?;
        report.blobs_deleted = deleted.len();
        self.metrics.gc_runs.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .gc_blobs_deleted
            .fetch_add(deleted.len() as u64, Ordering::Relaxed);
        tracing::info!(
            blobs_deleted = report.blobs_deleted,
            uploads_expired = report.uploads_expired,
            "garbage collection"
        );
        Ok(report)
    }
}
