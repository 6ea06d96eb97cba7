//! One `[[remote_write]]` destination: reads the queue in rounds, sends
//! each round as snappy-compressed `WriteRequest`s over several shards,
//! retries what may succeed later, and moves its cursor once the whole
//! round is acknowledged.
//!
//! - **Order.** A series goes to one shard (by the hash of its labels), and
//!   a shard sends its requests one after another, so each series' samples
//!   arrive in time order; rounds follow each other.
//! - **Shards** grow (doubling, up to `max_shards`) while the backlog is
//!   more than four rounds, and shrink by one (down to `min_shards`) when a
//!   round empties it, as Prometheus's shards follow the backlog.
//! - **Retries.** 5xx, 429 (with `retry_on_http_429`), timeouts and
//!   connection errors are retried with exponential backoff from
//!   `min_backoff` to `max_backoff`, with ±20 % jitter; a `Retry-After`
//!   (seconds or an HTTP date) replaces the backoff, up to 10 minutes. Any
//!   other 4xx is the store refusing the data for good: the request is
//!   dropped and counted under `http_<code>`, and the store's answer logged.
//! - **Restarts.** The cursor moves only after a round is acknowledged, so
//!   a restart sends again at most the round in flight.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use tokio_util::sync::CancellationToken;
use vigil_shared::exposition::{ExpositionWriter, MetricKind};

use crate::prompb::{Label, TimeSeries, WriteRequest};
use crate::queue::{Queue, Record};
use crate::relabel::{self, Rule};

/// How to authenticate to the store.
#[derive(Clone, Default)]
pub enum Auth {
    /// Nothing.
    #[default]
    None,
    /// `Authorization: Basic`.
    Basic {
        /// User.
        username: String,
        /// Password (read from its file).
        password: String,
    },
    /// `Authorization: Bearer`.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <hidden>)"),
            Auth::Bearer(_) => f.write_str("Bearer(<hidden>)"),
        }
    }
}

/// Queue and retry settings of one destination.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// Most samples in one request.
    pub max_samples_per_send: usize,
    /// Shards at least.
    pub min_shards: usize,
    /// Shards at most.
    pub max_shards: usize,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Retry 429 answers (else they are dropped).
    pub retry_on_http_429: bool,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_samples_per_send: 2000,
            min_shards: 1,
            max_shards: 8,
            min_backoff: Duration::from_millis(30),
            max_backoff: Duration::from_secs(5),
            retry_on_http_429: true,
        }
    }
}

/// One validated `[[remote_write]]` entry.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Its name: the cursor file's and the metrics' `remote_name`.
    pub name: String,
    /// Where to POST.
    pub url: String,
    /// Authentication.
    pub auth: Auth,
    /// Extra CA certificate (PEM) for the store's TLS.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
    /// Deadline of one request.
    pub timeout: Duration,
    /// Which series to send.
    pub relabel: Vec<Rule>,
    /// Send histogram windows as native histograms too (the store must
    /// take them: Prometheus 2.40+ with `--enable-feature=native-histograms`,
    /// Mimir with native histogram ingestion on).
    pub native_histograms: bool,
    /// Queue and retries.
    pub queue: QueueSettings,
}

/// What one destination did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    failed: Mutex<BTreeMap<String, u64>>,
    dropped: Mutex<BTreeMap<String, u64>>,
    highest_sent_ms: AtomicI64,
    shards: AtomicU64,
    pending: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    /// The store refused native histograms: they are no longer sent to it
    /// (until the collector restarts).
    native_refused: std::sync::atomic::AtomicBool,
}

fn add(map: &Mutex<BTreeMap<String, u64>>, reason: &str, n: u64) {
    let mut m = map
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *m.entry(reason.to_string()).or_default() += n;
}

