//! OpenAI's Chat Completions wire format on the gateway's side: requests in, answers, stream
//! chunks and errors out, so any OpenAI SDK can point at the gateway.
//!
//! The whole request is carried: content parts, tools and tool calls, tool results,
//! structured output, reasoning and sampling fields are translated to the provider-neutral
//! request (and by `llm-providers` to each upstream's format); any other field passes through
//! to OpenAI-format upstreams or is refused with a 400 naming it — never dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use llm_providers::recovery::Recovery;
use llm_providers::{
    ChatChunk, ChatRequest, ChatResponse, Content, FinishReason, Media, Message, Part,
    ProviderKind, Reasoning, ReasoningConfig, ReasoningEffort, ResponseFormat, Tool, ToolCall,
    ToolChoice,
};
use llm_tower::Usage;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::fields::check_passed;

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
    pub(crate) tools: Option<Vec<Value>>,
    pub(crate) tool_choice: Option<Value>,
    pub(crate) parallel_tool_calls: Option<bool>,
    pub(crate) response_format: Option<Value>,
    pub(crate) reasoning_effort: Option<String>,
    pub(crate) seed: Option<i64>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) user: Option<String>,
    /// Every other field.
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// Fields whose answer the gateway cannot carry back (audio) or that are superseded
/// (`functions`): sent on, part of their answer would be dropped on the way back.
/// (`n`, `logprobs` and the like pass through to OpenAI-format upstreams, and what they add
/// to the answer comes back.)
const NOT_CARRIED: [&str; 4] = ["functions", "function_call", "audio", "modalities"];

/// What joins a tool call's id and Gemini's thought signature in the ids the gateway hands
/// out, so that a client sending the call back sends the signature too (Gemini 3 refuses
/// function calls without it; OpenAI's format has no field for it).
const SIGNATURE_IN_ID: &str = "__thought__";

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
    pub(crate) content: Option<Value>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<Value>>,
    #[serde(default)]
    pub(crate) tool_call_id: Option<String>,
    #[serde(default)]
    pub(crate) refusal: Option<String>,
    /// Reasoning sent back: DeepSeek-style `reasoning_content`, OpenRouter's `reasoning` and
    /// `reasoning_details` (which carry the signatures the gateway handed out).
    #[serde(default)]
    pub(crate) reasoning_content: Option<String>,
    #[serde(default)]
    pub(crate) reasoning: Option<String>,
    #[serde(default)]
    pub(crate) reasoning_details: Option<Vec<Value>>,
    /// Every other field (`audio`, `function_call`, …): refused, never dropped.
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

