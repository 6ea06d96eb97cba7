//! remote_write out of the collector, against real stores: Debian's
//! VictoriaMetrics and Prometheus 2.42's receiver hold every sample of the
//! chosen series exactly as the collector's own history does; a store down
//! for 60 s while the collector is SIGKILLed and restarted loses nothing
//! and duplicates nothing; a store answering 500, then 429 with
//! `Retry-After: 3`, then 400 gets retries spaced as specified and the 400
//! batch dropped and counted; bad `[[remote_write]]` entries are refused
//! with file, line and key.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use prost::Message;
use vigil_shared::histogram::{RATIO, WindowEncoder};
use vigil_shared::proto::ingest_client::IngestClient;
use vigil_shared::proto::{Family, Kind, Label, PushRequest, Series};
use vigil_tests::{
    Collector, Process, Prometheus, VictoriaMetrics, binary, free_port, get_json, start_agent,
    url_encode, wait_for,
};

/// `prometheus.WriteRequest` as Prometheus's `remote.proto` and
/// `types.proto` define it (the fields checked here), written out on this
/// side so that the collector's encoding is read by an independent one.
#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<PromLabel>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<PromSample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PromLabel {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PromSample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

impl WriteRequest {
    fn sample_count(&self) -> usize {
        self.timeseries.iter().map(|t| t.samples.len()).sum()
    }
}

/// An agent sampling every 250 ms and shipping every second, without
/// StatsD or OTLP listeners.
fn agent(dir: &std::path::Path, name: &str, ingest: SocketAddr) -> Result<Process> {
    start_agent(
        dir,
        name,
        &format!(
            "instance = \"{name}\"\nsample_interval = \"250ms\"\nflush_interval = \"1s\"\n\
             [collector]\nendpoint = \"http://{ingest}\"\n\
             [sources.statsd]\nudp = \"\"\n[sources.otlp]\nenabled = false\n"
        ),
    )
}

/// Raw samples by rendered label set.
type SeriesSamples = BTreeMap<String, Vec<(i64, f64)>>;

/// Raw samples of `selector` over the last hour, from a Prometheus-API
/// server (the collector or Prometheus): labels rendered → samples.
fn raw_samples(addr: SocketAddr, selector: &str) -> Result<SeriesSamples> {
    let query = format!("{selector}[1h]");
    let (status, json) = get_json(
        addr,
        &format!(
            "/api/v1/query?query={}&time={}",
            url_encode(&query),
            vigil_tests::unix_now()
        ),
    )?;
    ensure!(status == 200, "{query}: {status} {json}");
    let mut out = BTreeMap::new();
    for series in json["data"]["result"].as_array().context("no result")? {
        let samples = series["values"]
            .as_array()
            .context("no values")?
            .iter()
            .map(|p| {
                let t = (p[0].as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
                let v = p[1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(f64::NAN);
                (t, v)
            })
            .collect();
        out.insert(render(&series["metric"]), samples);
    }
    Ok(out)
}

fn render(metric: &serde_json::Value) -> String {
    let mut pairs: Vec<String> = metric
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    pairs.join(",")
}

fn vm_samples(vm: &VictoriaMetrics, selector: &str) -> Result<SeriesSamples> {
    Ok(vm
        .export(selector)?
        .into_iter()
        .map(|(metric, mut samples)| {
            samples.sort_by_key(|(t, _)| *t);
            (render(&metric), samples)
        })
        .collect())
}

fn same(a: &[(i64, f64)], b: &[(i64, f64)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ta, va), (tb, vb))| {
            ta == tb
                && (va == vb || (va.is_nan() && vb.is_nan()) || (va - vb).abs() <= 1e-9 * va.abs())
        })
}

/// The series compared: gauges, a counter, a histogram's `_count` and a
/// recorded series.
const CHOSEN: [&str; 4] = [
    "node_load1",
    "node_memory_MemAvailable_bytes",
    "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"}",
    "rw:load1:doubled",
];

fn with_instance(selector: &str, instance: &str) -> String {
    match selector.strip_suffix('}') {
        Some(open) => format!("{open},instance=\"{instance}\"}}"),
        None => format!("{selector}{{instance=\"{instance}\"}}"),
    }
}

/// Samples the collector counts as sent to the store `name`.
fn sent_to(scrape: &vigil_tests::Scrape, name: &str) -> f64 {
    scrape
        .value(
            "vigil_collector_remote_write_samples_sent_total",
            &[("remote_name", name)],
        )
        .unwrap_or(0.0)
}

