//! `/graph`: where alert links point. Prometheus's `generatorURL` and the
//! templates' `graphLink` / `tableLink` are `/graph?g0.expr=…`; the collector
//! has no graph page, so it answers with a redirect (303) to the query API
//! for the same expression, evaluated now, and names that address in a
//! short plain-text body for clients that do not follow redirects.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `GET /graph?g0.expr=EXPR`.
pub async fn graph(Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(expr) = params.get("g0.expr").filter(|e| !e.trim().is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing g0.expr: /graph?g0.expr=EXPR redirects to /api/v1/query?query=EXPR\n",
        )
            .into_response();
    };
    let target = format!("/api/v1/query?query={}", vigil_template::query_escape(expr));
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, target.clone()),
            (
                header::CONTENT_TYPE,
                "text/plain; charset=utf-8".to_string(),
            ),
        ],
        format!("See {target}\n"),
    )
        .into_response()
}
