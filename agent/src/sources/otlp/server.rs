//! The OTLP listeners: gRPC (`opentelemetry.proto.collector.metrics.v1.
//! MetricsService/Export`, tonic) and HTTP (`POST /v1/metrics`, axum) with
//! protobuf or JSON bodies, gzip or not. Both hand the decoded request to
//! the same [`Aggregator`] and answer with OTLP's partial success when
//! data points were refused.
//!
//! A request larger than `max_request_size` (after decompression) is
//! refused whole: gRPC `INVALID_ARGUMENT`, HTTP 413; clients do not retry
//! either. A body that does not
//! decode gets `INVALID_ARGUMENT` / 400 with the decoder's words.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tracing::{info, warn};

use super::{Aggregator, Counts, Outcome, Reject, lock};
use crate::window::{FamilyKind, RecordError, Windows};

/// How long a listener whose port could not be bound waits to try again.
const REBIND: Duration = Duration::from_secs(10);

/// What the handlers share.
#[derive(Clone)]
pub struct Shared {
    /// Where requests are folded.
    pub aggregator: Arc<Mutex<Aggregator>>,
    /// Requests and listeners.
    pub stats: Arc<Stats>,
    /// Largest request, after decompression.
    pub max_request_size: usize,
}

/// What became of a request, for `vigil_agent_otlp_requests_total`.
#[derive(Debug, Clone, Copy)]
enum RequestOutcome {
    Ok,
    Partial,
    Invalid,
    TooLarge,
    Unsupported,
}

const OUTCOMES: [(RequestOutcome, &str); 5] = [
    (RequestOutcome::Ok, "ok"),
    (RequestOutcome::Partial, "partial"),
    (RequestOutcome::Invalid, "invalid"),
    (RequestOutcome::TooLarge, "too_large"),
    (RequestOutcome::Unsupported, "unsupported"),
];

/// Requests by transport and outcome, and whether each listener is up.
#[derive(Debug, Default)]
pub struct Stats {
    /// `otlp_grpc` holds its port.
    pub grpc_up: AtomicBool,
    /// `otlp_http` holds its port.
    pub http_up: AtomicBool,
    requests: [[AtomicU64; 5]; 2],
}

impl Stats {
    fn count(&self, grpc: bool, outcome: RequestOutcome) {
        let t = usize::from(!grpc);
        if let Some(c) = self.requests.get(t).and_then(|r| r.get(outcome as usize)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records the listeners (`configured`: gRPC, HTTP), requests and the
    /// aggregator's counts.
    pub fn record(
        &self,
        out: &mut Windows,
        configured: (bool, bool),
        counts: &Counts,
        series: usize,
        refused: u64,
    ) -> Result<(), RecordError> {
        let mut up = Vec::new();
        if configured.0 {
            up.push(("otlp_grpc", self.grpc_up.load(Ordering::Relaxed)));
        }
        if configured.1 {
            up.push(("otlp_http", self.http_up.load(Ordering::Relaxed)));
        }
        crate::sources::listener::record_up(out, &up)?;
        let f = out.family(
            "vigil_agent_otlp_requests_total",
            "OTLP export requests, by transport and outcome (ok, partial: some data points refused, invalid: did not decode, too_large: over sources.otlp.max_request_size, unsupported: content type or encoding).",
            FamilyKind::Counter,
        )?;
        for (t, transport) in ["grpc", "http"].iter().enumerate() {
            for (outcome, name) in OUTCOMES {
                let n = self
                    .requests
                    .get(t)
                    .and_then(|r| r.get(outcome as usize))
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                out.set(f, &[("outcome", name), ("transport", transport)], n as f64)?;
            }
        }
        let f = out.family(
            "vigil_agent_otlp_data_points_total",
            "OTLP data points taken.",
            FamilyKind::Counter,
        )?;
        out.set(f, &[], counts.accepted as f64)?;
        let f = out.family(
            "vigil_agent_otlp_rejected_data_points_total",
            "OTLP data points refused, by reason (bad_name, reserved_name, type_conflict, max_series: over sources.otlp.max_series or the agent's max_series, window_full, invalid).",
            FamilyKind::Counter,
        )?;
        for reason in Reject::ALL {
            let mut n = counts.rejected[reason.index()];
            if reason == Reject::MaxSeries {
                n += refused;
            }
            out.set(f, &[("reason", reason.reason())], n as f64)?;
        }
        let f = out.family(
            "vigil_agent_otlp_series",
            "OTLP series the agent holds.",
            FamilyKind::Gauge,
        )?;
        out.set(f, &[], series as f64)?;
        Ok(())
    }
}

/// The answer to a request: partial success when points were refused.
fn response(outcome: &Outcome) -> ExportMetricsServiceResponse {
    ExportMetricsServiceResponse {
        partial_success: (outcome.rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(outcome.rejected).unwrap_or(i64::MAX),
            error_message: format!(
                "{} data point(s) refused; first: {}",
                outcome.rejected, outcome.message
            ),
        }),
    }
}

fn export(shared: &Shared, grpc: bool, request: &ExportMetricsServiceRequest) -> Outcome {
    let outcome = lock(&shared.aggregator).export(request);
    let kind = if outcome.rejected > 0 {
        RequestOutcome::Partial
    } else {
        RequestOutcome::Ok
    };
    shared.stats.count(grpc, kind);
    outcome
}

struct Grpc(Shared);

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let outcome = export(&self.0, true, request.get_ref());
        Ok(tonic::Response::new(response(&outcome)))
    }
}

