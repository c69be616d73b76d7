//! Cancellation through the whole stack (`Fallback[Retry → Breaker → RateLimit → service]`),
//! in virtual time: a caller that goes away at any await point — during a backoff, while
//! waiting for capacity, during a half-open probe, mid-stream, while a fallback target is
//! working — leaves the shared state as if the call had never been made, checked through
//! the layers' handles and the scripted service's call log.

use std::time::Duration;

use llm_testkit::{ScriptHandle, ScriptedService, Step, TestRequest, TestResponse, TestStream};
use llm_tower::breaker::{BreakerConfig, BreakerHandle, BreakerLayer, State};
use llm_tower::fallback::{Fallback, Target};
use llm_tower::ratelimit::{Rate, RateLimitConfig, RateLimitHandle, RateLimitLayer};
use llm_tower::retry::{Jitter, RetryConfig, RetryLayer};
use llm_tower::{ErrorKind, LlmError};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc<Res> = BoxCloneSyncService<TestRequest, Res, LlmError>;

struct Stack<Res> {
    svc: Svc<Res>,
    script: ScriptHandle<TestRequest, Res>,
    breaker: BreakerHandle,
    limiter: RateLimitHandle,
}

fn stack<Res>(steps: Vec<Step<Res>>, otherwise: Step<Res>, limit: RateLimitConfig) -> Stack<Res>
where
    Res: llm_tower::ResponseOutcome
        + llm_tower::ResponseMetadata
        + llm_tower::ObserveEnd
        + llm_tower::ReportsUsage
        + Send
        + 'static,
{
    let (service, script) = ScriptedService::new(steps);
    let service = service.then(otherwise);
    let mut retry = RetryConfig::standard();
    retry.base_delay = Duration::from_secs(5);
    retry.jitter = Jitter::None;
    let retry = RetryLayer::new(retry).unwrap();
    let mut breaker = BreakerConfig::standard();
    breaker.consecutive_failures = Some(1);
    breaker.open_duration = Duration::from_secs(10);
    breaker.open_jitter = 0.0;
    let breaker = BreakerLayer::new(breaker).unwrap();
    let limiter = RateLimitLayer::new(limit).unwrap();
    Stack {
        breaker: breaker.handle(),
        limiter: limiter.handle(),
        svc: Svc::new(retry.layer(breaker.layer(limiter.layer(service)))),
        script,
    }
}

fn one_at_a_time() -> RateLimitConfig {
    RateLimitConfig {
        max_concurrency: Some(1),
        ..RateLimitConfig::default()
    }
}

fn ask() -> TestRequest {
    TestRequest::new("gpt-4o")
}

