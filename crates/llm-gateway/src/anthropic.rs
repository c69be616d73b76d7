//! Anthropic's Messages wire format on the gateway's side (`POST /v1/messages`): requests
//! in, messages and their named stream events out, so the Anthropic SDKs and Claude Code can
//! point at the gateway and reach any provider.
//!
//! The request is carried whole: system prompt, content blocks (text, images, documents,
//! tool use and results, thinking with its signature), tools and tool choice, stop
//! sequences, sampling, thinking and structured output are translated to the
//! provider-neutral request; any other field passes through to Anthropic upstreams or is
//! refused with a 400 naming it. `cache_control` marks are accepted and not forwarded (the
//! neutral request has no cache breakpoints; README, "Front doors").

use std::collections::HashSet;

use axum::http::StatusCode;
use llm_providers::{
    ChatChunk, ChatRequest, ChatResponse, Content, FinishReason, Media, Message, Part,
    ProviderKind, Reasoning, ReasoningConfig, ReasoningEffort, ResponseFormat, Tool, ToolCall,
    ToolChoice,
};
use llm_tower::Usage;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fields::{allowed_keys, check_passed};
use super::openai::{function_tool, in_range, out_call_id, split_signature};

/// `POST /v1/messages`' body (and `/v1/messages/count_tokens`', without `max_tokens`).
#[derive(Debug, Deserialize)]
pub(crate) struct MessagesRequest {
    pub(crate) model: String,
    pub(crate) max_tokens: Option<u32>,
    pub(crate) messages: Vec<InMessage>,
    #[serde(default)]
    pub(crate) system: Option<Value>,
    #[serde(default)]
    pub(crate) stream: bool,
    pub(crate) stop_sequences: Option<Vec<String>>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) metadata: Option<Value>,
    pub(crate) thinking: Option<Value>,
    pub(crate) tools: Option<Vec<Value>>,
    pub(crate) tool_choice: Option<Value>,
    pub(crate) output_config: Option<Value>,
    /// Every other field (`top_k`, `service_tier`, …): passed to Anthropic upstreams as it
    /// is, or refused.
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// One turn of the conversation.
#[derive(Debug, Deserialize)]
pub(crate) struct InMessage {
    pub(crate) role: String,
    pub(crate) content: Value,
    /// Every other field: refused, never dropped.
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// Top-level fields that mean nothing to the answer: accepted, not forwarded.
const HINTS: [&str; 1] = ["cache_control"];

/// Whether `kind` reads Anthropic's format, so a field the gateway does not translate can
/// pass as it is.
fn speaks_anthropic(kind: ProviderKind) -> bool {
    kind == ProviderKind::Anthropic
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).param(param)
}

impl MessagesRequest {
    /// Checks that every field is translated, passed through or refused, as
    /// `CompletionRequest::check_fields` does for OpenAI's format; returns the fields to pass
    /// through (only when every target speaks Anthropic's format).
    pub(crate) fn check_fields(
        &self,
        targets: &[(&str, ProviderKind)],
    ) -> Result<Map<String, Value>, ApiError> {
        for (i, message) in self.messages.iter().enumerate() {
            if let Some((field, _)) = message.rest.iter().find(|(_, v)| !v.is_null()) {
                return Err(bad(
                    format!("messages.{i}.{field}"),
                    "is not supported by this gateway (it would be dropped)",
                ));
            }
        }
        let mut passed = Map::new();
        for (field, value) in &self.rest {
            if value.is_null() || HINTS.contains(&field.as_str()) {
                continue;
            }
            passed.insert(field.clone(), value.clone());
        }
        check_passed(&passed, targets, speaks_anthropic, "Anthropic")?;
        Ok(passed)
    }

