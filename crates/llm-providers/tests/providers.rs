//! Every provider over real loopback HTTP against the test kit's mock provider: success,
//! streams with usage, the error table, mid-stream errors, cuts, stalls, malformed chunks,
//! the missing `[DONE]`, timeouts, and keys that never leak.
//!
//! Time is real here (tokio's paused clock would race the sockets); the timeouts under test
//! are a few hundred milliseconds against a server that never answers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use llm_core::{Deadline, ErrorKind, LlmError, RequestExtensions, ResponseMetadata};
use llm_providers::{
    ChatRequest, ChatStream, FinishReason, Provider, ProviderConfig, ProviderKind,
    ProviderRegistry, Timeouts, Usage,
};
use llm_testkit::server::{Fault, MockProvider, Route, Rule, canonical_answer};
use tower::ServiceExt;

const KEY: &str = "sk-live-SECRET-0123456789";

/// The six wire formats plus the generic OpenAI-compatible provider.
const KINDS: [ProviderKind; 7] = ProviderKind::ALL;

fn provider(mock: &MockProvider, kind: ProviderKind) -> Provider {
    provider_with(mock, kind, Timeouts::default())
}

fn provider_with(mock: &MockProvider, kind: ProviderKind, timeouts: Timeouts) -> Provider {
    let base = mock.base_url();
    let url = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => format!("{base}/v1"),
        ProviderKind::OpenRouter => format!("{base}/api/v1"),
        ProviderKind::Gemini => format!("{base}/v1beta"),
        _ => base,
    };
    let mut builder = Provider::builder(kind).base_url(url).timeouts(timeouts);
    if kind != ProviderKind::Ollama {
        builder = builder.api_key(KEY);
    }
    builder.build().unwrap()
}

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(model)
        .system("You are terse.")
        .user("Say the alphabet")
}

async fn mock(rules: impl IntoIterator<Item = Rule>) -> MockProvider {
    let mut b = MockProvider::builder();
    for r in rules {
        b = b.rule(r);
    }
    b.start().await.unwrap()
}

async fn open(p: &Provider, model: &str) -> Result<ChatStream, LlmError> {
    p.streaming().oneshot(ask(model)).await
}

/// The chunks' text until the end, and the error that ended it, if any.
async fn drain(mut stream: ChatStream) -> (String, Option<LlmError>, usize) {
    let mut text = String::new();
    let mut items_after_error = 0;
    let mut error = None;
    while let Some(item) = stream.next().await {
        if error.is_some() {
            items_after_error += 1;
        }
        match item {
            Ok(chunk) => text.push_str(&chunk.delta),
            Err(err) => error = Some(err),
        }
    }
    (text, error, items_after_error)
}

#[tokio::test]
async fn every_provider_answers_with_text_usage_and_identity() {
    let mock = mock([]).await;
    for kind in KINDS {
        let res = provider(&mock, kind).oneshot(ask("m-1")).await.unwrap();
        assert_eq!(res.text, canonical_answer(60), "{kind}");
        assert_eq!(res.finish_reason, Some(FinishReason::Stop), "{kind}");
        let usage = res.usage.unwrap();
        assert_eq!(usage.output_tokens, 60, "{kind}");
        assert!(
            usage.input_tokens > 0 && usage.total_tokens == usage.input_tokens + 60,
            "{kind}"
        );
        assert_eq!(&*res.provider, kind.name());
        assert_eq!(res.model, "m-1", "{kind}");
        assert_eq!(res.meta.attempts, 1);
        if kind != ProviderKind::Ollama {
            assert!(res.request_id.is_some(), "{kind}");
        }
    }
    // The request reached each route with the provider's own headers and body fields.
    let log = mock.attempts();
    let by_route = |route| log.iter().find(|a| a.route == route).unwrap();
    assert_eq!(
        by_route(Route::Anthropic).header("anthropic-version"),
        Some("2023-06-01")
    );
    assert_eq!(
        by_route(Route::Anthropic).header("x-api-key"),
        Some("[redacted]")
    );
    assert_eq!(by_route(Route::Azure).header("api-key"), Some("[redacted]"));
    assert_eq!(
        by_route(Route::Gemini).header("x-goog-api-key"),
        Some("[redacted]")
    );
    assert_eq!(
        by_route(Route::Azure).path,
        "/openai/deployments/m-1/chat/completions"
    );
}

