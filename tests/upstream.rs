//! `upstream::Upstream` and `UpstreamChain` through the public API, against the test kit's
//! mock provider over real sockets: one set of layer instances per upstream, shared by its
//! complete and streaming services and read by its health handles; a fallback chain and
//! stream recovery built from one list.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::StreamExt;
use llm_testkit::server::{Fault, MockProvider, Plan, Rule, canonical_answer};
use llm_tower::breaker::State;
use llm_tower::prelude::*;
use llm_tower::providers::recovery::RecoveryPolicy;
use llm_tower::ratelimit::{Mode, Rate, StoreLocation};
use llm_tower::retry::RetryConfig;
use llm_tower::upstream::{BreakerScope, UpstreamHealth};
use tower::{Layer, Service, ServiceExt};

fn openai(mock: &MockProvider) -> Provider {
    Provider::openai()
        .api_key("sk-test")
        .base_url(format!("{}/v1", mock.base_url()))
        .build()
        .unwrap()
}

fn anthropic(mock: &MockProvider) -> Provider {
    Provider::anthropic()
        .api_key("sk-ant-test")
        .base_url(mock.base_url())
        .build()
        .unwrap()
}

fn no_retries() -> RetryConfig {
    RetryConfig {
        max_retries: 0,
        ..RetryConfig::standard()
    }
}

fn ask(model: &str) -> ChatRequest {
    ChatRequest::new(model).user("Hello").max_tokens(100)
}

#[tokio::test]
async fn complete_and_streaming_calls_share_one_breaker_and_one_limit() {
    let mock = MockProvider::builder().start().await.unwrap();
    let up = Upstream::builder("openai", openai(&mock))
        .retry(no_retries())
        .breaker_scope(BreakerScope::Provider)
        .rate_limit(RateLimitConfig {
            requests: Some(Rate::per_minute(2).burst(2)),
            mode: Mode::Reject,
            ..RateLimitConfig::default()
        })
        .build()
        .unwrap();

    up.chat().oneshot(ask("gpt-4o-mini")).await.unwrap();
    let stream = up.stream().oneshot(ask("gpt-4o-mini")).await.unwrap();
    assert_eq!(stream.collect().await.unwrap().text, canonical_answer(60));
    // The complete call and the stream spent the same two permits.
    let err = up.chat().oneshot(ask("gpt-4o-mini")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LocalRateLimited);
    let limiter = up.health().limiter();
    assert_eq!((limiter.admitted(), limiter.rejected()), (2, 1));
    assert_eq!(limiter.capacity().unwrap().requests, Some(0));
    assert_eq!(mock.attempts().len(), 2, "the refused call never left");

    // Opening the breaker from its health handle stops both services.
    let breaker = up.health().breaker_for("any model").unwrap();
    breaker.force_open();
    let err = up.stream().oneshot(ask("gpt-4o-mini")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(breaker.metrics().rejected, 1);
}

#[tokio::test]
async fn embeddings_share_the_models_breaker_and_the_limit_and_fall_back() {
    let mock = MockProvider::builder()
        .rule(Rule::model("embed-down").fault(Fault::status(500)))
        .start()
        .await
        .unwrap();
    let up = Upstream::builder("openai", openai(&mock))
        .retry(no_retries())
        .rate_limit(RateLimitConfig {
            requests: Some(Rate::per_minute(3).burst(3)),
            mode: Mode::Reject,
            ..RateLimitConfig::default()
        })
        .build()
        .unwrap();
    let texts = ["a", "bb"];

    // A chat call and an embedding call spend the same permits.
    up.chat().oneshot(ask("gpt-4o-mini")).await.unwrap();
    let answer = up
        .embed()
        .oneshot(EmbeddingRequest::new("text-embedding-3-small", texts))
        .await
        .unwrap();
    assert_eq!(answer.embeddings.len(), 2);
    assert_eq!(up.health().limiter().admitted(), 2);

    // The model's breaker, opened from its handle, stops embeddings for that model only.
    let breaker = up.health().breaker_for("text-embedding-3-small").unwrap();
    breaker.force_open();
    let err = up
        .embed()
        .oneshot(EmbeddingRequest::new("text-embedding-3-small", texts))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);

    // A chain moves on from a failing model to the next upstream's.
    let other = Upstream::builder("backup", openai(&mock)).build().unwrap();
    let chain = UpstreamChain::builder()
        .upstream_as(&up, "embed-down")
        .upstream_as(&other, "text-embedding-3-large")
        .build()
        .unwrap();
    let answer = chain
        .embed()
        .oneshot(EmbeddingRequest::new("any", texts))
        .await
        .unwrap();
    assert_eq!(&*answer.provider, "backup");
    assert_eq!(answer.model, "text-embedding-3-large");
}

