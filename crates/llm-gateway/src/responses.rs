//! `POST /v1/responses`: OpenAI's Responses API, stateless, complete or streamed.

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
use super::respond::{body_error, observed};
use super::responses_api::{self, ResponseEvents, ResponsesRequest, TypedEvent};

pub(crate) async fn responses(
    gw: Current,
    caller: CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match responses_inner(&gw, &caller, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    observed(&gw, "/v1/responses", started, response)
}

async fn responses_inner(
    gw: &Current,
    caller: &CallerKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        let (status, message) = body_error(&rejection);
        ApiError::body(status, message)
    })?;
    let mut request: ResponsesRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))?;
    drop(body);
    let route = route_for(gw, caller, request.model()?)?;
    request.rest = request.check_fields(&targets(route))?;
    let (chat, echo) = request.take_chat_request()?;
    let call = Call::new(gw, caller, route, chat);
    let id = gw.next_id("gw");
    if !request.stream {
        let (answer, log) = call
            .complete()
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = axum::Json(responses_api::response(&id, &echo, &answer)).into_response();
        annotate(&mut response, &answer.provider, &log);
        return Ok(response);
    }
    let (stream, log) = call
        .stream()
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let provider = stream.provider().to_owned();
    // NOTE: keep-alives are SSE comments, which the SDKs drop: an event that is not
    // `response.created` first would break the SDK's stream helper.
    let mut response = Sse::new(events(stream, ResponseEvents::new(id, echo)))
        .keep_alive(KeepAlive::default())
        .into_response();
    annotate(&mut response, &provider, &log);
    Ok(response)
}

fn typed(event: TypedEvent) -> Event {
    Event::default().event(event.0).data(event.1.to_string())
}

/// The stream as typed events; a break after its first chunk ends it with
/// `response.failed` and an `error` event.
fn events(
    stream: RecoveringStream,
    events: ResponseEvents,
) -> impl futures_util::Stream<Item = Result<Event, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some((stream, events)), |state| async move {
        let (mut stream, mut events) = state?;
        let (out, more) = match stream.next().await {
            Some(Ok(chunk)) => (events.chunk(stream.model(), &chunk), true),
            Some(Err(err)) => {
                tracing::warn!(
                    provider = stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    stream.provider()
                );
                (
                    events.fail(stream.model(), &ApiError::from_llm(&err)),
                    false,
                )
            }
            None => (events.finish(stream.model()), false),
        };
        Some((out, more.then_some((stream, events))))
    })
    .flat_map(|out| futures_util::stream::iter(out.into_iter().map(|e| Ok(typed(e)))))
}
