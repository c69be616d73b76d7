//! The request body each provider reads: the conversation (parts, tool calls and results,
//! reasoning to send back), tools, structured output, reasoning and sampling, translated
//! exactly — or a classified error before the call when the target cannot honour something
//! the request asks for (`docs/conversations.md`).

use std::collections::HashMap;

use llm_core::{ErrorKind, LlmError};
use serde_json::{Map, Value, json};

use crate::conversation::{
    Content, Media, MediaSource, Part, ReasoningConfig, ReasoningEffort, ResponseFormat, ToolCall,
    ToolChoice,
};
use crate::kind::ProviderKind;
use crate::types::{ChatRequest, Message, Role};

/// Anthropic requires `max_tokens`; this is what we send when the request has none.
pub(crate) const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

/// Gemini's documented signature for function calls whose history has none (calls made by
/// another provider), so that Gemini 3 accepts them.
const GEMINI_SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

/// The most tokens a thinking budget derived from an effort level gets (OpenRouter's
/// documented cap).
const MAX_DERIVED_BUDGET: f64 = 128_000.0;

/// Anthropic's smallest thinking budget.
const ANTHROPIC_MIN_BUDGET: u32 = 1024;

type Built<T> = Result<T, LlmError>;

/// The error for a feature `kind` cannot honour: the request is not sent, and a fallback
/// chain moves on to a target that can.
pub(crate) fn unsupported(kind: ProviderKind, feature: &str) -> LlmError {
    LlmError::new(
        ErrorKind::Unsupported,
        format!("{} cannot honour {feature}", kind.name()),
    )
    .with_provider(kind.name())
}

fn invalid(kind: ProviderKind, what: String) -> LlmError {
    LlmError::new(ErrorKind::InvalidRequest, what).with_provider(kind.name())
}

fn merge_extras(body: &mut Map<String, Value>, req: &ChatRequest) {
    if let Some(extras) = req.extras() {
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

/// Seed and penalties under a provider's names, or an error naming the first one `kind`
/// lacks (`None` for a name).
fn seed_and_penalties(
    kind: ProviderKind,
    map: &mut Map<String, Value>,
    req: &ChatRequest,
    names: [Option<&str>; 3],
) -> Built<()> {
    let fields = [
        ("seed", req.seed_value().map(Value::from)),
        ("presence_penalty", decimal(req.presence_penalty_value())),
        ("frequency_penalty", decimal(req.frequency_penalty_value())),
    ];
    for ((field, value), name) in fields.into_iter().zip(names) {
        if let Some(value) = value {
            let name = name.ok_or_else(|| unsupported(kind, &format!("`{field}`")))?;
            map.insert(name.to_owned(), value);
        }
    }
    Ok(())
}

/// The JSON body for `req` (the URL is built by the provider), or why `kind` cannot take it.
pub(crate) fn request_body(kind: ProviderKind, req: &ChatRequest, stream: bool) -> Built<Value> {
    let mut body = match kind {
        ProviderKind::OpenAi
        | ProviderKind::Azure
        | ProviderKind::OpenRouter
        | ProviderKind::OpenAiCompatible => openai_body(kind, req, stream)?,
        ProviderKind::Anthropic => anthropic_body(req, stream)?,
        ProviderKind::Gemini => gemini_body(req)?,
        ProviderKind::Ollama => ollama_body(req, stream)?,
    };
    merge_extras(&mut body, req);
    Ok(Value::Object(body))
}

/// The names of the tools called in `req`, by call id: the tool results of Gemini and Ollama
/// name the tool, OpenAI's only the call.
fn call_names(req: &ChatRequest) -> HashMap<&str, &str> {
    req.messages()
        .iter()
        .flat_map(|m| &m.tool_calls)
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect()
}

/// The name of the tool whose result `m` is.
fn result_name<'a>(
    kind: ProviderKind,
    m: &'a Message,
    names: &HashMap<&str, &'a str>,
) -> Built<&'a str> {
    if let Some(name) = &m.name {
        return Ok(name);
    }
    let id = m.tool_call_id.as_deref().unwrap_or_default();
    names.get(id).copied().ok_or_else(|| {
        invalid(
            kind,
            format!("the tool result for call {id:?} answers no tool call of the conversation"),
        )
    })
}

/// A tool result's text, with its failure said in words where the format has no flag.
fn result_text(m: &Message) -> String {
    let text = m.content.text();
    if m.is_error {
        format!("Error: {text}")
    } else {
        text.into_owned()
    }
}

fn arguments_object(kind: ProviderKind, call: &ToolCall) -> Built<Map<String, Value>> {
    call.arguments_object().ok_or_else(|| {
        invalid(
            kind,
            format!(
                "the arguments of tool call {:?} ({}) are not a JSON object, which {} needs",
                call.id,
                call.name,
                kind.name()
            ),
        )
    })
}

