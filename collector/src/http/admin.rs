//! Admin endpoints: `POST /-/reload` re-reads the rule files. With
//! `http.admin_token` set, a request needs `Authorization: Bearer <token>`;
//! without one, only callers on the collector's own host (loopback) are
//! served, as with agents and no ingest tokens.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use tracing::warn;

use super::HttpState;
use crate::ingest::auth::constant_time_eq;

/// True when `headers` carry the admin token (`Authorization: Bearer`).
pub fn has_admin_token(state: &HttpState, headers: &HeaderMap) -> bool {
    state.admin_token.as_ref().is_some_and(|token| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|p| constant_time_eq(token.expose().as_bytes(), p.as_bytes()))
    })
}

/// Why an admin request is refused; `None` when it may go on.
pub fn refuse(
    state: &HttpState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Option<(StatusCode, String)> {
    // A basic-auth user of the web config is trusted with admin calls.
    if state.is_basic_auth_user(headers) {
        return None;
    }
    match &state.admin_token {
        Some(_) => {
            if has_admin_token(state, headers) {
                None
            } else {
                warn!(%peer, "admin request with a missing or wrong token refused");
                Some((
                    StatusCode::UNAUTHORIZED,
                    "missing or wrong admin token (Authorization: Bearer <http.admin_token>)\n"
                        .into(),
                ))
            }
        }
        None if peer.ip().is_loopback() => None,
        None => {
            warn!(%peer, "admin request from another host refused: no http.admin_token is set");
            Some((
                StatusCode::FORBIDDEN,
                "admin endpoints answer only this host until http.admin_token is set\n".into(),
            ))
        }
    }
}

/// Refuses a state change a browser could have been made to send: one
/// from another origin (`Origin` not this collector's `Host`, or
/// `Sec-Fetch-Site` cross-site or same-site), or with a body that is not
/// JSON. Forms and preflight-free `fetch` can send `text/plain`, form and
/// multipart bodies across origins; a JSON body needs a CORS preflight,
/// which the collector never grants. `None` when the request may go on.
pub fn refuse_cross_site(headers: &HeaderMap, json_body: bool) -> Option<(StatusCode, String)> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = text("origin") {
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
        if Some(origin_host) != text("host") {
            warn!(%origin, "cross-origin admin request refused");
            return Some((
                StatusCode::FORBIDDEN,
                format!("cross-origin request refused: Origin {origin} is not this collector\n"),
            ));
        }
    }
    if matches!(text("sec-fetch-site"), Some("cross-site" | "same-site")) {
        return Some((StatusCode::FORBIDDEN, "cross-site request refused\n".into()));
    }
    let content_type = text("content-type");
    let is_json = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
    });
    if !is_json && (json_body || content_type.is_some()) {
        return Some((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this endpoint takes application/json only, not {}\n",
                content_type.unwrap_or("a body without a Content-Type")
            ),
        ));
    }
    None
}

/// `POST /-/reload`.
pub async fn reload(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> impl IntoResponse {
    if let Some(refusal) =
        refuse(&state, peer, &headers).or_else(|| refuse_cross_site(&headers, false))
    {
        return refusal;
    }
    let rules = Arc::clone(&state.rules);
    if let Err(e) = state.notify.reload() {
        return (
            StatusCode::BAD_REQUEST,
            format!("reload refused; the previous notification routing keeps running:\n{e}\n"),
        );
    }
    match tokio::task::spawn_blocking(move || rules.reload()).await {
        Ok(Ok((groups, rules))) => (
            StatusCode::OK,
            format!("rules reloaded: {groups} groups, {rules} rules\n"),
        ),
        Ok(Err(errors)) => (
            StatusCode::BAD_REQUEST,
            format!(
                "reload refused; the previous rules keep running:\n{}\n",
                errors.join("\n")
            ),
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}\n"),
        ),
    }
}