/// Binds `addr` and serves, binding again 10 s after a failure (logged
/// once, with what holds the port).
async fn bind_loop<F, Fut>(what: &'static str, addr: SocketAddr, up: &AtomicBool, mut serve: F)
where
    F: FnMut(tokio::net::TcpListener) -> Fut,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    let mut logged = false;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                info!(listener = what, %addr, "OTLP listening");
                logged = false;
                up.store(true, Ordering::Relaxed);
                if let Err(e) = serve(listener).await {
                    warn!(listener = what, error = %e, "OTLP listener failed; binding again");
                }
                up.store(false, Ordering::Relaxed);
            }
            Err(e) if !logged => {
                warn!(
                    listener = what,
                    %addr,
                    error = %e,
                    held_by = %crate::sources::listener::holder(addr.port(), "tcp"),
                    "OTLP cannot listen; trying again every 10 s (vigil_agent_listener_up is 0)"
                );
                logged = true;
            }
            Err(_) => {}
        }
        tokio::time::sleep(REBIND).await;
    }
}

/// Serves OTLP/gRPC on `addr` for as long as the runtime runs.
pub async fn grpc(addr: SocketAddr, shared: Shared) {
    let stats = Arc::clone(&shared.stats);
    bind_loop("otlp_grpc", addr, &stats.grpc_up, |listener| {
        let service = MetricsServiceServer::new(Grpc(shared.clone()))
            .max_decoding_message_size(shared.max_request_size)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
        // Requests tonic refuses before the handler (over the size limit,
        // or not decoding) are counted from the answer's status. tonic
        // answers a message over the limit with OUT_OF_RANGE, which OTLP
        // clients retry; it becomes INVALID_ARGUMENT, which they do not.
        let counted = Arc::clone(&shared.stats);
        let count = tower::util::MapResponseLayer::new(
            move |mut response: axum::http::Response<tonic::body::Body>| {
                let headers = response.headers_mut();
                let too_large = headers.get("grpc-message").is_some_and(|m| {
                    m.to_str()
                        .is_ok_and(|m| m.contains("too%20large") || m.contains("too large"))
                });
                match headers.get("grpc-status").map(|v| v.as_bytes()) {
                    Some(b"11") if too_large => {
                        headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
                        counted.count(true, RequestOutcome::TooLarge);
                    }
                    Some(b"3" | b"11" | b"13") => counted.count(true, RequestOutcome::Invalid),
                    Some(b"12") => counted.count(true, RequestOutcome::Unsupported),
                    _ => {}
                }
                response
            },
        );
        async move {
            tonic::transport::Server::builder()
                .concurrency_limit_per_connection(4)
                .layer(count)
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .map_err(std::io::Error::other)
        }
    })
    .await;
}

