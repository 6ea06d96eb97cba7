//! The history's footprint and query speed on a simulated fleet
//! (`cargo bench -p vigil-collector --bench store`): HOSTS hosts (default
//! 1,000) × SERIES series (default 500) at 10 s resolution for an hour: a real
//! agent's recorded hour replayed per host (see `common/fleet.rs`), or with
//! SYNTHETIC=1 a generated mix over MINUTES minutes (default 60). Reports
//! bytes per sample of the compressed chunks, resident memory per series, the
//! time of `sum(rate(x[5m]))` over every host, and write-ahead-log replay
//! speed on a 1 % slice of the same data.

#[path = "common/fleet.rs"]
mod fleet;

use std::time::Instant;

use vigil_promql::{Limits, Value, instant_query};
use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};
use vigil_store::history::History;
use vigil_store::wal::Wal;

use fleet::env;

fn rss_bytes() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        * 1024.0
}

fn main() -> anyhow::Result<()> {
    let hosts = env("HOSTS", 1000);
    let series = env("SERIES", 500);
    let minutes = env("MINUTES", 60);
    let fleet = fleet::Fleet::load()?;
    let steps = fleet.steps(minutes);
    println!("data: {}", fleet.describe());
    let labels = |h: usize, s: usize| fleet.labels(h, s);

    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut history = History::new();
    let mut ids = Vec::with_capacity(hosts * series);
    for h in 0..hosts {
        for s in 0..series {
            ids.push(history.series_id(&labels(h, s)));
        }
    }
    // OPENMETRICS_OUT=path also writes the same samples as OpenMetrics text,
    // for `promtool tsdb create-blocks-from openmetrics` (small fleets only).
    let openmetrics = std::env::var("OPENMETRICS_OUT").ok();
    let mut kept: Vec<Vec<(i64, f64)>> = if openmetrics.is_some() {
        vec![Vec::with_capacity(steps); hosts * series]
    } else {
        Vec::new()
    };
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..steps {
        for h in 0..hosts {
            for s in 0..series {
                let Some((t, v)) = fleet.point(h, s, i, &mut state) else {
                    continue;
                };
                history.append(ids[h * series + s], t, v)?;
                if let Some(k) = kept.get_mut(h * series + s) {
                    k.push((t, v));
                }
            }
        }
    }
    if let Some(path) = &openmetrics {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let families = fleet.by_family(0..series);
        for (name, members) in &families {
            writeln!(out, "# TYPE {name} unknown")?;
            for h in 0..hosts {
                for &s in members {
                    let rest = fleet::openmetrics_labels(&labels(h, s));
                    for (t, v) in &kept[h * series + s] {
                        fleet::write_openmetrics_sample(&mut out, name, &rest, *t, *v)?;
                    }
                }
            }
        }
        writeln!(out, "# EOF")?;
        println!("wrote the same samples as OpenMetrics to {path}");
    }
    let ingest = started.elapsed();
    let stats = history.stats();
    let rss_after = rss_bytes();
    let samples = stats.samples as f64;
    println!(
        "fleet: {hosts} hosts x {series} series, {steps} samples each at 10 s ({} samples)",
        stats.samples
    );
    println!(
        "append: {:.1} s, {:.2} M samples/s on one core",
        ingest.as_secs_f64(),
        samples / ingest.as_secs_f64() / 1e6
    );
    println!(
        "chunks: {:.1} MiB, {:.2} bytes per sample",
        stats.chunk_bytes as f64 / (1 << 20) as f64,
        stats.chunk_bytes as f64 / samples
    );
    println!(
        "resident memory: {:.1} MiB for {} series, {:.0} bytes per series (chunks, labels, index)",
        (rss_after - rss_before) / (1 << 20) as f64,
        stats.series,
        (rss_after - rss_before) / stats.series as f64
    );

    let end = fleet.end(minutes);
    let queries = match fleet {
        fleet::Fleet::Synthetic => [
            "sum(rate(metric_001[5m]))",
            "sum by (instance) (rate(metric_002[5m]))",
        ],
        fleet::Fleet::Recorded(_) => [
            "sum(rate(node_network_receive_bytes_total[5m]))",
            "sum by (instance) (rate(node_cpu_seconds_total[5m]))",
        ],
    };
    for query in queries {
        let mut best = f64::INFINITY;
        let mut result = String::new();
        for _ in 0..5 {
            let t0 = Instant::now();
            let v = instant_query(&history, query, end, Limits::default())?;
            best = best.min(t0.elapsed().as_secs_f64());
            result = match v {
                Value::Vector(v) => format!("{} series", v.len()),
                other => format!("{other:?}"),
            };
        }
        println!("query {query}: {:.1} ms (best of 5; {result})", best * 1e3);
    }

    // Checkpoint of the whole history: write it, then read it back as a restart does.
    let cp_dir = tempfile::tempdir()?;
    let t0 = Instant::now();
    let checkpoint = vigil_store::checkpoint::Checkpoint {
        history: history.snapshot(),
        ..Default::default()
    };
    let copied = t0.elapsed();
    let bytes = vigil_store::checkpoint::write(cp_dir.path(), &checkpoint)?;
    let written = t0.elapsed();
    drop(checkpoint);
    let t1 = Instant::now();
    let read = vigil_store::checkpoint::read(cp_dir.path())
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| anyhow::anyhow!("no checkpoint"))?;
    let restored = History::restore(read.history).map_err(anyhow::Error::msg)?;
    let loaded = t1.elapsed();
    anyhow::ensure!(
        restored.stats() == history.stats(),
        "restored history differs"
    );
    println!(
        "checkpoint: {:.1} MiB; copy {:.2} s, copy + write {:.2} s; restart (read, verify, rebuild {} series) {:.2} s",
        bytes as f64 / (1 << 20) as f64,
        copied.as_secs_f64(),
        written.as_secs_f64(),
        restored.stats().series,
        loaded.as_secs_f64()
    );
    drop(restored);

    // Write-ahead log: the same batches an agent would push, for 1 % of the hosts.
    let wal_hosts = (hosts / 100).max(1);
    let dir = tempfile::tempdir()?;
    {
        let (mut wal, _) = Wal::open(dir.path(), 0)?;
        let mut state = 1u64;
        for i in 0..steps {
            for h in 0..wal_hosts {
                let families = (0..series)
                    .filter_map(|s| {
                        let l = labels(h, s);
                        let (t, v) = fleet.point(h, s, i, &mut state)?;
                        Some(Family {
                            name: l
                                .iter()
                                .find(|(k, _)| k == "__name__")
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default(),
                            help: String::new(),
                            kind: Kind::Gauge as i32,
                            bucket_bounds: vec![],
                            series: vec![Series {
                                labels: l
                                    .into_iter()
                                    .filter(|(k, _)| k != "__name__")
                                    .map(|(name, value)| Label { name, value })
                                    .collect(),
                                value: v,
                                timestamp_ms: t,
                                window: None,
                            }],
                        })
                    })
                    .collect();
                let t = fleet.point(h, 0, i, &mut state).map_or(0, |p| p.0);
                let batch = PushRequest {
                    agent_id: format!("host-{h:04}"),
                    epoch: 1,
                    sequence: i as u64 + 1,
                    timestamp_ms: t,
                    flush_interval_ms: 10_000,
                    families,
                    last: false,
                    ..Default::default()
                };
                wal.append(&batch, t)?;
            }
        }
    }
    let store = vigil_store::Store::new(
        std::time::Duration::from_secs(300),
        std::time::Duration::from_secs(86_400),
    );
    let t0 = Instant::now();
    let (_, replay) = Wal::open(dir.path(), 0)?;
    let read = t0.elapsed();
    for (received, batch) in &replay.batches {
        store.apply(batch, *received);
    }
    let total = t0.elapsed();
    let replayed: usize = replay.batches.iter().map(|(_, b)| b.families.len()).sum();
    println!(
        "write-ahead log: {wal_hosts} hosts, {} batches, {:.1} MiB; replay {:.2} s ({:.2} s reading), {:.2} M samples/s; \
         the whole fleet's hour would take about {:.0} s",
        replay.batches.len(),
        replay.bytes as f64 / (1 << 20) as f64,
        total.as_secs_f64(),
        read.as_secs_f64(),
        replayed as f64 / total.as_secs_f64() / 1e6,
        total.as_secs_f64() * hosts as f64 / wal_hosts as f64
    );
    Ok(())
}
