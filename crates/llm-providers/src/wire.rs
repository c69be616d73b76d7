//! Each provider's wire format: the request body we send, the response body we read, and the
//! meaning of each stream event (facts: `provider-wire-formats.md` §1–§6).

use std::borrow::Cow;

use llm_core::{ErrorKind, LlmError, Usage};
use serde_json::{Map, Value, json};

use crate::ProviderKind;
use crate::errors;
#[cfg(test)]
use crate::errors::ErrorBody;
use crate::types::{ChatChunk, ChatRequest, ChatResponse, FinishReason, Role};

/// Anthropic requires `max_tokens`; this is what we send when the request has none.
pub(crate) const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

fn merge_extras(body: &mut Value, req: &ChatRequest) {
    if let (Some(body), Some(extras)) = (body.as_object_mut(), req.extras()) {
        for (k, v) in extras {
            body.insert(k.clone(), v.clone());
        }
    }
}

fn put<T: Into<Value>>(map: &mut Map<String, Value>, key: &str, value: Option<T>) {
    if let Some(value) = value {
        map.insert(key.to_owned(), value.into());
    }
}

/// `value` as the decimal it was written as: `0.3f32` goes out as `0.3`, not as the nearest
/// `f64` (`0.30000001192092896`). A value that is not finite is left out (the builders of the
/// request refuse those before).
fn decimal(value: Option<f32>) -> Option<Value> {
    let value = value.filter(|v| v.is_finite())?;
    // NOTE: `Display` of an `f32` prints the shortest decimal that reads back as it.
    let shortest: f64 = value.to_string().parse().ok()?;
    serde_json::Number::from_f64(shortest).map(Value::Number)
}

/// The sampling fields under a provider's names: temperature, top_p, max tokens, stop.
fn sampling(map: &mut Map<String, Value>, req: &ChatRequest, names: [&str; 4]) {
    let [temperature, top_p, max_tokens, stop] = names;
    put(map, temperature, decimal(req.temperature_value()));
    put(map, top_p, decimal(req.top_p_value()));
    put(map, max_tokens, req.max_tokens_limit());
    if !req.stop_sequences().is_empty() {
        map.insert(stop.into(), req.stop_sequences().into());
    }
}

