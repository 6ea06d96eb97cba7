//! Grafana's calls against the collector and against Prometheus 2.42 over the
//! same samples (`cargo bench -p vigil-collector --bench grafana_api`):
//!
//! - the Host dashboard's heaviest panel ("CPU by mode":
//!   `sum by (mode) (rate(node_cpu_seconds_total{…}[1m]))`) as
//!   `query_range` over 24 h at a 15 s step, for one host (a store of one
//!   host) and for 100 hosts (a store of 100 hosts, `instance=~".+"`);
//! - `label/instance/values` and `series` over 1,000 hosts (the last hour).
//!
//! The samples are node_cpu_seconds_total of 2 CPUs × 8 modes per host (and
//! node_uname_info, node_load1 for the label calls) every 15 s. The collector
//! gets them as a checkpoint in its data folder and serves them from this
//! process; Prometheus gets them through `promtool tsdb
//! create-blocks-from openmetrics`. Each call is made 5 times after one
//! warm-up; the median is reported. Needs Debian's `prometheus` package.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use vigil_store::Store;

#[path = "common/proc.rs"]
mod proc;
use proc::{Peer, free_port};

const STEP_MS: i64 = 15_000;

/// One series: its labels (`__name__` included) and `(ms, value)` points.
type SeriesData = (Vec<(String, String)>, Vec<(i64, f64)>);
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn get(addr: SocketAddr, path: &str) -> Result<(u16, usize)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(300)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status")?;
    Ok((status, raw.len()))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Median of timed calls after a warm-up: 5 calls, or 51 for a call under
/// 5 ms (sub-millisecond calls swap order between runs of 5):
/// (milliseconds, bytes).
fn time_call(addr: SocketAddr, path: &str) -> Result<(f64, usize)> {
    let started = Instant::now();
    let (status, _) = get(addr, path)?;
    if status != 200 {
        bail!("{path}: HTTP {status}");
    }
    let calls = if started.elapsed() < Duration::from_millis(5) {
        51
    } else {
        5
    };
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..calls {
        let started = Instant::now();
        let (_, b) = get(addr, path)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        bytes = b;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], bytes))
}

/// The samples of `hosts` hosts over `span_ms` ending at `end`, as
/// (labels, points) per series.
fn fleet(hosts: usize, span_ms: i64, end: i64, labels_only_series: bool) -> Vec<SeriesData> {
    let mut out = Vec::new();
    let start = end - span_ms;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 1000) as f64 / 100.0
    };
    for h in 0..hosts {
        let instance = format!("host-{h:04}");
        let base = |name: &str| {
            vec![
                ("__name__".to_string(), name.to_string()),
                ("instance".to_string(), instance.clone()),
                ("job".to_string(), "node".to_string()),
            ]
        };
        for cpu in 0..2 {
            for mode in MODES {
                let mut labels = base("node_cpu_seconds_total");
                labels.push(("cpu".into(), cpu.to_string()));
                labels.push(("mode".into(), mode.into()));
                labels.sort();
                let mut v = 1000.0;
                let points = (start..=end)
                    .step_by(STEP_MS as usize)
                    .map(|t| {
                        v += next();
                        (t, v)
                    })
                    .collect();
                out.push((labels, points));
            }
        }
        if labels_only_series {
            let mut uname = base("node_uname_info");
            uname.push(("nodename".into(), instance.clone()));
            uname.push(("sysname".into(), "Linux".into()));
            uname.sort();
            let points = (start..=end)
                .step_by(STEP_MS as usize)
                .map(|t| (t, 1.0))
                .collect();
            out.push((uname, points));
            let load = base("node_load1");
            let points = (start..=end)
                .step_by(STEP_MS as usize)
                .map(|t| (t, next()))
                .collect();
            out.push((load, points));
        }
    }
    out
}

fn write_openmetrics(path: &Path, data: &[SeriesData]) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut by_name: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, (labels, _)) in data.iter().enumerate() {
        let name = labels
            .iter()
            .find(|(k, _)| k == "__name__")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        by_name.entry(name).or_default().push(i);
    }
    for (name, members) in by_name {
        writeln!(out, "# TYPE {name} gauge")?;
        for i in members {
            let (labels, points) = &data[i];
            let text: Vec<String> = labels
                .iter()
                .filter(|(k, _)| k != "__name__")
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let text = text.join(",");
            for (t, v) in points {
                writeln!(out, "{name}{{{text}}} {v} {}.{:03}", t / 1000, t % 1000)?;
            }
        }
    }
    writeln!(out, "# EOF")?;
    Ok(())
}

