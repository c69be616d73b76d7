//! The layers' presets composed as the crate docs show them, behind a fallback, in virtual
//! time (DESIGN §8): one request's retries never open a breaker alone; a retry that would
//! meet an open breaker hands over instead of waiting; the caller sees the real upstream
//! error; hand-over does not depend on jitter; `attempts` counts the calls that reached an
//! upstream.

use std::time::Duration;

use llm_testkit::{ScriptHandle, ScriptedService, Step, TestRequest, TestResponse};
use llm_tower::breaker::{BreakerConfig, BreakerLayer, State};
use llm_tower::fallback::{Fallback, Target};
use llm_tower::retry::RetryLayer;
use llm_tower::{ErrorKind, LlmError, ResponseMetadata};
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<TestRequest, TestResponse, LlmError>;

const S: fn(u64) -> Duration = Duration::from_secs;

/// `Retry(standard) → Breaker(standard) → script`, as a newcomer stacks them.
fn standard_stack(
    steps: Vec<Step<TestResponse>>,
    then: Step<TestResponse>,
) -> (Svc, ScriptHandle<TestRequest, TestResponse>, BreakerLayer) {
    let (service, script) = ScriptedService::new(steps);
    let service = service.then(then);
    let breaker = BreakerLayer::standard();
    let svc = Svc::new(RetryLayer::standard().layer(breaker.layer(service)));
    (svc, script, breaker)
}

fn healthy() -> (Svc, ScriptHandle<TestRequest, TestResponse>) {
    let (service, script) = ScriptedService::always(Step::ok(TestResponse::new("backup")));
    (Svc::new(service), script)
}

