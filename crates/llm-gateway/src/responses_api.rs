//! OpenAI's Responses wire format on the gateway's side (`POST /v1/responses`), stateless:
//! requests in, response objects and their typed stream events out.
//!
//! `input` (a string, or message, function-call, function-call-output and reasoning items),
//! `instructions`, function tools, `text.format`, `reasoning` and `max_output_tokens` are
//! translated to the provider-neutral request. The gateway keeps no responses: `store: true`,
//! `previous_response_id`, `conversation`, `background` and item references are refused with
//! a 400 saying so; clients send the whole conversation each time (`store: false`), as
//! stateless Responses clients do.

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
use super::openai::{
    function_tool, in_range, out_call_id, speaks_openai, split_signature, unix_now,
};

/// `POST /v1/responses`' body.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponsesRequest {
    #[serde(default)]
    pub(crate) model: Option<String>,
    #[serde(default)]
    pub(crate) input: Option<Value>,
    #[serde(default)]
    pub(crate) instructions: Option<String>,
    #[serde(default)]
    pub(crate) tools: Option<Vec<Value>>,
    #[serde(default)]
    pub(crate) tool_choice: Option<Value>,
    #[serde(default)]
    pub(crate) parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub(crate) text: Option<Value>,
    #[serde(default)]
    pub(crate) reasoning: Option<Value>,
    #[serde(default)]
    pub(crate) max_output_tokens: Option<u32>,
    #[serde(default)]
    pub(crate) temperature: Option<f32>,
    #[serde(default)]
    pub(crate) top_p: Option<f32>,
    #[serde(default)]
    pub(crate) stream: bool,
    #[serde(default)]
    pub(crate) store: Option<bool>,
    #[serde(default)]
    pub(crate) metadata: Option<Value>,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) safety_identifier: Option<String>,
    #[serde(default)]
    pub(crate) include: Option<Vec<String>>,
    /// Every other field.
    #[serde(flatten)]
    pub(crate) rest: Map<String, Value>,
}

/// Fields of a stored conversation: the gateway keeps none.
const STATEFUL: [&str; 4] = [
    "previous_response_id",
    "conversation",
    "background",
    "prompt",
];

/// Fields passed as they are to OpenAI-format upstreams, whose chat completions take them
/// under the same names.
const PASSED: [&str; 2] = ["service_tier", "prompt_cache_key"];

/// Fields that change nothing in the answer: accepted.
const HINTS: [&str; 1] = ["stream_options"];

/// The reasoning item's `encrypted_content` the gateway hands out: the reasoning's format,
/// then its signature or redacted data, so it goes back to the provider that made it.
const SIGNED: &str = "gw1:sig:";
const REDACTED: &str = "gw1:redacted:";

fn bad(param: impl Into<String>, message: impl Into<String>) -> ApiError {
    ApiError::invalid(message).param(param)
}

/// What the response object repeats of the request.
#[derive(Debug, Default)]
pub(crate) struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    tools: Vec<Value>,
    tool_choice: Value,
    parallel_tool_calls: bool,
    text: Value,
    reasoning: Value,
    temperature: Option<f32>,
    top_p: Option<f32>,
    metadata: Value,
    user: Option<String>,
}

impl ResponsesRequest {
    /// The model, or a 400 as OpenAI words it.
    pub(crate) fn model(&self) -> Result<&str, ApiError> {
        match self.model.as_deref() {
            Some(model) if !model.trim().is_empty() => Ok(model),
            _ => Err(bad("model", "Missing required parameter: 'model'.")
                .code("missing_required_parameter")),
        }
    }

