//! The retry layer driven through its public API over scripted services, in virtual time.

mod support;

use std::time::Duration;

use llm_core::{
    AttemptBudget, Deadline, ErrorKind, LlmError, RemainingTargets, RequestExtensions,
    ResponseMetadata,
};
use llm_retry_layer::{Backoff, GiveUpReason, Jitter, NoClone, RetryLayer};
use llm_testkit::{ScriptedService, Step, TestResponse};
use support::{MS, Recorder, exact};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A request carrying extensions, as `http::Request` and `ChatRequest` do.
#[derive(Clone, Debug, Default)]
struct Req(http::Extensions);

impl RequestExtensions for Req {
    fn request_extensions(&self) -> Option<&http::Extensions> {
        Some(&self.0)
    }
    fn request_extensions_mut(&mut self) -> Option<&mut http::Extensions> {
        Some(&mut self.0)
    }
}

impl Req {
    fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.0.insert(value);
        self
    }
}

fn ok() -> Step {
    Step::ok(TestResponse::new("ok"))
}

fn fail(kind: ErrorKind) -> Step {
    Step::fail(kind)
}

#[tokio::test(start_paused = true)]
async fn exponential_delays_without_jitter_are_exact() {
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::ServerError),
        fail(ErrorKind::ServerError),
        fail(ErrorKind::ServerError),
        ok(),
    ]);
    let svc = exact().max_retries(3).build().unwrap().layer(svc);
    let res = svc.oneshot(Req::default()).await.unwrap();
    assert_eq!(calls.gaps(), [MS(100), MS(200), MS(400)]);
    assert_eq!(res.metadata().unwrap().attempts, 4);
}

#[tokio::test(start_paused = true)]
async fn fixed_and_linear_delays_are_exact() {
    for (backoff, want) in [
        (Backoff::fixed(MS(250)), [MS(250), MS(250), MS(250)]),
        (
            Backoff::linear(MS(100), MS(150), MS(300)),
            [MS(100), MS(250), MS(300)],
        ),
    ] {
        let (svc, calls) = ScriptedService::<Req>::new(vec![fail(ErrorKind::Timeout); 3]);
        let svc = exact()
            .backoff(backoff)
            .max_retries(3)
            .build()
            .unwrap()
            .layer(svc.then(ok()));
        svc.oneshot(Req::default()).await.unwrap();
        assert_eq!(calls.gaps(), want);
    }
}

#[tokio::test(start_paused = true)]
async fn jittered_delays_stay_within_their_range() {
    let (svc, calls) = ScriptedService::<Req>::new(vec![fail(ErrorKind::Overloaded); 6]);
    let layer = exact()
        .backoff(Backoff::exponential(MS(100), 2.0, MS(1_000)))
        .jitter(Jitter::Full)
        .max_retries(6)
        .build()
        .unwrap();
    let _ = layer.layer(svc.then(ok())).oneshot(Req::default()).await;
    let caps = [100, 200, 400, 800, 1000, 1000].map(MS);
    for (gap, cap) in calls.gaps().into_iter().zip(caps) {
        assert!(gap <= cap, "{gap:?} > {cap:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_to_the_millisecond() {
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::RateLimited).with_retry_after(MS(1_337)),
        fail(ErrorKind::RateLimited).with_retry_after(MS(1)),
        ok(),
    ]);
    let svc = exact().build().unwrap().layer(svc);
    svc.oneshot(Req::default()).await.unwrap();
    // The server's 1337 ms beats the 100 ms backoff; the 200 ms backoff beats its 1 ms.
    assert_eq!(calls.gaps(), [MS(1_337), MS(200)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_above_the_cap_gives_up_at_once() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(121))
    ]);
    let svc = rec
        .attach(exact().max_retry_after(Duration::from_secs(120)))
        .build()
        .unwrap()
        .layer(svc);
    let start = Instant::now();
    let err = svc.oneshot(Req::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(121)),
        "the server delay reaches the caller"
    );
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no sleeping before giving up"
    );
    assert_eq!(calls.call_count(), 1);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::RetryAfterTooLong);
}

#[tokio::test(start_paused = true)]
async fn retry_after_longer_than_the_deadline_gives_up_at_once() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(5))
    ]);
    let svc = rec.attach(exact()).build().unwrap().layer(svc);
    let req = Req::default().with(Deadline::after(Duration::from_secs(4)));
    let start = Instant::now();
    svc.oneshot(req).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(calls.call_count(), 1);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::DeadlineExceeded);
}