impl Stats {
    /// Samples the store acknowledged.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Samples dropped, by reason.
    pub fn dropped(&self) -> BTreeMap<String, u64> {
        self.dropped
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Every destination of the collector, with its stats.
#[derive(Debug, Default)]
pub struct RemoteWrite {
    /// (destination, its stats).
    pub destinations: Vec<(Destination, Arc<Stats>)>,
    /// The queue, when there is a destination.
    pub queue: Option<Arc<Queue>>,
    /// The newest sample time written into the history (ms).
    pub highest_received: Arc<AtomicI64>,
    /// Records the queue could not take (disk full, I/O errors).
    pub queue_failures: Arc<AtomicU64>,
}

impl RemoteWrite {
    /// Writes `vigil_collector_remote_write_*`.
    pub fn write_metrics(&self, w: &mut ExpositionWriter) {
        if self.destinations.is_empty() {
            return;
        }
        let label = |d: &Destination| {
            format!(
                "remote_name=\"{}\",url=\"{}\"",
                escape(&d.name),
                escape(&d.url)
            )
        };
        let name = "vigil_collector_remote_write_samples_sent_total";
        w.header(name, "Samples the store acknowledged.", MetricKind::Counter);
        for (d, s) in &self.destinations {
            w.sample(name, "", &label(d), None, s.sent() as f64);
        }
        for (name, help, pick) in [
            (
                "vigil_collector_remote_write_samples_failed_total",
                "Samples in requests that failed and were retried, by reason (http_5xx, http_429, timeout, connection).",
                true,
            ),
            (
                "vigil_collector_remote_write_samples_dropped_total",
                "Samples not sent for good, by reason (http_<code> for a 4xx refusal, relabel, queue_full).",
                false,
            ),
        ] {
            w.header(name, help, MetricKind::Counter);
            for (d, s) in &self.destinations {
                let mut map = if pick {
                    s.failed
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .clone()
                } else {
                    s.dropped()
                };
                if !pick && let Some(q) = &self.queue {
                    let full = q.dropped(&d.name);
                    if full > 0 {
                        map.insert("queue_full".into(), full);
                    }
                }
                for (reason, n) in map {
                    let labels = format!("{},reason=\"{}\"", label(d), escape(&reason));
                    w.sample(name, "", &labels, None, n as f64);
                }
            }
        }
        for (name, help, kind, get) in [
            (
                "vigil_collector_remote_write_pending_records",
                "Records (one per batch or rule evaluation) in the queue that the store has not acknowledged.",
                MetricKind::Gauge,
                (|s: &Stats| s.pending.load(Ordering::Relaxed) as f64) as fn(&Stats) -> f64,
            ),
            (
                "vigil_collector_remote_write_shards",
                "Shards sending at once.",
                MetricKind::Gauge,
                |s: &Stats| s.shards.load(Ordering::Relaxed) as f64,
            ),
            (
                "vigil_collector_remote_write_highest_sent_timestamp_seconds",
                "Time of the newest sample the store acknowledged; compare with vigil_collector_remote_write_highest_received_timestamp_seconds for the lag.",
                MetricKind::Gauge,
                |s: &Stats| s.highest_sent_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            ),
            (
                "vigil_collector_remote_write_requests_total",
                "Requests sent, retries included.",
                MetricKind::Counter,
                |s: &Stats| s.requests.load(Ordering::Relaxed) as f64,
            ),
            (
                "vigil_collector_remote_write_retries_total",
                "Requests retried.",
                MetricKind::Counter,
                |s: &Stats| s.retries.load(Ordering::Relaxed) as f64,
            ),
        ] {
            w.header(name, help, kind);
            for (d, s) in &self.destinations {
                w.sample(name, "", &label(d), None, get(s));
            }
        }
        let name = "vigil_collector_remote_write_queue_bytes";
        w.header(
            name,
            "Bytes of the remote_write queue on disk (at most remote_write_queue.max_bytes).",
            MetricKind::Gauge,
        );
        let bytes = self.queue.as_ref().map_or(0, |q| q.bytes());
        w.sample(name, "", "", None, bytes as f64);
        let name = "vigil_collector_remote_write_queue_write_failures_total";
        w.header(
            name,
            "Records (a batch's or an evaluation's samples) the queue could not write; those samples are not sent.",
            MetricKind::Counter,
        );
        w.sample(
            name,
            "",
            "",
            None,
            self.queue_failures.load(Ordering::Relaxed) as f64,
        );
        let name = "vigil_collector_remote_write_highest_received_timestamp_seconds";
        w.header(
            name,
            "Time of the newest sample written into the history (what remote_write has to send).",
            MetricKind::Gauge,
        );
        w.sample(
            name,
            "",
            "",
            None,
            self.highest_received.load(Ordering::Relaxed) as f64 / 1000.0,
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The HTTP client for a destination.
pub fn client(dest: &Destination) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(dest.timeout)
        .connect_timeout(dest.timeout)
        .user_agent(concat!("Vigil/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = &dest.ca_pem {
        let cert = reqwest::Certificate::from_pem(pem).map_err(|e| format!("ca_file: {e}"))?;
        builder = builder.add_root_certificate(cert);
    }
    if dest.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| format!("HTTP client: {e}"))
}

/// Records turned into series, relabelled: (series, samples dropped by
/// relabelling). Native histograms are left out unless `native`.
fn series_of(records: &[Record], rules: &[Rule], native: bool) -> (Vec<TimeSeries>, u64) {
    let mut by_labels: HashMap<Vec<Label>, TimeSeries> = HashMap::new();
    let mut order: Vec<Vec<Label>> = Vec::new();
    let mut dropped = 0u64;
    for record in records {
        for ts in &record.request.timeseries {
            let histograms: &[crate::prompb::Histogram] = if native { &ts.histograms } else { &[] };
            if ts.samples.is_empty() && histograms.is_empty() {
                continue;
            }
            if !relabel::keep(rules, &ts.labels) {
                dropped += (ts.samples.len() + histograms.len()) as u64;
                continue;
            }
            match by_labels.get_mut(&ts.labels) {
                Some(series) => {
                    series.samples.extend_from_slice(&ts.samples);
                    series.histograms.extend_from_slice(histograms);
                }
                None => {
                    order.push(ts.labels.clone());
                    by_labels.insert(
                        ts.labels.clone(),
                        TimeSeries {
                            labels: ts.labels.clone(),
                            samples: ts.samples.clone(),
                            histograms: histograms.to_vec(),
                        },
                    );
                }
            }
        }
    }
    let series = order
        .into_iter()
        .filter_map(|labels| by_labels.remove(&labels))
        .collect();
    (series, dropped)
}

/// Splits series over `shards`, each shard's into requests of at most
/// `max_samples` samples (a series is never split).
fn shard_requests(
    series: Vec<TimeSeries>,
    shards: usize,
    max_samples: usize,
) -> Vec<Vec<WriteRequest>> {
    let mut per_shard: Vec<Vec<TimeSeries>> = (0..shards.max(1)).map(|_| Vec::new()).collect();
    for ts in series {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ts.labels.hash(&mut h);
        let i = (h.finish() % per_shard.len() as u64) as usize;
        per_shard[i].push(ts);
    }
    per_shard
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|series| {
            let mut requests = Vec::new();
            let mut current = WriteRequest::default();
            let mut n = 0usize;
            for ts in series {
                let size = ts.samples.len() + ts.histograms.len();
                if n > 0 && n + size > max_samples {
                    requests.push(std::mem::take(&mut current));
                    n = 0;
                }
                n += size;
                current.timeseries.push(ts);
            }
            if n > 0 {
                requests.push(current);
            }
            requests
        })
        .collect()
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let wait = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(text)
            .ok()?
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    };
    Some(wait.min(Duration::from_secs(600)))
}

/// Stopped by shutdown before the store acknowledged.
#[derive(Debug)]
struct Cancelled;

/// Sends one request until the store takes it, refuses it for good, or
/// shutdown.
async fn send(
    client: &reqwest::Client,
    dest: &Destination,
    stats: &Stats,
    request: WriteRequest,
    shutdown: &CancellationToken,
) -> Result<(), Cancelled> {
    let samples = request.sample_count() as u64;
    let newest = request
        .timeseries
        .iter()
        .flat_map(|t| {
            t.samples
                .iter()
                .map(|s| s.timestamp)
                .chain(t.histograms.iter().map(|h| h.timestamp))
        })
        .max()
        .unwrap_or(0);
    let body = match snap::raw::Encoder::new().compress_vec(&request.encode_to_vec()) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "remote_write: cannot compress a request; dropped");
            add(&stats.dropped, "encoding", samples);
            return Ok(());
        }
    };
    let mut backoff = dest.queue.min_backoff;
    loop {
        let mut post = client
            .post(&dest.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .header(reqwest::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(body.clone());
        post = match &dest.auth {
            Auth::None => post,
            Auth::Basic { username, password } => post.basic_auth(username, Some(password)),
            Auth::Bearer(token) => post.bearer_auth(token),
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let outcome = tokio::select! {
            r = post.send() => r,
            () = shutdown.cancelled() => return Err(Cancelled),
        };
        let (reason, wait) = match outcome {
            Ok(resp) if resp.status().is_success() => {
                stats.sent.fetch_add(samples, Ordering::Relaxed);
                stats.highest_sent_ms.fetch_max(newest, Ordering::Relaxed);
                return Ok(());
            }
            Ok(resp) => {
                let status = resp.status();
                let code = status.as_u16();
                let wait = retry_after(resp.headers());
                let histograms: usize = request.timeseries.iter().map(|t| t.histograms.len()).sum();
                if status.is_server_error() && histograms > 0 {
                    // Prometheus without `--enable-feature=native-histograms`
                    // answers 500 to any request that carries one: retried,
                    // it would hold up everything behind it for good.
                    let answer = resp.text().await.unwrap_or_default();
                    if answer.to_ascii_lowercase().contains("native histogram") {
                        let answer: String = answer.chars().take(512).collect();
                        tracing::error!(remote = %dest.name, url = %dest.url, status = code, answer = %answer.trim(), "remote_write: the store does not take native histograms; they are no longer sent to it (set send_native_histograms = false, or enable them in the store and restart the collector)");
                        stats.native_refused.store(true, Ordering::Relaxed);
                        add(
                            &stats.dropped,
                            "native_histograms_refused",
                            histograms as u64,
                        );
                        let mut classic = request.clone();
                        classic.timeseries.retain_mut(|t| {
                            t.histograms.clear();
                            !t.samples.is_empty()
                        });
                        if classic.timeseries.is_empty() {
                            return Ok(());
                        }
                        // Once at most: `classic` carries no histogram.
                        return Box::pin(send(client, dest, stats, classic, shutdown)).await;
                    }
                    ("http_5xx", wait)
                } else if status.is_server_error() || (code == 429 && dest.queue.retry_on_http_429)
                {
                    (if code == 429 { "http_429" } else { "http_5xx" }, wait)
                } else {
                    let answer = resp.text().await.unwrap_or_default();
                    let answer: String = answer.chars().take(512).collect();
                    tracing::warn!(remote = %dest.name, url = %dest.url, status = code, answer = %answer.trim(), samples, "remote_write: the store refused a request; dropped (not retried)");
                    add(&stats.dropped, &format!("http_{code}"), samples);
                    return Ok(());
                }
            }
            Err(e) if e.is_timeout() => ("timeout", None),
            Err(_) => ("connection", None),
        };
        add(&stats.failed, reason, samples);
        stats.retries.fetch_add(1, Ordering::Relaxed);
        let delay = match wait {
            Some(d) => d,
            None => {
                let jitter = 0.8 + fastrand::f64() * 0.4;
                backoff.mul_f64(jitter)
            }
        };
        tracing::debug!(remote = %dest.name, reason, ?delay, "remote_write: retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return Err(Cancelled),
        }
        backoff = (backoff * 2).min(dest.queue.max_backoff);
    }
}

/// Runs one destination until `shutdown`.
pub async fn run(
    queue: Arc<Queue>,
    dest: Destination,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let client = match client(&dest) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(remote = %dest.name, error = %e, "remote_write: cannot build the HTTP client; nothing is sent");
            return;
        }
    };
    let mut reader = Some(queue.reader(&dest.name));
    let mut shards = dest.queue.min_shards.max(1);
    stats.shards.store(shards as u64, Ordering::Relaxed);
    let mut failing_since: Option<std::time::Instant> = None;
    while !shutdown.is_cancelled() {
        let budget = dest.queue.max_samples_per_send * shards;
        let Some(mut r) = reader.take() else { return };
        let read = tokio::task::spawn_blocking(move || {
            let records = r.read(budget);
            (r, records)
        })
        .await;
        let records = match read {
            Ok((r, Ok(records))) => {
                reader = Some(r);
                records
            }
            Ok((r, Err(e))) => {
                reader = Some(r);
                tracing::error!(remote = %dest.name, error = %e, "remote_write: cannot read the queue; trying again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => {
                tracing::error!(remote = %dest.name, error = %e, "remote_write: queue reader failed");
                return;
            }
        };
        let acked_before = queue.acknowledged(&dest.name);
        stats.pending.store(
            queue.next_sequence().saturating_sub(acked_before + 1),
            Ordering::Relaxed,
        );
        let Some(last) = records.last().map(|r| r.sequence) else {
            tokio::select! {
                () = queue.wait_appended(Duration::from_secs(1)) => {}
                () = shutdown.cancelled() => {}
            }
            continue;
        };
        let native = dest.native_histograms && !stats.native_refused.load(Ordering::Relaxed);
        let (series, relabelled) = series_of(&records, &dest.relabel, native);
        if relabelled > 0 {
            add(&stats.dropped, "relabel", relabelled);
        }
        let started = std::time::Instant::now();
        let failed_before: u64 = stats
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum();
        let mut tasks = tokio::task::JoinSet::new();
        for requests in shard_requests(series, shards, dest.queue.max_samples_per_send) {
            let (client, dest, stats, shutdown) = (
                client.clone(),
                dest.clone(),
                Arc::clone(&stats),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                for request in requests {
                    send(&client, &dest, &stats, request, &shutdown).await?;
                }
                Ok::<(), Cancelled>(())
            });
        }
        let mut cancelled = false;
        while let Some(done) = tasks.join_next().await {
            if !matches!(done, Ok(Ok(()))) {
                cancelled = true;
            }
        }
        if cancelled {
            // Not acknowledged: sent again after the restart.
            return;
        }
        let q = Arc::clone(&queue);
        let name = dest.name.clone();
        match tokio::task::spawn_blocking(move || q.acknowledge(&name, last)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(remote = %dest.name, error = %e, "remote_write: cannot write the cursor; a restart sends this round again")
            }
            Err(e) => {
                tracing::error!(remote = %dest.name, error = %e, "remote_write: cursor task failed")
            }
        }
        let failed_after: u64 = stats
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum();
        match (failed_after > failed_before, failing_since) {
            (true, None) => {
                failing_since = Some(started);
                tracing::warn!(remote = %dest.name, url = %dest.url, "remote_write: the store is failing; retrying with backoff, samples wait in the queue");
            }
            (false, Some(since)) => {
                failing_since = None;
                tracing::info!(remote = %dest.name, after = ?since.elapsed(), "remote_write: the store takes samples again");
            }
            _ => {}
        }
        let backlog = queue.next_sequence().saturating_sub(last + 1);
        stats.pending.store(backlog, Ordering::Relaxed);
        let round = records.len() as u64;
        if backlog > 4 * round && shards < dest.queue.max_shards {
            shards = (shards * 2).min(dest.queue.max_shards);
        } else if backlog == 0 && shards > dest.queue.min_shards {
            shards -= 1;
        }
        stats.shards.store(shards as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompb::Sample;

    fn ts(name: &str, t: i64) -> TimeSeries {
        TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: name.into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: t,
            }],
            histograms: Vec::new(),
        }
    }

    #[test]
    fn a_series_keeps_one_shard_and_its_order_across_records() {
        let records: Vec<Record> = (1..=3)
            .map(|t| Record {
                sequence: t as u64,
                request: WriteRequest {
                    timeseries: (0..50).map(|i| ts(&format!("m{i}"), t)).collect(),
                },
            })
            .collect();
        let (series, dropped) = series_of(&records, &[], false);
        assert_eq!((series.len(), dropped), (50, 0));
        assert!(
            series
                .iter()
                .all(|s| s.samples.iter().map(|x| x.timestamp).eq(1..=3))
        );
        let shards = shard_requests(series, 4, 20);
        let total: usize = shards
            .iter()
            .flatten()
            .map(WriteRequest::sample_count)
            .sum();
        assert_eq!(total, 150);
        for requests in &shards {
            for r in requests {
                assert!(r.sample_count() <= 21);
            }
        }
    }

    #[test]
    fn native_histograms_go_only_where_asked_and_count_as_samples() {
        let histogram = |t: i64| crate::prompb::Histogram {
            count_int: 1,
            timestamp: t,
            ..Default::default()
        };
        let records: Vec<Record> = (1..=2)
            .map(|t| Record {
                sequence: t as u64,
                request: WriteRequest {
                    timeseries: vec![
                        ts("h_count", t),
                        TimeSeries {
                            labels: ts("h", t).labels,
                            samples: Vec::new(),
                            histograms: vec![histogram(t)],
                        },
                    ],
                },
            })
            .collect();
        let (series, _) = series_of(&records, &[], false);
        assert_eq!(series.len(), 1);
        assert!(series.iter().all(|s| s.histograms.is_empty()));
        let (series, _) = series_of(&records, &[], true);
        assert_eq!(series.len(), 2);
        let shards = shard_requests(series, 1, 3);
        let sizes: Vec<usize> = shards
            .iter()
            .flatten()
            .map(WriteRequest::sample_count)
            .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 4, "{sizes:?}");
        // Relabelling drops histograms as it drops samples, and counts them.
        let drop_h = crate::relabel::Rule::new("drop", vec!["__name__".into()], None, Some("h"))
            .expect("a rule");
        let (series, dropped) = series_of(&records, &[drop_h], true);
        assert_eq!((series.len(), dropped), (1, 2));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().expect("header"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "99999".parse().expect("header"),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(600)));
        let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        h.insert(reqwest::header::RETRY_AFTER, later.parse().expect("header"));
        let wait = retry_after(&h).unwrap_or_default();
        assert!(
            wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }
}