/// Serves OTLP/HTTP on `addr` for as long as the runtime runs.
pub async fn http(addr: SocketAddr, shared: Shared) {
    let stats = Arc::clone(&shared.stats);
    bind_loop("otlp_http", addr, &stats.http_up, |listener| {
        // The body limit is on the bytes as sent; the decompressed size is
        // checked again below.
        let router = axum::Router::new()
            .route("/v1/metrics", axum::routing::post(http_export))
            .layer(axum::extract::DefaultBodyLimit::max(
                shared.max_request_size,
            ))
            .with_state(shared.clone());
        async move { axum::serve(listener, router).await }
    })
    .await;
}

/// An error answer: google.rpc.Status, as OTLP/HTTP asks, in the
/// request's encoding.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error(status: StatusCode, json: bool, message: String) -> Response {
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => 8,       // RESOURCE_EXHAUSTED
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 12, // UNIMPLEMENTED
        _ => 3,                                   // INVALID_ARGUMENT
    };
    if json {
        let body = serde_json::json!({ "code": code, "message": message }).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    } else {
        let body = RpcStatus { code, message }.encode_to_vec();
        (
            status,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            body,
        )
            .into_response()
    }
}

async fn http_export(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let stats = &shared.stats;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let json = content_type.starts_with("application/json");
    if !json && !content_type.starts_with("application/x-protobuf") {
        stats.count(false, RequestOutcome::Unsupported);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            false,
            format!(
                "content type {content_type:?}: send application/x-protobuf or application/json"
            ),
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let status = e.status();
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                RequestOutcome::TooLarge
            } else {
                RequestOutcome::Invalid
            };
            stats.count(false, outcome);
            return error(
                status,
                json,
                format!(
                    "body refused (sources.otlp.max_request_size is {} bytes): {e}",
                    shared.max_request_size
                ),
            );
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .to_ascii_lowercase();
    let body: Bytes = match encoding.as_str() {
        "identity" | "" => body,
        "gzip" => {
            let mut out = Vec::new();
            let limit = shared.max_request_size as u64;
            let read = flate2::read::GzDecoder::new(body.as_ref())
                .take(limit + 1)
                .read_to_end(&mut out);
            match read {
                Err(e) => {
                    stats.count(false, RequestOutcome::Invalid);
                    return error(StatusCode::BAD_REQUEST, json, format!("gzip body: {e}"));
                }
                Ok(n) if n as u64 > limit => {
                    stats.count(false, RequestOutcome::TooLarge);
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        json,
                        format!(
                            "body is over sources.otlp.max_request_size ({limit} bytes) once decompressed"
                        ),
                    );
                }
                Ok(_) => Bytes::from(out),
            }
        }
        other => {
            stats.count(false, RequestOutcome::Unsupported);
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json,
                format!("content encoding {other:?}: send gzip or none"),
            );
        }
    };
    let request: Result<ExportMetricsServiceRequest, String> = if json {
        serde_json::from_slice(&body).map_err(|e| format!("JSON body: {e}"))
    } else {
        ExportMetricsServiceRequest::decode(body.as_ref())
            .map_err(|e| format!("protobuf body: {e}"))
    };
    let request = match request {
        Ok(r) => r,
        Err(message) => {
            stats.count(false, RequestOutcome::Invalid);
            return error(StatusCode::BAD_REQUEST, json, message);
        }
    };
    let outcome = export(&shared, false, &request);
    let answer = response(&outcome);
    if json {
        // OTLP/JSON leaves out empty fields: `{}` when all was taken.
        let body = if answer.partial_success.is_none() {
            Ok(b"{}".to_vec())
        } else {
            serde_json::to_vec(&answer)
        };
        match body {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, true, e.to_string()),
        }
    } else {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            answer.encode_to_vec(),
        )
            .into_response()
    }
}
