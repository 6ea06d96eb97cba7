//! Shipping: closed windows become batches with a sequence number that never
//! goes back (kept in the [`spool::Spool`] across restarts), are written to
//! the spool, and are sent oldest first, one at a time per collector, by
//! [`Shipper::run`]. While a collector is unreachable the same batch is
//! retried with exponential backoff and jitter, or, in fail-over mode, sent to
//! the next collector at once; a backlog is replayed at a bounded rate. A batch
//! a collector refuses for good is dropped, counted by reason, and logged once
//! per reason.

pub mod client;
pub mod spool;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::ShipperConfig;
use crate::window::{FamilyKind, RecordError, Windows};
use client::{CollectorClient, PushError, RejectReason};
use spool::Spool;

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
    /// Batches a collector acknowledged.
    pub sent: AtomicU64,
    /// Acknowledged batches the collector had already applied.
    pub duplicates: AtomicU64,
    /// Send attempts that failed and will be retried.
    pub retries: AtomicU64,
    /// Batches sent from a backlog (more than one waiting), paced.
    pub replayed: AtomicU64,
    /// Switches from one collector to another (fail-over mode).
    pub switches: AtomicU64,
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

    /// Records the shipper's and the spool's state as `vigil_agent_*` series.
    pub fn record(&self, spool: &Spool, out: &mut Windows) -> Result<(), RecordError> {
        let counter =
            |out: &mut Windows, name: &str, help: &str, v: u64| -> Result<(), RecordError> {
                let f = out.family(name, help, FamilyKind::Counter)?;
                out.set(f, &[], v as f64)
            };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, help, v) in [
            (
                "vigil_agent_batches_created_total",
                "Batches created, one per flush.",
                load(&self.created),
            ),
            (
                "vigil_agent_batches_sent_total",
                "Batches a collector acknowledged.",
                load(&self.sent),
            ),
            (
                "vigil_agent_batches_duplicate_total",
                "Acknowledged batches the collector had already applied (a retry after a lost answer).",
                load(&self.duplicates),
            ),
            (
                "vigil_agent_send_retries_total",
                "Send attempts that failed and were retried.",
                load(&self.retries),
            ),
            (
                "vigil_agent_spool_replayed_batches_total",
                "Batches sent from a backlog (after an outage or a restart), at most shipper.replay_max_per_second.",
                load(&self.replayed),
            ),
            (
                "vigil_agent_collector_switches_total",
                "Switches from one collector to another in fail-over mode.",
                load(&self.switches),
            ),
            (
                "vigil_agent_spool_dropped_batches_total",
                "Batches dropped, oldest first, because the spool was at max_spool_bytes (or, with the disk failing, max_memory_bytes).",
                load(&spool.counters.dropped),
            ),
            (
                "vigil_agent_spool_corrupt_records_total",
                "Spool records skipped because their checksum or length was wrong (a crash in mid-write).",
                load(&spool.counters.corrupt),
            ),
            (
                "vigil_agent_spool_write_errors_total",
                "Spool writes that failed (disk full, read-only); the batch was kept in memory.",
                load(&spool.counters.write_errors),
            ),
            (
                "vigil_agent_spool_recovered_batches_total",
                "Batches found in the spool at start, from the previous run.",
                load(&spool.counters.recovered),
            ),
        ] {
            counter(out, name, help, v)?;
        }
        let dropped = out.family(
            "vigil_agent_batches_dropped_total",
            "Batches dropped without delivery, by reason: spool_full, or the collector's refusal.",
            FamilyKind::Counter,
        )?;
        out.set(
            dropped,
            &[("reason", "spool_full")],
            load(&spool.counters.dropped) as f64,
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
            "vigil_agent_spool_batches",
            "Batches in the spool: not yet acknowledged by every collector they go to.",
            spool.len() as f64,
        )?;
        let (disk, memory) = spool.bytes();
        let bytes = out.family(
            "vigil_agent_spool_bytes",
            "Bytes of batches in the spool, on disk and in memory (memory only while the disk fails).",
            FamilyKind::Gauge,
        )?;
        out.set(bytes, &[("medium", "disk")], disk as f64)?;
        out.set(bytes, &[("medium", "memory")], memory as f64)?;
        gauge(
            out,
            "vigil_agent_spool_on_disk",
            "1 while the spool is written to disk, 0 while batches are kept in memory only.",
            if spool.on_disk() { 1.0 } else { 0.0 },
        )?;
        let age = spool
            .oldest_closed_ms()
            .map(|t| {
                ((crate::sources::unix_millis(std::time::SystemTime::now()) - t) as f64 / 1000.0)
                    .max(0.0)
            })
            .unwrap_or(0.0);
        gauge(
            out,
            "vigil_agent_spool_oldest_unacknowledged_age_seconds",
            "Age of the oldest batch not yet acknowledged (0 when none waits).",
            age,
        )?;
        gauge(
            out,
            "vigil_agent_batch_sequence",
            "The sequence number of the batch that carries this sample.",
            spool.next_sequence() as f64,
        )?;
        Ok(())
    }
}

/// What one send attempt came to.
enum Sent {
    Delivered,
    Refused,
    Failed(Option<Duration>, String),
}

/// Sends batches from the spool to one destination: one collector, or a
/// fail-over list of them.
pub struct Shipper {
    clients: Vec<CollectorClient>,
    destination: usize,
    spool: Arc<Spool>,
    stats: Arc<ShipStats>,
    backoff: Backoff,
    replay_gap: Duration,
    probe_every: Duration,
    rejections_logged: [bool; 3],
}

