//! The layers' and providers' metrics (feature `metrics`) through the public API: an
//! upstream chain over the test kit's mock providers, scripted faults, and a recorder that
//! keeps every value, scoped to the test's thread (a current-thread runtime runs every task
//! there), so tests running side by side do not see each other's metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use llm_testkit::server::{Fault, MockProvider, Rule};
use llm_tower::prelude::*;
use llm_tower::ratelimit::{Mode, Rate};
use llm_tower::retry::RetryConfig;
use llm_tower::upstream::BreakerScope;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

/// Every series recorded since the last look, as `name{label=value,…}` (labels in the
/// order recorded). A look takes the counts and histograms away; gauges stay.
fn series(snapshotter: &Snapshotter) -> BTreeMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect()
}

fn counter(all: &BTreeMap<String, DebugValue>, key: &str) -> u64 {
    match all.get(key) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{key}: {other:?} in {:#?}", all.keys().collect::<Vec<_>>()),
    }
}

fn gauge(all: &BTreeMap<String, DebugValue>, key: &str) -> f64 {
    match all.get(key) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{key}: {other:?} in {:#?}", all.keys().collect::<Vec<_>>()),
    }
}

fn histogram(all: &BTreeMap<String, DebugValue>, key: &str) -> Vec<f64> {
    match all.get(key) {
        Some(DebugValue::Histogram(values)) => values.iter().map(|v| v.into_inner()).collect(),
        other => panic!("{key}: {other:?} in {:#?}", all.keys().collect::<Vec<_>>()),
    }
}

fn quick_retries(max_retries: u32) -> RetryConfig {
    RetryConfig {
        max_retries,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
        ..RetryConfig::standard()
    }
}

fn ask() -> ChatRequest {
    ChatRequest::new("gpt-4o-mini")
        .user("Hello")
        .max_tokens(100)
}

