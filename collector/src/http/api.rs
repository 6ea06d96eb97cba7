//! The Prometheus HTTP query API, for Grafana and for scripts:
//! `/api/v1/query` (instant) and `/api/v1/query_range`, by GET or by POST
//! form, answering Prometheus's JSON (`status`, `data.resultType`,
//! `data.result`, or `errorType` and `error`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::HttpState;
use vigil_promql::{EvalError, Labels, Limits, RangeSeries, Value, instant_query, range_query};
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

fn bad_data(message: impl Into<String>) -> Response {
    error_response(StatusCode::BAD_REQUEST, "bad_data", message.into())
}

fn error_response(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": message})),
    )
        .into_response()
}

fn eval_error(e: EvalError) -> Response {
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

/// Parses a time: Unix seconds (with fractions) or RFC 3339.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<f64>() {
        if !seconds.is_finite() {
            return Err(format!("invalid time {text:?}"));
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
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(format!("invalid duration {text:?}: must be more than 0"));
        }
        return Ok((seconds * 1000.0).round() as i64);
    }
    vigil_shared::config::parse_duration_ms(text)
}

fn metric_json(labels: &Labels) -> Json {
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
fn format_float(v: f64) -> String {
    vigil_promql::aggregate::format_value(v)
}

/// The query's limits: the defaults, with a shorter timeout if asked for.
fn limits(params: &QueryParams) -> Result<Limits, String> {
    let mut limits = Limits::default();
    if let Some(t) = &params.timeout {
        let ms = parse_step(t)?;
        limits.timeout = limits.timeout.min(Duration::from_millis(ms as u64));
    }
    Ok(limits)
}

fn instant(state: &HttpState, params: QueryParams) -> Response {
    let Some(query) = params.query.as_deref() else {
        return bad_data("query is required");
    };
    let t = match params.time.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or_else(now_ms),
        Err(e) => return bad_data(e),
    };
    let limits = match limits(&params) {
        Ok(l) => l,
        Err(e) => return bad_data(e),
    };
    let data = match instant_query(state.store.as_ref(), query, t, limits) {
        Ok(Value::Scalar(v)) => json!({"resultType": "scalar", "result": point_json(t, v)}),
        Ok(Value::String(s)) => json!({"resultType": "string", "result": [t as f64 / 1000.0, s]}),
        Ok(Value::Vector(v)) => json!({
            "resultType": "vector",
            "result": v.iter().map(|s| json!({"metric": metric_json(&s.labels), "value": point_json(t, s.v)})).collect::<Vec<_>>()
        }),
        Ok(Value::Matrix(m)) => json!({"resultType": "matrix", "result": matrix_json(&m)}),
        Err(e) => return eval_error(e),
    };
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

fn matrix_json(m: &[RangeSeries]) -> Vec<Json> {
    m.iter()
        .map(|s| {
            json!({
                "metric": metric_json(&s.labels),
                "values": s.points.iter().map(|(t, v)| point_json(*t, *v)).collect::<Vec<_>>()
            })
        })
        .collect()
}

fn range(state: &HttpState, params: QueryParams) -> Response {
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
    let limits = match limits(&params) {
        Ok(l) => l,
        Err(e) => return bad_data(e),
    };
    match range_query(state.store.as_ref(), query, start, end, step, limits) {
        Ok(m) => axum::Json(json!({"status": "success", "data": {"resultType": "matrix", "result": matrix_json(&m)}})).into_response(),
        Err(e) => eval_error(e),
    }
}

/// The exact quantile of the per-second samples of windowed series:
/// `query` is a selector (`vigil_cpu_busy_ratio{instance=~"web-.*"}`), `q`
/// the quantile, `start`/`end` the range (default: the last hour).
fn window_quantile(state: &HttpState, params: QueryParams) -> Response {
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
    run_blocking(state, params, window_quantile).await
}

/// `GET /api/v1/query`
pub async fn query_get(
    State(state): State<Arc<HttpState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    run_blocking(state, params, instant).await
}

/// `POST /api/v1/query`
pub async fn query_post(
    State(state): State<Arc<HttpState>>,
    Form(params): Form<QueryParams>,
) -> Response {
    run_blocking(state, params, instant).await
}

/// `GET /api/v1/query_range`
pub async fn query_range_get(
    State(state): State<Arc<HttpState>>,
    Query(params): Query<QueryParams>,
) -> Response {
    run_blocking(state, params, range).await
}

/// `POST /api/v1/query_range`
pub async fn query_range_post(
    State(state): State<Arc<HttpState>>,
    Form(params): Form<QueryParams>,
) -> Response {
    run_blocking(state, params, range).await
}

/// Queries are CPU work: run them off the async workers.
async fn run_blocking(
    state: Arc<HttpState>,
    params: QueryParams,
    f: fn(&HttpState, QueryParams) -> Response,
) -> Response {
    match tokio::task::spawn_blocking(move || f(&state, params)).await {
        Ok(r) => r,
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
