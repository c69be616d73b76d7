//! The front doors beyond chat completions — Anthropic Messages, OpenAI Responses,
//! embeddings — over real loopback HTTP, in front of the test kit's mock provider (one
//! server speaking every provider's format). The official SDKs drive the same doors in
//! `tests/sdk`; these tests check what the SDKs do not show: block order and indexes, the
//! signatures that must come back, what reached the upstream, error shapes.

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use llm_gateway::Gateway;
use llm_gateway::config::GatewayConfig;
use llm_providers::{ChatRequest, Message};
use llm_testkit::server::{MockProvider, Plan};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const KEY: &str = "test-key";

struct Doors {
    base: String,
    client: reqwest::Client,
    mock: MockProvider,
}

/// A gateway over one mock provider reached as openai, anthropic, gemini and ollama, with
/// `routes` appended; the mock follows `plan`.
async fn start(plan: &str, routes: &str) -> Doors {
    let mock = MockProvider::builder()
        .plan(Plan::from_toml(plan).unwrap())
        .api_key(KEY)
        .start()
        .await
        .unwrap();
    let base = mock.base_url();
    let text = format!(
        r#"
request_timeout = "10s"

[[providers]]
name = "openai"
kind = "openai_compatible"
api_key = "{KEY}"
base_url = "{base}/v1"
model = "gpt-4o-mini"
retry = {{ max_retries = 0 }}

[[providers]]
name = "anthropic"
api_key = "{KEY}"
base_url = "{base}"
retry = {{ max_retries = 0 }}

[[providers]]
name = "gemini"
api_key = "{KEY}"
base_url = "{base}/v1beta"
retry = {{ max_retries = 0 }}

[[providers]]
name = "ollama"
base_url = "{base}"
retry = {{ max_retries = 0 }}
{routes}"#
    );
    let config = GatewayConfig::from_toml(&text, "test.toml", &|_| None).unwrap();
    let gateway = Gateway::new(&config, &|_| None).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    Doors {
        base: addr,
        client: reqwest::Client::new(),
        mock,
    }
}

const ROUTES: &str = r#"
[[routes]]
model = "claude"
targets = [{ provider = "anthropic", model = "claude-sonnet-4-5" }]

[[routes]]
model = "gpt"
targets = [{ provider = "openai", model = "gpt-4o-mini" }]

[[routes]]
model = "echo"
targets = [{ provider = "openai", model = "gpt-echo" }]

[[routes]]
model = "breaks"
targets = [{ provider = "anthropic", model = "claude-breaks" }]
"#;

const BREAKS: &str = r#"
[[rule]]
model = "claude-breaks"
stream = true
fault = { fault = "error_after", chunks = 3 }
"#;

impl Doors {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }

    /// The events of a stream: (event name, data as JSON).
    async fn events(&self, path: &str, body: &Value) -> Vec<(String, Value)> {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream().eventsource();
        let mut events = Vec::new();
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            events.push((event.event, serde_json::from_str(&event.data).unwrap()));
        }
        events
    }

    async fn get(&self, path: &str, anthropic: bool) -> Value {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if anthropic {
            request = request.header("anthropic-version", "2023-06-01");
        }
        let text = request.send().await.unwrap().text().await.unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// Checks Anthropic's block discipline: `message_start` first, blocks started at 0, 1, 2…,
/// every delta inside its block, `message_delta` and `message_stop` last.
fn check_block_order(events: &[(String, Value)]) {
    let names: Vec<&str> = events
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| *n != "ping")
        .collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let mut open: Option<u64> = None;
    let mut next = 0;
    for (name, data) in events {
        assert_eq!(
            data["type"],
            name.as_str(),
            "the event name repeats the type"
        );
        match name.as_str() {
            "content_block_start" => {
                assert_eq!(open, None, "a block started inside another");
                assert_eq!(data["index"], next);
                open = Some(next);
                next += 1;
            }
            "content_block_delta" => assert_eq!(data["index"].as_u64(), open),
            "content_block_stop" => {
                assert_eq!(data["index"].as_u64(), open);
                open = None;
            }
            _ => {}
        }
    }
    assert_eq!(open, None, "a block was never stopped");
}

