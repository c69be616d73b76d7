//! The gateway's door: every request shows a gateway key (`Authorization: Bearer …` or
//! `x-api-key`) before any handler runs, and `/health` and `/metrics` the admin key when one
//! is configured. Refusals answer in the endpoint's own error format.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::gateway::Current;
use crate::keys::Caller;
use crate::respond::json_response;

/// The key a request presents: a bearer token, or Anthropic's `x-api-key`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .filter(|key| !key.is_empty())
}

/// Whether `path` is an admin endpoint.
pub(crate) fn is_admin(path: &str) -> bool {
    matches!(path, "/health" | "/metrics" | "/status/data")
}

/// The status page itself: open to anyone who can reach the gateway, as it holds no data
/// (what it shows comes from `/status/data`, an admin endpoint; the page asks for the key).
pub(crate) const STATUS_PAGE: &str = "/status";

/// Lets a request in, or answers it: 401 without a valid key, 403 for an endpoint the key
/// may not call. The caller's key, and the configuration the request lives under, travel on
/// as request extensions.
pub(crate) async fn authenticate(gw: Current, mut request: Request, next: Next) -> Response {
    match admit(gw, &mut request) {
        Ok(()) => next.run(request).await,
        Err(refused) => *refused,
    }
}

/// [`authenticate`]'s check, for a middleware that does more (the API's front door also
/// admits the body into the byte budget: one middleware, one boxed future per request).
pub(crate) fn admit(gw: Current, request: &mut Request) -> Result<(), Box<Response>> {
    let path = request.uri().path();
    if path == STATUS_PAGE {
        return Ok(());
    }
    if is_admin(path) {
        if let Some(admin) = &gw.inner.admin_key {
            if !presented(request.headers()).is_some_and(|key| admin.matches(key)) {
                return Err(Box::new(refused(
                    path,
                    StatusCode::UNAUTHORIZED,
                    "this endpoint needs the admin key",
                )));
            }
        }
        request.extensions_mut().insert(gw);
        return Ok(());
    }
    if gw.inner.keys.is_empty() {
        request.extensions_mut().insert(gw);
        return Ok(());
    }
    let Some(key) = presented(request.headers()) else {
        return Err(Box::new(refused(
            path,
            StatusCode::UNAUTHORIZED,
            "missing API key: send `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )));
    };
    let Some(caller) = gw.inner.keys.find(key) else {
        return Err(Box::new(refused(
            path,
            StatusCode::UNAUTHORIZED,
            "invalid API key",
        )));
    };
    if !caller.may_call(path) {
        return Err(Box::new(refused(
            path,
            StatusCode::FORBIDDEN,
            &format!("the key {:?} may not call {path}", caller.name),
        )));
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(gw);
    Ok(())
}

/// A refusal in the format of the endpoint at `path`.
fn refused(path: &str, status: StatusCode, message: &str) -> Response {
    if path.starts_with("/v1/messages") {
        let mut error = ApiError::invalid(message);
        error.status = status;
        return error.into_anthropic_response();
    }
    if path.starts_with("/v1/") {
        let code = if status == StatusCode::UNAUTHORIZED {
            "invalid_api_key"
        } else {
            "permission_denied"
        };
        let mut error = ApiError::invalid(message).code(code);
        error.status = status;
        let mut response = error.into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        return response;
    }
    json_response(status, json!({ "error": message }))
}

/// The key a request came with, if the gateway has keys.
pub(crate) type CallerKey = Option<axum::Extension<Arc<Caller>>>;

/// Refuses a model the caller's key may not use, in OpenAI's format.
pub(crate) fn check_model(caller: &CallerKey, model: &str) -> Result<(), ApiError> {
    match caller {
        Some(axum::Extension(caller)) if !caller.may_use(model) => {
            let mut error = ApiError::invalid(format!(
                "the key {:?} may not use the model {model:?}",
                caller.name
            ))
            .param("model")
            .code("model_not_allowed");
            error.status = StatusCode::FORBIDDEN;
            Err(error)
        }
        _ => Ok(()),
    }
}
