//! The gateway (`llm-gateway`) over real loopback HTTP: the gateway on an
//! ephemeral port, mock providers from llm-testkit behind it, every endpoint driven with
//! reqwest and streams decoded by an independent SSE parser (`eventsource-stream`).
//!
//! Timings are real but short (retry delays of milliseconds, first-token timeouts of a few
//! hundred): a paused tokio clock races real sockets.

use std::collections::HashMap;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use llm_gateway::demo::DemoProviders;
use llm_testkit::server::{MockProvider, Plan, canonical_answer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const KEY: &str = "test-key";

/// A gateway over three mock providers — openai, anthropic, gemini — each with its plan.
struct Harness {
    base: String,
    mocks: HashMap<&'static str, MockProvider>,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Provider tables with fast retries and a quick breaker, so that tests take milliseconds.
fn providers_toml(mocks: &HashMap<&'static str, MockProvider>) -> String {
    let base = |name: &str| mocks[name].base_url();
    format!(
        r#"
request_timeout = "10s"
max_body_bytes = 4096

[[providers]]
name = "openai"
api_key = "{KEY}"
base_url = "{openai}/v1"
timeouts = {{ connect = "1s", first_token = "300ms", idle = "500ms", total = "1s" }}
retry = {{ base_delay = "10ms", max_delay = "40ms" }}
breaker = {{ consecutive_failures = 3, open_duration = "30s", open_jitter = 0.0 }}
rate_limit = {{ requests = {{ limit = 1000, per = "1m" }} }}

[[providers]]
name = "anthropic"
api_key = "{KEY}"
base_url = "{anthropic}"
timeouts = {{ connect = "1s", first_token = "300ms", idle = "500ms", total = "5s" }}
retry = {{ base_delay = "10ms", max_delay = "40ms" }}
breaker = {{ consecutive_failures = 3, open_duration = "30s", open_jitter = 0.0 }}

[[providers]]
name = "gemini"
api_key = "{KEY}"
base_url = "{gemini}/v1beta"
timeouts = {{ connect = "1s", first_token = "300ms", idle = "500ms", total = "5s" }}
retry = {{ base_delay = "10ms", max_delay = "40ms" }}
"#,
        openai = base("openai"),
        anthropic = base("anthropic"),
        gemini = base("gemini"),
    )
}

const ROUTES: &str = r#"
[[routes]]
model = "fast"
targets = [{ provider = "openai", model = "gpt-4o-mini" }, { provider = "anthropic", model = "claude-3-5-haiku-latest" }]

[[routes]]
model = "*"
targets = [{ provider = "gemini" }, { provider = "openai", model = "gpt-4o-mini" }]
"#;

/// The three mock providers, each with its plan (TOML, by provider; absent: healthy).
async fn start_mocks(plans: &[(&'static str, &str)]) -> HashMap<&'static str, MockProvider> {
    let mut mocks = HashMap::new();
    for name in ["openai", "anthropic", "gemini"] {
        let plan = plans
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(Plan::default(), |(_, toml)| Plan::from_toml(toml).unwrap());
        let mock = MockProvider::builder()
            .plan(plan)
            .api_key(KEY)
            .start()
            .await
            .unwrap();
        mocks.insert(name, mock);
    }
    mocks
}

impl Harness {
    /// Starts mocks with `plans` (TOML, by provider; absent: healthy) and a gateway over them
    /// with `routes` appended to its configuration.
    async fn start(plans: &[(&'static str, &str)], routes: &str) -> Harness {
        let mocks = start_mocks(plans).await;
        let text = providers_toml(&mocks) + routes;
        Harness::over(mocks, &text).await
    }

    /// A gateway configured by `text`, in front of `mocks`.
    async fn over(mocks: HashMap<&'static str, MockProvider>, text: &str) -> Harness {
        let config = GatewayConfig::from_toml(text, "test.toml", &|_| None).unwrap();
        let gateway = Gateway::new(&config, &|_| None).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(gateway.serve(listener, async move {
            let _ = stopped.await;
        }));
        Harness {
            base,
            mocks,
            client: reqwest::Client::new(),
            stop,
            served,
        }
    }

    /// Asks the gateway to shut down and waits until its `serve` returns.
    async fn shut_down(self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
        started.elapsed()
    }

    /// The gateway's address, for raw TCP clients.
    fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
        let (status, headers, bytes) = self.post_raw(path, body.to_string()).await;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path} answered non-JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, headers, body)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Server-sent events of a streamed completion: the `data` of each, in order.
    async fn stream(&self, body: Value) -> (u16, Vec<String>) {
        let response = self
            .client
            .post(format!("{}/v1/chat/completions", self.base))
            .json_body(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let mut events = Vec::new();
        let mut stream = response.bytes_stream().eventsource();
        while let Some(event) = stream.next().await {
            events.push(event.unwrap().data);
        }
        (status, events)
    }
}

/// reqwest without its `json` feature: a JSON body by hand.
trait JsonBody {
    fn json_body(self, body: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }
}

/// The JSON chunks of a stream's events (all but `[DONE]`) and the text they carry.
fn sse_chunks(events: &[String]) -> (Vec<Value>, String) {
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    (chunks, text)
}

fn chat(message: &str) -> Value {
    json!({ "message": message })
}

fn outcomes(body: &Value) -> Vec<(String, String)> {
    body["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["provider"].as_str().unwrap().to_owned(),
                a["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn api_chat_answers_from_the_first_provider() {
    let h = Harness::start(&[], ROUTES).await;
    let (status, _, body) = h.post("/api/chat", chat("Hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["response"], canonical_answer(60));
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["retryCount"], 0);
    assert_eq!(outcomes(&body), pairs(&[("openai", "ok")]));
    assert_eq!(h.mocks["openai"].attempts().len(), 1);
}

#[tokio::test]
async fn api_chat_uses_the_named_provider() {
    let h = Harness::start(&[], ROUTES).await;
    for (name, model) in [
        ("anthropic", "claude-3-5-haiku-latest"),
        ("gemini", "gemini-2.0-flash"),
    ] {
        let (status, _, body) = h
            .post("/api/chat", json!({ "message": "Hi", "provider": name }))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["provider"], name);
        assert_eq!(body["model"], model);
        assert_eq!(h.mocks[name].attempts().len(), 1);
    }
    assert!(h.mocks["openai"].attempts().is_empty());
}

#[tokio::test]
async fn api_chat_rejects_an_unknown_provider_naming_the_valid_ones() {
    let h = Harness::start(&[], ROUTES).await;
    let (status, _, body) = h
        .post(
            "/api/chat",
            json!({ "message": "Hi", "provider": "mistral" }),
        )
        .await;
    assert_eq!(status, 400);
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("mistral"), "{error}");
    assert!(error.contains("openai, anthropic, gemini"), "{error}");
    assert_eq!(
        body["validProviders"],
        json!(["openai", "anthropic", "gemini"])
    );
}

#[tokio::test]
async fn api_chat_rejects_a_missing_or_empty_message() {
    let h = Harness::start(&[], ROUTES).await;
    for body in [
        json!({}),
        json!({ "message": "" }),
        json!({ "message": "   " }),
    ] {
        let (status, _, answer) = h.post("/api/chat", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["error"].as_str().unwrap().contains("message"),
            "{answer}"
        );
    }
    let (status, _, answer) = h.post("/api/chat", json!({ "message": 42 })).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("invalid"),
        "{answer}"
    );
    for mock in h.mocks.values() {
        assert!(mock.attempts().is_empty(), "nothing reached a provider");
    }
}

#[tokio::test]
async fn a_rate_limited_primary_falls_back_at_once() {
    let plan = r#"
[[rule]]
sequence = [{ fault = "rate_limited", retry_after = "20s" }]
"#;
    let h = Harness::start(&[("openai", plan)], ROUTES).await;
    let (status, _, body) = h.post("/api/chat", chat("Hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(body["retryCount"], 1);
    assert_eq!(
        outcomes(&body),
        pairs(&[("openai", "rate_limited"), ("anthropic", "ok")])
    );
    assert_eq!(body["attempts"][0]["status"], 429);
    // Not retried on openai: a rate limit moves on.
    assert_eq!(h.mocks["openai"].attempts().len(), 1);

    // The provider's Retry-After paused openai's limiter: the next request skips it locally.
    let (_, _, body) = h.post("/api/chat", chat("Again")).await;
    assert_eq!(
        outcomes(&body),
        pairs(&[("openai", "local_rate_limited"), ("anthropic", "ok")])
    );
    assert_eq!(h.mocks["openai"].attempts().len(), 1);
}

#[tokio::test]
async fn a_timeout_fails_over_at_once_while_a_fallback_remains() {
    let plan = r#"
[[rule]]
sequence = [{ fault = "slow_first_token", delay = "2s" }, { fault = "status", status = 500 }]
"#;
    let h = Harness::start(&[("openai", plan)], ROUTES).await;
    let (status, _, body) = h.post("/api/chat", chat("Hello")).await;
    assert_eq!(status, 200, "{body}");
    // A silent target is not waited for twice: the next provider answers.
    assert_eq!(body["provider"], "anthropic");
    assert_eq!(body["retryCount"], 1);
    assert_eq!(
        outcomes(&body),
        pairs(&[("openai", "timeout"), ("anthropic", "ok")])
    );
    assert_eq!(h.mocks["openai"].attempts().len(), 1);
}

#[tokio::test]
async fn the_last_target_retries_a_timeout_and_a_server_error() {
    let plan = r#"
[[rule]]
sequence = [{ fault = "slow_first_token", delay = "2s" }, { fault = "status", status = 500 }]
"#;
    let routes = r#"
[[routes]]
model = "solo"
targets = [{ provider = "openai", model = "gpt-4o-mini" }]
"#;
    let h = Harness::start(&[("openai", plan)], routes).await;
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.base))
        .json_body(&json!({
            "model": "solo",
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-provider"], "openai");
    assert_eq!(response.headers()["x-gateway-attempts"], "3");
    assert_eq!(h.mocks["openai"].attempts().len(), 3);
}

#[tokio::test]
async fn a_stream_whose_first_token_is_late_fails_over_at_once() {
    let plan = r#"
[[rule]]
stream = true
sequence = [{ fault = "slow_first_token", delay = "2s" }]
"#;
    let h = Harness::start(&[("openai", plan)], ROUTES).await;
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.base))
        .json_body(&json!({
            "model": "fast",
            "stream": true,
            "max_tokens": 4,
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-provider"], "anthropic");
    assert_eq!(response.headers()["x-gateway-attempts"], "2");
    let text = response.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(h.mocks["openai"].attempts().len(), 1);
}

#[tokio::test]
async fn every_provider_failing_answers_503_with_the_attempts() {
    let down = r#"
[[rule]]
fault = { fault = "status", status = 500 }
"#;
    let h = Harness::start(
        &[("openai", down), ("anthropic", down), ("gemini", down)],
        ROUTES,
    )
    .await;
    let (status, headers, body) = h.post("/api/chat", chat("Hello")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "All LLM providers unavailable");
    assert!(headers.contains_key("retry-after"));
    let attempts = body["attempts"].as_array().unwrap();
    // 4 attempts on each provider: one request's own retries never open a breaker.
    assert_eq!(body["retryCount"], attempts.len() - 1);
    assert!(attempts.len() >= 9, "{body}");
    for name in ["openai", "anthropic", "gemini"] {
        assert!(
            attempts
                .iter()
                .any(|a| a["provider"] == name && a["outcome"] == "server_error"),
            "{name} was tried: {body}"
        );
    }
    let last_error = body["lastError"].as_str().unwrap();
    assert!(last_error.starts_with("gemini: "), "{last_error}");
}

#[tokio::test]
async fn chat_completions_answers_in_openai_format() {
    let h = Harness::start(&[], ROUTES).await;
    let (status, headers, body) = h
        .post(
            "/v1/chat/completions",
            json!({
                "model": "fast",
                "max_tokens": 12,
                "messages": [
                    { "role": "system", "content": "Be brief." },
                    { "role": "user", "content": [{ "type": "text", "text": "Hello" }] }
                ]
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini", "the model that answered");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        canonical_answer(12)
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 12);
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(headers["x-gateway-provider"], "openai");
    // The system prompt and the text part reached the provider.
    let sent = &h.mocks["openai"].attempts()[0];
    assert_eq!(sent.model, "gpt-4o-mini");
}

#[tokio::test]
async fn chat_completions_streams_in_openai_format() {
    let h = Harness::start(&[], ROUTES).await;
    let (status, events) = h
        .stream(json!({
            "model": "fast",
            "stream": true,
            "stream_options": { "include_usage": true },
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let (chunks, text) = sse_chunks(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(text, canonical_answer(60));
    assert!(chunks.iter().all(|c| c["model"] == "gpt-4o-mini"));
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 60);
}

#[tokio::test]
async fn a_stream_failing_before_its_first_chunk_falls_back() {
    let plan = r#"
[[rule]]
stream = true
fault = { fault = "overloaded" }
"#;
    let h = Harness::start(&[("openai", plan)], ROUTES).await;
    let (status, events) = h
        .stream(json!({
            "model": "fast",
            "stream": true,
            "max_tokens": 5,
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["model"], "claude-3-5-haiku-latest");
}

#[tokio::test]
async fn a_cut_upstream_stream_ends_with_an_error_event_not_done() {
    let plan = r#"
[[rule]]
stream = true
fault = { fault = "cut_after", chunks = 5 }
"#;
    // Recovery turned off: a route with a fallback continues broken streams by default.
    let routes = ROUTES.replacen(
        "{ provider = \"anthropic\", model = \"claude-3-5-haiku-latest\" }]",
        "{ provider = \"anthropic\", model = \"claude-3-5-haiku-latest\" }]\nrecovery = { after_output = \"fail\" }",
        1,
    );
    assert!(routes.contains("after_output"));
    let h = Harness::start(&[("openai", plan)], &routes).await;
    let (status, events) = h
        .stream(json!({
            "model": "fast",
            "stream": true,
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .await;
    assert_eq!(status, 200);
    assert!(!events.iter().any(|e| e == "[DONE]"), "{events:?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted", "{last}");
    let delivered: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(canonical_answer(60).starts_with(&delivered) && !delivered.is_empty());
    // Output had reached the caller: nothing was replayed on another provider.
    assert!(h.mocks["anthropic"].attempts().is_empty());
}

#[tokio::test]
async fn the_wildcard_route_passes_the_name_through_and_falls_back() {
    let plan = r#"
[[rule]]
model = "gemini-exp-*"
fault = { fault = "model_not_found" }
"#;
    let h = Harness::start(&[("gemini", plan)], ROUTES).await;
    let ask = |model: &str| json!({ "model": model, "messages": [{ "role": "user", "content": "Hi" }], "max_tokens": 3 });
    let (status, _, body) = h.post("/v1/chat/completions", ask("gemini-1.5-pro")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gemini-1.5-pro");
    let (status, headers, body) = h.post("/v1/chat/completions", ask("gemini-exp-1206")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(headers["x-gateway-provider"], "openai");
    assert_eq!(headers["x-gateway-attempts"], "2");
}

#[tokio::test]
async fn errors_come_back_in_openai_format_with_retry_after() {
    let limited = r#"
[[rule]]
fault = { fault = "rate_limited", retry_after = "30s" }
"#;
    let h = Harness::start(&[("openai", limited), ("anthropic", limited)], ROUTES).await;
    let (status, headers, body) = h
        .post(
            "/v1/chat/completions",
            json!({ "model": "fast", "messages": [{ "role": "user", "content": "Hi" }] }),
        )
        .await;
    assert_eq!(status, 429, "{body}");
    // Longer than the request's deadline: given up at once, the wait passed on.
    assert_eq!(headers["retry-after"], "30");
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].is_string());

    // No route and no wildcard: OpenAI's 404.
    let h = Harness::start(&[], "").await;
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            json!({ "model": "gpt-5", "messages": [{ "role": "user", "content": "Hi" }] }),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "model_not_found");
    assert_eq!(body["error"]["param"], "model");

    // A request the gateway cannot translate.
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "function", "content": "x" }] }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages[0].role");
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "tool", "content": "x" }] }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "messages[0].tool_call_id");

    // Numbers out of range are refused, never forwarded as null or rounded.
    for (field, value) in [
        ("temperature", json!(1e39)),
        ("temperature", json!(-0.5)),
        ("temperature", json!(2.5)),
        ("top_p", json!(1.5)),
        ("max_tokens", json!(0)),
    ] {
        let mut request =
            json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "Hi" }] });
        request[field] = value.clone();
        let (status, _, body) = h.post("/v1/chat/completions", request).await;
        assert_eq!(status, 400, "{field} = {value}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    assert!(
        h.mocks.values().all(|m| m.attempts().is_empty()),
        "nothing reached a provider"
    );
}

#[tokio::test]
async fn models_lists_the_routed_names() {
    let h = Harness::start(&[], ROUTES).await;
    let (status, text) = h.get("/v1/models").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["fast"]);

    // Without routes, one per provider's model.
    let h = Harness::start(&[], "").await;
    let (_, text) = h.get("/v1/models").await;
    let body: Value = serde_json::from_str(&text).unwrap();
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["gpt-4o-mini", "claude-3-5-haiku-latest", "gemini-2.0-flash"]
    );
}

#[tokio::test]
async fn health_and_metrics_reflect_a_breaker_trip() {
    let down = r#"
[[rule]]
fault = { fault = "overloaded" }
"#;
    let h = Harness::start(&[("anthropic", down)], ROUTES).await;
    let (_, before) = h.get("/health").await;
    let before: Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["status"], "ok");
    assert_eq!(before["providers"][1]["breaker"]["state"], "closed");

    // Three requests in a row fail on anthropic (each retried 3 times: one request's retries
    // count once), and the third opens its breaker: that request hands over at once.
    for attempts_on_anthropic in [4, 4, 1] {
        let (status, _, body) = h
            .post(
                "/api/chat",
                json!({ "message": "Hi", "provider": "anthropic" }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["provider"], "openai");
        let outcomes = outcomes(&body);
        assert_eq!(
            outcomes
                .iter()
                .filter(|(p, o)| p == "anthropic" && o == "overloaded")
                .count(),
            attempts_on_anthropic,
            "{body}"
        );
    }
    assert_eq!(h.mocks["anthropic"].attempts().len(), 9);
    // The fourth skips anthropic: no call reaches it, and it is not counted as an attempt.
    let (status, _, body) = h
        .post(
            "/api/chat",
            json!({ "message": "Hi", "provider": "anthropic" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        outcomes(&body),
        pairs(&[("anthropic", "circuit_open"), ("openai", "ok")])
    );
    assert_eq!(body["attempts"][0]["skipped"], true);
    assert_eq!(body["retryCount"], 0);
    assert_eq!(h.mocks["anthropic"].attempts().len(), 9);

    let (status, health) = h.get("/health").await;
    assert_eq!(status, 200);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["status"], "degraded");
    let anthropic = &health["providers"][1];
    assert_eq!(anthropic["name"], "anthropic");
    assert_eq!(anthropic["breaker"]["state"], "open");
    assert_eq!(anthropic["breaker"]["trips"], 1);
    assert!(anthropic["breaker"]["retryInMs"].as_u64().unwrap() > 0);
    assert!(
        health["providers"][0]["limiter"]["requestsAvailable"]
            .as_u64()
            .unwrap()
            > 0
    );

    let (status, metrics) = h.get("/metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"llm_breaker_transitions_total{breaker="anthropic/claude-3-5-haiku-latest",from="closed",to="open"} 1"#,
        r#"llm_breaker_state{breaker="anthropic/claude-3-5-haiku-latest"} 2"#,
        r#"llm_breaker_state{breaker="openai/gpt-4o-mini"} 0"#,
        r#"llm_breaker_rejections_total{breaker="anthropic/claude-3-5-haiku-latest"} 1"#,
        r#"llm_attempts_total{upstream="anthropic",outcome="overloaded"} 9"#,
        r#"llm_attempts_total{upstream="anthropic",outcome="circuit_open"} 1"#,
        r#"llm_attempts_total{upstream="openai",outcome="ok"} 4"#,
        r#"llm_retries_total{upstream="anthropic",kind="overloaded"} 6"#,
        r#"llm_retry_give_ups_total{upstream="anthropic",reason="retries_exhausted"} 2"#,
        r#"llm_fallbacks_total{from="anthropic",to="openai",reason="overloaded"} 3"#,
        r#"llm_fallbacks_total{from="anthropic",to="openai",reason="circuit_open"} 1"#,
        r#"gateway_requests_total{endpoint="/api/chat",status="200"} 4"#,
        r#"llm_tokens_total{upstream="openai",type="output"} 240"#,
        r#"gen_ai_client_operation_duration_count{gen_ai_operation_name="chat",gen_ai_provider_name="anthropic",llm_upstream="anthropic",error_type="overloaded"} 9"#,
        r#"gen_ai_client_token_usage_sum{gen_ai_operation_name="chat",gen_ai_provider_name="openai",llm_upstream="openai",gen_ai_token_type="output"} 240"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("gen_ai_client_operation_duration_bucket{"));

    // The providers' key appears in nothing the gateway serves.
    for text in [
        body.to_string(),
        serde_json::to_string(&health).unwrap(),
        metrics,
    ] {
        assert!(!text.contains(KEY));
    }
}

#[tokio::test]
async fn limiter_rejections_and_waits_are_counted() {
    let plan = r#"
[[rule]]
sequence = [
  { fault = "rate_limited", retry_after = "1s" },
  { fault = "ok" },
  { fault = "rate_limited", retry_after = "30s" },
]
"#;
    let h = Harness::start(&[("openai", plan)], ROUTES).await;
    let mut served_by = Vec::new();
    for _ in 0..5 {
        let (status, _, body) = h.post("/api/chat", chat("Hi")).await;
        assert_eq!(status, 200, "{body}");
        served_by.push(body["provider"].as_str().unwrap().to_owned());
    }
    // 1: a 429 asking for 1 s → anthropic, and openai's limiter pauses 1 s;
    // 2: the limiter holds the request through the pause (under its 2 s limit) → openai;
    // 3: a 429 asking for 30 s → anthropic; 4, 5: refused locally at once → anthropic.
    assert_eq!(
        served_by,
        ["anthropic", "openai", "anthropic", "anthropic", "anthropic"]
    );
    assert_eq!(h.mocks["openai"].attempts().len(), 3);
    let (_, metrics) = h.get("/metrics").await;
    for line in [
        r#"llm_ratelimit_waits_total{limiter="openai"} 1"#,
        r#"llm_ratelimit_wait_seconds_count{limiter="openai"} 1"#,
        r#"llm_ratelimit_rejections_total{limiter="openai"} 2"#,
        r#"llm_attempts_total{upstream="openai",outcome="local_rate_limited"} 2"#,
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let (_, health) = h.get("/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    let limiter = &health["providers"][0]["limiter"];
    assert!(
        limiter["pausedForMs"].as_u64().unwrap() > 20_000,
        "{limiter}"
    );
    assert_eq!(limiter["rejected"], 2);
}

#[tokio::test]
async fn malformed_and_oversize_bodies_are_refused_and_the_server_keeps_serving() {
    let h = Harness::start(&[], ROUTES).await;
    for path in ["/api/chat", "/v1/chat/completions"] {
        let (status, _, body) = h.post_raw(path, "{not json").await;
        assert_eq!(status, 400, "{path}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].to_string().contains("invalid JSON"), "{body}");

        let big = format!(r#"{{"message": "{}"}}"#, "x".repeat(10_000));
        let (status, _, _) = h.post_raw(path, big).await;
        assert_eq!(status, 413, "{path}");
    }
    let (status, _, body) = h.post("/api/chat", chat("still there?")).await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn invalid_configuration_names_the_file_the_field_and_the_reason() {
    let check = |text: &str, field: &str, reason: &str| {
        let err = GatewayConfig::from_toml(text, "gw.toml", &|_| None).unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("gw.toml: "), "{shown}");
        assert_eq!(err.error.field(), field, "{shown}");
        assert!(shown.contains(reason), "{shown} lacks {reason:?}");
    };
    check("", "providers", "at least one provider");
    check(
        "listen = \"127.0.0.1:3000\"\nrequest_timeout = \"soon\"",
        "request_timeout",
        "(line 2)",
    );
    check("lisen = \"x\"", "lisen", "unknown field");
    check(
        "listen = \"nowhere\"\n[[providers]]\nname = \"openai\"",
        "listen",
        "invalid socket address",
    );
    check(
        "[[providers]]\nname = \"openai\"\nretry = { base_delay = \"soon\" }",
        "providers[0].retry.base_delay",
        "soon",
    );
    // A bad value deep in a provider's table is named by its whole path.
    check(
        "[[providers]]\nname = \"openai\"\ntimeouts = { connect = \"soon\" }",
        "providers[0].timeouts.connect",
        "soon",
    );
    check(
        "[[providers]]\nname = \"openai\"\nbreaker = { scope = \"region\" }",
        "providers[0].breaker.scope",
        "region",
    );
    check(
        "[[providers]]\nname = \"openai\"\nretry = { base_delay = \"2s\", max_delay = \"1s\" }",
        "providers[0].retry.max_delay",
        "base_delay",
    );
    check(
        "[[providers]]\nname = \"openai\"\nbreaker = { failure_rate = 2.0 }",
        "providers[0].breaker.failure_rate",
        "",
    );
    check(
        "[[providers]]\nname = \"openai\"\nbreaker = { shared = { url = \"http://x\" } }",
        "providers[0].breaker.shared.url",
        "not a Redis URL",
    );
    check(
        "[[providers]]\nname = \"openai\"\nbreaker = { shared = { url = \"redis://x\", resync_every = \"0s\" } }",
        "providers[0].breaker.shared.resync_every",
        "longer than 0s",
    );
    check(
        "[[providers]]\nname = \"openai\"\nrate_limit = { shared = { url = \"redis://x\", timeout = \"0s\" } }",
        "providers[0].rate_limit.shared.timeout",
        "longer than 0s",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[auth.keys]]\nname = \"a\"\nkey_env = \"K\"\nrate_limit = { requests = { limit = 0, per = \"1m\" } }",
        "auth.keys[0].rate_limit.requests.limit",
        "",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[auth.keys]]\nname = \"a\"\nkey_env = \"K\"\nmodls = [\"x\"]",
        "auth.keys[0].modls",
        "unknown field",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[auth.keys]]\nname = \"a\"\nkey_sha256 = \"abc\"",
        "auth.keys[0].key_sha256",
        "64 hexadecimal",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[auth.keys]]\nname = \"a\"\nkey_env = \"K\"\nendpoints = [\"/v1/audio/speech\"]",
        "auth.keys[0].endpoints[0]",
        "names no endpoint",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[admin]\nlisten = \"nowhere\"",
        "admin.listen",
        "",
    );
    check(
        "[[providers]]\nname = \"openai\"\nrate_limit = { on_redis_failure = { policy = \"open\", share = 2.0 } }",
        "providers[0].rate_limit.on_redis_failure.share",
        "must be in (0, 1]",
    );
    check(
        "[[providers]]\nname = \"openai\"\nbse_url = \"http://x\"",
        "providers[0].bse_url",
        "unknown field `bse_url`",
    );
    check(
        "[[providers]]\nname = \"mine\"",
        "providers[0].kind",
        "is missing",
    );
    check(
        "[[providers]]\nname = \"vllm\"\nkind = \"openai_compatible\"\nbase_url = \"http://x/v1\"",
        "providers[0].model",
        "required",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[providers]]\nname = \"openai\"",
        "providers[1].name",
        "repeats",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[routes]]\nmodel = \"m\"\ntargets = [{ provider = \"azure\" }]",
        "routes[0].targets[0].provider",
        "configured: openai",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[routes]]\nmodel = \"m\"\ntargets = []",
        "routes[0].targets",
        "at least one",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[providers]]\nname = \"anthropic\"\n[[embedding_routes]]\nmodel = \"e\"\ndimensions = 8\ntargets = [{ provider = \"openai\" }, { provider = \"anthropic\" }]",
        "embedding_routes[0].targets[1].provider",
        "no embeddings API",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[embedding_routes]]\nmodel = \"e\"\ndimensions = 0\ntargets = [{ provider = \"openai\" }]",
        "embedding_routes[0].dimensions",
        "at least 1",
    );
    check(
        "[[providers]]\nname = \"openai\"\n[[embedding_routes]]\nmodel = \"e\"\ntargets = [{ provider = \"openai\" }]",
        "embedding_routes[0].dimensions",
        "missing field `dimensions`",
    );

    // A missing key names the variable, at gateway build time.
    let config =
        GatewayConfig::from_toml("[[providers]]\nname = \"anthropic\"", "gw.toml", &|_| None)
            .unwrap();
    let err = Gateway::from_config(&config, "gw.toml", &|_| None)
        .err()
        .unwrap();
    assert_eq!(err.error.field(), "providers[0].ANTHROPIC_API_KEY");
    assert!(err.to_string().starts_with("gw.toml: "));

    // A bad base URL from the file is named as the file's key, not as a variable.
    for url in ["ftp://x", "https://x.example/v1?key=1"] {
        let text =
            format!("[[providers]]\nname = \"openai\"\napi_key = \"k\"\nbase_url = \"{url}\"");
        let config = GatewayConfig::from_toml(&text, "gw.toml", &|_| None).unwrap();
        let err = Gateway::from_config(&config, "gw.toml", &|_| None)
            .err()
            .unwrap();
        assert_eq!(err.error.field(), "providers[0].base_url", "{err}");
    }
}

#[test]
fn configuration_reads_files_and_environment_overrides() {
    let dir = std::env::temp_dir().join(format!("llm-tower-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        "request_timeout = \"20s\"\n[[providers]]\nname = \"openai\"\napi_key_env = \"MY_KEY\"\nretry = { max_retries = 1 }\n",
    )
    .unwrap();
    let vars: HashMap<&str, &str> = HashMap::from([
        ("GATEWAY_LISTEN", "0.0.0.0:8080"),
        ("GATEWAY_OPENAI_MODEL", "gpt-4.1"),
        ("GATEWAY_OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ("GATEWAY_OPENAI_RETRY_MAX_ATTEMPTS", "5"),
        ("GATEWAY_OPENAI_CIRCUIT_BREAKER_THRESHOLD", "7"),
        ("MY_KEY", "sk-test"),
    ]);
    let lookup = |k: &str| vars.get(k).map(|v| (*v).to_owned());
    let config = GatewayConfig::from_file(&path, &lookup).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.request_timeout, Duration::from_secs(20));
    let openai = &config.providers[0];
    assert_eq!(openai.model, "gpt-4.1");
    assert_eq!(
        openai.connection.base_url.as_deref(),
        Some("http://127.0.0.1:9/v1")
    );
    assert_eq!(openai.retry.max_retries, 4);
    // The file's table overrides the gateway's defaults field by field.
    assert_eq!(openai.retry.base_delay, Duration::from_secs(1));
    assert_eq!(openai.breaker.consecutive_failures, Some(7));
    assert!(Gateway::new(&config, &lookup).is_ok());

    let bad: HashMap<&str, &str> = HashMap::from([("GATEWAY_OPENAI_RETRY_MAX_ATTEMPTS", "lots")]);
    let err =
        GatewayConfig::from_file(&path, &|k| bad.get(k).map(|v| (*v).to_owned())).unwrap_err();
    assert_eq!(err.source, "environment");
    assert_eq!(err.error.field(), "GATEWAY_OPENAI_RETRY_MAX_ATTEMPTS");

    let err = GatewayConfig::from_file(&dir.join("missing.toml"), &|_| None).unwrap_err();
    assert!(err.to_string().contains("missing.toml"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // No file: the providers whose keys are set.
    let keys: HashMap<&str, &str> =
        HashMap::from([("ANTHROPIC_API_KEY", "k1"), ("GEMINI_API_KEY", "k2")]);
    let config = GatewayConfig::from_env_keys(&|k| keys.get(k).map(|v| (*v).to_owned()))
        .unwrap()
        .unwrap();
    assert_eq!(config.provider_names(), ["anthropic", "gemini"]);
    assert!(GatewayConfig::from_env_keys(&|_| None).unwrap().is_none());
}

#[tokio::test]
async fn the_demo_configuration_starts_and_answers() {
    let demo = DemoProviders::start().await.unwrap();
    let config = demo.config().unwrap();
    assert_eq!(
        config.provider_names(),
        ["openai", "anthropic", "gemini", "openrouter"]
    );
    let gateway = Gateway::new(&config, &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    // The demo's openai answers, then rate-limits: the second request falls back.
    let mut providers = Vec::new();
    for _ in 0..2 {
        let response = client
            .post(format!("{base}/api/chat"))
            .json_body(&chat("Hello"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        providers.push(body["provider"].as_str().unwrap().to_owned());
    }
    assert_eq!(providers[0], "openai");
    assert_ne!(providers[1], "openai");

    // The other front doors answer too, embeddings included.
    let asks = [
        (
            "/v1/messages",
            json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "gemini-2.0-flash", "input": "Hi"}),
        ),
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": ["a", "b"]}),
        ),
    ];
    for (path, body) in asks {
        let response = client
            .post(format!("{base}{path}"))
            .header("anthropic-version", "2023-06-01")
            .json_body(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        if path == "/v1/embeddings" {
            assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 256);
        }
    }
}

#[test]
fn the_readme_configuration_parses_and_builds() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("**With configuration**").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let keys = |name: &str| {
        (name == "OPENAI_API_KEY" || name.starts_with("AZURE_")).then(|| "sk-test".to_owned())
    };
    let config = GatewayConfig::from_toml(text, "README.md", &keys).unwrap();
    assert_eq!(config.provider_names(), ["openai", "local", "azure"]);
    assert_eq!(config.routes.len(), 2);
    assert!(config.providers[0].rate_limit.requests.is_some());
    let azure = &config.providers[2];
    let regions: Vec<_> = azure
        .members
        .iter()
        .map(|m| m.name.as_deref().unwrap())
        .collect();
    assert_eq!(regions, ["eastus", "westus", "swedencentral"]);
    assert_eq!((azure.members[1].weight, azure.members[2].tier), (2, 1));
    Gateway::new(&config, &keys).unwrap();
}

#[test]
fn the_readme_pool_configuration_parses_and_builds() {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("### Several keys or deployments: pools")
        .unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let text = &section[start..start + section[start..].find("```").unwrap()];
    let keys = |name: &str| {
        name.starts_with("OPENAI_KEY_")
            .then(|| format!("sk-{name}"))
    };
    let config = GatewayConfig::from_toml(text, "README.md", &keys).unwrap();
    let openai = &config.providers[0];
    let names: Vec<_> = openai
        .members
        .iter()
        .map(|m| m.name.as_deref().unwrap())
        .collect();
    assert_eq!(names, ["key-1", "key-2", "backup"]);
    assert_eq!(openai.members[2].tier, 1);
    assert!(!openai.sticky_pool);
    // A key's variable missing is named at start-up.
    let missing = |name: &str| (name == "OPENAI_KEY_1").then(|| "sk-1".to_owned());
    let err = Gateway::new(&config, &missing).err().unwrap().to_string();
    assert!(err.contains("providers[0].keys[1]"), "{err}");
    Gateway::new(&config, &keys).unwrap();
}

#[test]
fn the_readme_key_configuration_parses_and_builds() {
    let readme = include_str!("../README.md");
    let section = &readme[readme.find("## Who may call").unwrap()..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    let keys_toml = &section[start..start + section[start..].find("```").unwrap()];
    let text = format!("[[providers]]\nname = \"openai\"\napi_key = \"sk-test\"\n\n{keys_toml}");
    let vars = |name: &str| (name == "TEAM_A_KEY").then(|| "gw-team-a-0123456789abcdef".to_owned());
    let config = GatewayConfig::from_toml(&text, "README.md", &vars).unwrap();
    assert_eq!(config.auth.keys[0].name, "team-a");
    let limit = config.auth.keys[0].rate_limit.as_ref().unwrap();
    assert_eq!(
        limit.mode,
        llm_tower::ratelimit::Mode::Reject,
        "a key's limit answers at once"
    );
    assert!(config.auth.shared.is_some());
    // Building needs a runtime for nothing but the key's Redis link, which is lazy.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { Gateway::new(&config, &vars).unwrap() });
    // The key's variable unset: the error names the field.
    let err = Gateway::new(&config, &|_| None).unwrap_err();
    assert_eq!(err.field(), "auth.keys[0].key_env");
}

/// The reference's defaults (README, "Configuration reference") are the code's.
#[test]
fn the_reference_defaults_are_the_code_defaults() {
    let config = GatewayConfig::from_toml(
        "[[providers]]\nname = \"openai\"\napi_key = \"sk-test\"\n",
        "test.toml",
        &|_| None,
    )
    .unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(config.request_timeout, Duration::from_secs(60));
    assert_eq!(config.max_body_bytes, 1 << 20);
    assert_eq!(config.server.header_timeout, Duration::from_secs(10));
    assert_eq!(config.server.body_timeout, Duration::from_secs(30));
    assert_eq!(config.server.max_connections, 10_000);
    assert_eq!(config.server.max_in_flight, 1_000);
    assert_eq!(config.server.max_in_flight_bytes, 64 << 20);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    let p = &config.providers[0];
    assert_eq!(p.model, "gpt-4o-mini");
    assert_eq!(p.retry.max_retries, 3);
    assert_eq!(p.retry.base_delay, Duration::from_secs(1));
    assert_eq!(p.retry.max_delay, Duration::from_secs(4));
    assert_eq!(p.retry.failover_delay, Duration::from_secs(4));
    assert_eq!(p.retry.max_retry_after, Duration::from_secs(120));
    assert_eq!(p.breaker.consecutive_failures, Some(3));
    assert_eq!(p.breaker.failure_rate, Some(0.5));
    assert_eq!(p.breaker.minimum_calls, 10);
    assert_eq!(p.breaker.open_duration, Duration::from_secs(5));
    assert_eq!(p.breaker.max_open_duration, Duration::from_secs(10));
    assert_eq!(p.breaker.open_jitter, 0.1);
    assert_eq!(format!("{:?}", p.breaker_scope), "Model");
    assert_eq!(p.rate_limit.mode, llm_tower::ratelimit::Mode::Wait);
    assert_eq!(p.rate_limit.max_wait, Duration::from_secs(2));
    assert_eq!(
        p.rate_limit.on_redis_failure,
        llm_tower::ratelimit::FailurePolicy::Open { share: 0.5 }
    );
    assert!(config.auth.keys.is_empty() && !config.auth.allow_unauthenticated);
    assert!(config.admin.listen.is_none() && config.admin.key_env.is_none());
}

/// Everything `tracing` writes, at TRACE: the gateway's, the layers', reqwest's, hyper's.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_api_key_never_reaches_logs_at_trace_responses_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime has one thread: the gateway and the mocks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let plan = r#"
[[rule]]
model = "bad-key"
fault = { fault = "unauthorized" }

[[rule]]
stream = true
fault = { fault = "cut_after", chunks = 2 }
"#;
    let h = Harness::start(
        &[("openai", plan), ("anthropic", plan), ("gemini", plan)],
        ROUTES,
    )
    .await;
    let mut served = String::new();
    for provider in ["openai", "anthropic", "gemini"] {
        let (_, _, body) = h
            .post(
                "/api/chat",
                json!({ "message": "Hi", "provider": provider }),
            )
            .await;
        served.push_str(&body.to_string());
    }
    for model in ["fast", "bad-key"] {
        let (_, _, body) = h
            .post(
                "/v1/chat/completions",
                json!({ "model": model, "messages": [{ "role": "user", "content": "Hi" }] }),
            )
            .await;
        served.push_str(&body.to_string());
        let (_, events) = h
            .stream(json!({ "model": model, "stream": true, "messages": [{ "role": "user", "content": "Hi" }] }))
            .await;
        served.push_str(&events.concat());
    }
    served.push_str(&h.get("/health").await.1);
    served.push_str(&h.get("/metrics").await.1);
    let config =
        GatewayConfig::from_toml(&providers_toml(&h.mocks), "test.toml", &|_| None).unwrap();
    served.push_str(&format!("{config:?}"));

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("TRACE"), "TRACE events were captured");
    assert!(logs.contains("unauthorized"), "the failures were logged");
    assert!(served.contains("unauthorized") || served.contains("All LLM providers"));
    for (what, text) in [("logs", &logs), ("responses and debug output", &served)] {
        assert!(!text.contains(KEY), "the key leaked into {what}");
    }
}

#[tokio::test]
async fn a_route_with_recovery_finishes_a_cut_stream_on_the_next_target() {
    let routes = r#"
[[routes]]
model = "fast"
targets = [{ provider = "openai", model = "gpt-4o-mini" }, { provider = "anthropic", model = "claude-3-5-haiku-latest" }]
recovery = { after_output = "continue" }
"#;
    let h = Harness::start(
        &[(
            "openai",
            "[[rule]]\nstream = true\nfault = { fault = \"cut_after\", chunks = 40 }\n",
        )],
        routes,
    )
    .await;
    let (status, events) = h
        .stream(json!({
            "model": "fast",
            "stream": true,
            "stream_options": { "include_usage": true },
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        events.last().map(String::as_str),
        Some("[DONE]"),
        "a repaired answer ends cleanly"
    );
    let (chunks, text) = sse_chunks(&events);
    assert!(chunks.iter().all(|c| c.get("error").is_none()));
    assert_eq!(
        text,
        canonical_answer(60),
        "nothing missing, nothing repeated"
    );
    let recovered = chunks.iter().find_map(|c| c.get("recovered")).unwrap();
    assert_eq!(
        recovered,
        &json!({ "from": "openai", "to": "anthropic", "after_tokens": 40, "mode": "prefill", "cause": "stream_interrupted" })
    );
    // Usage adds up both parts.
    assert!(
        chunks.last().unwrap()["usage"]["completion_tokens"]
            .as_u64()
            .unwrap()
            >= 60
    );
    let (_, metrics) = h.get("/metrics").await;
    let line = r#"llm_stream_recoveries_total{from="openai",to="anthropic",mode="prefill",outcome="recovered"} 1"#;
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");

    // An invalid policy names its field.
    let bad = format!(
        "{}{}",
        providers_toml(&h.mocks),
        routes.replace("\"continue\" }", "\"continue\", max_recoveries = 0 }")
    );
    let err = GatewayConfig::from_toml(&bad, "gw.toml", &|_| None).unwrap_err();
    assert_eq!(err.error.field(), "routes[0].recovery.max_recoveries");
}

#[tokio::test]
async fn two_gateways_share_one_rate_limit_through_redis() {
    let Some(redis) = llm_testkit::RedisServer::start() else {
        return;
    };
    // Two instances, each with its own providers' view, one quota for openai: 4 per minute.
    let shared = format!(
        r#"rate_limit = {{ requests = {{ limit = 4, per = "1m" }}, mode = "reject", shared = {{ url = "{}", key_prefix = "gw-test:openai:" }} }}"#,
        redis.url()
    );
    let mut instances = Vec::new();
    for _ in 0..2 {
        let mocks = start_mocks(&[]).await;
        let text = providers_toml(&mocks).replacen(
            "rate_limit = { requests = { limit = 1000, per = \"1m\" } }",
            &shared,
            1,
        ) + ROUTES;
        assert!(text.contains("gw-test:openai:"));
        instances.push(Harness::over(mocks, &text).await);
    }
    let mut by_openai = 0;
    for i in 0..10 {
        let (status, _, body) = instances[i % 2].post("/api/chat", chat("Hi")).await;
        assert_eq!(status, 200, "{body}");
        if body["provider"] == "openai" {
            by_openai += 1;
        } else {
            assert_eq!(
                body["attempts"][0]["outcome"], "local_rate_limited",
                "{body}"
            );
        }
    }
    assert_eq!(by_openai, 4, "one quota for both instances, not one each");
    let (_, health) = instances[1].get("/health").await;
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["providers"][0]["limiter"]["shared"], true);
    assert_eq!(health["providers"][0]["limiter"]["redisUnreachable"], false);
}

#[tokio::test]
async fn a_breaker_trip_in_one_gateway_opens_it_in_another_through_redis() {
    let Some(redis) = llm_testkit::RedisServer::start() else {
        return;
    };
    let shared = format!(
        r#"breaker = {{ consecutive_failures = 3, open_duration = "30s", open_jitter = 0.0, shared = {{ url = "{}", key_prefix = "gw-test:breaker:", resync_every = "200ms" }} }}"#,
        redis.url()
    );
    // Two instances; anthropic is failing only as instance 0 sees it.
    let mut instances = Vec::new();
    for plans in [
        &[(
            "anthropic",
            "[[rule]]\nfault = { fault = \"overloaded\" }\n",
        )][..],
        &[],
    ] {
        let mocks = start_mocks(plans).await;
        let breaker =
            r#"breaker = { consecutive_failures = 3, open_duration = "30s", open_jitter = 0.0 }"#;
        let text = providers_toml(&mocks);
        let at = text.find("name = \"anthropic\"").unwrap();
        let text = format!(
            "{}{}",
            &text[..at],
            text[at..].replacen(breaker, &shared, 1)
        ) + ROUTES;
        assert!(text.contains("gw-test:breaker:"));
        instances.push(Harness::over(mocks, &text).await);
    }
    let ask_anthropic = json!({ "message": "Hi", "provider": "anthropic" });
    // Three requests fail on anthropic in instance 0 (a request's retries count once): the
    // third trips its breaker.
    for _ in 0..3 {
        let (status, _, body) = instances[0].post("/api/chat", ask_anthropic.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["provider"], "openai", "{body}");
    }

    // Instance 1 never saw anthropic fail, yet skips it: the trip was shared.
    let mut health = Value::Null;
    for _ in 0..300 {
        let (_, text) = instances[1].get("/health").await;
        health = serde_json::from_str(&text).unwrap();
        if health["providers"][1]["breaker"]["state"] == "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let breaker = &health["providers"][1]["breaker"];
    assert_eq!(breaker["state"], "open", "{health}");
    assert_eq!(breaker["shared"], true);
    assert_eq!(breaker["redisUnreachable"], false);
    let (status, _, body) = instances[1].post("/api/chat", ask_anthropic).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["provider"], "openai");
    assert_eq!(body["attempts"][0]["outcome"], "circuit_open", "{body}");
    assert_eq!(instances[1].mocks["anthropic"].attempts().len(), 0);
    // The unshared breakers stay each instance's own.
    assert_eq!(health["providers"][0]["breaker"]["shared"], false);
}

#[tokio::test]
async fn an_open_breaker_is_counted_not_logged_per_request() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The test's runtime has one thread: the gateway and the mocks log through this too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let down = "[[rule]]\nfault = { fault = \"overloaded\" }\n";
    let h = Harness::start(&[("anthropic", down)], ROUTES).await;
    let ask = json!({ "message": "Hi", "provider": "anthropic" });
    for _ in 0..3 {
        let (status, _, body) = h.post("/api/chat", ask.clone()).await;
        assert_eq!(status, 200, "{body}");
    }
    let before = captured.0.lock().unwrap().len();
    // The breaker is open: 50 requests skip anthropic.
    for _ in 0..50 {
        let (status, _, body) = h.post("/api/chat", ask.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["attempts"][0]["outcome"], "circuit_open");
    }
    let logs = String::from_utf8(captured.0.lock().unwrap()[before..].to_vec()).unwrap();
    assert_eq!(
        logs.lines().count(),
        0,
        "warnings while the breaker was open:\n{logs}"
    );
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains(r#"llm_attempts_total{upstream="anthropic",outcome="circuit_open"} 50"#),
        "{metrics}"
    );
}

/// The front door's limits, short enough for a test, after `ROUTES`.
const TIGHT_SERVER: &str = r#"
[server]
header_timeout = "300ms"
body_timeout = "300ms"
max_connections = 4
max_in_flight = 2
shutdown_timeout = "300ms"
"#;

/// Reads from `tcp` until the gateway closes it; how long that took (`None`: still open
/// after `within`).
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_at_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let h = Harness::start(&[], &format!("{ROUTES}{TIGHT_SERVER}")).await;
    // Slowloris: a byte every 100 ms, never a whole head.
    let mut slow = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let trickle = async {
        for byte in b"POST /api/chat HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(450), trickle).await;
    let closed = closed_within(&mut slow, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "the slow connection is still open");

    // A connection that sends nothing at all, and one idle after a request: both closed.
    let mut silent = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(2))
        .await
        .unwrap();
    eprintln!("silent connection: closed after {closed:?}");
    assert!(closed < Duration::from_secs(1), "{closed:?}");
    let mut idle = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    idle.write_all(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let closed = closed_within(&mut idle, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(closed < Duration::from_secs(1), "{closed:?}");
}

#[tokio::test]
async fn a_body_that_never_comes_is_refused_at_the_body_timeout_or_the_declared_size() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start(&[], &format!("{ROUTES}{TIGHT_SERVER}")).await;
    // 100 bytes declared, 9 sent.
    let mut tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    tcp.write_all(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"message\"",
    )
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut answer))
        .await
        .expect("answered within the body timeout")
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 4"), "{head}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // 10 GB declared: 413 before a byte of it is read.
    let mut tcp = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    tcp.write_all(
        b"POST /api/chat HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{",
    )
    .await
    .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(h.mocks.values().all(|m| m.attempts().is_empty()));
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once_and_the_gateway_keeps_serving() {
    let h = Harness::start(&[], &format!("{ROUTES}{TIGHT_SERVER}")).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(h.addr()).await.unwrap());
    }
    // Let the gateway accept them.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut fifth = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    let closed = closed_within(&mut fifth, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(closed < Duration::from_millis(200), "{closed:?}");
    // The held ones time out (header timeout) and free their places.
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, _) = h.get("/v1/models").await;
    assert_eq!(status, 200);
    let (_, metrics) = h.get("/metrics").await;
    assert!(
        metrics.contains("gateway_connections_refused_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_a_fast_503() {
    let slow = "latency = \"700ms\"\n";
    // Connections are not the limit here: five clients may connect.
    let server = TIGHT_SERVER.replace("max_connections = 4", "max_connections = 16");
    let h = Harness::start(&[("openai", slow)], &format!("{ROUTES}{server}")).await;
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all((0..5).map(|_| {
        let client = h.client.clone();
        let url = format!("{}/api/chat", h.base);
        async move {
            let response = client
                .post(url)
                .json_body(&chat("Hello"))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.headers().get("retry-after").cloned(),
                started.elapsed(),
            )
        }
    }))
    .await;
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    let shed: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert_eq!((ok, shed.len()), (2, 3), "{answers:?}");
    for (_, retry_after, elapsed) in shed {
        assert!(retry_after.is_some());
        assert!(*elapsed < Duration::from_millis(500), "{elapsed:?}");
    }
}

#[tokio::test]
async fn shutdown_ends_within_its_drain_deadline_whatever_clients_hold() {
    use tokio::io::AsyncWriteExt;
    let slow = "chunk_interval = \"200ms\"\n";
    let h = Harness::start(&[("openai", slow)], &format!("{ROUTES}{TIGHT_SERVER}")).await;
    // A half-sent request head, and a stream in flight (60 chunks, 200 ms apart).
    let mut half = tokio::net::TcpStream::connect(h.addr()).await.unwrap();
    half.write_all(b"POST /api/chat HTTP/1.1\r\nHost:")
        .await
        .unwrap();
    let response = h
        .client
        .post(format!("{}/v1/chat/completions", h.base))
        .json_body(&json!({
            "model": "fast",
            "stream": true,
            "messages": [{ "role": "user", "content": "Hello" }]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reading = tokio::spawn(async move { response.text().await });
    let took = h.shut_down().await;
    eprintln!("shutdown with a stream and a half-sent head in flight: {took:?}");
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    // The stream was cut by the deadline, not left hanging.
    let ended = tokio::time::timeout(Duration::from_secs(2), reading).await;
    assert!(ended.is_ok(), "the stream is still open");
}

/// An OpenAI-format upstream that answers every request with one fixed completion and keeps
/// each request body it received (an independent server: not the test kit's mock).
async fn recording_upstream() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let body = loop {
                    let Ok(n) = tcp.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    data.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&data).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if text.starts_with("GET ") {
                        // The gateway's start-up probe (its model listing): not a chat body.
                        let _ = tcp
                            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                            .await;
                        return;
                    }
                    if data.len() >= end + 4 + length {
                        break data[end + 4..end + 4 + length].to_vec();
                    }
                };
                seen.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                let answer = r#"{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;
                let _ = tcp
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                            answer.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            });
        }
    });
    (url, bodies)
}

