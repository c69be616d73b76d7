//! The rate-limit layer through its public API, in virtual time.

use std::time::Duration;

use llm_core::{BoxError, Deadline, ErrorKind, EstimatedCost, LimitReason, LlmError, Usage};
use llm_ratelimit_layer::{Mode, Rate, RateLimitConfig, RateLimitLayer, RateLimitStore};
use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse, TestStream};
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn requests(limit: u64, burst: u64, mode: Mode) -> RateLimitConfig {
    RateLimitConfig {
        requests: Some(Rate::per_minute(limit).burst(burst)),
        mode,
        ..RateLimitConfig::default()
    }
}

fn tokens(limit: u64) -> RateLimitConfig {
    RateLimitConfig {
        tokens: Some(Rate::per_minute(limit)),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn sixty_rpm_with_burst_ten_admits_ten_at_once_then_one_per_second() {
    let layer = RateLimitLayer::new(requests(60, 10, Mode::Wait)).unwrap();
    let (svc, calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    let start = Instant::now();
    let tasks: Vec<_> = (0..15)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let offsets: Vec<_> = calls.call_times().iter().map(|t| *t - start).collect();
    let mut want = vec![Duration::ZERO; 10];
    want.extend((1..=5).map(S));
    assert_eq!(offsets, want);
}

#[tokio::test(start_paused = true)]
async fn reject_mode_says_when_capacity_returns() {
    let layer = RateLimitLayer::new(requests(60, 1, Mode::Reject)).unwrap();
    let handle = layer.handle();
    let (svc, calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    svc.clone().oneshot(0).await.unwrap();
    tokio::time::advance(MS(250)).await;
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(
        (err.kind(), err.retry_after()),
        (ErrorKind::LocalRateLimited, Some(MS(750)))
    );
    assert_eq!(
        (calls.call_count(), handle.rejected(), handle.admitted()),
        (1, 1, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_wait_longer_than_max_wait_is_rejected_at_once() {
    let config = RateLimitConfig {
        max_wait: S(2),
        ..requests(60, 1, Mode::Wait)
    };
    let (svc, calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = RateLimitLayer::new(config).unwrap().layer(svc);
    let start = Instant::now();
    // Four arrive at once: slots at 0, 1 and 2 s fit the 2 s wait; the fourth would wait 3 s.
    let tasks: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    let err = results.pop().unwrap().unwrap_err();
    assert_eq!(err.retry_after(), Some(S(3)));
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(calls.call_times().last().map(|t| *t - start), Some(S(2)));
}

#[tokio::test(start_paused = true)]
async fn the_wait_never_passes_the_request_deadline() {
    let layer = RateLimitLayer::new(requests(60, 1, Mode::Wait)).unwrap();
    let (svc, calls) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    svc.clone().oneshot(TestRequest::new("m")).await.unwrap();
    let err = svc
        .clone()
        .oneshot(TestRequest::new("m").with(Deadline::after(MS(500))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LocalRateLimited);
    assert_eq!(calls.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiting_request_releases_its_slot() {
    let layer = RateLimitLayer::new(requests(60, 1, Mode::Wait)).unwrap();
    let handle = layer.handle();
    let (svc, calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    let start = Instant::now();
    svc.clone().oneshot(0).await.unwrap();
    // The second request reserves the slot at 1 s, then its caller gives up at 0.5 s.
    assert!(
        tokio::time::timeout(MS(500), svc.clone().oneshot(1))
            .await
            .is_err()
    );
    assert_eq!(handle.waiting(), 0);
    // The freed slot goes to the next arrival: it goes at 1 s, not 2 s.
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(calls.call_times()[1] - start, S(1));
}

fn priced(prompt_chars: usize, max_tokens: u32) -> TestRequest {
    TestRequest::new("m")
        .with_prompt("x".repeat(prompt_chars))
        .with_max_tokens(max_tokens)
}

#[tokio::test(start_paused = true)]
async fn tokens_are_reserved_then_reconciled_with_reported_usage() {
    let layer = RateLimitLayer::builder()
        .config(tokens(10_000))
        .token_cost(EstimatedCost::approximate())
        .build()
        .unwrap();
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<TestRequest>::new([
        Step::ok(TestResponse::new("short").with_usage(Usage::new(100, 50))),
        Step::ok(TestResponse::new("long").with_usage(Usage::new(100, 2_900))),
    ]);
    let svc = layer.layer(svc);
    // Estimated 100 prompt + 2,000 max tokens; the answer used 150: 1,950 come back.
    svc.clone().oneshot(priced(400, 2_000)).await.unwrap();
    assert_eq!(handle.capacity().unwrap().tokens, Some(10_000 - 150));
    // Estimated 2,100; the answer used 3,000: 900 more are charged.
    svc.clone().oneshot(priced(400, 2_000)).await.unwrap();
    assert_eq!(
        handle.capacity().unwrap().tokens,
        Some(10_000 - 150 - 3_000)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_is_reconciled_when_it_ends() {
    let layer = RateLimitLayer::builder()
        .config(tokens(10_000))
        .token_cost(EstimatedCost::approximate())
        .build()
        .unwrap();
    let handle = layer.handle();
    let (svc, _) =
        ScriptedService::<TestRequest, TestStream>::always(Step::respond_with(TestStream::new));
    let svc = layer.layer(svc);
    let stream = svc.clone().oneshot(priced(400, 1_000)).await.unwrap();
    assert_eq!(
        handle.capacity().unwrap().tokens,
        Some(10_000 - 1_100),
        "the estimate holds while the stream runs"
    );
    stream.finish_with_usage(Usage::new(100, 200));
    assert_eq!(handle.capacity().unwrap().tokens, Some(10_000 - 300));
}

#[tokio::test(start_paused = true)]
async fn failed_calls_give_their_tokens_back() {
    let layer = RateLimitLayer::builder()
        .config(tokens(10_000))
        .token_cost(EstimatedCost::approximate())
        .build()
        .unwrap();
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::ServerError));
    let svc = layer.layer(svc);
    svc.clone().oneshot(priced(400, 1_000)).await.unwrap_err();
    assert_eq!(handle.capacity().unwrap().tokens, Some(10_000));
}

#[tokio::test(start_paused = true)]
async fn a_request_that_can_never_fit_fails_at_once_with_its_own_reason() {
    let layer = RateLimitLayer::builder()
        .config(RateLimitConfig {
            mode: Mode::Wait,
            ..tokens(30_000)
        })
        .token_cost(EstimatedCost::approximate())
        .build()
        .unwrap();
    let (svc, calls) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
    let err = layer
        .layer(svc)
        .oneshot(priced(4_000, 31_000))
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.retry_after()),
        (ErrorKind::LocalRateLimited, None)
    );
    assert!(
        err.message().contains("costs 32000 tokens"),
        "{}",
        err.message()
    );
    assert_eq!(calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_provider_429_pauses_every_sharer() {
    let layer = RateLimitLayer::new(requests(600, 100, Mode::Reject)).unwrap();
    let handle = layer.handle();
    let (a, _) =
        ScriptedService::<u32>::always(Step::fail(ErrorKind::RateLimited).with_retry_after(S(20)));
    let (b, b_calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let a = layer.clone().layer(a);
    let b = layer.layer(b);
    a.oneshot(0).await.unwrap_err();
    assert_eq!(handle.capacity().unwrap().paused_for, S(20));
    let err = b.clone().oneshot(1).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(S(20)));
    assert_eq!(
        b_calls.call_count(),
        0,
        "the pause held the other service too"
    );
    tokio::time::advance(S(20)).await;
    b.oneshot(2).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn provider_headers_resynchronise_the_limiter() {
    type Http = ScriptedService<u32, http::Response<String>, BoxError>;
    let layer = RateLimitLayer::new(requests(60, 60, Mode::Reject)).unwrap();
    let handle = layer.handle();
    let (svc, _) = Http::new([
        Step::http(
            200,
            &[
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-reset-requests", "5s"),
            ],
        ),
        Step::http(
            200,
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "7s"),
            ],
        ),
    ]);
    let svc = layer.layer(svc);
    svc.clone().oneshot(0).await.unwrap();
    assert_eq!(
        handle.capacity().unwrap().requests,
        Some(2),
        "the provider has 2 left: so do we"
    );
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(
        handle.capacity().unwrap().paused_for,
        S(7),
        "an exhausted bucket pauses until its reset"
    );
    let err = svc.oneshot(2).await.unwrap_err();
    assert_eq!(LlmError::from(err).kind(), ErrorKind::LocalRateLimited);
}

#[tokio::test(start_paused = true)]
async fn keyed_limits_keep_keys_apart() {
    let layer = RateLimitLayer::builder()
        .config(requests(60, 1, Mode::Reject))
        .keyed_by(|req: &TestRequest| req.model.clone())
        .build()
        .unwrap();
    assert_eq!(
        layer.handle().capacity(),
        None,
        "a keyed limit's capacity is per key"
    );
    let (svc, _) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    svc.clone()
        .oneshot(TestRequest::new("gpt-4o"))
        .await
        .unwrap();
    assert!(
        svc.clone()
            .oneshot(TestRequest::new("gpt-4o"))
            .await
            .is_err()
    );
    svc.clone()
        .oneshot(TestRequest::new("claude"))
        .await
        .unwrap();
    assert_eq!(
        layer.store().capacity(&"gpt-4o".to_owned()).requests,
        Some(0)
    );
    assert_eq!(layer.store().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keyed_limits_keep_memory_bounded() {
    let config = RateLimitConfig {
        max_keys: 4,
        ..requests(60, 1, Mode::Reject)
    };
    let layer = RateLimitLayer::builder()
        .config(config)
        .keyed_by(|key: &u32| *key)
        .build()
        .unwrap();
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    for key in 0..100 {
        svc.clone().oneshot(key).await.unwrap();
        assert!(layer.store().len() <= 4);
    }
}

#[tokio::test(start_paused = true)]
async fn concurrency_is_capped_by_rejection_or_waiting() {
    let config = RateLimitConfig {
        max_concurrency: Some(1),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")).after(S(1)));
    let svc = RateLimitLayer::new(config).unwrap().layer(svc);
    let first = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert!(err.message().contains("concurrency"), "{}", err.message());
    first.await.unwrap().unwrap();

    let config = RateLimitConfig {
        max_concurrency: Some(2),
        mode: Mode::Wait,
        ..RateLimitConfig::default()
    };
    let (svc, calls) =
        ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")).after(S(1)));
    let svc = RateLimitLayer::new(config).unwrap().layer(svc);
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let offsets: Vec<_> = calls.call_times().iter().map(|t| *t - start).collect();
    assert_eq!(offsets, [S(0), S(0), S(1), S(1), S(2)]);
}

#[tokio::test(start_paused = true)]
async fn with_no_limit_set_the_limiter_follows_the_provider_only() {
    let (svc, calls) = ScriptedService::<u32>::new(vec![
        Step::fail(ErrorKind::RateLimited).with_retry_after(S(2)),
        Step::ok(TestResponse::new("ok")),
        Step::ok(TestResponse::new("ok")),
    ]);
    let svc = RateLimitLayer::new(RateLimitConfig::default())
        .unwrap()
        .layer(svc);
    let start = Instant::now();
    let err = svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    // The provider's delay holds the next request back; nothing else limits it.
    svc.clone().oneshot(1).await.unwrap();
    svc.clone().oneshot(2).await.unwrap();
    let offsets: Vec<_> = calls.call_times().iter().map(|t| *t - start).collect();
    assert_eq!(offsets, [S(0), S(2), S(2)]);
}

#[test]
fn invalid_configuration_names_the_field() {
    let cases = [
        (
            RateLimitConfig {
                requests: Some(Rate::per_minute(0)),
                ..Default::default()
            },
            "requests.limit",
        ),
        (
            RateLimitConfig {
                requests: Some(Rate {
                    limit: 5,
                    per: Duration::ZERO,
                    burst: None,
                }),
                ..Default::default()
            },
            "requests.per",
        ),
        (
            RateLimitConfig {
                tokens: Some(Rate::per_minute(10).burst(0)),
                ..Default::default()
            },
            "tokens.burst",
        ),
        (
            RateLimitConfig {
                max_concurrency: Some(0),
                ..Default::default()
            },
            "max_concurrency",
        ),
        (
            RateLimitConfig {
                max_keys: 0,
                ..requests(1, 1, Mode::Wait)
            },
            "max_keys",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(RateLimitLayer::new(config).unwrap_err().field(), field);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever the arrival pattern, no window of `per` sees more than `burst + limit`
    /// admitted calls, and (in wait mode, with room to wait) every call is admitted.
    #[test]
    fn concurrent_callers_never_exceed_the_limit(arrivals in proptest::collection::vec(0u64..5_000, 1..120), limit in 1u64..30, burst in 1u64..10) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async move {
            let config = RateLimitConfig {
                requests: Some(Rate { limit, per: S(10), burst: Some(burst) }),
                max_wait: S(3_600),
                ..RateLimitConfig::default()
            };
            let (svc, calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
            let svc = RateLimitLayer::new(config).unwrap().layer(svc);
            let start = Instant::now();
            let tasks: Vec<_> = arrivals.iter().enumerate().map(|(i, &at)| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(MS(at)).await;
                    svc.oneshot(i as u32).await
                })
            }).collect();
            for task in tasks {
                assert!(task.await.unwrap().is_ok());
            }
            let times: Vec<Duration> = calls.call_times().iter().map(|t| *t - start).collect();
            assert_eq!(times.len(), arrivals.len());
            for (i, &from) in times.iter().enumerate() {
                let in_window = times[i..].iter().filter(|&&t| t < from + S(10)).count() as u64;
                assert!(in_window <= burst + limit, "{in_window} calls in 10 s from {from:?} (limit {limit}, burst {burst})");
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn rejections_reach_box_error_stacks_and_the_hook() {
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    let layer = RateLimitLayer::builder()
        .config(requests(60, 1, Mode::Reject))
        .on_rejected(move |err| {
            assert_eq!(err.reason(), LimitReason::Requests);
            count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .build()
        .unwrap();
    let (svc, _) =
        ScriptedService::<u32, TestResponse, BoxError>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    svc.clone().oneshot(0).await.unwrap();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(LlmError::from(err).kind(), ErrorKind::LocalRateLimited);
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// The TSC clock admits and rejects like tokio's: a burst, then a rejection naming the wait
/// (no time passes in between, so nothing sleeps).
#[cfg(feature = "quanta")]
#[tokio::test]
async fn the_quanta_clock_limits_like_tokios() {
    let layer = RateLimitLayer::builder()
        .config(requests(60, 3, Mode::Reject))
        .clock(llm_ratelimit_layer::QuantaClock::new())
        .build()
        .unwrap();
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    for i in 0..3 {
        svc.clone().oneshot(i).await.unwrap();
    }
    let err = svc.oneshot(3).await.unwrap_err();
    let wait = err.retry_after().unwrap();
    assert!(wait > MS(900) && wait <= S(1), "{wait:?}");
}

#[tokio::test(start_paused = true)]
async fn the_wait_hook_sees_each_wait() {
    let waits = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = waits.clone();
    let layer = RateLimitLayer::builder()
        .config(requests(60, 1, Mode::Wait))
        .on_wait(move |wait| log.lock().unwrap().push(wait))
        .build()
        .unwrap();
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    let tasks: Vec<_> = (0..3)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        *waits.lock().unwrap(),
        [S(1), S(2)],
        "the first went at once; the others waited"
    );
}
