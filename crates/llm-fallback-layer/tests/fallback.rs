//! The fallback layer through its public API, over scripted targets in virtual time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_core::{
    AttemptBudget, Deadline, ErrorKind, ErrorKinds, LlmError, RequestExtensions, ResponseMetadata,
};
use llm_fallback_layer::{Chain, Fallback, FallbackEvent, FallbackReason, Target};
use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

type Script = ScriptedService<TestRequest>;
const S: fn(u64) -> Duration = Duration::from_secs;

fn ok(body: &str) -> Step {
    Step::ok(TestResponse::new(body))
}

fn req() -> TestRequest {
    TestRequest::new("gpt-4o").with_prompt("Hi")
}

#[tokio::test(start_paused = true)]
async fn every_fallback_kind_moves_to_the_next_target() {
    for kind in ErrorKinds::FALLBACK.iter() {
        let (primary, _) = Script::always(Step::fail(kind));
        let (backup, backup_calls) = Script::always(ok("backup"));
        let svc = Fallback::builder(vec![
            Target::new("primary", primary),
            Target::new("backup", backup),
        ])
        .build()
        .unwrap();
        let res = svc.oneshot(req()).await.unwrap();
        assert_eq!(res.body(), "backup", "{kind} must move on");
        assert_eq!(backup_calls.call_count(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn non_triggering_errors_come_back_unchanged() {
    for kind in [
        ErrorKind::InvalidRequest,
        ErrorKind::ContentFiltered,
        ErrorKind::Cancelled,
    ] {
        let (primary, _) = Script::always(Step::fail_with_error(
            LlmError::new(kind, "as the provider said").with_code("x"),
        ));
        let (backup, backup_calls) = Script::always(ok("backup"));
        let svc = Fallback::builder(vec![
            Target::new("primary", primary),
            Target::new("backup", backup),
        ])
        .build()
        .unwrap();
        let err = svc.oneshot(req()).await.unwrap_err();
        assert_eq!(
            (err.kind(), err.code(), err.message()),
            (kind, Some("x"), "as the provider said")
        );
        assert_eq!(backup_calls.call_count(), 0, "{kind} must not move on");
    }
}

#[tokio::test(start_paused = true)]
async fn a_target_trigger_narrows_what_moves_on() {
    let (primary, _) = Script::new([Step::fail(ErrorKind::ServerError)]);
    let (backup, backup_calls) = Script::always(ok("backup"));
    let svc = Fallback::builder(vec![
        Target::new("primary", primary).on(ErrorKind::RateLimited),
        Target::new("backup", backup),
    ])
    .build()
    .unwrap();
    assert_eq!(
        svc.oneshot(req()).await.unwrap_err().kind(),
        ErrorKind::ServerError
    );
    assert_eq!(backup_calls.call_count(), 0);

    let (primary, _) = Script::always(Step::fail(ErrorKind::Other));
    let (backup, _) = Script::always(ok("backup"));
    let svc = Fallback::builder(vec![
        Target::new("primary", primary).on_outcome(|o| o.kind() == Some(ErrorKind::Other)),
        Target::new("backup", backup),
    ])
    .build()
    .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "backup");
}

#[tokio::test(start_paused = true)]
async fn rewrites_reach_the_backup_only() {
    let (primary, primary_calls) = Script::always(Step::fail(ErrorKind::RateLimited));
    let (backup, backup_calls) = Script::always(ok("backup"));
    let svc = Fallback::builder(vec![
        Target::new("openai", primary),
        Target::new("openrouter", backup)
            .model("openai/gpt-4o")
            .max_tokens(256)
            .temperature(0.3)
            .map_request(|r: &mut TestRequest| r.prompt.push_str(" (via openrouter)")),
    ])
    .build()
    .unwrap();
    svc.oneshot(req().with_max_tokens(1024)).await.unwrap();
    let sent = &primary_calls.calls()[0].request;
    assert_eq!(
        (sent.model.as_str(), sent.max_tokens),
        ("gpt-4o", Some(1024))
    );
    let sent = &backup_calls.calls()[0].request;
    assert_eq!(sent.model, "openai/gpt-4o");
    assert_eq!((sent.max_tokens, sent.temperature), (Some(256), Some(0.3)));
    assert_eq!(sent.prompt, "Hi (via openrouter)");
}

#[tokio::test(start_paused = true)]
async fn every_target_is_told_how_many_remain() {
    let (a, a_calls) = Script::always(Step::fail(ErrorKind::Overloaded));
    let (b, b_calls) = Script::always(Step::fail(ErrorKind::Overloaded));
    let (c, c_calls) = Script::always(ok("c"));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("b", b),
        Target::new("c", c),
    ])
    .build()
    .unwrap();
    svc.oneshot(req()).await.unwrap();
    assert_eq!(a_calls.calls()[0].request.remaining_targets(), 2);
    assert_eq!(b_calls.calls()[0].request.remaining_targets(), 1);
    assert_eq!(c_calls.calls()[0].request.remaining_targets(), 0);
}

#[tokio::test(start_paused = true)]
async fn exhaustion_lists_every_attempt_in_order() {
    let (a, _) = Script::always(Step::fail(ErrorKind::RateLimited).with_retry_after(S(20)));
    let (b, _) = Script::always(Step::fail(ErrorKind::Overloaded));
    let (c, _) = Script::always(Step::fail(ErrorKind::Timeout));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("b", b),
        Target::new("c", c),
    ])
    .build()
    .unwrap();
    let err = svc.oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout,
        "the last error names the chain's failure"
    );
    let attempts = err
        .fallback_attempts()
        .expect("the attempts travel with the error")
        .attempts();
    let summary: Vec<_> = attempts
        .iter()
        .map(|a| (a.target.as_ref(), a.kind))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", ErrorKind::RateLimited),
            ("b", ErrorKind::Overloaded),
            ("c", ErrorKind::Timeout)
        ]
    );
    assert_eq!(attempts[0].retry_after, Some(S(20)));
    assert!(
        attempts[1].message.contains("overloaded"),
        "{}",
        attempts[1].message
    );
}

