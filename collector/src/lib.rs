//! `vigil-collector`: the binary that wires the collector's stages. It
//! holds the config, ingest (gRPC: auth, limits, dedup, the write-ahead log
//! append), the HTTP server, startup and shutdown; the stages themselves are
//! crates, and this crate must never grow their logic.
//!
//! ```text
//! agents ──gRPC──► ingest ──► vigil-store ◄── vigil-promql ◄── vigil-rules ──(alerts)──► vigil-notify ──► webhooks
//!                  (auth,     (latest state,   (PromQL)          (rule files,  [alerts.rs]  (routes, groups,
//!                   limits,    history, WAL,                      alert states)             silences, outbox)
//!                   dedup)     checkpoints)
//!                                 │
//!                                 └──► http: /metrics, /api/v1/* (Prometheus API), /graph, /-/reload, silences
//! ```
//!
//! [`bind`] binds both ports; [`serve`] restores the store from its
//! checkpoint and log, starts rules, notifications and both servers, and
//! stops them all when `shutdown` is cancelled. `main.rs` only parses flags.

pub mod alerts;
pub mod config;
pub mod http;
pub mod ingest;
pub mod remote_write_config;
pub mod self_metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tracing::{error, info};
use vigil_shared::raw_ingest::ingest_server::IngestServer;

use config::CollectorConfig;
use ingest::IngestMetrics;
use ingest::auth::Authenticator;
use ingest::grpc::IngestService;
use vigil_store::Store;

/// The collector could not start or stopped on an error.
#[derive(Debug, Error)]
pub enum CollectorError {
    /// A port could not be bound.
    #[error("cannot listen on {what} {addr}: {source} (is another collector running? set {key})")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The config key that sets it.
        key: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// TLS files could not be read or used.
    #[error("ingest TLS: {0}")]
    Tls(String),
    /// A server failed.
    #[error("{0} server failed: {1}")]
    Serve(&'static str, String),
    /// A checkpoint could not be restored.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The write-ahead log could not be opened (set store.data_dir or --data-dir).
    #[error("{0} (set store.data_dir or --data-dir to a writable folder)")]
    Wal(#[from] vigil_store::wal::WalError),
    /// The data folder is in use by another collector, or cannot be locked.
    #[error("{0} (store.data_dir or --data-dir)")]
    Lock(#[from] vigil_shared::lock::LockError),
    /// A rule file has errors (each names file, line, group and rule).
    #[error("rule files have errors:\n{}", .0.join("\n"))]
    Rules(Vec<String>),
    /// The data folder is of a newer format, or another binary's.
    #[error(transparent)]
    Format(#[from] vigil_shared::format::FormatError),
    /// The remote_write queue could not be opened.
    #[error("{0}")]
    RemoteWrite(String),
}

/// The format of what the collector keeps in its data folder (write-ahead
/// log, checkpoint, rule and notification state), stamped into the binary;
/// see [`vigil_shared::format`]. Raise it with any change an older build
/// would misread, and read the older format too.
static DATA_FORMAT_STAMP: [u8; 36] = *b"vigil-collector data format 00000001";

/// The data format this build writes (from its stamp).
pub fn data_format() -> Result<u32, vigil_shared::format::FormatError> {
    vigil_shared::format::stamped(std::hint::black_box(&DATA_FORMAT_STAMP))
}

/// Addresses actually bound (useful when the config asks for port 0).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// HTTP.
    pub http: SocketAddr,
    /// gRPC ingest.
    pub ingest: SocketAddr,
}

/// Binds both ports; fails early, with the key to change, when one is taken.
pub async fn bind(
    config: &CollectorConfig,
) -> Result<(TcpListener, TcpListener, Bound), CollectorError> {
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| CollectorError::Bind {
            what: "HTTP",
            addr: config.http_listen,
            key: "http.listen",
            source,
        })?;
    let ingest = TcpListener::bind(config.ingest.listen)
        .await
        .map_err(|source| CollectorError::Bind {
            what: "ingest",
            addr: config.ingest.listen,
            key: "ingest.listen",
            source,
        })?;
    let bound = Bound {
        http: http
            .local_addr()
            .map_err(|e| CollectorError::Serve("HTTP", e.to_string()))?,
        ingest: ingest
            .local_addr()
            .map_err(|e| CollectorError::Serve("ingest", e.to_string()))?,
    };
    Ok((http, ingest, bound))
}

fn tls_config(config: &CollectorConfig) -> Result<Option<ServerTlsConfig>, CollectorError> {
    let Some(tls) = &config.ingest.tls else {
        return Ok(None);
    };
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| CollectorError::Tls(format!("{}: {e}", p.display())))
    };
    let mut server = ServerTlsConfig::new().identity(Identity::from_pem(
        read(&tls.cert_file)?,
        read(&tls.key_file)?,
    ));
    if let Some(ca) = &tls.client_ca_file {
        server = server.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(server))
}