    /// Refuses what a stateless gateway cannot do, and returns the fields to pass through
    /// (only when every target speaks OpenAI's format).
    pub(crate) fn check_fields(
        &self,
        targets: &[(&str, ProviderKind)],
    ) -> Result<Map<String, Value>, ApiError> {
        if self.store == Some(true) {
            return Err(bad(
                "store",
                "this gateway is stateless: it stores no responses. Send `store: false` and the whole conversation as `input`",
            ));
        }
        let mut passed = Map::new();
        for (field, value) in &self.rest {
            if value.is_null() || HINTS.contains(&field.as_str()) {
                continue;
            }
            if STATEFUL.contains(&field.as_str()) {
                if field == "background" && *value == Value::Bool(false) {
                    continue;
                }
                return Err(bad(
                    field.clone(),
                    format!(
                        "`{field}` needs responses stored by the server, and this gateway is stateless: send the whole conversation as `input`"
                    ),
                ));
            }
            if field == "truncation" && value == "disabled" {
                continue;
            }
            if !PASSED.contains(&field.as_str()) {
                return Err(bad(
                    field.clone(),
                    format!("`{field}` is not supported by this gateway (it would be dropped)"),
                ));
            }
            passed.insert(field.clone(), value.clone());
        }
        if let Some(include) = &self.include {
            if let Some(other) = include
                .iter()
                .find(|i| i.as_str() != "reasoning.encrypted_content")
            {
                return Err(bad(
                    "include",
                    format!(
                        "{other:?} is not supported (the gateway always includes reasoning.encrypted_content when the model signs its reasoning)"
                    ),
                ));
            }
        }
        if let Some(verbosity) = self.text.as_ref().and_then(|t| t.get("verbosity")) {
            if !verbosity.is_null() {
                passed.insert("verbosity".into(), verbosity.clone());
            }
        }
        check_passed(&passed, targets, speaks_openai, "OpenAI-format")?;
        Ok(passed)
    }

    /// The provider-neutral request and what the answer repeats of it.
    pub(crate) fn take_chat_request(&mut self) -> Result<(ChatRequest, Echo), ApiError> {
        let model = self.model()?.to_owned();
        let mut request = ChatRequest::new(model);
        let mut echo = Echo {
            instructions: self.instructions.clone(),
            max_output_tokens: self.max_output_tokens,
            tools: self.tools.clone().unwrap_or_default(),
            tool_choice: self.tool_choice.clone().unwrap_or_else(|| "auto".into()),
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(true),
            text: self
                .text
                .clone()
                .unwrap_or_else(|| json!({"format": {"type": "text"}})),
            reasoning: self
                .reasoning
                .clone()
                .unwrap_or_else(|| json!({"effort": null, "summary": null})),
            temperature: self.temperature,
            top_p: self.top_p,
            metadata: self.metadata.clone().unwrap_or_else(|| json!({})),
            user: self.user.clone(),
        };
        let mut system = Vec::new();
        if let Some(instructions) = self.instructions.take() {
            system.push(instructions);
        }
        let messages = match self.input.take() {
            None | Some(Value::Null) => {
                return Err(bad("input", "Missing required parameter: 'input'."));
            }
            Some(Value::String(text)) => vec![Message::user(text)],
            Some(Value::Array(items)) => in_items(items, &mut system)?,
            Some(_) => return Err(bad("input", "must be a string or an array of items")),
        };
        if messages.is_empty() {
            return Err(bad("input", "must hold at least one message"));
        }
        if !system.is_empty() {
            request = request.system(system.join("\n\n"));
        }
        request = request.messages_from(messages);
        if let Some(max) = self.max_output_tokens {
            if max == 0 {
                return Err(bad("max_output_tokens", "must be at least 1"));
            }
            request = request.max_tokens(max);
        }
        if let Some(t) = self.temperature {
            request = request.temperature(in_range("temperature", t, 0.0, 2.0)?);
        }
        if let Some(p) = self.top_p {
            request = request.top_p(in_range("top_p", p, 0.0, 1.0)?);
        }
        // Both name the end user: one may be given, or both alike, never two different ones
        // of which one would be dropped.
        match (self.safety_identifier.take(), self.user.take()) {
            (Some(a), Some(b)) if a != b => {
                return Err(bad(
                    "user",
                    "`user` and `safety_identifier` name the end user: send one (they differ)",
                ));
            }
            (Some(user), _) | (None, Some(user)) => request = request.end_user(user),
            (None, None) => {}
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
            request = request.tool_choice(in_tool_choice(&choice)?);
        }
        if let Some(parallel) = self.parallel_tool_calls {
            request = request.parallel_tool_calls(parallel);
        }
        if let Some(format) = self.text.as_ref().and_then(|t| t.get("format")) {
            if let Some(format) = in_format(format)? {
                request = request.response_format(format);
            }
        }
        if let Some(reasoning) = self.reasoning.take() {
            if let Some(effort) = reasoning.get("effort").and_then(Value::as_str) {
                let effort = ReasoningEffort::parse(effort).ok_or_else(|| {
                    bad(
                        "reasoning.effort",
                        "must be one of none, minimal, low, medium, high, xhigh, max",
                    )
                })?;
                request = request.reasoning(ReasoningConfig::effort(effort));
            }
        }
        for (field, value) in std::mem::take(&mut self.rest) {
            request = request.extra(field, value);
        }
        echo.tools.retain(|t| !t.is_null());
        Ok((request, echo))
    }
}