#[tokio::test]
async fn request_fields_are_passed_through_or_refused_never_dropped() {
    let (url, bodies) = recording_upstream().await;
    let routes = format!(
        r#"{ROUTES}
[[routes]]
model = "plain"
targets = [{{ provider = "compatible", model = "m" }}]

[[routes]]
model = "claude-first"
targets = [{{ provider = "anthropic", model = "claude-3-5-haiku-latest" }}, {{ provider = "openai", model = "gpt-4o-mini" }}]

[[routes]]
model = "claude-only"
targets = [{{ provider = "anthropic", model = "claude-3-5-haiku-latest" }}]
"#
    );
    let mocks = start_mocks(&[]).await;
    let text = providers_toml(&mocks).replacen(
        "[[providers]]",
        &format!(
            "[[providers]]\nname = \"compatible\"\nkind = \"openai_compatible\"\nbase_url = \"{url}\"\nmodel = \"m\"\napi_key = \"k\"\n\n[[providers]]"
        ),
        1,
    ) + &routes;
    let h = Harness::over(mocks, &text).await;
    let ask = |model: &str, extra: Value| {
        let mut body = json!({ "model": model, "messages": [{ "role": "user", "content": "Hi" }] });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    // To an OpenAI-format upstream, fields the gateway does not translate go as they are.
    let extra = json!({
        "seed": 7,
        "user": "u-1",
        "metadata": { "team": "a" },
        "frequency_penalty": 0.5,
        "response_format": { "type": "json_object" },
        "n": 1,
    });
    let (status, _, body) = h.post("/v1/chat/completions", ask("plain", extra)).await;
    assert_eq!(status, 200, "{body}");
    let sent = bodies.lock().unwrap()[0].clone();
    for field in [
        "seed",
        "user",
        "metadata",
        "frequency_penalty",
        "response_format",
    ] {
        assert!(sent.get(field).is_some(), "{field} was dropped: {sent}");
    }
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["metadata"]["team"], "a");

    // A route with a non-OpenAI target: a field the gateway does not translate is a 400
    // naming the field and the target.
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            ask("fast", json!({ "metadata": { "team": "a" } })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "metadata");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anthropic"),
        "{body}"
    );

    // A translated field a target cannot honour: that target is skipped, unasked.
    let (status, headers, body) = h
        .post(
            "/v1/chat/completions",
            ask("claude-first", json!({ "seed": 7 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-gateway-provider"], "openai");
    assert!(h.mocks["anthropic"].attempts().is_empty());
    // When no target can, a 400 saying which feature and which target.
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            ask("claude-only", json!({ "seed": 7 })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_feature");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("seed") && message.contains("anthropic"),
        "{body}"
    );

    // Log probabilities pass through to an OpenAI-format upstream.
    let (status, _, body) = h
        .post(
            "/v1/chat/completions",
            ask("plain", json!({ "logprobs": true, "top_logprobs": 2 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sent = bodies.lock().unwrap().last().unwrap().clone();
    assert_eq!(
        (&sent["logprobs"], &sent["top_logprobs"]),
        (&json!(true), &json!(2))
    );

    // What the gateway cannot carry back is refused, never dropped.
    for (field, value) in [
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({ "voice": "alloy", "format": "wav" })),
        ("functions", json!([{ "name": "f" }])),
    ] {
        let (status, _, body) = h
            .post(
                "/v1/chat/completions",
                ask("plain", json!({ field: value })),
            )
            .await;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"]["param"], field, "{body}");
    }
    for (part, param) in [
        (
            json!({ "type": "input_audio", "input_audio": { "data": "x", "format": "wav" } }),
            "messages[0].content[0]",
        ),
        (
            json!({ "type": "file", "file": { "file_id": "file-1" } }),
            "messages[0].content[0]",
        ),
    ] {
        let message =
            json!({ "model": "plain", "messages": [{ "role": "user", "content": [part] }] });
        let (status, _, body) = h.post("/v1/chat/completions", message).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let audio = json!({ "model": "plain", "messages": [{ "role": "user", "content": "Hi", "audio": { "id": "a" } }] });
    let (status, _, body) = h.post("/v1/chat/completions", audio).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["param"], "messages[0].audio");
    // A participant's name is carried.
    let named = json!({ "model": "plain", "messages": [{ "role": "user", "content": "Hi", "name": "ann" }] });
    let (status, _, body) = h.post("/v1/chat/completions", named).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bodies.lock().unwrap()[2]["messages"][0]["name"], "ann");
    assert_eq!(
        bodies.lock().unwrap().len(),
        3,
        "nothing refused reached the upstream"
    );
}

/// A reload keeps the stack of a provider whose table did not change: its open breaker stays
/// open; a provider whose table changed starts afresh.
#[tokio::test]
async fn a_reload_keeps_the_breakers_of_unchanged_providers() {
    let mock = MockProvider::builder()
        .plan(Plan::from_toml("[[rule]]\nfault = { fault = \"status\", status = 500 }\n").unwrap())
        .api_key(KEY)
        .start()
        .await
        .unwrap();
    let provider = |timeout: &str| {
        format!(
            "[[providers]]\nname = \"llm\"\nkind = \"openai_compatible\"\nbase_url = \"{}/v1\"\nmodel = \"m\"\napi_key = \"{KEY}\"\ntimeouts = {{ connect = \"{timeout}\" }}\nretry = {{ max_retries = 0 }}\nbreaker = {{ scope = \"provider\", consecutive_failures = 1, open_duration = \"60s\", max_open_duration = \"60s\", open_jitter = 0.0 }}\n",
            mock.base_url()
        )
    };
    let config = |text: &str| GatewayConfig::from_toml(text, "test.toml", &|_| None).unwrap();
    let gateway = Gateway::new(&config(&provider("5s")), &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let breaker = || async {
        let health: Value = client
            .get(format!("{base}/health"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["providers"][0]["breaker"]["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let failed = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 502);
    assert_eq!(breaker().await, "open");

    // The same provider table, a route added: the breaker stays open.
    let with_route = provider("5s")
        + "[[routes]]\nmodel = \"extra\"\ntargets = [{ provider = \"llm\", model = \"m\" }]\n";
    gateway
        .reload(&config(&with_route), &|_| None, None)
        .unwrap();
    assert_eq!(breaker().await, "open");

    // Its table changed: a fresh stack, the breaker closed.
    gateway
        .reload(&config(&provider("6s")), &|_| None, None)
        .unwrap();
    assert_eq!(breaker().await, "closed");
}

/// A reload keeps the limiter of a key whose table did not change (its count goes on), and
/// a model pattern ending in a multi-byte character is read, not a panic.
#[tokio::test]
async fn a_reload_keeps_the_count_of_unchanged_keys() {
    let mock = MockProvider::builder().api_key(KEY).start().await.unwrap();
    let text = |limit: u32| {
        format!(
            "[[providers]]\nname = \"llm\"\nkind = \"openai_compatible\"\nbase_url = \"{}/v1\"\nmodel = \"m\"\napi_key = \"{KEY}\"\n\n[[auth.keys]]\nname = \"a\"\nkey = \"gw-key-a-0123456789abcdef\"\nmodels = [\"m\", \"modèle-é\"]\nrate_limit = {{ requests = {{ limit = {limit}, per = \"1m\" }} }}\n",
            mock.base_url()
        )
    };
    let config = |text: &str| GatewayConfig::from_toml(text, "test.toml", &|_| None).unwrap();
    let gateway = Gateway::new(&config(&text(2)), &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(gateway.clone().serve(listener, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let ask = || async {
        client
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth("gw-key-a-0123456789abcdef")
            .json(&json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!((ask().await, ask().await), (200, 200));
    // The same key table, a route added: the count goes on.
    let with_route = text(2)
        + "[[routes]]\nmodel = \"m\"\ntargets = [{ provider = \"llm\", model = \"m\" }]\n"
        + "[[routes]]\nmodel = \"extra\"\ntargets = [{ provider = \"llm\", model = \"m\" }]\n";
    gateway
        .reload(&config(&with_route), &|_| None, None)
        .unwrap();
    assert_eq!(ask().await, 429);
    // Its limit changed: a fresh limiter.
    gateway.reload(&config(&text(3)), &|_| None, None).unwrap();
    assert_eq!(ask().await, 200);
}