/// OpenAI-style messages (also Ollama's): the system prompt first, as a `system` message.
fn chat_messages(req: &ChatRequest) -> Vec<Value> {
    let mut messages = Vec::with_capacity(req.messages().len() + 1);
    if let Some(system) = req.system_prompt() {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.extend(
        req.messages()
            .iter()
            .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
    );
    messages
}

/// The JSON body for `req` (the URL is built by the provider).
pub(crate) fn request_body(kind: ProviderKind, req: &ChatRequest, stream: bool) -> Value {
    let mut body = Map::new();
    match kind {
        ProviderKind::OpenAi
        | ProviderKind::Azure
        | ProviderKind::OpenRouter
        | ProviderKind::OpenAiCompatible => {
            let messages = chat_messages(req);
            if kind != ProviderKind::Azure {
                body.insert("model".into(), req.model().into());
            }
            body.insert("messages".into(), messages.into());
            // OpenAI deprecated `max_tokens` (o-series reject it); compatible servers and
            // OpenRouter still expect it.
            let max_key = if kind == ProviderKind::OpenAi {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            sampling(&mut body, req, ["temperature", "top_p", max_key, "stop"]);
            if stream {
                body.insert("stream".into(), true.into());
                body.insert("stream_options".into(), json!({"include_usage": true}));
            }
        }
        ProviderKind::Anthropic => {
            // `system` is top level; system-role messages join it (the API rejects them).
            let mut system: Vec<&str> = req.system_prompt().into_iter().collect();
            let mut messages = Vec::with_capacity(req.messages().len());
            for m in req.messages() {
                match m.role {
                    Role::System => system.push(&m.content),
                    role => messages.push(json!({"role": role.as_str(), "content": m.content})),
                }
            }
            body.insert("model".into(), req.model().into());
            body.insert(
                "max_tokens".into(),
                req.max_tokens_limit()
                    .unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS)
                    .into(),
            );
            if !system.is_empty() {
                body.insert("system".into(), system.join("\n\n").into());
            }
            body.insert("messages".into(), messages.into());
            sampling(
                &mut body,
                req,
                ["temperature", "top_p", "max_tokens", "stop_sequences"],
            );
            if stream {
                body.insert("stream".into(), true.into());
            }
        }
        ProviderKind::Gemini => {
            let mut system: Vec<&str> = req.system_prompt().into_iter().collect();
            let mut contents = Vec::with_capacity(req.messages().len());
            for m in req.messages() {
                let role = match m.role {
                    Role::System => {
                        system.push(&m.content);
                        continue;
                    }
                    Role::User => "user",
                    Role::Assistant => "model",
                };
                contents.push(json!({"role": role, "parts": [{"text": m.content}]}));
            }
            if !system.is_empty() {
                body.insert(
                    "systemInstruction".into(),
                    json!({"parts": [{"text": system.join("\n\n")}]}),
                );
            }
            body.insert("contents".into(), contents.into());
            let mut config = Map::new();
            sampling(
                &mut config,
                req,
                ["temperature", "topP", "maxOutputTokens", "stopSequences"],
            );
            if !config.is_empty() {
                body.insert("generationConfig".into(), config.into());
            }
        }
        ProviderKind::Ollama => {
            let messages = chat_messages(req);
            body.insert("model".into(), req.model().into());
            body.insert("messages".into(), messages.into());
            body.insert("stream".into(), stream.into());
            let mut options = Map::new();
            sampling(
                &mut options,
                req,
                ["temperature", "top_p", "num_predict", "stop"],
            );
            if !options.is_empty() {
                body.insert("options".into(), options.into());
            }
        }
    }
    let mut body = Value::Object(body);
    merge_extras(&mut body, req);
    body
}

fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

fn openai_usage(v: &Value) -> Option<Usage> {
    let usage = v.get("usage").filter(|u| u.is_object())?;
    Some(
        OpenAiUsage {
            prompt_tokens: u64_at(usage, "/prompt_tokens"),
            completion_tokens: u64_at(usage, "/completion_tokens"),
            total_tokens: u64_at(usage, "/total_tokens"),
        }
        .into_usage(),
    )
}

fn gemini_usage(v: &Value) -> Option<Usage> {
    let usage = v.get("usageMetadata")?;
    let input = u64_at(usage, "/promptTokenCount").unwrap_or(0);
    let output = u64_at(usage, "/candidatesTokenCount").unwrap_or(0);
    let mut u = Usage::new(input, output);
    if let Some(total) = u64_at(usage, "/totalTokenCount") {
        // May exceed input + output by the thoughts count.
        u.total_tokens = total.max(u.total_tokens);
    }
    Some(u)
}

fn gemini_text(candidate: &Value) -> String {
    candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought") != Some(&Value::Bool(true)))
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect()
}

fn gemini_blocked(kind: ProviderKind, v: &Value) -> Option<LlmError> {
    let reason = v.pointer("/promptFeedback/blockReason")?.as_str()?;
    let no_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    no_candidates.then(|| {
        LlmError::new(
            ErrorKind::ContentFiltered,
            format!("the prompt was blocked: {reason}"),
        )
        .with_provider(kind.name())
        .with_code(reason.to_owned())
    })
}

fn malformed(kind: ProviderKind, what: &str) -> LlmError {
    LlmError::new(
        ErrorKind::ServerError,
        format!("malformed response: {what}"),
    )
    .with_provider(kind.name())
}

/// An OpenAI-style completion in its usual shape, read straight into typed fields: the fast
/// path of [`parse_response`]. Any other shape (an error object, a field of another type,
/// duplicate keys) fails to deserialize and is read through a [`Value`] instead, so the
/// result never differs from the general path's.
#[derive(serde::Deserialize)]
struct OpenAiCompletion<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    choices: Vec<OpenAiChoice<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    // Present and not null: an error in a 200 body, for the general path to read.
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct OpenAiChoice<'a> {
    #[serde(default, borrow)]
    message: Option<OpenAiMessage<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct OpenAiMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
}

