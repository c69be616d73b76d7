//! The providers' bytes: success bodies, stream frames, error bodies and in-stream errors,
//! per route.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{Value, json};

use super::plan::{DelayFormat, Fault, Route};

const NATO: [&str; 26] = [
    "Alfa", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot", "Golf", "Hotel", "India", "Juliett",
    "Kilo", "Lima", "Mike", "November", "Oscar", "Papa", "Quebec", "Romeo", "Sierra", "Tango",
    "Uniform", "Victor", "Whiskey", "X-ray", "Yankee", "Zulu",
];

/// Token `index` (0-based) of the canonical answer: `"Alfa-1"`, `" Bravo-2"`, … — every
/// token distinct, so a missing or repeated piece of an answer is visible.
///
/// ```
/// use llm_testkit::server::canonical_token;
///
/// assert_eq!(canonical_token(0), "Alfa-1");
/// assert_eq!(canonical_token(26), " Alfa-27");
/// ```
pub fn canonical_token(index: usize) -> String {
    let word = NATO[index % NATO.len()];
    if index == 0 {
        format!("{word}-{}", index + 1)
    } else {
        format!(" {word}-{}", index + 1)
    }
}

/// The mock provider's answer of `tokens` tokens: the concatenation of
/// [`canonical_token`]s. Its length is known, so truncation is detectable.
///
/// ```
/// use llm_testkit::server::canonical_answer;
///
/// assert_eq!(canonical_answer(3), "Alfa-1 Bravo-2 Charlie-3");
/// ```
pub fn canonical_answer(tokens: usize) -> String {
    (0..tokens).map(canonical_token).collect()
}

/// The whole body of a successful stream of `tokens` content chunks on `route`, byte for byte
/// as the mock provider sends it: a recorded-shape fixture for decoder tests and benchmarks.
///
/// ```
/// use llm_testkit::server::{Route, stream_body};
///
/// let body = String::from_utf8(stream_body(Route::OpenAi, 2)).unwrap();
/// assert!(body.starts_with("data: {"));
/// assert!(body.contains("\"object\":\"chat.completion.chunk\""));
/// assert!(body.ends_with("data: [DONE]\n\n"));
/// ```
pub fn stream_body(route: Route, tokens: usize) -> Vec<u8> {
    let exchange = Exchange {
        route,
        model: "gpt-4o-2024-08-06".to_owned(),
        stream: true,
        include_usage: true,
        prompt_tokens: 14,
        tokens: (0..tokens).map(canonical_token).collect(),
        truncated: false,
        request_id: "ABfw0".to_owned(),
        created: 1_727_346_168,
        calls: Vec::new(),
        thinking: None,
        logprobs: false,
        choices: 1,
    };
    stream_frames(&exchange, false)
        .iter()
        .flat_map(|f| f.bytes())
        .collect()
}

impl Exchange {
    /// A listing's request to `route` about `model`: what its error replies are built from.
    pub(crate) fn listing(route: Route, model: &str) -> Exchange {
        Exchange {
            route,
            model: model.to_owned(),
            stream: false,
            include_usage: false,
            prompt_tokens: 0,
            tokens: Vec::new(),
            truncated: false,
            request_id: "list0".to_owned(),
            created: 0,
            calls: Vec::new(),
            thinking: None,
            logprobs: false,
            choices: 1,
        }
    }
}

/// What one request is answered with, before faults.
#[derive(Debug)]
pub(crate) struct Exchange {
    pub(crate) route: Route,
    pub(crate) model: String,
    pub(crate) stream: bool,
    pub(crate) include_usage: bool,
    pub(crate) prompt_tokens: u64,
    pub(crate) tokens: Vec<String>,
    pub(crate) truncated: bool,
    pub(crate) request_id: String,
    pub(crate) created: u64,
    /// Tool calls: (id, name, arguments as JSON text); an empty id is none.
    pub(crate) calls: Vec<(String, String, String)>,
    /// Reasoning shown before the answer.
    pub(crate) thinking: Option<String>,
    /// OpenAI's `logprobs` were asked for: each token's comes with it.
    pub(crate) logprobs: bool,
    /// How many choices (OpenAI's `n`), each the same answer.
    pub(crate) choices: usize,
}

impl Exchange {
    pub(crate) fn text(&self) -> String {
        self.tokens.concat()
    }

    pub(crate) fn completion_tokens(&self) -> u64 {
        self.tokens.len() as u64
    }

