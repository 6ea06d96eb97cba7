//! Prometheus remote_write 1.0 out of the collector, to distributed stores
//! (VictoriaMetrics, Mimir, Thanos Receive, Cortex, Prometheus's receiver).
//!
//! Every sample the collector writes into its history (agents' batches,
//! histogram windows as `_bucket`/`_sum`/`_count`, recording rules,
//! `ALERTS`, stale markers) reaches [`QueueTap`] in the order written, and
//! goes into a queue on disk ([`queue`]); each `[[remote_write]]`
//! destination drains the queue with its own durable cursor ([`sender`]).
//! What a store acknowledged is never sent again after a restart, but for
//! the round in flight; an outage lasts as long as the queue's
//! `max_bytes` holds.

pub mod native;
pub mod prompb;
pub mod queue;
pub mod relabel;
pub mod sender;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prompb::{Label, Sample, TimeSeries, WriteRequest};
use queue::Queue;

/// Hands the history's samples to the queue.
#[derive(Debug)]
pub struct QueueTap {
    queue: Arc<Queue>,
    /// Batches replayed from the write-ahead log at or before this position
    /// are in the queue already.
    skip_through: u64,
    /// The newest sample time handed on (ms).
    pub highest_ms: Arc<AtomicI64>,
    /// Records that could not be written (counted, logged once).
    pub failures: Arc<AtomicU64>,
    /// Running native histograms, when a destination takes them.
    native: Option<Mutex<native::NativeHistograms>>,
}

impl QueueTap {
    /// A tap into `queue`; `highest_ms` follows the newest sample and
    /// `failures` counts records that could not be written.
    pub fn new(queue: Arc<Queue>, highest_ms: Arc<AtomicI64>, failures: Arc<AtomicU64>) -> Self {
        let skip_through = queue.last_log_position();
        Self {
            queue,
            skip_through,
            highest_ms,
            failures,
            native: None,
        }
    }

    /// Also queues each histogram window as a native histogram
    /// ([`native`]), for the destinations with `native_histograms = true`.
    pub fn with_native_histograms(mut self) -> Self {
        self.native = Some(Mutex::new(native::NativeHistograms::new()));
        self
    }
}

impl vigil_store::Tap for QueueTap {
    fn wants_windows(&self) -> bool {
        self.native.is_some()
    }

    fn written(
        &self,
        wal_position: u64,
        samples: Vec<vigil_store::WrittenSample>,
        windows: Vec<vigil_store::WrittenWindow>,
    ) {
        if wal_position > 0 && wal_position <= self.skip_through {
            return;
        }
        let mut newest = i64::MIN;
        let label_list = |labels: Vec<(String, String)>| -> Vec<Label> {
            labels
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect()
        };
        let mut timeseries: Vec<TimeSeries> = samples
            .into_iter()
            .map(|(labels, t, v)| {
                newest = newest.max(t);
                TimeSeries {
                    labels: label_list(labels),
                    samples: vec![Sample {
                        value: v,
                        timestamp: t,
                    }],
                    histograms: Vec::new(),
                }
            })
            .collect();
        if let Some(native) = &self.native {
            let mut native = native
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (labels, t, window) in windows {
                match native.add(&labels, t, &window) {
                    Ok(histogram) => timeseries.push(TimeSeries {
                        labels: label_list(labels),
                        samples: Vec::new(),
                        histograms: vec![histogram],
                    }),
                    // Validated on arrival; a window that does not decode
                    // here is a bug, logged and skipped.
                    Err(e) => {
                        tracing::error!(error = %e, "remote_write: a histogram window is not sent as a native histogram")
                    }
                }
            }
        }
        let request = WriteRequest { timeseries };
        self.highest_ms.fetch_max(newest, Ordering::Relaxed);
        if let Err(e) = self.queue.append(wal_position, &request)
            && self.failures.fetch_add(1, Ordering::Relaxed) == 0
        {
            tracing::error!(error = %e, "remote_write: cannot write the queue; these samples will not be sent (counted in vigil_collector_remote_write_queue_write_failures_total; logged once)");
        }
    }
}
