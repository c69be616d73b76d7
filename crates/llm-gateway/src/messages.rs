//! `POST /v1/messages` (Anthropic Messages, complete or streamed) and
//! `POST /v1/messages/count_tokens`.

use std::convert::Infallible;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use llm_providers::recovery::RecoveringStream;
use llm_tower::ApproxTokenizer;
use serde_json::json;

use super::anthropic::{self, MessageEvents, MessagesRequest, NamedEvent};
use super::auth::CallerKey;
use super::dispatch::{Call, annotate, route_for, targets};
use super::error::ApiError;
use super::gateway::Current;
use super::respond::{body_error, observed};

pub(crate) async fn messages(
    gw: Current,
    caller: CallerKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match messages_inner(&gw, &caller, body).await {
        Ok(response) => response,
        Err(err) => err.into_anthropic_response(),
    };
    observed(
        &gw,
        "/v1/messages",
        started,
        with_request_id(response, &headers),
    )
}

pub(crate) async fn count_tokens(
    gw: Current,
    caller: CallerKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match count_inner(&gw, &caller, body) {
        Ok(response) => response,
        Err(err) => err.into_anthropic_response(),
    };
    observed(
        &gw,
        "/v1/messages/count_tokens",
        started,
        with_request_id(response, &headers),
    )
}

/// Anthropic's SDKs read the request id from `request-id`: the gateway's `x-request-id`.
fn with_request_id(mut response: Response, headers: &HeaderMap) -> Response {
    if let Some(id) = headers.get("x-request-id") {
        response.headers_mut().insert("request-id", id.clone());
    }
    response
}

fn parse(body: Result<Bytes, BytesRejection>) -> Result<MessagesRequest, ApiError> {
    let body = body.map_err(|rejection| {
        let (status, message) = body_error(&rejection);
        ApiError::body(status, message)
    })?;
    serde_json::from_slice(&body).map_err(|err| ApiError::invalid(format!("invalid body: {err}")))
}

async fn messages_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = parse(body)?;
    let route = route_for(gw, caller, &request.model)?;
    request.rest = request.check_fields(&targets(route))?;
    let call = Call::new(gw, caller, route, request.take_chat_request(false)?);
    let id = gw.next_id("msg_gw");
    if !request.stream {
        let (answer, log) = call
            .complete()
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = axum::Json(anthropic::message(&id, &answer)).into_response();
        annotate(&mut response, &answer.provider, &log);
        return Ok(response);
    }
    let (stream, log) = call
        .stream()
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let provider = stream.provider().to_owned();
    // NOTE: keep-alive comments are safe here: Anthropic's SDKs skip them like pings.
    let mut response = Sse::new(events(stream, id))
        .keep_alive(KeepAlive::default())
        .into_response();
    annotate(&mut response, &provider, &log);
    Ok(response)
}

fn count_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request = parse(body)?;
    route_for(gw, caller, &request.model)?;
    let chat = request.take_chat_request(true)?;
    // The rate limiter's own estimate (about four characters a token), so a client can see
    // what a call will be charged before it makes it.
    let tokens = chat.prompt_tokens(&ApproxTokenizer::default());
    Ok(axum::Json(json!({ "input_tokens": tokens })).into_response())
}

fn named(event: NamedEvent) -> Event {
    Event::default().event(event.0).data(event.1.to_string())
}

/// The stream as Anthropic's named events. A stream that breaks after its first chunk ends
/// with an `error` event (never a bare close, which the SDKs take for a finished answer).
fn events(
    stream: RecoveringStream,
    id: String,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let state = (stream, MessageEvents::new(id));
    futures_util::stream::unfold(Some(state), |state| async move {
        let (mut stream, mut events) = state?;
        let (out, next) = match stream.next().await {
            Some(Ok(chunk)) => match events.chunk(stream.model(), &chunk) {
                Ok(out) => (out, true),
                Err(err) => (vec![("error", err.to_anthropic_json())], false),
            },
            Some(Err(err)) => {
                tracing::warn!(
                    provider = stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    stream.provider()
                );
                let err = ApiError::from_llm(&err);
                (vec![("error", err.to_anthropic_json())], false)
            }
            None => (events.finish(stream.model()), false),
        };
        let next = next.then_some((stream, events));
        Some((out, next))
    })
    .flat_map(|out| futures_util::stream::iter(out.into_iter().map(|e| Ok(named(e)))))
}

/// The `anthropic-version` header: Anthropic's SDKs always send it, OpenAI's never do.
pub(crate) fn is_anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}
