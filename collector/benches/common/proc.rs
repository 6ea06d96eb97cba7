//! What the benches measure of the processes they run: CPU and memory from
//! /proc, a collector's own counters, and the release collector binary.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

/// CPU nanoseconds of process `pid` so far (every thread).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Resident memory of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// A free port on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The sum of every sample of family `name` on a collector's `/metrics`.
pub async fn metric(http: std::net::SocketAddr, name: &str) -> Result<f64> {
    let body = reqwest::get(format!("http://{http}/metrics"))
        .await?
        .text()
        .await?;
    let values: Vec<f64> = body
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            rest.starts_with([' ', '{']).then_some(rest)
        })
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .collect();
    anyhow::ensure!(!values.is_empty(), "no {name} on /metrics");
    Ok(values.iter().sum())
}

/// The release collector binary (`cargo build --release --bins`) started
/// with `config`, its output discarded.
pub fn spawn_collector(config: &Path) -> Result<Child> {
    let binary = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/release/vigil-collector"
    );
    Command::new(binary)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("{binary}: run cargo build --release --bins first"))
}

/// A peer process, killed when dropped.
pub struct Peer {
    /// The process.
    pub child: Child,
    /// Where its HTTP port listens.
    pub addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's VictoriaMetrics on 127.0.0.1:`port`, its data in `data`,
/// deduplication off and no query latency offset, so that what was written
/// reads back at once and duplicates show.
pub fn spawn_victoria_metrics(data: &Path, port: u16) -> Result<Child> {
    Command::new("victoria-metrics")
        .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
        .arg(format!("-storageDataPath={}", data.display()))
        .arg("-search.latencyOffset=0s")
        .arg("-retentionPeriod=100y")
        .arg("-loggerLevel=ERROR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting victoria-metrics (apt-get install victoria-metrics)")
}
