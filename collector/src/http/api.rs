//! The Prometheus HTTP query API, for Grafana and for scripts:
//! `/api/v1/query` (instant) and `/api/v1/query_range`, by GET or by POST
//! form, answering Prometheus's JSON (`status`, `data.resultType`,
//! `data.result`, or `errorType` and `error`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::HttpState;
use crate::config::QueryConfig;
use vigil_promql::{EvalError, Labels, Limits, RangeSeries, Value, instant_query, range_query};
use vigil_shared::exposition::{ExpositionWriter, MetricKind};
use vigil_store::now_ms;

/// Parameters of `/api/v1/query` and `/api/v1/query_range`.
#[derive(Debug, Default, Deserialize)]
pub struct QueryParams {
    query: Option<String>,
    time: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    timeout: Option<String>,
    q: Option<String>,
}

pub(super) fn bad_data(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

pub(super) fn error_response(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": message})),
    )
        .into_response()
}

pub(super) fn eval_error(state: &HttpState, e: EvalError) -> Response {
    state.query.refused(match &e {
        EvalError::Parse(_) | EvalError::Invalid(_) => Refusal::Invalid,
        EvalError::Timeout(_) => Refusal::Timeout,
        EvalError::TooManySamples(_) => Refusal::MaxSamples,
    });
    match e {
        EvalError::Parse(m) => bad_data(m),
        EvalError::Timeout(_) => {
            error_response(StatusCode::SERVICE_UNAVAILABLE, "timeout", e.to_string())
        }
        EvalError::TooManySamples(_) => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "execution", e.to_string())
        }
        EvalError::Invalid(m) => error_response(StatusCode::UNPROCESSABLE_ENTITY, "execution", m),
    }
}

/// Latest and earliest time a query may name, in Unix seconds (about
/// 300,000 years either side of 1970): far enough for any real use, near
/// enough that no arithmetic on milliseconds can overflow.
const MAX_TIME_SECONDS: f64 = 1e13;

/// Parses a time: Unix seconds (with fractions) or RFC 3339.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() || seconds.abs() > MAX_TIME_SECONDS {
            return Err(format!(
                "invalid time {text:?}: must be a number of Unix seconds within ±{MAX_TIME_SECONDS:e}"
            ));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    humantime::parse_rfc3339_weak(text)
        .map(|t| vigil_promql::eval::system_time_ms(&t))
        .map_err(|e| format!("invalid time {text:?}: {e}"))
}

/// Parses a step or timeout: seconds (`15`, `0.5`) or a duration (`15s`, `1m`).
pub fn parse_step(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_TIME_SECONDS) {
            return Err(format!(
                "invalid duration {text:?}: must be more than 0 and at most {MAX_TIME_SECONDS:e} seconds"
            ));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    vigil_shared::config::parse_duration_ms(text)
}

pub(super) fn metric_json(labels: &Labels) -> Json {
    Json::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

fn point_json(t: i64, v: f64) -> Json {
    json!([t as f64 / 1000.0, format_float(v)])
}

/// Formats a value as Prometheus's API does (`"NaN"`, `"+Inf"`, shortest digits).
pub(super) fn format_float(v: f64) -> String {
    vigil_promql::aggregate::format_value(v)
}

/// The query's limits: the configured ones, with a shorter timeout if asked for.
fn query_limits(base: Limits, timeout: Option<&str>) -> Result<Limits, String> {
    let mut limits = base;
    if let Some(t) = timeout {
        let ms = parse_step(t)?;
        limits.timeout = limits.timeout.min(Duration::from_millis(ms as u64));
    }
    Ok(limits)
}

fn instant(state: &HttpState, params: QueryParams, limits: Limits) -> Response {
    let Some(query) = params.query.as_deref() else {
        return bad_data("query is required");
    };
    let t = match params.time.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(now_ms),
        Err(e) => return bad_data(e),
    };
    let data = match instant_query(state.store.as_ref(), query, t, limits) {
        Ok(Value::Scalar(v)) => json!({"resultType": "scalar", "result": point_json(t, v)}),
        Ok(Value::String(s)) => json!({"resultType": "string", "result": [t as f64 / 1000.0, s]}),
        Ok(Value::Vector(v)) => json!({
            "resultType": "vector",
            "result": v.iter().map(|s| json!({"metric": metric_json(&s.labels), "value": point_json(t, s.v)})).collect::<Vec<_>>()
        }),
        Ok(Value::Matrix(m)) => return matrix_response(&m),
        Err(e) => return eval_error(state, e),
    };
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// A matrix answer (a range query's, or an instant query of a range vector).
fn matrix_response(m: &[RangeSeries]) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        matrix_body(m),
    )
        .into_response()
}