#[tokio::test(start_paused = true)]
async fn the_answering_target_is_named_in_the_metadata() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, _) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .build()
        .unwrap();
    let res = svc.oneshot(req()).await.unwrap();
    let meta = res.metadata().unwrap();
    assert_eq!(
        (meta.target.as_deref(), meta.fallbacks, meta.attempts),
        (Some("b"), 1, 2)
    );

    let (a, _) = Script::always(ok("a"));
    let svc = Fallback::builder(vec![Target::new("a", a)])
        .build()
        .unwrap();
    let meta = svc
        .oneshot(req())
        .await
        .unwrap()
        .metadata()
        .cloned()
        .unwrap();
    assert_eq!((meta.target.as_deref(), meta.fallbacks), (Some("a"), 0));
}

#[tokio::test(start_paused = true)]
async fn nested_fallbacks_move_on_when_the_inner_chain_is_exhausted() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, _) = Script::always(Step::fail(ErrorKind::Overloaded));
    let (c, c_calls) = Script::always(ok("c"));
    let inner = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .build()
        .unwrap();
    let inner = tower::util::BoxCloneService::new(inner);
    let outer_c = tower::util::BoxCloneService::new(c);
    let outer = Fallback::builder(vec![
        Target::new("primary pair", inner),
        Target::new("c", outer_c),
    ])
    .build()
    .unwrap();
    assert_eq!(outer.oneshot(req()).await.unwrap().body(), "c");
    assert_eq!(c_calls.call_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn fallback_over_retry_stays_within_the_attempt_bound() {
    let retry = llm_retry_layer::RetryLayer::builder()
        .max_retries(2)
        .no_budget()
        .build()
        .unwrap();
    let (a, a_calls) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, b_calls) = Script::always(Step::fail(ErrorKind::ServerError));
    let svc = Fallback::builder(vec![
        Target::new("a", retry.layer(a)),
        Target::new("b", retry.layer(b)),
    ])
    .build()
    .unwrap();
    svc.oneshot(req()).await.unwrap_err();
    assert_eq!(
        a_calls.call_count() + b_calls.call_count(),
        6,
        "2 targets × 3 attempts"
    );

    // A tighter bound across the chain: 4 attempts in all.
    let (a, a_calls) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, b_calls) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![
        Target::new("a", retry.layer(a)),
        Target::new("b", retry.layer(b)),
    ])
    .max_attempts(4)
    .build()
    .unwrap();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!((a_calls.call_count(), b_calls.call_count()), (3, 1));
    assert_eq!(
        res.metadata().unwrap().attempts,
        4,
        "the count is exact with a budget"
    );
    // When b fails too, its retry finds the budget spent: 4 calls in all, not 6.
    let (a, a_calls) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, b_calls) = Script::always(Step::fail(ErrorKind::ServerError));
    let svc = Fallback::builder(vec![
        Target::new("a", retry.layer(a)),
        Target::new("b", retry.layer(b)),
    ])
    .max_attempts(4)
    .build()
    .unwrap();
    svc.oneshot(req()).await.unwrap_err();
    assert_eq!(a_calls.call_count() + b_calls.call_count(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_attempt_count_is_exact_with_a_budget() {
    let retry = llm_retry_layer::RetryLayer::builder()
        .max_retries(2)
        .no_budget()
        .build()
        .unwrap();
    let (a, _) = Script::always(Step::fail(ErrorKind::ServerError));
    let (b, _) = Script::new([Step::fail(ErrorKind::Overloaded), ok("b")]);
    let svc = Fallback::builder(vec![
        Target::new("a", retry.layer(a)),
        Target::new("b", retry.layer(b)),
    ])
    .build()
    .unwrap();
    let res = svc
        .oneshot(req().with(AttemptBudget::new(10)))
        .await
        .unwrap();
    assert_eq!(res.metadata().unwrap().attempts, 5, "three on a, two on b");
}

#[tokio::test(start_paused = true)]
async fn no_target_starts_after_the_deadline() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ServerError).after(S(5)));
    let (b, b_calls) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .build()
        .unwrap();
    let err = svc
        .oneshot(req().with(Deadline::after(S(3))))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ServerError);
    assert_eq!(b_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_the_call_cancels_the_target_in_flight() {
    let (a, a_calls) = Script::always(Step::hang());
    let (b, b_calls) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .build()
        .unwrap();
    assert!(
        tokio::time::timeout(S(10), svc.oneshot(req()))
            .await
            .is_err()
    );
    assert_eq!((a_calls.dropped(), a_calls.in_flight()), (1, 0));
    assert_eq!(b_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_skipped_without_delay() {
    let breaker = llm_breaker_layer::BreakerLayer::standard();
    breaker.handle().force_open();
    // Targets share one type: different stacks are boxed.
    let (a, a_calls) = Script::always(ok("a"));
    let (b, _) = Script::always(ok("b"));
    let a = tower::util::BoxCloneService::new(breaker.layer(a));
    let b = tower::util::BoxCloneService::new(b);
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .build()
        .unwrap();
    let start = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!((res.body(), start.elapsed()), ("b", Duration::ZERO));
    assert_eq!(a_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_target_that_fails_readiness_is_moved_past() {
    let not_ready = tower::util::BoxCloneService::new(NeverReady);
    let (b, _) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![
        Target::new("broken", not_ready),
        Target::new("b", tower::util::BoxCloneService::new(b)),
    ])
    .build()
    .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "b");
}

/// A service whose readiness fails: its connection pool is gone.
#[derive(Clone)]
struct NeverReady;
impl tower::Service<TestRequest> for NeverReady {
    type Response = TestResponse;
    type Error = LlmError;
    type Future = std::future::Ready<Result<TestResponse, LlmError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), LlmError>> {
        std::task::Poll::Ready(Err(LlmError::new(ErrorKind::Network, "pool closed")))
    }
    fn call(&mut self, _: TestRequest) -> Self::Future {
        unreachable!("never ready, never called")
    }
}

#[tokio::test(start_paused = true)]
async fn context_length_goes_to_the_context_window_chain() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ContextLengthExceeded));
    let (regular, regular_calls) = Script::always(ok("regular"));
    let (long, long_calls) = Script::always(ok("long"));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("regular", regular),
        Target::new("long", long)
            .model("gemini-1.5-pro")
            .chain(Chain::ContextWindow),
    ])
    .build()
    .unwrap();
    assert_eq!(svc.clone().oneshot(req()).await.unwrap().body(), "long");
    assert_eq!(long_calls.calls()[0].request.model, "gemini-1.5-pro");
    assert_eq!(
        regular_calls.call_count(),
        0,
        "an over-long prompt skips models of the same size"
    );
}