#[tokio::test]
async fn max_tokens_reach_every_provider_and_length_is_normalized() {
    let mock = mock([]).await;
    for kind in KINDS {
        let res = provider(&mock, kind)
            .oneshot(ask("m").max_tokens(7))
            .await
            .unwrap();
        assert_eq!(res.text, canonical_answer(7), "{kind}");
        assert_eq!(res.finish_reason, Some(FinishReason::Length), "{kind}");
    }
}

#[tokio::test]
async fn every_provider_streams_to_its_terminator_with_usage() {
    let mock = mock([]).await;
    for kind in KINDS {
        let stream = open(&provider(&mock, kind), "m").await.unwrap();
        let mut stream = stream;
        let mut text = String::new();
        let mut usage = None;
        let mut finish = None;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            text.push_str(&chunk.delta);
            usage = chunk.usage.or(usage);
            finish = chunk.finish_reason.or(finish);
        }
        assert_eq!(text, canonical_answer(60), "{kind}");
        assert!(stream.is_complete(), "{kind}");
        assert_eq!(finish, Some(FinishReason::Stop), "{kind}");
        assert_eq!(usage.map(|u| u.output_tokens), Some(60), "{kind}");
        assert_eq!(stream.model(), "m", "{kind}");
    }
}

#[tokio::test]
async fn usage_only_and_empty_choices_chunks_are_read() {
    // Azure opens with `choices: []`; OpenAI's usage chunk has `choices: []` too.
    let mock = mock([]).await;
    for kind in [ProviderKind::Azure, ProviderKind::OpenAi] {
        let mut stream = open(&provider(&mock, kind), "m").await.unwrap();
        let mut chunks = Vec::new();
        while let Some(chunk) = stream.next().await {
            chunks.push(chunk.unwrap());
        }
        let last = chunks.last().unwrap();
        assert!(
            last.delta.is_empty() && last.finish_reason.is_none(),
            "{kind}: {last:?}"
        );
        assert_eq!(last.usage.map(|u| u.output_tokens), Some(60), "{kind}");
        assert!(
            chunks
                .iter()
                .all(|c| !c.delta.is_empty() || c.usage.is_some() || c.finish_reason.is_some())
        );
    }
}

