//! The rest of Prometheus's HTTP API that Grafana's Prometheus data source
//! calls when it connects, browses metrics and fills `label_values(...)`
//! variables: `/api/v1/series`, `/api/v1/labels`,
//! `/api/v1/label/<name>/values`, `/api/v1/metadata`,
//! `/api/v1/status/buildinfo`, `/api/v1/rules`, `/api/v1/alerts`,
//! `/api/v1/query_exemplars` and `/api/v1/format_query`; and `/federate`
//! (also `/metrics?match[]=…`) for a Prometheus server that scrapes the
//! collector. Answers follow Prometheus 2.42's envelope, fields, error
//! types and status codes.
//!
//! Parameters come from the URL and, for POST, from a form body, as
//! Prometheus merges them; `match[]` may repeat, which serde's form decoder
//! cannot express, so they are kept as pairs ([`Params`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value as Json, json};

use super::HttpState;
use super::api::{Refusal, bad_data, error_response, format_float, run_blocking, write_json_str};
use vigil_promql::Limits;
use vigil_rules::AlertState;
use vigil_shared::exposition::Format;
use vigil_store::history::Matcher;
use vigil_store::now_ms;

/// The Prometheus version whose HTTP API the collector answers as, in
/// `/api/v1/status/buildinfo`: Grafana picks the calls it makes by it.
pub const PROMETHEUS_API_VERSION: &str = "2.42.0";

