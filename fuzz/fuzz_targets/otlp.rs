//! An OTLP export request as the agent's receiver takes it: the first byte
//! picks JSON or protobuf, the rest is decoded, folded into the aggregator
//! (a small series limit, so limits are reached) and moved into windows
//! that are then closed into a batch.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;
use vigil_agent::config::OtlpConfig;
use vigil_agent::sources::otlp::Aggregator;
use vigil_agent::window::Windows;

fuzz_target!(|data: &[u8]| {
    let Some((first, body)) = data.split_first() else {
        return;
    };
    let request: Option<ExportMetricsServiceRequest> = if first % 2 == 0 {
        serde_json::from_slice(body).ok()
    } else {
        ExportMetricsServiceRequest::decode(body).ok()
    };
    let Some(request) = request else {
        return;
    };
    let mut aggregator = Aggregator::new(&OtlpConfig {
        enabled: true,
        grpc: None,
        http: None,
        max_request_size: 1 << 20,
        max_series: 50,
        instance_from_service: first % 4 < 2,
        stale_after: std::time::Duration::from_secs(300),
    });
    aggregator.export(&request);
    aggregator.export(&request);
    let Ok(mut windows) = Windows::new("fuzz", "node", 100) else {
        return;
    };
    windows.begin_sample(1_000);
    aggregator.record(&mut windows);
    let _ = windows.close();
});