impl CompletionRequest {
    /// Checks that every field is translated, passed through or refused: fields the gateway
    /// cannot carry back are a 400; the others go as they are to `targets` when every one
    /// of them speaks OpenAI's format, and are a 400 naming the field and the target that
    /// does not otherwise. Returns the fields to pass through.
    pub(crate) fn check_fields(
        &self,
        targets: &[(&str, ProviderKind)],
    ) -> Result<Map<String, Value>, ApiError> {
        for (i, message) in self.messages.iter().enumerate() {
            if let Some((field, _)) = message.rest.iter().find(|(_, v)| !v.is_null()) {
                return Err(ApiError::invalid(format!(
                    "`{field}` on a message is not supported by this gateway (it would be dropped)"
                ))
                .param(format!("messages[{i}].{field}")));
            }
        }
        let mut passed = Map::new();
        for (field, value) in &self.rest {
            if value.is_null() {
                continue;
            }
            let single_choice = field == "n" && value.as_u64() == Some(1);
            let text_only = field == "modalities" && *value == json!(["text"]);
            if single_choice || text_only {
                continue;
            }
            if NOT_CARRIED.contains(&field.as_str()) {
                return Err(ApiError::invalid(format!(
                    "`{field}` is not supported by this gateway (its answer would be dropped)"
                ))
                .param(field.clone()));
            }
            passed.insert(field.clone(), value.clone());
        }
        check_passed(&passed, targets, speaks_openai, "OpenAI-format")?;
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
            match message.role.as_str() {
                "system" | "developer" => {
                    let content = in_content(message.content, i)?;
                    if content.has_media() {
                        return Err(ApiError::invalid("a system message takes text only")
                            .param(format!("messages[{i}].content")));
                    }
                    system.push(content.text().into_owned());
                }
                "user" => {
                    let mut m = Message::user(in_content(message.content, i)?);
                    m.name = message.name;
                    messages.push(m);
                }
                "assistant" => messages.push(in_assistant(message, i)?),
                "tool" => {
                    let Some(call_id) = message.tool_call_id else {
                        return Err(ApiError::invalid("a tool message needs `tool_call_id`")
                            .param(format!("messages[{i}].tool_call_id")));
                    };
                    let content = in_content(message.content, i)?;
                    let (call_id, _) = split_signature(&call_id);
                    let mut m = Message::tool_result(call_id, content);
                    m.name = message.name;
                    messages.push(m);
                }
                other => {
                    return Err(ApiError::invalid(format!(
                        "role {other:?} is not supported (system, developer, user, assistant, tool)"
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
            request = request.temperature(in_range("temperature", t, 0.0, 2.0)?);
        }
        if let Some(p) = self.top_p {
            request = request.top_p(in_range("top_p", p, 0.0, 1.0)?);
        }
        if let Some(p) = self.presence_penalty {
            request = request.presence_penalty(in_range("presence_penalty", p, -2.0, 2.0)?);
        }
        if let Some(p) = self.frequency_penalty {
            request = request.frequency_penalty(in_range("frequency_penalty", p, -2.0, 2.0)?);
        }
        if let Some(seed) = self.seed {
            request = request.seed(seed);
        }
        if let Some(user) = self.user.take() {
            request = request.end_user(user);
        }
        match &self.stop {
            Some(Stop::One(stop)) => request = request.stop([stop.clone()]),
            Some(Stop::Many(stops)) => request = request.stop(stops.iter().cloned()),
            None => {}
        }
        if let Some(tools) = self.tools.take() {
            let tools = tools
                .into_iter()
                .enumerate()
                .map(|(i, tool)| in_tool(tool, i))
                .collect::<Result<Vec<_>, _>>()?;
            request = request.tools(tools);
        }
        if let Some(choice) = self.tool_choice.take() {
            request = request.tool_choice(in_tool_choice(&choice)?);
        }
        if let Some(parallel) = self.parallel_tool_calls {
            request = request.parallel_tool_calls(parallel);
        }
        if let Some(format) = &self.response_format {
            request = request.response_format(in_response_format(format)?);
        }
        if let Some(effort) = &self.reasoning_effort {
            let effort = ReasoningEffort::parse(effort).ok_or_else(|| {
                ApiError::invalid(format!(
                    "`reasoning_effort` must be one of none, minimal, low, medium, high, xhigh, max (got {effort:?})"
                ))
                .param("reasoning_effort")
            })?;
            request = request.reasoning(ReasoningConfig::effort(effort));
        }
        for (field, value) in std::mem::take(&mut self.rest) {
            request = request.extra(field, value);
        }
        Ok(request)
    }

    /// Whether the client asked for a usage chunk at the end of the stream.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }
}

fn bad(param: String, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).param(param)
}

/// A message's `content`: a string, parts, or nothing.
fn in_content(content: Option<Value>, i: usize) -> Result<Content, ApiError> {
    let param = || format!("messages[{i}].content");
    let parts = match content {
        None | Some(Value::Null) => return Ok(Content::default()),
        Some(Value::String(text)) => return Ok(Content::Text(text)),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad(
                param(),
                "`content` must be a string or an array of parts",
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.into_iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        let text_of = |key: &str| part.get(key).and_then(Value::as_str).map(str::to_owned);
        match part.get("type").and_then(Value::as_str) {
            // An assistant's earlier refusal, sent back as a part, is what it said.
            Some("text" | "refusal") => {
                let key = if part["type"] == "text" {
                    "text"
                } else {
                    "refusal"
                };
                let text = text_of(key)
                    .ok_or_else(|| bad(param(), format!("a {key} part needs `{key}`")))?;
                out.push(Part::Text(text));
            }
            Some("image_url") => {
                let url = part
                    .pointer("/image_url/url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(param(), "an image_url part needs `image_url.url`"))?;
                let mut media = Media::from_url(url);
                if let Some(detail) = part.pointer("/image_url/detail").and_then(Value::as_str) {
                    media = media.detail(detail);
                }
                out.push(Part::Image(media));
            }
            Some("file") => {
                if part.pointer("/file/file_id").is_some_and(|v| !v.is_null()) {
                    return Err(bad(
                        param(),
                        "`file.file_id` refers to a file stored at OpenAI, which the gateway cannot send elsewhere: send `file.file_data`",
                    ));
                }
                let data = part
                    .pointer("/file/file_data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(param(), "a file part needs `file.file_data`"))?;
                let mut media = Media::from_url(data);
                if let Some(name) = part.pointer("/file/filename").and_then(Value::as_str) {
                    media = media.filename(name);
                    if media.media_type.is_none() && name.ends_with(".pdf") {
                        media.media_type = Some("application/pdf".into());
                    }
                }
                out.push(Part::Document(media));
            }
            Some(other) => {
                return Err(bad(
                    param(),
                    format!(
                        "content parts of type {other:?} are not supported by this gateway (text, image_url, file)"
                    ),
                ));
            }
            None => return Err(bad(param(), "a content part needs `type`")),
        }
    }
    Ok(Content::Parts(out))
}

/// An assistant turn: its text (or refusal), tool calls and reasoning.
fn in_assistant(message: InMessage, i: usize) -> Result<Message, ApiError> {
    let mut content = in_content(message.content, i)?;
    if content.is_empty() {
        if let Some(refusal) = message.refusal {
            content = Content::Text(refusal);
        }
    }
    let mut calls = Vec::new();
    for (j, call) in message
        .tool_calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let param = |field: &str| format!("messages[{i}].tool_calls[{j}].{field}");
        if call.get("type").is_some_and(|t| t != "function") {
            return Err(bad(param("type"), "only function tool calls are supported"));
        }
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(param("id"), "a tool call needs `id`"))?;
        let name = call
            .pointer("/function/name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(param("function.name"), "a tool call needs `function.name`"))?;
        let arguments = match call.pointer("/function/arguments") {
            Some(Value::String(text)) => text.clone(),
            None | Some(Value::Null) => String::new(),
            Some(_) => {
                return Err(bad(
                    param("function.arguments"),
                    "`arguments` must be a string",
                ));
            }
        };
        let (id, signature) = split_signature(id);
        let mut call = ToolCall::new(id, name, arguments);
        call.signature = signature;
        calls.push(call);
    }
    let mut reasoning: Vec<Reasoning> = message
        .reasoning_details
        .unwrap_or_default()
        .iter()
        .map(|d| {
            let mut r = Reasoning::default();
            let text = d.get("text").or_else(|| d.get("summary"));
            if let Some(text) = text.and_then(Value::as_str) {
                text.clone_into(&mut r.text);
            }
            r.signature = d
                .get("signature")
                .and_then(Value::as_str)
                .map(str::to_owned);
            r.redacted = d.get("data").and_then(Value::as_str).map(str::to_owned);
            r.format = d.get("format").and_then(Value::as_str).map(str::to_owned);
            r
        })
        .collect();
    if reasoning.is_empty() {
        if let Some(text) = message.reasoning_content.or(message.reasoning) {
            reasoning.push(Reasoning::text(text));
        }
    }
    let mut m = Message::assistant(content)
        .with_tool_calls(calls)
        .with_reasoning(reasoning);
    m.name = message.name;
    Ok(m)
}

/// `id` without, and the thought signature the gateway put in it.
pub(crate) fn split_signature(id: &str) -> (String, Option<String>) {
    match id.split_once(SIGNATURE_IN_ID) {
        Some((id, signature)) => (id.to_owned(), Some(signature.to_owned())),
        None => (id.to_owned(), None),
    }
}

/// The id the client sees for `call`: its id, with Gemini's signature when it has one.
pub(crate) fn out_call_id(call_id: &str, signature: Option<&str>) -> String {
    match signature {
        Some(signature) => format!("{call_id}{SIGNATURE_IN_ID}{signature}"),
        None => call_id.to_owned(),
    }
}

fn in_tool(tool: Value, i: usize) -> Result<Tool, ApiError> {
    let param = |field: &str| format!("tools[{i}].{field}");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(bad(
                param("type"),
                format!("only function tools are supported (got {other:?})"),
            ));
        }
    }
    let function = tool
        .get("function")
        .filter(|f| f.is_object())
        .ok_or_else(|| bad(param("function"), "a tool needs `function`"))?;
    function_tool(function, &param("function"), "parameters", false)
}

/// A function tool from `def` — `name`, `description`, the JSON Schema under `schema_key`
/// (required or not), `strict` — as every front door declares one (OpenAI's chat nests it
/// under `function`, Responses and Anthropic do not); errors name `path`'s fields.
pub(crate) fn function_tool(
    def: &Value,
    path: &str,
    schema_key: &str,
    schema_required: bool,
) -> Result<Tool, ApiError> {
    let name = def
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad(format!("{path}.name"), "a tool needs `name`"))?;
    let mut out = Tool::new(name);
    if let Some(d) = def.get("description").and_then(Value::as_str) {
        out = out.description(d);
    }
    match def.get(schema_key) {
        None | Some(Value::Null) if !schema_required => {}
        Some(schema @ Value::Object(_)) => out = out.parameters(schema.clone()),
        _ => {
            return Err(bad(
                format!("{path}.{schema_key}"),
                format!("`{schema_key}` must be a JSON Schema object"),
            ));
        }
    }
    if let Some(strict) = def.get("strict").and_then(Value::as_bool) {
        out = out.strict(strict);
    }
    Ok(out)
}

fn in_tool_choice(choice: &Value) -> Result<ToolChoice, ApiError> {
    let named = choice.pointer("/function/name").and_then(Value::as_str);
    match (
        choice.as_str(),
        choice.get("type").and_then(Value::as_str),
        named,
    ) {
        (Some("auto"), ..) => Ok(ToolChoice::Auto),
        (Some("none"), ..) => Ok(ToolChoice::None),
        (Some("required"), ..) => Ok(ToolChoice::Required),
        (None, Some("function"), Some(name)) => Ok(ToolChoice::Tool(name.to_owned())),
        _ => Err(bad(
            "tool_choice".into(),
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": …}}",
        )),
    }
}

fn in_response_format(format: &Value) -> Result<ResponseFormat, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => {
            let spec = format
                .get("json_schema")
                .filter(|s| s.is_object())
                .ok_or_else(|| {
                    bad(
                        "response_format.json_schema".into(),
                        "a json_schema format needs `json_schema`",
                    )
                })?;
            let name = spec.get("name").and_then(Value::as_str).ok_or_else(|| {
                bad(
                    "response_format.json_schema.name".into(),
                    "a json_schema format needs a `name`",
                )
            })?;
            let schema = spec
                .get("schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object"}));
            Ok(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                description: spec
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                schema,
                strict: spec.get("strict").and_then(Value::as_bool),
            })
        }
        other => Err(bad(
            "response_format.type".into(),
            format!(
                "`response_format.type` must be text, json_object or json_schema (got {other:?})"
            ),
        )),
    }
}