#[tokio::test]
async fn a_stream_without_done_is_complete_at_the_end_of_its_body() {
    let mock = mock([Rule::any().fault(Fault::NoDone)]).await;
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::OpenRouter,
        ProviderKind::OpenAiCompatible,
    ] {
        let stream = open(&provider(&mock, kind), "m").await.unwrap();
        let started = std::time::Instant::now();
        let (text, error, _) = drain(stream).await;
        assert_eq!(
            (text, error.map(|e| e.kind())),
            (canonical_answer(60), None),
            "{kind}"
        );
        // Finalized when the body ends, not after waiting for a [DONE] (idle is 30 s).
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // Anthropic without message_stop is truncated.
    let (text, error, _) = drain(
        open(&provider(&mock, ProviderKind::Anthropic), "m")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(text, canonical_answer(60));
    assert_eq!(error.unwrap().kind(), ErrorKind::StreamInterrupted);
}

/// (kind, fault) → the ErrorKind the layers decide on (provider-wire-formats.md §8).
#[tokio::test]
async fn status_errors_map_to_the_reference_table() {
    use ErrorKind::*;
    use ProviderKind as P;
    let secs = |s| Fault::rate_limited(Duration::from_secs(s));
    let cases: Vec<(P, Fault, ErrorKind)> = vec![
        (P::OpenAi, secs(2), RateLimited),
        (P::OpenAi, Fault::QuotaExceeded, QuotaExceeded),
        (P::OpenAi, Fault::RequestTooLarge, QuotaExceeded),
        (P::OpenAi, Fault::ContextLength, ContextLengthExceeded),
        (P::OpenAi, Fault::ContentFilter, ContentFiltered),
        (P::OpenAi, Fault::Unauthorized, Unauthorized),
        (P::OpenAi, Fault::ModelNotFound, ModelNotFound),
        (P::OpenAi, Fault::status(500), ServerError),
        (P::OpenAi, Fault::status(502), ServerError),
        (P::OpenAi, Fault::Overloaded, Overloaded),
        (P::OpenAiCompatible, Fault::QuotaExceeded, QuotaExceeded),
        (P::Azure, secs(6), RateLimited),
        (P::Azure, Fault::QuotaExceeded, QuotaExceeded),
        (P::Azure, Fault::ContentFilter, ContentFiltered),
        (P::Azure, Fault::ContextLength, ContextLengthExceeded),
        (P::Azure, Fault::ModelNotFound, ModelNotFound),
        (P::Azure, Fault::Unauthorized, Unauthorized),
        (P::OpenRouter, secs(1), RateLimited),
        (P::OpenRouter, Fault::QuotaExceeded, QuotaExceeded),
        (P::OpenRouter, Fault::status(408), Timeout),
        (P::OpenRouter, Fault::status(502), ServerError),
        (P::OpenRouter, Fault::Overloaded, Overloaded),
        (P::OpenRouter, Fault::ContentFilter, ContentFiltered),
        (P::OpenRouter, Fault::ContextLength, ContextLengthExceeded),
        (P::Anthropic, secs(3), RateLimited),
        (P::Anthropic, Fault::Overloaded, Overloaded),
        (P::Anthropic, Fault::status(529), Overloaded),
        (P::Anthropic, Fault::QuotaExceeded, QuotaExceeded),
        (P::Anthropic, Fault::status(402), QuotaExceeded),
        (P::Anthropic, Fault::ContextLength, ContextLengthExceeded),
        (P::Anthropic, Fault::Unauthorized, Unauthorized),
        (P::Anthropic, Fault::ModelNotFound, ModelNotFound),
        (P::Anthropic, Fault::status(500), ServerError),
        (P::Anthropic, Fault::status(504), Timeout),
        (
            P::Gemini,
            Fault::rate_limited(Duration::from_secs(36)),
            RateLimited,
        ),
        (P::Gemini, Fault::QuotaExceeded, QuotaExceeded),
        (P::Gemini, Fault::Unauthorized, Unauthorized),
        (P::Gemini, Fault::ContextLength, ContextLengthExceeded),
        (P::Gemini, Fault::Overloaded, Overloaded),
        (P::Gemini, Fault::status(500), ServerError),
        (P::Gemini, Fault::status(504), Timeout),
        (P::Gemini, Fault::ModelNotFound, ModelNotFound),
        (P::Ollama, secs(1), RateLimited),
        (P::Ollama, Fault::ModelNotFound, ModelNotFound),
        (P::Ollama, Fault::ContextLength, ContextLengthExceeded),
        (P::Ollama, Fault::Overloaded, Overloaded),
        (P::Ollama, Fault::status(500), ServerError),
    ];
    let mut failures = Vec::new();
    for (kind, fault, expected) in cases {
        let mock = mock([Rule::any().fault(fault.clone())]).await;
        let p = provider(&mock, kind);
        let err = p.clone().oneshot(ask("m")).await.unwrap_err();
        if err.kind() != expected {
            failures.push(format!("{kind} {fault:?}: {:?} ({err})", err.kind()));
        }
        assert_eq!(err.provider(), Some(kind.name()));
        assert!(err.status().is_some(), "{kind} {fault:?}");
        // The streaming call fails the same way, before any output.
        let streamed = open(&p, "m").await.unwrap_err();
        assert_eq!(streamed.kind(), err.kind(), "{kind} {fault:?} (streaming)");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn server_delays_come_from_headers_and_gemini_bodies() {
    let mock = mock([
        Rule::model("secs").fault(Fault::rate_limited(Duration::from_secs(2))),
        Rule::model("gem").fault(Fault::rate_limited(Duration::from_secs(36))),
    ])
    .await;
    let err = provider(&mock, ProviderKind::OpenAi)
        .oneshot(ask("secs"))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(err.code(), Some("rate_limit_exceeded"));
    let err = provider(&mock, ProviderKind::Gemini)
        .oneshot(ask("gem"))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(36)));
    // Success responses carry the rate-limit headers for the limiter's resync.
    let res = provider(&mock, ProviderKind::OpenAi)
        .oneshot(ask("ok"))
        .await
        .unwrap();
    assert_eq!(res.rate_limit.limit_requests, Some(1_000_000));
}

#[tokio::test]
async fn html_5xx_bodies_become_readable_server_errors() {
    let mock = mock([Rule::any().fault(Fault::status(502))]).await;
    let err = provider(&mock, ProviderKind::OpenAi)
        .oneshot(ask("m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.message(), "HTTP 502 Bad Gateway");
}

#[tokio::test]
async fn content_policy_answers_are_returned_but_classified() {
    let mock = mock([Rule::any().fault(Fault::ContentFilter)]).await;
    let res = provider(&mock, ProviderKind::Anthropic)
        .oneshot(ask("m"))
        .await
        .unwrap();
    assert_eq!(res.finish_reason, Some(FinishReason::ContentFilter));
    let outcome = llm_core::ResponseOutcome::response_outcome(&res);
    assert_eq!(outcome.kind(), Some(ErrorKind::ContentFiltered));
    // Gemini's blocked prompt has no answer at all: an error, not a parse failure.
    let err = provider(&mock, ProviderKind::Gemini)
        .oneshot(ask("m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ContentFiltered);
    assert_eq!(err.code(), Some("PROHIBITED_CONTENT"));
}

#[tokio::test]
async fn a_mid_stream_error_event_is_an_in_band_stream_interruption() {
    let mock = mock([
        Rule::model("late").fault(Fault::ErrorAfter { chunks: 5 }),
        Rule::model("early").fault(Fault::ErrorAfter { chunks: 0 }),
    ])
    .await;
    for kind in KINDS {
        let p = provider(&mock, kind);
        let (text, error, after) = drain(open(&p, "late").await.unwrap()).await;
        assert_eq!(text, canonical_answer(5), "{kind}");
        let error = error.unwrap_or_else(|| panic!("{kind}: the stream ended cleanly"));
        assert_eq!(error.kind(), ErrorKind::StreamInterrupted, "{kind}");
        assert_eq!(after, 0, "{kind}: nothing after the error");
        // Before any output the same event is an ordinary error of its own kind.
        let err = open(&p, "early").await.unwrap_err();
        let expected = match kind {
            ProviderKind::Anthropic | ProviderKind::Gemini => ErrorKind::Overloaded,
            _ => ErrorKind::ServerError,
        };
        assert_eq!(err.kind(), expected, "{kind}: {err}");
    }
}

#[tokio::test]
async fn a_stream_cut_before_its_terminator_is_never_complete() {
    let mock = mock([
        Rule::model("cut").fault(Fault::CutAfter {
            chunks: 40,
            abort: false,
        }),
        Rule::model("abort").fault(Fault::CutAfter {
            chunks: 10,
            abort: true,
        }),
        Rule::model("empty").fault(Fault::CutAfter {
            chunks: 0,
            abort: false,
        }),
    ])
    .await;
    for kind in KINDS {
        let p = provider(&mock, kind);
        let (text, error, _) = drain(open(&p, "cut").await.unwrap()).await;
        assert_eq!(text, canonical_answer(40), "{kind}");
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::StreamInterrupted),
            "{kind}"
        );
        let (text, error, _) = drain(open(&p, "abort").await.unwrap()).await;
        assert_eq!(text, canonical_answer(10), "{kind}");
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::StreamInterrupted),
            "{kind}"
        );
        // Cut before any content: the call itself fails, retryably.
        let err = open(&p, "empty").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Network, "{kind}: {err}");
    }
}

