//! The mock's own reading of a conversation in each route's format — written apart from
//! `llm-providers`' translation, so a test compares two independent readings — and what the
//! mock answers to tools, structured output and reasoning.
//!
//! The mock's behaviour, in order:
//! - a model whose name contains `echo` answers with [`Conversation`] as JSON text: what the
//!   mock read (roles, text, media, tool calls with their arguments as objects, tool
//!   results), for round-trip tests;
//! - a request with tools whose last turn is the user's calls tools: the forced tool, or each
//!   declared tool the user's text names (in order, several at once), or else the first tool,
//!   with arguments `{"n": <k>, "tool": "<name>"}`;
//! - a request whose last turn is a tool result answers `Tool <name> said: <result>.`;
//! - JSON output asked for gets a JSON object (filled from the schema's properties; without
//!   a schema, `{"answer": "<the canonical answer>"}`);
//! - reasoning asked for (Anthropic `thinking`, Gemini `thinkingConfig`, Ollama `think`,
//!   `reasoning_effort` / `reasoning`) is shown first, signed where the provider signs.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::plan::Route;

/// A conversation as the mock read it, provider-neutral.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Conversation {
    /// The system instructions.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system: String,
    /// The turns.
    pub messages: Vec<Turn>,
    /// The declared tools' names.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

/// One turn of a [`Conversation`].
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Turn {
    /// `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Images and documents: `image:<media type>:<bytes>` or `image:url:<url>`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub media: Vec<String>,
    /// Tool calls: name and arguments (an object).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
    /// For a tool result: the call's id, or the tool's name where the format has no id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_for: Option<String>,
}

/// What the mock answers besides text.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    /// The answer text, when the script decides it (otherwise the canonical answer).
    pub(crate) text: Option<String>,
    /// Tool calls: (id, name, arguments as JSON text).
    pub(crate) calls: Vec<(String, String, String)>,
    /// Reasoning shown first.
    pub(crate) thinking: Option<String>,
    /// OpenAI's `logprobs` were asked for.
    pub(crate) logprobs: bool,
    /// How many choices (OpenAI's `n`), each the same answer.
    pub(crate) choices: usize,
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// Text, media, tool calls and results of one message's content in the OpenAI format.
fn openai_turn(m: &Value) -> Turn {
    let mut turn = Turn {
        role: str_of(m, "role").to_owned(),
        ..Turn::default()
    };
    match m.get("content") {
        Some(Value::String(text)) => turn.text = text.clone(),
        Some(Value::Array(parts)) => {
            for p in parts {
                match str_of(p, "type") {
                    "text" => turn.text.push_str(str_of(p, "text")),
                    "image_url" => turn.media.push(media_of_url(
                        "image",
                        p.pointer("/image_url/url")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    )),
                    "file" => turn.media.push(media_of_url(
                        "document",
                        p.pointer("/file/file_data")
                            .and_then(Value::as_str)
                            .unwrap_or_default(),
                    )),
                    other => turn.text.push_str(&format!("[{other}]")),
                }
            }
        }
        _ => {}
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or(Value::Null);
        turn.tool_calls.push(json!({
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
            "arguments": args,
        }));
    }
    if turn.role == "tool" {
        turn.result_for = Some(str_of(m, "tool_call_id").to_owned());
    }
    turn
}

fn media_of_url(kind: &str, url: &str) -> String {
    match url
        .strip_prefix("data:")
        .and_then(|r| r.split_once(";base64,"))
    {
        Some((media_type, data)) => format!("{kind}:{media_type}:{data}"),
        None => format!("{kind}:url:{url}"),
    }
}

