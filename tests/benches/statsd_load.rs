//! StatsD over loopback: single-line datagrams sent at a fixed rate to a
//! release agent (`cargo build --release --bins && cargo bench -p
//! vigil-tests --bench statsd_load`; env `RATE=` datagrams per second,
//! default 200,000, `SECONDS=` default 10). Reports what the agent counted
//! against what was sent, the kernel's UDP receive-buffer drops
//! (`RcvbufErrors` in /proc/net/snmp, host-wide, over the run), the agent's
//! CPU (from the scheduler) and its resident memory at the end.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use vigil_tests::{Collector, start_agent};
use vigil_tests::{process_cpu_ns as cpu_ns, process_rss_kib as rss_kib, unix_now as now};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rcvbuf_errors() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (lines.next().context("Udp")?, lines.next().context("Udp")?);
    let i = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .context("RcvbufErrors")?;
    Ok(values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

fn main() -> Result<()> {
    let rate = env("RATE", 200_000);
    let seconds = env("SECONDS", 10);
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"load\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n[sources.statsd]\nudp = \"127.0.0.1:{port}\"\n",
            collector.ingest
        ),
    )?;
    agent.wait_for_log("StatsD listening", Duration::from_secs(20))?;
    let pid = agent.id();
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(("127.0.0.1", port))?;
    let lines: Vec<String> = (0..100)
        .map(|i| format!("load.t{}:{}|ms|#route:/r{}", i % 10, i, i % 3))
        .collect();
    let drops_before = rcvbuf_errors()?;
    let cpu_before = cpu_ns(pid);
    let started = Instant::now();
    let total = rate * seconds;
    let mut sent = 0u64;
    while sent < total {
        // Send what is due by now, in bursts of at most 1,000.
        let due = ((started.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        for _ in 0..(due - sent).min(1_000) {
            socket.send(lines[(sent % 100) as usize].as_bytes())?;
            sent += 1;
        }
    }
    let send_time = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let cpu = (cpu_ns(pid) - cpu_before) as f64 / 1e9;
    let drops = rcvbuf_errors()? - drops_before;
    // Two flushes later the collector has the agent's last count.
    std::thread::sleep(Duration::from_secs(3));
    let counted = collector.query(
        "vigil_agent_statsd_datagrams_total{instance=\"load\"}",
        now(),
    )?["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64;
    println!(
        "| {rate}/s for {seconds} s | {total} sent in {send_time:.1} s | {counted} counted by the agent | {drops} | {:.1} % of a core | {} kB |",
        cpu / send_time * 100.0,
        rss_kib(pid)
    );
    Ok(())
}