/// Prometheus as a remote_write receiver, with `extra` flags.
fn receiver(dir: &std::path::Path, name: &str, extra: &[&str]) -> Result<Prometheus> {
    let flags: Vec<&str> = std::iter::once("--web.enable-remote-write-receiver")
        .chain(extra.iter().copied())
        .collect();
    Prometheus::start_with(dir, name, "global:\n  scrape_interval: 1m\n", &flags)
}

/// A collector on free ports with `rules` in its `[rules]` section and one
/// `[[remote_write]]` entry per `(name, store, extra keys)`.
fn remote_write_collector(
    dir: &std::path::Path,
    rules: &str,
    stores: &[(&str, SocketAddr, &str)],
) -> Result<Collector> {
    let (http, ingest) = (free_port()?, free_port()?);
    let mut config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\
         [store]\ndata_dir = \"{}\"\n[rules]\n{rules}\n",
        dir.join("collector-data").display()
    );
    for (name, store, extra) in stores {
        config.push_str(&format!(
            "[[remote_write]]\nname = \"{name}\"\nurl = \"http://{store}/api/v1/write\"\n{extra}\n"
        ));
    }
    Collector::launch(dir, "collector", http, ingest, &config)
}

#[test]
fn victoriametrics_and_prometheus_hold_every_sample_once_as_the_collector_does() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vm = VictoriaMetrics::start(dir.path(), "vm", 0)?;
    let prom = receiver(dir.path(), "prom", &[])?;
    let rules = dir.path().join("rw.rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: rw\n    interval: 1s\n    rules:\n      - record: rw:load1:doubled\n        expr: node_load1 * 2\n",
    )?;
    let collector = remote_write_collector(
        dir.path(),
        &format!("files = [\"{}\"]", rules.display()),
        &[("vm", vm.http, ""), ("prom", prom.http, "")],
    )?;
    let mut agent = agent(dir.path(), "rw", collector.ingest)?;
    std::thread::sleep(Duration::from_secs(8));
    agent.terminate(Duration::from_secs(20))?;
    // The collector's own history is the reference.
    let mut reference = BTreeMap::new();
    for selector in CHOSEN {
        let selector = with_instance(selector, "rw");
        let got = raw_samples(collector.http, &selector)?;
        ensure!(
            got.len() == 1,
            "{selector}: {} series at the collector",
            got.len()
        );
        let samples = got.into_values().next().unwrap_or_default();
        ensure!(
            samples.len() >= 8,
            "{selector}: only {} samples",
            samples.len()
        );
        reference.insert(selector, samples);
    }
    for (selector, want) in &reference {
        let stores: [(&str, &dyn Fn() -> Result<SeriesSamples>); 2] = [
            ("VictoriaMetrics", &|| vm_samples(&vm, selector)),
            ("Prometheus", &|| raw_samples(prom.http, selector)),
        ];
        for (store, samples) in stores {
            // A recorded series goes on growing after the reference was
            // read (the rule runs every second): compare up to its end.
            let until = want.last().map_or(i64::MAX, |(t, _)| *t);
            let check = || -> Option<()> {
                let got = samples().ok()?;
                let series = got.values().next()?;
                let upto: Vec<(i64, f64)> = series
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t <= until)
                    .collect();
                (got.len() == 1 && same(&upto, want)).then_some(())
            };
            if wait_for(
                &format!("{selector} in {store}"),
                Duration::from_secs(60),
                check,
            )
            .is_err()
            {
                bail!(
                    "{selector}: {store} has {:?}\ncollector has {want:?}\ncollector log:\n{}",
                    samples()?,
                    collector.process.log()
                );
            }
        }
        eprintln!(
            "{selector}: {} samples, the same in both stores",
            want.len()
        );
    }
    let scrape = collector.scrape()?;
    for name in ["vm", "prom"] {
        let sent = sent_to(&scrape, name);
        ensure!(sent > 0.0, "{name}: nothing counted as sent");
        eprintln!("{name}: {sent} samples sent");
    }
    let bytes = scrape
        .value("vigil_collector_remote_write_queue_bytes", &[])
        .unwrap_or(0.0);
    let sent = scrape
        .value(
            "vigil_collector_remote_write_samples_sent_total",
            &[("remote_name", "vm")],
        )
        .unwrap_or(0.0);
    eprintln!(
        "queue: {bytes} bytes for {sent} samples ({:.1} bytes a sample)",
        bytes / sent.max(1.0)
    );
    Ok(())
}