#[tokio::test]
async fn thinking_comes_back_signed_in_order_from_an_anthropic_upstream() {
    let doors = start("", ROUTES).await;
    let body = json!({
        "model": "claude", "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
    });
    let (status, message) = doors.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{message}");
    let content = message["content"].as_array().unwrap();
    assert_eq!(content[0]["type"], "thinking", "{message}");
    let signature = content[0]["signature"].as_str().unwrap();
    assert!(!signature.is_empty(), "{message}");
    let tool = content.iter().find(|b| b["type"] == "tool_use").unwrap();
    assert_eq!(tool["input"], json!({"n": 1, "tool": "get_weather"}));
    assert_eq!(message["stop_reason"], "tool_use");

    // Streamed: thinking deltas, the signature last in its block, then the tool call.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = doors.events("/v1/messages", &streamed).await;
    check_block_order(&events);
    let deltas: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["type"].as_str().unwrap())
        .collect();
    let signature_at = deltas.iter().position(|d| *d == "signature_delta").unwrap();
    assert!(
        deltas[..signature_at]
            .iter()
            .all(|d| *d == "thinking_delta")
    );
    assert!(
        deltas[signature_at + 1..]
            .iter()
            .all(|d| *d == "input_json_delta")
    );
    let end = &events.iter().find(|(n, _)| n == "message_delta").unwrap().1;
    assert_eq!(end["delta"]["stop_reason"], "tool_use");

    // The signed block and the call go back with the result: accepted, answered.
    let follow = json!({
        "model": "claude", "max_tokens": 4096,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": body["tools"],
        "messages": [
            body["messages"][0],
            {"role": "assistant", "content": message["content"]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool["id"], "content": "18 C"}]},
        ],
    });
    let (status, answer) = doors.post("/v1/messages", &follow).await;
    assert_eq!(status, 200, "{answer}");
    let text = answer["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "text")
        .unwrap();
    assert_eq!(text["text"], "Tool get_weather said: 18 C.");
}

#[tokio::test]
async fn the_blocks_of_a_messages_request_reach_an_openai_upstream() {
    let doors = start("", ROUTES).await;
    let body = json!({
        "model": "echo", "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            ]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"at": "it"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat", "is_error": false},
                {"type": "text", "text": "And now?"},
            ]},
        ],
    });
    let (status, message) = doors.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{message}");
    let read: Value =
        serde_json::from_str(message["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(read["system"], "Be brief.\n\nBe kind.", "{read}");
    let turns = read["messages"].as_array().unwrap();
    assert_eq!(
        turns[0]["media"][0], "image:image/png:iVBORw0KGgo=",
        "{read}"
    );
    assert_eq!(turns[1]["tool_calls"][0]["arguments"], json!({"at": "it"}));
    assert_eq!(turns[2]["role"], "tool");
    assert_eq!(turns[2]["text"], "a cat");
    assert_eq!(turns[3]["text"], "And now?");
}

#[tokio::test]
async fn reasoning_without_a_signature_is_not_sent_to_anthropic_as_thinking() {
    let doors = start("", ROUTES).await;
    // Reasoning another provider wrote comes back to the client with an empty signature;
    // replayed on an Anthropic route, it must not reach Anthropic as a thinking block.
    let body = json!({
        "model": "claude", "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Let me think.", "signature": ""},
                {"type": "text", "text": "Hello."},
            ]},
            {"role": "user", "content": "And?"},
        ],
    });
    // (The mock refuses an unsigned thinking block with a 400, as Anthropic does.)
    let (status, message) = doors.post("/v1/messages", &body).await;
    assert_eq!(status, 200, "{message}");
}