// ---------------------------------------------------------------------------------------
// OpenAI, Azure OpenAI, OpenRouter, OpenAI-compatible servers

/// The tools in OpenAI's `{"type": "function", "function": …}` form (Ollama's too, which
/// has no `strict`).
fn function_tools(req: &ChatRequest, with_strict: bool) -> Value {
    req.tool_list()
        .iter()
        .map(|t| {
            let mut function = Map::new();
            function.insert("name".into(), t.name.clone().into());
            put(&mut function, "description", t.description.clone());
            put(&mut function, "parameters", t.parameters.clone());
            if with_strict {
                put(&mut function, "strict", t.strict);
            }
            json!({"type": "function", "function": function})
        })
        .collect()
}

fn openai_content(kind: ProviderKind, content: &Content) -> Built<Value> {
    let parts = match content {
        Content::Text(text) => return Ok(Value::from(text.as_str())),
        Content::Parts(parts) => parts,
    };
    parts
        .iter()
        .map(|part| {
            Ok(match part {
                Part::Text(text) => json!({"type": "text", "text": text}),
                Part::Image(media) => {
                    let mut image = Map::new();
                    image.insert("url".into(), media.to_url().into());
                    put(&mut image, "detail", media.detail.clone());
                    json!({"type": "image_url", "image_url": image})
                }
                Part::Document(media) => {
                    if matches!(media.source, MediaSource::Url(_))
                        && kind != ProviderKind::OpenRouter
                    {
                        return Err(unsupported(kind, "a document by URL"));
                    }
                    let mut file = Map::new();
                    file.insert("file_data".into(), media.to_url().into());
                    put(&mut file, "filename", media.filename.clone());
                    json!({"type": "file", "file": file})
                }
            })
        })
        .collect::<Built<Vec<_>>>()
        .map(Value::Array)
}

fn openai_message(kind: ProviderKind, m: &Message) -> Built<Value> {
    let mut out = Map::new();
    out.insert("role".into(), m.role.as_str().into());
    match m.role {
        Role::Tool => {
            out.insert(
                "tool_call_id".into(),
                m.tool_call_id.clone().unwrap_or_default().into(),
            );
            out.insert("content".into(), result_text(m).into());
            return Ok(Value::Object(out));
        }
        Role::Assistant if !m.tool_calls.is_empty() => {
            // NOTE: `content` is null when the turn only calls tools; an empty string would
            // be an empty assistant message in the history.
            let content = if m.content.is_empty() {
                Value::Null
            } else {
                openai_content(kind, &m.content)?
            };
            out.insert("content".into(), content);
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect::<Vec<_>>();
            out.insert("tool_calls".into(), calls.into());
        }
        _ => {
            out.insert("content".into(), openai_content(kind, &m.content)?);
        }
    }
    put(&mut out, "name", m.name.clone());
    if m.role == Role::Assistant && !m.reasoning.is_empty() {
        openai_reasoning_back(kind, m, &mut out);
    }
    Ok(Value::Object(out))
}

/// An assistant turn's reasoning, sent back where the upstream reads it: OpenRouter's
/// `reasoning_details` (with signatures) and DeepSeek-style servers' `reasoning_content`
/// (required on tool-call turns). OpenAI and Azure take none.
fn openai_reasoning_back(kind: ProviderKind, m: &Message, out: &mut Map<String, Value>) {
    let text: String = m.reasoning.iter().map(|r| r.text.as_str()).collect();
    match kind {
        ProviderKind::OpenRouter => {
            let details: Vec<Value> = m
                .reasoning
                .iter()
                .enumerate()
                .map(|(index, r)| {
                    let mut d = Map::new();
                    if let Some(data) = &r.redacted {
                        d.insert("type".into(), "reasoning.encrypted".into());
                        d.insert("data".into(), data.clone().into());
                    } else {
                        d.insert("type".into(), "reasoning.text".into());
                        d.insert("text".into(), r.text.clone().into());
                        put(&mut d, "signature", r.signature.clone());
                    }
                    put(&mut d, "format", r.format.clone());
                    d.insert("index".into(), index.into());
                    Value::Object(d)
                })
                .collect();
            out.insert("reasoning_details".into(), details.into());
            if !text.is_empty() {
                out.insert("reasoning".into(), text.into());
            }
        }
        ProviderKind::OpenAiCompatible if !text.is_empty() => {
            out.insert("reasoning_content".into(), text.into());
        }
        _ => {}
    }
}