/// One pushed histogram window of `door_busy_ratio` (the ratio ladder,
/// scale 10^6) at `t`.
fn window_batch(sequence: u64, t: i64, samples: &[f64]) -> Result<PushRequest> {
    let mut encoder = WindowEncoder::new()?;
    let window = encoder.encode(samples, &RATIO, t - 1_000, t)?;
    let labels = [("instance", "door"), ("job", "node")]
        .iter()
        .map(|(n, v)| Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    Ok(PushRequest {
        agent_id: "door".into(),
        epoch: 7,
        sequence,
        timestamp_ms: t,
        flush_interval_ms: 1_000,
        families: vec![Family {
            name: "door_busy_ratio".into(),
            help: "A window.".into(),
            kind: Kind::Histogram as i32,
            bucket_bounds: RATIO.bounds.to_vec(),
            series: vec![Series {
                labels,
                value: samples.last().copied().unwrap_or_default(),
                timestamp_ms: t,
                window: Some(window),
            }],
        }],
        ..Default::default()
    })
}

/// A native histogram as Prometheus's API shows it: count, sum, and its
/// buckets as (upper bound, count).
type NativeHistogram = (f64, f64, Vec<(f64, f64)>);

/// The native histogram `selector` holds now at Prometheus.
fn prometheus_native(addr: SocketAddr, selector: &str) -> Result<NativeHistogram> {
    let (status, json) = get_json(
        addr,
        &format!(
            "/api/v1/query?query={}&time={}",
            url_encode(selector),
            vigil_tests::unix_now()
        ),
    )?;
    ensure!(status == 200, "{selector}: {status} {json}");
    let h = &json["data"]["result"][0]["histogram"][1];
    let number = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<f64>().ok());
    let count = number(&h["count"]).with_context(|| format!("no native histogram: {json}"))?;
    let sum = number(&h["sum"]).context("no sum")?;
    let buckets = h["buckets"]
        .as_array()
        .context("no buckets")?
        .iter()
        .filter_map(|b| Some((number(&b[2])?, number(&b[3])?)))
        .collect();
    Ok((count, sum, buckets))
}

