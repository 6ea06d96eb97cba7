//! Silences over HTTP, shaped like Alertmanager's API v2 (`amtool` and
//! scripts written for it work): `GET /api/v2/silences`, `POST
//! /api/v2/silences` (answers `{"silenceID": …}`), `GET` and `DELETE
//! /api/v2/silence/{id}`. Every call needs the admin token (see
//! [`super::admin`]), as silencing is an admin action.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::admin::{refuse, refuse_cross_site};
use super::{HttpState, json_response};
use vigil_notify::silences::PostableSilence;
use vigil_store::now_ms;

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
    json_response(StatusCode::OK, serde_json::Value::Array(list))
}

/// `POST /api/v2/silences`.
pub async fn post(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers).or_else(|| refuse_cross_site(&headers, true)) {
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
        Ok(id) => json_response(StatusCode::OK, serde_json::json!({ "silenceID": id })),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// `GET /api/v2/silence/{id}`: one silence, 404 when there is none.
pub async fn get_one(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    let silences = state
        .notify
        .silences
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match silences.get(&id) {
        Some(s) => json_response(StatusCode::OK, s.to_json(now_ms())),
        None => (StatusCode::NOT_FOUND, format!("silence {id} not found\n")).into_response(),
    }
}

/// `DELETE /api/v2/silence/{id}`.
pub async fn expire(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers).or_else(|| refuse_cross_site(&headers, false)) {
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
