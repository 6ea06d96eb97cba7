//! An application that exports metrics with OpenTelemetry's own Rust SDK
//! and OTLP exporter, as users' applications do, for the end-to-end tests
//! of the agent's OTLP receiver.
//!
//! `vigil-otlp-app PROTOCOL ENDPOINT SERVICE TEMPORALITY [ROUNDS]`
//!
//! - PROTOCOL: `grpc`, `http-proto` or `http-json`;
//! - ENDPOINT: `http://127.0.0.1:4317` (gRPC) or
//!   `http://127.0.0.1:4318/v1/metrics` (HTTP);
//! - TEMPORALITY: `cumulative` or `delta`;
//! - ROUNDS: how many times the fixed set of values below is recorded and
//!   exported (1 by default); with more than one, it waits `PAUSE_MS`
//!   (environment, default 0) between rounds.
//!
//! Each round records, then exports with `force_flush`:
//! - counter `app.requests` (`{request}`): 3 on `route=/a`, 1 on `route=/b`;
//! - up-down counter `app.queue`: +5, then -2;
//! - gauge `app.temperature` (`Cel`): the round number plus 0.5;
//! - histogram `app.latency` (`s`, bounds 0.1, 0.5, 1): 0.05, 0.2, 0.7, 2;
//! - exponential histogram `app.payload` (`By`): 10, 20, …, 1000.
//!
//! The resource carries `deployment.environment=test`, and a `padding`
//! attribute of `PADDING_BYTES` (environment) bytes when that is set.
//!
//! It prints `exported ROUND` after each successful export and exits
//! non-zero when an export fails.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{MetricExporter, Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{
    Aggregation, Instrument, PeriodicReader, SdkMeterProvider, Stream, Temporality,
};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [protocol, endpoint, service, temporality, rest @ ..] = args.as_slice() else {
        bail!(
            "usage: vigil-otlp-app grpc|http-proto|http-json ENDPOINT SERVICE cumulative|delta [ROUNDS]"
        );
    };
    let rounds: u32 = rest.first().map_or(Ok(1), |r| r.parse())?;
    let pause = Duration::from_millis(
        std::env::var("PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let padding: usize = std::env::var("PADDING_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let temporality = match temporality.as_str() {
        "cumulative" => Temporality::Cumulative,
        "delta" => Temporality::Delta,
        other => bail!("temporality {other:?}: cumulative or delta"),
    };
    // The HTTP exporter's client is reqwest, which the workspace builds
    // with rustls and no crypto provider chosen: choose ring, as Vigil does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // tonic's channel needs a runtime; the SDK's reader thread drives the
    // export futures on it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let _guard = runtime.enter();
    let exporter = match protocol.as_str() {
        "grpc" => MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_temporality(temporality)
            .build()?,
        "http-proto" | "http-json" => MetricExporter::builder()
            .with_http()
            .with_protocol(if protocol == "http-json" {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            })
            .with_endpoint(endpoint)
            .with_temporality(temporality)
            .build()?,
        other => bail!("protocol {other:?}: grpc, http-proto or http-json"),
    };
    // The reader exports only when told to (force_flush), so each round is
    // exactly one export.
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_secs(3600))
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource({
            let mut resource = Resource::builder()
                .with_service_name(service.clone())
                .with_attribute(KeyValue::new("deployment.environment", "test"));
            if padding > 0 {
                resource = resource.with_attribute(KeyValue::new("padding", "x".repeat(padding)));
            }
            resource.build()
        })
        .with_view(|i: &Instrument| {
            (i.name() == "app.payload")
                .then(|| {
                    Stream::builder()
                        .with_aggregation(Aggregation::Base2ExponentialHistogram {
                            max_size: 160,
                            max_scale: 20,
                            record_min_max: true,
                        })
                        .build()
                        .ok()
                })
                .flatten()
        })
        .build();
    let meter = provider.meter("vigil-otlp-app");
    let requests = meter
        .u64_counter("app.requests")
        .with_unit("{request}")
        .with_description("Requests served.")
        .build();
    let queue = meter.i64_up_down_counter("app.queue").build();
    let temperature = meter.f64_gauge("app.temperature").with_unit("Cel").build();
    let latency = meter
        .f64_histogram("app.latency")
        .with_unit("s")
        .with_boundaries(vec![0.1, 0.5, 1.0])
        .build();
    let payload = meter.u64_histogram("app.payload").with_unit("By").build();
    for round in 1..=rounds {
        let a = [KeyValue::new("route", "/a")];
        for _ in 0..3 {
            requests.add(1, &a);
        }
        requests.add(1, &[KeyValue::new("route", "/b")]);
        queue.add(5, &[]);
        queue.add(-2, &[]);
        temperature.record(f64::from(round) + 0.5, &[]);
        for v in [0.05, 0.2, 0.7, 2.0] {
            latency.record(v, &[]);
        }
        for i in 1..=100u64 {
            payload.record(i * 10, &[]);
        }
        provider
            .force_flush()
            .with_context(|| format!("export {round} to {endpoint} failed"))?;
        println!("exported {round}");
        if round < rounds {
            std::thread::sleep(pause);
        }
    }
    provider.shutdown().context("shutdown")?;
    Ok(())
}