#[tokio::test(start_paused = true)]
async fn other_failures_skip_the_special_chains() {
    let (a, _) = Script::always(Step::fail(ErrorKind::Overloaded));
    let (long, long_calls) = Script::always(ok("long"));
    let (policy, policy_calls) = Script::always(ok("policy"));
    let (regular, _) = Script::always(ok("regular"));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("long", long).chain(Chain::ContextWindow),
        Target::new("policy", policy).chain(Chain::ContentPolicy),
        Target::new("regular", regular),
    ])
    .build()
    .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "regular");
    assert_eq!((long_calls.call_count(), policy_calls.call_count()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn content_refusals_move_on_only_to_an_opted_in_chain() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ContentFiltered));
    let (regular, regular_calls) = Script::always(ok("regular"));
    let (policy, _) = Script::always(ok("policy"));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("regular", regular),
        Target::new("policy", policy).chain(Chain::ContentPolicy),
    ])
    .build()
    .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "policy");
    assert_eq!(regular_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn hooks_see_each_move() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let (a, _) = Script::always(Step::fail(ErrorKind::RateLimited));
    let (b, _) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .on_fallback(move |e: &FallbackEvent| log.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    svc.oneshot(req()).await.unwrap();
    let events = events.lock().unwrap();
    assert_eq!((events[0].from.as_ref(), events[0].to.as_ref()), ("a", "b"));
    assert!(matches!(
        &events[0].reason,
        FallbackReason::Failed {
            kind: ErrorKind::RateLimited,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_when_the_primary_is_slow_and_the_primary_is_cancelled() {
    let (a, a_calls) = Script::always(ok("a").after(S(30)));
    let (b, b_calls) = Script::always(ok("b").after(S(1)));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .hedge_after(S(2))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!(res.body(), "b");
    assert_eq!(start.elapsed(), S(3), "hedged at 2 s, answered 1 s later");
    assert_eq!(b_calls.call_times(), [start + S(2)]);
    assert_eq!(
        (a_calls.dropped(), a_calls.in_flight()),
        (1, 0),
        "the slower call was cancelled"
    );
    assert_eq!(res.metadata().unwrap().target.as_deref(), Some("b"));
}

#[tokio::test(start_paused = true)]
async fn a_primary_answering_first_while_hedged_cancels_the_hedge() {
    let (a, _) = Script::always(ok("a").after(S(3)));
    let (b, b_calls) = Script::always(ok("b").after(S(10)));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .hedge_after(S(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!((res.body(), start.elapsed()), ("a", S(3)));
    assert_eq!(
        (b_calls.call_count(), b_calls.dropped(), b_calls.in_flight()),
        (1, 1, 0)
    );
    assert_eq!(res.metadata().unwrap().target.as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn no_hedge_fires_when_the_primary_answers_in_time() {
    let (a, _) = Script::always(ok("a").after(S(1)));
    let (b, b_calls) = Script::always(ok("b"));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .hedge_after(S(2))
        .build()
        .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "a");
    tokio::time::advance(S(60)).await;
    assert_eq!(b_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn at_most_one_hedge_runs_by_default() {
    let (a, _) = Script::always(ok("a").after(S(10)));
    let (b, _) = Script::always(ok("b").after(S(10)));
    let (c, c_calls) = Script::always(ok("c"));
    let svc = Fallback::builder(vec![
        Target::new("a", a),
        Target::new("b", b),
        Target::new("c", c),
    ])
    .hedge_after(S(1))
    .build()
    .unwrap();
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "a");
    assert_eq!(c_calls.call_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failing_primary_while_hedged_leaves_the_hedge_to_answer() {
    let (a, _) = Script::always(Step::fail(ErrorKind::ServerError).after(S(3)));
    let (b, _) = Script::always(ok("b").after(S(4)));
    let svc = Fallback::builder(vec![Target::new("a", a), Target::new("b", b)])
        .hedge_after(S(1))
        .build()
        .unwrap();
    let start = Instant::now();
    let res = svc.oneshot(req()).await.unwrap();
    assert_eq!((res.body(), start.elapsed()), ("b", S(5)));
    assert_eq!(res.metadata().unwrap().fallbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn a_layer_puts_backups_behind_the_wrapped_service() {
    let (primary, _) = Script::always(Step::fail(ErrorKind::QuotaExceeded));
    let (backup, _) = Script::always(ok("backup"));
    let layer = Fallback::builder(vec![Target::new("backup", backup)])
        .build_layer("primary")
        .unwrap();
    let svc = layer.layer(primary);
    assert_eq!(
        svc.target_names().collect::<Vec<_>>(),
        ["primary", "backup"]
    );
    assert_eq!(svc.oneshot(req()).await.unwrap().body(), "backup");
}

#[test]
fn invalid_settings_name_the_field() {
    let none: Vec<Target<Script, TestRequest>> = Vec::new();
    assert_eq!(
        Fallback::builder(none).build().unwrap_err().field(),
        "targets"
    );
    let (a, _) = Script::always(ok("a"));
    let err = Fallback::builder(vec![Target::<_, TestRequest>::new("a", a.clone())])
        .hedge_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "hedge_after");
    let err = Fallback::builder(vec![Target::<_, TestRequest>::new("a", a)])
        .max_attempts(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");
}
