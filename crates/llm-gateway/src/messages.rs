//! `POST /v1/messages` (Anthropic Messages, complete or streamed) and
//! `POST /v1/messages/count_tokens`.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use llm_providers::ChatChunk;
use llm_tower::ApproxTokenizer;
use serde_json::json;

use super::anthropic::{self, MessageEvents, MessagesRequest, NamedEvent};
use super::auth::CallerKey;
use super::dispatch::{Call, StreamWriter, Traced, route_for, targets};
use super::error::ApiError;
use super::gateway::Current;
use super::respond::{answered, read_json};

pub(crate) async fn messages(
    gw: Current,
    caller: CallerKey,
    trace: Traced,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = messages_inner(&gw, &caller, trace, body).await;
    with_request_id(answered(&gw, "/v1/messages", started, result), &headers)
}

pub(crate) async fn count_tokens(
    gw: Current,
    caller: CallerKey,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = count_inner(&gw, &caller, body);
    let response = answered(&gw, "/v1/messages/count_tokens", started, result);
    with_request_id(response, &headers)
}

/// Anthropic's SDKs read the request id from `request-id`: the gateway's `x-request-id`.
fn with_request_id(mut response: Response, headers: &HeaderMap) -> Response {
    if let Some(id) = headers.get("x-request-id") {
        response.headers_mut().insert("request-id", id.clone());
    }
    response
}

async fn messages_inner(
    gw: &Current,
    caller: &CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request: MessagesRequest = read_json(body)?;
    let route = route_for(gw, caller, &request.model)?;
    request.rest = request.check_fields(&targets(route))?;
    let call = Call::new(gw, caller, route, request.take_chat_request(false)?, trace);
    let id = gw.next_id("msg_gw");
    if !request.stream {
        return call
            .respond(|answer| axum::Json(anthropic::message(&id, answer)).into_response())
            .await;
    }
    call.respond_streamed(MessageEvents::new(id)).await
}

fn count_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request: MessagesRequest = read_json(body)?;
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

/// Anthropic's named events; a break after the first chunk ends with an `error` event.
impl StreamWriter for MessageEvents {
    fn chunk(&mut self, model: &str, chunk: &ChatChunk) -> Result<Vec<Event>, Vec<Event>> {
        match MessageEvents::chunk(self, model, chunk) {
            Ok(events) => Ok(events.into_iter().map(named).collect()),
            Err(err) => Err(vec![named(("error", err.to_anthropic_json()))]),
        }
    }

    fn finish(&mut self, model: &str) -> Vec<Event> {
        MessageEvents::finish(self, model)
            .into_iter()
            .map(named)
            .collect()
    }

    fn fail(&mut self, _model: &str, err: &ApiError) -> Vec<Event> {
        vec![named(("error", err.to_anthropic_json()))]
    }
}

/// The `anthropic-version` header: Anthropic's SDKs always send it, OpenAI's never do.
pub(crate) fn is_anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}
