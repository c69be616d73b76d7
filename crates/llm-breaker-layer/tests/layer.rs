//! The breaker layer through its public API, in virtual time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_breaker_layer::{BreakerConfig, BreakerLayer, State};
use llm_core::{BoxError, ErrorKind, LlmError};
use llm_testkit::{ContractProbe, ScriptedService, Step, TestResponse, TestStream};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

const S: fn(u64) -> Duration = Duration::from_secs;

fn config(consecutive: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(consecutive),
        failure_rate: None,
        open_jitter: 0.0,
        ..BreakerConfig::standard()
    }
}

fn layer(consecutive: u32) -> BreakerLayer {
    BreakerLayer::new(config(consecutive)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_rejects_without_calling_the_target() {
    let layer = layer(2);
    let handle = layer.handle();
    let (svc, calls) = ScriptedService::<u32>::always(Step::fail(ErrorKind::Overloaded));
    let svc = layer.layer(svc);
    for i in 0..2 {
        assert_eq!(
            svc.clone().oneshot(i).await.unwrap_err().kind(),
            ErrorKind::Overloaded
        );
    }
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(S(10)).await;
    let err = svc.clone().oneshot(9).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(err.retry_after(), Some(S(20)), "the time until a probe");
    assert_eq!(calls.call_count(), 2, "the target saw no call while open");
    assert_eq!(handle.metrics().rejected, 1);
}

#[tokio::test(start_paused = true)]
async fn caller_side_failures_never_trip_it() {
    for kind in [
        ErrorKind::RateLimited,
        ErrorKind::QuotaExceeded,
        ErrorKind::Unauthorized,
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::ModelNotFound,
        ErrorKind::Cancelled,
    ] {
        let layer = layer(1);
        let (svc, calls) = ScriptedService::<u32>::always(Step::fail(kind));
        let svc = layer.layer(svc);
        for i in 0..5 {
            assert_eq!(svc.clone().oneshot(i).await.unwrap_err().kind(), kind);
        }
        assert_eq!(
            layer.handle().state(),
            State::Closed,
            "{kind} must not trip the breaker"
        );
        assert_eq!(calls.call_count(), 5);
    }
}

#[tokio::test(start_paused = true)]
async fn http_503_responses_count_and_rejections_reach_box_error_stacks() {
    let layer = layer(2);
    let (svc, calls) =
        ScriptedService::<u32, http::Response<String>, BoxError>::always(Step::status(503));
    let svc = layer.layer(svc);
    for i in 0..2 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap().status(), 503);
    }
    let err = svc.clone().oneshot(2).await.unwrap_err();
    assert_eq!(LlmError::from(err).kind(), ErrorKind::CircuitOpen);
    assert_eq!(calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_mid_answer_counts_when_it_ends() {
    let layer = layer(1);
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<u32, TestStream>::always(Step::respond_with(TestStream::new));
    let svc = layer.layer(svc);
    let stream = svc.clone().oneshot(0).await.unwrap();
    assert_eq!(stream.observers(), 1);
    assert_eq!(
        handle.state(),
        State::Closed,
        "the first chunk is not the outcome"
    );
    stream.interrupt();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn complete_and_abandoned_streams_do_not_trip_it() {
    let layer = layer(1);
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<u32, TestStream>::always(Step::respond_with(TestStream::new));
    let svc = layer.layer(svc);
    svc.clone().oneshot(0).await.unwrap().finish();
    drop(svc.clone().oneshot(1).await.unwrap());
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(
        handle.metrics().calls,
        1,
        "the finished stream counted, the dropped one did not"
    );
}

/// Trips `layer`'s breaker and waits out its open duration, so the next call is a probe.
async fn trip_and_wait<S: Service<u32, Error = LlmError> + Clone>(svc: &S) {
    let _ = svc.clone().oneshot(1000).await;
    tokio::time::advance(S(30)).await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_probe_releases_its_slot() {
    let layer = layer(1);
    let handle = layer.handle();
    let (svc, calls) =
        ScriptedService::<u32>::new([Step::fail(ErrorKind::ServerError), Step::hang()]);
    let svc = layer.layer(svc.then(Step::ok(TestResponse::new("ok"))));
    trip_and_wait(&svc).await;
    // The probe hangs; its caller gives up after a second.
    assert!(
        tokio::time::timeout(S(1), svc.clone().oneshot(1))
            .await
            .is_err()
    );
    assert_eq!(
        handle.metrics().probes_in_flight,
        0,
        "the dropped probe gave its slot back"
    );
    assert_eq!(svc.clone().oneshot(2).await.unwrap().body(), "ok");
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(calls.call_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_streaming_probe_holds_its_slot_until_the_stream_ends() {
    let layer = layer(1);
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<u32, TestStream>::new([Step::fail(ErrorKind::Timeout)]);
    let svc = layer.layer(svc.then(Step::respond_with(TestStream::new)));
    let _ = svc.clone().oneshot(0).await;
    tokio::time::advance(S(30)).await;
    let stream = svc.clone().oneshot(1).await.unwrap();
    assert_eq!(
        svc.clone().oneshot(2).await.unwrap_err().kind(),
        ErrorKind::CircuitOpen,
        "one probe at a time"
    );
    drop(stream);
    assert_eq!(handle.metrics().probes_in_flight, 0);
    svc.clone().oneshot(3).await.unwrap().finish();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn many_concurrent_callers_send_one_probe() {
    let layer = layer(3);
    let handle = layer.handle();
    let (svc, calls) = ScriptedService::<u32>::new(vec![Step::fail(ErrorKind::Network); 3]);
    let svc = layer.layer(svc.then(Step::ok(TestResponse::new("ok")).after(S(2))));
    let tasks: Vec<_> = (0..3)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    assert_eq!(handle.state(), State::Open);
    tokio::time::advance(S(30)).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(err) => assert_eq!(err.kind(), ErrorKind::CircuitOpen),
        }
    }
    assert_eq!(
        (ok, calls.call_count()),
        (1, 4),
        "one probe reached the target"
    );
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn retry_stops_at_once_when_the_breaker_opens_and_keeps_the_upstream_error() {
    // A request type without extensions: every attempt counts, so two failures open it.
    let breaker = layer(2);
    let (svc, calls) = ScriptedService::<u32>::always(Step::fail(ErrorKind::ServerError));
    let retry = llm_retry_layer::RetryLayer::builder()
        .max_retries(5)
        .no_budget()
        .build()
        .unwrap();
    let svc = retry.layer(breaker.layer(svc));
    let start = Instant::now();
    let err = svc.oneshot(0).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::ServerError,
        "the caller sees what the upstream said, not circuit_open"
    );
    assert_eq!(
        calls.call_count(),
        2,
        "two failures opened it; no third attempt was even tried"
    );
    assert!(
        start.elapsed() < S(10),
        "no retry waited on the open breaker"
    );
}

#[tokio::test(start_paused = true)]
async fn a_target_down_for_a_minute_is_closed_again_within_one_open_interval() {
    let changes = Arc::new(Mutex::new(Vec::new()));
    let log = changes.clone();
    let layer = BreakerLayer::builder()
        .config(BreakerConfig {
            open_jitter: 0.0,
            ..BreakerConfig::standard()
        })
        .name("flaky")
        .on_state_change(move |c| log.lock().unwrap().push((Instant::now(), c.to, c.open_for)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let start = Instant::now();
    let recovers_at = start + S(60);
    let (svc, calls) = ScriptedService::<u32>::always(Step::from_fn(move || {
        if Instant::now() < recovers_at {
            Err(LlmError::new(ErrorKind::ServerError, "down"))
        } else {
            Ok(TestResponse::new("up"))
        }
    }));
    let svc = layer.layer(svc);
    let mut closed_at = None;
    for i in 0..200 {
        let _ = svc.clone().oneshot(i).await;
        if Instant::now() >= recovers_at && handle.state() == State::Closed {
            closed_at = Some(Instant::now());
            break;
        }
        tokio::time::advance(S(1)).await;
    }
    let changes = changes.lock().unwrap().clone();
    let states: Vec<State> = changes.iter().map(|c| c.1).collect();
    assert_eq!(
        states,
        [
            State::Open,
            State::HalfOpen,
            State::Open,
            State::HalfOpen,
            State::Closed
        ]
    );
    // The last open interval began before the recovery and lasted 60 s (30 s doubled).
    let (last_open_at, _, last_open_for) = changes[2];
    assert!(last_open_at < recovers_at);
    assert_eq!(last_open_for, Some(S(60)));
    let closed_at = closed_at.expect("the breaker closed");
    assert!(
        closed_at - recovers_at <= S(60),
        "closed {:?} after recovery",
        closed_at - recovers_at
    );
    // While open, the target saw only the probes.
    assert_eq!(
        calls.call_count(),
        5 + 1 + 1,
        "five failures, a failed probe, a good probe"
    );
}

#[tokio::test(start_paused = true)]
async fn hooks_see_transitions_and_rejections() {
    let rejected = Arc::new(AtomicUsize::new(0));
    let seen = rejected.clone();
    let transitions = Arc::new(Mutex::new(Vec::new()));
    let log = transitions.clone();
    let layer = BreakerLayer::builder()
        .config(config(1))
        .name("primary")
        .on_rejected(move |err| {
            assert_eq!(err.name(), Some("primary"));
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .on_state_change(move |c| log.lock().unwrap().push((c.name.clone(), c.from, c.to)))
        .build()
        .unwrap();
    let (svc, _) = ScriptedService::<u32>::always(Step::fail(ErrorKind::Timeout));
    let svc = layer.layer(svc);
    for i in 0..4 {
        let _ = svc.clone().oneshot(i).await;
    }
    assert_eq!(rejected.load(Ordering::Relaxed), 3);
    assert_eq!(
        *transitions.lock().unwrap(),
        [(Some(Arc::from("primary")), State::Closed, State::Open)]
    );
}

#[tokio::test(start_paused = true)]
async fn clones_of_layer_and_service_share_one_breaker() {
    let layer = layer(2);
    let (a, _) = ScriptedService::<u32>::always(Step::fail(ErrorKind::Overloaded));
    let a = layer.clone().layer(a);
    let (b, b_calls) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let b = layer.layer(b);
    let _ = a.clone().oneshot(0).await;
    let _ = a.clone().oneshot(1).await;
    assert_eq!(
        b.clone().oneshot(2).await.unwrap_err().kind(),
        ErrorKind::CircuitOpen
    );
    assert_eq!(b_calls.call_count(), 0);
    assert_eq!(b.handle().state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn works_under_the_contract_probe() {
    let layer = layer(1);
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let mut svc = layer.layer(ContractProbe::new(svc));
    for i in 0..3 {
        assert_eq!(
            svc.ready().await.unwrap().call(i).await.unwrap().body(),
            "ok"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_isolate_keys() {
    let layer = BreakerLayer::builder()
        .config(config(1))
        .keyed_by(|req: &(String, u32)| req.0.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let (svc, _) =
        ScriptedService::<(String, u32)>::always(Step::from_fn(|| Ok(TestResponse::new("ok"))));
    let (bad, _) = ScriptedService::<(String, u32)>::always(Step::fail(ErrorKind::Overloaded));
    let good = layer.clone().layer(svc);
    let bad = layer.layer(bad);
    let _ = bad.clone().oneshot(("gpt-4o".to_owned(), 0)).await;
    assert_eq!(
        handle.get(&"gpt-4o".to_owned()).unwrap().state(),
        State::Open
    );
    // Another key through the same layer is unaffected.
    good.clone()
        .oneshot(("claude".to_owned(), 1))
        .await
        .unwrap();
    assert_eq!(
        handle.get(&"claude".to_owned()).unwrap().state(),
        State::Closed
    );
    let err = good
        .clone()
        .oneshot(("gpt-4o".to_owned(), 2))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(
        err.provider(),
        Some("gpt-4o"),
        "the rejection names the key"
    );
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_keep_memory_bounded() {
    let layer = BreakerLayer::builder()
        .max_keys(3)
        .idle_after(S(60))
        .keyed_by(|key: &u32| *key)
        .build()
        .unwrap();
    let handle = layer.handle();
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
    let svc = layer.layer(svc);
    for key in 0..3 {
        svc.clone().oneshot(key).await.unwrap();
        tokio::time::advance(S(2)).await;
    }
    svc.clone().oneshot(0).await.unwrap(); // key 0 is now the most recently used
    tokio::time::advance(S(2)).await;
    svc.clone().oneshot(3).await.unwrap(); // at the limit: the least recently used (1) goes
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, [0, 2, 3]);
    // Much later every old key is idle: a new key evicts them all at once.
    tokio::time::advance(S(120)).await;
    for key in 10..13 {
        svc.clone().oneshot(key).await.unwrap();
    }
    let mut keys = handle.keys();
    keys.sort_unstable();
    assert_eq!(keys, [10, 11, 12]);
    for key in 100..1_000 {
        svc.clone().oneshot(key).await.unwrap();
        assert!(handle.len() <= 3);
    }
}
