//! The mock provider server over real loopback HTTP: every route's success bytes, every
//! fault's status, headers and body, streams decoded with an independent SSE parser
//! (`eventsource-stream`), the rate-limit simulation, the attempt log and the admin API.
//!
//! Time here is real (the server sits behind real sockets, which tokio's paused clock would
//! race); the only waits are timeouts on a server that never answers, kept short.

use std::time::{Duration, SystemTime};

use eventsource_stream::{Event, Eventsource};
use futures_util::StreamExt;
use llm_core::RateLimitInfo;
use llm_core::delay::server_delay;
use llm_testkit::server::{
    DelayFormat, Fault, Latency, MockProvider, Plan, Route, Rule, canonical_answer,
};
use serde_json::{Value, json};

const ANSWER: usize = 60;

fn client() -> reqwest::Client {
    reqwest::Client::builder().build().unwrap()
}

/// A request for `route` asking for `model`, streaming or not, with the route's key header.
fn request(
    mock: &MockProvider,
    route: Route,
    model: &str,
    stream: bool,
    extra: Value,
) -> reqwest::RequestBuilder {
    let messages = json!([{"role": "user", "content": "Say the alphabet"}]);
    let c = client();
    let (url, mut body) = match route {
        Route::OpenAi => (
            mock.url("/v1/chat/completions"),
            json!({"model": model, "messages": messages, "stream": stream}),
        ),
        Route::OpenRouter => (
            mock.url("/api/v1/chat/completions"),
            json!({"model": model, "messages": messages, "stream": stream}),
        ),
        Route::Azure => (
            mock.url(&format!(
                "/openai/deployments/{model}/chat/completions?api-version=2024-10-21"
            )),
            json!({"messages": messages, "stream": stream}),
        ),
        Route::Anthropic => (
            mock.url("/v1/messages"),
            json!({"model": model, "max_tokens": 1024, "messages": messages, "stream": stream}),
        ),
        Route::Gemini => (
            mock.url(&format!(
                "/v1beta/models/{model}:{}",
                if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                }
            )),
            json!({"contents": [{"role": "user", "parts": [{"text": "Say the alphabet"}]}]}),
        ),
        Route::Ollama => (
            mock.url("/api/chat"),
            json!({"model": model, "messages": messages, "stream": stream}),
        ),
        _ => unreachable!(),
    };
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    let req = c.post(url).body(body.to_string());
    match route {
        Route::Anthropic => req
            .header("x-api-key", "sk-ant-secret")
            .header("anthropic-version", "2023-06-01"),
        Route::Azure => req.header("api-key", "azure-secret"),
        Route::Gemini => req.header("x-goog-api-key", "gemini-secret"),
        Route::Ollama => req,
        _ => req.bearer_auth("sk-secret"),
    }
}

async fn start(rules: impl IntoIterator<Item = Rule>) -> MockProvider {
    let mut builder = MockProvider::builder();
    for rule in rules {
        builder = builder.rule(rule);
    }
    builder.start().await.unwrap()
}

/// The stream's events as an independent SSE parser sees them (NDJSON lines for Ollama,
/// returned as events with the line as data).
async fn decode_events(res: reqwest::Response, route: Route) -> (Vec<Event>, Option<String>) {
    if route == Route::Ollama {
        let text = res.text().await.unwrap();
        let events = text
            .lines()
            .map(|line| Event {
                data: line.to_owned(),
                ..Event::default()
            })
            .collect();
        return (events, None);
    }
    let mut stream = res.bytes_stream().eventsource();
    let mut events = Vec::new();
    let mut error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => events.push(event),
            Err(err) => {
                error = Some(err.to_string());
                break;
            }
        }
    }
    (events, error)
}

/// The answer text carried by one decoded event, if it carries any.
fn event_text(route: Route, event: &Event) -> Option<String> {
    let json: Value = serde_json::from_str(&event.data).ok()?;
    let text = match route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => {
            json.pointer("/choices/0/delta/content")?.as_str()?
        }
        Route::Anthropic => json.pointer("/delta/text")?.as_str()?,
        Route::Gemini => json
            .pointer("/candidates/0/content/parts/0/text")?
            .as_str()?,
        Route::Ollama => {
            if json["done"] == json!(true) {
                return None;
            }
            json.pointer("/message/content")?.as_str()?
        }
        _ => unreachable!(),
    };
    (!text.is_empty()).then(|| text.to_owned())
}