#[tokio::test]
async fn a_malformed_chunk_ends_the_stream_with_an_error() {
    let mock = mock([
        Rule::model("mid").fault(Fault::MalformedAt { chunk: 3 }),
        Rule::model("first").fault(Fault::MalformedAt { chunk: 1 }),
    ])
    .await;
    for kind in KINDS {
        let p = provider(&mock, kind);
        let (text, error, _) = drain(open(&p, "mid").await.unwrap()).await;
        assert_eq!(
            text,
            canonical_answer(2),
            "{kind}: nothing after the bad chunk"
        );
        assert_eq!(
            error.map(|e| e.kind()),
            Some(ErrorKind::StreamInterrupted),
            "{kind}"
        );
        let err = open(&p, "first").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError, "{kind}");
        // A malformed complete body is a classified error, not a panic.
        let err = p.oneshot(ask("first")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError, "{kind}");
    }
}

#[tokio::test]
async fn a_stall_past_the_idle_timeout_interrupts_the_stream() {
    let mock = mock([Rule::any().fault(Fault::StallAfter { chunks: 3 })]).await;
    let timeouts = Timeouts {
        idle: Duration::from_millis(300),
        ..Timeouts::default()
    };
    for kind in [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::Ollama,
    ] {
        let p = provider_with(&mock, kind, timeouts);
        let started = std::time::Instant::now();
        let (text, error, _) = drain(open(&p, "m").await.unwrap()).await;
        assert_eq!(text, canonical_answer(3), "{kind}");
        let error = error.unwrap();
        assert_eq!(error.kind(), ErrorKind::StreamInterrupted, "{kind}");
        assert!(error.message().contains("no data for 300 ms"), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}

#[tokio::test]
async fn first_token_connect_and_total_timeouts_are_timeouts() {
    let mock = mock([
        Rule::model("slow").fault(Fault::SlowFirstToken {
            delay: Duration::from_secs(30),
        }),
        Rule::model("silent").fault(Fault::NoResponse),
        Rule::model("reset").fault(Fault::Reset),
    ])
    .await;
    let timeouts = Timeouts {
        first_token: Duration::from_millis(250),
        total: Duration::from_millis(400),
        ..Timeouts::default()
    };
    let p = provider_with(&mock, ProviderKind::OpenAi, timeouts);
    let err = open(&p, "slow").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.message().contains("first token"), "{err}");
    let err = p.clone().oneshot(ask("silent")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let err = p.clone().oneshot(ask("reset")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network, "{err}");
    // A request deadline shorter than the total wins.
    let p = provider(&mock, ProviderKind::Anthropic);
    let mut req = ask("silent");
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(200)));
    assert!(req.deadline().is_some());
    let started = std::time::Instant::now();
    let err = p.oneshot(req).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listens on this port any more: a connection error.
    let gone = MockProvider::builder().start().await.unwrap();
    let p = provider(&gone, ProviderKind::OpenAi);
    gone.shutdown().await;
    assert_eq!(
        p.oneshot(ask("m")).await.unwrap_err().kind(),
        ErrorKind::Network
    );
}

