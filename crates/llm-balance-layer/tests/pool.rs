//! The pool through its public API, on tokio's paused clock: per-key quotas, a revoked key,
//! a slow member, priority tiers, sticky picks.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use llm_balance_layer::{Member, MemberState, Pool, Strategy};
use llm_core::{
    ErrorKind, LlmError, Outcome, RateLimitInfo, RequestExtensions, ResponseMeta, ResponseMetadata,
    ResponseOutcome,
};
use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// An answer that reports the key's budget, as a provider's `x-ratelimit-*` headers do.
#[derive(Debug)]
struct Answer {
    info: RateLimitInfo,
    meta: Option<ResponseMeta>,
}

impl ResponseOutcome for Answer {
    fn response_outcome(&self) -> Outcome {
        Outcome::success().with_rate_limit(self.info)
    }
}

impl ResponseMetadata for Answer {
    fn metadata(&self) -> Option<&ResponseMeta> {
        self.meta.as_ref()
    }
    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(self.meta.get_or_insert_with(ResponseMeta::new))
    }
}

/// One API key at a provider that allows it `per_minute` requests, refilled continuously
/// (the mock provider's and OpenAI's bucket), answering after `latency`.
#[derive(Clone)]
struct QuotaKey {
    bucket: Arc<Mutex<(f64, Instant)>>,
    per_minute: f64,
    latency: Duration,
    served: Arc<AtomicU32>,
    refused: Arc<AtomicU32>,
}

impl QuotaKey {
    fn new(per_minute: u32, latency: Duration) -> Self {
        QuotaKey {
            bucket: Arc::new(Mutex::new((f64::from(per_minute), Instant::now()))),
            per_minute: f64::from(per_minute),
            latency,
            served: Arc::default(),
            refused: Arc::default(),
        }
    }

    /// Takes one request from the budget: what the response says about it.
    fn charge(&self) -> Result<RateLimitInfo, LlmError> {
        let mut bucket = self.bucket.lock().unwrap();
        let now = Instant::now();
        let per_sec = self.per_minute / 60.0;
        bucket.0 =
            (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * per_sec).min(self.per_minute);
        bucket.1 = now;
        let to_full = |level: f64| Duration::from_secs_f64((self.per_minute - level) / per_sec);
        if bucket.0 < 1.0 {
            self.refused.fetch_add(1, Ordering::Relaxed);
            let info = RateLimitInfo {
                remaining_requests: Some(0),
                reset_requests: Some(to_full(bucket.0)),
                ..RateLimitInfo::new()
            };
            let wait = Duration::from_secs_f64((1.0 - bucket.0) / per_sec);
            return Err(LlmError::new(ErrorKind::RateLimited, "rate limit reached")
                .with_retry_after(wait)
                .with_rate_limit(info));
        }
        bucket.0 -= 1.0;
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(RateLimitInfo {
            remaining_requests: Some(bucket.0 as u64),
            reset_requests: Some(to_full(bucket.0)),
            ..RateLimitInfo::new()
        })
    }
}

impl Service<TestRequest> for QuotaKey {
    type Response = Answer;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, LlmError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: TestRequest) -> Self::Future {
        let charged = self.charge();
        let latency = self.latency;
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            charged.map(|info| Answer { info, meta: None })
        })
    }
}

type Scripted = ScriptedService<TestRequest>;

fn member_of(answer: &impl ResponseMetadata) -> String {
    answer
        .metadata()
        .unwrap()
        .member
        .as_deref()
        .unwrap()
        .to_owned()
}