/// Loads the checkpoint, if any, then opens the write-ahead log in
/// `data_dir/wal` and replays what the checkpoint does not cover; returns the
/// log and how many batches it replayed.
fn open_and_replay(
    config: &CollectorConfig,
    store: &Store,
) -> Result<(vigil_store::wal::Wal, usize), CollectorError> {
    let started = std::time::Instant::now();
    let from = match vigil_store::checkpoint::read(&config.data_dir) {
        Ok(Some(cp)) => {
            let segment = cp.wal_segment;
            let series = cp.history.len();
            store.restore(cp).map_err(CollectorError::Checkpoint)?;
            info!(series, took = ?started.elapsed(), "checkpoint loaded");
            segment
        }
        Ok(None) => 0,
        Err(e) => {
            // Checkpoints are written whole and renamed into place, so this
            // is damage on disk: keep going with what the log still holds.
            tracing::error!(error = %e, "checkpoint unreadable; replaying the write-ahead log that remains (data only in the checkpoint is lost)");
            0
        }
    };
    let dir = config.data_dir.join("wal");
    let (wal, replay) = vigil_store::wal::Wal::open(&dir, from)?;
    for problem in &replay.problems {
        tracing::warn!(%problem, "write-ahead log damaged; replayed up to the damage");
    }
    let mut applied = 0usize;
    for ((received, batch), position) in replay.batches.iter().zip(&replay.positions) {
        if !store.apply_logged(batch, *received, *position).duplicate {
            applied += 1;
        }
    }
    // Replayed batches were validated under the limits of the run that
    // logged them: each agent's next push is validated in full.
    store.forget_series_caches();
    info!(
        dir = %dir.display(),
        segments = replay.segments,
        bytes = replay.bytes,
        batches = applied,
        took = ?started.elapsed(),
        "write-ahead log replayed"
    );
    Ok((wal, applied))
}

/// Opens the remote_write queue in `data_dir/remote_write` when there is a
/// destination, and taps the store into it (before the log is replayed, so
/// that what a crash cut off the queue is handed on again).
fn open_remote_write(
    config: &CollectorConfig,
    store: &Store,
) -> Result<Arc<vigil_remote_write::sender::RemoteWrite>, CollectorError> {
    let mut remote_write = vigil_remote_write::sender::RemoteWrite::default();
    if config.remote_write.is_empty() {
        return Ok(Arc::new(remote_write));
    }
    let names: Vec<String> = config.remote_write.iter().map(|d| d.name.clone()).collect();
    let dir = config.data_dir.join("remote_write");
    let queue = vigil_remote_write::queue::Queue::open(&dir, config.remote_write_max_bytes, &names)
        .map_err(|e| CollectorError::RemoteWrite(e.to_string()))?;
    for problem in queue.problems() {
        tracing::warn!(%problem, "remote_write queue damaged; read up to the damage");
    }
    let highest = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut tap = vigil_remote_write::QueueTap::new(
        Arc::clone(&queue),
        Arc::clone(&highest),
        Arc::clone(&remote_write.queue_failures),
    );
    if config.remote_write.iter().any(|d| d.native_histograms) {
        tap = tap.with_native_histograms();
    }
    if store.set_tap(Arc::new(tap)).is_err() {
        return Err(CollectorError::RemoteWrite(
            "the store has a tap already".into(),
        ));
    }
    remote_write.destinations = config
        .remote_write
        .iter()
        .map(|d| (d.clone(), Arc::default()))
        .collect();
    remote_write.queue = Some(queue);
    remote_write.highest_received = highest;
    info!(destinations = names.len(), dir = %dir.display(), "remote_write queue opened");
    Ok(Arc::new(remote_write))
}