#[tokio::test]
async fn messages_errors_answer_in_anthropics_shape() {
    let doors = start("", ROUTES).await;
    let cases = [
        (
            json!({"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]}),
            400,
            "invalid_request_error",
            "max_tokens: Field required",
        ),
        (
            json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "citations": [{"x": 1}]}]}]}),
            400,
            "invalid_request_error",
            "messages.0.content.0.citations",
        ),
        (
            json!({"model": "gpt", "max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "Hi"}]}),
            400,
            "invalid_request_error",
            "`top_k` cannot be sent to openai",
        ),
        (
            json!({"model": "gpt", "max_tokens": 4096, "thinking": {"type": "enabled", "budget_tokens": 2048, "display": "omitted"},
                   "messages": [{"role": "user", "content": "Hi"}]}),
            400,
            "invalid_request_error",
            "thinking.display",
        ),
        (
            json!({"model": "nope", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
            404,
            "not_found_error",
            "model: the model \"nope\" is not routed",
        ),
    ];
    for (body, status, kind, message) in cases {
        let (got, error) = doors.post("/v1/messages", &body).await;
        assert_eq!(got, status, "{error}");
        assert_eq!(error["type"], "error", "{error}");
        assert_eq!(error["error"]["type"], kind, "{error}");
        let text = error["error"]["message"].as_str().unwrap();
        assert!(
            text.starts_with(message),
            "{text:?} does not start with {message:?}"
        );
    }
    // The front door's own refusals speak the door's dialect too: a declared body over
    // `max_body_bytes` (1 MiB) is refused before it is read.
    let big = json!({"model": "gpt", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "x".repeat(2 << 20)}]});
    let (status, error) = doors.post("/v1/messages", &big).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["type"], "request_too_large", "{error}");
    let (status, error) = doors.post("/v1/responses", &big).await;
    assert_eq!(status, 413, "{error}");
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");

    // A field Anthropic reads passes through to an Anthropic upstream.
    let body = json!({"model": "claude", "max_tokens": 10, "top_k": 5, "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(doors.post("/v1/messages", &body).await.0, 200);
}

#[tokio::test]
async fn a_messages_stream_broken_mid_answer_ends_with_an_error_event() {
    let doors = start(BREAKS, ROUTES).await;
    let body = json!({"model": "breaks", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "Hi"}]});
    let events = doors.events("/v1/messages", &body).await;
    let (last, error) = events.last().unwrap();
    assert_eq!(last, "error", "{events:?}");
    assert_eq!(error["type"], "error");
    assert!(error["error"]["type"].is_string(), "{error}");
    assert!(events.iter().any(|(n, _)| n == "content_block_delta"));
    assert!(!events.iter().any(|(n, _)| n == "message_stop"));
}

#[tokio::test]
async fn tokens_are_counted_as_the_rate_limiter_estimates_them() {
    let doors = start("", ROUTES).await;
    let body = json!({"model": "gpt", "system": "Be brief.",
                      "messages": [{"role": "user", "content": "What is the weather in Paris today?"}]});
    let (status, count) = doors.post("/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 200, "{count}");
    let expected = ChatRequest::new("gpt")
        .system("Be brief.")
        .message(Message::user("What is the weather in Paris today?"))
        .prompt_tokens(&llm_tower::ApproxTokenizer::default());
    assert_eq!(count, json!({"input_tokens": expected}));
}

#[tokio::test]
async fn models_are_listed_in_the_shape_of_the_sdk_asking() {
    let doors = start(
        "",
        &format!("{ROUTES}\n[[embedding_routes]]\nmodel = \"embed\"\ndimensions = 8\ntargets = [{{ provider = \"openai\" }}]\n"),
    )
    .await;
    let anthropic = doors.get("/v1/models", true).await;
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert_eq!(anthropic["first_id"], "claude");
    assert_eq!(
        anthropic["data"].as_array().unwrap().len(),
        4,
        "chat routes only"
    );
    let openai = doors.get("/v1/models", false).await;
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude", "gpt", "echo", "breaks", "embed"]);

    // `/health` lists every route with the doors that reach it.
    let health = doors.get("/health", false).await;
    let routes = health["routes"].as_array().unwrap();
    assert_eq!(routes[0]["endpoints"][1], "/v1/messages", "{health}");
    assert_eq!(
        routes[4]["endpoints"],
        json!(["/v1/embeddings"]),
        "{health}"
    );
    assert_eq!(routes[4]["dimensions"], 8);
}

/// Checks the Responses stream discipline: `response.created` first, sequence numbers
/// 0, 1, 2…, output items added at dense indexes and done in order.
fn check_response_order(events: &[(String, Value)]) {
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events[0].1["response"]["output"], json!([]));
    let mut items = 0;
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], i, "{name}");
        if name == "response.output_item.added" {
            assert_eq!(data["output_index"], items);
            items += 1;
        }
    }
}