fn anthropic_turns(m: &Value, out: &mut Vec<Turn>) {
    let role = str_of(m, "role");
    let mut turn = Turn {
        role: role.to_owned(),
        ..Turn::default()
    };
    match m.get("content") {
        Some(Value::String(text)) => turn.text = text.clone(),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                match str_of(b, "type") {
                    "text" => turn.text.push_str(str_of(b, "text")),
                    kind @ ("image" | "document") => {
                        let source = b.get("source").unwrap_or(&Value::Null);
                        turn.media.push(match str_of(source, "type") {
                            "url" => format!("{kind}:url:{}", str_of(source, "url")),
                            _ => format!(
                                "{kind}:{}:{}",
                                str_of(source, "media_type"),
                                str_of(source, "data")
                            ),
                        });
                    }
                    "tool_use" => turn.tool_calls.push(json!({
                        "name": str_of(b, "name"),
                        "arguments": b.get("input").cloned().unwrap_or(Value::Null),
                    })),
                    "tool_result" => {
                        let text = match b.get("content") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Array(parts)) => {
                                parts.iter().map(|p| str_of(p, "text")).collect()
                            }
                            _ => String::new(),
                        };
                        let error = b.get("is_error") == Some(&Value::Bool(true));
                        out.push(Turn {
                            role: "tool".into(),
                            text: if error {
                                format!("Error: {text}")
                            } else {
                                text
                            },
                            result_for: Some(str_of(b, "tool_use_id").to_owned()),
                            ..Turn::default()
                        });
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    let only_results = turn.text.is_empty() && turn.media.is_empty() && turn.tool_calls.is_empty();
    if !only_results || role == "assistant" || out.last().is_none_or(|t| t.role != "tool") {
        out.push(turn);
    }
}

fn gemini_turns(c: &Value, out: &mut Vec<Turn>) {
    let role = match str_of(c, "role") {
        "model" => "assistant",
        _ => "user",
    };
    let mut turn = Turn {
        role: role.to_owned(),
        ..Turn::default()
    };
    for p in c
        .get("parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(text) = p.get("text").and_then(Value::as_str) {
            if p.get("thought") != Some(&Value::Bool(true)) {
                turn.text.push_str(text);
            }
        } else if let Some(inline) = p.get("inlineData") {
            let kind = if str_of(inline, "mimeType").starts_with("image/") {
                "image"
            } else {
                "document"
            };
            turn.media.push(format!(
                "{kind}:{}:{}",
                str_of(inline, "mimeType"),
                str_of(inline, "data")
            ));
        } else if let Some(file) = p.get("fileData") {
            let kind = if str_of(file, "mimeType").starts_with("image/") {
                "image"
            } else {
                "document"
            };
            turn.media
                .push(format!("{kind}:url:{}", str_of(file, "fileUri")));
        } else if let Some(call) = p.get("functionCall") {
            turn.tool_calls.push(json!({
                "name": str_of(call, "name"),
                "arguments": call.get("args").cloned().unwrap_or(Value::Null),
            }));
        } else if let Some(response) = p.get("functionResponse") {
            let r = response.get("response").unwrap_or(&Value::Null);
            let (value, error) = match (r.get("output"), r.get("error")) {
                (_, Some(e)) => (e, true),
                (Some(o), None) => (o, false),
                (None, None) => (r, false),
            };
            let text = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_owned);
            out.push(Turn {
                role: "tool".into(),
                text: if error {
                    format!("Error: {text}")
                } else {
                    text
                },
                result_for: Some(
                    response
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or_else(|| str_of(response, "name"))
                        .to_owned(),
                ),
                ..Turn::default()
            });
        }
    }
    let empty = turn.text.is_empty() && turn.media.is_empty() && turn.tool_calls.is_empty();
    if !empty || role == "assistant" {
        out.push(turn);
    }
}

fn ollama_turn(m: &Value) -> Turn {
    let mut turn = Turn {
        role: str_of(m, "role").to_owned(),
        text: str_of(m, "content").to_owned(),
        ..Turn::default()
    };
    for image in m
        .get("images")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        turn.media
            .push(format!("image::{}", image.as_str().unwrap_or_default()));
    }
    for call in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        turn.tool_calls.push(json!({
            "name": call.pointer("/function/name").and_then(Value::as_str).unwrap_or_default(),
            "arguments": call.pointer("/function/arguments").cloned().unwrap_or(Value::Null),
        }));
    }
    if turn.role == "tool" {
        turn.result_for = Some(
            m.get("tool_call_id")
                .and_then(Value::as_str)
                .unwrap_or_else(|| str_of(m, "tool_name"))
                .to_owned(),
        );
    }
    turn
}

