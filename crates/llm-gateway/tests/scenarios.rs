//! What the defaults do: the `llm-gateway` binary started with the README's quick-start
//! configuration, unmodified (the block after `<!-- quick-start -->`), in front of the test
//! kit's mock provider, one scenario per fault. Only the server's address and key come from
//! the environment, as a user would set them (`GATEWAY_LLM_BASE_URL`, `LLM_API_KEY`).
//!
//! Each scenario asserts the outcome (who answered, or the error), the calls each model
//! received, and a bound on the time taken. Time is real: the defaults are seconds long, so
//! the scenarios that take tens of seconds run together in one test.

mod support;

use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use llm_testkit::server::{MockProvider, Plan, canonical_answer};
use serde_json::{Value, json};
use support::Running;

const KEY: &str = "scenario-key";
const PRIMARY: &str = "gpt-4o";
const FALLBACK: &str = "gpt-4o-mini";

/// The README's quick-start configuration, as written there.
fn quick_start() -> &'static str {
    let readme = include_str!("../README.md");
    let section = &readme[readme
        .find("<!-- quick-start -->")
        .expect("README marks its quick-start configuration")..];
    let start = section.find("```toml\n").unwrap() + "```toml\n".len();
    &section[start..start + section[start..].find("```").unwrap()]
}

/// A gateway on the quick-start configuration (plus `extra` lines in its provider table,
/// for the one case that sets a limit) over one mock provider with `plan`.
struct Scenario {
    base: String,
    mock: MockProvider,
    client: reqwest::Client,
    _gateway: Running,
}

/// What the client saw of one request.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The model the answer (or its last chunk) names.
    model: String,
    text: String,
    /// The whole body (non-stream) or the last JSON event (stream).
    body: Value,
    /// A stream ended with `[DONE]`.
    done: bool,
    /// A stream carried a `recovered` chunk.
    recovered: bool,
    attempts_header: Option<String>,
    elapsed: Duration,
}

impl Scenario {
    async fn start(plan: &str) -> Scenario {
        Scenario::with_provider_lines(plan, "").await
    }

    async fn with_provider_lines(plan: &str, extra: &str) -> Scenario {
        let mock = MockProvider::builder()
            .plan(Plan::from_toml(plan).unwrap())
            .api_key(KEY)
            .start()
            .await
            .unwrap();
        let mut text = quick_start().to_owned();
        if !extra.is_empty() {
            let at = text.find("api_key_env").unwrap();
            text.insert_str(at, extra);
        }
        let url = format!("{}/v1", mock.base_url());
        // NOTE: the binary, as a user runs it: the file, then the environment.
        let gateway = Running::start(
            &text,
            &[("GATEWAY_LLM_BASE_URL", url.as_str()), ("LLM_API_KEY", KEY)],
        )
        .await;
        let base = gateway.base.clone();
        Scenario {
            base,
            mock,
            client: reqwest::Client::new(),
            _gateway: gateway,
        }
    }

    /// Asks for a completion of `model`, streamed or not.
    async fn ask(&self, model: &str, stream: bool) -> Answer {
        ask(&self.client, &self.base, model, stream).await
    }

    /// Calls the mock received for `model`.
    fn calls(&self, model: &str) -> usize {
        self.mock
            .attempts()
            .iter()
            .filter(|a| a.model == model)
            .count()
    }

    /// Asserts who answered, with what status, and the calls each model received.
    fn expect(&self, answer: &Answer, status: u16, model: &str, calls: (usize, usize)) {
        assert_eq!(
            (answer.status, answer.model.as_str()),
            (status, model),
            "{answer:?}"
        );
        assert_eq!(
            (self.calls(PRIMARY), self.calls(FALLBACK)),
            calls,
            "calls (primary, fallback): {answer:?}"
        );
    }

    /// Calls the mock answered with `status`.
    fn answered(&self, status: u16) -> usize {
        self.mock.answered_with(status)
    }
}