/// OpenAI's `usage` object; absent counts are 0, and the total is the reported one when
/// there is one.
#[derive(serde::Deserialize)]
struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
}

impl OpenAiUsage {
    fn into_usage(self) -> Usage {
        let mut usage = Usage::new(
            self.prompt_tokens.unwrap_or(0),
            self.completion_tokens.unwrap_or(0),
        );
        if let Some(total) = self.total_tokens {
            usage.total_tokens = total;
        }
        usage
    }
}

/// `body` read through [`OpenAiCompletion`], or `None` when it is not in that shape.
fn parse_openai_fast(
    provider: &std::sync::Arc<str>,
    requested_model: &str,
    body: &[u8],
) -> Option<ChatResponse> {
    // serde would also read a struct from a JSON array, field by field: objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let parsed: OpenAiCompletion<'_> = serde_json::from_slice(body).ok()?;
    if parsed.error.is_some() {
        return None;
    }
    let choice = parsed.choices.into_iter().next()?;
    let non_empty = |s: Option<Cow<'_, str>>| s.filter(|s| !s.is_empty()).map(Cow::into_owned);
    let mut res = ChatResponse::new(
        provider.clone(),
        non_empty(parsed.model).unwrap_or_else(|| requested_model.to_owned()),
        String::new(),
    );
    if let Some(message) = choice.message {
        if let Some(text) = message.content.or(message.refusal) {
            res.text = text.into_owned();
        }
    }
    res.finish_reason = choice
        .finish_reason
        .as_deref()
        .map(FinishReason::from_provider);
    res.usage = parsed.usage.map(OpenAiUsage::into_usage);
    res.id = non_empty(parsed.id);
    Some(res)
}

/// Reads a complete (non-streaming) response body.
pub(crate) fn parse_response(
    kind: ProviderKind,
    provider: &std::sync::Arc<str>,
    requested_model: &str,
    body: &[u8],
) -> Result<ChatResponse, LlmError> {
    if matches!(
        kind,
        ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::OpenRouter
            | ProviderKind::OpenAiCompatible
    ) {
        if let Some(res) = parse_openai_fast(provider, requested_model, body) {
            return Ok(res);
        }
    }
    parse_value(kind, provider, requested_model, body)
}