fn stream_text(route: Route, events: &[Event]) -> String {
    events.iter().filter_map(|e| event_text(route, e)).collect()
}

#[tokio::test]
async fn every_route_answers_the_canonical_answer_with_usage_and_headers() {
    let mock = start([]).await;
    for route in Route::ALL {
        let res = request(&mock, route, "m-1", false, json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{route}");
        let headers = res.headers().clone();
        let body: Value = res.json().await.unwrap();
        let (text, usage_out) = match route {
            Route::OpenAi | Route::Azure | Route::OpenRouter => (
                &body["choices"][0]["message"]["content"],
                &body["usage"]["completion_tokens"],
            ),
            Route::Anthropic => (&body["content"][0]["text"], &body["usage"]["output_tokens"]),
            Route::Gemini => (
                &body["candidates"][0]["content"]["parts"][0]["text"],
                &body["usageMetadata"]["candidatesTokenCount"],
            ),
            Route::Ollama => (&body["message"]["content"], &body["eval_count"]),
            _ => unreachable!(),
        };
        assert_eq!(text, &json!(canonical_answer(ANSWER)), "{route}");
        assert_eq!(usage_out, &json!(ANSWER), "{route}");
        let info = RateLimitInfo::from_headers(&headers, SystemTime::now());
        match route {
            Route::OpenAi | Route::OpenRouter => {
                assert!(
                    headers.contains_key("x-ratelimit-reset-requests"),
                    "{route}"
                );
                assert_eq!(info.remaining_requests, Some(999_999), "{route}");
            }
            Route::Azure => {
                assert!(headers.contains_key("apim-request-id"));
                assert!(!headers.contains_key("x-ratelimit-reset-requests"));
                assert_eq!(info.remaining_requests, Some(999_999));
            }
            Route::Anthropic => {
                assert!(headers.contains_key("request-id"));
                assert_eq!(info.remaining_requests, Some(999_999));
                assert!(headers.contains_key("anthropic-ratelimit-tokens-reset"));
            }
            _ => assert!(info.is_empty(), "{route}"),
        }
    }
    // The model is echoed; a smaller max_tokens cuts the answer with finish reason length.
    let body: Value = request(
        &mock,
        Route::OpenAi,
        "gpt-4o",
        false,
        json!({"max_completion_tokens": 5}),
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(body["model"], "gpt-4o");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        canonical_answer(5)
    );
}

#[tokio::test]
async fn every_route_streams_the_canonical_answer_to_its_terminator() {
    let mock = start([]).await;
    for route in Route::ALL {
        // OpenRouter always sends usage; OpenAI and Azure when asked.
        let extra = if matches!(route, Route::OpenAi | Route::Azure) {
            json!({"stream_options": {"include_usage": true}})
        } else {
            json!({})
        };
        let res = request(&mock, route, "m-1", true, extra)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{route}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        let (events, error) = decode_events(res, route).await;
        assert_eq!(error, None, "{route}");
        assert_eq!(
            stream_text(route, &events),
            canonical_answer(ANSWER),
            "{route}"
        );
        let last = events.last().unwrap();
        match route {
            Route::OpenAi | Route::Azure | Route::OpenRouter => {
                assert_eq!(content_type, "text/event-stream");
                assert_eq!(last.data, "[DONE]", "{route}");
                // The usage chunk comes after the finish chunk with empty choices.
                let usage: Value = serde_json::from_str(&events[events.len() - 2].data).unwrap();
                assert_eq!(usage["choices"], json!([]), "{route}");
                assert_eq!(
                    usage["usage"]["completion_tokens"],
                    json!(ANSWER),
                    "{route}"
                );
            }
            Route::Anthropic => {
                assert_eq!(last.event, "message_stop");
                assert!(events.iter().any(|e| e.event == "ping"));
                let delta = events.iter().find(|e| e.event == "message_delta").unwrap();
                let delta: Value = serde_json::from_str(&delta.data).unwrap();
                assert_eq!(delta["usage"]["output_tokens"], json!(ANSWER));
            }
            Route::Gemini => {
                let last: Value = serde_json::from_str(&last.data).unwrap();
                assert_eq!(last["candidates"][0]["finishReason"], "STOP");
                assert_eq!(last["usageMetadata"]["candidatesTokenCount"], json!(ANSWER));
            }
            Route::Ollama => {
                assert_eq!(content_type, "application/x-ndjson");
                let last: Value = serde_json::from_str(&last.data).unwrap();
                assert_eq!(last["done"], json!(true));
                assert_eq!(last["eval_count"], json!(ANSWER));
            }
            _ => unreachable!(),
        }
    }
}

#[tokio::test]
async fn streams_use_each_providers_framing() {
    let mock = start([]).await;
    let raw = |route| {
        let req = request(&mock, route, "m", true, json!({}));
        async move { req.send().await.unwrap().text().await.unwrap() }
    };
    let gemini = raw(Route::Gemini).await;
    assert!(gemini.starts_with("data: {"));
    assert!(
        gemini.contains("}\r\n\r\ndata: "),
        "Gemini separates events with CRLF CRLF"
    );
    assert!(!gemini.contains("[DONE]"));
    let openrouter = raw(Route::OpenRouter).await;
    assert!(openrouter.starts_with(": OPENROUTER PROCESSING\n\n"));
    let azure = raw(Route::Azure).await;
    let first: Value = serde_json::from_str(
        azure
            .lines()
            .next()
            .unwrap()
            .strip_prefix("data: ")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        first["choices"],
        json!([]),
        "Azure opens with prompt_filter_results"
    );
    assert!(first["prompt_filter_results"].is_array());
    let anthropic = raw(Route::Anthropic).await;
    assert!(anthropic.starts_with("event: message_start\ndata: "));
    // Without alt=sse Gemini streams one JSON array.
    let array: Value = client()
        .post(mock.url("/v1beta/models/g:streamGenerateContent"))
        .header("x-goog-api-key", "k")
        .body(json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(array.as_array().unwrap().len(), ANSWER);
}

/// (route, fault) → status and a JSON pointer with the value the provider really sends.
#[tokio::test]
async fn status_faults_send_each_providers_error_bytes() {
    let quota = Fault::QuotaExceeded;
    let cases: Vec<(Route, Fault, u16, &str, Value)> = vec![
        (
            Route::OpenAi,
            quota.clone(),
            429,
            "/error/code",
            json!("insufficient_quota"),
        ),
        (
            Route::OpenAi,
            Fault::RequestTooLarge,
            429,
            "/error/type",
            json!("tokens"),
        ),
        (
            Route::OpenAi,
            Fault::ContextLength,
            400,
            "/error/code",
            json!("context_length_exceeded"),
        ),
        (
            Route::OpenAi,
            Fault::ContentFilter,
            400,
            "/error/code",
            json!("content_policy_violation"),
        ),
        (
            Route::OpenAi,
            Fault::Unauthorized,
            401,
            "/error/code",
            json!("invalid_api_key"),
        ),
        (
            Route::OpenAi,
            Fault::ModelNotFound,
            404,
            "/error/code",
            json!("model_not_found"),
        ),
        (
            Route::OpenAi,
            Fault::status(500),
            500,
            "/error/type",
            json!("server_error"),
        ),
        (
            Route::OpenAi,
            Fault::Overloaded,
            503,
            "/error/type",
            json!("server_error"),
        ),
        (
            Route::Azure,
            Fault::ContentFilter,
            400,
            "/error/code",
            json!("content_filter"),
        ),
        (
            Route::Azure,
            Fault::ContentFilter,
            400,
            "/error/innererror/code",
            json!("ResponsibleAIPolicyViolation"),
        ),
        (
            Route::Azure,
            Fault::rate_limited(Duration::from_secs(6)),
            429,
            "/error/code",
            json!("429"),
        ),
        (
            Route::Azure,
            Fault::ModelNotFound,
            404,
            "/error/code",
            json!("DeploymentNotFound"),
        ),
        (
            Route::OpenRouter,
            quota.clone(),
            402,
            "/error/code",
            json!(402),
        ),
        (
            Route::OpenRouter,
            Fault::status(408),
            408,
            "/error/code",
            json!(408),
        ),
        (
            Route::OpenRouter,
            Fault::Overloaded,
            503,
            "/error/code",
            json!(503),
        ),
        (
            Route::OpenRouter,
            Fault::ContentFilter,
            403,
            "/error/metadata/reasons/0",
            json!("violence"),
        ),
        (
            Route::Anthropic,
            Fault::Overloaded,
            529,
            "/error/type",
            json!("overloaded_error"),
        ),
        (
            Route::Anthropic,
            Fault::status(529),
            529,
            "/error/type",
            json!("overloaded_error"),
        ),
        (
            Route::Anthropic,
            quota.clone(),
            400,
            "/error/type",
            json!("invalid_request_error"),
        ),
        (
            Route::Anthropic,
            Fault::ContextLength,
            400,
            "/error/message",
            json!("prompt is too long: 205351 tokens > 200000 maximum"),
        ),
        (
            Route::Anthropic,
            Fault::Unauthorized,
            401,
            "/error/type",
            json!("authentication_error"),
        ),
        (
            Route::Anthropic,
            Fault::status(500),
            500,
            "/error/type",
            json!("api_error"),
        ),
        (
            Route::Gemini,
            Fault::rate_limited(Duration::from_secs(36)),
            429,
            "/error/details/2/retryDelay",
            json!("36s"),
        ),
        (
            Route::Gemini,
            quota.clone(),
            429,
            "/error/details/0/violations/0/quotaId",
            json!("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        ),
        (
            Route::Gemini,
            Fault::Unauthorized,
            400,
            "/error/details/0/reason",
            json!("API_KEY_INVALID"),
        ),
        (
            Route::Gemini,
            Fault::Overloaded,
            503,
            "/error/status",
            json!("UNAVAILABLE"),
        ),
        (
            Route::Gemini,
            Fault::status(504),
            504,
            "/error/status",
            json!("DEADLINE_EXCEEDED"),
        ),
        (
            Route::Gemini,
            Fault::ContextLength,
            400,
            "/error/status",
            json!("INVALID_ARGUMENT"),
        ),
        (
            Route::Ollama,
            Fault::ModelNotFound,
            404,
            "/error",
            json!("model 'm' not found"),
        ),
        (
            Route::Ollama,
            Fault::Overloaded,
            503,
            "/error",
            json!("server busy, please try again.  maximum pending requests exceeded"),
        ),
        (
            Route::Ollama,
            Fault::ContextLength,
            400,
            "/error",
            json!("the input length exceeds the context length"),
        ),
    ];
    for (route, fault, status, pointer, expected) in cases {
        let mock = start([Rule::any().fault(fault.clone())]).await;
        let res = request(&mock, route, "m", false, json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), status, "{route} {fault:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(
            body.pointer(pointer),
            Some(&expected),
            "{route} {fault:?}: {body}"
        );
        assert_eq!(mock.attempts()[0].status, Some(status));
    }
}

#[tokio::test]
async fn bad_gateways_answer_html_and_refusals_answer_200() {
    let mock = start([
        Rule::model("gw").fault(Fault::status(502)),
        Rule::model("refuse").fault(Fault::ContentFilter),
    ])
    .await;
    let res = request(&mock, Route::OpenAi, "gw", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 502);
    assert_eq!(res.headers()["content-type"], "text/html");
    assert!(res.text().await.unwrap().contains("502 Bad Gateway"));

    let body: Value = request(&mock, Route::Anthropic, "refuse", false, json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["stop_reason"], "refusal");
    let res = request(&mock, Route::Gemini, "refuse", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["promptFeedback"]["blockReason"], "PROHIBITED_CONTENT");
    assert!(body.get("candidates").is_none());
}

#[tokio::test]
async fn rate_limited_writes_retry_after_in_each_format() {
    let mock = start([Rule::any().sequence([
        Fault::rate_limited(Duration::from_millis(1500)),
        Fault::RateLimited {
            retry_after: Some(Duration::from_millis(1500)),
            format: DelayFormat::Millis,
        },
        Fault::RateLimited {
            retry_after: Some(Duration::from_secs(30)),
            format: DelayFormat::HttpDate,
        },
        Fault::RateLimited {
            retry_after: None,
            format: DelayFormat::Seconds,
        },
    ])])
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let res = request(&mock, Route::OpenAi, "m", false, json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429);
        seen.push(res.headers().clone());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    }
    assert_eq!(seen[0]["retry-after"], "2");
    assert_eq!(seen[1]["retry-after-ms"], "1500");
    assert!(!seen[1].contains_key("retry-after"));
    assert!(httpdate::parse_http_date(seen[2]["retry-after"].to_str().unwrap()).is_ok());
    let date_delay = server_delay(&seen[2], SystemTime::now()).unwrap();
    assert!(date_delay > Duration::from_secs(25) && date_delay <= Duration::from_secs(30));
    assert_eq!(
        server_delay(&seen[1], SystemTime::now()),
        Some(Duration::from_millis(1500))
    );
    assert!(!seen[3].contains_key("retry-after"));
}

#[tokio::test]
async fn connection_faults_reset_or_never_answer() {
    let mock = start([
        Rule::model("reset").fault(Fault::Reset),
        Rule::model("silent").fault(Fault::NoResponse),
    ])
    .await;
    let err = request(&mock, Route::OpenAi, "reset", false, json!({}))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none() && !err.is_timeout(), "{err:?}");
    let err = request(&mock, Route::OpenAi, "silent", false, json!({}))
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    let log = mock.attempts();
    assert_eq!((log[0].fault.as_str(), log[0].status), ("reset", None));
    assert_eq!(
        (log[1].fault.as_str(), log[1].status),
        ("no_response", None)
    );
}

#[tokio::test]
async fn stream_faults_cut_stall_corrupt_and_fail_in_band() {
    let mock = start([
        Rule::model("cut").fault(Fault::CutAfter {
            chunks: 5,
            abort: false,
        }),
        Rule::model("abort").fault(Fault::CutAfter {
            chunks: 5,
            abort: true,
        }),
        Rule::model("stall").fault(Fault::StallAfter { chunks: 3 }),
        Rule::model("bad").fault(Fault::MalformedAt { chunk: 2 }),
        Rule::model("err").fault(Fault::ErrorAfter { chunks: 4 }),
        Rule::model("nodone").fault(Fault::NoDone),
    ])
    .await;
    for route in Route::ALL {
        // Cut: N content chunks, no finish reason, no terminator, a clean end of body.
        let res = request(&mock, route, "cut", true, json!({}))
            .send()
            .await
            .unwrap();
        let (events, error) = decode_events(res, route).await;
        assert_eq!(error, None, "{route}");
        assert_eq!(stream_text(route, &events), canonical_answer(5), "{route}");
        assert!(
            events
                .iter()
                .all(|e| e.data != "[DONE]" && e.event != "message_stop")
        );
        assert!(
            !events
                .iter()
                .any(|e| e.data.contains("\"finish_reason\":\"stop\"")
                    || e.data.contains("STOP")
                    || e.data.contains("\"done\":true"))
        );

        // Abort: the body breaks.
        let res = request(&mock, route, "abort", true, json!({}))
            .send()
            .await
            .unwrap();
        assert!(
            res.bytes().await.is_err(),
            "{route}: an aborted body is an error"
        );

        // Malformed: content chunk 2 is not JSON, the rest follows.
        let res = request(&mock, route, "bad", true, json!({}))
            .send()
            .await
            .unwrap();
        let (events, _) = decode_events(res, route).await;
        let unparsable: Vec<_> = events
            .iter()
            .filter(|e| e.data != "[DONE]" && serde_json::from_str::<Value>(&e.data).is_err())
            .collect();
        assert_eq!(unparsable.len(), 1, "{route}");
        assert!(
            stream_text(route, &events)
                .ends_with(&canonical_answer(ANSWER)[canonical_answer(2).len()..])
        );

        // In-band error after 4 chunks, in the provider's own shape.
        let res = request(&mock, route, "err", true, json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let (events, _) = decode_events(res, route).await;
        assert_eq!(stream_text(route, &events), canonical_answer(4), "{route}");
        let last = events.last().unwrap();
        let json: Value = serde_json::from_str(&last.data).unwrap();
        match route {
            Route::Anthropic => {
                assert_eq!(last.event, "error");
                assert_eq!(json["error"]["type"], "overloaded_error");
            }
            Route::OpenRouter => {
                assert_eq!(json["error"]["code"], "server_error");
                assert_eq!(json["choices"][0]["finish_reason"], "error");
            }
            Route::Ollama => assert!(json["error"].is_string()),
            Route::Gemini => assert_eq!(json["error"]["status"], "UNAVAILABLE"),
            _ => assert_eq!(json["error"]["type"], "server_error"),
        }
    }

    // Stall: three chunks, then silence on an open connection.
    let res = request(&mock, Route::OpenAi, "stall", true, json!({}))
        .send()
        .await
        .unwrap();
    let mut stream = res.bytes_stream().eventsource();
    let mut text = String::new();
    while text != canonical_answer(3) {
        let event = stream.next().await.unwrap().unwrap();
        text.extend(event_text(Route::OpenAi, &event));
    }
    let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(next.is_err(), "a stalled stream sends nothing more");

    // No [DONE]: the finish chunk and usage arrive, then the body ends.
    let res = request(&mock, Route::OpenAi, "nodone", true, json!({}))
        .send()
        .await
        .unwrap();
    let (events, error) = decode_events(res, Route::OpenAi).await;
    assert_eq!(error, None);
    assert_eq!(
        stream_text(Route::OpenAi, &events),
        canonical_answer(ANSWER)
    );
    assert!(
        events
            .iter()
            .any(|e| e.data.contains("\"finish_reason\":\"stop\""))
    );
    assert_ne!(events.last().unwrap().data, "[DONE]");
}

#[tokio::test]
async fn slow_first_token_and_latency_delay_the_answer() {
    let mock = MockProvider::builder()
        .rule(Rule::model("slow").fault(Fault::SlowFirstToken {
            delay: Duration::from_millis(120),
        }))
        .rule(
            Rule::model("late")
                .fault(Fault::Ok)
                .latency(Latency::Fixed(Duration::from_millis(80))),
        )
        .start()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let res = request(&mock, Route::Anthropic, "slow", true, json!({}))
        .send()
        .await
        .unwrap();
    let headers_at = started.elapsed();
    let mut stream = res.bytes_stream().eventsource();
    loop {
        let event = stream.next().await.unwrap().unwrap();
        if event_text(Route::Anthropic, &event).is_some() {
            break;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(120));
    assert!(
        headers_at < Duration::from_millis(120),
        "headers come at once: {headers_at:?}"
    );

    let started = std::time::Instant::now();
    let res = request(&mock, Route::Gemini, "late", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(80));
}

#[tokio::test]
async fn sequences_windows_and_routes_pick_the_fault() {
    let mock = start([
        Rule::model("gpt-*")
            .route(Route::OpenAi)
            .sequence([Fault::status(503), Fault::status(500)]),
        Rule::model("later")
            .fault(Fault::Overloaded)
            .between(Duration::from_secs(3600), Duration::from_secs(7200)),
        Rule::model("down")
            .fault(Fault::Overloaded)
            .down_for(Duration::from_secs(3600)),
        Rule::model("cycle")
            .sequence([Fault::status(500), Fault::Ok])
            .repeat(),
    ])
    .await;
    let status = |route, model: &'static str| {
        let req = request(&mock, route, model, false, json!({}));
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Route::OpenAi, "gpt-4o").await, 503);
    assert_eq!(
        status(Route::Anthropic, "gpt-4o").await,
        200,
        "the rule is for OpenAI only"
    );
    assert_eq!(status(Route::OpenAi, "gpt-4o-mini").await, 500);
    assert_eq!(
        status(Route::OpenAi, "gpt-4o").await,
        200,
        "the sequence is used up"
    );
    assert_eq!(
        status(Route::OpenAi, "later").await,
        200,
        "window not open yet"
    );
    assert_eq!(
        status(Route::OpenAi, "down").await,
        503,
        "inside the outage window"
    );
    let cycle: Vec<u16> = [
        status(Route::Ollama, "cycle").await,
        status(Route::Ollama, "cycle").await,
        status(Route::Ollama, "cycle").await,
    ]
    .into();
    assert_eq!(cycle, [500, 200, 500]);
    // A reset restarts sequences.
    mock.reset();
    assert_eq!(status(Route::OpenAi, "gpt-4o").await, 503);
}

#[tokio::test]
async fn simulated_budget_answers_429_with_reset_headers_per_key() {
    let mock = MockProvider::builder()
        .rate_limit(2, 1_000_000)
        .start()
        .await
        .unwrap();
    let send = |route| request(&mock, route, "m", false, json!({})).send();
    assert_eq!(send(Route::OpenAi).await.unwrap().status(), 200);
    let second = send(Route::OpenAi).await.unwrap();
    let info = RateLimitInfo::from_headers(second.headers(), SystemTime::now());
    assert_eq!(info.limit_requests, Some(2));
    assert_eq!(info.remaining_requests, Some(0));
    let third = send(Route::OpenAi).await.unwrap();
    assert_eq!(third.status(), 429);
    let delay = server_delay(third.headers(), SystemTime::now()).unwrap();
    assert!(
        delay > Duration::from_secs(25) && delay <= Duration::from_secs(30),
        "{delay:?}"
    );
    let info = RateLimitInfo::from_headers(third.headers(), SystemTime::now());
    assert_eq!(info.exhausted_reset().map(|d| d.as_secs()), Some(59));
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    // Anthropic's key has its own budget, reported with RFC 3339 resets.
    assert_eq!(send(Route::Anthropic).await.unwrap().status(), 200);
    send(Route::Anthropic).await.unwrap();
    let limited = send(Route::Anthropic).await.unwrap();
    assert_eq!(limited.status(), 429);
    let reset = limited.headers()["anthropic-ratelimit-requests-reset"]
        .to_str()
        .unwrap();
    assert!(llm_core::delay::parse_rfc3339(reset).is_some(), "{reset}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // A request bigger than the whole token budget can never fit.
    let tiny = MockProvider::builder()
        .rate_limit(100, 10)
        .start()
        .await
        .unwrap();
    let res = request(&tiny, Route::OpenAi, "m", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Request too large")
    );
}

#[tokio::test]
async fn attempt_log_keeps_order_and_redacts_secrets() {
    let mock = start([Rule::model("bad").fault(Fault::status(500))]).await;
    request(&mock, Route::OpenAi, "first", false, json!({}))
        .send()
        .await
        .unwrap();
    request(&mock, Route::Anthropic, "bad", true, json!({}))
        .send()
        .await
        .unwrap();
    client()
        .post(mock.url("/v1beta/models/g:generateContent?key=gemini-query-secret"))
        .body(json!({"contents": [{"parts": [{"text": "hi"}]}]}).to_string())
        .send()
        .await
        .unwrap();
    let log = mock.attempts();
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().map(|a| a.index).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(
        (log[0].route, log[0].model.as_str(), log[0].status),
        (Route::OpenAi, "first", Some(200))
    );
    assert_eq!(
        (log[1].route, log[1].stream, log[1].fault.as_str()),
        (Route::Anthropic, true, "status 500")
    );
    assert_eq!(log[0].header("authorization"), Some("[redacted]"));
    assert_eq!(log[1].header("x-api-key"), Some("[redacted]"));
    assert_eq!(log[1].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(log[2].path, "/v1beta/models/g:generateContent");
    assert!(log[0].at <= log[1].at && log[1].at <= log[2].at);
    let everything = serde_json::to_string(&log).unwrap();
    for secret in ["sk-secret", "sk-ant-secret", "gemini-query-secret"] {
        assert!(!everything.contains(secret), "{secret} leaked into the log");
    }

    // The admin endpoint serves the same log; reset empties it.
    let served: Vec<llm_testkit::server::Attempt> = client()
        .get(mock.url("/__mock/attempts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, log);
    let res = client()
        .post(mock.url("/__mock/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(mock.attempts().is_empty());
}

#[tokio::test]
async fn admin_endpoint_replaces_the_plan_or_names_the_bad_field() {
    let mock = start([]).await;
    let res = client()
        .put(mock.url("/__mock/plan"))
        .body("[[rule]]\nmodel = \"m\"\nfault = { fault = \"status\", status = 503 }\n")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = request(&mock, Route::OpenAi, "m", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    let res = client()
        .put(mock.url("/__mock/plan"))
        .body(
            "[[rule]]\nmodel = \"m\"\nfrom = \"10s\"\nuntil = \"5s\"\nfault = { fault = \"ok\" }\n",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["field"], "rule[0].until");
}

#[tokio::test]
async fn keys_are_required_and_checked() {
    let mock = MockProvider::builder()
        .api_key("sk-right")
        .start()
        .await
        .unwrap();
    let res = client()
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = client()
        .post(mock.url("/v1/chat/completions"))
        .bearer_auth("sk-right")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Anthropic without max_tokens or version is a 400, as the real API answers.
    let res = client()
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "sk-right")
        .header("anthropic-version", "2023-06-01")
        .body(json!({"model": "m", "messages": []}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["message"], "max_tokens: Field required");
}

#[tokio::test]
async fn a_prefill_that_is_a_prefix_of_the_answer_is_continued() {
    let mock = start([]).await;
    let body = json!({"model": "m", "max_tokens": 1024, "messages": [
        {"role": "user", "content": "Say the alphabet"},
        {"role": "assistant", "content": canonical_answer(40)}]});
    let res: Value = client()
        .post(mock.url("/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest = res["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        format!("{}{rest}", canonical_answer(40)),
        canonical_answer(ANSWER)
    );
    assert_eq!(res["usage"]["output_tokens"], json!(20));
}

#[tokio::test]
async fn reject_prefill_refuses_only_conversations_ending_with_the_assistant() {
    let mock = start([Rule::any().fault(Fault::RejectPrefill)]).await;
    for route in Route::ALL {
        let res = request(&mock, route, "m", false, json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{route}: no prefill, an answer");
        let prefill = match route {
            Route::Gemini => json!({"contents": [
                {"role": "user", "parts": [{"text": "Say the alphabet"}]},
                {"role": "model", "parts": [{"text": canonical_answer(3)}]}]}),
            _ => json!({"messages": [
                {"role": "user", "content": "Say the alphabet"},
                {"role": "assistant", "content": canonical_answer(3)}]}),
        };
        let res = request(&mock, route, "m", false, prefill)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{route}: a prefill, refused");
        let body = res.text().await.unwrap();
        if route == Route::Anthropic {
            assert!(
                body.contains("does not support assistant message prefill"),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn two_servers_run_side_by_side() {
    let a = start([Rule::any().fault(Fault::status(500))]).await;
    let b = start([]).await;
    assert_ne!(a.addr().port(), b.addr().port());
    let sa = request(&a, Route::OpenAi, "m", false, json!({}))
        .send()
        .await
        .unwrap();
    let sb = request(&b, Route::OpenAi, "m", false, json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!((sa.status().as_u16(), sb.status().as_u16()), (500, 200));
    assert_eq!((a.attempts().len(), b.attempts().len()), (1, 1));
    let addr = a.addr();
    a.shutdown().await;
    // The port is free again once shutdown returns.
    std::net::TcpListener::bind(addr).unwrap();
    assert!(
        request(&b, Route::OpenAi, "m", false, json!({}))
            .send()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn invalid_plans_fail_to_start_naming_the_field() {
    let err = MockProvider::builder()
        .rule(Rule::model("m"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("`rule[0].fault`"), "{err}");
    let err = Plan::from_toml("answer_tokens = 0").unwrap_err();
    assert_eq!(err.field(), "answer_tokens");
    let err = Plan::from_toml("[[rule]]\nfault = { fault = \"teleport\" }").unwrap_err();
    assert!(err.to_string().contains("teleport"), "{err}");
}

/// Every TOML example in the crate README parses as a plan (the documentation cannot rot).
#[test]
fn readme_plan_examples_parse() {
    let readme = include_str!("../README.md");
    let mut blocks = 0;
    let mut rest = readme;
    while let Some(start) = rest.find("```toml\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").unwrap();
        let plan = Plan::from_toml(&body[..end]);
        assert!(
            plan.is_ok(),
            "README block {blocks}: {:?}\n{}",
            plan.err(),
            &body[..end]
        );
        blocks += 1;
        rest = &body[end..];
    }
    assert!(
        blocks >= 10,
        "expected one example per fault, found {blocks}"
    );
}