    /// The provider-neutral request, or why it cannot be one. `counting`: for
    /// `count_tokens`, which takes no `max_tokens`.
    pub(crate) fn take_chat_request(&mut self, counting: bool) -> Result<ChatRequest, ApiError> {
        if self.model.trim().is_empty() {
            return Err(bad("model", "must not be empty"));
        }
        let max_tokens = match self.max_tokens {
            None if counting => None,
            None => return Err(bad("max_tokens", "Field required")),
            Some(0) => {
                return Err(bad(
                    "max_tokens",
                    "must be at least 1 through this gateway (0 only warms Anthropic's prompt cache)",
                ));
            }
            Some(n) => Some(n),
        };
        let mut request = ChatRequest::new(self.model.clone());
        if let Some(system) = self.system.take() {
            let system = in_system(system)?;
            if !system.is_empty() {
                request = request.system(system);
            }
        }
        if self.messages.is_empty() {
            return Err(bad("messages", "must hold at least one message"));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, message) in std::mem::take(&mut self.messages).into_iter().enumerate() {
            in_message(message, i, &mut messages)?;
        }
        request = request.messages_from(messages);
        if let Some(max) = max_tokens {
            request = request.max_tokens(max);
        }
        if let Some(t) = self.temperature {
            request = request.temperature(in_range("temperature", t, 0.0, 1.0)?);
        }
        if let Some(p) = self.top_p {
            request = request.top_p(in_range("top_p", p, 0.0, 1.0)?);
        }
        if let Some(stops) = self.stop_sequences.take() {
            request = request.stop(stops);
        }
        if let Some(metadata) = self.metadata.take() {
            request = in_metadata(request, &metadata)?;
        }
        if let Some(tools) = self.tools.take() {
            let tools = tools
                .iter()
                .enumerate()
                .map(|(i, tool)| in_tool(tool, i))
                .collect::<Result<Vec<_>, _>>()?;
            request = request.tools(tools);
        }
        if let Some(choice) = self.tool_choice.take() {
            let (choice, parallel) = in_tool_choice(&choice)?;
            request = request.tool_choice(choice);
            if let Some(parallel) = parallel {
                request = request.parallel_tool_calls(parallel);
            }
        }
        let mut effort = None;
        if let Some(config) = self.output_config.take() {
            let (format, asked) = in_output_config(&config)?;
            if let Some(format) = format {
                request = request.response_format(format);
            }
            effort = asked;
        }
        if let Some(thinking) = self.thinking.take() {
            request = request.reasoning(in_thinking(&thinking, effort)?);
        } else if let Some(effort) = effort {
            request = request.reasoning(ReasoningConfig::effort(effort));
        }
        for (field, value) in std::mem::take(&mut self.rest) {
            request = request.extra(field, value);
        }
        Ok(request)
    }
}

/// `system`: a string, or text blocks.
fn in_system(system: Value) -> Result<String, ApiError> {
    match system {
        Value::Null => Ok(String::new()),
        Value::String(text) => Ok(text),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let path = format!("system.{i}");
                allowed_keys(
                    block,
                    &["type", "text", "cache_control", "citations"],
                    &path,
                )?;
                if block.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(bad(path, "system blocks must be text blocks"));
                }
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{path}.text"), "Field required"))?;
                texts.push(text.to_owned());
            }
            Ok(texts.join("\n\n"))
        }
        _ => Err(bad("system", "must be a string or an array of text blocks")),
    }
}

/// `metadata`: `user_id` is the end user; nothing else is known.
fn in_metadata(request: ChatRequest, metadata: &Value) -> Result<ChatRequest, ApiError> {
    let Some(map) = metadata.as_object() else {
        return Err(bad("metadata", "must be an object"));
    };
    if let Some((key, _)) = map.iter().find(|(k, v)| *k != "user_id" && !v.is_null()) {
        return Err(bad(
            format!("metadata.{key}"),
            "is not supported (only `user_id`)",
        ));
    }
    Ok(match map.get("user_id").and_then(Value::as_str) {
        Some(user) => request.end_user(user),
        None => request,
    })
}

/// What one content block is, in the neutral request's terms.
enum Block {
    Part(Part),
    ToolUse(ToolCall),
    ToolResult {
        id: String,
        content: Content,
        is_error: bool,
    },
    Thinking(Reasoning),
}