#[tokio::test]
async fn the_retry_layer_drives_a_provider() {
    let mock = mock([Rule::any().sequence([Fault::status(503), Fault::status(500)])]).await;
    let mut config = llm_retry_layer::RetryConfig::standard();
    config.base_delay = Duration::from_millis(1);
    config.max_delay = Duration::from_millis(5);
    let retry = llm_retry_layer::RetryLayer::new(config).unwrap();
    let svc = tower::ServiceBuilder::new()
        .layer(retry)
        .service(provider(&mock, ProviderKind::Anthropic));
    let res = svc.oneshot(ask("m")).await.unwrap();
    assert_eq!(res.text, canonical_answer(60));
    assert_eq!(res.metadata().unwrap().attempts, 3);
    assert_eq!(mock.attempts().len(), 3);
}

/// Captures everything `tracing` writes at TRACE (ours, reqwest's and hyper's).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn keys_never_reach_logs_debug_output_or_errors() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let mut seen = String::new();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mock = mock([
                Rule::model("bad").fault(Fault::Unauthorized),
                Rule::model("cut").fault(Fault::CutAfter {
                    chunks: 2,
                    abort: true,
                }),
            ])
            .await;
            for kind in KINDS {
                let p = provider(&mock, kind);
                seen.push_str(&format!("{p:?} {:?}", p.streaming()));
                let ok = p.clone().oneshot(ask("m")).await.unwrap();
                seen.push_str(&format!("{ok:?}"));
                for model in ["bad", "cut"] {
                    match open(&p, model).await {
                        Ok(stream) => {
                            seen.push_str(&format!("{stream:?}"));
                            let (_, err, _) = drain(stream).await;
                            seen.push_str(&format!("{err:?}"));
                        }
                        Err(err) => seen.push_str(&format!("{err} {err:?}")),
                    }
                }
                let err = p.oneshot(ask("bad")).await.unwrap_err();
                seen.push_str(&format!("{err} {err:?}"));
            }
        });
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("provider call"), "tracing was captured");
    for (what, text) in [("logs", &logs), ("debug output and errors", &seen)] {
        assert!(!text.contains(KEY), "the key leaked into {what}");
        assert!(
            !text.contains("SECRET-0123"),
            "part of the key leaked into {what}"
        );
    }
}