/// Asks the gateway at `base` for a completion of `model`, streamed or not.
async fn ask(client: &reqwest::Client, base: &str, model: &str, stream: bool) -> Answer {
    let body = json!({
        "model": model,
        "stream": stream,
        "messages": [{ "role": "user", "content": "Hello" }],
    });
    send(client, base, body).await
}

/// Sends `body` to the gateway's `/v1/chat/completions`.
async fn send(client: &reqwest::Client, base: &str, body: Value) -> Answer {
    let started = Instant::now();
    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let attempts_header = response
        .headers()
        .get("x-gateway-attempts")
        .map(|v| v.to_str().unwrap().to_owned());
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if !is_sse {
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        return Answer {
            status,
            model: body["model"].as_str().unwrap_or_default().to_owned(),
            text: body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body,
            done: false,
            recovered: false,
            attempts_header,
            elapsed: started.elapsed(),
        };
    }
    // An independent SSE parser reads the stream.
    let mut events = response.bytes_stream().eventsource();
    let (mut text, mut last, mut done, mut recovered) = (String::new(), Value::Null, false, false);
    while let Some(event) = events.next().await {
        let data = event.unwrap().data;
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        recovered |= chunk.get("recovered").is_some();
        last = chunk;
    }
    Answer {
        status,
        model: last["model"].as_str().unwrap_or_default().to_owned(),
        text,
        body: last,
        done,
        recovered,
        attempts_header,
        elapsed: started.elapsed(),
    }
}

/// A plan whose rule gives the primary model `fault` (a TOML inline table).
fn primary(fault: &str) -> String {
    format!("[[rule]]\nmodel = \"{PRIMARY}\"\nfault = {fault}\n")
}

/// A plan whose rule gives the primary model one `fault`, then answers.
fn primary_once(fault: &str) -> String {
    format!("[[rule]]\nmodel = \"{PRIMARY}\"\nsequence = [{fault}]\n")
}

fn assert_within(answer: &Answer, low: Duration, high: Duration) {
    assert!(
        answer.elapsed >= low && answer.elapsed <= high,
        "took {:?}, expected {low:?}..{high:?}: {answer:?}",
        answer.elapsed
    );
}

#[tokio::test]
async fn a_429_with_retry_after_2s_once_is_waited_out_on_the_primary() {
    let s = Scenario::start(&primary_once(
        r#"{ fault = "rate_limited", retry_after = "2s" }"#,
    ))
    .await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, PRIMARY, (2, 0));
    assert_within(&answer, Duration::from_millis(1900), Duration::from_secs(4));
}

