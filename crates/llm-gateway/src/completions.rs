//! `POST /v1/chat/completions`: OpenAI-compatible, complete or streamed.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::Either;
use llm_providers::ProviderKind;
use llm_providers::recovery::{AfterOutput, RecoveringStream, RecoveryPolicy};
use tower::{Layer, ServiceExt};

use super::auth::{CallerKey, check_model};
use super::gateway::Current;
use super::openai::{self, ApiError, CompletionRequest};
use super::respond::{body_error, observed};

pub(crate) async fn chat_completions(
    gw: Current,
    caller: CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match completions_inner(&gw, &caller, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    observed(&gw, "/v1/chat/completions", started, response)
}

pub(crate) async fn completions_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        let (status, message) = body_error(&rejection);
        ApiError::body(status, message)
    })?;
    let mut request: CompletionRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))?;
    // The body's bytes are parsed: not held for the rest of the request.
    drop(body);
    check_model(caller, &request.model)?;
    let limit = caller.as_ref().and_then(|key| key.limit.as_ref());
    let Some(route) = gw.route(&request.model) else {
        let routed: Vec<&str> = gw.inner.routes.iter().map(|r| r.model.as_str()).collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!(
                "the model {:?} is not routed by this gateway (routed: {})",
                request.model,
                routed.join(", ")
            ))
            .param("model")
            .code("model_not_found")
        });
    };
    let targets: Vec<(&str, ProviderKind)> = route
        .chain
        .targets()
        .iter()
        .map(|(n, k)| (&**n, *k))
        .collect();
    let passed = request.check_fields(&targets)?;
    // The fields checked are the ones that go; `take_chat_request` sends what `rest` holds.
    request.rest = passed;
    let (mut chat, log) = gw.prepare(request.take_chat_request()?);
    if request.wants_json() && route.recovery.after_output == AfterOutput::Continue {
        // JSON spliced from two answers is not JSON: hold back or fail clean instead.
        chat.extensions_mut().insert(RecoveryPolicy {
            after_output: AfterOutput::Fail,
            ..route.recovery.clone()
        });
    }
    let id = gw.request_id();
    if !request.stream {
        let chain = route.chain.chat();
        let call = match limit {
            Some(limit) => Either::Left(limit.layer(chain).oneshot(chat)),
            None => Either::Right(chain.oneshot(chat)),
        };
        let answer = gw
            .within_deadline(call)
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = axum::Json(openai::completion(&id, &answer)).into_response();
        annotate(&mut response, &answer.provider, log.upstream_calls());
        return Ok(response);
    }
    let chain = route.chain.stream();
    let call = match limit {
        Some(limit) => Either::Left(limit.layer(chain).oneshot(chat)),
        None => Either::Right(chain.oneshot(chat)),
    };
    let stream = gw
        .within_deadline(call)
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let provider = stream.provider().to_owned();
    let mut response = Response::new(Body::from_stream(sse_events(
        stream,
        id,
        request.include_usage(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    annotate(&mut response, &provider, log.upstream_calls());
    Ok(response)
}

/// Says who answered and after how many attempts, for clients that want to know.
pub(crate) fn annotate(response: &mut Response, provider: &str, attempts: usize) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-gateway-provider", value);
    }
    headers.insert("x-gateway-attempts", HeaderValue::from(attempts));
}

pub(crate) struct SseState {
    pub(crate) stream: RecoveringStream,
    pub(crate) id: String,
    pub(crate) created: u64,
    pub(crate) first: bool,
    pub(crate) include_usage: bool,
    pub(crate) usage: Option<llm_tower::Usage>,
}

pub(crate) fn event(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The stream as OpenAI's server-sent events. A stream that breaks after its first chunk ends
/// with an error event and no `[DONE]`, so no client mistakes a truncated answer for a
/// complete one.
pub(crate) fn sse_events(
    stream: RecoveringStream,
    id: String,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = SseState {
        stream,
        id,
        created: openai::unix_now(),
        first: true,
        include_usage,
        usage: None,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.stream.next().await {
            Some(Ok(chunk)) => {
                if chunk.usage.is_some() {
                    state.usage = chunk.usage;
                }
                // NOTE: after a repair the stream names the model that finishes the answer.
                let model = state.stream.model();
                let bytes = if let Some(recovery) = &chunk.recovery {
                    // The answer was repaired: say so, by whom, after how much.
                    event(&openai::recovery_chunk(
                        &state.id,
                        state.created,
                        model,
                        recovery,
                    ))
                } else if !chunk.has_content()
                    && chunk.finish_reason.is_none()
                    && chunk.logprobs.is_none()
                    && chunk.other_choices.is_empty()
                    && !state.first
                {
                    // A usage-only chunk: its numbers go in the final usage chunk.
                    Bytes::new()
                } else {
                    event(&openai::chunk(
                        &state.id,
                        state.created,
                        model,
                        &chunk,
                        state.first,
                    ))
                };
                state.first = false;
                Some((Ok(bytes), Some(state)))
            }
            Some(Err(err)) => {
                tracing::warn!(
                    provider = state.stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    state.stream.provider()
                );
                Some((Ok(event(&ApiError::from_llm(&err).to_json())), None))
            }
            None => {
                let mut tail = String::new();
                if let (true, Some(usage)) = (state.include_usage, state.usage) {
                    let usage =
                        openai::usage_chunk(&state.id, state.created, state.stream.model(), usage);
                    tail.push_str(&format!("data: {usage}\n\n"));
                }
                tail.push_str("data: [DONE]\n\n");
                Some((Ok(Bytes::from(tail)), None))
            }
        }
    })
}