/// One turn: a user turn's tool results become tool messages (first, as Anthropic orders
/// them), its other blocks a user message; an assistant turn one message with its text,
/// tool calls and thinking.
fn in_message(message: InMessage, i: usize, out: &mut Vec<Message>) -> Result<(), ApiError> {
    let blocks = match message.content {
        Value::String(text) => vec![Block::Part(Part::Text(text))],
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(j, block)| in_block(block, &format!("messages.{i}.content.{j}")))
            .collect::<Result<Vec<_>, _>>()?,
        _ => {
            return Err(bad(
                format!("messages.{i}.content"),
                "must be a string or an array of content blocks",
            ));
        }
    };
    match message.role.as_str() {
        "user" => {
            let mut parts = Vec::new();
            for block in blocks {
                match block {
                    Block::Part(part) => parts.push(part),
                    Block::ToolResult {
                        id,
                        content,
                        is_error,
                    } => out.push(Message::tool_result(id, content).with_error(is_error)),
                    Block::ToolUse(_) | Block::Thinking(_) => {
                        return Err(bad(
                            format!("messages.{i}.content"),
                            "tool_use and thinking blocks belong to assistant turns",
                        ));
                    }
                }
            }
            if !parts.is_empty() {
                out.push(Message::user(parts_content(parts)));
            }
        }
        "assistant" => {
            let (mut parts, mut calls, mut reasoning) = (Vec::new(), Vec::new(), Vec::new());
            for block in blocks {
                match block {
                    Block::Part(part) => parts.push(part),
                    Block::ToolUse(call) => calls.push(call),
                    Block::Thinking(r) => reasoning.push(r),
                    Block::ToolResult { .. } => {
                        return Err(bad(
                            format!("messages.{i}.content"),
                            "tool_result blocks belong to user turns",
                        ));
                    }
                }
            }
            out.push(
                Message::assistant(parts_content(parts))
                    .with_tool_calls(calls)
                    .with_reasoning(reasoning),
            );
        }
        other => {
            return Err(bad(
                format!("messages.{i}.role"),
                format!("must be \"user\" or \"assistant\" (got {other:?})"),
            ));
        }
    }
    Ok(())
}

/// Text alone stays a string, as the providers show it; no parts is no content.
fn parts_content(mut parts: Vec<Part>) -> Content {
    if parts.is_empty() {
        return Content::default();
    }
    if parts.len() == 1 {
        if let Some(Part::Text(_)) = parts.first() {
            if let Some(Part::Text(text)) = parts.pop() {
                return Content::Text(text);
            }
        }
    }
    Content::Parts(parts)
}

fn str_field<'v>(block: &'v Value, key: &str, path: &str) -> Result<&'v str, ApiError> {
    block
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{path}.{key}"), "Field required"))
}

