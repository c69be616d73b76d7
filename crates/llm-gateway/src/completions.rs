//! `POST /v1/chat/completions`: OpenAI-compatible, complete or streamed.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use llm_providers::recovery::RecoveringStream;

use super::auth::CallerKey;
use super::dispatch::{Call, annotate, route_for, targets};
use super::error::ApiError;
use super::gateway::Current;
use super::openai::{self, CompletionRequest};
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
    let route = route_for(gw, caller, &request.model)?;
    let passed = request.check_fields(&targets(route))?;
    // The fields checked are the ones that go; `take_chat_request` sends what `rest` holds.
    request.rest = passed;
    let call = Call::new(gw, caller, route, request.take_chat_request()?);
    let id = gw.request_id();
    if !request.stream {
        let (answer, log) = call
            .complete()
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = axum::Json(openai::completion(&id, &answer)).into_response();
        annotate(&mut response, &answer.provider, &log);
        return Ok(response);
    }
    let (stream, log) = call
        .stream()
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let provider = stream.provider().to_owned();
    // NOTE: axum's `Sse` writes the events and the stream headers; its keep-alive comments
    // keep proxies from closing a stream whose model thinks for a long time.
    let mut response = Sse::new(sse_events(stream, id, request.include_usage()))
        .keep_alive(KeepAlive::default())
        .into_response();
    annotate(&mut response, &provider, &log);
    Ok(response)
}

struct SseState {
    stream: RecoveringStream,
    id: String,
    created: u64,
    first: bool,
    include_usage: bool,
    usage: Option<llm_tower::Usage>,
}

fn event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

/// The stream as OpenAI's server-sent events. A stream that breaks after its first chunk ends
/// with an error event and no `[DONE]`, so no client mistakes a truncated answer for a
/// complete one.
fn sse_events(
    stream: RecoveringStream,
    id: String,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
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
        let events = match state.stream.next().await {
            Some(Ok(chunk)) => {
                if chunk.usage.is_some() {
                    state.usage = chunk.usage;
                }
                // NOTE: after a repair the stream names the model that finishes the answer.
                let model = state.stream.model();
                let event = if let Some(recovery) = &chunk.recovery {
                    // The answer was repaired: say so, by whom, after how much.
                    Some(event(&openai::recovery_chunk(
                        &state.id,
                        state.created,
                        model,
                        recovery,
                    )))
                } else if !chunk.has_content()
                    && chunk.finish_reason.is_none()
                    && chunk.logprobs.is_none()
                    && chunk.other_choices.is_empty()
                    && !state.first
                {
                    // A usage-only chunk: its numbers go in the final usage chunk.
                    None
                } else {
                    Some(event(&openai::chunk(
                        &state.id,
                        state.created,
                        model,
                        &chunk,
                        state.first,
                    )))
                };
                state.first = false;
                return Some((event.into_iter().collect::<Vec<_>>(), Some(state)));
            }
            Some(Err(err)) => {
                tracing::warn!(
                    provider = state.stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    state.stream.provider()
                );
                vec![event(&ApiError::from_llm(&err).to_json())]
            }
            None => {
                let mut tail = Vec::with_capacity(2);
                if let (true, Some(usage)) = (state.include_usage, state.usage) {
                    let model = state.stream.model();
                    tail.push(event(&openai::usage_chunk(
                        &state.id,
                        state.created,
                        model,
                        usage,
                    )));
                }
                tail.push(Event::default().data("[DONE]"));
                tail
            }
        };
        Some((events, None))
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok)))
}