/// Query and form parameters, in order, repeats kept.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// The URL's query and a form body, merged (URL first).
    pub fn new(query: Option<&str>, body: Option<&[u8]>) -> Self {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(q) = query {
            pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        if let Some(b) = body {
            pairs.extend(form_urlencoded::parse(b).into_owned());
        }
        Self(pairs)
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses every `match[]` as a series selector.
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, String> {
    params
        .all("match[]")
        .map(|text| match vigil_promql::parse(text) {
            Ok(promql_parser::parser::Expr::VectorSelector(vs)) => {
                vigil_promql::eval::selector_matchers(&vs).map_err(|e| e.to_string())
            }
            Ok(_) => Err(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector such as up{{job=\"node\"}}"
            )),
            Err(e) => Err(format!("invalid parameter \"match[]\": {e}")),
        })
        .collect()
}

/// `start` and `end`, each defaulting to the whole history.
fn time_range(params: &Params) -> Result<(i64, i64), String> {
    let parse = |name: &str, default: i64| match params.get(name) {
        None | Some("") => Ok(default),
        Some(text) => super::api::parse_time(text)
            .map_err(|e| format!("invalid time value for '{name}': {e}")),
    };
    Ok((parse("start", i64::MIN)?, parse("end", i64::MAX)?))
}

/// `limit`: 0 or absent is none.
fn limit(params: &Params) -> Result<Option<usize>, String> {
    match params.get("limit") {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n <= 0 => Ok(None),
            Ok(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            Err(_) => Err(format!(
                "invalid parameter \"limit\": {text:?} is not a number"
            )),
        },
    }
}

fn success(data: Json, warnings: Vec<String>) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    super::json_response(StatusCode::OK, body)
}

/// [`success`] with `data` already written as JSON (long lists: no
/// `serde_json::Value` tree is built for them).
fn success_raw(data: &[u8], warnings: Vec<String>) -> Response {
    let mut body = Vec::with_capacity(data.len() + 64);
    body.extend_from_slice(b"{\"status\":\"success\",\"data\":");
    body.extend_from_slice(data);
    if !warnings.is_empty() {
        body.extend_from_slice(b",\"warnings\":");
        body.extend_from_slice(json!(warnings).to_string().as_bytes());
    }
    body.push(b'}');
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Answers a list call: `limit` truncates with a warning, as Prometheus;
/// without it, more than `query.max_series` entries is refused. `render`
/// writes the list as JSON.
fn bounded<T>(
    state: &HttpState,
    what: &str,
    requested: Option<usize>,
    fetch: impl FnOnce(usize) -> (Vec<T>, bool),
    render: impl FnOnce(Vec<T>) -> Vec<u8>,
) -> Response {
    let cap = state.query.config.max_series;
    let (items, truncated) = fetch(requested.map_or(cap, |l| l.min(cap)));
    match requested {
        Some(l) if truncated && l <= cap => success_raw(
            &render(items),
            vec!["results truncated due to limit".to_string()],
        ),
        _ if truncated => {
            state.query.refused(Refusal::MaxSeries);
            error_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                "execution",
                format!(
                    "more than {cap} {what} match (query.max_series): narrow match[], start and end, or pass limit"
                ),
            )
        }
        _ => success_raw(&render(items), Vec::new()),
    }
}

fn series(state: &HttpState, params: Params, _limits: Limits) -> Response {
    if params.get("match[]").is_none() {
        return bad_data("no match[] parameter provided");
    }
    let (selectors, (start, end), requested) =
        match (selectors(&params), time_range(&params), limit(&params)) {
            (Ok(s), Ok(r), Ok(l)) => (s, r, l),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_data(e),
        };
    bounded(
        state,
        "series",
        requested,
        |cap| state.store.series_labels(&selectors, start, end, cap),
        |items| {
            let mut out = Vec::with_capacity(items.len() * 96 + 2);
            out.push(b'[');
            for (i, labels) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.push(b'{');
                for (j, (name, value)) in labels.iter().enumerate() {
                    if j > 0 {
                        out.push(b',');
                    }
                    write_json_str(&mut out, name);
                    out.push(b':');
                    write_json_str(&mut out, value);
                }
                out.push(b'}');
            }
            out.push(b']');
            out
        },
    )
}

fn label_index(state: &HttpState, name: Option<&str>, params: &Params) -> Response {
    let (selectors, (start, end), requested) =
        match (selectors(params), time_range(params), limit(params)) {
            (Ok(s), Ok(r), Ok(l)) => (s, r, l),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_data(e),
        };
    let what = if name.is_some() {
        "label values"
    } else {
        "label names"
    };
    bounded(
        state,
        what,
        requested,
        |cap| state.store.label_index(name, &selectors, start, end, cap),
        |items| json!(items).to_string().into_bytes(),
    )
}

fn labels(state: &HttpState, params: Params, _limits: Limits) -> Response {
    label_index(state, None, &params)
}

/// True for a valid label name (Prometheus's `model.LabelNameRE`).
fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn label_values(state: &HttpState, (name, params): (String, Params), _limits: Limits) -> Response {
    if !valid_label_name(&name) {
        return bad_data(format!("invalid label name: {name:?}"));
    }
    label_index(state, Some(&name), &params)
}

/// Help and type of every family the collector exposes on `/metrics`, read
/// back from that exposition: what a Prometheus server scraping the
/// collector holds as metadata.
fn metadata(state: &HttpState, params: Params, _limits: Limits) -> Response {
    let limit = match limit(&params) {
        Ok(l) => l.unwrap_or(usize::MAX),
        Err(e) => return bad_data(e),
    };
    let only = params.get("metric").filter(|m| !m.is_empty());
    let text = super::render(state, Format::Text);
    let mut families: BTreeMap<String, (String, String)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            families.entry(name.to_string()).or_default().0 = unescape_help(help);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "counter" | "gauge" | "histogram" | "summary" => kind,
                _ => "unknown",
            };
            families.entry(name.to_string()).or_default().1 = kind.to_string();
        }
    }
    let data: serde_json::Map<String, Json> = families
        .into_iter()
        .filter(|(name, _)| only.is_none_or(|m| m == name))
        .take(limit)
        .map(|(name, (help, kind))| {
            let kind = if kind.is_empty() {
                "unknown".into()
            } else {
                kind
            };
            (name, json!([{"type": kind, "help": help, "unit": ""}]))
        })
        .collect();
    success(Json::Object(data), Vec::new())
}

fn unescape_help(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Formats a time as Go's `time.Time` does in JSON: RFC 3339 in UTC, the
/// fraction without trailing zeros; the zero time for `None`.
pub fn go_time(ms: Option<i64>) -> String {
    let Some(ms) = ms else {
        return "0001-01-01T00:00:00Z".into();
    };
    let t = std::time::UNIX_EPOCH
        .checked_add(std::time::Duration::from_millis(ms.max(0) as u64))
        .unwrap_or(std::time::UNIX_EPOCH);
    let text = humantime::format_rfc3339_nanos(t).to_string();
    match text.split_once('.') {
        Some((whole, fraction)) => {
            let digits = fraction.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{whole}Z")
            } else {
                format!("{whole}.{digits}Z")
            }
        }
        None => text,
    }
}