fn fallback(primary: Svc, backup: Svc) -> Fallback<Svc, TestRequest> {
    Fallback::builder(vec![
        Target::new("primary", primary),
        Target::new("backup", backup),
    ])
    .build()
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_permanent_429_with_a_short_retry_after_is_waited_out_once_then_handed_over() {
    let limited = Step::fail(ErrorKind::RateLimited).with_retry_after(S(1));
    let (primary, calls, _) = standard_stack(vec![], limited);
    let (backup, backup_calls) = healthy();
    let started = Instant::now();
    let answer = fallback(primary, backup)
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap();
    assert_eq!(answer.body(), "backup");
    assert_eq!((calls.call_count(), backup_calls.call_count()), (2, 1));
    assert_eq!(
        started.elapsed(),
        S(1),
        "one wait of the server's delay, not three"
    );
    assert_eq!(
        answer.metadata().unwrap().attempts,
        3,
        "every upstream call counted"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_is_handed_over_at_once() {
    let (primary, calls, _) = standard_stack(vec![], Step::fail(ErrorKind::RateLimited));
    let (backup, _) = healthy();
    let started = Instant::now();
    fallback(primary, backup)
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap();
    assert_eq!(calls.call_count(), 1);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn hand_over_on_503s_does_not_depend_on_jitter() {
    // The standard preset's jitter is random; the hand-over is judged on the planned delays
    // (500 ms, 1 s, then 2 s > the 1 s failover delay): three calls, every run.
    for _ in 0..20 {
        let (primary, calls, _) = standard_stack(vec![], Step::fail(ErrorKind::ServerError));
        let (backup, _) = healthy();
        let answer = fallback(primary, backup)
            .oneshot(TestRequest::new("m"))
            .await
            .unwrap();
        assert_eq!(calls.call_count(), 3);
        assert_eq!(answer.metadata().unwrap().attempts, 4);
    }
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_network_failures_hand_over_at_once() {
    for kind in [ErrorKind::Timeout, ErrorKind::Network] {
        let (primary, calls, _) = standard_stack(vec![], Step::fail(kind));
        let (backup, _) = healthy();
        let started = Instant::now();
        fallback(primary, backup)
            .oneshot(TestRequest::new("m"))
            .await
            .unwrap();
        assert_eq!(calls.call_count(), 1, "{kind}");
        assert_eq!(started.elapsed(), Duration::ZERO, "{kind}");
    }
}

#[tokio::test(start_paused = true)]
async fn one_requests_retries_never_open_the_breaker_alone() {
    // Three failures then an answer: with a threshold of 3 in a row, the fourth attempt of
    // the same request still reaches the target (its retries count once).
    let mut config = BreakerConfig::standard();
    config.consecutive_failures = Some(3);
    let breaker = BreakerLayer::new(config).unwrap();
    let (service, calls) = ScriptedService::<TestRequest, TestResponse>::new(vec![
        Step::fail(ErrorKind::ServerError),
        Step::fail(ErrorKind::ServerError),
        Step::fail(ErrorKind::ServerError),
        Step::ok(TestResponse::new("late")),
    ]);
    let svc = RetryLayer::standard().layer(breaker.layer(service));
    let answer = svc.oneshot(TestRequest::new("m")).await.unwrap();
    assert_eq!(answer.body(), "late");
    assert_eq!(calls.call_count(), 4);
    assert_eq!(breaker.handle().state(), State::Closed);
    assert_eq!(answer.metadata().unwrap().attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn a_sustained_outage_opens_the_breaker_within_a_handful_of_requests() {
    let mut config = BreakerConfig::standard();
    config.consecutive_failures = Some(3);
    let breaker = BreakerLayer::new(config).unwrap();
    let (service, calls) =
        ScriptedService::<TestRequest, TestResponse>::always(Step::fail(ErrorKind::ServerError));
    let svc = Svc::new(RetryLayer::standard().layer(breaker.layer(service)));
    for request in 1..=3 {
        let err = svc
            .clone()
            .oneshot(TestRequest::new("m"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ServerError, "request {request}");
    }
    assert_eq!(breaker.handle().state(), State::Open);
    // The third request stopped as its first failure opened the breaker: 4 + 4 + 1 calls,
    // and its error is the upstream's, not circuit_open.
    assert_eq!(calls.call_count(), 9);
    let err = svc.oneshot(TestRequest::new("m")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::CircuitOpen,
        "no call was made: only then"
    );
    assert_eq!(calls.call_count(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_would_meet_an_open_breaker_hands_over_without_waiting() {
    // The breaker opens on the first failure: the retry layer learns it from the error and
    // hands over at once, and the fallback reports the upstream's error kind.
    let mut config = BreakerConfig::standard();
    config.consecutive_failures = Some(1);
    let breaker = BreakerLayer::new(config).unwrap();
    let (service, calls) =
        ScriptedService::<TestRequest, TestResponse>::always(Step::fail(ErrorKind::Overloaded));
    let primary = Svc::new(RetryLayer::standard().layer(breaker.layer(service)));
    let (service, _) =
        ScriptedService::<TestRequest, TestResponse>::always(Step::fail(ErrorKind::ServerError));
    let backup = Svc::new(service);
    let started = Instant::now();
    let err = fallback(primary, backup)
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO, "no backoff slept");
    assert_eq!(calls.call_count(), 1);
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.upstream_attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_final_error_is_the_last_upstream_failure_not_a_skipped_target() {
    // The backup's breaker is open: the chain's error is the primary's 503, and the skipped
    // target is listed as skipped.
    let (primary, _) = ScriptedService::<TestRequest, TestResponse>::always(Step::fail_with_error(
        LlmError::new(ErrorKind::ServerError, "upstream said 503")
            .with_status(http::StatusCode::SERVICE_UNAVAILABLE),
    ));
    let open = BreakerLayer::standard();
    open.handle().force_open();
    let (backup, backup_calls) = healthy();
    let backup = Svc::new(open.layer(backup));
    let err = fallback(Svc::new(primary), backup)
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(err.status(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(backup_calls.call_count(), 0);
    let message = err.to_string();
    assert!(
        message.contains("1 fallback target(s) failed and 1 were skipped"),
        "{message}"
    );
    assert!(
        message.contains("backup skipped (circuit_open)"),
        "{message}"
    );
    assert_eq!(err.upstream_attempts(), 1);
}
