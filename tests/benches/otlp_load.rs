//! OTLP over loopback gRPC: one exporter (one connection, one request in
//! flight, as an SDK's periodic reader sends) pushes export requests of
//! 1,000 data points to a release agent as fast as the agent answers
//! (`cargo build --release --bins && cargo bench -p vigil-tests --bench
//! otlp_load`; env `SECONDS=` default 10). Each request: 500 cumulative
//! counters, 400 gauges and 100 exponential histograms of 20 buckets, on
//! 1,000 series of one service. Reports data points per second, what the
//! agent counted, its CPU (from the scheduler), data points per CPU-second,
//! and its resident memory at the end.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, exponential_histogram_data_point::Buckets, metric::Data,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use vigil_tests::{Collector, free_port, start_agent};
use vigil_tests::{process_cpu_ns as cpu_ns, process_rss_kib as rss_kib, unix_now as now};

const POINTS: u64 = 1_000;

fn kv(k: &str, v: String) -> KeyValue {
    KeyValue {
        key: k.into(),
        key_strindex: 0,
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v)),
        }),
    }
}

fn number(i: usize, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![kv("route", format!("/r{i}")), kv("code", "200".into())],
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// Request `n`: counters grow by one each request.
fn request(n: u64, start_ns: u64) -> ExportMetricsServiceRequest {
    let counters = (0..500).map(|i| number(i, n as f64)).collect();
    let gauges = (0..400).map(|i| number(i, (n % 100) as f64)).collect();
    let histograms = (0..100)
        .map(|i| ExponentialHistogramDataPoint {
            attributes: vec![kv("route", format!("/r{i}"))],
            start_time_unix_nano: start_ns,
            count: 20 * n,
            sum: Some(20.0 * n as f64 * 0.1),
            scale: 3,
            positive: Some(Buckets {
                offset: -30,
                bucket_counts: vec![n; 20],
            }),
            ..Default::default()
        })
        .collect();
    let metric = |name: &str, unit: &str, data: Data| Metric {
        name: name.into(),
        unit: unit.into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "load".into())],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(
                        "load.requests",
                        "{request}",
                        Data::Sum(Sum {
                            data_points: counters,
                            aggregation_temporality: 2,
                            is_monotonic: true,
                        }),
                    ),
                    metric(
                        "load.queue",
                        "",
                        Data::Gauge(Gauge {
                            data_points: gauges,
                        }),
                    ),
                    metric(
                        "load.duration",
                        "s",
                        Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: histograms,
                            aggregation_temporality: 2,
                        }),
                    ),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn main() -> Result<()> {
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir()?;
    let collector = Collector::start_default(dir.path())?;
    let grpc = free_port()?;
    let agent = start_agent(
        dir.path(),
        "agent",
        &format!(
            "instance = \"load\"\nflush_interval = \"1s\"\n[collector]\nendpoint = \"http://{}\"\n\
             [sources.statsd]\nudp = \"\"\n[sources.otlp]\ngrpc = \"127.0.0.1:{grpc}\"\nhttp = \"\"\n",
            collector.ingest
        ),
    )?;
    agent.wait_for_log("OTLP listening", Duration::from_secs(20))?;
    let pid = agent.id();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let start_ns = (now() * 1e9) as u64;
    let (sent, elapsed, cpu) = runtime.block_on(async {
        let mut client = MetricsServiceClient::connect(format!("http://127.0.0.1:{grpc}")).await?;
        let cpu_before = cpu_ns(pid);
        let started = Instant::now();
        let mut n = 0u64;
        while started.elapsed() < Duration::from_secs(seconds) {
            n += 1;
            // Built outside the agent's time too: a real exporter builds
            // its request while the agent is idle.
            let answer = client.export(request(n, start_ns)).await?;
            if let Some(p) = answer.get_ref().partial_success.as_ref() {
                anyhow::ensure!(p.rejected_data_points == 0, "refused: {}", p.error_message);
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = (cpu_ns(pid) - cpu_before) as f64 / 1e9;
        anyhow::Ok((n * POINTS, elapsed, cpu))
    })?;
    // Two flushes later the collector has the agent's last count.
    std::thread::sleep(Duration::from_secs(3));
    let counted = collector.query(
        "vigil_agent_otlp_data_points_total{instance=\"load\"}",
        now(),
    )?["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .context("the agent's count")? as u64;
    println!(
        "| {sent} points in {elapsed:.1} s | {:.0} points/s | {counted} counted by the agent | {:.1} % of a core | {:.0} points per CPU-second | {} kB |",
        sent as f64 / elapsed,
        cpu / elapsed * 100.0,
        sent as f64 / cpu,
        rss_kib(pid)
    );
    Ok(())
}