#[test]
fn histogram_windows_go_as_native_histograms_where_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vm = VictoriaMetrics::start(dir.path(), "vm", 0)?;
    let prom = receiver(dir.path(), "prom", &["--enable-feature=native-histograms"])?;
    // Without the feature flag, Prometheus answers 500 to a request that
    // carries a native histogram.
    let plain = receiver(dir.path(), "plain", &[])?;
    let native = "send_native_histograms = true";
    let collector = remote_write_collector(
        dir.path(),
        "host_down = false",
        &[
            ("vm", vm.http, native),
            ("prom", prom.http, native),
            ("plain", plain.http, native),
        ],
    )?;
    let now = vigil_tests::unix_now() as i64 * 1000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut client = IngestClient::connect(format!("http://{}", collector.ingest)).await?;
        // 0 goes to the zero bucket; 0.25, 0.5 and 1 are bucket bounds of
        // schema 3 (upper bounds are inclusive); 0.75 is in (2^-0.5, 2^-0.375].
        client
            .push(window_batch(
                1,
                now - 2_000,
                &[0.25, 0.5, 0.5, 0.75, 1.0, 0.0],
            )?)
            .await?;
        client
            .push(window_batch(2, now - 1_000, &[0.25, 1.0])?)
            .await?;
        anyhow::Ok(())
    })?;
    let selector = "door_busy_ratio{instance=\"door\"}";
    let native = wait_for(
        "the native histogram at Prometheus",
        Duration::from_secs(60),
        || {
            prometheus_native(prom.http, selector)
                .ok()
                .filter(|(count, _, _)| *count == 8.0)
        },
    )
    .with_context(|| format!("collector log:\n{}", collector.process.log()))?;
    let (count, sum, buckets) = native;
    eprintln!("Prometheus holds count {count}, sum {sum}, buckets {buckets:?}");
    ensure!((sum - 4.25).abs() < 1e-9, "sum {sum}");
    let bound = |i: i32| 2f64.powf(f64::from(i) / 8.0);
    let want = [
        (0.0, 1.0),
        (bound(-16), 2.0),
        (bound(-8), 2.0),
        (bound(-3), 1.0),
        (bound(0), 2.0),
    ];
    ensure!(
        buckets.len() == want.len()
            && buckets
                .iter()
                .zip(&want)
                .all(|((u, n), (wu, wn))| (u - wu).abs() < 1e-9 && n == wn),
        "buckets {buckets:?}, want {want:?}"
    );
    // The same histogram gives PromQL's quantiles over native buckets.
    let (status, json) = get_json(
        prom.http,
        &format!(
            "/api/v1/query?query={}&time={}",
            url_encode(&format!("histogram_quantile(0.5, {selector})")),
            vigil_tests::unix_now()
        ),
    )?;
    ensure!(status == 200, "{json}");
    let median: f64 = json["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .context("no median")?;
    ensure!(
        median > bound(-9) && median <= bound(-8),
        "median {median} outside the bucket of 0.5"
    );
    // The classic series reach both stores as before.
    let classic: [(&str, &dyn Fn() -> Result<SeriesSamples>); 2] = [
        ("Prometheus", &|| {
            raw_samples(prom.http, "door_busy_ratio_count")
        }),
        ("VictoriaMetrics", &|| {
            vm_samples(&vm, "door_busy_ratio_count")
        }),
    ];
    for (store, samples) in classic {
        let values = || -> Vec<f64> {
            samples()
                .map(|got| {
                    got.values()
                        .flatten()
                        .map(|(_, v)| *v)
                        // The stale marker once the agent falls silent.
                        .filter(|v| !v.is_nan())
                        .collect()
                })
                .unwrap_or_default()
        };
        wait_for(
            &format!("door_busy_ratio_count in {store}"),
            Duration::from_secs(30),
            || (values() == [6.0, 8.0]).then_some(()),
        )
        .with_context(|| format!("{store}: door_busy_ratio_count {:?}", values()))?;
    }
    // VictoriaMetrics 1.79 takes the request and keeps no native histogram.
    let held = vm.export(selector)?;
    ensure!(held.is_empty(), "VictoriaMetrics kept {held:?}");
    let scrape = collector.scrape()?;
    for name in ["vm", "prom"] {
        let sent = sent_to(&scrape, name);
        ensure!(sent >= 40.0, "{name}: {sent} samples sent");
    }
    for name in ["vm", "prom"] {
        let dropped = scrape.value(
            "vigil_collector_remote_write_samples_dropped_total",
            &[("remote_name", name)],
        );
        ensure!(dropped.is_none(), "{name}: dropped {dropped:?}");
    }
    // The store that refused them: the histograms of the refused request
    // (one or both windows, as the queue was read) are dropped and
    // counted, the classic series went on (checked above), and no later
    // histogram is offered to it.
    let refused = scrape.value(
        "vigil_collector_remote_write_samples_dropped_total",
        &[
            ("remote_name", "plain"),
            ("reason", "native_histograms_refused"),
        ],
    );
    ensure!(
        refused == Some(1.0) || refused == Some(2.0),
        "plain: refused {refused:?}"
    );
    collector
        .process
        .wait_for_log("does not take native histograms", Duration::from_secs(5))?;
    ensure!(
        raw_samples(plain.http, "door_busy_ratio")?.is_empty(),
        "Prometheus without the flag holds a native histogram"
    );
    Ok(())
}