#[tokio::test]
async fn a_persistent_429_without_retry_after_fails_over_at_once() {
    let s = Scenario::start(&primary(r#"{ fault = "rate_limited" }"#)).await;
    for _ in 0..3 {
        let answer = s.ask(PRIMARY, false).await;
        assert_eq!(
            (answer.status, answer.model.as_str()),
            (200, FALLBACK),
            "{answer:?}"
        );
        assert_within(&answer, Duration::ZERO, Duration::from_secs(1));
    }
    assert_eq!((s.calls(PRIMARY), s.calls(FALLBACK)), (3, 3));
}

#[tokio::test]
async fn a_500_once_is_retried_on_the_primary_after_1s() {
    let s = Scenario::start(&primary_once(r#"{ fault = "status", status = 500 }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, PRIMARY, (2, 0));
    assert_eq!(answer.attempts_header.as_deref(), Some("2"));
    assert_within(&answer, Duration::from_millis(900), Duration::from_secs(3));
}

#[tokio::test]
async fn a_persistent_503_is_retried_then_the_fallback_answers_and_is_billed() {
    let s = Scenario::start(&primary(r#"{ fault = "status", status = 503 }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, FALLBACK, (4, 1));
    // Retried after 1 s, 2 s and 4 s, then handed over: 4 calls on the primary, 1 on the
    // fallback, and the answer names and bills the model that answered.
    assert_eq!(answer.attempts_header.as_deref(), Some("5"));
    assert_eq!(answer.text, canonical_answer(60));
    assert_eq!(answer.body["usage"]["completion_tokens"], 60, "{answer:?}");
    assert_within(&answer, Duration::from_secs(7), Duration::from_secs(9));
}

#[tokio::test]
async fn a_connection_reset_before_headers_fails_over_at_once() {
    let s = Scenario::start(&primary(r#"{ fault = "reset" }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, FALLBACK, (1, 1));
    assert_within(&answer, Duration::ZERO, Duration::from_secs(1));
}

#[tokio::test]
async fn a_slow_first_token_of_3s_is_waited_for() {
    let plan = format!(
        "[[rule]]\nmodel = \"{PRIMARY}\"\nstream = true\nfault = {{ fault = \"slow_first_token\", delay = \"3s\" }}\n"
    );
    let s = Scenario::start(&plan).await;
    let answer = s.ask(PRIMARY, true).await;
    s.expect(&answer, 200, PRIMARY, (1, 0));
    assert_eq!(answer.text, canonical_answer(60));
    assert!(answer.done && !answer.recovered, "{answer:?}");
    assert_within(&answer, Duration::from_secs(3), Duration::from_secs(6));
}

/// A stream broken on the primary, continued on the fallback: the client gets the whole
/// canonical answer, no word missing or repeated, a `recovered` chunk, and the last chunk
/// names the model that finished.
async fn continued_stream(fault: &str, fallback_rule: &str, within: Duration) {
    let plan =
        format!("[[rule]]\nmodel = \"{PRIMARY}\"\nstream = true\nfault = {fault}\n{fallback_rule}");
    let s = Scenario::start(&plan).await;
    let answer = s.ask(PRIMARY, true).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.text, canonical_answer(60), "{fault}: {answer:?}");
    assert!(answer.done && answer.recovered, "{fault}: {answer:?}");
    assert_eq!(
        answer.model, FALLBACK,
        "{fault}: the last chunk names who finished"
    );
    assert_eq!(s.calls(PRIMARY), 1, "{fault}");
    assert!(s.calls(FALLBACK) >= 1, "{fault}");
    assert_within(&answer, Duration::ZERO, within);
}

#[tokio::test]
async fn a_stream_cut_after_40_tokens_is_continued_on_the_fallback() {
    continued_stream(
        r#"{ fault = "cut_after", chunks = 40 }"#,
        "",
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn one_malformed_chunk_is_repaired_on_the_fallback() {
    continued_stream(
        r#"{ fault = "malformed_at", chunk = 30 }"#,
        "",
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn a_fallback_that_refuses_a_prefill_still_continues_seamlessly() {
    let refuse =
        format!("\n[[rule]]\nmodel = \"{FALLBACK}\"\nfault = {{ fault = \"reject_prefill\" }}\n");
    continued_stream(
        r#"{ fault = "cut_after", chunks = 40 }"#,
        &refuse,
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn a_json_answer_cut_mid_stream_fails_clean_instead_of_being_spliced() {
    let plan = format!(
        "[[rule]]\nmodel = \"{PRIMARY}\"\nstream = true\nfault = {{ fault = \"cut_after\", chunks = 40 }}\n"
    );
    let s = Scenario::start(&plan).await;
    let body = json!({
        "model": PRIMARY,
        "stream": true,
        "response_format": { "type": "json_object" },
        "messages": [{ "role": "user", "content": "Hello" }],
    });
    let answer = send(&s.client, &s.base, body).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(!answer.done && !answer.recovered, "{answer:?}");
    // The mock's JSON answer, `{"answer":"Alfa-1 … Hotel-60"}`, streams word by word: its
    // first 40 pieces, not JSON, and nothing spliced after them.
    assert_eq!(
        answer.text,
        format!("{{\"answer\":\"{} ", canonical_answer(40))
    );
    assert!(serde_json::from_str::<Value>(&answer.text).is_err());
    assert_eq!(
        answer.body["error"]["code"], "stream_interrupted",
        "{answer:?}"
    );
    assert_eq!((s.calls(PRIMARY), s.calls(FALLBACK)), (1, 0));
}

#[tokio::test]
async fn a_complete_stream_without_done_is_complete() {
    let plan = format!(
        "[[rule]]\nmodel = \"{PRIMARY}\"\nstream = true\nfault = {{ fault = \"no_done\" }}\n"
    );
    let s = Scenario::start(&plan).await;
    let answer = s.ask(PRIMARY, true).await;
    s.expect(&answer, 200, PRIMARY, (1, 0));
    assert_eq!(answer.text, canonical_answer(60));
    assert!(answer.done && !answer.recovered, "{answer:?}");
}

#[tokio::test]
async fn context_length_exceeded_moves_to_the_fallback() {
    let s = Scenario::start(&primary(r#"{ fault = "context_length" }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, FALLBACK, (1, 1));
    assert_within(&answer, Duration::ZERO, Duration::from_secs(1));
}

#[tokio::test]
async fn a_content_filter_is_a_clean_400_without_retry_or_fallback() {
    let s = Scenario::start(&primary(r#"{ fault = "content_filter" }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.body["error"]["message"].as_str().is_some(),
        "{answer:?}"
    );
    assert_eq!((s.calls(PRIMARY), s.calls(FALLBACK)), (1, 0));
    assert_within(&answer, Duration::ZERO, Duration::from_secs(1));
}

/// The scenarios whose defaults take tens of seconds, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scenarios() {
    tokio::join!(
        a_silent_primary_fails_over_within_25s(),
        a_stream_stalled_after_20_tokens_is_continued(),
        a_primary_down_for_6s_gets_traffic_back_within_10s_of_recovering(),
        quota_without_a_local_limit(),
        quota_with_a_local_limit_far_too_high(),
    );
}

async fn a_silent_primary_fails_over_within_25s() {
    let s = Scenario::start(&primary(r#"{ fault = "no_response" }"#)).await;
    let answer = s.ask(PRIMARY, false).await;
    s.expect(&answer, 200, FALLBACK, (1, 1));
    eprintln!(
        "silent primary: the fallback answered after {:?}",
        answer.elapsed
    );
    assert_within(&answer, Duration::from_secs(15), Duration::from_secs(25));
}

async fn a_stream_stalled_after_20_tokens_is_continued() {
    continued_stream(
        r#"{ fault = "stall_after", chunks = 20 }"#,
        "",
        Duration::from_secs(35),
    )
    .await;
}

async fn a_primary_down_for_6s_gets_traffic_back_within_10s_of_recovering() {
    let plan = format!(
        "[[rule]]\nmodel = \"{PRIMARY}\"\nuntil = \"6s\"\nfault = {{ fault = \"status\", status = 503 }}\n"
    );
    let s = Scenario::start(&plan).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20u32 {
        let at = started + Duration::from_millis(1200) * i;
        tokio::time::sleep_until(at.into()).await;
        let (base, client) = (s.base.clone(), s.client.clone());
        tasks.push(tokio::spawn(async move {
            (at, ask(&client, &base, PRIMARY, false).await)
        }));
    }
    for task in tasks {
        let (at, answer) = task.await.unwrap();
        let sent = at - started;
        assert_eq!(answer.status, 200, "sent at {sent:?}: {answer:?}");
        assert!(
            answer.elapsed < Duration::from_secs(10),
            "sent at {sent:?}: {answer:?}"
        );
        eprintln!(
            "down 6 s: sent at {sent:?}, {} answered in {:?}",
            answer.model, answer.elapsed
        );
        if sent >= Duration::from_secs(16) {
            assert_eq!(answer.model, PRIMARY, "sent at {sent:?}: {answer:?}");
        }
    }
}

/// Requests every 500 ms for 30 s against a provider allowing 30 per minute (a full bucket
/// at the start, then one more every 2 s: 45 fit in the 30 s).
async fn quota(extra: &str) -> (usize, usize) {
    let plan = "[rate_limit]\nrequests_per_minute = 30\ntokens_per_minute = 10000000\n";
    let s = Scenario::with_provider_lines(plan, extra).await;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..60u32 {
        tokio::time::sleep_until((started + Duration::from_millis(500) * i).into()).await;
        let (base, client) = (s.base.clone(), s.client.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(
                    json!({"model": PRIMARY, "messages": [{"role": "user", "content": "Hi"}]})
                        .to_string(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        let status = task.await.unwrap();
        assert!(matches!(status, 200 | 429), "{status}");
    }
    let (served, limited) = (s.answered(200), s.answered(429));
    eprintln!("quota{extra:?}: the provider served {served}, answered {limited} 429s");
    (served, limited)
}

async fn quota_without_a_local_limit() {
    let (served, upstream_429s) = quota("").await;
    assert!(upstream_429s <= 2, "{upstream_429s} upstream 429s");
    assert!(served >= 41, "served {served} of the 45 that fit");
}

async fn quota_with_a_local_limit_far_too_high() {
    let (served, upstream_429s) =
        quota("rate_limit = { requests = { limit = 1000, per = \"1m\" } }\n").await;
    assert!(upstream_429s <= 2, "{upstream_429s} upstream 429s");
    assert!(served >= 41, "served {served} of the 45 that fit");
}

/// async-openai, an OpenAI client we did not write, pointed at the gateway.
fn openai_client(s: &Scenario) -> async_openai::Client<async_openai::config::OpenAIConfig> {
    let config = async_openai::config::OpenAIConfig::new()
        .with_api_base(format!("{}/v1", s.base))
        .with_api_key("not-needed");
    async_openai::Client::with_config(config)
}

fn sdk_request(stream: bool) -> async_openai::types::chat::CreateChatCompletionRequest {
    use async_openai::types::chat::{
        ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequestArgs,
    };
    let message = ChatCompletionRequestUserMessageArgs::default()
        .content("Hello")
        .build()
        .unwrap();
    CreateChatCompletionRequestArgs::default()
        .model(PRIMARY)
        .messages([message.into()])
        .stream(stream)
        .build()
        .unwrap()
}

#[tokio::test]
async fn async_openai_gets_answers_through_a_fallback() {
    let s = Scenario::start(&primary(r#"{ fault = "reset" }"#)).await;
    let response = openai_client(&s)
        .chat()
        .create(sdk_request(false))
        .await
        .unwrap();
    assert_eq!(response.model, FALLBACK);
    let text = response.choices[0].message.content.clone().unwrap();
    assert_eq!(text, canonical_answer(60));
    assert_eq!(response.usage.unwrap().completion_tokens, 60);
}

#[tokio::test]
async fn async_openai_reads_a_repaired_stream_whole() {
    let plan = format!(
        "[[rule]]\nmodel = \"{PRIMARY}\"\nstream = true\nfault = {{ fault = \"cut_after\", chunks = 40 }}\n"
    );
    let s = Scenario::start(&plan).await;
    let mut stream = openai_client(&s)
        .chat()
        .create_stream(sdk_request(true))
        .await
        .unwrap();
    let (mut text, mut last_model) = (String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(choice) = chunk.choices.first() {
            if let Some(piece) = &choice.delta.content {
                text.push_str(piece);
            }
        }
        last_model = chunk.model;
    }
    assert_eq!(text, canonical_answer(60));
    assert_eq!(last_model, FALLBACK);
}

#[tokio::test]
async fn async_openai_sees_errors_in_openais_shape() {
    let s = Scenario::start(&primary(r#"{ fault = "content_filter" }"#)).await;
    let err = openai_client(&s)
        .chat()
        .create(sdk_request(false))
        .await
        .unwrap_err();
    let async_openai::error::OpenAIError::ApiError(err) = err else {
        panic!("not an API error: {err:?}");
    };
    assert_eq!(err.status_code.as_u16(), 400);
    assert!(!err.api_error.message.is_empty());
    assert_eq!(
        err.api_error.r#type.as_deref(),
        Some("invalid_request_error")
    );
}
