//! Each provider's wire format: the request body we send, the response body we read, and the
//! meaning of each stream event.

use std::borrow::Cow;

use llm_core::{ErrorKind, LlmError, Usage};
use serde_json::Value;
#[cfg(test)]
use serde_json::json;

use crate::conversation::{Reasoning, ReasoningDelta, ToolCall, ToolCallDelta};
use crate::errors;
#[cfg(test)]
use crate::errors::ErrorBody;
use crate::kind::ProviderKind;
use crate::types::{ChatChunk, ChatResponse, FinishReason};

pub(crate) mod embeddings;
mod request;

#[cfg(test)]
use crate::types::ChatRequest;
pub(crate) use request::request_body;

fn u64_at(v: &Value, pointer: &str) -> Option<u64> {
    v.pointer(pointer).and_then(Value::as_u64)
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn openai_usage(v: &Value) -> Option<Usage> {
    let usage = v.get("usage").filter(|u| u.is_object())?;
    Some(
        OpenAiUsage {
            prompt_tokens: u64_at(usage, "/prompt_tokens"),
            completion_tokens: u64_at(usage, "/completion_tokens"),
            total_tokens: u64_at(usage, "/total_tokens"),
            prompt_tokens_details: Some(PromptDetails {
                cached_tokens: u64_at(usage, "/prompt_tokens_details/cached_tokens"),
                cache_write_tokens: u64_at(usage, "/prompt_tokens_details/cache_write_tokens"),
            }),
            completion_tokens_details: Some(CompletionDetails {
                reasoning_tokens: u64_at(usage, "/completion_tokens_details/reasoning_tokens"),
            }),
        }
        .into_usage(),
    )
}

/// Anthropic's `usage`: its `input_tokens` leave out the cached part, which is added back
/// (input counts include cached tokens everywhere else).
fn anthropic_usage(usage: &Value, input_before: Option<Usage>) -> Usage {
    let before = input_before.unwrap_or_default();
    let read = u64_at(usage, "/cache_read_input_tokens").unwrap_or(before.cached_input_tokens);
    let written =
        u64_at(usage, "/cache_creation_input_tokens").unwrap_or(before.cache_creation_tokens);
    let input =
        u64_at(usage, "/input_tokens").map_or(before.input_tokens, |fresh| fresh + read + written);
    let output = u64_at(usage, "/output_tokens").unwrap_or(0);
    let thinking = u64_at(usage, "/output_tokens_details/thinking_tokens").unwrap_or(0);
    Usage::new(input, output)
        .with_cache(read, written)
        .with_reasoning(thinking)
}

fn gemini_usage(v: &Value) -> Option<Usage> {
    let usage = v.get("usageMetadata")?;
    let input = u64_at(usage, "/promptTokenCount").unwrap_or(0);
    // NOTE: Gemini counts thoughts apart from the candidates; output includes them here, as
    // it does for OpenAI and Anthropic.
    let thoughts = u64_at(usage, "/thoughtsTokenCount").unwrap_or(0);
    let output = u64_at(usage, "/candidatesTokenCount").unwrap_or(0) + thoughts;
    let cached = u64_at(usage, "/cachedContentTokenCount").unwrap_or(0);
    let mut u = Usage::new(input, output)
        .with_cache(cached, 0)
        .with_reasoning(thoughts);
    if let Some(total) = u64_at(usage, "/totalTokenCount") {
        // May exceed input + output by the tool-use prompt count.
        u.total_tokens = total.max(u.total_tokens);
    }
    Some(u)
}

/// What a Gemini candidate's parts say: answer text, thought summaries, function calls.
#[derive(Default)]
struct GeminiParts {
    text: String,
    thoughts: String,
    calls: Vec<(Option<String>, String, String, Option<String>)>,
}

fn gemini_parts(candidate: &Value) -> GeminiParts {
    let mut out = GeminiParts::default();
    let parts = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for part in parts {
        if let Some(call) = part.get("functionCall") {
            let args = call
                .get("args")
                .map_or_else(|| "{}".to_owned(), Value::to_string);
            out.calls.push((
                str_at(call, "/id").map(str::to_owned),
                str_at(call, "/name").unwrap_or_default().to_owned(),
                args,
                str_at(part, "/thoughtSignature").map(str::to_owned),
            ));
        } else if let Some(text) = part.get("text").and_then(Value::as_str) {
            if part.get("thought") == Some(&Value::Bool(true)) {
                out.thoughts.push_str(text);
            } else {
                out.text.push_str(text);
            }
        }
    }
    out
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

/// The id of a call: the provider's, or one made up from the call's place in the answer.
fn call_id(id: Option<&str>, index: usize) -> String {
    match id.filter(|id| !id.is_empty()) {
        Some(id) => id.to_owned(),
        None => ToolCall::made_up_id(index),
    }
}

/// A finish reason read from the provider, corrected where it lies: a model that called
/// tools finished to call them, whatever `stop` the provider says (OpenAI with a named tool
/// choice, Gemini, Ollama).
fn finish_with_calls(reason: FinishReason, called: bool) -> FinishReason {
    if called && reason == FinishReason::Stop {
        FinishReason::ToolCalls
    } else {
        reason
    }
}

/// The finish reason under `key` of `v`, corrected for calls made.
fn finish_at(v: &Value, key: &str, called: bool) -> Option<FinishReason> {
    let reason = v.get(key).and_then(Value::as_str)?;
    Some(finish_with_calls(
        FinishReason::from_provider(reason),
        called,
    ))
}

/// An OpenAI-style reasoning detail (OpenRouter's `reasoning_details[]`).
fn reasoning_detail(detail: &Value) -> Reasoning {
    let mut r = Reasoning::default();
    if let Some(text) = str_at(detail, "/text").or_else(|| str_at(detail, "/summary")) {
        text.clone_into(&mut r.text);
    }
    r.signature = str_at(detail, "/signature").map(str::to_owned);
    r.redacted = str_at(detail, "/data").map(str::to_owned);
    r.format = str_at(detail, "/format").map(str::to_owned);
    r
}

/// An OpenAI-style message's (or delta's) reasoning: `reasoning_details`, else the plain
/// `reasoning_content` (DeepSeek, llama.cpp, vLLM) or `reasoning` (OpenRouter, Ollama's
/// `/v1`) text.
fn openai_reasoning(message: &Value) -> Vec<Reasoning> {
    if let Some(details) = message.get("reasoning_details").and_then(Value::as_array) {
        if !details.is_empty() {
            return details.iter().map(reasoning_detail).collect();
        }
    }
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|key| message.get(*key).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
        .map(|text| vec![Reasoning::text(text)])
        .unwrap_or_default()
}

/// An OpenAI-style completion in its usual text-only shape, read straight into typed
/// fields: the fast path of [`parse_response`]. Any other shape (tool calls, reasoning, an
/// error object, a field of another type, duplicate keys) fails to deserialize or is left
/// to the general path, which reads it through a [`Value`]; the result never differs.
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
    // Present and not null: the general path reads them.
    #[serde(default)]
    logprobs: Option<serde::de::IgnoredAny>,
    #[serde(default, borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct OpenAiMessage<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    // Present and not null: the general path reads these.
    #[serde(default)]
    tool_calls: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    reasoning_content: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    reasoning: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    reasoning_details: Option<serde::de::IgnoredAny>,
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
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(serde::Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(serde::Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl OpenAiUsage {
    fn into_usage(self) -> Usage {
        let prompt = self.prompt_tokens_details;
        let completion = self.completion_tokens_details;
        let mut usage = Usage::new(
            self.prompt_tokens.unwrap_or(0),
            self.completion_tokens.unwrap_or(0),
        )
        .with_cache(
            prompt.as_ref().and_then(|p| p.cached_tokens).unwrap_or(0),
            prompt
                .as_ref()
                .and_then(|p| p.cache_write_tokens)
                .unwrap_or(0),
        )
        .with_reasoning(completion.and_then(|c| c.reasoning_tokens).unwrap_or(0));
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
    if parsed.choices.len() > 1 {
        return None;
    }
    let choice = parsed.choices.into_iter().next()?;
    if choice.logprobs.is_some() {
        return None;
    }
    let non_empty = |s: Option<Cow<'_, str>>| s.filter(|s| !s.is_empty()).map(Cow::into_owned);
    let mut res = ChatResponse::new(
        provider.clone(),
        non_empty(parsed.model).unwrap_or_else(|| requested_model.to_owned()),
        String::new(),
    );
    if let Some(message) = choice.message {
        let richer = message.tool_calls.is_some()
            || message.reasoning_content.is_some()
            || message.reasoning.is_some()
            || message.reasoning_details.is_some();
        if richer {
            return None;
        }
        if let Some(text) = message.content {
            res.text = text.into_owned();
        }
        res.refusal = message.refusal.map(Cow::into_owned);
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
            let message = choice.get("message").unwrap_or(&Value::Null);
            str_at(message, "/content")
                .unwrap_or_default()
                .clone_into(&mut res.text);
            res.refusal = str_at(message, "/refusal").map(str::to_owned);
            let calls = message
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate();
            for (i, call) in calls {
                let arguments = match call.pointer("/function/arguments") {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                res.tool_calls.push(ToolCall::new(
                    call_id(str_at(call, "/id"), i),
                    str_at(call, "/function/name").unwrap_or_default(),
                    arguments,
                ));
            }
            res.reasoning = openai_reasoning(message);
            res.logprobs = choice.get("logprobs").filter(|l| !l.is_null()).cloned();
            res.finish_reason = finish_at(choice, "finish_reason", !res.tool_calls.is_empty());
            if let Some(others) = v.get("choices").and_then(Value::as_array) {
                res.other_choices = others.iter().skip(1).cloned().collect();
            }
            res.usage = openai_usage(&v);
            res.id = model_at("/id");
            res.model = model_at("/model").unwrap_or(res.model);
        }
        ProviderKind::Anthropic => {
            if v.get("type").and_then(Value::as_str) != Some("message") {
                return Err(malformed(kind, "not a message"));
            }
            let blocks = v
                .get("content")
                .and_then(Value::as_array)
                .into_iter()
                .flatten();
            for block in blocks {
                match str_at(block, "/type") {
                    Some("text") => res
                        .text
                        .push_str(str_at(block, "/text").unwrap_or_default()),
                    Some("tool_use") => {
                        let input = block
                            .get("input")
                            .map_or_else(|| "{}".to_owned(), Value::to_string);
                        res.tool_calls.push(ToolCall::new(
                            call_id(str_at(block, "/id"), res.tool_calls.len()),
                            str_at(block, "/name").unwrap_or_default(),
                            input,
                        ));
                    }
                    Some("thinking") => res.reasoning.push(Reasoning::anthropic(
                        str_at(block, "/thinking").unwrap_or_default(),
                        str_at(block, "/signature").unwrap_or_default(),
                    )),
                    Some("redacted_thinking") => {
                        let mut r = Reasoning::anthropic("", "");
                        r.signature = None;
                        r.redacted = str_at(block, "/data").map(str::to_owned);
                        res.reasoning.push(r);
                    }
                    _ => {}
                }
            }
            res.finish_reason = v
                .get("stop_reason")
                .and_then(Value::as_str)
                .map(FinishReason::from_provider);
            res.usage = Some(anthropic_usage(
                v.get("usage").unwrap_or(&Value::Null),
                None,
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
            let parts = gemini_parts(candidate);
            res.text = parts.text;
            if !parts.thoughts.is_empty() {
                res.reasoning.push(Reasoning::text(parts.thoughts));
            }
            for (i, (id, name, args, signature)) in parts.calls.into_iter().enumerate() {
                let mut call = ToolCall::new(call_id(id.as_deref(), i), name, args);
                call.signature = signature;
                res.tool_calls.push(call);
            }
            res.finish_reason = finish_at(candidate, "finishReason", !res.tool_calls.is_empty());
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
            res.tool_calls = ollama_calls(&v, 0)
                .into_iter()
                .map(|d| {
                    let mut call = ToolCall::new(
                        d.id.unwrap_or_default(),
                        d.name.unwrap_or_default(),
                        d.arguments,
                    );
                    call.signature = None;
                    call
                })
                .collect();
            if let Some(thinking) = str_at(&v, "/message/thinking").filter(|t| !t.is_empty()) {
                res.reasoning.push(Reasoning::text(thinking));
            }
            res.finish_reason = Some(finish_with_calls(
                v.get("done_reason")
                    .and_then(Value::as_str)
                    .map_or(FinishReason::Stop, FinishReason::from_provider),
                !res.tool_calls.is_empty(),
            ));
            res.usage = Some(Usage::new(
                u64_at(&v, "/prompt_eval_count").unwrap_or(0),
                u64_at(&v, "/eval_count").unwrap_or(0),
            ));
            res.model = model_at("/model").unwrap_or(res.model);
        }
    }
    Ok(res)
}

/// Ollama's whole tool calls in `v`'s message, numbered from `first`.
fn ollama_calls(v: &Value, first: u32) -> Vec<ToolCallDelta> {
    v.pointer("/message/tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .zip(first..)
        .map(|(call, index)| ToolCallDelta {
            index,
            id: Some(call_id(str_at(call, "/id"), index as usize)),
            name: Some(
                str_at(call, "/function/name")
                    .unwrap_or_default()
                    .to_owned(),
            ),
            arguments: call
                .pointer("/function/arguments")
                .map_or_else(|| "{}".to_owned(), Value::to_string),
            signature: None,
        })
        .collect()
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

/// What an Anthropic content block of the stream is, by its index.
#[derive(Debug, Clone, Copy)]
enum Block {
    /// A tool call, the answer's `n`th.
    Tool(u32),
    /// A thinking block, the answer's `n`th reasoning block.
    Thinking(u32),
    Other,
}

/// Reads one provider's stream events, keeping what spans events (Anthropic's input tokens
/// and content blocks, the finish reason, the latest usage, the tool calls so far).
#[derive(Debug)]
pub(crate) struct StreamParser {
    kind: ProviderKind,
    /// Anthropic's usage from `message_start` (input and cache counts).
    started_usage: Option<Usage>,
    /// Anthropic's content blocks by index.
    blocks: Vec<Block>,
    /// Tool calls seen so far (the next call's index).
    calls: u32,
    /// Reasoning blocks seen so far.
    reasoning_blocks: u32,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) usage: Option<Usage>,
    pub(crate) model: Option<String>,
}

impl StreamParser {
    pub(crate) fn new(kind: ProviderKind) -> StreamParser {
        StreamParser {
            kind,
            started_usage: None,
            blocks: Vec::new(),
            calls: 0,
            reasoning_blocks: 0,
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

    /// Records the finish reason `reason` (corrected when tools were called) on `chunk`,
    /// once: OpenRouter repeats it on its usage chunk.
    fn finish_on(&mut self, chunk: &mut ChatChunk, reason: &str) {
        if self.finish.is_some() {
            return;
        }
        let reason = finish_with_calls(FinishReason::from_provider(reason), self.calls > 0);
        self.finish = Some(reason.clone());
        chunk.finish_reason = Some(reason);
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
                let choices = v.get("choices").and_then(Value::as_array);
                for choice in choices.into_iter().flatten() {
                    let Some(choice) = choice.as_object() else {
                        continue;
                    };
                    // Choices after the first (`n` > 1) go to the caller as they came.
                    if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                        chunk.other_choices.push(Value::Object(choice.clone()));
                        continue;
                    }
                    // NOTE: each key of the choice and its delta is visited once: a text
                    // delta (one or two keys) costs no lookup per feature it does not use.
                    for (key, value) in choice {
                        match key.as_str() {
                            "delta" => self.openai_delta(value, &mut chunk),
                            "logprobs" if !value.is_null() => {
                                chunk.logprobs = Some(value.clone());
                            }
                            "finish_reason" => {
                                if let Some(reason) = value.as_str() {
                                    self.finish_on(&mut chunk, reason);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(usage) = openai_usage(&v) {
                    self.usage = Some(usage);
                    chunk.usage = Some(usage);
                }
                chunk_step(chunk)
            }
            ProviderKind::Anthropic => self.anthropic_event(&v, event),
            ProviderKind::Gemini => {
                if let Some(err) = gemini_blocked(kind, &v) {
                    return Err(err);
                }
                let mut chunk = ChatChunk::default();
                if let Some(candidate) = v.pointer("/candidates/0") {
                    let parts = gemini_parts(candidate);
                    chunk.delta = parts.text;
                    if !parts.thoughts.is_empty() {
                        chunk.reasoning = Some(ReasoningDelta {
                            text: parts.thoughts,
                            ..ReasoningDelta::default()
                        });
                    }
                    // Gemini sends calls whole: each is a new call, never a continuation.
                    for (id, name, arguments, signature) in parts.calls {
                        let index = self.calls;
                        self.calls += 1;
                        chunk.tool_calls.push(ToolCallDelta {
                            index,
                            id: Some(call_id(id.as_deref(), index as usize)),
                            name: Some(name),
                            arguments,
                            signature,
                        });
                    }
                    if let Some(reason) = candidate.get("finishReason").and_then(Value::as_str) {
                        self.finish_on(&mut chunk, reason);
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
                if let Some(thinking) = str_at(&v, "/message/thinking").filter(|t| !t.is_empty()) {
                    chunk.reasoning = Some(ReasoningDelta {
                        text: thinking.to_owned(),
                        ..ReasoningDelta::default()
                    });
                }
                chunk.tool_calls = ollama_calls(&v, self.calls);
                self.calls += u32::try_from(chunk.tool_calls.len()).unwrap_or(u32::MAX);
                if v.get("done").and_then(Value::as_bool) == Some(true) {
                    let reason = v
                        .get("done_reason")
                        .and_then(Value::as_str)
                        .unwrap_or("stop");
                    let usage = Usage::new(
                        u64_at(&v, "/prompt_eval_count").unwrap_or(0),
                        u64_at(&v, "/eval_count").unwrap_or(0),
                    );
                    self.finish_on(&mut chunk, reason);
                    self.usage = Some(usage);
                    chunk.usage = Some(usage);
                    Step::Done(Some(chunk))
                } else {
                    chunk_step(chunk)
                }
            }
        };
        Ok(step)
    }

    /// An OpenAI-style `delta`: text, refusal, tool-call fragments, reasoning.
    fn openai_delta(&mut self, delta: &Value, chunk: &mut ChatChunk) {
        let Some(fields) = delta.as_object() else {
            return;
        };
        let mut reasoning = false;
        for (key, value) in fields {
            match key.as_str() {
                "content" => {
                    if let Some(text) = value.as_str() {
                        chunk.delta.push_str(text);
                    }
                }
                "refusal" => {
                    if let Some(refusal) = value.as_str().filter(|r| !r.is_empty()) {
                        chunk.refusal = Some(refusal.to_owned());
                    }
                }
                "tool_calls" => self.openai_tool_deltas(value, chunk),
                "reasoning_details" | "reasoning_content" | "reasoning" => reasoning = true,
                _ => {}
            }
        }
        if reasoning {
            chunk.reasoning = openai_reasoning_delta(delta);
        }
    }

    /// OpenAI's indexed tool-call fragments; the first of a call has its id and name.
    fn openai_tool_deltas(&mut self, calls: &Value, chunk: &mut ChatChunk) {
        let Some(calls) = calls.as_array() else {
            return;
        };
        for call in calls {
            let index = u64_at(call, "/index")
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0);
            self.calls = self.calls.max(index + 1);
            let arguments = str_at(call, "/function/arguments").unwrap_or_default();
            chunk.tool_calls.push(ToolCallDelta {
                index,
                id: str_at(call, "/id")
                    .filter(|i| !i.is_empty())
                    .map(str::to_owned),
                name: str_at(call, "/function/name").map(str::to_owned),
                arguments: arguments.to_owned(),
                signature: None,
            });
        }
    }

    fn anthropic_event(&mut self, v: &Value, event: Option<&str>) -> Step {
        match v.get("type").and_then(Value::as_str).or(event) {
            Some("message_start") => {
                let usage =
                    anthropic_usage(v.pointer("/message/usage").unwrap_or(&Value::Null), None);
                self.started_usage = Some(usage);
                Step::Nothing
            }
            Some("content_block_start") => {
                let index = u64_at(v, "/index").unwrap_or(0) as usize;
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let mut chunk = ChatChunk::default();
                let kind = match str_at(block, "/type") {
                    Some("tool_use") => {
                        let n = self.calls;
                        self.calls += 1;
                        chunk.tool_calls.push(ToolCallDelta {
                            index: n,
                            id: Some(call_id(str_at(block, "/id"), n as usize)),
                            name: Some(str_at(block, "/name").unwrap_or_default().to_owned()),
                            arguments: String::new(),
                            signature: None,
                        });
                        Block::Tool(n)
                    }
                    Some(t @ ("thinking" | "redacted_thinking")) => {
                        let n = self.reasoning_blocks;
                        self.reasoning_blocks += 1;
                        chunk.reasoning = Some(ReasoningDelta {
                            index: n,
                            text: str_at(block, "/thinking").unwrap_or_default().to_owned(),
                            signature: None,
                            redacted: (t == "redacted_thinking")
                                .then(|| str_at(block, "/data").unwrap_or_default().to_owned()),
                            format: Some(Reasoning::ANTHROPIC.to_owned()),
                        });
                        Block::Thinking(n)
                    }
                    _ => Block::Other,
                };
                if self.blocks.len() <= index {
                    self.blocks.resize(index + 1, Block::Other);
                }
                self.blocks[index] = kind;
                chunk_step(chunk)
            }
            Some("content_block_delta") => {
                let index = u64_at(v, "/index").unwrap_or(0) as usize;
                let block = self.blocks.get(index).copied().unwrap_or(Block::Other);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let mut chunk = ChatChunk::default();
                match (str_at(delta, "/type"), block) {
                    (Some("input_json_delta"), Block::Tool(n)) => {
                        let piece = str_at(delta, "/partial_json").unwrap_or_default();
                        if piece.is_empty() {
                            return Step::Nothing;
                        }
                        chunk.tool_calls.push(ToolCallDelta {
                            index: n,
                            arguments: piece.to_owned(),
                            ..ToolCallDelta::default()
                        });
                    }
                    (Some("thinking_delta"), Block::Thinking(n)) => {
                        let piece = str_at(delta, "/thinking").unwrap_or_default();
                        if piece.is_empty() {
                            return Step::Nothing;
                        }
                        chunk.reasoning = Some(ReasoningDelta {
                            index: n,
                            text: piece.to_owned(),
                            format: Some(Reasoning::ANTHROPIC.to_owned()),
                            ..ReasoningDelta::default()
                        });
                    }
                    (Some("signature_delta"), Block::Thinking(n)) => {
                        chunk.reasoning = Some(ReasoningDelta {
                            index: n,
                            signature: str_at(delta, "/signature").map(str::to_owned),
                            format: Some(Reasoning::ANTHROPIC.to_owned()),
                            ..ReasoningDelta::default()
                        });
                    }
                    _ => {
                        if let Some(text) = str_at(delta, "/text") {
                            chunk.delta.push_str(text);
                        }
                    }
                }
                chunk_step(chunk)
            }
            Some("message_delta") => {
                let mut chunk = ChatChunk::default();
                if let Some(reason) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish_on(&mut chunk, reason);
                }
                // NOTE: message_delta's counts are cumulative: replace, never add.
                if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
                    let usage = anthropic_usage(usage, self.started_usage);
                    self.usage = Some(usage);
                    chunk.usage = Some(usage);
                }
                chunk_step(chunk)
            }
            Some("message_stop") => Step::Done(None),
            _ => Step::Nothing,
        }
    }
}

/// A delta's reasoning: OpenRouter's `reasoning_details` fragments (joined by index), else
/// `reasoning_content` or `reasoning` text.
fn openai_reasoning_delta(delta: &Value) -> Option<ReasoningDelta> {
    if let Some(detail) = delta
        .get("reasoning_details")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
    {
        let r = reasoning_detail(detail);
        let index = u64_at(detail, "/index")
            .and_then(|i| u32::try_from(i).ok())
            .unwrap_or(0);
        return Some(ReasoningDelta {
            index,
            text: r.text,
            signature: r.signature,
            redacted: r.redacted,
            format: r.format,
        });
    }
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|key| delta.get(*key).and_then(Value::as_str))
        .filter(|text| !text.is_empty())
        .map(|text| ReasoningDelta {
            text: text.to_owned(),
            ..ReasoningDelta::default()
        })
}

fn chunk_step(chunk: ChatChunk) -> Step {
    if !chunk.has_content()
        && chunk.finish_reason.is_none()
        && chunk.usage.is_none()
        && chunk.logprobs.is_none()
    {
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
            let body = request_body(kind, &req, false).unwrap();
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