/// Formats a value as Go's `strconv.FormatFloat(v, 'e', -1, 64)`, which
/// Prometheus uses for an alert's `value`: `1e+00`, `2.5e-03`.
pub fn go_exponent(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let text = format!("{v:e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// Labels or annotations as Prometheus writes them: `null` when there are
/// none.
fn pairs_or_null(pairs: &[(String, String)]) -> Json {
    if pairs.is_empty() {
        Json::Null
    } else {
        pairs_json(pairs)
    }
}

fn pairs_json(pairs: &[(String, String)]) -> Json {
    Json::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect(),
    )
}

/// Seconds as Go writes a float64: whole numbers without a fraction.
fn seconds_json(ms: i64) -> Json {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn alert_json(a: &vigil_rules::Alert) -> Json {
    json!({
        "labels": pairs_json(&a.labels),
        "annotations": pairs_json(&a.annotations),
        "state": a.state.as_str(),
        "activeAt": go_time(Some(a.active_at)),
        "value": go_exponent(a.value),
    })
}

fn active(a: &vigil_rules::Alert) -> bool {
    a.state != AlertState::Inactive
}

/// `GET /api/v1/rules`: every group and rule with its health and alerts;
/// `type=alert` or `type=record` keeps one kind, `rule_name[]`,
/// `rule_group[]` and `file[]` keep the ones named.
async fn rules(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
    let params = Params::new(query.as_deref(), None);
    let kind = params.get("type").unwrap_or("");
    let (want_alerts, want_records) = match kind {
        "" => (true, true),
        "alert" => (true, false),
        "record" => (false, true),
        other => {
            return bad_data(format!(
                "invalid parameter \"type\": {other:?}, must be alert or record"
            ));
        }
    };
    let names: Vec<&str> = params.all("rule_name[]").collect();
    let groups: Vec<&str> = params.all("rule_group[]").collect();
    let files: Vec<&str> = params.all("file[]").collect();
    let mut out = Vec::new();
    for g in state.rules.status() {
        if !groups.is_empty() && !groups.contains(&g.name.as_str()) {
            continue;
        }
        if !files.is_empty() && !files.contains(&g.file.as_str()) {
            continue;
        }
        let rules: Vec<Json> = g
            .rules
            .iter()
            .filter(|r| {
                if r.alerting {
                    want_alerts
                } else {
                    want_records
                }
            })
            .filter(|r| names.is_empty() || names.contains(&r.name.as_str()))
            .map(|r| {
                let health = match (&r.last_error, g.last_eval) {
                    (Some(_), _) => "err",
                    (None, Some(_)) => "ok",
                    (None, None) => "unknown",
                };
                let mut rule = json!({
                    "name": r.name,
                    "query": r.query,
                    "labels": pairs_or_null(&r.labels),
                    "health": health,
                    "evaluationTime": r.eval_seconds,
                    "lastEvaluation": go_time(g.last_eval),
                });
                if let Some(e) = &r.last_error {
                    rule["lastError"] = json!(e);
                }
                if r.alerting {
                    let alerts: Vec<&vigil_rules::Alert> =
                        r.alerts.iter().filter(|a| active(a)).collect();
                    let state = if alerts.iter().any(|a| a.state == AlertState::Firing) {
                        "firing"
                    } else if alerts.is_empty() {
                        "inactive"
                    } else {
                        "pending"
                    };
                    rule["state"] = json!(state);
                    rule["duration"] = seconds_json(r.for_ms);
                    rule["keepFiringFor"] = seconds_json(r.keep_firing_for_ms);
                    rule["annotations"] = pairs_or_null(&r.annotations);
                    rule["alerts"] = Json::Array(alerts.into_iter().map(alert_json).collect());
                    rule["type"] = json!("alerting");
                } else {
                    rule["type"] = json!("recording");
                }
                rule
            })
            .collect();
        if rules.is_empty() && (!names.is_empty() || !kind.is_empty()) {
            continue;
        }
        out.push(json!({
            "name": g.name,
            "file": g.file,
            "rules": rules,
            "interval": seconds_json(g.interval_ms),
            "limit": g.limit,
            "evaluationTime": g.eval_seconds,
            "lastEvaluation": go_time(g.last_eval),
        }));
    }
    success(json!({"groups": out}), Vec::new())
}

/// `GET /api/v1/alerts`: pending and firing alerts.
async fn alerts(State(state): State<Arc<HttpState>>) -> Response {
    let alerts: Vec<Json> = state
        .rules
        .alerts()
        .iter()
        .filter(|(_, a)| active(a))
        .map(|(_, a)| alert_json(a))
        .collect();
    success(json!({"alerts": alerts}), Vec::new())
}

/// `GET /api/v1/status/buildinfo`.
async fn buildinfo() -> Response {
    success(
        json!({
            "version": PROMETHEUS_API_VERSION,
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "vigil-collector",
            "vigilVersion": env!("CARGO_PKG_VERSION"),
        }),
        Vec::new(),
    )
}

/// `/api/v1/query_exemplars`: the collector keeps no exemplars, so the
/// answer is always empty; the query is still checked.
fn exemplars(_state: &HttpState, params: Params, _limits: Limits) -> Response {
    let Some(query) = params.get("query") else {
        return bad_data("query is required");
    };
    if let Err(e) = vigil_promql::parse(query) {
        return bad_data(e.to_string());
    }
    if let Err(e) = time_range(&params) {
        return bad_data(e);
    }
    success(json!([]), Vec::new())
}

/// `/api/v1/format_query`: the expression, pretty-printed.
fn format_query(_state: &HttpState, params: Params, _limits: Limits) -> Response {
    let Some(query) = params.get("query") else {
        return bad_data("query is required");
    };
    match vigil_promql::parse(query) {
        Ok(expr) => success(
            json!(
                expr.prettify()
                    .replace("double_exponential_smoothing(", "holt_winters(")
            ),
            Vec::new(),
        ),
        Err(e) => bad_data(e.to_string()),
    }
}

/// Federation: the latest sample (within the lookback, 5 minutes) of every
/// series any `match[]` selects, in the text format with timestamps, each
/// family `untyped`, as Prometheus's `/federate` writes it.
fn federate(state: &HttpState, params: Params, limits: Limits) -> Response {
    if params.get("match[]").is_none() {
        return bad_data("no match[] parameter provided");
    }
    let selectors = match selectors(&params) {
        Ok(s) => s,
        Err(e) => return bad_data(e),
    };
    let now = now_ms();
    let lookback = vigil_promql::eval::millis(limits.lookback);
    let (labels, truncated) = state.store.series_labels(
        &selectors,
        now - lookback,
        now,
        state.query.config.max_series,
    );
    if truncated {
        state.query.refused(Refusal::MaxSeries);
        return error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "execution",
            format!(
                "more than {} series match (query.max_series): narrow match[]",
                state.query.config.max_series
            ),
        );
    }
    drop(labels);
    // One selection per match[], latest sample per series, deduplicated.
    let mut latest: BTreeMap<Vec<(String, String)>, (i64, f64)> = BTreeMap::new();
    for matchers in &selectors {
        for s in state.store.select(matchers, now - lookback, now) {
            if let Some(&(t, v)) = s.samples.last()
                && !vigil_store::chunk::is_stale_marker(v)
            {
                latest.insert(s.labels, (t, v));
            }
        }
    }
    let mut by_name: BTreeMap<String, Vec<(String, i64, f64)>> = BTreeMap::new();
    for (labels, (t, v)) in latest {
        let name = vigil_store::history::label_value(&labels, "__name__").to_string();
        let mut text = String::new();
        for (k, value) in labels.iter().filter(|(k, _)| k != "__name__") {
            if !text.is_empty() {
                text.push(',');
            }
            text.push_str(k);
            text.push_str("=\"");
            vigil_shared::labels::escape_label_value_into(&mut text, value);
            text.push('"');
        }
        by_name.entry(name).or_default().push((text, t, v));
    }
    let mut body = String::new();
    for (name, series) in by_name {
        body.push_str(&format!("# TYPE {name} untyped\n"));
        for (labels, t, v) in series {
            if labels.is_empty() {
                body.push_str(&format!("{name} {} {t}\n", format_float(v)));
            } else {
                body.push_str(&format!("{name}{{{labels}}} {} {t}\n", format_float(v)));
            }
        }
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, Format::Text.content_type())],
        body,
    )
        .into_response()
}

