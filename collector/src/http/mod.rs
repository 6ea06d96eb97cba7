//! The collector's HTTP server (default `0.0.0.0:9470`): `/metrics` for
//! Prometheus (text 0.0.4, or OpenMetrics 1.0 when asked), `/-/healthy` and
//! `/-/ready`, the Prometheus query API (`/api/v1/query`,
//! `/api/v1/query_range`, [`api`]; series, labels, metadata, rules and
//! `/federate`, [`meta`]), `/graph` for alert links ([`graph`]),
//! reload ([`admin`]), silences ([`silences`]) and the rest of Alertmanager's
//! API v2 that `amtool` calls ([`alertmanager`]), each a file in this
//! folder. Next: the status page.

pub mod admin;
pub mod alertmanager;
pub mod api;
pub mod exposition;
pub mod graph;
pub mod meta;
pub mod silences;
pub mod tls;
pub mod web;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ingest::IngestMetrics;
use vigil_notify::manager::NotifyManager;
use vigil_rules::manager::RuleManager;
use vigil_shared::config::Secret;
use vigil_shared::exposition::MetricKind;
use vigil_shared::exposition::{ExpositionWriter, Format};
use vigil_store::Store;

/// What the HTTP handlers read.
pub struct HttpState {
    /// The series.
    pub store: Arc<Store>,
    /// Ingest counters.
    pub ingest: Arc<IngestMetrics>,
    /// Per-agent limits, for their refusal counters.
    pub agent_limits: Arc<crate::ingest::limits::AgentLimits>,
    /// The rules.
    pub rules: Arc<RuleManager>,
    /// Notifications.
    pub notify: Arc<NotifyManager>,
    /// Token of admin endpoints.
    pub admin_token: Option<Secret>,
    /// Query API slots, limits and counters.
    pub query: api::QueryGate,
    /// TLS, basic auth and headers of the port.
    pub web: web::WebConfig,
    /// Remembered basic-auth logins and failures.
    pub basic_auth: web::BasicAuthState,
    /// remote_write destinations and their counters.
    pub remote_write: Arc<vigil_remote_write::sender::RemoteWrite>,
    /// Size of the last exposition, to size the next buffer.
    last_size: AtomicUsize,
}

impl HttpState {
    /// State over a store, its counters, the rules and notifications, with
    /// the admin token, query limits and web config of `config`.
    pub fn new(
        store: Arc<Store>,
        ingest: Arc<IngestMetrics>,
        agent_limits: Arc<crate::ingest::limits::AgentLimits>,
        rules: Arc<RuleManager>,
        notify: Arc<NotifyManager>,
        config: &crate::config::CollectorConfig,
    ) -> Self {
        Self {
            store,
            ingest,
            agent_limits,
            rules,
            notify,
            admin_token: config.admin_token.clone(),
            query: api::QueryGate::new(config.query),
            web: config.web.clone(),
            basic_auth: web::BasicAuthState::default(),
            remote_write: Arc::default(),
            last_size: AtomicUsize::new(64 * 1024),
        }
    }
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    meta::routes(Router::new())
        .route("/metrics", get(meta::metrics_or_federate))
        .route("/api/v1/query", get(api::query_get).post(api::query_post))
        .route("/api/v1/vigil/quantile", get(api::window_quantile_get))
        .route("/graph", get(graph::graph))
        .route(
            "/api/v1/query_range",
            get(api::query_range_get).post(api::query_range_post),
        )
        .route(
            "/-/healthy",
            get(|| async { "Vigil collector is Healthy.\n" }),
        )
        .route("/-/ready", get(|| async { "Vigil collector is Ready.\n" }))
        .route("/-/reload", axum::routing::post(admin::reload))
        .route("/api/v2/silences", get(silences::list).post(silences::post))
        .route(
            "/api/v2/silence/{id}",
            get(silences::get_one).delete(silences::expire),
        )
        .route("/api/v2/alerts", get(alertmanager::alerts))
        .route("/api/v2/status", get(alertmanager::status))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            web::guard,
        ))
        .with_state(state)
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// Writes the whole exposition.
pub fn render(state: &HttpState, format: Format) -> String {
    let capacity = state.last_size.load(Ordering::Relaxed) + 4096;
    let mut w = ExpositionWriter::new(format, capacity);
    state.store.visit(|name, family, series| {
        exposition::write_family(
            &mut w,
            name,
            &family.help,
            family.kind,
            &family.bounds,
            series,
        );
    });
    render_own(state, &mut w);
    let text = w.finish();
    state.last_size.store(text.len(), Ordering::Relaxed);
    text
}