/// Whether `kind` reads OpenAI's chat format, so that a field it knows passes as it is.
pub(crate) fn speaks_openai(kind: ProviderKind) -> bool {
    matches!(
        kind,
        ProviderKind::OpenAi
            | ProviderKind::Azure
            | ProviderKind::OpenRouter
            | ProviderKind::OpenAiCompatible
    )
}

/// `value` when it is a number from `min` to `max`, as OpenAI takes it; a 400 naming
/// `param` otherwise (a value too large for an `f32`, such as `1e39`, reads as infinite).
pub(crate) fn in_range(param: &str, value: f32, min: f32, max: f32) -> Result<f32, ApiError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "`{param}` must be a number from {min} to {max} (got {value})"
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
    choices: Choices<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<CompletionUsage>,
}

/// The answer's choice, then the ones after it (`n` > 1) as the upstream sent them.
struct Choices<'a> {
    first: CompletionChoice<'a>,
    others: &'a [Value],
}

impl serde::Serialize for Choices<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(1 + self.others.len()))?;
        seq.serialize_element(&self.first)?;
        for other in self.others {
            seq.serialize_element(other)?;
        }
        seq.end()
    }
}

#[derive(serde::Serialize)]
struct CompletionChoice<'a> {
    index: u32,
    message: CompletionMessage<'a>,
    logprobs: Option<&'a Value>,
    finish_reason: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct CompletionMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    /// The reasoning text, as DeepSeek-style servers name it (an extension OpenAI clients
    /// ignore).
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    /// Reasoning blocks with their signatures, in OpenRouter's form: sent back on the next
    /// turn, they let Anthropic verify its thinking.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    reasoning_details: Vec<Value>,
}