#[tokio::test(start_paused = true)]
async fn backoff_never_sleeps_past_the_deadline() {
    // Attempts at 0, 100, 300 ms; the next wait (400 ms) would end at 700 ms > 650 ms.
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let svc = exact().max_retries(10).build().unwrap().layer(svc);
    let start = Instant::now();
    svc.oneshot(Req::default().with(Deadline::after(MS(650))))
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 3);
    assert_eq!(start.elapsed(), MS(300));
}

#[tokio::test(start_paused = true)]
async fn max_retries_caps_attempts() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::Network));
    let svc = rec
        .attach(exact().max_retries(2))
        .build()
        .unwrap()
        .layer(svc);
    let err = svc.oneshot(Req::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Network);
    assert_eq!(calls.call_count(), 3);
    let retries = rec.retries();
    assert_eq!(
        retries.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [2, 3]
    );
    assert_eq!(retries[0].delay, MS(100));
    assert_eq!(retries[0].kind, ErrorKind::Network);
    let give_up = rec.give_ups()[0];
    assert_eq!(
        (give_up.attempts, give_up.reason),
        (3, GiveUpReason::RetriesExhausted)
    );
}

#[tokio::test(start_paused = true)]
async fn zero_retries_means_one_attempt() {
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    exact()
        .max_retries(0)
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn terminal_kinds_are_never_retried_by_default() {
    for kind in [
        ErrorKind::QuotaExceeded,
        ErrorKind::Unauthorized,
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::ModelNotFound,
        ErrorKind::CircuitOpen,
        ErrorKind::LocalRateLimited,
        ErrorKind::StreamInterrupted,
        ErrorKind::Cancelled,
        ErrorKind::Other,
    ] {
        let rec = Recorder::default();
        let (svc, calls) = ScriptedService::<Req>::new([fail(kind)]);
        let err = rec
            .attach(exact())
            .build()
            .unwrap()
            .layer(svc)
            .oneshot(Req::default())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "the error comes back unchanged");
        assert_eq!(calls.call_count(), 1, "{kind} must not be retried");
        assert_eq!(rec.give_ups()[0].reason, GiveUpReason::NotRetryable);
    }
}

#[tokio::test(start_paused = true)]
async fn transient_kinds_are_retried_by_default() {
    for kind in [
        ErrorKind::RateLimited,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Network,
    ] {
        let (svc, calls) = ScriptedService::<Req>::new([fail(kind), ok()]);
        exact()
            .build()
            .unwrap()
            .layer(svc)
            .oneshot(Req::default())
            .await
            .unwrap();
        assert_eq!(calls.call_count(), 2, "{kind} must be retried");
    }
}

#[tokio::test(start_paused = true)]
async fn stop_on_and_retry_on_change_the_kinds() {
    let (svc, calls) = ScriptedService::<Req>::new([fail(ErrorKind::RateLimited)]);
    exact()
        .stop_on(ErrorKind::RateLimited)
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 1);

    let (svc, calls) = ScriptedService::<Req>::new([fail(ErrorKind::Other), ok()]);
    exact()
        .retry_on(ErrorKind::Other)
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap();
    assert_eq!(calls.call_count(), 2);

    let (svc, calls) = ScriptedService::<Req>::new([fail(ErrorKind::ServerError)]);
    exact()
        .retry_on(ErrorKind::Other)
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 1, "retry_on replaces the default set");
}

#[tokio::test(start_paused = true)]
async fn retry_if_decides_from_the_outcome() {
    // Retry rate limits only when the server said how long to wait.
    let layer = exact()
        .retry_if(|outcome| outcome.retry_after().is_some())
        .build()
        .unwrap();
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::RateLimited).with_retry_after(MS(10)),
        fail(ErrorKind::RateLimited),
    ]);
    layer.layer(svc).oneshot(Req::default()).await.unwrap_err();
    assert_eq!(calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn total_elapsed_limit_stops_retries() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError).after(MS(300)));
    let svc = rec
        .attach(exact().max_retries(10).max_elapsed(Duration::from_secs(1)))
        .build()
        .unwrap()
        .layer(svc);
    svc.oneshot(Req::default()).await.unwrap_err();
    // Attempts start at 0, 400 (300 + 100), 900 (700 + 200); the next would start at 1600.
    assert_eq!(calls.call_count(), 3);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::ElapsedLimitReached);
}