fn openai_body(kind: ProviderKind, req: &ChatRequest, stream: bool) -> Built<Map<String, Value>> {
    let mut body = Map::new();
    if kind != ProviderKind::Azure {
        body.insert("model".into(), req.model().into());
    }
    let mut messages = Vec::with_capacity(req.messages().len() + 1);
    if let Some(system) = req.system_prompt() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in req.messages() {
        messages.push(openai_message(kind, m)?);
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
    seed_and_penalties(
        kind,
        &mut body,
        req,
        [
            Some("seed"),
            Some("presence_penalty"),
            Some("frequency_penalty"),
        ],
    )?;
    put(&mut body, "user", req.end_user_value());
    if !req.tool_list().is_empty() {
        body.insert("tools".into(), function_tools(req, true));
    }
    if let Some(choice) = req.tool_choice_value() {
        let choice = match choice {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        body.insert("tool_choice".into(), choice);
    }
    put(
        &mut body,
        "parallel_tool_calls",
        req.parallel_tool_calls_value(),
    );
    if let Some(format) = req.response_format_value() {
        let format = match format {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            } => {
                let mut inner = Map::new();
                inner.insert("name".into(), name.clone().into());
                put(&mut inner, "description", description.clone());
                inner.insert("schema".into(), schema.clone());
                put(&mut inner, "strict", *strict);
                json!({"type": "json_schema", "json_schema": inner})
            }
        };
        body.insert("response_format".into(), format);
    }
    if let Some(reasoning) = req.reasoning_value() {
        match (kind, reasoning) {
            (
                ProviderKind::OpenRouter,
                ReasoningConfig {
                    budget_tokens: Some(budget),
                    ..
                },
            ) => {
                body.insert("reasoning".into(), json!({"max_tokens": budget}));
            }
            (
                ProviderKind::OpenRouter,
                ReasoningConfig {
                    effort: Some(effort),
                    ..
                },
            ) => {
                body.insert("reasoning".into(), json!({"effort": effort.as_str()}));
            }
            (
                _,
                ReasoningConfig {
                    effort: Some(effort),
                    ..
                },
            ) => {
                body.insert("reasoning_effort".into(), effort.as_str().into());
            }
            (
                _,
                ReasoningConfig {
                    budget_tokens: Some(_),
                    ..
                },
            ) => {
                return Err(unsupported(
                    kind,
                    "a reasoning budget in tokens (it takes an effort level)",
                ));
            }
            _ => {}
        }
    }
    if stream {
        body.insert("stream".into(), true.into());
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------
// Anthropic Messages

fn anthropic_media(kind: ProviderKind, media: &Media, block: &str) -> Built<Value> {
    let source = match &media.source {
        MediaSource::Url(url) => json!({"type": "url", "url": url}),
        MediaSource::Base64(data) => {
            let media_type = media.media_type.as_deref().ok_or_else(|| {
                unsupported(kind, &format!("an inline {block} without a media type"))
            })?;
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
    };
    Ok(json!({"type": block, "source": source}))
}

fn anthropic_blocks(content: &Content, out: &mut Vec<Value>) -> Built<()> {
    let kind = ProviderKind::Anthropic;
    match content {
        Content::Text(text) if text.is_empty() => {}
        Content::Text(text) => out.push(json!({"type": "text", "text": text})),
        Content::Parts(parts) => {
            for part in parts {
                out.push(match part {
                    Part::Text(text) => json!({"type": "text", "text": text}),
                    Part::Image(media) => anthropic_media(kind, media, "image")?,
                    Part::Document(media) => anthropic_media(kind, media, "document")?,
                });
            }
        }
    }
    Ok(())
}

/// Whether `blocks` are tool results only (so the next tool result or user text joins them).
fn only_tool_results(blocks: &[Value]) -> bool {
    !blocks.is_empty() && blocks.iter().all(|b| b["type"] == "tool_result")
}

fn anthropic_body(req: &ChatRequest, stream: bool) -> Built<Map<String, Value>> {
    let kind = ProviderKind::Anthropic;
    // `system` is top level; system-role messages join it (the API rejects them).
    let mut system: Vec<std::borrow::Cow<'_, str>> =
        req.system_prompt().map(Into::into).into_iter().collect();
    // (role, blocks); a plain-text turn stays a string, as the API shows it.
    let mut turns: Vec<(&'static str, Value)> = Vec::with_capacity(req.messages().len());
    for m in req.messages() {
        match m.role {
            Role::System => system.push(m.content.text()),
            Role::Tool => {
                let mut result = Map::new();
                result.insert("type".into(), "tool_result".into());
                result.insert(
                    "tool_use_id".into(),
                    m.tool_call_id.clone().unwrap_or_default().into(),
                );
                let mut blocks = Vec::new();
                anthropic_blocks(&m.content, &mut blocks)?;
                if !blocks.is_empty() {
                    result.insert("content".into(), blocks.into());
                }
                if m.is_error {
                    result.insert("is_error".into(), true.into());
                }
                // NOTE: every result of a turn goes in one user message, first, before any
                // text (Anthropic's adjacency rule).
                match turns.last_mut() {
                    Some(("user", Value::Array(blocks))) if only_tool_results(blocks) => {
                        blocks.push(Value::Object(result));
                    }
                    _ => turns.push(("user", Value::Array(vec![Value::Object(result)]))),
                }
            }
            Role::User => {
                if let Some(("user", Value::Array(blocks))) = turns.last_mut() {
                    if only_tool_results(blocks) {
                        anthropic_blocks(&m.content, blocks)?;
                        continue;
                    }
                }
                let content = match &m.content {
                    Content::Text(text) => Value::from(text.as_str()),
                    content @ Content::Parts(_) => {
                        let mut blocks = Vec::new();
                        anthropic_blocks(content, &mut blocks)?;
                        Value::Array(blocks)
                    }
                };
                turns.push(("user", content));
            }
            Role::Assistant => {
                let plain =
                    m.tool_calls.is_empty() && m.reasoning.iter().all(|r| !r.is_anthropic());
                if plain {
                    if let Content::Text(text) = &m.content {
                        turns.push(("assistant", Value::from(text.as_str())));
                        continue;
                    }
                }
                let mut blocks = Vec::new();
                // Thinking blocks first, unmodified; another provider's reasoning cannot be
                // verified by Anthropic and is left out.
                for r in m.reasoning.iter().filter(|r| r.is_anthropic()) {
                    blocks.push(match &r.redacted {
                        Some(data) => json!({"type": "redacted_thinking", "data": data}),
                        None => json!({"type": "thinking", "thinking": r.text,
                                       "signature": r.signature.clone().unwrap_or_default()}),
                    });
                }
                anthropic_blocks(&m.content, &mut blocks)?;
                for call in &m.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": call.id, "name": call.name,
                                       "input": arguments_object(kind, call)?}));
                }
                turns.push(("assistant", Value::Array(blocks)));
            }
        }
    }
    let messages: Vec<Value> = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    let mut body = Map::new();
    body.insert("model".into(), req.model().into());
    let max_tokens = req
        .max_tokens_limit()
        .unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS);
    body.insert("max_tokens".into(), max_tokens.into());
    if !system.is_empty() {
        body.insert("system".into(), system.join("\n\n").into());
    }
    body.insert("messages".into(), messages.into());
    sampling(
        &mut body,
        req,
        ["temperature", "top_p", "max_tokens", "stop_sequences"],
    );
    seed_and_penalties(kind, &mut body, req, [None, None, None])?;
    if let Some(user) = req.end_user_value() {
        body.insert("metadata".into(), json!({"user_id": user}));
    }
    if !req.tool_list().is_empty() {
        let tools: Vec<Value> = req
            .tool_list()
            .iter()
            .map(|t| {
                let mut tool = Map::new();
                tool.insert("name".into(), t.name.clone().into());
                put(&mut tool, "description", t.description.clone());
                let schema = t
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
                tool.insert("input_schema".into(), schema);
                put(&mut tool, "strict", t.strict);
                Value::Object(tool)
            })
            .collect();
        body.insert("tools".into(), tools.into());
    }
    let parallel = req.parallel_tool_calls_value();
    if req.tool_choice_value().is_some() || parallel == Some(false) {
        let mut choice = match req.tool_choice_value().unwrap_or(&ToolChoice::Auto) {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        if parallel == Some(false) && choice["type"] != "none" {
            choice["disable_parallel_tool_use"] = true.into();
        }
        body.insert("tool_choice".into(), choice);
    }
    match req.response_format_value() {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            return Err(unsupported(
                kind,
                "JSON output without a schema (`json_object`; give a `json_schema`)",
            ));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert(
                "output_config".into(),
                json!({"format": {"type": "json_schema", "schema": schema}}),
            );
        }
    }
    if let Some(reasoning) = req.reasoning_value() {
        let thinking = match reasoning {
            ReasoningConfig {
                budget_tokens: Some(budget),
                ..
            } => Some(budget),
            ReasoningConfig {
                effort: Some(ReasoningEffort::None),
                ..
            } => None,
            ReasoningConfig {
                effort: Some(effort),
                ..
            } => Some(derived_budget(effort, max_tokens).max(ANTHROPIC_MIN_BUDGET)),
            _ => None,
        };
        match thinking {
            Some(budget) if budget < ANTHROPIC_MIN_BUDGET || budget >= max_tokens => {
                return Err(unsupported(
                    kind,
                    &format!(
                        "a thinking budget of {budget} tokens with max_tokens {max_tokens} (the budget must be at least {ANTHROPIC_MIN_BUDGET} and below max_tokens)"
                    ),
                ));
            }
            Some(budget) => {
                body.insert(
                    "thinking".into(),
                    json!({"type": "enabled", "budget_tokens": budget}),
                );
            }
            None => {
                body.insert("thinking".into(), json!({"type": "disabled"}));
            }
        }
    }
    if stream {
        body.insert("stream".into(), true.into());
    }
    Ok(body)
}