macro_rules! get_and_post {
    ($get:ident, $post:ident, $f:expr) => {
        async fn $get(State(state): State<Arc<HttpState>>, RawQuery(query): RawQuery) -> Response {
            let params = Params::new(query.as_deref(), None);
            let timeout = params.get("timeout").map(str::to_string);
            run_blocking(state, timeout.as_deref(), params, $f).await
        }

        async fn $post(
            State(state): State<Arc<HttpState>>,
            RawQuery(query): RawQuery,
            body: Bytes,
        ) -> Response {
            let params = Params::new(query.as_deref(), Some(&body));
            let timeout = params.get("timeout").map(str::to_string);
            run_blocking(state, timeout.as_deref(), params, $f).await
        }
    };
}

get_and_post!(series_get, series_post, series);
get_and_post!(labels_get, labels_post, labels);
get_and_post!(metadata_get, metadata_post, metadata);
get_and_post!(exemplars_get, exemplars_post, exemplars);
get_and_post!(format_get, format_post, format_query);
get_and_post!(federate_get, federate_post, federate);

async fn label_values_get(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::new(query.as_deref(), None);
    let timeout = params.get("timeout").map(str::to_string);
    run_blocking(state, timeout.as_deref(), (name, params), label_values).await
}

/// `/metrics?match[]=…` answers as `/federate`; without `match[]`, the
/// whole exposition.
pub async fn metrics_or_federate(
    State(state): State<Arc<HttpState>>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    let params = Params::new(query.as_deref(), None);
    if params.get("match[]").is_some() {
        return run_blocking(state, None, params, federate).await;
    }
    super::metrics(State(state), headers).await
}