fn in_block(block: &Value, path: &str) -> Result<Block, ApiError> {
    let kind = block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("{path}.type"), "Field required"))?;
    match kind {
        "text" => {
            allowed_keys(block, &["type", "text", "cache_control"], path)?;
            Ok(Block::Part(Part::Text(
                str_field(block, "text", path)?.to_owned(),
            )))
        }
        "image" => {
            allowed_keys(block, &["type", "source", "cache_control"], path)?;
            Ok(Block::Part(Part::Image(in_source(block, path)?)))
        }
        "document" => {
            allowed_keys(block, &["type", "source", "cache_control"], path)?;
            let source = block.get("source").unwrap_or(&Value::Null);
            if source.get("type").and_then(Value::as_str) == Some("text") {
                // A plain-text document is its text.
                let text = str_field(source, "data", &format!("{path}.source"))?;
                return Ok(Block::Part(Part::Text(text.to_owned())));
            }
            let mut media = in_source(block, path)?;
            if media.media_type.is_none() {
                media.media_type = Some("application/pdf".into());
            }
            Ok(Block::Part(Part::Document(media)))
        }
        "tool_use" => {
            allowed_keys(
                block,
                &["type", "id", "name", "input", "cache_control", "caller"],
                path,
            )?;
            let (id, signature) = split_signature(str_field(block, "id", path)?);
            let name = str_field(block, "name", path)?;
            let input = match block.get("input") {
                Some(input @ Value::Object(_)) => input.to_string(),
                None | Some(Value::Null) => "{}".to_owned(),
                Some(_) => return Err(bad(format!("{path}.input"), "must be an object")),
            };
            let mut call = ToolCall::new(id, name, input);
            call.signature = signature;
            Ok(Block::ToolUse(call))
        }
        "tool_result" => {
            allowed_keys(
                block,
                &[
                    "type",
                    "tool_use_id",
                    "content",
                    "is_error",
                    "cache_control",
                ],
                path,
            )?;
            let (id, _) = split_signature(str_field(block, "tool_use_id", path)?);
            let content = match block.get("content") {
                None | Some(Value::Null) => Content::default(),
                Some(Value::String(text)) => Content::Text(text.clone()),
                Some(Value::Array(inner)) => {
                    let mut parts = Vec::with_capacity(inner.len());
                    for (k, item) in inner.iter().enumerate() {
                        let inner_path = format!("{path}.content.{k}");
                        match in_block(item, &inner_path)? {
                            Block::Part(part) => parts.push(part),
                            _ => {
                                return Err(bad(
                                    inner_path,
                                    "a tool result holds text, image and document blocks",
                                ));
                            }
                        }
                    }
                    parts_content(parts)
                }
                Some(_) => {
                    return Err(bad(
                        format!("{path}.content"),
                        "must be a string or an array of blocks",
                    ));
                }
            };
            let is_error = block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(Block::ToolResult {
                id,
                content,
                is_error,
            })
        }
        "thinking" => {
            allowed_keys(block, &["type", "thinking", "signature"], path)?;
            let text = str_field(block, "thinking", path)?;
            let signature = str_field(block, "signature", path)?;
            // NOTE: an empty signature is the gateway's own mark for reasoning another
            // provider wrote (it has none): such a block is text, never sent to Anthropic as
            // a thinking block it would refuse to verify.
            Ok(Block::Thinking(if signature.is_empty() {
                Reasoning::text(text)
            } else {
                Reasoning::anthropic(text, signature)
            }))
        }
        "redacted_thinking" => {
            allowed_keys(block, &["type", "data"], path)?;
            let mut r = Reasoning::anthropic("", "");
            r.signature = None;
            r.redacted = Some(str_field(block, "data", path)?.to_owned());
            Ok(Block::Thinking(r))
        }
        other => Err(bad(
            format!("{path}.type"),
            format!(
                "content blocks of type {other:?} are not supported by this gateway (text, image, document, tool_use, tool_result, thinking, redacted_thinking)"
            ),
        )),
    }
}

/// An image's or document's `source`: base64 data or a URL.
fn in_source(block: &Value, path: &str) -> Result<Media, ApiError> {
    let source = block
        .get("source")
        .ok_or_else(|| bad(format!("{path}.source"), "Field required"))?;
    let path = format!("{path}.source");
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            allowed_keys(source, &["type", "media_type", "data"], &path)?;
            Ok(Media::base64(
                str_field(source, "media_type", &path)?,
                str_field(source, "data", &path)?,
            ))
        }
        Some("url") => {
            allowed_keys(source, &["type", "url"], &path)?;
            Ok(Media::url(str_field(source, "url", &path)?))
        }
        other => Err(bad(
            format!("{path}.type"),
            format!("sources of type {other:?} are not supported (base64, url)"),
        )),
    }
}

fn in_tool(tool: &Value, i: usize) -> Result<Tool, ApiError> {
    let path = format!("tools.{i}");
    if let Some(kind) = tool.get("type").and_then(Value::as_str) {
        if kind != "custom" {
            return Err(bad(
                format!("{path}.type"),
                format!(
                    "server tools ({kind:?}) run at Anthropic and cannot be routed: only client tools are supported"
                ),
            ));
        }
    }
    allowed_keys(
        tool,
        &[
            "type",
            "name",
            "description",
            "input_schema",
            "strict",
            "cache_control",
        ],
        &path,
    )?;
    function_tool(tool, &path, "input_schema", true)
}