/// [`parse_response`] through a [`Value`]: every provider, every shape.
fn parse_value(
    kind: ProviderKind,
    provider: &std::sync::Arc<str>,
    requested_model: &str,
    body: &[u8],
) -> Result<ChatResponse, LlmError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|err| malformed(kind, &format!("the body is not JSON ({err})")))?;
    let mut res = ChatResponse::new(provider.clone(), requested_model, String::new());
    res.finish_reason = None;
    let model_at = |pointer: &str| {
        v.pointer(pointer)
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
    };
    match kind {
        ProviderKind::OpenAi
        | ProviderKind::Azure
        | ProviderKind::OpenRouter
        | ProviderKind::OpenAiCompatible => {
            if let Some(err) = errors::from_stream_event(kind, &v, false, &[]) {
                return Err(err); // OpenRouter reports some errors inside a 200 body
            }
            let choice = v
                .pointer("/choices/0")
                .ok_or_else(|| malformed(kind, "no choices"))?;
            res.text = choice
                .pointer("/message/content")
                .and_then(Value::as_str)
                .or_else(|| choice.pointer("/message/refusal").and_then(Value::as_str))
                .unwrap_or_default()
                .to_owned();
            res.finish_reason = choice
                .get("finish_reason")
                .and_then(Value::as_str)
                .map(FinishReason::from_provider);
            res.usage = openai_usage(&v);
            res.id = model_at("/id");
            res.model = model_at("/model").unwrap_or(res.model);
        }
        ProviderKind::Anthropic => {
            if v.get("type").and_then(Value::as_str) != Some("message") {
                return Err(malformed(kind, "not a message"));
            }
            res.text = v
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            res.finish_reason = v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(FinishReason::from_provider);
            res.usage = Some(Usage::new(
                u64_at(&v, "/usage/input_tokens").unwrap_or(0),
                u64_at(&v, "/usage/output_tokens").unwrap_or(0),
            ));
            res.id = model_at("/id");
            res.model = model_at("/model").unwrap_or(res.model);
        }
        ProviderKind::Gemini => {
            if let Some(err) = gemini_blocked(kind, &v) {
                return Err(err);
            }
            let candidate = v
                .pointer("/candidates/0")
                .ok_or_else(|| malformed(kind, "no candidates"))?;
            res.text = gemini_text(candidate);
            res.finish_reason = candidate
                .get("finishReason")
                .and_then(Value::as_str)
                .map(FinishReason::from_provider);
            res.usage = gemini_usage(&v);
            res.id = model_at("/responseId");
            res.model = model_at("/modelVersion").unwrap_or(res.model);
        }
        ProviderKind::Ollama => {
            if let Some(err) = errors::from_stream_event(kind, &v, false, &[]) {
                return Err(err);
            }
            res.text = v
                .pointer("/message/content")
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(kind, "no message"))?
                .to_owned();
            res.finish_reason = Some(
                v.get("done_reason")
                    .and_then(Value::as_str)
                    .map_or(FinishReason::Stop, FinishReason::from_provider),
            );
            res.usage = Some(Usage::new(
                u64_at(&v, "/prompt_eval_count").unwrap_or(0),
                u64_at(&v, "/eval_count").unwrap_or(0),
            ));
            res.model = model_at("/model").unwrap_or(res.model);
        }
    }
    Ok(res)
}

/// What one stream event meant.
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing for the caller (role chunk, ping, `message_start`, comment).
    Nothing,
    /// A chunk for the caller.
    Chunk(ChatChunk),
    /// The terminator arrived (`[DONE]`, `message_stop`, `done: true`), maybe with a last
    /// chunk.
    Done(Option<ChatChunk>),
}

/// Reads one provider's stream events, keeping what spans events (Anthropic's input tokens,
/// the finish reason, the latest usage).
#[derive(Debug)]
pub(crate) struct StreamParser {
    kind: ProviderKind,
    input_tokens: u64,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) usage: Option<Usage>,
    pub(crate) model: Option<String>,
}

impl StreamParser {
    pub(crate) fn new(kind: ProviderKind) -> StreamParser {
        StreamParser {
            kind,
            input_tokens: 0,
            finish: None,
            usage: None,
            model: None,
        }
    }

    /// Whether a clean end of body now means a complete answer: after a finish reason for
    /// OpenAI-style streams (even without `[DONE]`) and Gemini (which has no terminator);
    /// Anthropic needs `message_stop` and Ollama `done: true`.
    pub(crate) fn complete_at_eof(&self) -> bool {
        self.finish.is_some()
            && !matches!(self.kind, ProviderKind::Anthropic | ProviderKind::Ollama)
    }