#[tokio::test]
async fn one_list_builds_the_fallback_chain_and_the_stream_repairs() {
    let primary = MockProvider::builder()
        .rule(Rule::any().streaming(false).fault(Fault::QuotaExceeded))
        .rule(Rule::any().streaming(true).fault(Fault::CutAfter {
            chunks: 20,
            abort: true,
        }))
        .start()
        .await
        .unwrap();
    let backup = MockProvider::builder().start().await.unwrap();
    let openai = Upstream::builder("openai", openai(&primary))
        .build()
        .unwrap();
    let claude = Upstream::builder("anthropic", anthropic(&backup))
        .build()
        .unwrap();
    let moves = Arc::new(AtomicUsize::new(0));
    let counted = moves.clone();
    let chain = UpstreamChain::builder()
        .upstream(&openai)
        .upstream_as(&claude, "claude-3-5-haiku-latest")
        .recovery(RecoveryPolicy::continuing())
        .on_fallback(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        })
        .build()
        .unwrap();
    assert_eq!(
        chain
            .targets()
            .iter()
            .map(|(name, _)| &**name)
            .collect::<Vec<_>>(),
        ["openai", "anthropic"]
    );

    // Exhausted quota on the primary: the backup answers, under the model named for it.
    let answer = chain.chat().oneshot(ask("gpt-4o-mini")).await.unwrap();
    assert_eq!(&*answer.provider, "anthropic");
    assert_eq!(answer.text, canonical_answer(60));
    assert_eq!(moves.load(Ordering::Relaxed), 1);
    assert_eq!(backup.attempts()[0].model, "claude-3-5-haiku-latest");

    // A stream cut after 20 chunks on the primary continues on the backup, from the same list.
    let mut stream = chain.stream().oneshot(ask("gpt-4o-mini")).await.unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&chunk.unwrap().delta);
    }
    let recovery = stream.recovery().expect("the stream was repaired");
    assert_eq!((&*recovery.from, &*recovery.to), ("openai", "anthropic"));
    assert!(text.starts_with(&canonical_answer(20)), "{text}");

    // Collected whole, a repaired stream names the provider that finished it.
    let whole = chain
        .stream()
        .oneshot(ask("gpt-4o-mini"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(&*whole.provider, "anthropic");
    assert!(
        whole.text.starts_with(&canonical_answer(20)),
        "{}",
        whole.text
    );
    assert!(whole.text.len() > canonical_answer(20).len());
}

#[tokio::test]
async fn health_handles_of_different_stacks_share_one_type() {
    let mock = MockProvider::builder().start().await.unwrap();
    let limited = Upstream::builder("openai", openai(&mock))
        .rate_limit(RateLimitConfig::per_minute(500, 30_000))
        .known_models(["gpt-4o", "gpt-4o-mini"])
        .build()
        .unwrap();
    let unlimited = Upstream::builder("anthropic", anthropic(&mock))
        .breaker_scope(BreakerScope::Provider)
        .build()
        .unwrap();
    // One list, though the stacks differ in limits and breaker scope.
    let health: Vec<UpstreamHealth> = [&limited, &unlimited]
        .iter()
        .map(|up| up.health().clone())
        .collect();

    let models: Vec<Option<String>> = health[0].breakers().into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        models,
        [Some("gpt-4o".to_owned()), Some("gpt-4o-mini".to_owned())]
    );
    assert_eq!(health[0].breaker_scope(), BreakerScope::PerModel);
    let capacity = health[0].limiter().capacity().unwrap();
    assert_eq!(
        (capacity.requests, capacity.tokens),
        (Some(500), Some(30_000))
    );
    assert_eq!(health[0].limiter().location(), StoreLocation::Local);

    assert_eq!(health[1].breakers().len(), 1);
    assert_eq!(
        health[1].breakers()[0].0,
        None,
        "one breaker for the whole provider"
    );
    assert_eq!(health[1].breakers()[0].1.state(), State::Closed);
    let capacity = health[1].limiter().capacity().unwrap();
    assert_eq!(
        (capacity.requests, capacity.tokens),
        (None, None),
        "no limit of its own"
    );

    // A model called later gets its breaker, under the upstream's name.
    limited.chat().oneshot(ask("o3-mini")).await.unwrap();
    let breaker = limited.health().breaker_for("o3-mini").unwrap();
    assert_eq!(breaker.name(), Some("openai/o3-mini"));
}