impl Shipper {
    /// A shipper for spool destination `destination` over `clients` (the
    /// first is preferred; the others are fail-overs). The primary is tried
    /// again every `probe_every` while another one is in use.
    pub fn new(
        clients: Vec<CollectorClient>,
        destination: usize,
        spool: Arc<Spool>,
        stats: Arc<ShipStats>,
        config: &ShipperConfig,
        probe_every: Duration,
    ) -> Self {
        Self {
            clients,
            destination,
            spool,
            stats,
            backoff: Backoff::new(config.retry_initial, config.retry_max),
            replay_gap: Duration::from_secs_f64(1.0 / config.replay_max_per_second),
            probe_every,
            rejections_logged: [false; 3],
        }
    }

    /// Sends one batch to client `i`; acknowledges it in the spool when it
    /// is delivered or refused for good.
    async fn send(
        &mut self,
        i: usize,
        sequence: u64,
        request: vigil_shared::proto::PushRequest,
        timeout: Option<Duration>,
    ) -> Sent {
        let client = &mut self.clients[i];
        let result = match timeout {
            Some(t) => client.push_within(request, t).await,
            None => client.push(request).await,
        };
        match result {
            Ok(answer) => {
                self.spool.acknowledge(self.destination, sequence);
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                if answer.duplicate {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                Sent::Delivered
            }
            Err(PushError::Reject { reason, message }) => {
                self.spool.acknowledge(self.destination, sequence);
                let slot = ShipStats::reject_slot(reason);
                self.stats.rejected[slot].fetch_add(1, Ordering::Relaxed);
                if !self.rejections_logged[slot] {
                    self.rejections_logged[slot] = true;
                    error!(
                        collector = self.clients[i].endpoint(),
                        sequence,
                        reason = reason.label(),
                        collector_says = %message,
                        "collector refused the batch; it is dropped (logged once per reason, counted in vigil_agent_batches_dropped_total)"
                    );
                }
                Sent::Refused
            }
            Err(PushError::Retry { message, after }) => Sent::Failed(after, message),
        }
    }

    /// Sends until `finish` is cancelled and nothing waits for this
    /// destination. The caller bounds how long that may take after `finish`.
    pub async fn run(mut self, finish: CancellationToken) {
        let mut current = 0usize;
        let mut failing_since: Option<Instant> = None;
        let mut last_warning: Option<Instant> = None;
        let mut failed_attempts = 0u64;
        let mut failed_in_round = 0usize;
        let mut last_send: Option<Instant> = None;
        let mut last_probe = Instant::now();
        let spool = Arc::clone(&self.spool);
        loop {
            let notified = spool.notified();
            let Some(batch) = self.spool.peek(self.destination) else {
                if finish.is_cancelled() {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = finish.cancelled() => {}
                }
                continue;
            };
            // A backlog is replayed at a bounded rate, so that a recovering
            // collector is not flattened by every agent at once.
            let backlog = self.spool.waiting(self.destination) > 1;
            if backlog && let Some(t) = last_send {
                tokio::time::sleep_until((t + self.replay_gap).into()).await;
            }
            last_send = Some(Instant::now());
            // In fail-over mode, go back to the first collector once it answers.
            if current != 0 && last_probe.elapsed() >= self.probe_every {
                last_probe = Instant::now();
                // Short, so that a blackholed first collector costs little.
                let probe = (self.probe_every / 4).max(Duration::from_millis(200));
                if !matches!(
                    self.send(0, batch.sequence, batch.request.clone(), Some(probe))
                        .await,
                    Sent::Failed(..)
                ) {
                    info!(
                        from = self.clients[current].endpoint(),
                        to = self.clients[0].endpoint(),
                        "the first collector answers again; switched back to it"
                    );
                    self.stats.switches.fetch_add(1, Ordering::Relaxed);
                    if backlog {
                        self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    current = 0;
                    continue;
                }
            }
            match self
                .send(current, batch.sequence, batch.request, None)
                .await
            {
                Sent::Delivered | Sent::Refused => {
                    if backlog {
                        self.stats.replayed.fetch_add(1, Ordering::Relaxed);
                    }
                    self.backoff.reset();
                    failed_in_round = 0;
                    if let Some(since) = failing_since.take() {
                        info!(
                            collector = self.clients[current].endpoint(),
                            down_for = ?since.elapsed(),
                            failed_attempts,
                            waiting = self.spool.waiting(self.destination),
                            "collector reachable again; sending what waited"
                        );
                        failed_attempts = 0;
                        last_warning = None;
                    }
                }
                Sent::Failed(after, message) => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    failed_attempts += 1;
                    failing_since.get_or_insert_with(Instant::now);
                    let now = Instant::now();
                    if last_warning.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                    {
                        last_warning = Some(now);
                        warn!(
                            collector = self.clients[current].endpoint(),
                            error = %message,
                            waiting = self.spool.waiting(self.destination),
                            "collector unreachable; keeping batches in the spool and retrying with backoff"
                        );
                    }
                    if self.clients.len() > 1 {
                        let next = (current + 1) % self.clients.len();
                        info!(
                            from = self.clients[current].endpoint(),
                            to = self.clients[next].endpoint(),
                            "collector failed; switching to the next one"
                        );
                        self.stats.switches.fetch_add(1, Ordering::Relaxed);
                        current = next;
                        last_probe = Instant::now();
                        failed_in_round += 1;
                        if failed_in_round < self.clients.len() {
                            continue;
                        }
                    }
                    failed_in_round = 0;
                    let delay = after.unwrap_or_else(|| self.backoff.next_delay());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = finish.cancelled(), if !finish.is_cancelled() => {}
                    }
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