/// The input items: messages, function calls (joined into the assistant turn before them)
/// and their outputs, reasoning (carried into the next assistant turn).
fn in_items(items: Vec<Value>, system: &mut Vec<String>) -> Result<Vec<Message>, ApiError> {
    let mut out: Vec<Message> = Vec::with_capacity(items.len());
    let mut reasoning: Vec<Reasoning> = Vec::new();
    // Whether the last message is an assistant turn the next function call may join.
    let mut open_assistant = false;
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("input[{i}]");
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        match kind {
            "message" => {
                allowed_keys(
                    &item,
                    &["type", "role", "content", "id", "status", "phase"],
                    &path,
                )?;
                let role = item
                    .get("role")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{path}.role"), "a message needs `role`"))?;
                let content = in_content(item.get("content"), &path)?;
                match role {
                    "system" | "developer" => {
                        if content.has_media() {
                            return Err(bad(
                                format!("{path}.content"),
                                "a system message takes text only",
                            ));
                        }
                        system.push(content.text().into_owned());
                        open_assistant = false;
                    }
                    "user" => {
                        out.push(Message::user(content));
                        open_assistant = false;
                    }
                    "assistant" => {
                        out.push(
                            Message::assistant(content)
                                .with_reasoning(std::mem::take(&mut reasoning)),
                        );
                        open_assistant = true;
                    }
                    other => {
                        return Err(bad(
                            format!("{path}.role"),
                            format!(
                                "role {other:?} is not supported (system, developer, user, assistant)"
                            ),
                        ));
                    }
                }
            }
            "function_call" => {
                allowed_keys(
                    &item,
                    &["type", "call_id", "name", "arguments", "id", "status"],
                    &path,
                )?;
                let field = |key: &str| {
                    item.get(key).and_then(Value::as_str).ok_or_else(|| {
                        bad(
                            format!("{path}.{key}"),
                            format!("a function call needs `{key}`"),
                        )
                    })
                };
                let (id, signature) = split_signature(field("call_id")?);
                let mut call = ToolCall::new(id, field("name")?, field("arguments")?);
                call.signature = signature;
                match out.last_mut() {
                    Some(last) if open_assistant => last.tool_calls.push(call),
                    _ => {
                        out.push(
                            Message::assistant(Content::default())
                                .with_tool_calls(vec![call])
                                .with_reasoning(std::mem::take(&mut reasoning)),
                        );
                        open_assistant = true;
                    }
                }
            }
            "function_call_output" => {
                allowed_keys(&item, &["type", "call_id", "output", "id", "status"], &path)?;
                let (id, _) = split_signature(
                    item.get("call_id").and_then(Value::as_str).ok_or_else(|| {
                        bad(
                            format!("{path}.call_id"),
                            "a function call output needs `call_id`",
                        )
                    })?,
                );
                let content = in_content(item.get("output"), &path)?;
                out.push(Message::tool_result(id, content));
                open_assistant = false;
            }
            "reasoning" => {
                // NOTE: `content` (the reasoning text OpenAI's own models show) is context the
                // model wrote, not an instruction: the summary and signature are what go back.
                allowed_keys(
                    &item,
                    &[
                        "type",
                        "id",
                        "summary",
                        "encrypted_content",
                        "content",
                        "status",
                    ],
                    &path,
                )?;
                reasoning.push(in_reasoning(&item));
                open_assistant = false;
            }
            "item_reference" => {
                return Err(bad(
                    format!("{path}.type"),
                    "item references need responses stored by the server, and this gateway is stateless: send the items themselves",
                ));
            }
            other => {
                return Err(bad(
                    format!("{path}.type"),
                    format!(
                        "items of type {other:?} are not supported by this gateway (message, function_call, function_call_output, reasoning)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// A reasoning item sent back: its summary text, and the signature the gateway put in its
/// `encrypted_content`.
fn in_reasoning(item: &Value) -> Reasoning {
    let text: String = item
        .get("summary")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let mut r = Reasoning::text(text);
    if let Some(sealed) = item.get("encrypted_content").and_then(Value::as_str) {
        if let Some(signature) = sealed.strip_prefix(SIGNED) {
            r.signature = Some(signature.to_owned());
            r.format = Some(Reasoning::ANTHROPIC.to_owned());
        } else if let Some(data) = sealed.strip_prefix(REDACTED) {
            r.redacted = Some(data.to_owned());
            r.format = Some(Reasoning::ANTHROPIC.to_owned());
        }
    }
    r
}

/// A message's `content` or a call's `output`: a string or input parts.
fn in_content(content: Option<&Value>, path: &str) -> Result<Content, ApiError> {
    let parts = match content {
        None | Some(Value::Null) => return Ok(Content::default()),
        Some(Value::String(text)) => return Ok(Content::Text(text.clone())),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(bad(
                format!("{path}.content"),
                "must be a string or an array of parts",
            ));
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let path = format!("{path}.content[{j}]");
        let text_of = |key: &str| {
            part.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(path.clone(), format!("this part needs `{key}`")))
        };
        let allowed: &[&str] = match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "text") => &["type", "text"],
            // Annotations and logprobs of an earlier answer are what it showed, not input.
            Some("output_text") => &["type", "text", "annotations", "logprobs"],
            Some("refusal") => &["type", "refusal"],
            Some("input_image") => &["type", "image_url", "file_id", "detail"],
            Some("input_file") => &["type", "file_data", "file_id", "file_url", "filename"],
            _ => &["type"],
        };
        allowed_keys(part, allowed, &path)?;
        match part.get("type").and_then(Value::as_str) {
            Some("input_text" | "output_text" | "text") => out.push(Part::Text(text_of("text")?)),
            Some("refusal") => out.push(Part::Text(text_of("refusal")?)),
            Some("input_image") => {
                if part.get("file_id").is_some_and(|v| !v.is_null()) {
                    return Err(bad(
                        format!("{path}.file_id"),
                        "`file_id` refers to a file stored at OpenAI, which the gateway cannot send elsewhere: send `image_url`",
                    ));
                }
                let mut media = Media::from_url(&text_of("image_url")?);
                if let Some(detail) = part.get("detail").and_then(Value::as_str) {
                    media = media.detail(detail);
                }
                out.push(Part::Image(media));
            }
            Some("input_file") => {
                if part.get("file_id").is_some_and(|v| !v.is_null()) {
                    return Err(bad(
                        format!("{path}.file_id"),
                        "`file_id` refers to a file stored at OpenAI, which the gateway cannot send elsewhere: send `file_data`",
                    ));
                }
                let mut media = match (
                    part.get("file_data").and_then(Value::as_str),
                    part.get("file_url").and_then(Value::as_str),
                ) {
                    (Some(data), _) => Media::from_url(data),
                    (None, Some(url)) => Media::url(url),
                    (None, None) => {
                        return Err(bad(
                            path,
                            "an input_file part needs `file_data` or `file_url`",
                        ));
                    }
                };
                if let Some(name) = part.get("filename").and_then(Value::as_str) {
                    media = media.filename(name);
                }
                if media.media_type.is_none() {
                    media.media_type = Some("application/pdf".into());
                }
                out.push(Part::Document(media));
            }
            Some(other) => {
                return Err(bad(
                    path,
                    format!(
                        "content parts of type {other:?} are not supported by this gateway (input_text, input_image, input_file, output_text, refusal)"
                    ),
                ));
            }
            None => return Err(bad(path, "a content part needs `type`")),
        }
    }
    Ok(Content::Parts(out))
}

fn in_tool(tool: &Value, i: usize) -> Result<Tool, ApiError> {
    let path = format!("tools[{i}]");
    match tool.get("type").and_then(Value::as_str) {
        Some("function") => {}
        other => {
            return Err(bad(
                format!("{path}.type"),
                format!(
                    "only function tools are supported: built-in tools ({other:?}) run at OpenAI and cannot be routed"
                ),
            ));
        }
    }
    function_tool(tool, &path, "parameters", false)
}

fn in_tool_choice(choice: &Value) -> Result<ToolChoice, ApiError> {
    match (
        choice.as_str(),
        choice.get("type").and_then(Value::as_str),
        choice.get("name").and_then(Value::as_str),
    ) {
        (Some("auto"), ..) => Ok(ToolChoice::Auto),
        (Some("none"), ..) => Ok(ToolChoice::None),
        (Some("required"), ..) => Ok(ToolChoice::Required),
        (None, Some("function"), Some(name)) => Ok(ToolChoice::Tool(name.to_owned())),
        _ => Err(bad(
            "tool_choice",
            "`tool_choice` must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"name\": …}",
        )),
    }
}

/// `text.format`: text, some JSON object, or JSON following a schema (flat in `format`).
fn in_format(format: &Value) -> Result<Option<ResponseFormat>, ApiError> {
    match format.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let name = format
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad("text.format.name", "a json_schema format needs a `name`"))?;
            let schema = format
                .get("schema")
                .filter(|s| s.is_object())
                .cloned()
                .ok_or_else(|| bad("text.format.schema", "a json_schema format needs `schema`"))?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: name.to_owned(),
                description: format
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                schema,
                strict: format.get("strict").and_then(Value::as_bool),
            }))
        }
        Some(other) => Err(bad(
            "text.format.type",
            format!("must be text, json_object or json_schema (got {other:?})"),
        )),
    }
}

