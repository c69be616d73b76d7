//! OpenAI's Chat Completions wire format on the gateway's side: requests in, answers, stream
//! chunks and errors out, so any OpenAI SDK can point at the gateway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llm_providers::recovery::Recovery;
use llm_providers::{
    ChatChunk, ChatRequest, ChatResponse, FinishReason, Message, ProviderKind, Role,
};
use llm_tower::{ErrorKind, LlmError, Usage};
use serde::Deserialize;
use serde_json::{Value, json};

/// `POST /v1/chat/completions`' body. The fields the gateway translates are named; every
/// other field is passed through as it is to OpenAI-format upstreams, or refused with a 400
/// naming it ([`CompletionRequest::check_fields`]) — never dropped.
#[derive(Debug, Deserialize)]
pub(crate) struct CompletionRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<InMessage>,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) stream_options: Option<StreamOptions>,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) max_completion_tokens: Option<u32>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) stop: Option<Stop>,
    /// Passed through to the upstream as it is (OpenAI-format upstreams read it); its
    /// translation for the others is issue 22's work.
    pub(crate) response_format: Option<Value>,
    /// Every other field.
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, Value>,
}

/// Fields the gateway cannot carry yet in either direction: sent on, their answer (tool
/// calls, several choices, log probabilities, audio) would be dropped on the way back.
const NOT_CARRIED: [&str; 9] = [
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "parallel_tool_calls",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
];

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// One message of the conversation.
#[derive(Debug, Deserialize)]
pub(crate) struct InMessage {
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) content: Option<Content>,
    /// Every other field (`name`, `tool_calls`, `tool_call_id`, …): refused, never dropped.
    #[serde(flatten)]
    pub(crate) rest: serde_json::Map<String, Value>,
}

/// A message's content: text, or parts of which the gateway takes the text ones.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

/// One content part.
#[derive(Debug, Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) text: Option<String>,
}

impl CompletionRequest {
    /// Checks that every field is translated, passed through or refused: fields the gateway
    /// cannot carry back are a 400; the others go as they are to `targets` when every one
    /// of them speaks OpenAI's format, and are a 400 naming the field and the target that
    /// does not otherwise. Returns the fields to pass through.
    pub(crate) fn check_fields(
        &self,
        targets: &[(&str, ProviderKind)],
    ) -> Result<serde_json::Map<String, Value>, ApiError> {
        for (i, message) in self.messages.iter().enumerate() {
            if let Some((field, _)) = message.rest.iter().find(|(_, v)| !v.is_null()) {
                return Err(ApiError::invalid(format!(
                    "`{field}` on a message is not supported by this gateway yet (it would be dropped)"
                ))
                .param(format!("messages[{i}].{field}")));
            }
        }
        let mut passed = serde_json::Map::new();
        for (field, value) in &self.rest {
            if value.is_null() {
                continue;
            }
            let single_choice = field == "n" && value.as_u64() == Some(1);
            let text_only = field == "modalities" && *value == json!(["text"]);
            if single_choice || text_only {
                continue;
            }
            if field == "n" || NOT_CARRIED.contains(&field.as_str()) {
                return Err(ApiError::invalid(format!(
                    "`{field}` is not supported by this gateway yet (its answer would be dropped)"
                ))
                .param(field.clone()));
            }
            passed.insert(field.clone(), value.clone());
        }
        let needs_openai_format = !passed.is_empty() || self.response_format.is_some();
        if needs_openai_format {
            if let Some((name, kind)) = targets.iter().find(|(_, kind)| !speaks_openai(*kind)) {
                let field = passed
                    .keys()
                    .next()
                    .map_or("response_format", String::as_str)
                    .to_owned();
                return Err(ApiError::invalid(format!(
                    "`{field}` cannot be sent to {name} ({kind}): the gateway passes it through only to OpenAI-format upstreams"
                ))
                .param(field));
            }
        }
        Ok(passed)
    }