/// A thinking budget for `effort` out of an output limit of `max_tokens`.
fn derived_budget(effort: ReasoningEffort, max_tokens: u32) -> u32 {
    let budget = (f64::from(max_tokens) * effort.budget_share()).min(MAX_DERIVED_BUDGET);
    // Bounded by MAX_DERIVED_BUDGET, so the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let budget = budget as u32;
    budget
}

// ---------------------------------------------------------------------------------------
// Gemini generateContent

fn gemini_parts(kind: ProviderKind, content: &Content, out: &mut Vec<Value>) -> Built<()> {
    let media = |media: &Media, what: &str| -> Built<Value> {
        Ok(match &media.source {
            MediaSource::Base64(data) => {
                let mime = media.media_type.as_deref().ok_or_else(|| {
                    unsupported(kind, &format!("an inline {what} without a media type"))
                })?;
                json!({"inlineData": {"mimeType": mime, "data": data}})
            }
            MediaSource::Url(url) => {
                let mut file = Map::new();
                put(&mut file, "mimeType", media.media_type.clone());
                file.insert("fileUri".into(), url.clone().into());
                json!({"fileData": file})
            }
        })
    };
    match content {
        Content::Text(text) if text.is_empty() => {}
        Content::Text(text) => out.push(json!({"text": text})),
        Content::Parts(parts) => {
            for part in parts {
                out.push(match part {
                    Part::Text(text) => json!({"text": text}),
                    Part::Image(m) => media(m, "image")?,
                    Part::Document(m) => media(m, "document")?,
                });
            }
        }
    }
    Ok(())
}

