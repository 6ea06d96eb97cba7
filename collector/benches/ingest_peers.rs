//! Ingest per core beside the peers: `AGENTS` agents (default 100) each push
//! `BATCHES` batches (default 20) of `SERIES` gauges (default 400) over
//! loopback gRPC to the release collector binary (its own process), with the
//! write-ahead log synced before every acknowledgement (`always`, the
//! default) and then on an interval. The same samples then go to Debian's
//! VictoriaMetrics 1.79 and Prometheus 2.42 through their remote_write
//! receivers, from as many keep-alive clients, each agent's requests in
//! order. Every figure is samples per CPU-second of that one process (CPU
//! from /proc/PID/task/*/schedstat), so the load generator, which shares
//! the machine, is not counted; each is given for the whole run, for the
//! first batch of every agent (where every sample makes a new series) and
//! for the later batches (a fleet's steady state); each store's count of
//! what it holds is checked against what was sent. `GZIP=1` compresses the
//! pushes as agents do; `PEERS=0` measures the collector alone; `ROUNDS=N`
//! measures the collector N times with each policy, alternating.
//!
//!     cargo build --release --bins && cargo bench -p vigil-collector --bench ingest_peers

#[path = "common/fleet.rs"]
mod fleet;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/push.rs"]
mod push;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use prost::Message;
use vigil_remote_write::prompb;
use vigil_shared::proto::PushRequest;

use fleet::env;
use proc::{Peer, cpu_ns, free_port, metric, rss_kib};

async fn wait_ready(url: &str, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} not ready at {url}")
}

/// One instant query's single value (a `sum(...)`).
async fn query_value(addr: SocketAddr, query: &str) -> Result<f64> {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .finish();
    let text = reqwest::get(format!("http://{addr}/api/v1/query?{q}"))
        .await?
        .text()
        .await?;
    let body: serde_json::Value = serde_json::from_str(&text)?;
    body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no value for {query}: {body}"))
}

async fn collector(dir: &Path, policy: &str) -> Result<(Peer, SocketAddr)> {
    let (http, ingest) = (free_port()?, free_port()?);
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\
             [store]\ndata_dir = \"{}\"\nwal_fsync = \"{policy}\"\n[rules]\nhost_down = false\n",
            dir.join("data").display()
        ),
    )?;
    let child = proc::spawn_collector(&config)?;
    let peer = Peer {
        child,
        addr: ([127, 0, 0, 1], http).into(),
    };
    wait_ready(&format!("http://{}/-/ready", peer.addr), "collector").await?;
    Ok((peer, ([127, 0, 0, 1], ingest).into()))
}

