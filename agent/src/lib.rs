//! `vigil-agent`: samples this host every `sample_interval`, closes windows
//! every `flush_interval`, and ships them to a collector without ever letting
//! the network slow the sampling down.
//!
//! ```text
//! sources ──► Windows ──► (flush) Batch ──► Outbox ──► Shipper ──► collector
//! ```
//!
//! [`run`] wires the stages and owns shutdown; `main.rs` only parses flags.

pub mod config;
pub mod memory;
pub mod ship;
pub mod sources;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vigil_shared::proto::PushRequest;

use config::AgentConfig;
use config::CollectorMode;
use ship::client::{CollectorClient, ConnectError};
use ship::spool::{Spool, SpoolConfig};
use ship::{ShipStats, Shipper};
use sources::{Sampler, SourceError, unix_millis};
use window::{FamilyKind, RecordError, Windows};

/// The agent could not start.
#[derive(Debug, Error)]
pub enum AgentError {
    /// A source could not be set up.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The collector connection could not be set up.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The window encoder could not be set up.
    #[error(transparent)]
    Histogram(#[from] vigil_shared::histogram::HistogramError),
    /// Another agent holds the data folder.
    #[error("{0} (data_dir or --data-dir)")]
    Lock(vigil_shared::lock::LockError),
    /// The sampler thread could not be started.
    #[error("cannot start the sampler thread: {0}")]
    Thread(std::io::Error),
    /// The data folder is of a newer format, or another binary's.
    #[error(transparent)]
    Format(vigil_shared::format::FormatError),
}

/// The format of what the agent keeps in its data folder (spool segments
/// and cursors), stamped into the binary; see [`vigil_shared::format`].
/// Raise it with any change an older build would misread, and read the
/// older format too.
static DATA_FORMAT_STAMP: [u8; 32] = *b"vigil-agent data format 00000001";

/// The data format this build writes (from its stamp).
pub fn data_format() -> Result<u32, vigil_shared::format::FormatError> {
    vigil_shared::format::stamped(std::hint::black_box(&DATA_FORMAT_STAMP))
}

/// Runs the agent until `shutdown` is cancelled, then closes the last window
/// and ships what it can within `shipper.shutdown_timeout`.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    // One agent per data folder: two would corrupt each other's spool. A
    // folder that cannot be written at all is not fatal: the spool keeps
    // batches in memory then (and says so).
    let _lock = match vigil_shared::lock::DirLock::acquire(&config.data_dir) {
        Ok(lock) => Some(lock),
        Err(e @ vigil_shared::lock::LockError::Held { .. }) => return Err(AgentError::Lock(e)),
        Err(e) => {
            tracing::warn!(error = %e, "cannot lock the data folder; going on without a lock");
            None
        }
    };
    let data_format = data_format().map_err(AgentError::Format)?;
    let mut found_format = None;
    if _lock.is_some() {
        match vigil_shared::format::check(&config.data_dir, "vigil-agent", data_format) {
            Ok(found) => found_format = Some(found),
            Err(e @ vigil_shared::format::FormatError::Io { .. }) => {
                tracing::warn!(error = %e, "cannot mark the data folder's format; going on");
            }
            Err(e) => return Err(AgentError::Format(e)),
        }
    }
    let sampler = Sampler::new(sources::build(&config)?);
    let windows = Windows::new(&config.instance, &config.job, config.max_series)?;
    let endpoints: Vec<String> = config
        .collectors
        .iter()
        .map(|c| c.endpoint.clone())
        .collect();
    // One spool destination (and cursor) per collector in fan-out mode; one
    // for the whole list in fail-over mode.
    let destinations = match config.mode {
        CollectorMode::Fanout => endpoints.clone(),
        CollectorMode::Failover => vec!["failover".to_string()],
    };
    let spool_config = SpoolConfig {
        dir: Some(config.data_dir.join("spool")),
        max_bytes: config.shipper.max_spool_bytes,
        max_memory_bytes: config.shipper.max_memory_bytes,
        destinations,
    };
    let spool = Arc::new(
        tokio::task::spawn_blocking(move || Spool::open(spool_config))
            .await
            .map_err(|e| AgentError::Thread(std::io::Error::other(e)))?,
    );
    // The spool was read: an older folder now carries this build's format.
    if let Some(found) = found_format
        && let Err(e) =
            vigil_shared::format::upgraded(&config.data_dir, "vigil-agent", found, data_format)
    {
        tracing::warn!(error = %e, "cannot mark the data folder's format; going on");
    }
    let stats = Arc::new(ShipStats::default());
    let mut clients = Vec::new();
    for c in &config.collectors {
        clients.push(CollectorClient::new(c)?);
    }
    info!(
        instance = %config.instance,
        job = %config.job,
        collectors = ?endpoints,
        mode = ?config.mode,
        spool = %config.data_dir.join("spool").display(),
        sample_interval = ?config.sample_interval,
        flush_interval = ?config.flush_interval,
        "agent started"
    );
    let finish = CancellationToken::new();
    let groups: Vec<Vec<CollectorClient>> = match config.mode {
        CollectorMode::Fanout => clients.into_iter().map(|c| vec![c]).collect(),
        CollectorMode::Failover => vec![clients],
    };
    let mut shippers = tokio::task::JoinSet::new();
    for (destination, group) in groups.into_iter().enumerate() {
        shippers.spawn(
            Shipper::new(
                group,
                destination,
                Arc::clone(&spool),
                Arc::clone(&stats),
                &config.shipper,
                config.flush_interval,
            )
            .run(finish.clone()),
        );
    }