fn gemini_body(req: &ChatRequest) -> Built<Map<String, Value>> {
    let kind = ProviderKind::Gemini;
    let names = call_names(req);
    let mut system: Vec<std::borrow::Cow<'_, str>> =
        req.system_prompt().map(Into::into).into_iter().collect();
    let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::with_capacity(req.messages().len());
    for m in req.messages() {
        let (role, parts) = match m.role {
            Role::System => {
                system.push(m.content.text());
                continue;
            }
            Role::User => {
                let mut parts = Vec::new();
                gemini_parts(kind, &m.content, &mut parts)?;
                ("user", parts)
            }
            Role::Tool => {
                let name = result_name(kind, m, &names)?;
                let text = m.content.text();
                // A JSON result keeps its structure; Gemini reads `output` and `error`.
                let value = serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|_| Value::from(text.as_ref()));
                let key = if m.is_error { "error" } else { "output" };
                let mut response = Map::new();
                response.insert("name".into(), name.into());
                response.insert("response".into(), json!({ key: value }));
                if let Some(id) = &m.tool_call_id {
                    // Ids made up here for Gemini's id-less calls are not sent back.
                    if !id.starts_with(ToolCall::MADE_UP_PREFIX) {
                        response.insert("id".into(), id.clone().into());
                    }
                }
                ("user", vec![json!({"functionResponse": response})])
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                gemini_parts(kind, &m.content, &mut parts)?;
                let signed = m.tool_calls.iter().any(|c| c.signature.is_some());
                for (i, call) in m.tool_calls.iter().enumerate() {
                    let mut function = Map::new();
                    function.insert("name".into(), call.name.clone().into());
                    function.insert("args".into(), arguments_object(kind, call)?.into());
                    if call.has_provider_id() {
                        function.insert("id".into(), call.id.clone().into());
                    }
                    let mut part = Map::new();
                    part.insert("functionCall".into(), function.into());
                    match &call.signature {
                        Some(signature) => {
                            part.insert("thoughtSignature".into(), signature.clone().into());
                        }
                        // Calls from another provider's history: Gemini 3 wants a signature
                        // on the first call of the turn.
                        None if !signed && i == 0 => {
                            part.insert("thoughtSignature".into(), GEMINI_SKIP_SIGNATURE.into());
                        }
                        None => {}
                    }
                    parts.push(Value::Object(part));
                }
                ("model", parts)
            }
        };
        // Consecutive turns of one role join (tool results and the user text after them).
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut body = Map::new();
    if !system.is_empty() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system.join("\n\n")}]}),
        );
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    body.insert("contents".into(), contents.into());
    if req.end_user_value().is_some() {
        return Err(unsupported(kind, "`user`"));
    }
    if req.parallel_tool_calls_value() == Some(false) {
        return Err(unsupported(kind, "`parallel_tool_calls: false`"));
    }
    if !req.tool_list().is_empty() {
        let declarations: Vec<Value> = req
            .tool_list()
            .iter()
            .map(|t| {
                let mut declaration = Map::new();
                declaration.insert("name".into(), t.name.clone().into());
                put(&mut declaration, "description", t.description.clone());
                // NOTE: `parametersJsonSchema` takes JSON Schema as it is; `parameters` is an
                // OpenAPI subset that rejects `additionalProperties`, `$schema`, type arrays.
                put(
                    &mut declaration,
                    "parametersJsonSchema",
                    t.parameters.clone(),
                );
                Value::Object(declaration)
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    let strict = req.tool_list().iter().any(|t| t.strict == Some(true));
    let mode = match req.tool_choice_value() {
        Some(ToolChoice::Auto) | None if strict => Some(json!({"mode": "VALIDATED"})),
        Some(ToolChoice::Auto) => Some(json!({"mode": "AUTO"})),
        Some(ToolChoice::None) => Some(json!({"mode": "NONE"})),
        Some(ToolChoice::Required) => Some(json!({"mode": "ANY"})),
        Some(ToolChoice::Tool(name)) => {
            Some(json!({"mode": "ANY", "allowedFunctionNames": [name]}))
        }
        None => None,
    };
    if let Some(mode) = mode {
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": mode }),
        );
    }
    let mut config = Map::new();
    sampling(
        &mut config,
        req,
        ["temperature", "topP", "maxOutputTokens", "stopSequences"],
    );
    seed_and_penalties(
        kind,
        &mut config,
        req,
        [
            Some("seed"),
            Some("presencePenalty"),
            Some("frequencyPenalty"),
        ],
    )?;
    match req.response_format_value() {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            config.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            config.insert("responseMimeType".into(), "application/json".into());
            config.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if let Some(reasoning) = req.reasoning_value() {
        let thinking = match reasoning {
            ReasoningConfig {
                budget_tokens: Some(budget),
                ..
            } => json!({"thinkingBudget": budget, "includeThoughts": true}),
            ReasoningConfig {
                effort: Some(ReasoningEffort::None),
                ..
            } => json!({"thinkingBudget": 0}),
            ReasoningConfig {
                effort: Some(effort),
                ..
            } if req.model().contains("gemini-3") => {
                // Gemini 3 takes levels; 2.5 takes budgets (and a 400 for both).
                let level = match effort {
                    ReasoningEffort::Minimal => "MINIMAL",
                    ReasoningEffort::Low => "LOW",
                    ReasoningEffort::Medium => "MEDIUM",
                    _ => "HIGH",
                };
                json!({"thinkingLevel": level, "includeThoughts": true})
            }
            ReasoningConfig {
                effort: Some(effort),
                ..
            } => {
                let budget = derived_budget(effort, req.max_tokens_limit().unwrap_or(8192));
                json!({"thinkingBudget": budget, "includeThoughts": true})
            }
            _ => Value::Null,
        };
        if !thinking.is_null() {
            config.insert("thinkingConfig".into(), thinking);
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), config.into());
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------
// Ollama /api/chat

fn ollama_body(req: &ChatRequest, stream: bool) -> Built<Map<String, Value>> {
    let kind = ProviderKind::Ollama;
    let names = call_names(req);
    let mut messages = Vec::with_capacity(req.messages().len() + 1);
    if let Some(system) = req.system_prompt() {
        messages.push(json!({"role": "system", "content": system}));
    }
    for m in req.messages() {
        let mut out = Map::new();
        out.insert("role".into(), m.role.as_str().into());
        let mut images = Vec::new();
        let text = match &m.content {
            Content::Text(text) => std::borrow::Cow::Borrowed(text.as_str()),
            Content::Parts(parts) => {
                for part in parts {
                    match part {
                        Part::Text(_) => {}
                        Part::Image(Media {
                            source: MediaSource::Base64(data),
                            ..
                        }) => images.push(Value::from(data.as_str())),
                        Part::Image(_) => return Err(unsupported(kind, "an image by URL")),
                        Part::Document(_) => return Err(unsupported(kind, "a document")),
                    }
                }
                m.content.text()
            }
        };
        if m.role == Role::Tool {
            out.insert("content".into(), result_text(m).into());
            out.insert("tool_name".into(), result_name(kind, m, &names)?.into());
            put(&mut out, "tool_call_id", m.tool_call_id.clone());
        } else {
            out.insert("content".into(), text.into_owned().into());
        }
        if !images.is_empty() {
            out.insert("images".into(), images.into());
        }
        if !m.tool_calls.is_empty() {
            let calls = m
                .tool_calls
                .iter()
                .map(|c| {
                    let mut call = Map::new();
                    if c.has_provider_id() {
                        call.insert("id".into(), c.id.clone().into());
                    }
                    call.insert(
                        "function".into(),
                        json!({"name": c.name, "arguments": arguments_object(kind, c)?}),
                    );
                    Ok(Value::Object(call))
                })
                .collect::<Built<Vec<_>>>()?;
            out.insert("tool_calls".into(), calls.into());
        }
        if m.role == Role::Assistant && !m.reasoning.is_empty() {
            // Ollama's docs ask for the thinking back with the turn.
            let thinking: String = m.reasoning.iter().map(|r| r.text.as_str()).collect();
            out.insert("thinking".into(), thinking.into());
        }
        messages.push(Value::Object(out));
    }
    let mut body = Map::new();
    body.insert("model".into(), req.model().into());
    body.insert("messages".into(), messages.into());
    body.insert("stream".into(), stream.into());
    if req.end_user_value().is_some() {
        return Err(unsupported(kind, "`user`"));
    }
    match req.tool_choice_value() {
        None | Some(ToolChoice::Auto | ToolChoice::None) => {}
        Some(_) => return Err(unsupported(kind, "a required or named `tool_choice`")),
    }
    if req.parallel_tool_calls_value() == Some(false) {
        return Err(unsupported(kind, "`parallel_tool_calls: false`"));
    }
    let tools_off = req.tool_choice_value() == Some(&ToolChoice::None);
    if !req.tool_list().is_empty() && !tools_off {
        if req.tool_list().iter().any(|t| t.strict == Some(true)) {
            return Err(unsupported(kind, "strict tool schemas"));
        }
        body.insert("tools".into(), function_tools(req, false));
    }
    match req.response_format_value() {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body.insert("format".into(), "json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            body.insert("format".into(), schema.clone());
        }
    }
    if let Some(reasoning) = req.reasoning_value() {
        let think = match reasoning.effort {
            Some(ReasoningEffort::None) => Value::from(false),
            Some(ReasoningEffort::Minimal) => Value::from("low"),
            Some(ReasoningEffort::XHigh | ReasoningEffort::Max) => Value::from("max"),
            Some(effort) => Value::from(effort.as_str()),
            None => {
                return Err(unsupported(
                    kind,
                    "a reasoning budget in tokens (it takes a level)",
                ));
            }
        };
        body.insert("think".into(), think);
    }
    let mut options = Map::new();
    sampling(
        &mut options,
        req,
        ["temperature", "top_p", "num_predict", "stop"],
    );
    seed_and_penalties(
        kind,
        &mut options,
        req,
        [
            Some("seed"),
            Some("presence_penalty"),
            Some("frequency_penalty"),
        ],
    )?;
    if !options.is_empty() {
        body.insert("options".into(), options.into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Reasoning, Tool};

    /// A tool loop: the user asks, the model calls two tools (with reasoning), both answer,
    /// the user adds a word.
    fn tool_loop() -> ChatRequest {
        let calls = vec![
            ToolCall::new("call_a", "add", r#"{"a":2,"b":3}"#).signature("gsig"),
            ToolCall::new(format!("{}1", ToolCall::MADE_UP_PREFIX), "mul", "{}"),
        ];
        ChatRequest::new("m")
            .system("Be exact.")
            .user("2 and 3?")
            .message(
                Message::assistant("")
                    .with_tool_calls(calls)
                    .with_reasoning(vec![Reasoning::anthropic("Adding.", "asig")]),
            )
            .message(Message::tool_result("call_a", "5"))
            .message(
                Message::tool_result(format!("{}1", ToolCall::MADE_UP_PREFIX), "6")
                    .with_error(true),
            )
            .user("Thanks")
            .tools([Tool::new("add"), Tool::new("mul")])
    }

    fn body(kind: ProviderKind, req: &ChatRequest) -> Value {
        request_body(kind, req, false).unwrap()
    }

    #[test]
    fn openai_carries_tool_turns_as_documented() {
        let b = body(ProviderKind::OpenAi, &tool_loop());
        assert_eq!(
            b["messages"][2],
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2,\"b\":3}"}},
                {"id": "call_llmtower_1", "type": "function", "function": {"name": "mul", "arguments": "{}"}}]})
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_a", "content": "5"})
        );
        assert_eq!(b["messages"][4]["content"], "Error: 6");
        assert_eq!(
            b["tools"][0],
            json!({"type": "function", "function": {"name": "add"}})
        );
        // OpenRouter gets the reasoning back with its signature.
        let b = body(ProviderKind::OpenRouter, &tool_loop());
        assert_eq!(
            b["messages"][2]["reasoning_details"],
            json!([{"type": "reasoning.text", "text": "Adding.", "signature": "asig",
                    "format": "anthropic-claude-v1", "index": 0}])
        );
    }

    #[test]
    fn anthropic_puts_every_result_first_in_one_user_message() {
        let b = body(ProviderKind::Anthropic, &tool_loop());
        assert_eq!(b["system"], "Be exact.");
        let messages = b["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert_eq!(
            messages[1]["content"],
            json!([{"type": "thinking", "thinking": "Adding.", "signature": "asig"},
                   {"type": "tool_use", "id": "call_a", "name": "add", "input": {"a": 2, "b": 3}},
                   {"type": "tool_use", "id": "call_llmtower_1", "name": "mul", "input": {}}])
        );
        assert_eq!(
            messages[2],
            json!({"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_a", "content": [{"type": "text", "text": "5"}]},
                {"type": "tool_result", "tool_use_id": "call_llmtower_1", "content": [{"type": "text", "text": "6"}], "is_error": true},
                {"type": "text", "text": "Thanks"}]})
        );
        assert_eq!(
            b["tools"][1],
            json!({"name": "mul", "input_schema": {"type": "object", "properties": {}}})
        );
    }

    #[test]
    fn gemini_names_results_keeps_real_ids_and_signatures() {
        let b = body(ProviderKind::Gemini, &tool_loop());
        let contents = b["contents"].as_array().unwrap();
        assert_eq!(
            contents[1],
            json!({"role": "model", "parts": [
                {"functionCall": {"name": "add", "args": {"a": 2, "b": 3}, "id": "call_a"}, "thoughtSignature": "gsig"},
                {"functionCall": {"name": "mul", "args": {}}}]})
        );
        assert_eq!(
            contents[2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "add", "response": {"output": 5}, "id": "call_a"}},
                {"functionResponse": {"name": "mul", "response": {"error": 6}}},
                {"text": "Thanks"}]})
        );
        assert_eq!(
            b["tools"],
            json!([{"functionDeclarations": [{"name": "add"}, {"name": "mul"}]}])
        );
    }

    #[test]
    fn calls_from_another_provider_get_geminis_skip_signature() {
        let req = ChatRequest::new("m")
            .user("x")
            .message(
                Message::assistant("").with_tool_calls(vec![ToolCall::new("toolu_1", "f", "{}")]),
            )
            .message(Message::tool_result("toolu_1", "ok"));
        let b = body(ProviderKind::Gemini, &req);
        assert_eq!(
            b["contents"][1]["parts"][0]["thoughtSignature"],
            GEMINI_SKIP_SIGNATURE
        );
    }

    #[test]
    fn ollama_names_the_tool_of_each_result() {
        let b = body(ProviderKind::Ollama, &tool_loop());
        assert_eq!(
            b["messages"][2]["tool_calls"][0],
            json!({"id": "call_a", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}})
        );
        assert_eq!(
            b["messages"][3],
            json!({"role": "tool", "content": "5", "tool_name": "add", "tool_call_id": "call_a"})
        );
        assert_eq!(b["messages"][2]["thinking"], "Adding.");
    }

    #[test]
    fn arguments_that_are_not_an_object_are_refused_where_an_object_is_needed() {
        let req = ChatRequest::new("m")
            .user("x")
            .message(Message::assistant("").with_tool_calls(vec![ToolCall::new("c", "f", "[1")]));
        assert!(request_body(ProviderKind::OpenAi, &req, false).is_ok());
        for kind in [
            ProviderKind::Anthropic,
            ProviderKind::Gemini,
            ProviderKind::Ollama,
        ] {
            let err = request_body(kind, &req, false).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{kind}");
        }
    }

    #[test]
    fn media_goes_in_each_providers_form() {
        let req = ChatRequest::new("m").message(Message::user(vec![
            Part::Text("What is it?".into()),
            Part::Image(Media::base64("image/png", "iVBO")),
            Part::Document(Media::base64("application/pdf", "JVBE").filename("a.pdf")),
        ]));
        let openai = body(ProviderKind::OpenAi, &req);
        assert_eq!(
            openai["messages"][0]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}})
        );
        assert_eq!(
            openai["messages"][0]["content"][2],
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}})
        );
        let anthropic = body(ProviderKind::Anthropic, &req);
        assert_eq!(
            anthropic["messages"][0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}})
        );
        assert_eq!(anthropic["messages"][0]["content"][2]["type"], "document");
        let gemini = body(ProviderKind::Gemini, &req);
        assert_eq!(
            gemini["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "iVBO"}})
        );
        assert_eq!(
            request_body(ProviderKind::Ollama, &req, false)
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
    }

    #[test]
    fn reasoning_levels_become_each_providers_control() {
        let req = ChatRequest::new("gemini-2.5-flash")
            .user("x")
            .max_tokens(10_000)
            .reasoning(ReasoningConfig::effort(ReasoningEffort::High));
        assert_eq!(body(ProviderKind::OpenAi, &req)["reasoning_effort"], "high");
        assert_eq!(
            body(ProviderKind::OpenRouter, &req)["reasoning"],
            json!({"effort": "high"})
        );
        assert_eq!(
            body(ProviderKind::Anthropic, &req)["thinking"],
            json!({"type": "enabled", "budget_tokens": 8000})
        );
        assert_eq!(
            body(ProviderKind::Gemini, &req)["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 8000, "includeThoughts": true})
        );
        assert_eq!(body(ProviderKind::Ollama, &req)["think"], "high");
        let small = ChatRequest::new("m")
            .user("x")
            .max_tokens(500)
            .reasoning(ReasoningConfig::effort(ReasoningEffort::Low));
        assert_eq!(
            request_body(ProviderKind::Anthropic, &small, false)
                .unwrap_err()
                .kind(),
            ErrorKind::Unsupported
        );
    }
}