/// Writes a JSON string (quoted, escaped) into `out`.
pub(super) fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// A range query's whole answer, written straight into one buffer. Built
/// as a `serde_json` tree (an array and two allocations per point), the
/// answer took 9× as long as evaluating the query for a 24-hour panel.
/// Times and values are written as Prometheus writes them: seconds with
/// the shortest digits, values as strings (`"NaN"`, `"+Inf"`).
fn matrix_body(m: &[RangeSeries]) -> Vec<u8> {
    use std::io::Write;
    let points: usize = m.iter().map(|s| s.points.len()).sum();
    let mut out = Vec::with_capacity(128 + m.len() * 128 + points * 32);
    out.extend_from_slice(br#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, series) in m.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(br#"{"metric":{"#);
        for (j, (name, value)) in series.labels.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_json_str(&mut out, name);
            out.push(b':');
            write_json_str(&mut out, value);
        }
        out.extend_from_slice(br#"},"values":["#);
        for (j, &(t, v)) in series.points.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            let seconds = t as f64 / 1000.0;
            // Writing into a Vec cannot fail.
            let _ = if v.is_nan() {
                write!(out, "[{seconds},\"NaN\"]")
            } else if v == f64::INFINITY {
                write!(out, "[{seconds},\"+Inf\"]")
            } else if v == f64::NEG_INFINITY {
                write!(out, "[{seconds},\"-Inf\"]")
            } else {
                write!(out, "[{seconds},\"{v}\"]")
            };
        }
        out.extend_from_slice(b"]}");
    }
    out.extend_from_slice(b"]}}");
    out
}

fn range(state: &HttpState, params: QueryParams, limits: Limits) -> Response {
    let Some(query) = params.query.as_deref() else {
        return bad_data("query is required");
    };
    let (Some(start), Some(end), Some(step)) = (
        params.start.as_deref(),
        params.end.as_deref(),
        params.step.as_deref(),
    ) else {
        return bad_data("start, end and step are required");
    };
    let (start, end, step) = match (parse_time(start), parse_time(end), parse_step(step)) {
        (Ok(s), Ok(e), Ok(st)) => (s, e, st),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_data(e),
    };
    // Prometheus refuses these as bad parameters (400), before evaluating.
    if end < start {
        return bad_data("invalid parameter \"end\": end timestamp must not be before start time");
    }
    if (end - start) / step >= vigil_promql::MAX_STEPS {
        return bad_data(format!(
            "exceeded maximum resolution of {} points per timeseries. Try decreasing the query resolution (?step=XX)",
            vigil_promql::MAX_STEPS
        ));
    }
    match range_query(state.store.as_ref(), query, start, end, step, limits) {
        Ok(m) => matrix_response(&m),
        Err(e) => eval_error(state, e),
    }
}