#[test]
fn a_store_outage_with_a_collector_kill_loses_and_doubles_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let vm_port = free_port()?;
    let mut vm = VictoriaMetrics::start(dir.path(), "vm", vm_port)?;
    let (http, ingest) = (free_port()?, free_port()?);
    let config = format!(
        "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\
         [store]\ndata_dir = \"{}\"\n\
         [[remote_write]]\nname = \"vm\"\nurl = \"http://127.0.0.1:{vm_port}/api/v1/write\"\n\
         [remote_write.queue_config]\nmax_backoff = \"1s\"\n",
        dir.path().join("collector-data").display(),
    );
    let start_collector = || Collector::launch(dir.path(), "collector", http, ingest, &config);
    let mut collector = start_collector()?;
    let mut agent = agent(dir.path(), "outage", collector.ingest)?;
    std::thread::sleep(Duration::from_secs(5));
    // The store is stopped for 60 s (SIGTERM: VictoriaMetrics keeps the
    // last second it acknowledged in memory, and a SIGKILL would lose it
    // inside the store); halfway, the collector is SIGKILLed and restarted
    // while the store is still down.
    vm.process.terminate(Duration::from_secs(30))?;
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(30));
    collector.process.kill();
    std::thread::sleep(Duration::from_secs(2));
    collector = start_collector()?;
    std::thread::sleep(Duration::from_secs(60).saturating_sub(down.elapsed()));
    let vm = VictoriaMetrics::start(dir.path(), "vm", vm_port)?;
    std::thread::sleep(Duration::from_secs(5));
    agent.terminate(Duration::from_secs(20))?;
    for selector in ["node_load1", "node_memory_MemAvailable_bytes"] {
        let selector = with_instance(selector, "outage");
        let want = raw_samples(collector.http, &selector)?
            .into_values()
            .next()
            .unwrap_or_default();
        ensure!(
            want.len() >= 60,
            "{selector}: only {} samples at the collector",
            want.len()
        );
        let complete = || -> Option<Vec<(i64, f64)>> {
            let got = vm_samples(&vm, &selector).ok()?;
            let samples = got.into_values().next()?;
            let have: std::collections::BTreeSet<i64> = samples.iter().map(|(t, _)| *t).collect();
            want.iter()
                .all(|(t, _)| have.contains(t))
                .then_some(samples)
        };
        let Ok(got) = wait_for(
            &format!("{selector} complete in VictoriaMetrics"),
            Duration::from_secs(90),
            complete,
        ) else {
            let got = vm_samples(&vm, &selector)?
                .into_values()
                .next()
                .unwrap_or_default();
            let have: std::collections::BTreeSet<i64> = got.iter().map(|(t, _)| *t).collect();
            let missing: Vec<i64> = want
                .iter()
                .map(|(t, _)| *t)
                .filter(|t| !have.contains(t))
                .collect();
            bail!(
                "{selector}: {} of {} samples missing in VictoriaMetrics (first {:?})\ncollector log:\n{}",
                missing.len(),
                want.len(),
                missing.first(),
                collector.process.log()
            );
        };
        let duplicates = got.len()
            - got
                .iter()
                .map(|(t, _)| *t)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
        eprintln!(
            "{selector}: {} samples at the collector, {} in VictoriaMetrics, {duplicates} duplicated",
            want.len(),
            got.len()
        );
        // Only the round in flight may be sent twice: at most 2 samples of
        // one series (two batches of one agent) here.
        ensure!(
            duplicates <= 2,
            "{selector}: {duplicates} samples duplicated"
        );
        let stored: BTreeMap<i64, f64> = got.iter().copied().collect();
        for (t, v) in &want {
            let have = stored.get(t).copied().unwrap_or(f64::NAN);
            ensure!(
                have == *v || (have.is_nan() && v.is_nan()),
                "{selector} at {t}: VictoriaMetrics has {have}, the collector {v}"
            );
        }
    }
    Ok(())
}

/// A request the fake store received.
struct Received {
    at: Instant,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A store that answers the n-th request (from 0) with `answer(n)`:
/// status and extra headers.
fn fake_store(
    answer: impl Fn(usize) -> (u16, Vec<(&'static str, &'static str)>) + Send + 'static,
) -> Result<(SocketAddr, Arc<Mutex<Vec<Received>>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut stream = stream;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.trim().split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let mut body = vec![0u8; length];
                if reader.read_exact(&mut body).is_err() {
                    break;
                }
                let n = {
                    let mut seen = log
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    seen.push(Received {
                        at: Instant::now(),
                        headers,
                        body,
                    });
                    seen.len() - 1
                };
                let (status, extra) = answer(n);
                let text = if status == 400 {
                    "out of bounds: bad batch"
                } else {
                    ""
                };
                let mut response =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", text.len());
                for (k, v) in extra {
                    response.push_str(&format!("{k}: {v}\r\n"));
                }
                response.push_str("\r\n");
                response.push_str(text);
                if stream.write_all(response.as_bytes()).is_err() {
                    break;
                }
            }
        }
    });
    Ok((addr, seen))
}