#[tokio::test(start_paused = true)]
async fn three_keys_of_20_a_minute_serve_at_least_55_a_minute_with_at_most_two_429s() {
    let keys: Vec<QuotaKey> = (0..3)
        .map(|_| QuotaKey::new(20, Duration::from_millis(300)))
        .collect();
    let pool = Pool::builder(
        "openai",
        keys.iter()
            .enumerate()
            .map(|(i, key)| Member::new(format!("key-{i}"), key.clone()))
            .collect(),
    )
    .build()
    .unwrap();

    // Callers ask for twice what the keys allow: two requests a second for five minutes.
    let minutes = 5;
    let mut calls = Vec::new();
    for _ in 0..(minutes * 120) {
        calls.push(tokio::spawn(
            pool.clone().oneshot(TestRequest::new("gpt-4o")),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut answered = 0;
    let mut refused_here = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(err) => {
                // What the pool says when every key is spent: rate limited, and until when.
                assert_eq!(err.kind(), ErrorKind::RateLimited, "{err}");
                assert!(err.retry_after().is_some());
                refused_here += 1;
            }
        }
    }
    let upstream_429s: u32 = keys.iter().map(|k| k.refused.load(Ordering::Relaxed)).sum();
    let per_minute = answered as f64 / minutes as f64;
    eprintln!(
        "{answered} answered ({per_minute}/min), {refused_here} refused by the pool, {upstream_429s} upstream 429s"
    );
    assert!(per_minute >= 55.0, "{per_minute} a minute");
    assert!(upstream_429s <= 2, "{upstream_429s} upstream 429s");
    // Each key carried its share.
    for key in &keys {
        let served = key.served.load(Ordering::Relaxed) as f64 / minutes as f64;
        assert!(served >= 18.0, "a key served {served} a minute");
    }
}

#[tokio::test(start_paused = true)]
async fn a_revoked_key_leaves_rotation_after_one_request_and_no_caller_sees_its_401() {
    let (good_1, good_1_calls) = Scripted::always(Step::ok(TestResponse::new("a")));
    let (revoked, revoked_calls) = Scripted::always(Step::fail(ErrorKind::Unauthorized));
    let (good_2, good_2_calls) = Scripted::always(Step::ok(TestResponse::new("b")));
    let pool = Pool::builder(
        "openai",
        vec![
            Member::new("key-1", good_1),
            Member::new("revoked", revoked),
            Member::new("key-2", good_2),
        ],
    )
    .build()
    .unwrap();

    for _ in 0..30 {
        let answer = pool.clone().oneshot(TestRequest::new("gpt-4o")).await;
        let answer = answer.expect("no caller sees the revoked key's 401");
        assert_ne!(member_of(&answer), "revoked");
    }
    assert_eq!(revoked_calls.call_count(), 1);
    assert_eq!(good_1_calls.call_count() + good_2_calls.call_count(), 30);
    let revoked_status = pool
        .handle()
        .members()
        .into_iter()
        .find(|m| &*m.name == "revoked")
        .unwrap();
    assert!(
        matches!(revoked_status.state, MemberState::Retired { .. }),
        "{revoked_status:?}"
    );

    // After `retire_for`, one request probes it; refused again, it is retired again.
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    for _ in 0..10 {
        pool.clone()
            .oneshot(TestRequest::new("gpt-4o"))
            .await
            .unwrap();
    }
    assert_eq!(revoked_calls.call_count(), 2);

    // A new key in place: the operator puts it back.
    assert!(pool.handle().restore("revoked"));
    assert_eq!(pool.handle().available(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_member_five_times_slower_gets_under_a_fifth_of_the_traffic_by_peak_ewma() {
    let step = |ms| Step::ok(TestResponse::new("hi")).after(Duration::from_millis(ms));
    let (fast_1, fast_1_calls) = Scripted::always(step(100));
    let (fast_2, fast_2_calls) = Scripted::always(step(100));
    let (slow, slow_calls) = Scripted::always(step(500));
    let pool = Pool::builder(
        "replicas",
        vec![
            Member::new("fast-1", fast_1),
            Member::new("slow", slow),
            Member::new("fast-2", fast_2),
        ],
    )
    .strategy(Strategy::PeakEwma)
    .build()
    .unwrap();

    // Eight callers, each sending its next request when the last is answered.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    pool.clone()
                        .oneshot(TestRequest::new("llama"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let total = fast_1_calls.call_count() + fast_2_calls.call_count() + slow_calls.call_count();
    assert_eq!(total, 400);
    let share = slow_calls.call_count() as f64 / total as f64;
    eprintln!("slow member's share: {share:.3}");
    assert!(share < 0.2, "the slow member got {share:.3} of the traffic");
    assert!(
        slow_calls.call_count() > 0,
        "the slow member is still probed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lower_tier_takes_traffic_only_once_the_first_tier_is_exhausted() {
    let first: Vec<QuotaKey> = (0..2)
        .map(|_| QuotaKey::new(5, Duration::from_millis(50)))
        .collect();
    let backup = QuotaKey::new(1000, Duration::from_millis(50));
    let pool = Pool::builder(
        "azure",
        vec![
            Member::new("eastus", first[0].clone()),
            Member::new("backup-region", backup.clone()).tier(1),
            Member::new("westus", first[1].clone()),
        ],
    )
    .build()
    .unwrap();

    let served =
        |keys: &[QuotaKey]| -> u32 { keys.iter().map(|k| k.served.load(Ordering::Relaxed)).sum() };
    let mut spilled_at = None;
    for n in 0..30 {
        let answer = pool
            .clone()
            .oneshot(TestRequest::new("gpt-4o"))
            .await
            .unwrap();
        if member_of(&answer) == "backup-region" && spilled_at.is_none() {
            spilled_at = Some(n);
            // The first tier had nothing left when the backup took its first request.
            assert_eq!(served(&first), 10);
        }
    }
    assert_eq!(spilled_at, Some(10));
    assert_eq!(served(std::slice::from_ref(&backup)), 20);
    let refused: u32 = first
        .iter()
        .map(|k| k.refused.load(Ordering::Relaxed))
        .sum();
    assert!(refused <= 2, "{refused} upstream 429s");

    // A minute later the first tier has its budget again and takes the traffic back.
    tokio::time::advance(Duration::from_secs(60)).await;
    for _ in 0..8 {
        let answer = pool
            .clone()
            .oneshot(TestRequest::new("gpt-4o"))
            .await
            .unwrap();
        assert_ne!(member_of(&answer), "backup-region");
    }
}

#[derive(Clone)]
struct Session(&'static str);

#[tokio::test(start_paused = true)]
async fn sticky_picks_hold_while_the_member_is_healthy() {
    let members: Vec<_> = (0..4)
        .map(|i| {
            let (svc, _) = Scripted::always(Step::ok(TestResponse::new("hi")));
            Member::new(format!("key-{i}"), svc)
        })
        .collect();
    let pool = Pool::builder("openai", members)
        .strategy(Strategy::Weighted)
        .sticky_by(|req: &TestRequest| Some(req.request_extensions()?.get::<Session>()?.0))
        .build()
        .unwrap();
    let sessions = [
        "ana", "ben", "cho", "dev", "eli", "fay", "gus", "hal", "ivy", "jon", "kim", "lou",
    ];
    let ask = |session: &'static str| {
        pool.clone()
            .oneshot(TestRequest::new("gpt-4o").with(Session(session)))
    };
    let mut home = std::collections::HashMap::new();
    for round in 0..5 {
        for session in sessions {
            let member = member_of(&ask(session).await.unwrap());
            let first = home.entry(session).or_insert_with(|| member.clone());
            assert_eq!(*first, member, "{session} moved in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = home.values().collect();
    assert!(
        used.len() >= 3,
        "sessions spread over {} members",
        used.len()
    );

    // Its member out, a session goes by the strategy; back, the session returns to it.
    let ana_home = home["ana"].clone();
    assert!(pool.handle().retire(&ana_home, Duration::from_secs(30)));
    for _ in 0..5 {
        assert_ne!(member_of(&ask("ana").await.unwrap()), ana_home);
    }
    assert!(pool.handle().restore(&ana_home));
    assert_eq!(member_of(&ask("ana").await.unwrap()), ana_home);
}

#[tokio::test(start_paused = true)]
async fn a_server_error_moves_the_request_to_another_member_and_a_bad_request_does_not() {
    let (broken, broken_calls) = Scripted::always(Step::fail(ErrorKind::ServerError));
    let (good, good_calls) = Scripted::new([
        Step::ok(TestResponse::new("ok")),
        Step::fail(ErrorKind::InvalidRequest),
    ]);
    let pool = Pool::builder(
        "p",
        vec![Member::new("broken", broken), Member::new("good", good)],
    )
    .strategy(Strategy::LeastInFlight)
    .build()
    .unwrap();
    // Whichever member is picked first, the answer comes from the good one.
    let answer = pool.clone().oneshot(TestRequest::new("m")).await.unwrap();
    assert_eq!(member_of(&answer), "good");
    assert_eq!(
        answer.metadata().unwrap().attempts,
        1 + broken_calls.call_count() as u32
    );
    // A 400 is the request's fault: it comes back as it is, from whichever member.
    let before = (broken_calls.call_count(), good_calls.call_count());
    let err = loop {
        match pool.clone().oneshot(TestRequest::new("m")).await {
            Err(err) if err.kind() == ErrorKind::InvalidRequest => break err,
            Err(err) => assert_eq!(err.kind(), ErrorKind::ServerError),
            Ok(_) => panic!("the script answers once"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(good_calls.call_count(), before.1 + 1);
}

#[tokio::test(start_paused = true)]
async fn with_every_member_out_the_pool_says_why_and_until_when_without_calling_any() {
    let (a, a_calls) = Scripted::always(
        Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(20)),
    );
    let (b, b_calls) = Scripted::always(
        Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(8)),
    );
    let pool = Pool::<_, TestRequest>::builder("p", vec![Member::new("a", a), Member::new("b", b)])
        .build()
        .unwrap();
    let err = pool
        .clone()
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(a_calls.call_count() + b_calls.call_count(), 2);
    let err = pool
        .clone()
        .oneshot(TestRequest::new("m"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert_eq!(err.retry_after(), Some(Duration::from_secs(8)));
    assert!(err.to_string().contains("no member of pool p"), "{err}");
    assert_eq!(a_calls.call_count() + b_calls.call_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_is_no_longer_counted_in_flight() {
    let (hangs, _) = Scripted::always(Step::hang());
    let mut pool = Pool::<_, TestRequest>::builder("p", vec![Member::new("a", hangs)])
        .build()
        .unwrap();
    let call = pool.ready().await.unwrap().call(TestRequest::new("m"));
    let mut call = Box::pin(call);
    let waker = std::task::Waker::noop();
    assert!(
        call.as_mut()
            .poll(&mut Context::from_waker(waker))
            .is_pending()
    );
    assert_eq!(pool.handle().members()[0].in_flight, 1);
    drop(call);
    assert_eq!(pool.handle().members()[0].in_flight, 0);
}

#[test]
fn a_pool_refuses_no_members_a_zero_weight_and_two_members_of_one_name() {
    let (svc, _) = Scripted::always(Step::ok(TestResponse::new("x")));
    let err = Pool::<ScriptedService<TestRequest>, TestRequest>::builder("p", vec![])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("members"), "{err}");
    let err = Pool::<_, TestRequest>::builder("p", vec![Member::new("a", svc.clone()).weight(0)])
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("members[0].weight"), "{err}");
    let err = Pool::<_, TestRequest>::builder(
        "p",
        vec![Member::new("a", svc.clone()), Member::new("a", svc)],
    )
    .build()
    .unwrap_err();
    assert!(err.to_string().contains("members[1].name"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn pools_of_the_same_members_share_their_health() {
    let (chat_revoked, chat_calls) = Scripted::always(Step::fail(ErrorKind::Unauthorized));
    let (chat_good, _) = Scripted::always(Step::ok(TestResponse::new("chat")));
    let chat = Pool::builder(
        "openai",
        vec![
            Member::new("old", chat_revoked),
            Member::new("new", chat_good),
        ],
    )
    .build()
    .unwrap();
    let (stream_revoked, stream_calls) = Scripted::always(Step::fail(ErrorKind::Unauthorized));
    let (stream_good, _) = Scripted::always(Step::ok(TestResponse::new("stream")));
    let stream = Pool::builder(
        "openai",
        vec![
            Member::new("old", stream_revoked),
            Member::new("new", stream_good),
        ],
    )
    .same_health_as(&chat.handle())
    .build()
    .unwrap();
    // The streaming pool meets the refused key; the chat pool never calls it.
    for _ in 0..3 {
        stream.clone().oneshot(TestRequest::new("m")).await.unwrap();
    }
    for _ in 0..3 {
        chat.clone().oneshot(TestRequest::new("m")).await.unwrap();
    }
    assert_eq!(stream_calls.call_count(), 1);
    assert_eq!(chat_calls.call_count(), 0);

    // Other members are refused.
    let (svc, _) = Scripted::always(Step::ok(TestResponse::new("x")));
    let err = Pool::<_, TestRequest>::builder("openai", vec![Member::new("other", svc)])
        .same_health_as(&chat.handle())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("must be those of pool openai"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_member_hands_over_only_within_the_attempt_budget_and_the_deadline() {
    let make = || {
        let (broken, broken_calls) = Scripted::always(Step::fail(ErrorKind::ServerError));
        let (good, good_calls) = Scripted::always(Step::ok(TestResponse::new("ok")));
        let pool = Pool::builder(
            "p",
            vec![Member::new("broken", broken), Member::new("good", good)],
        )
        .strategy(Strategy::LeastInFlight)
        .build()
        .unwrap();
        (pool, broken_calls, good_calls)
    };
    // Whichever member the first request gets, a spent budget keeps it there.
    let (pool, broken_calls, good_calls) = make();
    let mut kept = 0;
    for _ in 0..4 {
        let budget = llm_core::AttemptBudget::new(1);
        assert!(budget.try_acquire());
        let request = TestRequest::new("m").with(budget);
        if pool.clone().oneshot(request).await.is_err() {
            kept += 1;
        }
    }
    assert_eq!(kept, broken_calls.call_count());
    assert!(kept > 0);
    assert_eq!(good_calls.call_count() + broken_calls.call_count(), 4);

    // Past its deadline, a request is not handed over either.
    let (pool, broken_calls, _) = make();
    let mut failed = 0;
    for _ in 0..4 {
        let request = TestRequest::new("m").with(llm_core::Deadline::after(Duration::ZERO));
        if pool.clone().oneshot(request).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, broken_calls.call_count());
    assert!(failed > 0);
}

#[tokio::test(start_paused = true)]
async fn a_members_open_breaker_passes_the_request_on_and_keeps_the_member_in_rotation() {
    // One member's breaker (for one model, say) refuses; the other answers.
    let (refusing, refusing_calls) = Scripted::always(Step::fail_with_error(LlmError::from(
        llm_core::CircuitOpen::new(Duration::from_secs(30)),
    )));
    let (good, _) = Scripted::always(Step::ok(TestResponse::new("ok")));
    let pool = Pool::builder(
        "p",
        vec![Member::new("a", refusing), Member::new("b", good)],
    )
    .strategy(Strategy::LeastInFlight)
    .build()
    .unwrap();
    for _ in 0..4 {
        let answer = pool.clone().oneshot(TestRequest::new("m")).await.unwrap();
        assert_eq!(member_of(&answer), "b");
    }
    // Still in rotation: it is asked again (its breaker answers for itself).
    assert!(
        refusing_calls.call_count() >= 2,
        "{}",
        refusing_calls.call_count()
    );
    assert_eq!(pool.handle().available(), 2);
}