/// Writes a checkpoint: under the log's lock (so no batch is applied in
/// between) start a new segment and copy the store; then write the copy,
/// sync the remote_write queue (what it holds of the covered segments must
/// survive them), and delete the segments it covers.
fn write_checkpoint(
    store: &Store,
    wal: &std::sync::Mutex<vigil_store::wal::Wal>,
    dir: &std::path::Path,
    queue: Option<&vigil_remote_write::queue::Queue>,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let (segment, snapshot) = {
        let mut wal = wal
            .lock()
            .map_err(|_| "write-ahead log lock poisoned".to_string())?;
        let segment = wal.start_segment().map_err(|e| e.to_string())?;
        (segment, store.snapshot(segment))
    };
    let copied = started.elapsed();
    let bytes = vigil_store::checkpoint::write(dir, &snapshot)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    if let Some(queue) = queue {
        queue.sync().map_err(|e| e.to_string())?;
    }
    let removed = wal
        .lock()
        .map_err(|_| "write-ahead log lock poisoned".to_string())?
        .remove_below(segment)
        .map_err(|e| e.to_string())?;
    info!(bytes, segment, removed_segments = removed, ingest_paused = ?copied, took = ?started.elapsed(), "checkpoint written");
    Ok(())
}

fn lock_wal(
    wal: &std::sync::Mutex<vigil_store::wal::Wal>,
) -> std::sync::MutexGuard<'_, vigil_store::wal::Wal> {
    wal.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves on already-bound listeners until `shutdown` is cancelled.
