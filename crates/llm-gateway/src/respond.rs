//! Responses every endpoint writes: JSON, the front door's refusals, request metrics.

use std::time::Instant;

use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, GATEWAY_OVERLOADED};
use super::gateway::Current;

/// Whether the endpoint at `path` answers errors in Anthropic's shape (its Messages door).
pub(crate) fn anthropic_errors(path: &str) -> bool {
    path.starts_with("/v1/messages")
}

/// `error` in the shape of the endpoint at `path`.
pub(crate) fn refusal(path: &str, error: ApiError) -> Response {
    if anthropic_errors(path) {
        error.into_anthropic_response()
    } else {
        error.into_response()
    }
}

/// A fast 503 with `Retry-After` (Anthropic's door: its 529 `overloaded_error`): the gateway
/// holds as much as it admits.
pub(crate) fn at_capacity(path: &str, what: &str) -> Response {
    let error = ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "server_error",
        retry_after: Some(std::time::Duration::from_secs(1)),
        ..ApiError::invalid(format!(
            "the gateway is at capacity ({what}); retry shortly"
        ))
        .code(GATEWAY_OVERLOADED)
    };
    refusal(path, error)
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

/// The request body as `T`: a body axum refused is a 413 or a 400, JSON that is not a `T`
/// a 400 saying why. The bytes are dropped once parsed.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| {
        let (status, message) = body_error(&rejection);
        ApiError::body(status, message)
    })?;
    serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))
}

/// Counts a request to `endpoint` once answered: its response, or its error in the
/// endpoint's shape.
pub(crate) fn answered(
    gw: &Current,
    endpoint: &'static str,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let response = result.unwrap_or_else(|error| refusal(endpoint, error));
    observed(gw, endpoint, started, response)
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