#[tokio::test]
async fn a_response_with_reasoning_keeps_the_signature_for_the_next_turn() {
    let doors = start("", ROUTES).await;
    let body = json!({
        "model": "claude", "input": "What is the weather in Paris?", "store": false,
        "reasoning": {"effort": "medium"}, "max_output_tokens": 4096,
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": null}],
    });
    let (status, response) = doors.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    let output = response["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning", "{response}");
    let sealed = output[0]["encrypted_content"].as_str().unwrap();
    assert!(sealed.starts_with("gw1:sig:"), "{sealed}");
    let call = output
        .iter()
        .find(|i| i["type"] == "function_call")
        .unwrap();
    assert_eq!(call["arguments"], "{\"n\":1,\"tool\":\"get_weather\"}");

    // The items go back as they came, with the call's output.
    let mut input = vec![json!({"role": "user", "content": "What is the weather in Paris?"})];
    input.extend(output.iter().cloned());
    input.push(
        json!({"type": "function_call_output", "call_id": call["call_id"], "output": "18 C"}),
    );
    let follow = json!({"model": "claude", "input": input, "reasoning": {"effort": "medium"},
                        "max_output_tokens": 4096, "tools": body["tools"]});
    let (status, answer) = doors.post("/v1/responses", &follow).await;
    assert_eq!(status, 200, "{answer}");
    let message = answer["output"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "message")
        .unwrap();
    assert_eq!(
        message["content"][0]["text"],
        "Tool get_weather said: 18 C."
    );

    // Streamed: typed events in order, the reasoning item first.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = doors.events("/v1/responses", &streamed).await;
    check_response_order(&events);
    let added: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.output_item.added")
        .map(|(_, d)| d["item"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["reasoning", "function_call"]);
    let last = &events.last().unwrap().1;
    assert_eq!(last["type"], "response.completed");
    assert_eq!(last["response"]["output"].as_array().unwrap().len(), 2);
    assert!(last["response"]["usage"]["output_tokens_details"].is_object());
}

#[tokio::test]
async fn a_response_stream_broken_mid_answer_fails_in_both_error_shapes() {
    let doors = start(BREAKS, ROUTES).await;
    let body = json!({"model": "breaks", "input": "Hi", "stream": true});
    let events = doors.events("/v1/responses", &body).await;
    check_response_order(&events);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[names.len() - 2..],
        ["response.failed", "error"],
        "{names:?}"
    );
    let error = &events.last().unwrap().1;
    assert!(
        error["message"].is_string() && error["code"].is_string(),
        "{error}"
    );
    assert_eq!(error["error"]["message"], error["message"]);
    let failed = &events[events.len() - 2].1["response"];
    assert_eq!(failed["status"], "failed");
    assert!(failed["error"]["code"].is_string());
}