/// The exact quantile of the per-second samples of windowed series:
/// `query` is a selector (`vigil_cpu_busy_ratio{instance=~"web-.*"}`), `q`
/// the quantile, `start`/`end` the range (default: the last hour).
fn window_quantile(state: &HttpState, params: QueryParams, _limits: Limits) -> Response {
    let Some(query) = params.query.as_deref() else {
        return bad_data("query is required: a selector of a vigil_ windowed family");
    };
    let q = match params.q.as_deref().map(str::parse::<f64>) {
        Some(Ok(q)) if (0.0..=1.0).contains(&q) => q,
        _ => return bad_data("q is required: a quantile between 0 and 1"),
    };
    let end = match params.end.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(now_ms),
        Err(e) => return bad_data(e),
    };
    let start = match params.start.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(end - 3_600_000),
        Err(e) => return bad_data(e),
    };
    let matchers = match vigil_promql::parse(query) {
        Ok(promql_parser::parser::Expr::VectorSelector(vs)) => {
            match vigil_promql::eval::selector_matchers(&vs) {
                Ok(m) => m,
                Err(e) => return bad_data(e.to_string()),
            }
        }
        Ok(_) => {
            return bad_data(
                "query must be a series selector such as vigil_cpu_busy_ratio{instance=\"web-1\"}",
            );
        }
        Err(e) => return bad_data(e.to_string()),
    };
    match state.store.window_quantile(&matchers, q, start, end) {
        Ok(Some(r)) => axum::Json(json!({"status": "success", "data": {
            "quantile": q,
            "value": format_float(r.value),
            "count": r.count,
            "min": format_float(r.min),
            "max": format_float(r.max),
            "start": start as f64 / 1000.0,
            "end": end as f64 / 1000.0,
        }}))
        .into_response(),
        Ok(None) => axum::Json(
            json!({"status": "success", "data": {"quantile": q, "value": null, "count": 0}}),
        )
        .into_response(),
        Err(e) => error_response(StatusCode::UNPROCESSABLE_ENTITY, "execution", e.to_string()),
    }
}

/// `GET /api/v1/vigil/quantile`
pub async fn window_quantile_get(
    State(state): State<Arc<HttpState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let timeout = params.timeout.clone();
    run_blocking(state, timeout.as_deref(), params, window_quantile).await
}

/// `GET /api/v1/query`
pub async fn query_get(
    State(state): State<Arc<HttpState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let timeout = params.timeout.clone();
    run_blocking(state, timeout.as_deref(), params, instant).await
}

/// `POST /api/v1/query`
pub async fn query_post(
    State(state): State<Arc<HttpState>>,
    Form(params): Form<QueryParams>,
) -> Response {
    let timeout = params.timeout.clone();
    run_blocking(state, timeout.as_deref(), params, instant).await
}

/// `GET /api/v1/query_range`
pub async fn query_range_get(
    State(state): State<Arc<HttpState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    let timeout = params.timeout.clone();
    run_blocking(state, timeout.as_deref(), params, range).await
}

/// `POST /api/v1/query_range`
pub async fn query_range_post(
    State(state): State<Arc<HttpState>>,
    Form(params): Form<QueryParams>,
) -> Response {
    let timeout = params.timeout.clone();
    run_blocking(state, timeout.as_deref(), params, range).await
}

/// Queries are CPU work: run them off the async workers, at most
/// `query.max_concurrent` at once. A query waits for a slot for at most its
/// timeout (`query.timeout`, or its `timeout` parameter when shorter), then
/// gets 503; the wait counts against that timeout.
pub(super) async fn run_blocking<P: Send + 'static>(
    state: Arc<HttpState>,
    timeout: Option<&str>,
    params: P,
    f: fn(&HttpState, P, Limits) -> Response,
) -> Response {
    let mut limits = match query_limits(state.query.config.limits, timeout) {
        Ok(l) => l,
        Err(e) => {
            state.query.refused(Refusal::Invalid);
            return bad_data(e);
        }
    };
    let started = Instant::now();
    let gate = Arc::clone(&state);
    let permit = tokio::time::timeout(limits.timeout, gate.query.slots.acquire()).await;
    let Ok(Ok(permit)) = permit else {
        state.query.refused(Refusal::Concurrency);
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "too many concurrent queries: {} run at once (query.max_concurrent) and none finished within {:?}",
                state.query.config.max_concurrent, limits.timeout
            ),
        );
    };
    limits.timeout = limits.timeout.saturating_sub(started.elapsed());
    let outcome = tokio::task::spawn_blocking(move || {
        let response = f(&state, params, limits);
        if response.status() == StatusCode::OK {
            state.query.served.fetch_add(1, Ordering::Relaxed);
        } else if response.status() == StatusCode::BAD_REQUEST {
            state.query.refused(Refusal::Invalid);
        }
        response
    })
    .await;
    drop(permit);
    match outcome {
        Ok(r) => r,
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// Why a query was refused, for `vigil_collector_queries_refused_total`.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// No slot within the timeout (`query.max_concurrent`).
    Concurrency,
    /// More samples than `query.max_samples`.
    MaxSamples,
    /// Longer than `query.timeout`.
    Timeout,
    /// A bad expression or parameter.
    Invalid,
    /// A metadata call matched more than `query.max_series`.
    MaxSeries,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Concurrency,
        Refusal::MaxSamples,
        Refusal::Timeout,
        Refusal::Invalid,
        Refusal::MaxSeries,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::Concurrency => "concurrency",
            Refusal::MaxSamples => "max_samples",
            Refusal::Timeout => "timeout",
            Refusal::Invalid => "invalid",
            Refusal::MaxSeries => "max_series",
        }
    }
}

