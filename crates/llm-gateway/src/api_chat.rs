//! `POST /api/chat`: one message, the named provider first, then the others.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::future::Either;
use llm_providers::ChatRequest;
use llm_tower::ErrorKind;
use serde::Deserialize;
use serde_json::json;
use tower::{Layer, ServiceExt};

use super::auth::{CallerKey, check_model};
use super::error::ApiError;
use super::gateway::Current;
use super::respond::{body_error, json_response, observed};

/// `/api/chat`'s body.
#[derive(Deserialize)]
pub(crate) struct ApiChat {
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) provider: Option<String>,
}

pub(crate) async fn api_chat(
    gw: Current,
    caller: CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = api_chat_inner(&gw, &caller, body).await;
    observed(&gw, "/api/chat", started, response)
}

pub(crate) async fn api_chat_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = body_error(&rejection);
            return json_response(status, json!({ "error": message }));
        }
    };
    let chat: ApiChat = match serde_json::from_slice(&body) {
        Ok(chat) => chat,
        Err(err) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("invalid JSON body: {err}") }),
            );
        }
    };
    let Some(message) = chat.message.filter(|m| !m.trim().is_empty()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "`message` is required and must not be empty" }),
        );
    };
    let first = match chat.provider.as_deref() {
        None => 0,
        Some(name) => match gw
            .inner
            .upstreams
            .iter()
            .position(|u| u.upstream.name() == name)
        {
            Some(index) => index,
            None => {
                let valid = gw.provider_names();
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({
                        "error": format!("unknown provider {name:?}; valid providers: {}", valid.join(", ")),
                        "validProviders": valid,
                    }),
                );
            }
        },
    };
    let upstream = &gw.inner.upstreams[first];
    if let Err(refused) = check_model(caller, &upstream.model) {
        return json_response(refused.status, json!({ "error": refused.message }));
    }
    let (request, log) = gw.prepare(ChatRequest::new(upstream.model.clone()).user(message));
    let chain = gw.inner.chat_chains[first].clone();
    let call = match caller.as_ref().and_then(|key| key.limit.as_ref()) {
        Some(limit) => Either::Left(limit.layer(chain).oneshot(request)),
        None => Either::Right(chain.oneshot(request)),
    };
    let result = gw.within_deadline(call).await;
    let attempts = log.records();
    let retry_count = log.upstream_calls().saturating_sub(1);
    match result {
        Ok(answer) => {
            tracing::info!(
                provider = %answer.provider,
                model = %answer.model,
                retries = retry_count,
                "/api/chat answered by {} after {} attempt(s)",
                answer.provider,
                retry_count + 1
            );
            json_response(
                StatusCode::OK,
                json!({
                    "response": answer.text,
                    "provider": &*answer.provider,
                    "model": answer.model,
                    "retryCount": retry_count,
                    "attempts": attempts,
                }),
            )
        }
        // The request itself was refused upstream: another provider would refuse it too.
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::InvalidRequest | ErrorKind::ContentFiltered | ErrorKind::Unsupported
            ) =>
        {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": err.to_string(),
                    "kind": err.kind().as_str(),
                    "retryCount": retry_count,
                    "attempts": attempts,
                }),
            )
        }
        // The caller's own key is over its limit: no provider was asked.
        Err(err) if err.kind() == ErrorKind::LocalRateLimited && attempts.is_empty() => {
            let retry_after = err.retry_after().unwrap_or(Duration::from_secs(1));
            let mut response = json_response(
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "error": format!("this key is over its rate limit: {err}") }),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
        Err(err) => {
            let last_error = attempts
                .iter()
                .rev()
                .find_map(|a| a.error.clone())
                .unwrap_or_else(|| err.to_string());
            if log.upstream_calls() > 0 {
                tracing::error!(
                    retries = retry_count,
                    "/api/chat: every provider failed: {err}"
                );
            } else {
                // Every provider skipped by its own open breaker or limit: counted, and
                // repeated for every request while it lasts.
                tracing::debug!("/api/chat: every provider was skipped: {err}");
            }
            let retry_after = ApiError::from_llm(&err)
                .retry_after
                .unwrap_or(Duration::from_secs(1));
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": "All LLM providers unavailable",
                    "retryCount": retry_count,
                    "lastError": last_error,
                    "attempts": attempts,
                }),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
    }
}
