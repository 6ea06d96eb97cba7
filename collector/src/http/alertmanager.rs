//! The parts of Alertmanager's API v2 that `amtool` reads besides
//! silences: `GET /api/v2/alerts` (`amtool alert query`, with its filters)
//! and `GET /api/v2/status` (`amtool config show`, and checks of the
//! server). Like silences they need the admin token, or a caller on the
//! collector's host when none is set.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::admin::refuse;
use super::{HttpState, json_response};
use vigil_notify::api::AlertFilter;
use vigil_store::now_ms;

/// `GET /api/v2/alerts?filter=…&active=…&silenced=…&inhibited=…&receiver=…`.
pub async fn alerts(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    let filter = match AlertFilter::from_query(&pairs) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let list = state.notify.api_alerts(&filter, now_ms());
    json_response(StatusCode::OK, serde_json::Value::Array(list))
}

/// `GET /api/v2/status`.
pub async fn status(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&state, peer, &headers) {
        return r.into_response();
    }
    json_response(StatusCode::OK, state.notify.api_status())
}