/// `usage` as the Responses API writes it (every details object present: the SDK reads
/// through them).
fn usage_json(usage: Option<Usage>) -> Value {
    let usage = usage.unwrap_or_default();
    json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": { "cached_tokens": usage.cached_input_tokens },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": { "reasoning_tokens": usage.reasoning_tokens },
        "total_tokens": usage.total_tokens,
    })
}

/// The status and `incomplete_details` a finish reason makes.
fn status_of(reason: Option<&FinishReason>) -> (&'static str, Value) {
    match reason {
        Some(FinishReason::Length | FinishReason::ContextWindow) => {
            ("incomplete", json!({"reason": "max_output_tokens"}))
        }
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

fn sealed(r: &Reasoning) -> Option<String> {
    match (&r.redacted, &r.signature) {
        (Some(data), _) => Some(format!("{REDACTED}{data}")),
        (None, Some(signature)) if r.is_anthropic() => Some(format!("{SIGNED}{signature}")),
        _ => None,
    }
}

fn reasoning_item(id: &str, text: &str, sealed: Option<String>) -> Value {
    let summary = if text.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": text}])
    };
    let mut item = json!({"type": "reasoning", "id": id, "summary": summary});
    if let Some(sealed) = sealed {
        item["encrypted_content"] = sealed.into();
    }
    item
}

fn message_item(id: &str, status: &str, content: Value) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": content})
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

/// A response object: the request's echo, `status`, `output` and `usage`.
fn response_object(
    id: &str,
    created_at: u64,
    model: &str,
    echo: &Echo,
    (status, incomplete): (&str, Value),
    output: Vec<Value>,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": (status != "in_progress").then(unix_now),
        "error": null,
        "incomplete_details": incomplete,
        "instructions": echo.instructions,
        "max_output_tokens": echo.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": echo.parallel_tool_calls,
        "previous_response_id": null,
        "reasoning": echo.reasoning,
        "store": false,
        "temperature": echo.temperature,
        "text": echo.text,
        "tool_choice": echo.tool_choice,
        "tools": echo.tools,
        "top_p": echo.top_p,
        "truncation": "disabled",
        "usage": usage,
        "user": echo.user,
        "metadata": echo.metadata,
    })
}