/// Reads `json`, a request body in `route`'s format.
pub fn read(route: Route, json: &Value) -> Conversation {
    let mut c = Conversation::default();
    let tool_names = |tools: Option<&Value>, pointer: &str| -> Vec<String> {
        tools
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|t| {
                t.pointer(pointer)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    };
    match route {
        Route::OpenAi | Route::Azure | Route::OpenRouter | Route::Ollama => {
            for m in json
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let turn = if route == Route::Ollama {
                    ollama_turn(m)
                } else {
                    openai_turn(m)
                };
                if turn.role == "system" || turn.role == "developer" {
                    c.system.push_str(&turn.text);
                } else {
                    c.messages.push(turn);
                }
            }
            c.tools = tool_names(json.get("tools"), "/function/name");
        }
        Route::Anthropic => {
            match json.get("system") {
                Some(Value::String(s)) => c.system = s.clone(),
                Some(Value::Array(blocks)) => {
                    c.system = blocks.iter().map(|b| str_of(b, "text")).collect();
                }
                _ => {}
            }
            for m in json
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                anthropic_turns(m, &mut c.messages);
            }
            c.tools = tool_names(json.get("tools"), "/name");
        }
        Route::Gemini => {
            if let Some(parts) = json
                .pointer("/systemInstruction/parts")
                .and_then(Value::as_array)
            {
                c.system = parts.iter().map(|p| str_of(p, "text")).collect();
            }
            for content in json
                .get("contents")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                gemini_turns(content, &mut c.messages);
            }
            c.tools = json
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|t| tool_names(t.get("functionDeclarations"), "/name"))
                .collect();
        }
    }
    c
}

/// The forced tool's name, if the request forces one.
fn forced_tool(route: Route, json: &Value) -> Option<String> {
    let name = match route {
        Route::Anthropic => json
            .pointer("/tool_choice/type")
            .filter(|t| *t == "tool")
            .and(json.pointer("/tool_choice/name")),
        Route::Gemini => json.pointer("/toolConfig/functionCallingConfig/allowedFunctionNames/0"),
        _ => json.pointer("/tool_choice/function/name"),
    };
    name.and_then(Value::as_str).map(str::to_owned)
}

fn tools_off(route: Route, json: &Value) -> bool {
    match route {
        Route::Anthropic => json.pointer("/tool_choice/type") == Some(&json!("none")),
        Route::Gemini => {
            json.pointer("/toolConfig/functionCallingConfig/mode") == Some(&json!("NONE"))
        }
        _ => json.get("tool_choice") == Some(&json!("none")),
    }
}

fn wants_thinking(route: Route, json: &Value) -> bool {
    match route {
        Route::Anthropic => json.pointer("/thinking/type") == Some(&json!("enabled")),
        Route::Gemini => json
            .pointer("/generationConfig/thinkingConfig/includeThoughts")
            .is_some_and(|v| v == true),
        Route::Ollama => json.get("think").is_some_and(|t| t != false),
        Route::OpenRouter => json.get("reasoning").is_some(),
        Route::OpenAi | Route::Azure => json.get("reasoning_effort").is_some_and(|e| e != "none"),
    }
}