#[tokio::test]
async fn the_responses_input_items_reach_the_upstream() {
    let doors = start("", ROUTES).await;
    let body = json!({
        "model": "echo", "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Be kind."},
            {"role": "user", "content": [{"type": "input_text", "text": "Look:"},
                                         {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}]},
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"at\":\"it\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a cat"},
        ],
    });
    let (status, response) = doors.post("/v1/responses", &body).await;
    assert_eq!(status, 200, "{response}");
    let text = response["output"][0]["content"][0]["text"]
        .as_str()
        .unwrap();
    let read: Value = serde_json::from_str(text).unwrap();
    assert_eq!(read["system"], "Be brief.\n\nBe kind.", "{read}");
    let turns = read["messages"].as_array().unwrap();
    assert_eq!(
        turns[0]["media"][0], "image:image/png:iVBORw0KGgo=",
        "{read}"
    );
    assert_eq!(turns[1]["tool_calls"][0]["arguments"], json!({"at": "it"}));
    assert_eq!(turns[2]["text"], "a cat");

    for (field, value) in [
        ("previous_response_id", json!("resp_1")),
        ("conversation", json!("conv_1")),
        ("store", json!(true)),
        ("top_logprobs", json!(2)),
    ] {
        let mut refused = json!({"model": "gpt", "input": "Hi"});
        refused[field] = value;
        let (status, error) = doors.post("/v1/responses", &refused).await;
        assert_eq!(status, 400, "{field}: {error}");
        assert_eq!(error["error"]["param"], field, "{error}");
    }
    // A field of an item or a part the gateway would drop is refused, naming its path; two
    // different end users are refused rather than one dropped.
    for (body, param) in [
        (
            json!({"model": "gpt", "input": [{"role": "user", "content": "Hi", "audio": {"id": "a"}}]}),
            "input[0].audio",
        ),
        (
            json!({"model": "gpt", "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hi", "cache": true}]}]}),
            "input[0].content[0].cache",
        ),
        (
            json!({"model": "gpt", "input": "Hi", "user": "a", "safety_identifier": "b"}),
            "user",
        ),
    ] {
        let (status, error) = doors.post("/v1/responses", &body).await;
        assert_eq!(status, 400, "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
    }
}

#[tokio::test]
async fn every_door_is_counted_in_the_metrics() {
    let doors = start(
        "",
        &format!("{ROUTES}\n[[embedding_routes]]\nmodel = \"embed\"\ndimensions = 8\ntargets = [{{ provider = \"openai\" }}]\n"),
    )
    .await;
    let asks = [
        (
            "/v1/messages",
            json!({"model": "gpt", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "/v1/messages/count_tokens",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        ("/v1/responses", json!({"model": "gpt", "input": "Hi"})),
        ("/v1/embeddings", json!({"model": "embed", "input": ["Hi"]})),
    ];
    for (path, body) in &asks {
        let (status, answer) = doors.post(path, body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let metrics = doors
        .client
        .get(format!("{}/metrics", doors.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (path, _) in asks {
        let line = format!("gateway_requests_total{{endpoint=\"{path}\",status=\"200\"}} 1");
        assert!(metrics.contains(&line), "{line} not in {metrics}");
    }
    // Every metric has its help text (the layers' from `llm_tower::metrics::describe`).
    for help in ["# HELP llm_attempts_total", "# HELP gateway_requests_total"] {
        assert!(metrics.contains(help), "{help} not in {metrics}");
    }
    // The upstream attempts of Messages, Responses and embeddings are counted like chat's,
    // by the upstream's retry layer.
    assert!(
        metrics.contains("llm_attempts_total{upstream=\"openai\",outcome=\"ok\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_callers_trace_context_reaches_the_upstream() {
    let doors = start(
        "",
        &format!("{ROUTES}\n[[embedding_routes]]\nmodel = \"embed\"\ndimensions = 8\ntargets = [{{ provider = \"openai\" }}]\n"),
    )
    .await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let asks = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        ("/v1/responses", json!({"model": "gpt", "input": "Hi"})),
        ("/v1/embeddings", json!({"model": "embed", "input": "Hi"})),
    ];
    for (path, body) in &asks {
        let response = doors
            .client
            .post(format!("{}{path}", doors.base))
            .header("content-type", "application/json")
            .header("traceparent", traceparent)
            .header("tracestate", "vendor=1")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // A malformed one is not passed on.
    let response = doors
        .client
        .post(format!("{}/v1/chat/completions", doors.base))
        .header("content-type", "application/json")
        .header("traceparent", "00-not-a-trace-01")
        .body(asks[0].1.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let attempts = doors.mock.attempts();
    assert_eq!(attempts.len(), 5);
    let header = |attempt: &llm_testkit::server::Attempt, name: &str| {
        attempt
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    for attempt in &attempts[..4] {
        assert_eq!(
            header(attempt, "traceparent").as_deref(),
            Some(traceparent),
            "{}",
            attempt.path
        );
        assert_eq!(header(attempt, "tracestate").as_deref(), Some("vendor=1"));
    }
    assert_eq!(header(&attempts[4], "traceparent"), None);
}