    let flusher = Flusher {
        agent_id: config.instance.clone(),
        flush_interval: config.flush_interval,
        spool: Arc::clone(&spool),
        stats: Arc::clone(&stats),
        logged_refusals: (0, 0),
    };
    // Sampling runs on its own thread and sleeps between samples, so that it
    // wakes once per sample and never waits on the network.
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let intervals = (config.sample_interval, config.flush_interval);
    let sampler_thread = std::thread::Builder::new()
        .name("vigil-sampler".into())
        .spawn(move || sample_until_stopped(sampler, windows, flusher, intervals, stopped))
        .map_err(AgentError::Thread)?;

    shutdown.cancelled().await;
    info!("shutting down: closing the last window");
    drop(stop);
    let samples = match tokio::task::spawn_blocking(move || sampler_thread.join()).await {
        Ok(Ok(samples)) => samples,
        _ => {
            error!("the sampler thread panicked; its last window is lost");
            0
        }
    };
    finish.cancel();
    let all_sent = async { while shippers.join_next().await.is_some() {} };
    match tokio::time::timeout(config.shipper.shutdown_timeout, all_sent).await {
        Ok(()) => info!(samples, "every batch delivered; agent stopped"),
        Err(_) => warn!(
            samples,
            undelivered_batches = spool.len(),
            kept_on_disk = spool.on_disk(),
            deadline = ?config.shipper.shutdown_timeout,
            "shutdown deadline reached; undelivered batches stay in the spool for the next start"
        ),
    }
    Ok(())
}

/// Samples every `sample` interval and flushes every `flush` interval until
/// `stopped` is closed; then closes the last window. Missed samples (the
/// host was frozen) are skipped, not caught up. Returns the samples taken.
fn sample_until_stopped(
    mut sampler: Sampler,
    mut windows: Windows,
    mut flusher: Flusher,
    (sample, flush): (Duration, Duration),
    stopped: std::sync::mpsc::Receiver<()>,
) -> u64 {
    let mut next_sample = Instant::now();
    let mut next_flush = next_sample + flush;
    loop {
        sampler.sample(&mut windows, SystemTime::now());
        let now = Instant::now();
        if now + Duration::from_millis(5) >= next_flush {
            flusher.flush(&sampler, &mut windows, false);
            sampler.flushed();
            next_flush += flush;
            if next_flush < now {
                next_flush = now + flush;
            }
        }
        next_sample += sample;
        if next_sample < now {
            next_sample = now + sample;
        }
        match stopped.recv_timeout(next_sample.saturating_duration_since(Instant::now())) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    // One more sample first: what StatsD and OTLP took since the last one
    // would otherwise be lost with the process. The last batch tells the
    // collector this agent stops cleanly, so that its silence from now on
    // is not reported as a host down.
    sampler.sample(&mut windows, SystemTime::now());
    flusher.flush(&sampler, &mut windows, true);
    sampler.samples()
}

/// Closes windows into batches.
struct Flusher {
    agent_id: String,
    flush_interval: Duration,
    spool: Arc<Spool>,
    stats: Arc<ShipStats>,
    logged_refusals: (u64, u64),
}

impl Flusher {
    fn flush(&mut self, sampler: &Sampler, windows: &mut Windows, last: bool) {
        if let Err(e) = self.record_own_metrics(sampler, windows) {
            error!(error = %e, "cannot record the agent's own metrics");
        }
        let families = match windows.close() {
            Ok(f) => f,
            Err(e) => {
                error!(error = %e, "cannot close the window; its samples are lost");
                return;
            }
        };
        // The spool gives the epoch and the sequence number.
        let request = PushRequest {
            agent_id: self.agent_id.clone(),
            epoch: 0,
            sequence: 0,
            timestamp_ms: unix_millis(SystemTime::now()),
            flush_interval_ms: self.flush_interval.as_millis() as u64,
            families,
            last,
            agent_version: vigil_build_info::VERSION.to_string(),
            agent_revision: vigil_build_info::REVISION.to_string(),
        };
        self.stats
            .created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let series: usize = request.families.iter().map(|f| f.series.len()).sum();
        let sequence = self.spool.enqueue(request);
        debug!(sequence, series, "batch closed");
    }

    fn record_own_metrics(
        &mut self,
        sampler: &Sampler,
        windows: &mut Windows,
    ) -> Result<(), RecordError> {
        sampler.record_stats(windows)?;
        self.stats.record(&self.spool, windows)?;
        let refusals = windows.refusals();
        if (refusals.invalid, refusals.over_limit) != self.logged_refusals {
            warn!(
                invalid = refusals.invalid,
                over_max_series = refusals.over_limit,
                "series refused since start (see vigil_agent_series_refused_total)"
            );
            self.logged_refusals = (refusals.invalid, refusals.over_limit);
        }
        let refused = windows.family(
            "vigil_agent_series_refused_total",
            "New series refused by the agent: invalid (a naming rule or label limit), or over max_series.",
            FamilyKind::Counter,
        )?;
        windows.set(refused, &[("reason", "invalid")], refusals.invalid as f64)?;
        windows.set(
            refused,
            &[("reason", "max_series")],
            refusals.over_limit as f64,
        )?;
        let series = windows.family(
            "vigil_agent_series",
            "Series the agent holds.",
            FamilyKind::Gauge,
        )?;
        let count = windows.series_count() as f64;
        windows.set(series, &[], count)?;
        let info = windows.family(
            "vigil_agent_build_info",
            "The agent's build (version, git revision, build date, rustc), always 1.",
            FamilyKind::Gauge,
        )?;
        windows.set(info, &vigil_build_info::LABELS, 1.0)?;
        Ok(())
    }
}
