//! Ingest: the door agents push through. Authentication and limits are
//! checked here, before anything reaches the store; every refusal has a gRPC
//! code the agent can act on (retry or drop) and a counter.

pub mod auth;
pub mod commit;
pub mod grpc;
pub mod limits;

use std::sync::atomic::{AtomicU64, Ordering};

use vigil_shared::exposition::ExpositionWriter;
use vigil_shared::exposition::MetricKind;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No token, or a wrong one.
    Unauthenticated,
    /// The token belongs to another agent.
    PermissionDenied,
    /// A series or window breaks a rule or a limit.
    InvalidArgument,
    /// A rate limit: the agent waits and tries again.
    ResourceExhausted,
}

impl RejectReason {
    const ALL: [RejectReason; 4] = [
        RejectReason::Unauthenticated,
        RejectReason::PermissionDenied,
        RejectReason::InvalidArgument,
        RejectReason::ResourceExhausted,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::Unauthenticated => "unauthenticated",
            RejectReason::PermissionDenied => "permission_denied",
            RejectReason::InvalidArgument => "invalid_argument",
            RejectReason::ResourceExhausted => "resource_exhausted",
        }
    }
}

/// The ingest path's counters.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; 4],
    series_applied: AtomicU64,
    series_conflicts: AtomicU64,
    series_reserved: AtomicU64,
    out_of_order: AtomicU64,
    wal_failures: AtomicU64,
    wal_appends: AtomicU64,
    /// Syncs of the write-ahead log (fewer than appends when pushes share one).
    pub wal_syncs: AtomicU64,
}

impl IngestMetrics {
    /// Counts an applied push.
    pub fn accepted(&self, series: u64) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.series_applied.fetch_add(series, Ordering::Relaxed);
    }

    /// Counts a push that had been applied before.
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refused push.
    pub fn rejected(&self, reason: RejectReason) {
        let i = RejectReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.rejected[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts series skipped for a kind conflict or a reserved name.
    pub fn skipped(&self, conflicts: u64, reserved: u64) {
        self.series_conflicts
            .fetch_add(conflicts, Ordering::Relaxed);
        self.series_reserved.fetch_add(reserved, Ordering::Relaxed);
    }

    /// Counts samples the history refused as out of order.
    pub fn out_of_order(&self, n: u64) {
        self.out_of_order.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a batch appended to the log, and the sync it did, if it did one.
    pub fn wal_appended(&self, synced: bool) {
        self.wal_appends.fetch_add(1, Ordering::Relaxed);
        if synced {
            self.wal_syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a background sync of the log (`wal_fsync = "interval"`).
    pub fn wal_appended_sync_only(&self, synced: bool) {
        if synced {
            self.wal_syncs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a push refused because the write-ahead log could not be written.
    pub fn wal_failed(&self) {
        self.wal_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Writes the counters as `vigil_collector_*` families.
    pub fn write(&self, w: &mut ExpositionWriter) {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        w.header(
            "vigil_collector_pushes_total",
            "Pushes answered with success, by result: applied, or duplicate (acknowledged, applied before).",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_pushes_total",
            "",
            "result=\"applied\"",
            None,
            load(&self.accepted),
        );
        w.sample(
            "vigil_collector_pushes_total",
            "",
            "result=\"duplicate\"",
            None,
            load(&self.duplicates),
        );
        w.header(
            "vigil_collector_pushes_rejected_total",
            "Pushes refused, by reason.",
            MetricKind::Counter,
        );
        for (reason, n) in RejectReason::ALL.iter().zip(&self.rejected) {
            let labels = format!("reason=\"{}\"", reason.label());
            w.sample(
                "vigil_collector_pushes_rejected_total",
                "",
                &labels,
                None,
                load(n),
            );
        }
        w.header(
            "vigil_collector_series_applied_total",
            "Series written to the store.",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_series_applied_total",
            "",
            "",
            None,
            load(&self.series_applied),
        );
        w.header(
            "vigil_collector_series_skipped_total",
            "Series not stored, by reason: kind_conflict (the family exists with another type or bucket ladder), reserved_name (vigil_collector_ prefix).",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_series_skipped_total",
            "",
            "reason=\"kind_conflict\"",
            None,
            load(&self.series_conflicts),
        );
        w.sample(
            "vigil_collector_series_skipped_total",
            "",
            "reason=\"reserved_name\"",
            None,
            load(&self.series_reserved),
        );
        w.header(
            "vigil_collector_samples_out_of_order_total",
            "Samples not added to the history because they were not newer than the series' last one.",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_samples_out_of_order_total",
            "",
            "",
            None,
            load(&self.out_of_order),
        );
        w.header(
            "vigil_collector_wal_failures_total",
            "Pushes refused (UNAVAILABLE, retried by the agent) because the write-ahead log could not be written.",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_wal_failures_total",
            "",
            "",
            None,
            load(&self.wal_failures),
        );
        for (name, help, v) in [
            (
                "vigil_collector_wal_appends_total",
                "Batches appended to the write-ahead log.",
                &self.wal_appends,
            ),
            (
                "vigil_collector_wal_syncs_total",
                "Syncs of the write-ahead log; with store.wal_fsync = \"always\", concurrent pushes share one (group commit).",
                &self.wal_syncs,
            ),
        ] {
            w.header(name, help, MetricKind::Counter);
            w.sample(name, "", "", None, load(v));
        }
    }
}
