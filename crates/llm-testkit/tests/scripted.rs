//! The scripted service and the contract probe, driven through their public API.

use std::time::Duration;

use llm_core::{BoxError, ErrorKind, ErrorOutcome, LlmError, ResponseOutcome};
use llm_testkit::{ContractProbe, ScriptedService, Step, TestResponse};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn steps_answer_in_order_after_their_virtual_delay() {
    let start = Instant::now();
    let (svc, handle) = ScriptedService::<u32>::new([
        Step::fail(ErrorKind::Overloaded).after(Duration::from_millis(100)),
        Step::ok(TestResponse::new("done")).after(Duration::from_secs(2)),
    ]);
    let err = svc.clone().oneshot(1).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let res = svc.clone().oneshot(2).await.unwrap();
    assert_eq!(res.body(), "done");
    assert_eq!(start.elapsed(), Duration::from_millis(2100));
    assert_eq!(
        handle.call_times(),
        [start, start + Duration::from_millis(100)]
    );
    assert_eq!(handle.gaps(), [Duration::from_millis(100)]);
    assert_eq!(
        handle.calls().iter().map(|c| c.request).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(handle.completed(), 2);
    assert_eq!(handle.steps_left(), 0);
}

#[tokio::test(start_paused = true)]
async fn scripted_failures_carry_kind_and_server_delay() {
    let (svc, _) = ScriptedService::<()>::new([
        Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(7))
    ]);
    let err = svc.oneshot(()).await.unwrap_err();
    let outcome = err.error_outcome();
    assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
    assert_eq!(outcome.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test(start_paused = true)]
async fn box_error_services_get_scripted_failures_too() {
    let (svc, _) = ScriptedService::<(), TestResponse, BoxError>::new([
        Step::fail(ErrorKind::Timeout),
        Step::err_with(|| "custom".into()),
    ]);
    let err = svc.clone().oneshot(()).await.unwrap_err();
    assert_eq!(err.error_outcome().kind(), Some(ErrorKind::Timeout));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "custom");
}

#[tokio::test(start_paused = true)]
async fn http_steps_build_responses_with_status_and_headers() {
    let (svc, _) = ScriptedService::<(), http::Response<String>, BoxError>::new([
        Step::http(429, &[("retry-after", "3")]),
        Step::status(200),
    ]);
    let res = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(
        res.response_outcome().retry_after(),
        Some(Duration::from_secs(3))
    );
    assert!(
        svc.oneshot(())
            .await
            .unwrap()
            .response_outcome()
            .is_success()
    );
}

#[tokio::test(start_paused = true)]
async fn the_then_step_repeats_once_the_script_is_spent() {
    let (svc, handle) = ScriptedService::<u8>::new([Step::fail(ErrorKind::ServerError)]);
    let svc = svc.then(Step::ok(TestResponse::new("healthy")));
    assert!(svc.clone().oneshot(0).await.is_err());
    for i in 1..4 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap().body(), "healthy");
    }
    assert_eq!(handle.call_count(), 4);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "call 1 has no scripted step")]
async fn an_unscripted_call_fails_the_test() {
    let (svc, _) = ScriptedService::<u8>::new([Step::ok(TestResponse::new("once"))]);
    let _ = svc.clone().oneshot(0).await;
    let _ = svc.oneshot(1).await;
}

#[tokio::test(start_paused = true)]
async fn hanging_calls_stay_in_flight_until_dropped() {
    let (svc, handle) = ScriptedService::<()>::always(Step::hang());
    let fut = svc.oneshot(());
    let timed = tokio::time::timeout(Duration::from_secs(3600), fut).await;
    assert!(timed.is_err(), "a hanging step never answers");
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.dropped(), 1);
    assert_eq!(handle.completed(), 0);
}

#[tokio::test(start_paused = true)]
async fn in_flight_counts_calls_whose_futures_live() {
    let (mut svc, handle) = ScriptedService::<()>::always(
        Step::ok(TestResponse::new("x")).after(Duration::from_secs(1)),
    );
    svc.ready().await.unwrap();
    let fut = svc.call(());
    assert_eq!(handle.in_flight(), 1);
    fut.await.unwrap();
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "poll_ready must be called before call")]
async fn call_without_poll_ready_panics() {
    let (mut svc, _) = ScriptedService::<()>::always(Step::ok(TestResponse::new("x")));
    drop(svc.call(()));
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "poll_ready must be called before call")]
async fn a_clone_of_a_ready_service_is_not_ready() {
    let (mut svc, _) = ScriptedService::<()>::always(Step::ok(TestResponse::new("x")));
    svc.ready().await.unwrap();
    let mut clone = svc.clone();
    drop(clone.call(()));
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "poll_ready must be called before call")]
async fn one_readiness_serves_one_call() {
    let (mut svc, _) = ScriptedService::<()>::always(Step::ok(TestResponse::new("x")));
    svc.ready().await.unwrap();
    drop(svc.call(()));
    drop(svc.call(()));
}

#[tokio::test(start_paused = true)]
async fn readiness_can_be_withheld_and_restored() {
    let (svc, handle) = ScriptedService::<()>::always(Step::ok(TestResponse::new("x")));
    handle.set_ready(false);
    let task = tokio::spawn(svc.oneshot(()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.call_count(), 0, "no call while not ready");
    handle.set_ready(true);
    task.await.unwrap().unwrap();
    assert_eq!(handle.call_count(), 1);
}

#[tokio::test]
async fn contract_probe_passes_well_behaved_callers() {
    let inner = tower::service_fn(|x: u32| async move { Ok::<_, LlmError>(x * 2) });
    let mut probe = ContractProbe::new(inner);
    for i in 0..3 {
        assert_eq!(probe.ready().await.unwrap().call(i).await.unwrap(), i * 2);
    }
}

#[tokio::test]
#[should_panic(expected = "poll_ready must be called before call")]
async fn contract_probe_catches_a_clone_that_inherits_readiness() {
    let inner = tower::service_fn(|x: u32| async move { Ok::<_, LlmError>(x) });
    let mut probe = ContractProbe::new(inner);
    probe.ready().await.unwrap();
    let mut clone = probe.clone();
    drop(clone.call(1));
}