    fn openai_finish(&self) -> &'static str {
        if !self.calls.is_empty() {
            "tool_calls"
        } else if self.truncated {
            "length"
        } else {
            "stop"
        }
    }

    fn anthropic_stop(&self) -> &'static str {
        if !self.calls.is_empty() {
            "tool_use"
        } else if self.truncated {
            "max_tokens"
        } else {
            "end_turn"
        }
    }

    /// The signature the mock puts on its thinking (Anthropic) and calls (Gemini).
    fn signature(&self) -> String {
        format!("sig-{}", self.request_id)
    }

    /// The tool calls in OpenAI's message form.
    fn openai_calls(&self) -> Value {
        self.calls
            .iter()
            .map(|(id, name, args)| {
                json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}})
            })
            .collect()
    }

    fn args(&self, k: usize) -> Value {
        serde_json::from_str(&self.calls[k].2).unwrap_or(Value::Null)
    }

    /// Gemini's parts for the calls: whole, with the signature on the first.
    fn gemini_call_parts(&self) -> Vec<Value> {
        (0..self.calls.len())
            .map(|k| {
                let mut part =
                    json!({"functionCall": {"name": self.calls[k].1, "args": self.args(k)}});
                if k == 0 {
                    part["thoughtSignature"] = json!(self.signature());
                }
                part
            })
            .collect()
    }

    /// Ollama's tool calls.
    fn ollama_calls(&self) -> Value {
        (0..self.calls.len())
            .map(|k| json!({"function": {"index": k, "name": self.calls[k].1, "arguments": self.args(k)}}))
            .collect()
    }

    fn usage_openai(&self) -> Value {
        let (p, c) = (self.prompt_tokens, self.completion_tokens());
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
               "prompt_tokens_details": {"cached_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    }

    fn usage_gemini(&self, completion: Option<u64>) -> Value {
        let p = self.prompt_tokens;
        match completion {
            Some(c) => {
                json!({"promptTokenCount": p, "candidatesTokenCount": c, "totalTokenCount": p + c})
            }
            None => json!({"promptTokenCount": p, "totalTokenCount": p}),
        }
    }

    /// OpenAI's `logprobs` object for `tokens`.
    fn logprobs_of<'a>(tokens: impl Iterator<Item = &'a String>) -> Value {
        let content: Vec<Value> = tokens
            .map(|t| json!({"token": t, "logprob": -0.25, "bytes": t.as_bytes(), "top_logprobs": []}))
            .collect();
        json!({"content": content, "refusal": null})
    }

    fn chat_id(&self) -> String {
        format!("chatcmpl-{}", self.request_id)
    }
}

/// A whole (non-streaming) response body.
pub(crate) fn success_body(ex: &Exchange) -> Value {
    let text = ex.text();
    match ex.route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => {
            let mut message = json!({"role": "assistant", "content": text, "refusal": null});
            if !ex.calls.is_empty() {
                message["content"] = Value::Null;
                message["tool_calls"] = ex.openai_calls();
            }
            if let Some(thinking) = &ex.thinking {
                match ex.route {
                    Route::OpenRouter => {
                        message["reasoning"] = json!(thinking);
                        message["reasoning_details"] = json!([{"type": "reasoning.text",
                            "text": thinking, "signature": ex.signature(),
                            "format": "anthropic-claude-v1", "index": 0}]);
                    }
                    _ => message["reasoning_content"] = json!(thinking),
                }
            }
            let logprobs = if ex.logprobs {
                Exchange::logprobs_of(ex.tokens.iter())
            } else {
                Value::Null
            };
            let mut choice = json!({"index": 0, "message": message,
                "logprobs": logprobs, "finish_reason": ex.openai_finish()});
            let others: Vec<Value> = (1..ex.choices)
                .map(|i| {
                    let mut other = choice.clone();
                    other["index"] = json!(i);
                    other
                })
                .collect();
            let mut body = json!({"id": ex.chat_id(), "object": "chat.completion",
                "created": ex.created, "model": ex.model, "choices": [],
                "usage": ex.usage_openai(), "system_fingerprint": "fp_mock"});
            match ex.route {
                Route::Azure => {
                    choice["content_filter_results"] = azure_filter_results();
                    body["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": azure_filter_results()}]);
                }
                Route::OpenRouter => {
                    choice["native_finish_reason"] = json!(ex.openai_finish());
                    body["provider"] = json!("MockProvider");
                }
                _ => {}
            }
            body["choices"] = json!([choice]);
            if let Some(choices) = body["choices"].as_array_mut() {
                choices.extend(others);
            }
            body
        }
        Route::Anthropic => json!({"id": format!("msg_{}", ex.request_id), "type": "message",
            "role": "assistant", "model": ex.model,
            "content": anthropic_content(ex, &text),
            "stop_reason": ex.anthropic_stop(),
            "stop_sequence": null,
            "usage": {"input_tokens": ex.prompt_tokens, "output_tokens": ex.completion_tokens(),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
        Route::Gemini => {
            let mut parts = Vec::new();
            if let Some(thinking) = &ex.thinking {
                parts.push(json!({"text": thinking, "thought": true}));
            }
            if ex.calls.is_empty() {
                parts.push(json!({"text": text}));
            }
            parts.extend(ex.gemini_call_parts());
            json!({"candidates": [{"content": {"role": "model", "parts": parts},
                "finishReason": if ex.truncated { "MAX_TOKENS" } else { "STOP" }, "index": 0}],
            "usageMetadata": ex.usage_gemini(Some(ex.completion_tokens())),
            "modelVersion": ex.model, "responseId": ex.request_id})
        }
        Route::Ollama => ollama_done(ex, &text),
    }
}

fn anthropic_content(ex: &Exchange, text: &str) -> Value {
    let mut blocks = Vec::new();
    if let Some(thinking) = &ex.thinking {
        blocks.push(json!({"type": "thinking", "thinking": thinking, "signature": ex.signature()}));
    }
    if !text.is_empty() || ex.calls.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (k, (id, name, _)) in ex.calls.iter().enumerate() {
        blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": ex.args(k)}));
    }
    Value::Array(blocks)
}

fn ollama_done(ex: &Exchange, content: &str) -> Value {
    ollama_done_with(ex, content, true)
}

fn ollama_done_with(ex: &Exchange, content: &str, whole: bool) -> Value {
    let c = ex.completion_tokens();
    let mut message = json!({"role": "assistant", "content": content});
    if whole && !ex.calls.is_empty() {
        message["tool_calls"] = ex.ollama_calls();
    }
    if let (true, Some(thinking)) = (whole, &ex.thinking) {
        message["thinking"] = json!(thinking);
    }
    json!({"model": ex.model, "created_at": rfc3339(SystemTime::now()),
        "message": message, "done": true,
        "done_reason": if ex.truncated { "length" } else { "stop" },
        "total_duration": 4_883_583_458_u64, "load_duration": 1_334_875_u64,
        "prompt_eval_count": ex.prompt_tokens, "prompt_eval_duration": 342_546_000_u64,
        "eval_count": c, "eval_duration": 4_535_599_000_u64})
}

fn azure_filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

/// One piece of a streamed body.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// Written before the payload (`data: `, `event: x\ndata: `, nothing for NDJSON).
    prefix: &'static str,
    /// The JSON (or raw text such as `[DONE]`).
    payload: String,
    /// Written after the payload (`\n\n`, `\r\n\r\n`, `\n`).
    suffix: &'static str,
    /// Whether this frame carries answer text (the unit faults count).
    pub(crate) content: bool,
}