/// `tool_choice`, and whether parallel calls are allowed (`disable_parallel_tool_use`).
fn in_tool_choice(choice: &Value) -> Result<(ToolChoice, Option<bool>), ApiError> {
    allowed_keys(
        choice,
        &["type", "name", "disable_parallel_tool_use"],
        "tool_choice",
    )?;
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disabled| !disabled);
    let choice = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => ToolChoice::Auto,
        Some("any") => ToolChoice::Required,
        Some("none") => ToolChoice::None,
        Some("tool") => ToolChoice::Tool(str_field(choice, "name", "tool_choice")?.to_owned()),
        _ => {
            return Err(bad(
                "tool_choice.type",
                "must be \"auto\", \"any\", \"tool\" or \"none\"",
            ));
        }
    };
    Ok((choice, parallel))
}

/// `output_config`: a JSON schema the answer follows, and an effort.
fn in_output_config(
    config: &Value,
) -> Result<(Option<ResponseFormat>, Option<ReasoningEffort>), ApiError> {
    allowed_keys(config, &["format", "effort"], "output_config")?;
    let format = match config.get("format") {
        None | Some(Value::Null) => None,
        Some(format) => {
            allowed_keys(format, &["type", "schema"], "output_config.format")?;
            if format.get("type").and_then(Value::as_str) != Some("json_schema") {
                return Err(bad("output_config.format.type", "must be \"json_schema\""));
            }
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| bad("output_config.format.schema", "Field required"))?;
            Some(ResponseFormat::JsonSchema {
                name: "output".to_owned(),
                description: None,
                schema,
                strict: Some(true),
            })
        }
    };
    let effort = match config.get("effort").and_then(Value::as_str) {
        None => None,
        Some(name) => Some(ReasoningEffort::parse(name).ok_or_else(|| {
            bad(
                "output_config.effort",
                "must be one of low, medium, high, xhigh, max",
            )
        })?),
    };
    Ok((format, effort))
}

/// `thinking`: a budget, off, or adaptive (the model decides: the effort asked for, or
/// medium).
fn in_thinking(
    thinking: &Value,
    effort: Option<ReasoningEffort>,
) -> Result<ReasoningConfig, ApiError> {
    allowed_keys(thinking, &["type", "budget_tokens", "display"], "thinking")?;
    // The gateway shows the reasoning it gets (`summarized`, the default); hiding it is not
    // something it can ask every provider for, so `omitted` is refused, not ignored.
    match thinking.get("display").and_then(Value::as_str) {
        None | Some("summarized") => {}
        Some(other) => {
            return Err(bad(
                "thinking.display",
                format!("{other:?} is not supported by this gateway (\"summarized\" only)"),
            ));
        }
    }
    match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .and_then(|b| u32::try_from(b).ok())
                .ok_or_else(|| bad("thinking.budget_tokens", "Field required"))?;
            Ok(ReasoningConfig::budget(budget))
        }
        Some("disabled") => Ok(ReasoningConfig::effort(ReasoningEffort::None)),
        Some("adaptive") => Ok(ReasoningConfig::effort(
            effort.unwrap_or(ReasoningEffort::Medium),
        )),
        _ => Err(bad(
            "thinking.type",
            "must be \"enabled\", \"disabled\" or \"adaptive\"",
        )),
    }
}

/// Anthropic's `stop_reason` for a finish reason.
fn stop_reason(reason: Option<&FinishReason>, refused: bool) -> &'static str {
    if refused {
        return "refusal";
    }
    match reason {
        Some(FinishReason::Length) => "max_tokens",
        Some(FinishReason::ToolCalls) => "tool_use",
        Some(FinishReason::ContentFilter) => "refusal",
        Some(FinishReason::ContextWindow) => "model_context_window_exceeded",
        Some(FinishReason::Other(other)) if other == "pause_turn" => "pause_turn",
        _ => "end_turn",
    }
}