#[test]
fn configuration_names_the_missing_variable_and_the_bad_field() {
    let none = |_: &str| None;
    for kind in KINDS {
        let result = ProviderConfig::new(kind).build_with(none);
        match kind.key_variable() {
            Some(var) if kind != ProviderKind::Azure => {
                assert_eq!(result.unwrap_err().field(), var, "{kind}");
            }
            _ => {}
        }
    }
    // Azure and OpenAI-compatible servers need their endpoint.
    let err = ProviderConfig::new(ProviderKind::Azure)
        .build_with(|n| (n == "AZURE_OPENAI_API_KEY").then(|| "k".to_owned()))
        .unwrap_err();
    assert_eq!(err.field(), "AZURE_OPENAI_ENDPOINT");
    let err = Provider::builder(ProviderKind::OpenAi)
        .api_key("k")
        .base_url("ftp://x")
        .build()
        .unwrap_err();
    // Set in code (or a file): named as the field; from the environment: as the variable.
    assert_eq!(err.field(), "base_url");
    let err = Provider::builder(ProviderKind::OpenAi)
        .api_key("k")
        .env_with(|n| (n == "OPENAI_BASE_URL").then(|| "ftp://x".to_owned()))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "OPENAI_BASE_URL");
    let err = Provider::builder(ProviderKind::Ollama)
        .timeouts(Timeouts {
            idle: Duration::ZERO,
            ..Timeouts::default()
        })
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeouts.idle");
    // From the environment: OLLAMA_HOST without a scheme, Gemini's GOOGLE_API_KEY fallback.
    let env = |n: &str| match n {
        "OLLAMA_HOST" => Some("127.0.0.1:11434".to_owned()),
        "GOOGLE_API_KEY" => Some("g".to_owned()),
        _ => None,
    };
    let ollama = Provider::builder(ProviderKind::Ollama)
        .env_with(env)
        .build()
        .unwrap();
    assert_eq!(ollama.base_url(), "http://127.0.0.1:11434");
    Provider::builder(ProviderKind::Gemini)
        .env_with(env)
        .build()
        .unwrap();
    // Unknown kinds and fields are named.
    let err = "watsonx".parse::<ProviderKind>().unwrap_err();
    assert_eq!(err.field(), "kind");
    let err =
        serde_json::from_str::<ProviderConfig>(r#"{"kind":"openai","api_kee":"x"}"#).unwrap_err();
    assert!(err.to_string().contains("api_kee"), "{err}");
}

#[tokio::test]
async fn the_registry_builds_providers_by_name() {
    let mock = mock([]).await;
    let config = |kind| {
        let mut config = ProviderConfig::new(kind);
        config.base_url = Some(mock.base_url());
        config
    };
    let registry = ProviderRegistry::from_configs(
        [
            ("claude", config(ProviderKind::Anthropic)),
            ("ollama", config(ProviderKind::Ollama)),
        ],
        |n| (n == "ANTHROPIC_API_KEY").then(|| KEY.to_owned()),
    )
    .unwrap();
    let claude = registry.get("claude").unwrap().clone();
    let res = claude.oneshot(ask("m")).await.unwrap();
    assert_eq!(&*res.provider, "claude");
    assert_eq!(
        res.usage,
        Some(Usage::new(res.usage.unwrap().input_tokens, 60))
    );
    // A provider named after its kind needs no `kind` field.
    let registry = ProviderRegistry::from_configs(
        [("ollama", {
            let mut config = ProviderConfig::default();
            config.base_url = Some(mock.base_url());
            config
        })],
        |_| None,
    )
    .unwrap();
    assert_eq!(registry.get("ollama").unwrap().kind(), ProviderKind::Ollama);
}