    /// The provider-neutral request, or why it cannot be one (a 400 for the client).
    /// The conversation is moved out, not copied: a large prompt is held once.
    pub(crate) fn take_chat_request(&mut self) -> Result<ChatRequest, ApiError> {
        if self.model.trim().is_empty() {
            return Err(ApiError::invalid("`model` must not be empty").param("model"));
        }
        if self.messages.is_empty() {
            return Err(
                ApiError::invalid("`messages` must hold at least one message").param("messages"),
            );
        }
        let mut request = ChatRequest::new(self.model.clone());
        let mut system = Vec::new();
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in std::mem::take(&mut self.messages).into_iter().enumerate() {
            let text = match message.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for part in parts {
                        match (part.kind.as_str(), &part.text) {
                            ("text", Some(piece)) => text.push_str(piece),
                            (kind, _) => {
                                return Err(ApiError::invalid(format!(
                                    "content part of type {kind:?} is not supported by this gateway (text only)"
                                ))
                                .param(format!("messages[{i}].content")));
                            }
                        }
                    }
                    text
                }
            };
            match message.role.as_str() {
                "system" | "developer" => system.push(text),
                "user" => messages.push(Message::new(Role::User, text)),
                "assistant" => messages.push(Message::new(Role::Assistant, text)),
                other => {
                    return Err(ApiError::invalid(format!(
                        "role {other:?} is not supported (system, developer, user, assistant)"
                    ))
                    .param(format!("messages[{i}].role")));
                }
            }
        }
        if messages.is_empty() {
            return Err(ApiError::invalid("`messages` must hold a user message").param("messages"));
        }
        if !system.is_empty() {
            request = request.system(system.join("\n\n"));
        }
        request = request.messages_from(messages);
        if let Some(max) = self.max_completion_tokens.or(self.max_tokens) {
            if max == 0 {
                let param = if self.max_completion_tokens.is_some() {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                return Err(ApiError::invalid(format!("`{param}` must be at least 1")).param(param));
            }
            request = request.max_tokens(max);
        }
        if let Some(t) = self.temperature {
            request = request.temperature(in_range("temperature", t, 2.0)?);
        }
        if let Some(p) = self.top_p {
            request = request.top_p(in_range("top_p", p, 1.0)?);
        }
        match &self.stop {
            Some(Stop::One(stop)) => request = request.stop([stop.clone()]),
            Some(Stop::Many(stops)) => request = request.stop(stops.iter().cloned()),
            None => {}
        }
        if let Some(format) = &self.response_format {
            request = request.extra("response_format", format.clone());
        }
        for (field, value) in std::mem::take(&mut self.rest) {
            request = request.extra(field, value);
        }
        Ok(request)
    }

    /// Whether the client asked for JSON output, whose answer must not be spliced from two
    /// models' text.
    pub(crate) fn wants_json(&self) -> bool {
        self.response_format.as_ref().is_some_and(|format| {
            matches!(format["type"].as_str(), Some("json_object" | "json_schema"))
        })
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

/// Whether `kind` reads OpenAI's chat format, so that a field it knows passes as it is.
fn speaks_openai(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::OpenRouter
            | ProviderKind::OpenAiCompatible
    )
}

/// `value` when it is a number from 0 to `max`, as OpenAI takes it; a 400 naming `param`
/// otherwise (a value too large for an `f32`, such as `1e39`, reads as infinite).
fn in_range(param: &str, value: f32, max: f32) -> Result<f32, ApiError> {
    if value.is_finite() && (0.0..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "`{param}` must be a number from 0 to {max} (got {value})"
        ))
        .param(param))
    }
}

/// OpenAI's name for a finish reason.
pub(crate) fn finish_reason(reason: Option<&FinishReason>) -> Value {
    finish_reason_str(reason).map_or(Value::Null, Value::from)
}

fn finish_reason_str(reason: Option<&FinishReason>) -> Option<&str> {
    Some(match reason? {
        FinishReason::Stop => "stop",
        FinishReason::Length | FinishReason::ContextWindow => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::Other(other) => other,
        _ => "stop",
    })
}

fn usage_json(usage: Usage) -> Value {
    json!(CompletionUsage::from(usage))
}

/// Seconds since the epoch, for `created`.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A `chat.completion` object for `answer`, serialized straight from the answer (no
/// intermediate `Value`: this is every non-streaming response).
#[derive(serde::Serialize)]
pub(crate) struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [CompletionChoice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<CompletionUsage>,
}

#[derive(serde::Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(serde::Serialize)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<Usage> for CompletionUsage {
    fn from(usage: Usage) -> Self {
        CompletionUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
        }
    }
}

/// A `chat.completion` object for `answer`.
pub(crate) fn completion<'a>(id: &'a str, answer: &'a ChatResponse) -> Completion<'a> {
    Completion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: &answer.model,
        choices: [CompletionChoice {
            index: 0,
            message: CompletionMessage {
                role: "assistant",
                content: &answer.text,
            },
            finish_reason: finish_reason_str(answer.finish_reason.as_ref()),
        }],
        usage: answer.usage.map(CompletionUsage::from),
    }
}

/// One `chat.completion.chunk` for `chunk`; the first carries the assistant role.
pub(crate) fn chunk(id: &str, created: u64, model: &str, chunk: &ChatChunk, first: bool) -> Value {
    let mut delta = json!({});
    if first {
        delta["role"] = json!("assistant");
    }
    if !chunk.delta.is_empty() || first {
        delta["content"] = json!(chunk.delta);
    }
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason(chunk.finish_reason.as_ref()),
        }],
    })
}

/// A chunk saying the answer was repaired after its stream broke (a gateway extension:
/// OpenAI clients ignore the unknown field).
pub(crate) fn recovery_chunk(id: &str, created: u64, model: &str, recovery: &Recovery) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "delta": {}, "finish_reason": null }],
        "recovered": {
            "from": &*recovery.from,
            "to": &*recovery.to,
            "after_tokens": recovery.after_tokens,
            "mode": recovery.mode.as_str(),
            "cause": recovery.cause.as_str(),
        },
    })
}

/// The usage chunk OpenAI sends last when `stream_options.include_usage` is set.
pub(crate) fn usage_chunk(id: &str, created: u64, model: &str, usage: Usage) -> Value {
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_json(usage),
    })
}

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
        if let Some(delay) = self.retry_after {
            // Whole seconds, rounded up: a client waiting this long finds capacity.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}
