//! The gateway's errors, and their shape in each front door's dialect: OpenAI's
//! `{"error": {message, type, param, code}}` (chat completions, responses, embeddings) and
//! Anthropic's `{"type": "error", "error": {type, message}}` (messages).

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llm_tower::{ErrorKind, LlmError};
use serde_json::{Value, json};

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
/// status it belongs to and, for 429 and 503, a `Retry-After`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    pub(crate) kind: &'static str,
    pub(crate) param: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) retry_after: Option<Duration>,
}

impl ApiError {
    /// A 400 `invalid_request_error`.
    pub(crate) fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// Names the request field at fault.
    pub(crate) fn param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(param.into());
        self
    }

    /// Sets the machine-readable code.
    pub(crate) fn code(mut self, code: impl Into<String>) -> ApiError {
        self.code = Some(code.into());
        self
    }

    /// A body the gateway could not read: too large (413) or not the JSON expected (400).
    pub(crate) fn body(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            ..ApiError::invalid(message)
        }
    }

    /// What an upstream failure means to the gateway's client.
    pub(crate) fn from_llm(err: &LlmError) -> ApiError {
        let kind = err.kind();
        let (status, kind_name, code): (StatusCode, &'static str, &str) = match kind {
            ErrorKind::RateLimited | ErrorKind::LocalRateLimited => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limit_exceeded",
            ),
            ErrorKind::QuotaExceeded => (
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
            ),
            ErrorKind::ContextLengthExceeded => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "context_length_exceeded",
            ),
            ErrorKind::ContentFiltered => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "content_policy_violation",
            ),
            ErrorKind::InvalidRequest => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            // No target of the route can honour a feature the request needs.
            ErrorKind::Unsupported => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "unsupported_feature",
            ),
            ErrorKind::ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", "timeout"),
            ErrorKind::Overloaded | ErrorKind::CircuitOpen => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                kind.as_str(),
            ),
            // A bad upstream key is the gateway's fault, not the client's.
            _ => (StatusCode::BAD_GATEWAY, "server_error", kind.as_str()),
        };
        let retry_after = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        )
        .then(|| shortest_retry_after(err).unwrap_or(Duration::from_secs(1)));
        ApiError {
            status,
            message: err.to_string(),
            kind: kind_name,
            param: None,
            code: Some(code.to_owned()),
            retry_after,
        }
    }

    /// The error object itself (also the payload of an in-stream error event).
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

/// The soonest time any attempt said capacity returns: every target in a chain failed, so
/// the first to recover is when trying again makes sense.
fn shortest_retry_after(err: &LlmError) -> Option<Duration> {
    let own = err.retry_after();
    let from_attempts = err.fallback_attempts().and_then(|exhausted| {
        exhausted
            .attempts()
            .iter()
            .filter_map(|a| a.retry_after)
            .min()
    });
    match (own, from_attempts) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.to_json())).into_response();
        self.set_retry_after(&mut response);
        response
    }
}

/// The code of the gateway's own overload (at capacity, load shedding).
pub(crate) const GATEWAY_OVERLOADED: &str = "gateway_overloaded";

/// Anthropic's status for an upstream overload: the SDKs raise `OverloadedError` for it and
/// retry it.
const OVERLOADED: u16 = 529;

impl ApiError {
    /// The error as Anthropic's API writes it (`IntoResponse` writes OpenAI's shape).
    pub(crate) fn into_anthropic_response(self) -> Response {
        let body = self.to_anthropic_json();
        let mut response = (self.anthropic_status(), axum::Json(body)).into_response();
        self.set_retry_after(&mut response);
        response
    }

    fn set_retry_after(&self, response: &mut Response) {
        if let Some(delay) = self.retry_after {
            // Whole seconds, rounded up: a client waiting this long finds capacity.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
    }

    /// The status Anthropic's API would answer with: an upstream overload is its 529.
    pub(crate) fn anthropic_status(&self) -> StatusCode {
        let overloaded = [ErrorKind::Overloaded.as_str(), GATEWAY_OVERLOADED];
        if self
            .code
            .as_deref()
            .is_some_and(|code| overloaded.contains(&code))
        {
            StatusCode::from_u16(OVERLOADED).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
        } else {
            self.status
        }
    }

    /// Anthropic's `error.type` for this error (docs.anthropic.com/en/api/errors).
    pub(crate) fn anthropic_type(&self) -> &'static str {
        match self.anthropic_status().as_u16() {
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            504 => "timeout_error",
            OVERLOADED => "overloaded_error",
            500..=599 => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// `{"type": "error", "error": {"type", "message"}}` — also the payload of an in-stream
    /// `error` event. The field at fault, when there is one, leads the message as
    /// Anthropic writes it (`max_tokens: Field required`).
    pub(crate) fn to_anthropic_json(&self) -> Value {
        let message = match &self.param {
            Some(param)
                if !self.message.starts_with(param.as_str())
                    && !self.message.starts_with(&format!("`{param}`")) =>
            {
                format!("{param}: {}", self.message)
            }
            _ => self.message.clone(),
        };
        json!({
            "type": "error",
            "error": { "type": self.anthropic_type(), "message": message },
        })
    }
}