/// A `response` object for `answer`.
pub(crate) fn response(id: &str, echo: &Echo, answer: &ChatResponse) -> Value {
    let mut output = Vec::new();
    for (i, r) in answer.reasoning.iter().enumerate() {
        output.push(reasoning_item(&format!("rs_{id}_{i}"), &r.text, sealed(r)));
    }
    let mut content = Vec::new();
    if !answer.text.is_empty() {
        content.push(text_part(&answer.text));
    }
    if let Some(refusal) = &answer.refusal {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    if !content.is_empty() || answer.tool_calls.is_empty() {
        output.push(message_item(
            &format!("msg_{id}"),
            "completed",
            content.into(),
        ));
    }
    for (i, call) in answer.tool_calls.iter().enumerate() {
        output.push(call_item(
            &format!("fc_{id}_{i}"),
            &out_call_id(&call.id, call.signature.as_deref()),
            &call.name,
            &call.arguments,
            "completed",
        ));
    }
    response_object(
        &format!("resp_{id}"),
        unix_now(),
        &answer.model,
        echo,
        status_of(answer.finish_reason.as_ref()),
        output,
        usage_json(answer.usage),
    )
}

/// The output item being streamed.
enum Item {
    Reasoning {
        index: u32,
        text: String,
        sealed: Option<String>,
    },
    Text(String),
    Refusal(String),
    Call {
        index: u32,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// One typed event: its `type` (also the SSE event name) and its JSON.
pub(crate) type TypedEvent = (&'static str, Value);

/// Turns a stream's chunks into the Responses API's typed events, each with its
/// `sequence_number`: `response.created`, `response.in_progress`, per output item
/// `output_item.added`, its parts and deltas, `output_item.done`, and
/// `response.completed` (or `.incomplete`).
pub(crate) struct ResponseEvents {
    id: String,
    created_at: u64,
    echo: Echo,
    sequence: u64,
    started: bool,
    open: Option<Item>,
    done: Vec<Value>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl ResponseEvents {
    pub(crate) fn new(id: String, echo: Echo) -> ResponseEvents {
        ResponseEvents {
            id,
            created_at: unix_now(),
            echo,
            sequence: 0,
            started: false,
            open: None,
            done: Vec::new(),
            finish: None,
            usage: None,
        }
    }

    fn push(&mut self, out: &mut Vec<TypedEvent>, kind: &'static str, mut event: Value) {
        event["type"] = kind.into();
        event["sequence_number"] = self.sequence.into();
        self.sequence += 1;
        out.push((kind, event));
    }

    fn item_id(&self) -> String {
        format!("{}_{}", self.id, self.done.len())
    }

    fn object(&self, model: &str, status: &str, incomplete: Value, usage: Value) -> Value {
        response_object(
            &format!("resp_{}", self.id),
            self.created_at,
            model,
            &self.echo,
            (status, incomplete),
            self.done.clone(),
            usage,
        )
    }

    fn start(&mut self, model: &str, out: &mut Vec<TypedEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.object(model, "in_progress", Value::Null, Value::Null);
        self.push(out, "response.created", json!({"response": response}));
        let response = self.object(model, "in_progress", Value::Null, Value::Null);
        self.push(out, "response.in_progress", json!({"response": response}));
    }

    /// Closes the open item: its closing events, and the item into the output.
    fn close(&mut self, out: &mut Vec<TypedEvent>) {
        let Some(item) = self.open.take() else {
            return;
        };
        let output_index = self.done.len();
        let item_id = self.item_id();
        let whole = match item {
            Item::Reasoning { text, sealed, .. } => {
                let id = format!("rs_{item_id}");
                if !text.is_empty() {
                    self.push(
                        out,
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0, "text": text}),
                    );
                    self.push(
                        out,
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": text}}),
                    );
                }
                reasoning_item(&id, &text, sealed)
            }
            Item::Text(text) => {
                let id = format!("msg_{item_id}");
                let at = json!({"item_id": id, "output_index": output_index, "content_index": 0});
                let mut done = at.clone();
                done["text"] = text.as_str().into();
                done["logprobs"] = json!([]);
                self.push(out, "response.output_text.done", done);
                let mut part = at;
                part["part"] = text_part(&text);
                self.push(out, "response.content_part.done", part);
                message_item(&id, "completed", json!([text_part(&text)]))
            }
            Item::Refusal(refusal) => {
                let id = format!("msg_{item_id}");
                let at = json!({"item_id": id, "output_index": output_index, "content_index": 0});
                let mut done = at.clone();
                done["refusal"] = refusal.as_str().into();
                self.push(out, "response.refusal.done", done);
                let whole_part = json!({"type": "refusal", "refusal": refusal});
                let mut part = at;
                part["part"] = whole_part.clone();
                self.push(out, "response.content_part.done", part);
                message_item(&id, "completed", json!([whole_part]))
            }
            Item::Call {
                call_id,
                name,
                arguments,
                ..
            } => {
                let id = format!("fc_{item_id}");
                self.push(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": output_index, "name": name, "arguments": arguments}),
                );
                call_item(&id, &call_id, &name, &arguments, "completed")
            }
        };
        self.push(
            out,
            "response.output_item.done",
            json!({"output_index": output_index, "item": whole}),
        );
        self.done.push(whole);
    }

    /// Opens an item, closing the one before: its `output_item.added` and first part.
    fn open(&mut self, item: Item, out: &mut Vec<TypedEvent>) {
        self.close(out);
        let output_index = self.done.len();
        let item_id = self.item_id();
        match &item {
            Item::Reasoning { .. } => {
                let id = format!("rs_{item_id}");
                self.push(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": reasoning_item(&id, "", None)}),
                );
                self.push(
                    out,
                    "response.reasoning_summary_part.added",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                           "part": {"type": "summary_text", "text": ""}}),
                );
            }
            Item::Text(_) | Item::Refusal(_) => {
                let id = format!("msg_{item_id}");
                self.push(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": message_item(&id, "in_progress", json!([]))}),
                );
                let part = match item {
                    Item::Text(_) => text_part(""),
                    _ => json!({"type": "refusal", "refusal": ""}),
                };
                self.push(
                    out,
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": output_index, "content_index": 0, "part": part}),
                );
            }
            Item::Call { call_id, name, .. } => {
                let id = format!("fc_{item_id}");
                let added = call_item(&id, call_id, name, "", "in_progress");
                self.push(
                    out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": added}),
                );
            }
        }
        self.open = Some(item);
    }

    /// The events for one chunk.
    pub(crate) fn chunk(&mut self, model: &str, chunk: &ChatChunk) -> Vec<TypedEvent> {
        let mut out = Vec::with_capacity(2);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        self.start(model, &mut out);
        if let Some(r) = &chunk.reasoning {
            let same =
                matches!(&self.open, Some(Item::Reasoning { index, .. }) if *index == r.index);
            if !same {
                self.open(
                    Item::Reasoning {
                        index: r.index,
                        text: String::new(),
                        sealed: None,
                    },
                    &mut out,
                );
            }
            if !r.text.is_empty() {
                let output_index = self.done.len();
                let id = format!("rs_{}", self.item_id());
                self.push(
                    &mut out,
                    "response.reasoning_summary_text.delta",
                    json!({"item_id": id, "output_index": output_index, "summary_index": 0, "delta": r.text}),
                );
            }
            if let Some(Item::Reasoning { text, sealed, .. }) = &mut self.open {
                text.push_str(&r.text);
                let mut whole = Reasoning::text("");
                whole.signature.clone_from(&r.signature);
                whole.redacted.clone_from(&r.redacted);
                whole.format.clone_from(&r.format);
                if let Some(s) = self::sealed(&whole) {
                    *sealed = Some(s);
                }
            }
        }
        if !chunk.delta.is_empty() {
            if !matches!(self.open, Some(Item::Text(_))) {
                self.open(Item::Text(String::new()), &mut out);
            }
            let output_index = self.done.len();
            let id = format!("msg_{}", self.item_id());
            self.push(
                &mut out,
                "response.output_text.delta",
                json!({"item_id": id, "output_index": output_index, "content_index": 0,
                       "delta": chunk.delta, "logprobs": []}),
            );
            if let Some(Item::Text(text)) = &mut self.open {
                text.push_str(&chunk.delta);
            }
        }
        if let Some(refusal) = chunk.refusal.as_ref().filter(|r| !r.is_empty()) {
            if !matches!(self.open, Some(Item::Refusal(_))) {
                self.open(Item::Refusal(String::new()), &mut out);
            }
            let output_index = self.done.len();
            let id = format!("msg_{}", self.item_id());
            self.push(
                &mut out,
                "response.refusal.delta",
                json!({"item_id": id, "output_index": output_index, "content_index": 0, "delta": refusal}),
            );
            if let Some(Item::Refusal(text)) = &mut self.open {
                text.push_str(refusal);
            }
        }
        for piece in &chunk.tool_calls {
            let same =
                matches!(&self.open, Some(Item::Call { index, .. }) if *index == piece.index);
            if !same {
                let call_id = piece.id.as_deref().map_or_else(
                    || format!("call_gw{}", piece.index),
                    |id| out_call_id(id, piece.signature.as_deref()),
                );
                self.open(
                    Item::Call {
                        index: piece.index,
                        call_id,
                        name: piece.name.clone().unwrap_or_default(),
                        arguments: String::new(),
                    },
                    &mut out,
                );
            }
            if !piece.arguments.is_empty() {
                let output_index = self.done.len();
                let id = format!("fc_{}", self.item_id());
                self.push(
                    &mut out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": output_index, "delta": piece.arguments}),
                );
                if let Some(Item::Call { arguments, .. }) = &mut self.open {
                    arguments.push_str(&piece.arguments);
                }
            }
        }
        if chunk.finish_reason.is_some() {
            self.finish.clone_from(&chunk.finish_reason);
        }
        out
    }

    /// The closing events: the open item's, then `response.completed` (or
    /// `response.incomplete` when the answer was cut by its token limit or a filter).
    pub(crate) fn finish(&mut self, model: &str) -> Vec<TypedEvent> {
        let mut out = Vec::with_capacity(4);
        self.start(model, &mut out);
        self.close(&mut out);
        let (status, incomplete) = status_of(self.finish.as_ref());
        let response = self.object(model, status, incomplete, usage_json(self.usage));
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.push(&mut out, kind, json!({"response": response}));
        out
    }

    /// A failure after the stream began: `response.failed`, then an `error` event in both
    /// shapes clients read (flat as documented, nested as the live API sends it).
    pub(crate) fn fail(&mut self, model: &str, err: &ApiError) -> Vec<TypedEvent> {
        let mut out = Vec::with_capacity(3);
        self.start(model, &mut out);
        let code = err.code.clone().unwrap_or_else(|| "server_error".into());
        let mut response = self.object(model, "failed", Value::Null, usage_json(self.usage));
        response["error"] = json!({"code": code, "message": err.message});
        self.push(&mut out, "response.failed", json!({"response": response}));
        self.push(
            &mut out,
            "error",
            json!({
                "code": code,
                "message": err.message,
                "param": err.param,
                "error": {"type": err.kind, "code": code, "message": err.message, "param": err.param},
            }),
        );
        out
    }
}
