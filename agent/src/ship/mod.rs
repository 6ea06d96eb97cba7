//! Shipping: closed windows become batches with a sequence number that never
//! goes back, wait in an [`Outbox`], and are sent oldest first, one at a time,
//! by [`Shipper::run`]. While the collector is unreachable the same batch is
//! retried with exponential backoff and jitter; the outbox keeps the rest
//! within its budget (oldest dropped first, counted). A batch the collector
//! refuses for good is dropped, counted by reason, and logged once per reason.

pub mod client;
pub mod queue;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ShipperConfig;
use crate::window::{FamilyKind, RecordError, Windows};
use client::{CollectorClient, PushError, RejectReason};
use queue::Outbox;

/// Exponential backoff with jitter: each delay is drawn from the upper half
/// of a ceiling that doubles from `initial` to `max`, so that a thousand
/// agents retrying at once spread out instead of arriving together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff between `initial` and `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + Duration::from_nanos(fastrand::u64(0..=half.as_nanos() as u64))
    }

    /// Back to the first delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The shipper's counters, shared with the flush that records them.
#[derive(Debug, Default)]
pub struct ShipStats {
    /// Batches created by the flush.
    pub created: AtomicU64,
    /// Batches the collector acknowledged.
    pub sent: AtomicU64,
    /// Acknowledged batches the collector had already applied.
    pub duplicates: AtomicU64,
    /// Send attempts that failed and will be retried.
    pub retries: AtomicU64,
    /// Batches refused for good, by [`RejectReason`].
    pub rejected: [AtomicU64; 3],
}

impl ShipStats {
    fn reject_slot(reason: RejectReason) -> usize {
        match reason {
            RejectReason::Unauthenticated => 0,
            RejectReason::PermissionDenied => 1,
            RejectReason::InvalidArgument => 2,
        }
    }

    /// Records the shipper's and the outbox's state as `vigil_agent_*` series.
    pub fn record(&self, outbox: &dyn Outbox, out: &mut Windows) -> Result<(), RecordError> {
        let counter =
            |out: &mut Windows, name: &str, help: &str, v: u64| -> Result<(), RecordError> {
                let f = out.family(name, help, FamilyKind::Counter)?;
                out.set(f, &[], v as f64)
            };
        counter(
            out,
            "vigil_agent_batches_created_total",
            "Batches created, one per flush.",
            self.created.load(Ordering::Relaxed),
        )?;
        counter(
            out,
            "vigil_agent_batches_sent_total",
            "Batches the collector acknowledged.",
            self.sent.load(Ordering::Relaxed),
        )?;
        counter(
            out,
            "vigil_agent_batches_duplicate_total",
            "Acknowledged batches the collector had already applied (a retry after a lost answer).",
            self.duplicates.load(Ordering::Relaxed),
        )?;
        counter(
            out,
            "vigil_agent_send_retries_total",
            "Send attempts that failed and were retried.",
            self.retries.load(Ordering::Relaxed),
        )?;
        let dropped = out.family(
            "vigil_agent_batches_dropped_total",
            "Batches dropped without delivery, by reason: outbox_full, or the collector's refusal.",
            FamilyKind::Counter,
        )?;
        out.set(
            dropped,
            &[("reason", "outbox_full")],
            outbox.dropped() as f64,
        )?;
        for reason in [
            RejectReason::Unauthenticated,
            RejectReason::PermissionDenied,
            RejectReason::InvalidArgument,
        ] {
            let v = self.rejected[Self::reject_slot(reason)].load(Ordering::Relaxed);
            out.set(dropped, &[("reason", reason.label())], v as f64)?;
        }
        let gauge =
            |out: &mut Windows, name: &str, help: &str, v: f64| -> Result<(), RecordError> {
                let f = out.family(name, help, FamilyKind::Gauge)?;
                out.set(f, &[], v)
            };
        gauge(
            out,
            "vigil_agent_outbox_batches",
            "Batches waiting for the collector.",
            outbox.len() as f64,
        )?;
        gauge(
            out,
            "vigil_agent_outbox_bytes",
            "Bytes of batches waiting for the collector.",
            outbox.bytes() as f64,
        )?;
        Ok(())
    }
}

/// Sends batches from an outbox to one collector.
pub struct Shipper {
    client: CollectorClient,
    outbox: Arc<dyn Outbox>,
    stats: Arc<ShipStats>,
    backoff: Backoff,
}

impl Shipper {
    /// A shipper over `outbox`.
    pub fn new(
        client: CollectorClient,
        outbox: Arc<dyn Outbox>,
        stats: Arc<ShipStats>,
        config: &ShipperConfig,
    ) -> Self {
        Self {
            client,
            outbox,
            stats,
            backoff: Backoff::new(config.retry_initial, config.retry_max),
        }
    }

    /// Sends until `finish` is cancelled and the outbox is empty. The caller
    /// bounds how long that may take after `finish`.
    pub async fn run(mut self, finish: CancellationToken) {
        let mut failing_since: Option<Instant> = None;
        let mut last_warning: Option<Instant> = None;
        let mut failed_attempts = 0u64;
        let mut rejections_logged = [false; 3];
        loop {
            let notified = self.outbox.notified();
            let Some(batch) = self.outbox.oldest() else {
                if finish.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = finish.cancelled() => {}
                }
                continue;
            };
            match self.client.push(batch.request.clone()).await {
                Ok(answer) => {
                    self.outbox.acknowledge(batch.sequence);
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    if answer.duplicate {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    self.backoff.reset();
                    if let Some(since) = failing_since.take() {
                        info!(
                            collector = self.client.endpoint(),
                            down_for = ?since.elapsed(),
                            failed_attempts,
                            waiting = self.outbox.len(),
                            "collector reachable again; sending what waited"
                        );
                        failed_attempts = 0;
                        last_warning = None;
                    }
                }
                Err(PushError::Reject { reason, message }) => {
                    self.outbox.discard(batch.sequence);
                    let slot = ShipStats::reject_slot(reason);
                    self.stats.rejected[slot].fetch_add(1, Ordering::Relaxed);
                    if !rejections_logged[slot] {
                        rejections_logged[slot] = true;
                        error!(
                            collector = self.client.endpoint(),
                            sequence = batch.sequence,
                            reason = reason.label(),
                            collector_says = %message,
                            "collector refused the batch; it is dropped (logged once per reason, counted in vigil_agent_batches_dropped_total)"
                        );
                    }
                }
                Err(PushError::Retry { message, after }) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    failed_attempts += 1;
                    failing_since.get_or_insert_with(Instant::now);
                    let now = Instant::now();
                    if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        last_warning = Some(now);
                        warn!(
                            collector = self.client.endpoint(),
                            error = %message,
                            waiting = self.outbox.len(),
                            "collector unreachable; keeping batches and retrying with backoff"
                        );
                    }
                    let delay = after.unwrap_or_else(|| self.backoff.next_delay());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[3] >= Duration::from_millis(400) && delays[3] <= Duration::from_millis(800));
        for d in &delays[5..] {
            assert!(
                *d >= Duration::from_secs(1) && *d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