/// The JSON schema of the output asked for (`null` for JSON without a schema), or `None`
/// when text is asked for.
fn json_output(route: Route, json: &Value) -> Option<Value> {
    match route {
        Route::Anthropic => json.pointer("/output_config/format/schema").cloned(),
        Route::Gemini => {
            let mime = json.pointer("/generationConfig/responseMimeType")?;
            (mime == "application/json").then(|| {
                json.pointer("/generationConfig/responseJsonSchema")
                    .or_else(|| json.pointer("/generationConfig/responseSchema"))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
        }
        Route::Ollama => match json.get("format")? {
            Value::String(s) if s == "json" => Some(Value::Null),
            schema @ Value::Object(_) => Some(schema.clone()),
            _ => None,
        },
        _ => match json.pointer("/response_format/type")?.as_str()? {
            "json_object" => Some(Value::Null),
            "json_schema" => Some(
                json.pointer("/response_format/json_schema/schema")
                    .cloned()
                    .unwrap_or(Value::Null),
            ),
            _ => None,
        },
    }
}

/// A JSON object following `schema`'s properties (by type); without a schema
/// `{"answer": "<the canonical answer>"}`, long enough to stream in 60 pieces.
fn object_for(schema: Option<&Value>) -> Value {
    let Some(properties) = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
    else {
        return json!({"answer": super::wire::canonical_answer(60)});
    };
    let mut out = Map::new();
    for (name, property) in properties {
        let value = match property.get("type").and_then(Value::as_str) {
            Some("integer") => json!(1),
            Some("number") => json!(1.5),
            Some("boolean") => json!(true),
            Some("array") => json!([]),
            Some("object") => object_for(Some(property)),
            _ => json!("Alfa"),
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

/// What the mock answers to `json`, a request on `route` for `model`.
pub(crate) fn answer(route: Route, model: &str, json: &Value) -> Answer {
    let conversation = read(route, json);
    let openai = matches!(route, Route::OpenAi | Route::Azure | Route::OpenRouter);
    let mut answer = Answer {
        logprobs: openai && json.get("logprobs") == Some(&Value::Bool(true)),
        choices: json
            .get("n")
            .and_then(Value::as_u64)
            .filter(|_| openai)
            .map_or(1, |n| n.clamp(1, 8) as usize),
        ..Answer::default()
    };
    if wants_thinking(route, json) {
        answer.thinking = Some("Thinking it over.".into());
    }
    if model.contains("echo") {
        answer.text = Some(serde_json::to_string(&conversation).unwrap_or_default());
        return answer;
    }
    let last = conversation.messages.last();
    if let Some(last) = last.filter(|t| t.role == "tool") {
        let name = conversation
            .messages
            .iter()
            .flat_map(|t| &t.tool_calls)
            .map(|c| c["name"].as_str().unwrap_or_default())
            .next_back()
            .unwrap_or("tool");
        answer.text = Some(format!("Tool {name} said: {}.", last.text));
        return answer;
    }
    let user_text = last.map(|t| t.text.as_str()).unwrap_or_default();
    if !conversation.tools.is_empty() && !tools_off(route, json) {
        let named: Vec<&String> = match forced_tool(route, json) {
            Some(name) => conversation.tools.iter().filter(|t| **t == name).collect(),
            None => {
                let mut named: Vec<(usize, &String)> = conversation
                    .tools
                    .iter()
                    .filter_map(|t| user_text.find(t.as_str()).map(|at| (at, t)))
                    .collect();
                named.sort();
                named.into_iter().map(|(_, t)| t).collect()
            }
        };
        let chosen = if named.is_empty() {
            vec![&conversation.tools[0]]
        } else {
            named
        };
        answer.calls = chosen
            .into_iter()
            .enumerate()
            .map(|(k, name)| {
                let id = match route {
                    Route::Anthropic => format!("toolu_mock{k}"),
                    // Gemini 2.5 and older Ollama give no ids.
                    Route::Gemini | Route::Ollama => String::new(),
                    _ => format!("call_mock{k}"),
                };
                let arguments = json!({"n": k + 1, "tool": name}).to_string();
                (id, name.clone(), arguments)
            })
            .collect();
        return answer;
    }
    if let Some(schema) = json_output(route, json) {
        answer.text = Some(object_for(Some(&schema).filter(|s| !s.is_null())).to_string());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_join_their_turns_in_every_format() {
        let anthropic = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]}]});
        let c = read(Route::Anthropic, &anthropic);
        assert_eq!(c.messages.len(), 3);
        assert_eq!(c.messages[2].role, "tool");
        assert_eq!(c.messages[2].result_for.as_deref(), Some("t1"));
        assert_eq!(c.messages[1].tool_calls[0]["arguments"], json!({"a": 1}));
    }

    #[test]
    fn a_request_with_tools_gets_calls_then_an_answer_from_the_result() {
        let first = json!({"model": "m", "messages": [{"role": "user", "content": "use add and mul"}],
            "tools": [{"type": "function", "function": {"name": "mul"}},
                      {"type": "function", "function": {"name": "add"}}]});
        let a = answer(Route::OpenAi, "m", &first);
        let names: Vec<&str> = a.calls.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(names, ["add", "mul"]);
        let second = json!({"model": "m", "messages": [{"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "add", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "5"}],
            "tools": [{"type": "function", "function": {"name": "add"}}]});
        assert_eq!(
            answer(Route::OpenAi, "m", &second).text.as_deref(),
            Some("Tool add said: 5.")
        );
    }
}
