//! Reading a request of any of the six wire formats into what the handler decides by.

use http::{HeaderMap, header};
use serde_json::Value;

use super::conversation;
use super::plan::Route;
use super::wire::ErrorReply;

/// What the request asked for, read from its path, headers and body.
pub(crate) struct Parsed {
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) max_tokens: Option<u64>,
    pub(crate) prefill: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) answer: conversation::Answer,
}

pub(crate) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

pub(crate) fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

pub(crate) fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

pub(crate) fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

/// Reads the request; an `Err` is the route's 400 for a body it cannot use.
pub(crate) fn parse(
    route: Route,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Parsed, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|err| format!("We could not parse the JSON body of your request: {err}"))?;
    let mut prompt_tokens = 3;
    let mut last_role = String::new();
    let mut last_text = String::new();
    let mut add = |role: &str, text: String| {
        prompt_tokens += 3 + words(&text);
        last_role = role.to_owned();
        last_text = text;
    };
    let path = uri.path();
    let (model, stream, include_usage, max_tokens, key) = match route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => {
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("'messages' is a required property")?;
            for m in messages {
                add(
                    m.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(m.get("content").unwrap_or(&Value::Null)),
                );
            }
            let model = if route == Route::Azure {
                if query_param(uri, "api-version").is_none() {
                    return Err("Missing required query parameter: api-version".into());
                }
                path.split('/').nth(3).unwrap_or_default().to_owned()
            } else {
                json.get("model")
                    .and_then(Value::as_str)
                    .ok_or("you must provide a model parameter")?
                    .to_owned()
            };
            let key = match route {
                Route::Azure => header_string(headers, "api-key").or_else(|| bearer(headers)),
                _ => bearer(headers),
            };
            (
                model,
                json.get("stream").and_then(Value::as_bool).unwrap_or(false),
                json.pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                json.get("max_completion_tokens")
                    .or_else(|| json.get("max_tokens"))
                    .and_then(Value::as_u64),
                key,
            )
        }
        Route::Anthropic => {
            if headers.get("anthropic-version").is_none() {
                return Err("anthropic-version: header is required".into());
            }
            let max_tokens = json
                .get("max_tokens")
                .and_then(Value::as_u64)
                .ok_or("max_tokens: Field required")?;
            if let Some(system) = json.get("system") {
                add("system", text_of(system));
            }
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("messages: Field required")?;
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                if role == "system" {
                    return Err("messages: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.".into());
                }
                // As Anthropic does: a thinking block must carry the signature it was given.
                let blocks = m
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten();
                for (j, block) in blocks.enumerate() {
                    let unsigned = block.get("type") == Some(&Value::from("thinking"))
                        && block
                            .get("signature")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .is_empty();
                    if unsigned {
                        return Err(format!(
                            "messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                        ));
                    }
                }
                add(role, text_of(m.get("content").unwrap_or(&Value::Null)));
            }
            let model = json
                .get("model")
                .and_then(Value::as_str)
                .ok_or("model: Field required")?
                .to_owned();
            (
                model,
                json.get("stream").and_then(Value::as_bool).unwrap_or(false),
                true,
                Some(max_tokens),
                header_string(headers, "x-api-key"),
            )
        }
        Route::Gemini => {
            let target = path.rsplit('/').next().unwrap_or_default();
            let (model, action) = target.split_once(':').ok_or("unknown method")?;
            let stream = match action {
                "generateContent" => false,
                "streamGenerateContent" => true,
                other => return Err(format!("Method not found: {other}")),
            };
            if let Some(system) = json.pointer("/systemInstruction/parts") {
                add("system", text_of(system));
            }
            let contents = json
                .get("contents")
                .and_then(Value::as_array)
                .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
            for c in contents {
                add(
                    c.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(c.get("parts").unwrap_or(&Value::Null)),
                );
            }
            let key = header_string(headers, "x-goog-api-key").or_else(|| query_param(uri, "key"));
            (
                model.to_owned(),
                stream,
                true,
                json.pointer("/generationConfig/maxOutputTokens")
                    .and_then(Value::as_u64),
                key,
            )
        }
        Route::Ollama => {
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("messages is required")?;
            for m in messages {
                add(
                    m.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(m.get("content").unwrap_or(&Value::Null)),
                );
            }
            let model = json
                .get("model")
                .and_then(Value::as_str)
                .ok_or("model is required")?
                .to_owned();
            (
                model,
                // Ollama streams unless told not to.
                json.get("stream").and_then(Value::as_bool).unwrap_or(true),
                true,
                json.pointer("/options/num_predict").and_then(Value::as_u64),
                bearer(headers),
            )
        }
    };
    let prefill = matches!(last_role.as_str(), "assistant" | "model").then_some(last_text);
    let answer = conversation::answer(route, &model, &json);
    Ok(Parsed {
        answer,
        model,
        stream,
        include_usage,
        prompt_tokens,
        max_tokens,
        prefill,
        key,
    })
}

pub(crate) fn bad_request(route: Route, message: &str, request_id: &str) -> ErrorReply {
    let body = match route {
        Route::OpenAi | Route::Azure => {
            serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        }
        Route::OpenRouter => serde_json::json!({"error": {"code": 400, "message": message}}),
        Route::Anthropic => serde_json::json!({"type": "error",
            "error": {"type": "invalid_request_error", "message": message}, "request_id": format!("req_{request_id}")}),
        Route::Gemini => {
            serde_json::json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})
        }
        Route::Ollama => serde_json::json!({"error": message}),
    };
    ErrorReply {
        status: 400,
        headers: Vec::new(),
        content_type: "application/json",
        body: body.to_string(),
    }
}