impl Frame {
    fn new(prefix: &'static str, payload: impl Into<String>, suffix: &'static str) -> Frame {
        Frame {
            prefix,
            payload: payload.into(),
            suffix,
            content: false,
        }
    }

    fn content(mut self) -> Frame {
        self.content = true;
        self
    }

    pub(crate) fn bytes(&self) -> Bytes {
        Bytes::from(format!("{}{}{}", self.prefix, self.payload, self.suffix))
    }

    /// The same frame with its JSON cut in half: what a malformed chunk looks like.
    pub(crate) fn malformed(&self) -> Frame {
        let mut cut = self.payload.len() / 2;
        while !self.payload.is_char_boundary(cut) {
            cut -= 1;
        }
        Frame {
            payload: self.payload[..cut].to_owned(),
            ..self.clone()
        }
    }
}

fn sse(payload: Value) -> Frame {
    Frame::new("data: ", payload.to_string(), "\n\n")
}

fn gemini_sse(payload: Value) -> Frame {
    Frame::new("data: ", payload.to_string(), "\r\n\r\n")
}

fn anthropic_event(event: &'static str, payload: Value) -> Frame {
    let prefix = match event {
        "message_start" => "event: message_start\ndata: ",
        "content_block_start" => "event: content_block_start\ndata: ",
        "ping" => "event: ping\ndata: ",
        "content_block_delta" => "event: content_block_delta\ndata: ",
        "content_block_stop" => "event: content_block_stop\ndata: ",
        "message_delta" => "event: message_delta\ndata: ",
        "message_stop" => "event: message_stop\ndata: ",
        _ => "event: error\ndata: ",
    };
    Frame::new(prefix, payload.to_string(), "\n\n")
}

fn ndjson(payload: Value) -> Frame {
    Frame::new("", payload.to_string(), "\n")
}