/// The same samples as `work`, as snappy-compressed remote_write requests.
fn remote_write_bodies(work: &[Vec<PushRequest>]) -> Vec<Vec<Vec<u8>>> {
    work.iter()
        .map(|batches| {
            batches
                .iter()
                .map(|b| {
                    let request = prompb::WriteRequest {
                        timeseries: b
                            .families
                            .iter()
                            .flat_map(|f| {
                                f.series.iter().map(|s| {
                                    let mut labels: Vec<prompb::Label> = s
                                        .labels
                                        .iter()
                                        .map(|l| prompb::Label {
                                            name: l.name.clone(),
                                            value: l.value.clone(),
                                        })
                                        .collect();
                                    labels.push(prompb::Label {
                                        name: "__name__".into(),
                                        value: f.name.clone(),
                                    });
                                    labels.sort();
                                    prompb::TimeSeries {
                                        labels,
                                        samples: vec![prompb::Sample {
                                            value: s.value,
                                            timestamp: s.timestamp_ms,
                                        }],
                                        histograms: Vec::new(),
                                    }
                                })
                            })
                            .collect(),
                    };
                    snap::raw::Encoder::new()
                        .compress_vec(&request.encode_to_vec())
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect()
}

/// Posts each agent's requests in order, all agents at once.
async fn post_all(url: String, bodies: Vec<Vec<Vec<u8>>>) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(bodies.len())
        .build()?;
    let mut tasks = tokio::task::JoinSet::new();
    for requests in bodies {
        let client = client.clone();
        let url = url.clone();
        tasks.spawn(async move {
            for body in requests {
                let answer = client
                    .post(&url)
                    .header("Content-Encoding", "snappy")
                    .header("Content-Type", "application/x-protobuf")
                    .header("X-Prometheus-Remote-Write-Version", "0.1.0")
                    .body(body)
                    .send()
                    .await?;
                if !answer.status().is_success() {
                    bail!("{url}: {}", answer.status());
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// CPU-seconds of one receiver's process in each phase: the first batch of
/// every agent (each sample a new series) and the later ones.
struct Phases {
    first_s: f64,
    rest_s: f64,
    took: Duration,
}

/// Each agent's first batch, and the rest.
fn split_first<T>(work: Vec<Vec<T>>) -> (Vec<Vec<T>>, Vec<Vec<T>>) {
    work.into_iter()
        .map(|mut batches| {
            let rest = batches.split_off(batches.len().min(1));
            (batches, rest)
        })
        .unzip()
}

/// Posts every agent's first request, then the rest, measuring the CPU of
/// process `pid` in each phase.
async fn post_phased(pid: u32, url: String, bodies: Vec<Vec<Vec<u8>>>) -> Result<Phases> {
    let (first_bodies, rest) = split_first(bodies);
    let cpu = cpu_ns(pid);
    let started = Instant::now();
    post_all(url.clone(), first_bodies).await?;
    let cpu_first = cpu_ns(pid);
    post_all(url, rest).await?;
    Ok(Phases {
        first_s: (cpu_first - cpu) as f64 / 1e9,
        rest_s: (cpu_ns(pid) - cpu_first) as f64 / 1e9,
        took: started.elapsed(),
    })
}

fn report(what: &str, samples: f64, first: f64, phases: &Phases, rss: u64) {
    let rest = samples - first;
    let all_s = phases.first_s + phases.rest_s;
    println!(
        "| {what} | {:.0} | {all_s:.2} | **{:.0}** | {:.0} | **{:.0}** | {} |",
        samples / phases.took.as_secs_f64(),
        samples / all_s.max(1e-9),
        first / phases.first_s.max(1e-9),
        rest / phases.rest_s.max(1e-9),
        rss / 1024,
    );
}

fn main() -> Result<()> {
    let agents = env("AGENTS", 100);
    let batches = env("BATCHES", 20) as u64;
    let series = env("SERIES", 400);
    let gzip = env("GZIP", 0) == 1;
    // reqwest is built without a TLS provider of its own; nothing here is TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for program in ["victoria-metrics", "prometheus"] {
        if Command::new(program).arg("--version").output().is_err()
            && Command::new(program).arg("-version").output().is_err()
        {
            bail!("{program} is not installed: apt-get install {program}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let total = (agents as u64 * batches * series as u64) as f64;
    let first = (agents * series) as f64;
    println!(
        "{agents} agents x {batches} batches of {series} gauges ({total:.0} samples){}",
        if gzip { ", gzip" } else { "" }
    );
    println!(
        "| receiver | samples/s (wall) | CPU-s of its process | samples per CPU-second, all | first batches: new series per CPU-second | later batches: samples per CPU-second | RSS after, MiB |"
    );
    println!("|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        let work = || -> Vec<Vec<PushRequest>> {
            (0..agents)
                .map(|a| {
                    (1..=batches)
                        .map(|s| push::batch(a, s, series, 600_000, 1000))
                        .collect()
                })
                .collect()
        };
        let rounds = env("ROUNDS", 1);
        let policies = ["always", "interval"];
        for policy in policies.iter().cycle().take(2 * rounds) {
            let dir = tempfile::tempdir()?;
            let (peer, ingest) = collector(dir.path(), policy).await?;
            let pid = peer.child.id();
            let (first_pushes, pushes) = split_first(work());
            let rss_before = rss_kib(pid);
            let cpu = cpu_ns(pid);
            let started = Instant::now();
            push::push_all_with(ingest, first_pushes, gzip).await?;
            let cpu_first = cpu_ns(pid);
            push::push_all_with(ingest, pushes, gzip).await?;
            let phases = Phases {
                first_s: (cpu_first - cpu) as f64 / 1e9,
                rest_s: (cpu_ns(pid) - cpu_first) as f64 / 1e9,
                took: started.elapsed(),
            };
            let applied = metric(peer.addr, "vigil_collector_series_applied_total").await?;
            if applied != total {
                bail!("the collector applied {applied} samples of {total}");
            }
            let rss_after = rss_kib(pid);
            let syncs = metric(peer.addr, "vigil_collector_wal_syncs_total").await?;
            eprintln!(
                "  {syncs:.0} log syncs for {} pushes",
                agents as u64 * batches
            );
            report(
                &format!("Vigil collector, wal_fsync = {policy}"),
                total,
                first,
                &phases,
                rss_after,
            );
            let active = (agents * series) as f64;
            eprintln!(
                "  collector RSS {rss_before} kB before, {rss_after} kB after: {:.0} bytes per active series ({active:.0} series, {batches} samples each)",
                (rss_after.saturating_sub(rss_before) * 1024) as f64 / active
            );
        }

        if env("PEERS", 1) == 0 {
            return Ok(());
        }
        let bodies = remote_write_bodies(&work());
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let vm = Peer {
            child: proc::spawn_victoria_metrics(&dir.path().join("vm"), port)?,
            addr: ([127, 0, 0, 1], port).into(),
        };
        wait_ready(&format!("http://{}/health", vm.addr), "victoria-metrics").await?;
        let pid = vm.child.id();
        let url = format!("http://{}/api/v1/write", vm.addr);
        let phases = post_phased(pid, url, bodies.clone()).await?;
        let rss = rss_kib(pid);
        reqwest::get(format!("http://{}/internal/force_flush", vm.addr)).await?;
        let held = query_value(vm.addr, "sum(count_over_time(bench_value[1h]))").await?;
        if held != total {
            bail!("VictoriaMetrics holds {held} samples of {total}");
        }
        report("VictoriaMetrics 1.79", total, first, &phases, rss);
        drop(vm);

        let port = free_port()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
        let prom = Peer {
            child: Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("prom").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("prometheus")?,
            addr: ([127, 0, 0, 1], port).into(),
        };
        wait_ready(&format!("http://{}/-/ready", prom.addr), "prometheus").await?;
        let pid = prom.child.id();
        let url = format!("http://{}/api/v1/write", prom.addr);
        let phases = post_phased(pid, url, bodies).await?;
        let rss = rss_kib(pid);
        let held = query_value(prom.addr, "sum(count_over_time(bench_value[1h]))").await?;
        if held != total {
            bail!("Prometheus holds {held} samples of {total}");
        }
        report("Prometheus 2.42", total, first, &phases, rss);
        anyhow::Ok(())
    })
}