fn decode(body: &[u8]) -> Result<WriteRequest> {
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .context("not snappy")?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

#[test]
fn retries_follow_backoff_and_retry_after_and_a_400_batch_is_dropped_and_counted() -> Result<()> {
    let (store, seen) = fake_store(|n| match n {
        0 => (500, vec![]),
        1 => (429, vec![("Retry-After", "3")]),
        2 => (400, vec![]),
        _ => (204, vec![]),
    })?;
    let dir = tempfile::tempdir()?;
    let (http, ingest) = (free_port()?, free_port()?);
    let collector = Collector::launch(
        dir.path(),
        "collector",
        http,
        ingest,
        &format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[ingest]\nlisten = \"127.0.0.1:{ingest}\"\n\
             [store]\ndata_dir = \"{}\"\nself_metrics_interval = \"0s\"\n\
             [[remote_write]]\nname = \"fake\"\nurl = \"http://{store}/api/v1/write\"\n\
             [remote_write.queue_config]\nmin_backoff = \"200ms\"\nmax_shards = 1\nmin_shards = 1\n",
            dir.path().join("collector-data").display()
        ),
    )?;
    let mut agent = agent(dir.path(), "retry", collector.ingest)?;
    let requests = wait_for(
        "5 requests at the fake store",
        Duration::from_secs(60),
        || {
            let seen = seen.lock().ok()?;
            (seen.len() >= 5).then(|| {
                seen.iter()
                    .map(|r| (r.at, r.headers.clone(), r.body.clone()))
                    .collect::<Vec<_>>()
            })
        },
    )?;
    agent.terminate(Duration::from_secs(20))?;
    for (_, headers, body) in &requests {
        let header = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
        };
        ensure!(header("content-encoding") == Some("snappy"), "{headers:?}");
        ensure!(
            header("content-type") == Some("application/x-protobuf"),
            "{headers:?}"
        );
        ensure!(
            header("x-prometheus-remote-write-version") == Some("0.1.0"),
            "{headers:?}"
        );
        ensure!(decode(body)?.sample_count() > 0, "an empty request");
    }
    // The first batch, tried three times, then dropped; a later one next.
    ensure!(
        requests[0].2 == requests[1].2 && requests[1].2 == requests[2].2,
        "the retries did not resend the same batch"
    );
    ensure!(
        requests[3].2 != requests[2].2,
        "the 400 batch was sent again"
    );
    let after_500 = requests[1].0 - requests[0].0;
    let after_429 = requests[2].0 - requests[1].0;
    eprintln!("retry after 500: {after_500:?}; after 429 with Retry-After: 3: {after_429:?}");
    ensure!(
        after_500 >= Duration::from_millis(160) && after_500 < Duration::from_secs(2),
        "retry after the 500 came after {after_500:?}; min_backoff is 200ms (±20 %)"
    );
    ensure!(
        after_429 >= Duration::from_secs(3) && after_429 < Duration::from_secs(5),
        "retry after the 429 came after {after_429:?}; Retry-After said 3 s"
    );
    let dropped = decode(&requests[2].2)?.sample_count() as f64;
    let scrape = collector.scrape()?;
    let value = |name: &str, reason: &str| {
        scrape
            .value(name, &[("remote_name", "fake"), ("reason", reason)])
            .unwrap_or(0.0)
    };
    ensure!(
        value(
            "vigil_collector_remote_write_samples_dropped_total",
            "http_400"
        ) == dropped,
        "dropped as counted: {}, in the batch: {dropped}",
        value(
            "vigil_collector_remote_write_samples_dropped_total",
            "http_400"
        )
    );
    ensure!(
        value(
            "vigil_collector_remote_write_samples_failed_total",
            "http_5xx"
        ) == dropped
    );
    ensure!(
        value(
            "vigil_collector_remote_write_samples_failed_total",
            "http_429"
        ) == dropped
    );
    let sent = scrape
        .value(
            "vigil_collector_remote_write_samples_sent_total",
            &[("remote_name", "fake")],
        )
        .unwrap_or(0.0);
    ensure!(sent > 0.0, "nothing sent after the 400");
    ensure!(
        collector.process.log().contains("out of bounds: bad batch"),
        "the store's answer to the 400 was not logged"
    );
    Ok(())
}

#[test]
fn bad_remote_write_entries_are_refused_with_file_line_and_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = [
        (
            "[[remote_write]]\nurl = \"http://127.0.0.1:1/api/v1/write\"\nurll = \"x\"\n",
            "3:1: key `remote_write.urll`",
        ),
        (
            "[[remote_write]]\nurl = \"ftp://x/y\"\n",
            "line 2: key `remote_write[0].url`: \"ftp://x/y\" is not an http:// or https:// URL",
        ),
        (
            "[[remote_write]]\nurl = \"http://127.0.0.1:1/w\"\nbearer_token_file = \"/nonexistent/token\"\n",
            "line 3: key `remote_write[0].bearer_token_file`: cannot read /nonexistent/token",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text)?;
        let out = std::process::Command::new(binary("vigil-collector")?)
            .args(["--check-config", "--config"])
            .arg(&path)
            .output()?;
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "accepted: {text}");
        ensure!(
            said.contains(&path.display().to_string()) && said.contains(want),
            "for {text:?} wanted {want:?}, got:\n{said}"
        );
    }
    Ok(())
}