#[tokio::test(start_paused = true)]
async fn attempt_budget_in_the_request_bounds_attempts() {
    let rec = Recorder::default();
    let budget = AttemptBudget::new(2);
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let svc = rec
        .attach(exact().max_retries(5))
        .build()
        .unwrap()
        .layer(svc);
    svc.oneshot(Req::default().with(budget.clone()))
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 2);
    assert_eq!(budget.used(), 2);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::AttemptBudgetSpent);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_hands_over_at_once_when_fallbacks_remain() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::Timeout));
    let svc = rec.attach(exact()).build().unwrap().layer(svc);
    svc.clone()
        .oneshot(Req::default().with(RemainingTargets(1)))
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 1);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::HandedOver);

    // With nowhere else to go, it retries as configured.
    svc.oneshot(Req::default().with(RemainingTargets(0)))
        .await
        .unwrap_err();
    assert_eq!(calls.call_count(), 1 + 4);
}

#[tokio::test(start_paused = true)]
async fn a_long_wait_hands_over_when_fallbacks_remain() {
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(3))
    ]);
    let svc = exact()
        .failover_delay(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(svc.then(ok()));
    let start = Instant::now();
    svc.clone()
        .oneshot(Req::default().with(RemainingTargets(2)))
        .await
        .unwrap_err();
    assert_eq!((calls.call_count(), start.elapsed()), (1, Duration::ZERO));

    // A short wait is still retried on the same target.
    let (svc, calls) =
        ScriptedService::<Req>::new([fail(ErrorKind::RateLimited).with_retry_after(MS(500)), ok()]);
    exact()
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default().with(RemainingTargets(2)))
        .await
        .unwrap();
    assert_eq!(calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn requests_that_cannot_be_copied_get_one_attempt() {
    let rec = Recorder::default();
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let svc = rec
        .attach(exact())
        .clone_requests_with(NoClone)
        .build()
        .unwrap()
        .layer(svc);
    svc.oneshot(Req::default()).await.unwrap_err();
    assert_eq!(calls.call_count(), 1);
    assert_eq!(rec.give_ups()[0].reason, GiveUpReason::NotCloneable);
}

#[tokio::test(start_paused = true)]
async fn first_try_success_records_nothing() {
    let (svc, _) = ScriptedService::<Req>::new([ok()]);
    let res = exact()
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap();
    assert_eq!(
        res.metadata(),
        None,
        "no metadata written on the fast path: one attempt is implied"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_during_backoff_stops_retrying() {
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let svc = exact().max_retries(5).build().unwrap().layer(svc);
    let fut = svc.oneshot(Req::default());
    // The first attempt fails at once; the layer then sleeps 100 ms. Drop it at 50 ms.
    let res = tokio::time::timeout(MS(50), fut).await;
    assert!(res.is_err());
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(calls.call_count(), 1, "no attempt after the caller left");
    assert_eq!(calls.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_an_attempt_drops_it() {
    let (svc, calls) = ScriptedService::<Req>::new([fail(ErrorKind::ServerError), Step::hang()]);
    let svc = exact().build().unwrap().layer(svc);
    let res = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(Req::default())).await;
    assert!(res.is_err());
    assert_eq!(calls.call_count(), 2);
    assert_eq!((calls.in_flight(), calls.dropped()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn readiness_is_polled_again_before_each_retry() {
    let (svc, calls) = ScriptedService::<Req>::new([fail(ErrorKind::ServerError), ok()]);
    let readiness = calls.clone();
    let svc = exact()
        .on_retry(move |_| readiness.set_ready(false))
        .build()
        .unwrap()
        .layer(svc);
    let task = tokio::spawn(svc.oneshot(Req::default()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(
        calls.call_count(),
        1,
        "no retry while the inner service is not ready"
    );
    calls.set_ready(true);
    task.await.unwrap().unwrap();
    assert_eq!(calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_budget_limits_retries_in_a_sustained_outage() {
    let (svc, calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let layer = RetryLayer::builder()
        .backoff(Backoff::fixed(MS(10)))
        .jitter(Jitter::None)
        .max_retries(3)
        .budget(llm_retry_layer::RetryBudget::new(0.1, 0, 100).unwrap())
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    let tasks: Vec<_> = (0..1_000)
        .map(|_| tokio::spawn(svc.clone().oneshot(Req::default())))
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    // 1,000 requests earn 100 retries; without the budget they would make 3,000.
    assert_eq!(calls.call_count(), 1_100);
}

#[tokio::test(start_paused = true)]
async fn budget_is_shared_by_clones_of_layer_and_service() {
    let layer = exact()
        .max_retries(1)
        .budget(llm_retry_layer::RetryBudget::new(0.5, 0, 10).unwrap())
        .build()
        .unwrap();
    let (a, a_calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let (b, b_calls) = ScriptedService::<Req>::always(fail(ErrorKind::ServerError));
    let budget = layer.budget().unwrap().clone();
    let a = layer.clone().layer(a);
    let b = layer.layer(b);
    // One request through `a` deposits half a retry: too little for `a` to retry...
    a.clone().oneshot(Req::default()).await.unwrap_err();
    assert_eq!(a_calls.call_count(), 1);
    assert_eq!(budget.balance(), 0.5);
    // ...but `b`, built by a clone of the layer, adds its half and spends the whole retry.
    b.clone().oneshot(Req::default()).await.unwrap_err();
    assert_eq!(b_calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn works_under_the_contract_probe() {
    let (svc, calls) = ScriptedService::<Req>::new([
        fail(ErrorKind::Overloaded),
        fail(ErrorKind::Overloaded),
        ok(),
    ]);
    let mut svc = exact()
        .build()
        .unwrap()
        .layer(llm_testkit::ContractProbe::new(svc));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Req::default())
        .await
        .unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(calls.call_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn box_error_stacks_are_classified_too() {
    let (svc, calls) = ScriptedService::<Req, TestResponse, llm_core::BoxError>::new([
        Step::err_with(|| std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
        Step::fail(ErrorKind::QuotaExceeded),
    ]);
    let err = exact()
        .build()
        .unwrap()
        .layer(svc)
        .oneshot(Req::default())
        .await
        .unwrap_err();
    assert_eq!(
        calls.call_count(),
        2,
        "the reset was retried, the quota error ended it"
    );
    assert_eq!(LlmError::from(err).kind(), ErrorKind::QuotaExceeded);
}

#[tokio::test(start_paused = true)]
async fn a_retry_policy_prepares_each_retry_asynchronously_and_its_changes_carry_over() {
    use llm_testkit::TestRequest;
    let (provider, calls) = ScriptedService::<TestRequest>::new([
        Step::fail(ErrorKind::Unauthorized),
        Step::fail(ErrorKind::Overloaded),
        Step::ok(TestResponse::new("ok")),
    ]);
    let prepared = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counted = prepared.clone();
    let retry = RetryLayer::builder()
        .retry_on(llm_core::ErrorKinds::of(&[
            ErrorKind::Unauthorized,
            ErrorKind::Overloaded,
        ]))
        .backoff(Backoff::fixed(MS(100)))
        .jitter(Jitter::None)
        .retry_policy(
            move |mut request: TestRequest, event: &llm_retry_layer::RetryEvent| {
                let counted = counted.clone();
                let swap = event.kind == ErrorKind::Unauthorized;
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if swap {
                        // A credential fetched from elsewhere takes time of its own.
                        tokio::time::sleep(MS(50)).await;
                        request.prompt = "with the fresh key".to_owned();
                    }
                    Some(request)
                }
            },
        )
        .build()
        .unwrap();
    let svc = retry.layer(provider);
    let started = Instant::now();
    let answer = svc.oneshot(TestRequest::new("gpt-4o")).await.unwrap();
    assert_eq!(answer.body(), "ok");
    assert_eq!(prepared.load(std::sync::atomic::Ordering::Relaxed), 2);
    let prompts: Vec<String> = calls
        .calls()
        .into_iter()
        .map(|c| c.request.prompt)
        .collect();
    assert_eq!(prompts[1], "with the fresh key");
    assert_eq!(prompts[2], "with the fresh key", "the change carries over");
    // The preparation ran before the waits: 50 ms, then 100 ms; then 100 ms.
    assert_eq!(calls.gaps(), [MS(150), MS(100)]);
    assert_eq!(started.elapsed(), MS(250));
}

#[tokio::test(start_paused = true)]
async fn a_retry_policy_may_refuse_and_the_last_failure_returns() {
    use llm_testkit::TestRequest;
    let (provider, calls) =
        ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::Overloaded));
    let recorder = Recorder::default();
    let retry = recorder
        .attach(RetryLayer::builder())
        .retry_policy(
            |request: TestRequest, event: &llm_retry_layer::RetryEvent| {
                std::future::ready((event.attempt <= 2).then_some(request))
            },
        )
        .build()
        .unwrap();
    let err = retry
        .layer(provider)
        .oneshot(TestRequest::new("gpt-4o"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(calls.call_count(), 2, "the second retry was refused");
    assert_eq!(
        recorder.retries().len(),
        1,
        "a refused retry is not reported as one"
    );
    let give_ups = recorder.give_ups();
    assert_eq!(give_ups.len(), 1);
    assert_eq!(give_ups[0].reason, GiveUpReason::RefusedByPolicy);
    assert_eq!(give_ups[0].attempts, 2);
}