/// A streamed answer as the route sends it: every frame in order, content frames marked.
/// `no_done` leaves out the separate terminator (`[DONE]`, Anthropic's `message_stop`).
pub(crate) fn stream_frames(ex: &Exchange, no_done: bool) -> Vec<Frame> {
    let mut frames = Vec::with_capacity(ex.tokens.len() + 8);
    match ex.route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => {
            let chunk_of = |index: usize, delta: Value, finish: Value| {
                let mut choice = json!({"index": index, "delta": delta, "logprobs": null,
                    "finish_reason": finish});
                if ex.route == Route::Azure {
                    choice["content_filter_results"] = json!({});
                }
                let mut body = json!({"id": ex.chat_id(), "object": "chat.completion.chunk",
                    "created": ex.created, "model": ex.model, "system_fingerprint": "fp_mock",
                    "choices": [choice]});
                if ex.route == Route::OpenRouter {
                    body["provider"] = json!("MockProvider");
                }
                sse(body)
            };
            let chunk = |delta: Value, finish: Value| chunk_of(0, delta, finish);
            match ex.route {
                Route::Azure => frames.push(sse(json!({"choices": [], "created": 0, "id": "",
                    "model": "", "object": "",
                    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": azure_filter_results()}]}))),
                Route::OpenRouter => frames.push(Frame::new("", ": OPENROUTER PROCESSING", "\n\n")),
                _ => {}
            }
            frames.push(chunk(
                json!({"role": "assistant", "content": "", "refusal": null}),
                Value::Null,
            ));
            if ex.route == Route::OpenRouter {
                // OpenRouter keeps the connection alive with comments while the model works.
                frames.push(Frame::new("", ": OPENROUTER PROCESSING", "\n\n"));
            }
            if let Some(thinking) = &ex.thinking {
                let delta = if ex.route == Route::OpenRouter {
                    json!({"reasoning": thinking, "reasoning_details": [{"type": "reasoning.text",
                        "text": thinking, "format": "anthropic-claude-v1", "index": 0}]})
                } else {
                    json!({"reasoning_content": thinking})
                };
                frames.push(chunk(delta, Value::Null).content());
                if ex.route == Route::OpenRouter {
                    // The signature comes last, in its own delta.
                    frames.push(chunk(json!({"reasoning_details": [{"type": "reasoning.text",
                        "signature": ex.signature(), "format": "anthropic-claude-v1", "index": 0}]}),
                        Value::Null));
                }
            }
            for token in &ex.tokens {
                // With n > 1 each choice's piece comes in its own chunk, as OpenAI sends them.
                for index in 0..ex.choices {
                    let mut frame =
                        chunk_of(index, json!({"content": token}), Value::Null).content();
                    if ex.logprobs {
                        let mut body: Value =
                            serde_json::from_str(&frame.payload).unwrap_or_default();
                        body["choices"][0]["logprobs"] =
                            Exchange::logprobs_of(std::iter::once(token));
                        frame.payload = body.to_string();
                    }
                    frames.push(frame);
                }
            }
            for (k, (id, name, args)) in ex.calls.iter().enumerate() {
                frames.push(
                    chunk(
                        json!({"tool_calls": [{"index": k, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}),
                        Value::Null,
                    )
                    .content(),
                );
                for piece in fragments(args) {
                    frames.push(
                        chunk(
                            json!({"tool_calls": [{"index": k,
                        "function": {"arguments": piece}}]}),
                            Value::Null,
                        )
                        .content(),
                    );
                }
            }
            for index in 0..ex.choices {
                frames.push(chunk_of(index, json!({}), json!(ex.openai_finish())));
            }
            if ex.include_usage || ex.route == Route::OpenRouter {
                let mut usage = json!({"id": ex.chat_id(), "object": "chat.completion.chunk",
                    "created": ex.created, "model": ex.model, "system_fingerprint": "fp_mock",
                    "choices": [], "usage": ex.usage_openai()});
                if ex.route == Route::OpenRouter {
                    usage["provider"] = json!("MockProvider");
                }
                frames.push(sse(usage));
            }
            if !no_done {
                frames.push(Frame::new("data: ", "[DONE]", "\n\n"));
            }
        }
        Route::Anthropic => {
            frames.push(anthropic_event(
                "message_start",
                json!({"type": "message_start",
                "message": {"id": format!("msg_{}", ex.request_id), "type": "message",
                    "role": "assistant", "content": [], "model": ex.model, "stop_reason": null,
                    "stop_sequence": null,
                    "usage": {"input_tokens": ex.prompt_tokens, "output_tokens": 1}}}),
            ));
            let mut index = 0;
            if let Some(thinking) = &ex.thinking {
                frames.push(anthropic_event("content_block_start", json!({"type": "content_block_start",
                    "index": index, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
                frames.push(
                    anthropic_event(
                        "content_block_delta",
                        json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "thinking_delta", "thinking": thinking}}),
                    )
                    .content(),
                );
                frames.push(anthropic_event("content_block_delta", json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "signature_delta", "signature": ex.signature()}})));
                frames.push(anthropic_event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                index += 1;
            }
            if !ex.tokens.is_empty() || ex.calls.is_empty() {
                frames.push(anthropic_event(
                    "content_block_start",
                    json!({"type": "content_block_start",
                    "index": index, "content_block": {"type": "text", "text": ""}}),
                ));
                frames.push(anthropic_event("ping", json!({"type": "ping"})));
                for token in &ex.tokens {
                    frames.push(
                        anthropic_event(
                            "content_block_delta",
                            json!({"type": "content_block_delta",
                            "index": index, "delta": {"type": "text_delta", "text": token}}),
                        )
                        .content(),
                    );
                }
                frames.push(anthropic_event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                index += 1;
            }
            for (id, name, args) in &ex.calls {
                frames.push(anthropic_event("content_block_start", json!({"type": "content_block_start",
                    "index": index, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
                frames.push(anthropic_event(
                    "content_block_delta",
                    json!({"type": "content_block_delta",
                    "index": index, "delta": {"type": "input_json_delta", "partial_json": ""}}),
                ));
                for piece in fragments(args) {
                    frames.push(anthropic_event("content_block_delta", json!({"type": "content_block_delta",
                        "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}})).content());
                }
                frames.push(anthropic_event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                index += 1;
            }
            // NOTE: Anthropic's message_delta usage is cumulative, not an increment.
            frames.push(anthropic_event(
                "message_delta",
                json!({"type": "message_delta",
                "delta": {"stop_reason": ex.anthropic_stop(), "stop_sequence": null},
                "usage": {"output_tokens": ex.completion_tokens()}}),
            ));
            if !no_done {
                frames.push(anthropic_event(
                    "message_stop",
                    json!({"type": "message_stop"}),
                ));
            }
        }
        Route::Gemini => {
            let mut pieces: Vec<Vec<Value>> = Vec::new();
            if let Some(thinking) = &ex.thinking {
                pieces.push(vec![json!({"text": thinking, "thought": true})]);
            }
            pieces.extend(ex.tokens.iter().map(|token| vec![json!({"text": token})]));
            if !ex.calls.is_empty() {
                // Gemini sends calls whole, together.
                pieces.push(ex.gemini_call_parts());
            }
            let last = pieces.len().saturating_sub(1);
            for (i, parts) in pieces.into_iter().enumerate() {
                let mut candidate =
                    json!({"content": {"role": "model", "parts": parts}, "index": 0});
                let usage = if i == last {
                    candidate["finishReason"] =
                        json!(if ex.truncated { "MAX_TOKENS" } else { "STOP" });
                    ex.usage_gemini(Some(ex.completion_tokens()))
                } else {
                    ex.usage_gemini(None)
                };
                frames.push(
                    gemini_sse(json!({"candidates": [candidate], "usageMetadata": usage,
                        "modelVersion": ex.model, "responseId": ex.request_id}))
                    .content(),
                );
            }
        }
        Route::Ollama => {
            let line = |message: Value| {
                ndjson(
                    json!({"model": ex.model, "created_at": rfc3339(SystemTime::now()),
                    "message": message, "done": false}),
                )
                .content()
            };
            if let Some(thinking) = &ex.thinking {
                frames.push(line(
                    json!({"role": "assistant", "content": "", "thinking": thinking}),
                ));
            }
            for token in &ex.tokens {
                frames.push(line(json!({"role": "assistant", "content": token})));
            }
            if !ex.calls.is_empty() {
                frames.push(line(json!({"role": "assistant", "content": "",
                    "tool_calls": ex.ollama_calls()})));
            }
            frames.push(ndjson(ollama_done_with(ex, "", false)));
        }
    }
    frames
}

/// `args` cut in three pieces, as streams send arguments (cuts fall anywhere, even inside
/// a key).
fn fragments(args: &str) -> Vec<&str> {
    let mut cuts = vec![0, args.len() / 3, 2 * args.len() / 3, args.len()];
    for cut in &mut cuts {
        while !args.is_char_boundary(*cut) {
            *cut += 1;
        }
    }
    cuts.windows(2)
        .map(|w| &args[w[0]..w[1]])
        .filter(|p| !p.is_empty())
        .collect()
}

/// The route's in-stream error, sent after output began (status already 200).
pub(crate) fn stream_error_frame(ex: &Exchange) -> Frame {
    match ex.route {
        Route::OpenAi | Route::Azure => sse(json!({"error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error", "param": null, "code": null}})),
        Route::OpenRouter => sse(
            json!({"id": ex.chat_id(), "object": "chat.completion.chunk",
            "created": ex.created, "model": ex.model, "provider": "openai",
            "error": {"code": "server_error", "message": "Provider disconnected unexpectedly"},
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]}),
        ),
        Route::Anthropic => anthropic_event(
            "error",
            json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ),
        Route::Gemini => gemini_sse(json!({"error": {"code": 503,
            "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})),
        Route::Ollama => {
            ndjson(json!({"error": "an error was encountered while running the model"}))
        }
    }
}

/// A complete non-success answer: status, headers, body.
#[derive(Debug)]
pub(crate) struct ErrorReply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
}

impl ErrorReply {
    fn json(status: u16, body: Value) -> ErrorReply {
        ErrorReply {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> ErrorReply {
        self.headers.push((name, value.into()));
        self
    }
}

fn openai_error(status: u16, message: &str, kind: Value, param: Value, code: Value) -> ErrorReply {
    ErrorReply::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": param, "code": code}}),
    )
}

fn openrouter_error(status: u16, message: &str, metadata: Option<Value>) -> ErrorReply {
    let mut error = json!({"code": status, "message": message});
    if let Some(metadata) = metadata {
        error["metadata"] = metadata;
    }
    ErrorReply::json(status, json!({"error": error}))
}

fn anthropic_error(status: u16, kind: &str, message: &str, request_id: &str) -> ErrorReply {
    ErrorReply::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message},
               "request_id": format!("req_{request_id}")}),
    )
}

fn google_error(status: u16, canonical: &str, message: &str, details: Value) -> ErrorReply {
    let mut error = json!({"code": status, "message": message, "status": canonical});
    if details.as_array().is_some_and(|d| !d.is_empty()) {
        error["details"] = details;
    }
    ErrorReply::json(status, json!({"error": error}))
}

fn ollama_error(status: u16, message: &str) -> ErrorReply {
    ErrorReply::json(status, json!({"error": message}))
}

fn html(status: u16, reason: &str) -> ErrorReply {
    ErrorReply {
        status,
        headers: Vec::new(),
        content_type: "text/html",
        body: format!(
            "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
        ),
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or(match status {
            529 => "Overloaded",
            _ => "Error",
        })
}

/// Writes a server delay the way `format` says, on routes that send headers for it.
fn with_delay(mut reply: ErrorReply, delay: Option<Duration>, format: DelayFormat) -> ErrorReply {
    let Some(delay) = delay else { return reply };
    match format {
        DelayFormat::Seconds => {
            reply = reply.header("retry-after", ceil_secs(delay).to_string());
        }
        DelayFormat::Millis => {
            reply = reply.header("retry-after-ms", delay.as_millis().to_string());
        }
        DelayFormat::HttpDate => {
            let at = SystemTime::now() + Duration::from_secs(ceil_secs(delay));
            reply = reply.header("retry-after", httpdate::fmt_http_date(at));
        }
    }
    reply
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// What the route answers for a status fault or the simulated limit. `None`: the fault is
/// not an error reply on this route (it answers normally, or shapes the stream).
pub(crate) fn error_reply(ex: &Exchange, fault: &Fault) -> Option<ErrorReply> {
    if *fault == Fault::RejectPrefill {
        return Some(prefill_rejected(ex));
    }
    let model = ex.model.as_str();
    let reply = match ex.route {
        Route::OpenAi | Route::Azure => openai_family_error(ex, fault)?,
        Route::OpenRouter => match fault {
            Fault::RateLimited {
                retry_after,
                format,
            } => with_delay(
                openrouter_error(
                    429,
                    &format!(
                        "Rate limit exceeded: {model} is temporarily rate-limited upstream. Please retry shortly."
                    ),
                    Some(json!({"provider_name": "MockProvider"})),
                ),
                *retry_after,
                *format,
            ),
            Fault::QuotaExceeded => openrouter_error(
                402,
                "This request requires more credits, or fewer max_tokens. You requested up to 1024 tokens, but can only afford 12. To increase, visit https://openrouter.ai/settings/credits and add more credits",
                None,
            ),
            Fault::RequestTooLarge | Fault::ContextLength => openrouter_error(
                400,
                "This endpoint's maximum context length is 8192 tokens. However, you requested about 9513 tokens (8489 of text input, 1024 in the output). Please reduce the length of either one, or use the \"middle-out\" transform to compress your prompt automatically.",
                None,
            ),
            Fault::Status { status: 502 } => openrouter_error(
                502,
                "Provider returned error",
                Some(
                    json!({"provider_name": "MockProvider", "raw": "upstream connect error or disconnect/reset before headers"}),
                ),
            ),
            Fault::Status { status: 408 } => openrouter_error(408, "Request timed out", None),
            Fault::Status { status } => openrouter_error(*status, reason(*status), None),
            Fault::Overloaded => openrouter_error(
                503,
                "No allowed providers are available for the selected model.",
                None,
            ),
            Fault::Unauthorized => openrouter_error(401, "No auth credentials found", None),
            Fault::ModelNotFound => {
                openrouter_error(404, &format!("No endpoints found for {model}."), None)
            }
            Fault::ContentFilter => openrouter_error(
                403,
                &format!(
                    "{model} requires moderation on OpenRouter. Your input was flagged for \"violence\"."
                ),
                Some(
                    json!({"reasons": ["violence"], "flagged_input": "…", "provider_name": "MockProvider", "model_slug": model}),
                ),
            ),
            _ => return None,
        },
        Route::Anthropic => {
            let rid = ex.request_id.as_str();
            match fault {
                Fault::RateLimited { retry_after, format } => with_delay(
                    anthropic_error(429, "rate_limit_error", "This request would exceed the rate limit for your organization (mock) of 50 requests per minute. For details, refer to: https://docs.anthropic.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later. You may also contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit increase.", rid),
                    *retry_after,
                    *format,
                ),
                Fault::QuotaExceeded => anthropic_error(400, "invalid_request_error",
                    "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.", rid),
                Fault::RequestTooLarge => anthropic_error(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", rid),
                Fault::Status { status } => {
                    let (kind, message) = match status {
                        400 => ("invalid_request_error", "Invalid request"),
                        401 => ("authentication_error", "invalid x-api-key"),
                        402 => ("billing_error", "Your account has a billing issue."),
                        403 => ("permission_error", "Your API key does not have permission to use the specified resource."),
                        404 => ("not_found_error", "Not found"),
                        413 => ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
                        429 => ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
                        504 => ("timeout_error", "Request timed out"),
                        529 => ("overloaded_error", "Overloaded"),
                        _ => ("api_error", "Internal server error"),
                    };
                    anthropic_error(*status, kind, message, rid)
                }
                Fault::Overloaded => anthropic_error(529, "overloaded_error", "Overloaded", rid),
                Fault::Unauthorized => anthropic_error(401, "authentication_error", "invalid x-api-key", rid),
                Fault::ModelNotFound => anthropic_error(404, "not_found_error", &format!("model: {model}"), rid),
                Fault::ContextLength => anthropic_error(400, "invalid_request_error", "prompt is too long: 205351 tokens > 200000 maximum", rid),
                _ => return None,
            }
            .header("request-id", format!("req_{rid}"))
        }
        Route::Gemini => match fault {
            Fault::RateLimited { retry_after, .. } => {
                let mut details = vec![
                    json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                        "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                        "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "15"}]}),
                    json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{
                        "description": "Learn more about Gemini API quotas",
                        "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}]}),
                ];
                if let Some(delay) = retry_after {
                    details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                        "retryDelay": protobuf_duration(*delay)}));
                }
                google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    GEMINI_QUOTA_MESSAGE,
                    Value::Array(details),
                )
            }
            Fault::QuotaExceeded => google_error(
                429,
                "RESOURCE_EXHAUSTED",
                GEMINI_QUOTA_MESSAGE,
                json!([
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
                    "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                    "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": model}, "quotaValue": "200"}]}]),
            ),
            Fault::RequestTooLarge | Fault::ContextLength => google_error(
                400,
                "INVALID_ARGUMENT",
                "The input token count (1091639) exceeds the maximum number of tokens allowed (1048576).",
                json!([]),
            ),
            Fault::Status { status: 502 } => html(502, "Bad Gateway"),
            Fault::Status { status } => {
                let (canonical, message) = match status {
                    400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
                    403 => ("PERMISSION_DENIED", "The caller does not have permission"),
                    404 => ("NOT_FOUND", "Requested entity was not found."),
                    429 => (
                        "RESOURCE_EXHAUSTED",
                        "Resource has been exhausted (e.g. check quota).",
                    ),
                    503 => (
                        "UNAVAILABLE",
                        "The model is overloaded. Please try again later.",
                    ),
                    504 => (
                        "DEADLINE_EXCEEDED",
                        "The request timed out. Please try again.",
                    ),
                    _ => (
                        "INTERNAL",
                        "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
                    ),
                };
                google_error(*status, canonical, message, json!([]))
            }
            Fault::Overloaded => google_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                json!([]),
            ),
            Fault::Unauthorized => google_error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                json!([
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}]),
            ),
            Fault::ModelNotFound => google_error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{model} is not found for API version v1beta, or is not supported for generateContent. Call ListModels to see the list of available models and their supported methods."
                ),
                json!([]),
            ),
            _ => return None,
        },
        Route::Ollama => match fault {
            Fault::RateLimited {
                retry_after,
                format,
            } => with_delay(
                ollama_error(429, "too many requests"),
                *retry_after,
                *format,
            ),
            Fault::QuotaExceeded => ollama_error(
                429,
                "you (mock) have reached your weekly usage limit, upgrade for higher limits: https://ollama.com/upgrade",
            ),
            Fault::RequestTooLarge | Fault::ContextLength => {
                ollama_error(400, "the input length exceeds the context length")
            }
            Fault::Status { status: 502 } => {
                ollama_error(502, &format!("remote model {model} is unreachable"))
            }
            Fault::Status { status: 503 } | Fault::Overloaded => ollama_error(
                503,
                "server busy, please try again.  maximum pending requests exceeded",
            ),
            Fault::Status { status } => {
                ollama_error(*status, "an error was encountered while running the model")
            }
            Fault::Unauthorized => ollama_error(401, "unauthorized"),
            Fault::ModelNotFound => ollama_error(404, &format!("model '{model}' not found")),
            _ => return None,
        },
    };
    Some(reply)
}

const GEMINI_QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";

fn openai_family_error(ex: &Exchange, fault: &Fault) -> Option<ErrorReply> {
    let model = ex.model.as_str();
    let azure = ex.route == Route::Azure;
    let reply = match fault {
        Fault::RateLimited { retry_after, format } => {
            let reply = if azure {
                let secs = retry_after.map_or(1, ceil_secs);
                ErrorReply::json(429, json!({"error": {"code": "429", "message": format!(
                    "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after {secs} seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit.")}}))
            } else {
                let wait = retry_after.map_or_else(|| "1s".to_owned(), go_duration);
                openai_error(429, &format!(
                    "Rate limit reached for {model} in organization org-mock on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more."),
                    json!("requests"), Value::Null, json!("rate_limit_exceeded"))
            };
            with_delay(reply, *retry_after, *format)
        }
        Fault::QuotaExceeded if azure => ErrorReply::json(429, json!({"error": {"code": "429", "message":
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded call rate limit of your current AIServices S0 pricing tier. Please retry after 86400 seconds. Please contact Azure support service if you would like to further increase the default rate limit."}}))
            .header("retry-after", "86400"),
        Fault::QuotaExceeded => openai_error(429,
            "You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.",
            json!("insufficient_quota"), Value::Null, json!("insufficient_quota")),
        Fault::RequestTooLarge => openai_error(429, &format!(
            "Request too large for {model} in organization org-mock on tokens per min (TPM): Limit 30000, Requested 31538. The input or output tokens must be reduced in order to run successfully. Visit https://platform.openai.com/account/rate-limits to learn more."),
            json!("tokens"), Value::Null, json!("rate_limit_exceeded")),
        Fault::Status { status: 502 } => html(502, "Bad Gateway"),
        Fault::Status { status: 503 } | Fault::Overloaded => openai_error(503,
            "The engine is currently overloaded, please try again later", json!("server_error"), Value::Null, Value::Null),
        Fault::Status { status } if *status >= 500 => openai_error(*status,
            "The server had an error while processing your request. Sorry about that!", json!("server_error"), Value::Null, Value::Null),
        Fault::Status { status } => openai_error(*status, reason(*status), json!("invalid_request_error"), Value::Null, Value::Null),
        Fault::Unauthorized if azure => ErrorReply::json(401, json!({"error": {"code": "401", "message":
            "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}})),
        Fault::Unauthorized => openai_error(401,
            "Incorrect API key provided: sk-mock***. You can find your API key at https://platform.openai.com/account/api-keys.",
            json!("invalid_request_error"), Value::Null, json!("invalid_api_key")),
        Fault::ModelNotFound if azure => ErrorReply::json(404, json!({"error": {"code": "DeploymentNotFound", "message":
            "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}})),
        Fault::ModelNotFound => openai_error(404, &format!("The model `{model}` does not exist or you do not have access to it."),
            json!("invalid_request_error"), Value::Null, json!("model_not_found")),
        Fault::ContextLength => openai_error(400,
            "This model's maximum context length is 4097 tokens. However, your messages resulted in 4294 tokens. Please reduce the length of the messages.",
            json!("invalid_request_error"), json!("messages"), json!("context_length_exceeded")),
        Fault::ContentFilter if azure => ErrorReply::json(400, json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
            "type": null, "param": "prompt", "code": "content_filter", "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
                "hate": {"filtered": false, "severity": "safe"}, "jailbreak": {"filtered": true, "detected": true},
                "self_harm": {"filtered": false, "severity": "safe"}, "sexual": {"filtered": false, "severity": "safe"},
                "violence": {"filtered": false, "severity": "safe"}}}}})),
        Fault::ContentFilter => openai_error(400,
            "Invalid prompt: your prompt was flagged as potentially violating our usage policy. Please try again with a different prompt.",
            json!("invalid_request_error"), Value::Null, json!("content_policy_violation")),
        _ => return None,
    };
    Some(reply)
}

/// A refused assistant prefill: Anthropic's own 400, the route's plain 400 elsewhere.
fn prefill_rejected(ex: &Exchange) -> ErrorReply {
    const MESSAGE: &str = "This model does not support assistant message prefill. The conversation must end with a user message.";
    match ex.route {
        Route::Anthropic => ErrorReply::json(
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": MESSAGE}}),
        ),
        Route::OpenAi | Route::Azure => openai_error(
            400,
            MESSAGE,
            json!("invalid_request_error"),
            json!("messages"),
            Value::Null,
        ),
        _ => error_reply(ex, &Fault::Status { status: 400 }).expect("every route answers a 400"),
    }
}

/// The answer to a content-filter fault on routes that refuse with a 200: Anthropic's
/// `stop_reason: "refusal"` and Gemini's `promptFeedback.blockReason`.
pub(crate) fn refusal(ex: &Exchange) -> Option<(Value, Vec<Frame>)> {
    match ex.route {
        Route::Anthropic => {
            let body = json!({"id": format!("msg_{}", ex.request_id), "type": "message",
                "role": "assistant", "model": ex.model, "content": [], "stop_reason": "refusal",
                "stop_sequence": null,
                "usage": {"input_tokens": ex.prompt_tokens, "output_tokens": 0}});
            let frames = vec![
                anthropic_event(
                    "message_start",
                    json!({"type": "message_start",
                    "message": {"id": format!("msg_{}", ex.request_id), "type": "message",
                        "role": "assistant", "content": [], "model": ex.model, "stop_reason": null,
                        "stop_sequence": null, "usage": {"input_tokens": ex.prompt_tokens, "output_tokens": 1}}}),
                ),
                anthropic_event(
                    "message_delta",
                    json!({"type": "message_delta",
                    "delta": {"stop_reason": "refusal", "stop_sequence": null,
                        "stop_details": {"type": "refusal", "category": "violence"}},
                    "usage": {"output_tokens": 0}}),
                ),
                anthropic_event("message_stop", json!({"type": "message_stop"})),
            ];
            Some((body, frames))
        }
        Route::Gemini => {
            let body = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                "usageMetadata": ex.usage_gemini(None), "modelVersion": ex.model,
                "responseId": ex.request_id});
            let frames = vec![gemini_sse(body.clone())];
            Some((body, frames))
        }
        _ => None,
    }
}

/// `6m0s`, `1s`, `20ms`, `1m23.5s`: OpenAI's relative reset durations.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let (s, frac) = (rest / 1000, rest % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// `"36s"`, `"3.957525076s"`: a protobuf Duration as Google writes it.
fn protobuf_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        let nanos = format!("{:09}", d.subsec_nanos());
        format!("{}.{}s", d.as_secs(), nanos.trim_end_matches('0'))
    }
}

/// RFC 3339 in UTC with nanoseconds, as Ollama and Anthropic's resets write it.
pub(crate) fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

pub(crate) fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_read_like_openai_headers() {
        assert_eq!(go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(83_500)), "1m23.5s");
        assert_eq!(go_duration(Duration::from_secs(86_385)), "23h59m45s");
        for ms in [0_u64, 9, 999, 1000, 1001, 61_001, 3_600_000, 86_399_999] {
            let d = Duration::from_millis(ms);
            assert_eq!(
                llm_core::delay::parse_go_duration(&go_duration(d)),
                Some(d),
                "{ms} ms"
            );
        }
    }

    #[test]
    fn protobuf_durations_trim_trailing_zeros() {
        assert_eq!(protobuf_duration(Duration::from_secs(36)), "36s");
        assert_eq!(protobuf_duration(Duration::from_millis(3_957)), "3.957s");
    }
}