fn wait_ready(addr: SocketAddr, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while Instant::now() < deadline {
        if get(addr, "/-/ready").is_ok_and(|(s, _)| s == 200) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("{what} not ready")
}

/// Prometheus over blocks made from `data`.
fn prometheus(dir: &Path, data: &[SeriesData]) -> Result<Peer> {
    let om = dir.join("data.om");
    write_openmetrics(&om, data)?;
    let tsdb = dir.join("tsdb");
    let started = Instant::now();
    let status = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&om)
        .arg(&tsdb)
        .stdout(Stdio::null())
        .status()
        .context("promtool (Debian's prometheus package)")?;
    if !status.success() {
        bail!("promtool create-blocks-from failed");
    }
    std::fs::remove_file(&om)?;
    eprintln!(
        "  promtool backfill: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let port = free_port()?;
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 15s\n")?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", tsdb.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=30d")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("prometheus (Debian's prometheus package)")?;
    let peer = Peer {
        child,
        addr: ([127, 0, 0, 1], port).into(),
    };
    wait_ready(peer.addr, "prometheus")?;
    Ok(peer)
}

/// The collector binary over a checkpoint made from `data`.
fn collector(dir: &Path, data: Vec<SeriesData>) -> Result<Peer> {
    let store = Store::new(Duration::from_secs(300), Duration::from_secs(48 * 3600));
    let mut samples = Vec::new();
    for (labels, points) in data {
        for (t, v) in points {
            samples.push((labels.clone(), t, v));
        }
        if samples.len() > 1_000_000 {
            store.write_rule_samples(std::mem::take(&mut samples));
        }
    }
    store.write_rule_samples(samples);
    let data_dir = dir.join("collector-data");
    std::fs::create_dir_all(&data_dir)?;
    vigil_store::checkpoint::write(&data_dir, &store.snapshot(0))?;
    drop(store);
    let (http, ingest) = (free_port()?, free_port()?);
    let config = dir.join("collector.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n[store]\ndata_dir = \"{}\"\nretention = \"48h\"\n[rules]\nhost_down = false\n",
            data_dir.display()
        ),
    )?;
    let child = proc::spawn_collector(&config)?;
    let peer = Peer {
        child,
        addr: ([127, 0, 0, 1], http).into(),
    };
    wait_ready(peer.addr, "collector")?;
    Ok(peer)
}

fn compare(what: &str, path: &str, vigil: &Peer, prom: &Peer) -> Result<()> {
    let (ours, our_bytes) = time_call(vigil.addr, path)?;
    let (theirs, their_bytes) = time_call(prom.addr, path)?;
    println!(
        "| {what} | {ours:.1} ms ({our_bytes} B) | {theirs:.1} ms ({their_bytes} B) | {:.2}× |",
        theirs / ours
    );
    Ok(())
}

fn main() -> Result<()> {
    let now = (vigil_store::now_ms() / STEP_MS) * STEP_MS;
    let day = env("HOURS", 24) as i64 * 3600 * 1000;
    println!("| call | Vigil collector | Prometheus 2.42 | Prometheus ÷ Vigil |");
    println!("|---|---|---|---|");
    let mut sizes = vec![1];
    if env("HOSTS", 100) > 1 {
        sizes.push(env("HOSTS", 100));
    }
    for hosts in sizes {
        let dir = tempfile::tempdir()?;
        let data = fleet(hosts, day, now, false);
        let prom = prometheus(dir.path(), &data)?;
        let vigil = collector(dir.path(), data)?;
        let selector = if hosts == 1 {
            "instance=\"host-0000\""
        } else {
            "instance=~\".+\""
        };
        let query = format!(
            "sum by (mode) (rate(node_cpu_seconds_total{{{selector},mode!=\"idle\"}}[1m]))"
        );
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={}&step=15",
            encode(&query),
            (now - day) / 1000,
            now / 1000
        );
        compare(
            &format!(
                "CPU by mode, 24 h at 15 s, {hosts} host(s) ({} series)",
                hosts * 16
            ),
            &path,
            &vigil,
            &prom,
        )?;
    }
    let hosts = env("LABEL_HOSTS", 1000);
    let dir = tempfile::tempdir()?;
    let data = fleet(hosts, 3600 * 1000, now, true);
    let prom = prometheus(dir.path(), &data)?;
    let vigil = collector(dir.path(), data)?;
    let range = format!("start={}&end={}", (now - 3600 * 1000) / 1000, now / 1000);
    compare(
        &format!("label/instance/values, {hosts} hosts"),
        &format!("/api/v1/label/instance/values?{range}"),
        &vigil,
        &prom,
    )?;
    compare(
        &format!("label/instance/values?match[]=node_uname_info, {hosts} hosts"),
        &format!("/api/v1/label/instance/values?match[]=node_uname_info&{range}"),
        &vigil,
        &prom,
    )?;
    compare(
        &format!("series?match[]=node_uname_info, {hosts} hosts"),
        &format!("/api/v1/series?match[]=node_uname_info&{range}"),
        &vigil,
        &prom,
    )?;
    compare(
        &format!(
            "series?match[]={{job=\"node\"}}, {hosts} hosts ({} series)",
            hosts * 18
        ),
        &format!(
            "/api/v1/series?match[]={}&{range}",
            encode("{job=\"node\"}")
        ),
        &vigil,
        &prom,
    )?;
    compare(
        &format!("labels, {hosts} hosts"),
        &format!("/api/v1/labels?{range}"),
        &vigil,
        &prom,
    )?;
    Ok(())
}