/// The query API's slots, limits and counters.
pub struct QueryGate {
    pub(super) config: QueryConfig,
    slots: tokio::sync::Semaphore,
    served: AtomicU64,
    refusals: [AtomicU64; 5],
}

impl QueryGate {
    /// Slots and limits from `[query]`.
    pub fn new(config: QueryConfig) -> Self {
        Self {
            config,
            slots: tokio::sync::Semaphore::new(config.max_concurrent),
            served: AtomicU64::new(0),
            refusals: Default::default(),
        }
    }

    pub(super) fn refused(&self, why: Refusal) {
        self.refusals[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `vigil_collector_queries_total`, `vigil_collector_queries_refused_total`
    /// and `vigil_collector_queries_running`.
    pub fn write_metrics(&self, w: &mut ExpositionWriter) {
        w.header(
            "vigil_collector_queries_total",
            "Queries of the query API answered with a result.",
            MetricKind::Counter,
        );
        w.sample(
            "vigil_collector_queries_total",
            "",
            "",
            None,
            self.served.load(Ordering::Relaxed) as f64,
        );
        w.header(
            "vigil_collector_queries_refused_total",
            "Queries refused, by reason: concurrency (no slot within the timeout), max_samples, timeout, invalid, max_series (metadata calls).",
            MetricKind::Counter,
        );
        for why in Refusal::ALL {
            w.sample(
                "vigil_collector_queries_refused_total",
                "",
                &format!("reason=\"{}\"", why.label()),
                None,
                self.refusals[why as usize].load(Ordering::Relaxed) as f64,
            );
        }
        w.header(
            "vigil_collector_queries_running",
            "Queries being evaluated now.",
            MetricKind::Gauge,
        );
        let running = self.config.max_concurrent - self.slots.available_permits();
        w.sample(
            "vigil_collector_queries_running",
            "",
            "",
            None,
            running as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_answers_are_json_in_prometheus_number_formats() -> Result<(), serde_json::Error> {
        let m = vec![RangeSeries {
            labels: vec![
                ("__name__".to_string(), "x".to_string()),
                ("q".to_string(), "a\"b\\c".to_string()),
            ],
            points: vec![
                (1_700_000_000_000, 0.5),
                (1_700_000_000_123, f64::NAN),
                (1_700_000_001_000, f64::INFINITY),
                (1_700_000_002_000, f64::NEG_INFINITY),
                (1_700_000_003_000, 1e21),
            ],
        }];
        let body: Json = serde_json::from_slice(&matrix_body(&m))?;
        assert_eq!(
            body,
            json!({"status": "success", "data": {"resultType": "matrix", "result": [{
                "metric": {"__name__": "x", "q": "a\"b\\c"},
                "values": [
                    [1700000000, "0.5"],
                    [1700000000.123, "NaN"],
                    [1700000001, "+Inf"],
                    [1700000002, "-Inf"],
                    [1700000003, "1000000000000000000000"]
                ]
            }]}})
        );
        let empty: Json = serde_json::from_slice(&matrix_body(&[]))?;
        assert_eq!(empty["data"]["result"], json!([]));
        Ok(())
    }

    #[test]
    fn times_and_steps_parse_as_prometheus_does() {
        assert_eq!(parse_time("1700000000.5"), Ok(1_700_000_000_500));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Ok(1_700_000_000_000));
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_step("15"), Ok(15_000));
        assert_eq!(parse_step("1m"), Ok(60_000));
        assert!(parse_step("0").is_err());
    }
}