/// Writes the collector's own families (`vigil_collector_*`) and the rule
/// loop's `ALERTS`: everything on `/metrics` but the agents' series.
pub fn render_own(state: &HttpState, w: &mut ExpositionWriter) {
    state.ingest.write(w);
    state.agent_limits.write_metrics(w);
    state.rules.write_metrics(w);
    state.notify.write_metrics(w);
    state.query.write_metrics(w);
    state.remote_write.write_metrics(w);
    for (name, help, value) in [
        (
            "vigil_collector_http_auth_failures_total",
            "HTTP requests refused for a missing or wrong basic-auth login (web config).",
            state.basic_auth.failures.load(Ordering::Relaxed),
        ),
        (
            "vigil_collector_http_tls_handshake_failures_total",
            "TLS handshakes on the HTTP port that failed or timed out.",
            tls::HANDSHAKE_FAILURES.load(Ordering::Relaxed),
        ),
    ] {
        w.header(name, help, MetricKind::Counter);
        w.sample(name, "", "", None, value as f64);
    }
    let agents = state.store.agents();
    w.header(
        "vigil_collector_agents",
        "Agents that pushed within store.stale_after.",
        MetricKind::Gauge,
    );
    w.sample("vigil_collector_agents", "", "", None, agents.len() as f64);
    w.header(
        "vigil_collector_agent_last_push_timestamp_seconds",
        "When each agent last pushed, in Unix seconds.",
        MetricKind::Gauge,
    );
    let mut labels = String::new();
    for agent in &agents {
        labels.clear();
        labels.push_str("agent=\"");
        vigil_shared::labels::escape_label_value_into(&mut labels, &agent.id);
        labels.push('"');
        w.sample(
            "vigil_collector_agent_last_push_timestamp_seconds",
            "",
            &labels,
            None,
            agent.last_push_seconds,
        );
    }
    // Each agent's build, so a fleet mid-upgrade shows which host runs what.
    w.header(
        "vigil_agent_info",
        "Each agent's release version and git revision (from its last batch; empty from agents too old to send them), always 1.",
        MetricKind::Gauge,
    );
    for agent in &agents {
        labels.clear();
        for (i, (name, value)) in [
            ("agent", agent.id.as_str()),
            ("revision", agent.revision.as_str()),
            ("version", agent.version.as_str()),
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                labels.push(',');
            }
            labels.push_str(name);
            labels.push_str("=\"");
            vigil_shared::labels::escape_label_value_into(&mut labels, value);
            labels.push('"');
        }
        w.sample("vigil_agent_info", "", &labels, None, 1.0);
    }
    w.header(
        "vigil_collector_series",
        "Series held in the store.",
        MetricKind::Gauge,
    );
    w.sample(
        "vigil_collector_series",
        "",
        "",
        None,
        state.store.series_count() as f64,
    );
    let history = state.store.history_stats();
    let (windows, window_bytes) = state.store.window_stats();
    for (name, help, value) in [
        (
            "vigil_collector_history_series",
            "Series in the history.",
            history.series as f64,
        ),
        (
            "vigil_collector_history_samples",
            "Samples in the history.",
            history.samples as f64,
        ),
        (
            "vigil_collector_history_chunk_bytes",
            "Bytes of compressed chunk data in the history.",
            history.chunk_bytes as f64,
        ),
        (
            "vigil_collector_windows_stored",
            "Per-minute HDR histograms kept for exact quantiles.",
            windows as f64,
        ),
        (
            "vigil_collector_windows_stored_bytes",
            "Bytes of those histograms, compressed.",
            window_bytes as f64,
        ),
    ] {
        w.header(name, help, MetricKind::Gauge);
        w.sample(name, "", "", None, value);
    }
    w.header(
        "vigil_collector_build_info",
        "The collector's build (version, git revision, build date, rustc), always 1.",
        MetricKind::Gauge,
    );
    let mut build = String::new();
    for (i, (name, value)) in vigil_build_info::LABELS.iter().enumerate() {
        if i > 0 {
            build.push(',');
        }
        build.push_str(name);
        build.push_str("=\"");
        vigil_shared::labels::escape_label_value_into(&mut build, value);
        build.push('"');
    }
    w.sample("vigil_collector_build_info", "", &build, None, 1.0);
}

/// `/metrics`, rendered off the async workers: it takes the store's read
/// lock, which a large batch holds for a moment, and must never stall the
/// runtime that serves pushes and health checks.
pub(super) async fn metrics(State(state): State<Arc<HttpState>>, headers: HeaderMap) -> Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    match tokio::task::spawn_blocking(move || render(&state, format)).await {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, format.content_type())],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
