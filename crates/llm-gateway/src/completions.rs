//! `POST /v1/chat/completions`: OpenAI-compatible, complete or streamed.

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
use super::openai::{self, CompletionRequest};
use super::respond::{answered, read_json};

pub(crate) async fn chat_completions(
    gw: Current,
    caller: CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let result = completions_inner(&gw, &caller, trace, body).await;
    answered(&gw, "/v1/chat/completions", started, result)
}

pub(crate) async fn completions_inner(
    gw: &Current,
    caller: &CallerKey,
    trace: Traced,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut request: CompletionRequest = read_json(body)?;
    let route = route_for(gw, caller, &request.model)?;
    let passed = request.check_fields(&targets(route))?;
    // The fields checked are the ones that go; `take_chat_request` sends what `rest` holds.
    request.rest = passed;
    let call = Call::new(gw, caller, route, request.take_chat_request()?, trace);
    let id = gw.request_id();
    if !request.stream {
        return call
            .respond(|answer| axum::Json(openai::completion(&id, answer)).into_response())
            .await;
    }
    let writer = Chunks {
        id,
        created: openai::unix_now(),
        first: true,
        include_usage: request.include_usage(),
        usage: None,
    };
    call.respond_streamed(writer).await
}

/// Writes a stream as OpenAI's `chat.completion.chunk`s, then the usage chunk when asked
/// for and `[DONE]`. A stream that breaks after its first chunk ends with an error event
/// and no `[DONE]`, so no client mistakes a truncated answer for a complete one.
struct Chunks {
    id: String,
    created: u64,
    first: bool,
    include_usage: bool,
    usage: Option<llm_tower::Usage>,
}

fn event(value: &serde_json::Value) -> Event {
    Event::default().data(value.to_string())
}

impl StreamWriter for Chunks {
    fn chunk(&mut self, model: &str, chunk: &ChatChunk) -> Result<Vec<Event>, Vec<Event>> {
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let event = if let Some(recovery) = &chunk.recovery {
            // The answer was repaired: say so, by whom, after how much.
            Some(event(&openai::recovery_chunk(
                &self.id,
                self.created,
                model,
                recovery,
            )))
        } else if !chunk.has_content()
            && chunk.finish_reason.is_none()
            && chunk.logprobs.is_none()
            && chunk.other_choices.is_empty()
            && !self.first
        {
            // A usage-only chunk: its numbers go in the final usage chunk.
            None
        } else {
            Some(event(&openai::chunk(
                &self.id,
                self.created,
                model,
                chunk,
                self.first,
            )))
        };
        self.first = false;
        Ok(event.into_iter().collect())
    }

    fn finish(&mut self, model: &str) -> Vec<Event> {
        let mut tail = Vec::with_capacity(2);
        if let (true, Some(usage)) = (self.include_usage, self.usage) {
            tail.push(event(&openai::usage_chunk(
                &self.id,
                self.created,
                model,
                usage,
            )));
        }
        tail.push(Event::default().data("[DONE]"));
        tail
    }

    fn fail(&mut self, _model: &str, err: &ApiError) -> Vec<Event> {
        vec![event(&err.to_json())]
    }
}