    /// Interprets one event (`event` is the SSE event name; NDJSON lines have none).
    /// `delivered` says whether content already reached the caller (then errors are
    /// `StreamInterrupted`).
    pub(crate) fn event(
        &mut self,
        event: Option<&str>,
        data: &str,
        delivered: bool,
        secrets: &[&str],
    ) -> Result<Step, LlmError> {
        let kind = self.kind;
        if matches!(
            kind,
            ProviderKind::OpenAi
                | ProviderKind::Azure
                | ProviderKind::OpenRouter
                | ProviderKind::OpenAiCompatible
        ) && data.trim() == "[DONE]"
        {
            return Ok(Step::Done(None));
        }
        if kind == ProviderKind::Anthropic && matches!(event, Some("ping")) {
            return Ok(Step::Nothing);
        }
        let v: Value = serde_json::from_str(data).map_err(|err| {
            let what = format!("a stream event is not JSON ({err})");
            if delivered {
                LlmError::new(
                    ErrorKind::StreamInterrupted,
                    format!("stream failed after output began: malformed response: {what}"),
                )
                .with_provider(kind.name())
            } else {
                malformed(kind, &what)
            }
        })?;
        if let Some(err) = errors::from_stream_event(kind, &v, delivered, secrets) {
            return Err(err);
        }
        if self.model.is_none() {
            let model = match kind {
                ProviderKind::Anthropic => v.pointer("/message/model"),
                ProviderKind::Gemini => v.get("modelVersion"),
                _ => v.get("model"),
            };
            self.model = model
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned);
        }
        let step = match kind {
            ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::OpenRouter
            | ProviderKind::OpenAiCompatible => {
                let mut chunk = ChatChunk::default();
                // Azure's first event and the usage chunk have empty `choices`.
                if let Some(choice) = v.pointer("/choices/0") {
                    if let Some(text) = choice.pointer("/delta/content").and_then(Value::as_str) {
                        chunk.delta.push_str(text);
                    }
                    if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                        let reason = FinishReason::from_provider(reason);
                        self.finish = Some(reason.clone());
                        chunk.finish_reason = Some(reason);
                    }
                }
                if let Some(usage) = openai_usage(&v) {
                    self.usage = Some(usage);
                    chunk.usage = Some(usage);
                }
                chunk_step(chunk)
            }
            ProviderKind::Anthropic => match v.get("type").and_then(Value::as_str).or(event) {
                Some("message_start") => {
                    self.input_tokens = u64_at(&v, "/message/usage/input_tokens").unwrap_or(0);
                    Step::Nothing
                }
                Some("content_block_delta") => {
                    match v.pointer("/delta/text").and_then(Value::as_str) {
                        Some(text) if !text.is_empty() => Step::Chunk(ChatChunk::text(text)),
                        _ => Step::Nothing, // tool input, thinking, signatures
                    }
                }
                Some("message_delta") => {
                    let mut chunk = ChatChunk::default();
                    if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                        let reason = FinishReason::from_provider(reason);
                        self.finish = Some(reason.clone());
                        chunk.finish_reason = Some(reason);
                    }
                    // NOTE: message_delta's output_tokens are cumulative: replace, never add.
                    if let Some(output) = u64_at(&v, "/usage/output_tokens") {
                        let input = u64_at(&v, "/usage/input_tokens").unwrap_or(self.input_tokens);
                        let usage = Usage::new(input, output);
                        self.usage = Some(usage);
                        chunk.usage = Some(usage);
                    }
                    chunk_step(chunk)
                }
                Some("message_stop") => Step::Done(None),
                _ => Step::Nothing,
            },
            ProviderKind::Gemini => {
                if let Some(err) = gemini_blocked(kind, &v) {
                    return Err(err);
                }
                let mut chunk = ChatChunk::default();
                if let Some(candidate) = v.pointer("/candidates/0") {
                    chunk.delta = gemini_text(candidate);
                    if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                        let reason = FinishReason::from_provider(reason);
                        self.finish = Some(reason.clone());
                        chunk.finish_reason = Some(reason);
                    }
                }
                if let Some(usage) = gemini_usage(&v) {
                    // Usage may come on several chunks: keep the last, report it at the end.
                    self.usage = Some(usage);
                    if chunk.finish_reason.is_some() {
                        chunk.usage = Some(usage);
                    }
                }
                chunk_step(chunk)
            }
            ProviderKind::Ollama => {
                let mut chunk = ChatChunk::default();
                if let Some(text) = v.pointer("/message/content").and_then(Value::as_str) {
                    chunk.delta.push_str(text);
                }
                if v.get("done").and_then(Value::as_bool) == Some(true) {
                    let reason = v
                        .get("done_reason")
                        .and_then(Value::as_str)
                        .map_or(FinishReason::Stop, FinishReason::from_provider);
                    let usage = Usage::new(
                        u64_at(&v, "/prompt_eval_count").unwrap_or(0),
                        u64_at(&v, "/eval_count").unwrap_or(0),
                    );
                    self.finish = Some(reason.clone());
                    self.usage = Some(usage);
                    chunk.finish_reason = Some(reason);
                    chunk.usage = Some(usage);
                    Step::Done(Some(chunk))
                } else {
                    chunk_step(chunk)
                }
            }
        };
        Ok(step)
    }
}