#[derive(serde::Serialize)]
struct OutToolCall<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(serde::Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(serde::Serialize)]
struct CompletionUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionTokensDetails>,
}

#[derive(serde::Serialize)]
struct PromptTokensDetails {
    cached_tokens: u64,
    #[serde(skip_serializing_if = "is_zero")]
    cache_write_tokens: u64,
}

#[derive(serde::Serialize)]
struct CompletionTokensDetails {
    reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl From<Usage> for CompletionUsage {
    fn from(usage: Usage) -> Self {
        let cached = usage.cached_input_tokens > 0 || usage.cache_creation_tokens > 0;
        CompletionUsage {
            prompt_tokens: usage.input_tokens,
            completion_tokens: usage.output_tokens,
            total_tokens: usage.total_tokens,
            prompt_tokens_details: cached.then_some(PromptTokensDetails {
                cached_tokens: usage.cached_input_tokens,
                cache_write_tokens: usage.cache_creation_tokens,
            }),
            completion_tokens_details: (usage.reasoning_tokens > 0).then_some(
                CompletionTokensDetails {
                    reasoning_tokens: usage.reasoning_tokens,
                },
            ),
        }
    }
}

/// One reasoning block in OpenRouter's `reasoning_details` form.
fn reasoning_detail(
    index: u32,
    text: &str,
    signature: Option<&str>,
    redacted: Option<&str>,
    format: Option<&str>,
) -> Value {
    let mut detail = Map::new();
    if let Some(data) = redacted {
        detail.insert("type".into(), "reasoning.encrypted".into());
        detail.insert("data".into(), data.into());
    } else {
        detail.insert("type".into(), "reasoning.text".into());
        detail.insert("text".into(), text.into());
        if let Some(signature) = signature {
            detail.insert("signature".into(), signature.into());
        }
    }
    if let Some(format) = format {
        detail.insert("format".into(), format.into());
    }
    detail.insert("index".into(), index.into());
    Value::Object(detail)
}

/// A `chat.completion` object for `answer`.
pub(crate) fn completion<'a>(id: &'a str, answer: &'a ChatResponse) -> Completion<'a> {
    let tool_calls: Vec<OutToolCall<'a>> = answer
        .tool_calls
        .iter()
        .map(|call| OutToolCall {
            id: out_call_id(&call.id, call.signature.as_deref()),
            kind: "function",
            function: OutFunction {
                name: &call.name,
                arguments: &call.arguments,
            },
        })
        .collect();
    let silent = answer.text.is_empty() && (!tool_calls.is_empty() || answer.refusal.is_some());
    let reasoning_text: String = answer.reasoning.iter().map(|r| r.text.as_str()).collect();
    // Signatures and redacted blocks must go back whole: only then are the blocks shown.
    let replayable = answer
        .reasoning
        .iter()
        .any(|r| r.signature.is_some() || r.redacted.is_some());
    let reasoning_details = if replayable {
        answer
            .reasoning
            .iter()
            .zip(0..)
            .map(|(r, i)| {
                reasoning_detail(
                    i,
                    &r.text,
                    r.signature.as_deref(),
                    r.redacted.as_deref(),
                    r.format.as_deref(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    Completion {
        id,
        object: "chat.completion",
        created: unix_now(),
        model: &answer.model,
        choices: Choices {
            first: CompletionChoice {
                index: 0,
                message: CompletionMessage {
                    role: "assistant",
                    content: (!silent).then_some(answer.text.as_str()),
                    refusal: answer.refusal.as_deref(),
                    tool_calls,
                    reasoning_content: (!reasoning_text.is_empty()).then_some(reasoning_text),
                    reasoning_details,
                },
                logprobs: answer.logprobs.as_ref(),
                finish_reason: finish_reason_str(answer.finish_reason.as_ref()),
            },
            others: &answer.other_choices,
        },
        usage: answer.usage.map(CompletionUsage::from),
    }
}

/// One `chat.completion.chunk` for `chunk`; the first carries the assistant role.
pub(crate) fn chunk(id: &str, created: u64, model: &str, chunk: &ChatChunk, first: bool) -> Value {
    let mut delta = Map::new();
    if first {
        delta.insert("role".into(), "assistant".into());
    }
    if !chunk.delta.is_empty() || (first && chunk.tool_calls.is_empty()) {
        delta.insert("content".into(), chunk.delta.as_str().into());
    }
    if let Some(refusal) = &chunk.refusal {
        delta.insert("refusal".into(), refusal.as_str().into());
    }
    if !chunk.tool_calls.is_empty() {
        let calls: Vec<Value> = chunk
            .tool_calls
            .iter()
            .map(|piece| {
                let mut call = Map::new();
                call.insert("index".into(), piece.index.into());
                if let Some(id) = &piece.id {
                    call.insert(
                        "id".into(),
                        out_call_id(id, piece.signature.as_deref()).into(),
                    );
                    call.insert("type".into(), "function".into());
                }
                let mut function = Map::new();
                if let Some(name) = &piece.name {
                    function.insert("name".into(), name.as_str().into());
                }
                function.insert("arguments".into(), piece.arguments.as_str().into());
                call.insert("function".into(), function.into());
                Value::Object(call)
            })
            .collect();
        delta.insert("tool_calls".into(), calls.into());
    }
    if let Some(piece) = &chunk.reasoning {
        if !piece.text.is_empty() {
            delta.insert("reasoning_content".into(), piece.text.as_str().into());
        }
        if piece.format.is_some() || piece.signature.is_some() || piece.redacted.is_some() {
            delta.insert(
                "reasoning_details".into(),
                json!([reasoning_detail(
                    piece.index,
                    &piece.text,
                    piece.signature.as_deref(),
                    piece.redacted.as_deref(),
                    piece.format.as_deref(),
                )]),
            );
        }
    }
    let mut choices = Vec::with_capacity(1 + chunk.other_choices.len());
    // A chunk that only carries other choices (`n` > 1) has no first choice to show.
    let first_choice = first
        || !delta.is_empty()
        || chunk.finish_reason.is_some()
        || chunk.logprobs.is_some()
        || chunk.other_choices.is_empty();
    if first_choice {
        let mut choice = json!({
            "index": 0,
            "delta": delta,
            "finish_reason": finish_reason(chunk.finish_reason.as_ref()),
        });
        if let Some(logprobs) = &chunk.logprobs {
            choice["logprobs"] = logprobs.clone();
        }
        choices.push(choice);
    }
    choices.extend(chunk.other_choices.iter().cloned());
    json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": choices,
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