#[tokio::test]
async fn a_retried_then_fallen_back_request_is_counted_by_every_layer() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _scope = metrics::set_default_local_recorder(&recorder);

    let down = MockProvider::builder()
        .rule(Rule::any().fault(Fault::status(503)))
        .start()
        .await
        .unwrap();
    let up = MockProvider::builder().start().await.unwrap();
    let provider = |mock: &MockProvider| {
        Provider::openai()
            .api_key("sk-test-0123456789")
            .base_url(format!("{}/v1", mock.base_url()))
            .build()
            .unwrap()
    };
    let primary = Upstream::builder("primary", provider(&down))
        .retry(quick_retries(2))
        .breaker_scope(BreakerScope::Provider)
        .breaker(BreakerConfig {
            consecutive_failures: Some(2),
            ..BreakerConfig::standard()
        })
        .build()
        .unwrap();
    let backup = Upstream::builder("backup", provider(&up))
        .retry(quick_retries(0))
        .rate_limit(RateLimitConfig {
            requests: Some(Rate::per_minute(2).burst(2)),
            mode: Mode::Reject,
            ..RateLimitConfig::default()
        })
        .build()
        .unwrap();
    let chain = UpstreamChain::builder()
        .upstream(&primary)
        .upstream(&backup)
        .build()
        .unwrap();

    // 1: three 503s on primary (two retries, one failure to its breaker); backup answers.
    // 2: a 503 on primary opens its breaker, so the retry hands over at once; backup answers.
    let mut usage = None;
    for _ in 0..2 {
        let answer = chain.chat().oneshot(ask()).await.unwrap();
        assert_eq!(&*answer.provider, "backup");
        usage = answer.usage;
    }
    let usage = usage.expect("the mock reports usage");
    // 3: primary's breaker refuses at once; backup's limiter refuses too.
    let err = chain.chat().oneshot(ask()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LocalRateLimited, "{err}");
    assert_eq!(down.attempts().len(), 4);
    assert_eq!(up.attempts().len(), 2);

    let all = series(&snapshotter);
    let failed = ErrorKind::Overloaded.as_str();
    for (key, value) in [
        (
            format!("llm_attempts_total{{upstream=primary,outcome={failed}}}"),
            4,
        ),
        (
            "llm_attempts_total{upstream=primary,outcome=circuit_open}".to_owned(),
            1,
        ),
        (
            "llm_attempts_total{upstream=backup,outcome=ok}".to_owned(),
            2,
        ),
        (
            "llm_attempts_total{upstream=backup,outcome=local_rate_limited}".to_owned(),
            1,
        ),
        (
            format!("llm_retries_total{{upstream=primary,kind={failed}}}"),
            2,
        ),
        (
            "llm_retry_give_ups_total{upstream=primary,reason=retries_exhausted}".to_owned(),
            1,
        ),
        (
            "llm_retry_give_ups_total{upstream=primary,reason=handed_over}".to_owned(),
            1,
        ),
        (
            "llm_retry_give_ups_total{upstream=primary,reason=not_retryable}".to_owned(),
            1,
        ),
        (
            format!("llm_fallbacks_total{{from=primary,to=backup,reason={failed}}}"),
            2,
        ),
        (
            "llm_fallbacks_total{from=primary,to=backup,reason=circuit_open}".to_owned(),
            1,
        ),
        (
            "llm_breaker_transitions_total{breaker=primary,from=closed,to=open}".to_owned(),
            1,
        ),
        (
            "llm_breaker_rejections_total{breaker=primary}".to_owned(),
            1,
        ),
        (
            "llm_ratelimit_admissions_total{limiter=backup}".to_owned(),
            2,
        ),
        (
            "llm_ratelimit_rejections_total{limiter=backup}".to_owned(),
            1,
        ),
        (
            "llm_tokens_total{upstream=backup,type=output}".to_owned(),
            2 * usage.output_tokens,
        ),
    ] {
        assert_eq!(counter(&all, &key), value, "{key}");
    }
    assert_eq!(
        gauge(&all, "llm_breaker_state{breaker=primary}"),
        2.0,
        "open"
    );
    assert_eq!(
        gauge(&all, "llm_breaker_state{breaker=backup/gpt-4o-mini}"),
        0.0,
        "closed"
    );
    assert_eq!(
        gauge(&all, "llm_ratelimit_available_requests{limiter=backup}"),
        0.0
    );
    // OpenTelemetry's client metrics: one duration per call that reached a provider.
    let failures = histogram(
        &all,
        &format!(
            "gen_ai.client.operation.duration{{gen_ai.operation.name=chat,gen_ai.provider.name=openai,llm.upstream=primary,error.type={failed}}}"
        ),
    );
    assert_eq!(failures.len(), 4);
    let ok = histogram(
        &all,
        "gen_ai.client.operation.duration{gen_ai.operation.name=chat,gen_ai.provider.name=openai,llm.upstream=backup}",
    );
    assert_eq!(ok.len(), 2);
    assert!(ok[0] > 0.0 && ok[0] < 10.0, "{ok:?}");
    for (token_type, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        let key = format!(
            "gen_ai.client.token.usage{{gen_ai.operation.name=chat,gen_ai.provider.name=openai,llm.upstream=backup,gen_ai.token.type={token_type}}}"
        );
        assert_eq!(histogram(&all, &key), [n as f64; 2], "{key}");
    }
    // Bounded labels: no request id, message text, or model outside a per-model breaker's
    // name (one per model the upstream serves) among them.
    for key in all.keys() {
        assert!(!key.contains("Hello"), "{key}");
        assert!(
            !key.contains("gpt-4o-mini") || key.starts_with("llm_breaker_"),
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_stream_records_its_time_to_first_chunk_and_its_tokens_at_its_end() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _scope = metrics::set_default_local_recorder(&recorder);

    let mock = MockProvider::builder().start().await.unwrap();
    let provider = Provider::anthropic()
        .api_key("sk-ant-test-0123456789")
        .base_url(mock.base_url())
        .build()
        .unwrap();
    let up = Upstream::builder("claude", provider).build().unwrap();
    let stream = up.stream().oneshot(ask()).await.unwrap();
    let labels = "gen_ai.operation.name=chat,gen_ai.provider.name=anthropic,llm.upstream=claude";
    let all = series(&snapshotter);
    let first = histogram(
        &all,
        &format!("gen_ai.client.operation.time_to_first_chunk{{{labels}}}"),
    );
    assert_eq!(first.len(), 1);
    assert_eq!(
        counter(&all, "llm_attempts_total{upstream=claude,outcome=ok}"),
        1
    );
    // The stream's duration and tokens are known at its end, not before.
    assert!(!all.contains_key(&format!("gen_ai.client.operation.duration{{{labels}}}")));
    let chunks: Vec<_> = StreamExt::collect::<Vec<_>>(stream).await;
    assert!(chunks.iter().all(Result::is_ok));
    let all = series(&snapshotter);
    let duration = histogram(
        &all,
        &format!("gen_ai.client.operation.duration{{{labels}}}"),
    );
    assert_eq!(duration.len(), 1);
    assert!(duration[0] >= first[0], "{duration:?} {first:?}");
    assert!(counter(&all, "llm_tokens_total{upstream=claude,type=output}") > 0);
}

#[tokio::test]
async fn a_pool_counts_its_picks_a_revoked_key_going_out_and_its_refusals() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _scope = metrics::set_default_local_recorder(&recorder);

    let mock = MockProvider::builder()
        .api_key("sk-good")
        .rate_limit(3, 10_000_000)
        .start()
        .await
        .unwrap();
    let key = |name: &str, key: &str| {
        let provider = Provider::openai()
            .api_key(key)
            .base_url(format!("{}/v1", mock.base_url()))
            .build()
            .unwrap();
        let upstream = Upstream::builder(format!("openai/{name}"), provider)
            .retry(quick_retries(0))
            .build()
            .unwrap();
        Member::new(name, upstream)
    };
    let pool = Upstream::pool("openai", vec![key("old", "sk-old"), key("new", "sk-good")])
        .build()
        .unwrap();
    // The old key's 401 moves the first request to the good key, which answers three (its
    // budget); the pool refuses the other three without calling anyone.
    let mut refused = 0;
    for _ in 0..6 {
        if pool.chat().oneshot(ask()).await.is_err() {
            refused += 1;
        }
    }
    assert_eq!(refused, 3);
    let all = series(&snapshotter);
    assert_eq!(
        counter(&all, "llm_pool_picks_total{pool=openai,member=new}"),
        3
    );
    assert_eq!(
        counter(&all, "llm_pool_picks_total{pool=openai,member=old}"),
        1
    );
    assert_eq!(
        counter(
            &all,
            "llm_pool_member_outs_total{pool=openai,member=old,reason=unauthorized}"
        ),
        1
    );
    assert_eq!(
        gauge(&all, "llm_pool_member_available{pool=openai,member=old}"),
        0.0
    );
    assert_eq!(
        gauge(&all, "llm_pool_member_available{pool=openai,member=new}"),
        1.0
    );
    assert_eq!(
        counter(
            &all,
            "llm_pool_refusals_total{pool=openai,reason=rate_limited}"
        ),
        3
    );
    // Each key's own stack counts under its own name.
    assert_eq!(
        counter(&all, "llm_attempts_total{upstream=openai/new,outcome=ok}"),
        3
    );
}