#[tokio::test]
async fn bad_settings_fail_the_build_naming_the_field() {
    let mock = MockProvider::builder().start().await.unwrap();
    let err = Upstream::builder("openai", openai(&mock))
        .retry(RetryConfig {
            max_retries: 1_000,
            ..RetryConfig::standard()
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("retry.max_retries"), "{err}");

    let err = Upstream::builder("openai", openai(&mock))
        .rate_limit(RateLimitConfig {
            requests: Some(Rate::per_minute(0)),
            ..RateLimitConfig::default()
        })
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("rate_limit.requests"), "{err}");

    let err = UpstreamChain::builder().build().unwrap_err();
    assert!(err.to_string().contains("upstreams"), "{err}");
}

/// Counts the calls it passes on.
#[derive(Clone)]
struct CountLayer(Arc<AtomicUsize>);

impl<S> Layer<S> for CountLayer {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted(inner, self.0.clone())
    }
}

#[derive(Clone)]
struct Counted<S>(S, Arc<AtomicUsize>);

impl<S: Service<ChatRequest>> Service<ChatRequest> for Counted<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }
    fn call(&mut self, request: ChatRequest) -> S::Future {
        self.1.fetch_add(1, Ordering::Relaxed);
        self.0.call(request)
    }
}

#[tokio::test]
async fn an_attempt_layer_sees_every_attempt_and_a_chain_may_retry_otherwise() {
    let mock = MockProvider::builder()
        .rule(Rule::any().sequence([Fault::status(503), Fault::status(503)]))
        .start()
        .await
        .unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    let quick = RetryConfig {
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
        ..RetryConfig::standard()
    };
    let up = Upstream::builder("openai", openai(&mock))
        .retry(quick.clone())
        .around_attempts(CountLayer(attempts.clone()))
        .build()
        .unwrap();

    // Two 503s, then the answer: three attempts, each seen by the layer.
    let answer = up.chat().oneshot(ask("gpt-4o-mini")).await.unwrap();
    assert_eq!(answer.text, canonical_answer(60));
    assert_eq!(attempts.load(Ordering::Relaxed), 3);

    // The same upstream in a chain that does not retry: one attempt, through the same layer.
    let mut always_503 = Plan::default();
    always_503.rules.push(Rule::any().fault(Fault::status(503)));
    mock.set_plan(always_503).unwrap();
    let chain = UpstreamChain::builder()
        .upstream(&up)
        .map_retry(|retry| RetryConfig {
            max_retries: 0,
            ..retry.clone()
        })
        .build()
        .unwrap();
    attempts.store(0, Ordering::Relaxed);
    let err = chain.chat().oneshot(ask("gpt-4o-mini")).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn retries_under_other_settings_spend_the_upstream_s_one_budget() {
    let mock = MockProvider::builder()
        .rule(Rule::any().fault(Fault::status(503)))
        .start()
        .await
        .unwrap();
    let quick = RetryConfig {
        base_delay: std::time::Duration::from_millis(1),
        max_delay: std::time::Duration::from_millis(2),
        ..RetryConfig::standard()
    };
    let up = Upstream::builder("openai", openai(&mock))
        .retry(quick.clone())
        .build()
        .unwrap();
    let budget = up
        .retry_budget()
        .expect("the standard settings have a budget");
    let before = budget.balance();
    // A chain retrying under other settings, as the gateway's /api/chat does.
    let other = up
        .chat_with_retry(RetryConfig {
            max_retries: 1,
            ..quick
        })
        .unwrap();
    other.oneshot(ask("gpt-4o-mini")).await.unwrap_err();
    assert_eq!(mock.attempts().len(), 2, "one retry");
    // The request's deposit landed in the upstream's budget (the retry drew on the budget's
    // per-second floor): a retry layer of its own would have left this one untouched.
    assert!(budget.balance() > before, "{} > {before}", budget.balance());
}