/// The routes of this module.
pub fn routes(router: axum::Router<Arc<HttpState>>) -> axum::Router<Arc<HttpState>> {
    use axum::routing::get;
    router
        .route("/api/v1/series", get(series_get).post(series_post))
        .route("/api/v1/labels", get(labels_get).post(labels_post))
        .route("/api/v1/label/{name}/values", get(label_values_get))
        .route("/api/v1/metadata", get(metadata_get).post(metadata_post))
        .route("/api/v1/status/buildinfo", get(buildinfo))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/alerts", get(alerts))
        .route(
            "/api/v1/query_exemplars",
            get(exemplars_get).post(exemplars_post),
        )
        .route("/api/v1/format_query", get(format_get).post(format_post))
        .route("/federate", get(federate_get).post(federate_post))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_match_parameters_are_all_kept() {
        let p = Params::new(
            Some("match[]=up&start=1"),
            Some(b"match[]=node_load1%7Bjob%3D%22node%22%7D&end=2"),
        );
        assert_eq!(
            p.all("match[]").collect::<Vec<_>>(),
            vec!["up", "node_load1{job=\"node\"}"]
        );
        assert_eq!(p.get("end"), Some("2"));
    }

    #[test]
    fn go_formats_match_prometheus() {
        assert_eq!(go_exponent(1.0), "1e+00");
        assert_eq!(go_exponent(0.0025), "2.5e-03");
        assert_eq!(go_exponent(123456.0), "1.23456e+05");
        assert_eq!(go_exponent(f64::NAN), "NaN");
        assert_eq!(go_time(None), "0001-01-01T00:00:00Z");
        assert_eq!(go_time(Some(1_700_000_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(go_time(Some(1_700_000_000_120)), "2023-11-14T22:13:20.12Z");
    }

    #[test]
    fn label_names_are_checked_as_prometheus_does() {
        assert!(valid_label_name("instance"));
        assert!(valid_label_name("__name__"));
        assert!(!valid_label_name("0day"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name(""));
    }
}