pub async fn serve(
    config: CollectorConfig,
    http_listener: TcpListener,
    ingest_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    // One collector per data folder: held until `serve` returns.
    let _lock = vigil_shared::lock::DirLock::acquire(&config.data_dir)?;
    let data_format = data_format()?;
    let found_format =
        vigil_shared::format::check(&config.data_dir, "vigil-collector", data_format)?;
    let store = Arc::new(Store::new(config.stale_after, config.retention));
    let remote_write = open_remote_write(&config, &store)?;
    let (wal, replayed) = open_and_replay(&config, &store)?;
    let wal = Arc::new(std::sync::Mutex::new(wal));
    let metrics = Arc::new(IngestMetrics::default());
    let rules = Arc::new(
        vigil_rules::manager::RuleManager::new(
            config.rules.clone(),
            Arc::clone(&store),
            &config.data_dir,
        )
        .map_err(CollectorError::Rules)?,
    );
    let commit = Arc::new(vigil_store::wal::GroupCommit::default());
    let agent_limits = Arc::new(ingest::limits::AgentLimits::new(config.ingest.agent_limits));
    let service = IngestService::new(
        Arc::clone(&store),
        Arc::clone(&wal),
        Arc::clone(&commit),
        config.wal_fsync,
        Arc::clone(&metrics),
        Authenticator::new(config.ingest.agents.clone(), config.ingest.unauthenticated),
        config.ingest.limits,
        config.ingest.max_series_per_push,
        Arc::clone(&agent_limits),
    );
    let grpc = IngestServer::new(service)
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(config.ingest.max_message_size);
    let mut builder = Server::builder()
        .timeout(Duration::from_secs(30))
        .http2_keepalive_interval(Some(Duration::from_secs(60)));
    if let Some(tls) = tls_config(&config)? {
        builder = builder
            .tls_config(tls)
            .map_err(|e| CollectorError::Tls(e.to_string()))?;
    }
    let tasks = TaskTracker::new();
    let grpc_shutdown = shutdown.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(ingest_listener);
    let grpc_task = tasks.spawn(async move {
        builder
            .add_service(grpc)
            .serve_with_incoming_shutdown(incoming, grpc_shutdown.cancelled_owned())
            .await
            .map_err(|e| CollectorError::Serve("ingest", e.to_string()))
    });
    let (groups, rule_count) = rules.counts();
    info!(groups, rules = rule_count, "rules loaded");
    let notify = Arc::new(
        vigil_notify::manager::NotifyManager::new(
            config.notify.clone(),
            Arc::new(alerts::RuleAlerts(Arc::clone(&rules))),
            &config.data_dir,
        )
        .map_err(|e| CollectorError::Rules(vec![e]))?,
    );
    // The log, checkpoint, rule and notification state were read: an older
    // folder now carries this build's format.
    vigil_shared::format::upgraded(
        &config.data_dir,
        "vigil-collector",
        found_format,
        data_format,
    )?;
    tasks.spawn(Arc::clone(&notify).run(shutdown.clone()));
    let rules_thread = Arc::clone(&rules)
        .spawn(shutdown.clone())
        .map_err(|e| CollectorError::Serve("rules", e.to_string()))?;
    let reload_rules = Arc::clone(&rules);
    let reload_notify = Arc::clone(&notify);
    let reload_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload rules with POST /-/reload");
            return;
        };
        loop {
            tokio::select! {
                _ = reload_shutdown.cancelled() => return,
                _ = hangups.recv() => {
                    info!("SIGHUP: reloading rules");
                    let rules = Arc::clone(&reload_rules);
                    let _ = tokio::task::spawn_blocking(move || rules.reload()).await;
                    let _ = reload_notify.reload();
                }
            }
        }
    });
    let mut state = http::HttpState::new(
        Arc::clone(&store),
        Arc::clone(&metrics),
        Arc::clone(&agent_limits),
        Arc::clone(&rules),
        Arc::clone(&notify),
        &config,
    );
    state.remote_write = Arc::clone(&remote_write);
    let state = Arc::new(state);
    if let Some(queue) = &remote_write.queue {
        for (destination, stats) in &remote_write.destinations {
            tasks.spawn(vigil_remote_write::sender::run(
                Arc::clone(queue),
                destination.clone(),
                Arc::clone(stats),
                shutdown.clone(),
            ));
        }
    }
    if let Some(every) = config.self_metrics_interval {
        let state = Arc::clone(&state);
        let stop = shutdown.clone();
        let instance = self_metrics::host_name();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let state = Arc::clone(&state);
                        let instance = instance.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            self_metrics::record(&state, &instance, vigil_store::now_ms())
                        })
                        .await;
                    }
                }
            }
        });
    }
    let http_shutdown = shutdown.clone();
    let tls = config.web.tls.clone();
    let http_task = tasks.spawn(async move {
        let router = http::router(state);
        let served = match tls {
            None => {
                let app = router.into_make_service_with_connect_info::<SocketAddr>();
                axum::serve(http_listener, app)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await
            }
            Some(tls) => {
                let listener = http::tls::TlsListener::new(http_listener, tls)
                    .map_err(|e| CollectorError::Serve("HTTP", e.to_string()))?;
                let app = router
                    .layer(axum::middleware::from_fn(http::tls::with_peer_address))
                    .into_make_service_with_connect_info::<http::tls::TlsPeer>();
                axum::serve(listener, app)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await
            }
        };
        served.map_err(|e| CollectorError::Serve("HTTP", e.to_string()))
    });
    let sweep_store = Arc::clone(&store);
    let sweep_wal = Arc::clone(&wal);
    let retention_ms = config.retention.as_millis() as i64;
    let sweep_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = sweep_shutdown.cancelled() => return,
                _ = every.tick() => {
                    let now = vigil_store::now_ms();
                    let (series, samples) = sweep_store.sweep(now);
                    if series > 0 || samples > 0 {
                        info!(series, samples, "forgot stale series and history past retention");
                    }
                    let wal = Arc::clone(&sweep_wal);
                    let removed = tokio::task::spawn_blocking(move || match wal.lock() {
                        Ok(mut w) => w.remove_before(now - retention_ms),
                        Err(poisoned) => poisoned.into_inner().remove_before(now - retention_ms),
                    })
                    .await;
                    match removed {
                        Ok(Ok(0)) => {}
                        Ok(Ok(n)) => info!(segments = n, "removed write-ahead log segments past retention"),
                        Ok(Err(e)) => tracing::warn!(error = %e, "cannot remove old write-ahead log segments"),
                        Err(e) => tracing::warn!(error = %e, "write-ahead log clean-up task failed"),
                    }
                }
            }
        }
    });
    let checkpoint_store = Arc::clone(&store);
    let checkpoint_wal = Arc::clone(&wal);
    let checkpoint_shutdown = shutdown.clone();
    let checkpoint_dir = config.data_dir.clone();
    let checkpoint_queue = remote_write.queue.clone();
    let checkpoint_every = config.checkpoint_interval;
    tasks.spawn(async move {
        // After a replay, checkpoint at once: a collector that keeps being
        // killed before its first timed checkpoint would otherwise replay an
        // ever longer log at every start.
        let first = if replayed > 0 {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + checkpoint_every
        };
        let mut every = tokio::time::interval_at(first, checkpoint_every);
        loop {
            let last = tokio::select! {
                _ = checkpoint_shutdown.cancelled() => true,
                _ = every.tick() => false,
            };
            let (store, wal, dir) = (Arc::clone(&checkpoint_store), Arc::clone(&checkpoint_wal), checkpoint_dir.clone());
            let queue = checkpoint_queue.clone();
            match tokio::task::spawn_blocking(move || write_checkpoint(&store, &wal, &dir, queue.as_deref())).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "checkpoint failed; the write-ahead log keeps everything"),
                Err(e) => tracing::error!(error = %e, "checkpoint task failed"),
            }
            if last {
                return;
            }
        }
    });
    if let vigil_store::wal::FsyncPolicy::Interval(every) = config.wal_fsync {
        let (wal, commit, metrics, stop) = (
            Arc::clone(&wal),
            Arc::clone(&commit),
            Arc::clone(&metrics),
            shutdown.clone(),
        );
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let (wal, commit) = (Arc::clone(&wal), Arc::clone(&commit));
                let synced = tokio::task::spawn_blocking(move || {
                    let position = lock_wal(&wal).position();
                    commit.sync_through(&wal, position)
                })
                .await;
                match synced {
                    Ok(Ok(did)) => metrics.wal_appended_sync_only(did),
                    Ok(Err(e)) => {
                        metrics.wal_failed();
                        error!(error = %e, "cannot sync the write-ahead log; pushes are refused until the collector is restarted");
                    }
                    Err(e) => error!(error = %e, "log sync task failed"),
                }
            }
        });
    }
    let stale_store = Arc::clone(&store);
    let stale_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stale_shutdown.cancelled() => return,
                _ = every.tick() => {
                    for agent in stale_store.mark_silent_agents(vigil_store::now_ms()) {
                        tracing::warn!(agent, "agent missed its pushes; its series are marked stale");
                    }
                }
            }
        }
    });
    tasks.close();
    // If either server fails, stop the other.
    let result = tokio::select! {
        r = grpc_task => r,
        r = http_task => r,
    };
    shutdown.cancel();
    tasks.wait().await;
    // Ingest has stopped: make everything it wrote durable before exiting.
    let (final_wal, final_commit) = (Arc::clone(&wal), Arc::clone(&commit));
    match tokio::task::spawn_blocking(move || {
        let position = lock_wal(&final_wal).position();
        final_commit.sync_through(&final_wal, position)
    })
    .await
    {
        Ok(Ok(_)) => info!("write-ahead log synced"),
        Ok(Err(e)) => error!(error = %e, "cannot sync the write-ahead log at shutdown"),
        Err(e) => error!(error = %e, "log sync task failed"),
    }
    if tokio::task::spawn_blocking(move || rules_thread.join())
        .await
        .map(|r| r.is_err())
        .unwrap_or(true)
    {
        error!("the rule thread panicked");
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            error!(error = %e, "server failed");
            Err(e)
        }
        Err(join) => Err(CollectorError::Serve("collector", join.to_string())),
    }
}