/// Anthropic's `usage`: its `input_tokens` leave out the cached part.
fn usage_json(usage: Option<Usage>) -> Value {
    let usage = usage.unwrap_or_default();
    let cached = usage.cached_input_tokens + usage.cache_creation_tokens;
    json!({
        "input_tokens": usage.input_tokens.saturating_sub(cached),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    })
}

/// A thinking block as the client sends it back.
fn thinking_block(r: &Reasoning) -> Value {
    match &r.redacted {
        Some(data) => json!({"type": "redacted_thinking", "data": data}),
        None => json!({
            "type": "thinking",
            "thinking": r.text,
            "signature": r.signature.as_deref().unwrap_or(""),
        }),
    }
}

fn tool_input(arguments: &str) -> Value {
    // NOTE: a model's arguments that are not a JSON object still reach the client whole,
    // under the key Anthropic's SDKs show for unparsable input.
    match serde_json::from_str::<Value>(arguments) {
        Ok(object @ Value::Object(_)) => object,
        _ if arguments.trim().is_empty() => json!({}),
        _ => json!({ "_raw_arguments": arguments }),
    }
}

/// A `message` object for `answer`.
pub(crate) fn message(id: &str, answer: &ChatResponse) -> Value {
    let mut content: Vec<Value> = answer.reasoning.iter().map(thinking_block).collect();
    if !answer.text.is_empty() {
        content.push(json!({"type": "text", "text": answer.text}));
    }
    if let Some(refusal) = &answer.refusal {
        content.push(json!({"type": "text", "text": refusal}));
    }
    for call in &answer.tool_calls {
        content.push(json!({
            "type": "tool_use",
            "id": out_call_id(&call.id, call.signature.as_deref()),
            "name": call.name,
            "input": tool_input(&call.arguments),
        }));
    }
    json!({
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": stop_reason(answer.finish_reason.as_ref(), answer.refusal.is_some()),
        "stop_sequence": null,
        "usage": usage_json(answer.usage),
    })
}

/// The block being streamed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Thinking(u32),
    Text,
    Tool(u32),
}