fn chunk_step(chunk: ChatChunk) -> Step {
    if chunk.delta.is_empty() && chunk.finish_reason.is_none() && chunk.usage.is_none() {
        Step::Nothing
    } else {
        Step::Chunk(chunk)
    }
}

/// Reads an error body for messages (`ErrorBody` re-exported for tests).
#[cfg(test)]
pub(crate) fn error_body(v: &Value) -> Option<ErrorBody> {
    ErrorBody::parse(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sampling_values_go_out_as_written() {
        for (kind, key) in [
            (ProviderKind::OpenAi, "temperature"),
            (ProviderKind::Anthropic, "temperature"),
        ] {
            let req = ChatRequest::new("m").user("hi").temperature(0.3).top_p(0.9);
            let body = request_body(kind, &req, false);
            let text = serde_json::to_string(&body).unwrap();
            assert!(text.contains(&format!("\"{key}\":0.3")), "{text}");
            assert!(text.contains("0.9"), "{text}");
            assert!(!text.contains("0.300000"), "{text}");
        }
    }

    /// A JSON field: mostly one of `usual`, sometimes absent or one of `odd`.
    fn field(usual: Vec<Value>, odd: Vec<Value>) -> BoxedStrategy<Option<Value>> {
        prop_oneof![
            6 => prop::sample::select(usual).prop_map(Some),
            1 => Just(None),
            1 => prop::sample::select(odd).prop_map(Some),
        ]
        .boxed()
    }

    fn object(fields: Vec<(&'static str, Option<Value>)>) -> Value {
        let present = fields
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)));
        Value::Object(present.collect())
    }

    /// Completion bodies, mostly in the usual shape, with odd types, nulls, missing fields
    /// and errors mixed in.
    fn completion_bodies() -> impl Strategy<Value = String> {
        let text = || {
            field(
                vec![json!("Hello"), json!(""), json!("esc\"aped\n"), Value::Null],
                vec![json!(3), json!([{"type": "text", "text": "parts"}])],
            )
        };
        let count = || {
            field(
                vec![json!(7), json!(0), Value::Null],
                vec![json!(7.5), json!(-1)],
            )
        };
        let message = (text(), text()).prop_map(|(content, refusal)| {
            object(vec![("content", content), ("refusal", refusal)])
        });
        let choice = (
            prop_oneof![
                6 => message.prop_map(Some),
                1 => Just(None),
                1 => Just(Some(Value::Null)),
                1 => Just(Some(json!("x"))),
            ],
            field(
                vec![json!("stop"), json!("length"), Value::Null],
                vec![json!(1)],
            ),
        )
            .prop_map(|(message, finish)| {
                object(vec![("message", message), ("finish_reason", finish)])
            });
        let usage = (count(), count(), count()).prop_map(|(p, c, t)| {
            object(vec![
                ("prompt_tokens", p),
                ("completion_tokens", c),
                ("total_tokens", t),
            ])
        });
        let choices = prop_oneof![
            6 => prop::collection::vec(choice, 1..3).prop_map(|c| Some(Value::Array(c))),
            1 => Just(None),
            1 => Just(Some(json!([]))),
            1 => Just(Some(json!({"0": {"message": {"content": "keyed"}}}))),
        ];
        let usage = prop_oneof![
            6 => usage.prop_map(Some),
            1 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => Just(Some(json!(5))),
        ];
        let error = prop_oneof![
            6 => Just(None),
            1 => Just(Some(Value::Null)),
            1 => Just(Some(json!("overloaded"))),
            1 => Just(Some(json!({"message": "busy", "type": "server_error", "code": 503}))),
            1 => Just(Some(json!(1))),
        ];
        (
            text(),
            text(),
            choices,
            usage,
            error,
            prop::bool::weighted(0.1),
        )
            .prop_map(|(id, model, choices, usage, error, as_array)| {
                let body = object(vec![
                    ("id", id),
                    ("model", model),
                    ("choices", choices),
                    ("usage", usage),
                    ("error", error),
                ]);
                if as_array {
                    // The fields in declaration order, as serde would read a struct from an
                    // array.
                    let fields = ["id", "model", "choices", "usage", "error"];
                    let values = fields.iter().filter_map(|f| body.get(f).cloned());
                    Value::Array(values.collect()).to_string()
                } else {
                    body.to_string()
                }
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The typed fast path answers exactly as the general path does, or leaves the body
        /// to it.
        #[test]
        fn the_fast_path_never_differs_from_the_general_path(body in completion_bodies()) {
            let provider: std::sync::Arc<str> = "p".into();
            for kind in ProviderKind::ALL {
                let general = parse_value(kind, &provider, "asked", body.as_bytes());
                let answer = parse_response(kind, &provider, "asked", body.as_bytes());
                prop_assert_eq!(
                    format!("{answer:?}"),
                    format!("{general:?}"),
                    "{:?} on {}",
                    kind,
                    body
                );
            }
        }
    }

    #[test]
    fn the_fast_path_reads_a_usual_completion() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;
        let provider: std::sync::Arc<str> = "p".into();
        let fast = parse_openai_fast(&provider, "asked", body).expect("the usual shape");
        assert_eq!(fast.text, "Hi!");
        assert_eq!(fast.model, "gpt-4o-mini");
        assert_eq!(fast.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(fast.finish_reason, Some(FinishReason::Stop));
        assert_eq!(fast.usage.map(|u| u.total_tokens), Some(12));
        let general = parse_value(ProviderKind::OpenAi, &provider, "asked", body);
        assert_eq!(Some(fast), general.ok());
    }

    #[test]
    fn anthropic_usage_is_cumulative_not_added() {
        let mut p = StreamParser::new(ProviderKind::Anthropic);
        p.event(Some("message_start"), r#"{"type":"message_start","message":{"model":"claude","usage":{"input_tokens":11,"output_tokens":1}}}"#, false, &[]).unwrap();
        p.event(Some("message_delta"), r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#, true, &[]).unwrap();
        p.event(
            Some("message_delta"),
            r#"{"type":"message_delta","delta":{},"usage":{"output_tokens":6}}"#,
            true,
            &[],
        )
        .unwrap();
        assert_eq!(p.usage, Some(Usage::new(11, 6)));
        assert_eq!(p.model.as_deref(), Some("claude"));
    }

    #[test]
    fn openai_usage_only_and_empty_choice_chunks_are_handled() {
        let mut p = StreamParser::new(ProviderKind::Azure);
        let azure_first = r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[]}"#;
        assert_eq!(
            p.event(None, azure_first, false, &[]).unwrap(),
            Step::Nothing
        );
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":14,"completion_tokens":30,"total_tokens":44}}"#;
        let Step::Chunk(chunk) = p.event(None, usage, true, &[]).unwrap() else {
            panic!()
        };
        assert_eq!(chunk.usage, Some(Usage::new(14, 30)));
        assert!(chunk.delta.is_empty());
    }

    #[test]
    fn error_bodies_read_every_dialect() {
        let gemini = json!([{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "x",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3.957525076s"}]}}]);
        let body = error_body(&gemini).unwrap();
        assert_eq!(body.kind.as_deref(), Some("RESOURCE_EXHAUSTED"));
        assert_eq!(
            body.retry_delay,
            Some(std::time::Duration::from_nanos(3_957_525_076))
        );
        let ollama = json!({"error": "model 'x' not found"});
        assert_eq!(
            error_body(&ollama).unwrap().message.as_deref(),
            Some("model 'x' not found")
        );
        assert!(error_body(&json!({"choices": []})).is_none());
        assert!(error_body(&json!({"error": null})).is_none());
    }
}
