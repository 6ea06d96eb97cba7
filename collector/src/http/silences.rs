//! Silences over HTTP, shaped like Alertmanager's API v2 (`amtool` and
//! scripts written for it work): `GET /api/v2/silences`, `POST
//! /api/v2/silences` (answers `{"silenceID": …}`), `DELETE
//! /api/v2/silence/{id}`. Every call needs the admin token (see
//! [`super::admin`]), as silencing is an admin action.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::admin::refuse;
use vigil_notify::silences::PostableSilence;
use vigil_store::now_ms;

fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

/// `GET /api/v2/silences`.
pub async fn list(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    let now = now_ms();
    let mut silences = state
        .notify
        .silences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let list: Vec<serde_json::Value> = silences.list(now).iter().map(|s| s.to_json(now)).collect();
    json(StatusCode::OK, serde_json::Value::Array(list))
}

/// `POST /api/v2/silences`.
pub async fn post(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    let silence: PostableSilence = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("invalid silence: {e}\n")).into_response();
        }
    };
    let mut silences = state
        .notify
        .silences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match silences.put(silence, now_ms()) {
        Ok(id) => json(StatusCode::OK, serde_json::json!({ "silenceID": id })),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// `DELETE /api/v2/silence/{id}`.
pub async fn expire(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    let mut silences = state
        .notify
        .silences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match silences.expire(&id, now_ms()) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) if e.contains("not found") => {
            (StatusCode::NOT_FOUND, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}
