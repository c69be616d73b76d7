//! `POST /v1/responses`: OpenAI's Responses API, stateless, complete or streamed.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use llm_providers::ChatChunk;

use super::auth::CallerKey;
use super::dispatch::{Call, StreamWriter, Traced, route_for, targets};
use super::error::ApiError;
use super::gateway::Current;
use super::respond::{answered, read_json};
use super::responses_api::{self, ResponseEvents, ResponsesRequest, TypedEvent};

pub(crate) async fn responses(
    gw: Current,
    caller: CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = responses_inner(&gw, &caller, trace, body).await;
    answered(&gw, "/v1/responses", started, result)
}

async fn responses_inner(
    gw: &Current,
    caller: &CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request: ResponsesRequest = read_json(body)?;
    let route = route_for(gw, caller, request.model()?)?;
    request.rest = request.check_fields(&targets(route))?;
    let (chat, echo) = request.take_chat_request()?;
    let call = Call::new(gw, caller, route, chat, trace);
    let id = gw.next_id("gw");
    if !request.stream {
        return call
            .respond(|answer| {
                axum::Json(responses_api::response(&id, &echo, answer)).into_response()
            })
            .await;
    }
    call.respond_streamed(ResponseEvents::new(id, echo)).await
}

fn typed(event: TypedEvent) -> Event {
    Event::default().event(event.0).data(event.1.to_string())
}

/// The typed events; a break after the first chunk ends with `response.failed` and an
/// `error` event.
impl StreamWriter for ResponseEvents {
    fn chunk(&mut self, model: &str, chunk: &ChatChunk) -> Result<Vec<Event>, Vec<Event>> {
        Ok(ResponseEvents::chunk(self, model, chunk)
            .into_iter()
            .map(typed)
            .collect())
    }

    fn finish(&mut self, model: &str) -> Vec<Event> {
        ResponseEvents::finish(self, model)
            .into_iter()
            .map(typed)
            .collect()
    }

    fn fail(&mut self, model: &str, err: &ApiError) -> Vec<Event> {
        ResponseEvents::fail(self, model, err)
            .into_iter()
            .map(typed)
            .collect()
    }
}
