//! Responses every endpoint writes: JSON, the front door's refusals, request metrics.

use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::gateway::Current;

/// A fast 503 with `Retry-After`: the gateway holds as much as it admits.
pub(crate) fn at_capacity(what: &str) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": { "message": format!("the gateway is at capacity ({what}); retry shortly"), "type": "server_error", "code": "gateway_overloaded" } }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Counts a request to `endpoint` once its response is ready.
pub(crate) fn observed(
    gw: &Current,
    endpoint: &'static str,
    started: Instant,
    response: Response,
) -> Response {
    gw.inner
        .metrics
        .request(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// A body axum refused: too large (413), or unreadable (400).
pub(crate) fn body_error(rejection: &BytesRejection) -> (StatusCode, String) {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body too large".to_owned()
    } else {
        format!("cannot read the request body: {rejection}")
    };
    (status, message)
}

pub(crate) fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}