/// One named server-sent event: its name and data.
pub(crate) type NamedEvent = (&'static str, Value);

/// Turns a stream's chunks into Anthropic's events: `message_start`, each block's
/// `content_block_start` / `_delta` / `_stop` at list positions 0, 1, 2…, then
/// `message_delta` with the stop reason and usage, and `message_stop`.
pub(crate) struct MessageEvents {
    id: String,
    started: bool,
    open: Option<Open>,
    next_index: u32,
    closed_tools: HashSet<u32>,
    finish: Option<FinishReason>,
    refused: bool,
    usage: Option<Usage>,
}

impl MessageEvents {
    pub(crate) fn new(id: String) -> MessageEvents {
        MessageEvents {
            id,
            started: false,
            open: None,
            next_index: 0,
            closed_tools: HashSet::new(),
            finish: None,
            refused: false,
            usage: None,
        }
    }

    fn start(&mut self, model: &str, out: &mut Vec<NamedEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        // NOTE: input tokens are known for sure only at the end (an OpenAI upstream reports
        // them last): `message_delta` carries them, as its usage overwrites these.
        out.push((
            "message_start",
            json!({
                "type": "message_start",
                "message": {
                    "id": self.id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage_json(self.usage),
                },
            }),
        ));
        out.push(("ping", json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<NamedEvent>) {
        if let Some(open) = self.open.take() {
            if let Open::Tool(index) = open {
                self.closed_tools.insert(index);
            }
            out.push((
                "content_block_stop",
                json!({"type": "content_block_stop", "index": self.next_index - 1}),
            ));
        }
    }

    /// Opens `block` unless it is the one open, closing the one before.
    fn open(&mut self, block: Open, start: impl FnOnce() -> Value, out: &mut Vec<NamedEvent>) {
        if self.open == Some(block) {
            return;
        }
        self.close(out);
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": self.next_index, "content_block": start()}),
        ));
        self.next_index += 1;
        self.open = Some(block);
    }

    fn delta(&self, delta: Value, out: &mut Vec<NamedEvent>) {
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": delta}),
        ));
    }

    /// The events for one chunk; an error when the upstream interleaves two tool calls,
    /// which Anthropic's events cannot show.
    pub(crate) fn chunk(
        &mut self,
        model: &str,
        chunk: &ChatChunk,
    ) -> Result<Vec<NamedEvent>, ApiError> {
        let mut out = Vec::with_capacity(2);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        self.start(model, &mut out);
        if let Some(r) = &chunk.reasoning {
            if let Some(data) = &r.redacted {
                self.close(&mut out);
                let block = json!({"type": "redacted_thinking", "data": data});
                self.open(Open::Thinking(u32::MAX), || block, &mut out);
                self.close(&mut out);
            } else if !r.text.is_empty() || r.signature.is_some() {
                self.open(
                    Open::Thinking(r.index),
                    || json!({"type": "thinking", "thinking": "", "signature": ""}),
                    &mut out,
                );
                if !r.text.is_empty() {
                    self.delta(
                        json!({"type": "thinking_delta", "thinking": r.text}),
                        &mut out,
                    );
                }
                if let Some(signature) = &r.signature {
                    self.delta(
                        json!({"type": "signature_delta", "signature": signature}),
                        &mut out,
                    );
                }
            }
        }
        for text in [Some(&chunk.delta), chunk.refusal.as_ref()]
            .into_iter()
            .flatten()
        {
            if text.is_empty() {
                continue;
            }
            self.open(Open::Text, || json!({"type": "text", "text": ""}), &mut out);
            self.delta(json!({"type": "text_delta", "text": text}), &mut out);
        }
        if chunk.refusal.is_some() {
            self.refused = true;
        }
        for piece in &chunk.tool_calls {
            if self.closed_tools.contains(&piece.index) {
                return Err(ApiError {
                    status: StatusCode::BAD_GATEWAY,
                    ..ApiError::invalid(
                        "the upstream interleaved two tool calls, which the Messages stream cannot carry",
                    )
                });
            }
            let id = piece.id.as_deref().map_or_else(
                || format!("toolu_gw{}", piece.index),
                |id| out_call_id(id, piece.signature.as_deref()),
            );
            let name = piece.name.clone().unwrap_or_default();
            self.open(
                Open::Tool(piece.index),
                || json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                &mut out,
            );
            if !piece.arguments.is_empty() {
                self.delta(
                    json!({"type": "input_json_delta", "partial_json": piece.arguments}),
                    &mut out,
                );
            }
        }
        if chunk.finish_reason.is_some() {
            self.finish.clone_from(&chunk.finish_reason);
        }
        Ok(out)
    }

    /// The closing events: the open block's stop, `message_delta` and `message_stop`.
    pub(crate) fn finish(&mut self, model: &str) -> Vec<NamedEvent> {
        let mut out = Vec::with_capacity(4);
        self.start(model, &mut out);
        self.close(&mut out);
        let usage = usage_json(self.usage);
        out.push((
            "message_delta",
            json!({
                "type": "message_delta",
                "delta": {
                    "stop_reason": stop_reason(self.finish.as_ref(), self.refused),
                    "stop_sequence": null,
                },
                "usage": usage,
            }),
        ));
        out.push(("message_stop", json!({"type": "message_stop"})));
        out
    }
}

/// `GET /v1/models` as Anthropic's SDKs read it.
pub(crate) fn model_list<'a>(models: impl Iterator<Item = &'a str>) -> Value {
    let data: Vec<Value> = models
        .map(|id| {
            json!({
                "type": "model",
                "id": id,
                "display_name": id,
                // Unknown release dates are the epoch, as Anthropic's API allows.
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    let first = data.first().map(|m| m["id"].clone());
    let last = data.last().map(|m| m["id"].clone());
    json!({ "data": data, "has_more": false, "first_id": first, "last_id": last })
}