/// Lets spawned tasks run until they wait on something.
async fn settle() {
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

fn assert_nothing_held<Res>(stack: &Stack<Res>) {
    assert_eq!(stack.script.in_flight(), 0, "a call is still running");
    assert_eq!(
        stack.limiter.in_flight(),
        Some(0),
        "a concurrency slot is held"
    );
    assert_eq!(stack.limiter.waiting(), 0, "a waiter is left");
    assert_eq!(
        stack.breaker.metrics().probes_in_flight,
        0,
        "a probe slot is held"
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_during_backoff_no_retry_follows() {
    let s = stack(
        vec![Step::fail(ErrorKind::ServerError)],
        Step::ok(TestResponse::EMPTY),
        one_at_a_time(),
    );
    // The breaker trips on the first failure, so give it room: only the retry is watched.
    s.breaker.force_closed();
    let call = tokio::spawn(s.svc.clone().oneshot(ask()));
    settle().await;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(
        s.script.call_count(),
        1,
        "first attempt made, retry pending"
    );
    call.abort();
    settle().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(s.script.call_count(), 1, "no retry after the caller left");
    assert_nothing_held(&s);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_waiting_for_capacity_costs_no_capacity() {
    let limit = RateLimitConfig {
        requests: Some(Rate {
            limit: 1,
            per: Duration::from_secs(60),
            burst: Some(1),
        }),
        max_wait: Duration::from_secs(120),
        ..RateLimitConfig::default()
    };
    let s = stack(vec![], Step::ok(TestResponse::EMPTY), limit);
    s.svc.clone().oneshot(ask()).await.unwrap();
    let waiting = tokio::spawn(s.svc.clone().oneshot(ask()));
    settle().await;
    assert_eq!(s.limiter.waiting(), 1);
    waiting.abort();
    settle().await;
    assert_eq!(s.limiter.waiting(), 0);
    // The abandoned wait reserved nothing: a minute later exactly one request fits again.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(s.limiter.capacity().unwrap().requests, Some(1));
    s.svc.clone().oneshot(ask()).await.unwrap();
    assert_eq!(s.script.call_count(), 2);
    assert_eq!(
        s.script.dropped(),
        0,
        "the abandoned request never reached the service"
    );
}

#[tokio::test(start_paused = true)]
async fn dropped_during_a_half_open_probe_frees_the_probe_slot() {
    let s = stack(
        vec![Step::fail(ErrorKind::ServerError), Step::hang()],
        Step::ok(TestResponse::EMPTY),
        one_at_a_time(),
    );
    let mut retry_free = ask();
    retry_free = retry_free.with(llm_tower::AttemptBudget::new(1));
    assert!(s.svc.clone().oneshot(retry_free).await.is_err());
    assert_eq!(s.breaker.state(), State::Open);
    tokio::time::advance(Duration::from_secs(10)).await;

    let probe = tokio::spawn(s.svc.clone().oneshot(ask()));
    settle().await;
    assert_eq!(s.breaker.metrics().probes_in_flight, 1);
    assert_eq!(s.limiter.in_flight(), Some(1));
    probe.abort();
    settle().await;
    assert_nothing_held(&s);
    assert_eq!(s.script.dropped(), 1);
    // The freed slot lets the next call probe, and its success closes the breaker.
    s.svc.clone().oneshot(ask()).await.unwrap();
    assert_eq!(s.breaker.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_stream_dropped_mid_way_is_neither_a_failure_nor_a_held_slot() {
    let s = stack(vec![], Step::respond_with(TestStream::new), one_at_a_time());
    let stream = s.svc.clone().oneshot(ask()).await.unwrap();
    // The concurrency slot is the stream's until it ends.
    assert_eq!(s.limiter.in_flight(), Some(1));
    drop(stream);
    assert_nothing_held(&s);
    let m = s.breaker.metrics();
    assert_eq!(
        (m.failures, m.state),
        (0, State::Closed),
        "a caller leaving is not a failure"
    );

    // A stream that breaks is one: with a threshold of one failure, it trips the breaker.
    let stream = s.svc.clone().oneshot(ask()).await.unwrap();
    stream.interrupt();
    assert_eq!(s.breaker.metrics().trips, 1);
    assert_nothing_held(&s);
}

#[tokio::test(start_paused = true)]
async fn dropped_while_a_fallback_target_works_cancels_it_and_starts_no_other() {
    let primary = stack(
        vec![Step::hang()],
        Step::ok(TestResponse::EMPTY),
        one_at_a_time(),
    );
    let backup = stack(vec![], Step::ok(TestResponse::EMPTY), one_at_a_time());
    let chain = Fallback::builder(vec![
        Target::new("primary", primary.svc.clone()),
        Target::new("backup", backup.svc.clone()),
    ])
    .build()
    .unwrap();
    let call = tokio::spawn(chain.oneshot(ask()));
    settle().await;
    assert_eq!(primary.script.in_flight(), 1);
    call.abort();
    settle().await;
    tokio::time::advance(Duration::from_secs(60)).await;
    settle().await;
    assert_nothing_held(&primary);
    assert_eq!(primary.script.dropped(), 1);
    assert_eq!(backup.script.call_count(), 0);
    assert_nothing_held(&backup);
}

#[tokio::test(start_paused = true)]
async fn dropped_before_its_first_poll_holds_nothing() {
    use tower::Service;

    let mut s = stack(vec![], Step::ok(TestResponse::EMPTY), one_at_a_time());
    std::future::poll_fn(|cx| s.svc.poll_ready(cx))
        .await
        .unwrap();
    let future = s.svc.call(ask());
    drop(future);
    assert_nothing_held(&s);
    // Whatever the call started is gone, and the next call finds everything free.
    assert_eq!(s.script.in_flight(), 0);
    s.svc.clone().oneshot(ask()).await.unwrap();
    assert_nothing_held(&s);
}
