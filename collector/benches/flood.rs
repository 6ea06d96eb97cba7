//! One agent floods the collector with new series while `AGENTS` others
//! (default 5) push their usual batches; prints the others' push latency
//! (p50, p99) before and during the flood, and the collector's resident
//! memory, with the per-agent limits off and at their defaults.
//!
//! The flood: `FLOOD` new series (default 1,000,000) in pushes of 50,000
//! (and, at the defaults, also of 9,000: under the per-push limit, so the
//! new-series rate refuses them), sent one after another as fast as the
//! collector answers, as one agent (or one stolen token) would. The collector runs in this process on
//! 127.0.0.1, so its resident memory is this process's (the flood's
//! batches are built one at a time and dropped once sent).
//!
//!     cargo bench -p vigil-collector --bench flood

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/serve.rs"]
mod serve;

use std::time::{Duration, Instant};

use anyhow::Result;
use tokio_util::sync::CancellationToken;
use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};

use fleet::env;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// `series` gauges of `agent`, numbered from `first`.
fn batch(agent: &str, sequence: u64, first: usize, series: usize) -> PushRequest {
    let now = now_ms();
    let label = |name: &str, value: String| Label {
        name: name.into(),
        value,
    };
    PushRequest {
        agent_id: agent.into(),
        epoch: 1,
        sequence,
        timestamp_ms: now,
        flush_interval_ms: 1_000,
        families: vec![Family {
            name: "bench_value".into(),
            help: "A benchmark gauge.".into(),
            kind: Kind::Gauge as i32,
            bucket_bounds: vec![],
            series: (first..first + series)
                .map(|i| Series {
                    labels: vec![
                        label("instance", agent.into()),
                        label("job", "bench".into()),
                        label("n", i.to_string()),
                    ],
                    value: sequence as f64,
                    timestamp_ms: now,
                    window: None,
                })
                .collect(),
        }],
        last: false,
        ..Default::default()
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The normal agents: each pushes 400 series every 100 ms until `stop`;
/// returns every push's latency, ms.
async fn normal_agents(url: String, agents: usize, stop: CancellationToken) -> Result<Vec<f64>> {
    let mut tasks = tokio::task::JoinSet::new();
    for a in 0..agents {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.spawn(async move {
            let mut client = IngestClient::connect(url).await?;
            let name = format!("normal-{a}");
            let mut latencies = Vec::new();
            let mut sequence = 0;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.is_cancelled() {
                tick.tick().await;
                sequence += 1;
                let b = batch(&name, sequence, 0, 400);
                let started = Instant::now();
                client.push(b).await?;
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    all.sort_by(f64::total_cmp);
    Ok(all)
}

async fn run(
    label: &str,
    ingest_extra: &str,
    agents: usize,
    flood: usize,
    per_push: usize,
) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let served = serve::start(dir.path(), ingest_extra, "wal_fsync = \"interval\"").await?;
    let bound = served.bound;
    let url = format!("http://{}", bound.ingest);
    let rss_before = rss_mib();

    // Five seconds of normal traffic alone.
    let stop = CancellationToken::new();
    let quiet = tokio::spawn(normal_agents(url.clone(), agents, stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    let quiet = quiet.await??;

    // The flood, with the same normal traffic beside it.
    let stop = CancellationToken::new();
    let busy = tokio::spawn(normal_agents(url.clone(), agents, stop.clone()));
    let started = Instant::now();
    let mut flooder = IngestClient::connect(url.clone()).await?;
    let (mut accepted, mut refused) = (0usize, 0usize);
    let mut sequence = 0;
    let mut first = 0;
    while first < flood {
        sequence += 1;
        let b = batch("flood", sequence, first, per_push);
        first += per_push;
        match flooder.push(b).await {
            Ok(_) => accepted += per_push,
            Err(_) => refused += per_push,
        }
    }
    let flood_took = started.elapsed();
    // Keep the normal agents going a little past the flood's last push.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let busy = busy.await??;
    let rss_after = rss_mib();
    println!(
        "{label}: flood of {flood} new series in pushes of {per_push} took {:.1} s ({accepted} accepted, {refused} refused); \
         RSS {rss_before:.0} -> {rss_after:.0} MiB; other agents' pushes: alone p50 {:.1} ms p99 {:.1} ms ({} pushes), \
         during the flood p50 {:.1} ms p99 {:.1} ms ({} pushes)",
        flood_took.as_secs_f64(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        quiet.len(),
        percentile(&busy, 0.5),
        percentile(&busy, 0.99),
        busy.len(),
    );
    served.stop().await
}

fn main() -> Result<()> {
    let agents = env("AGENTS", 5);
    let flood = env("FLOOD", 1_000_000);
    // Each mode in a process of its own, so that one's memory does not
    // count in the other's resident size.
    let Ok(mode) = std::env::var("FLOOD_MODE") else {
        let me = std::env::current_exe()?;
        for mode in ["off", "defaults", "defaults-small"] {
            let status = std::process::Command::new(&me)
                .env("FLOOD_MODE", mode)
                .status()?;
            anyhow::ensure!(status.success(), "the {mode} run failed: {status}");
        }
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match mode.as_str() {
            "off" => {
                run(
                    "limits off",
                    "max_series_per_agent = 1000000\nmax_new_series_per_minute = 100000000\nmax_pushes_per_second = 1000000",
                    agents,
                    flood,
                    50_000,
                )
                .await
            }
            "defaults" => run("limits at their defaults", "", agents, flood, 50_000).await,
            _ => run("limits at their defaults", "", agents, flood, 9_000).await,
        }
    })
}
