//! One key extractor — a type of the user's, not only a closure — serves both keyed layers.

use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
use llm_tower::KeyOf;
use llm_tower::breaker::State;
use llm_tower::prelude::*;
use llm_tower::ratelimit::{Mode, Rate, RateLimitStore};
use tower::{Layer, ServiceExt};

/// Keys requests by the model they ask for.
#[derive(Clone, Copy)]
struct ByModel;

impl KeyOf<TestRequest> for ByModel {
    type Key = String;
    fn key_of(&self, request: &TestRequest) -> String {
        request.model.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn one_extractor_keys_the_breaker_and_the_limiter() {
    let breaker = BreakerLayer::builder()
        .config(BreakerConfig {
            consecutive_failures: Some(1),
            ..BreakerConfig::standard()
        })
        .keyed_by(ByModel)
        .build()
        .unwrap();
    let breakers = breaker.handle();
    let limit = RateLimitLayer::builder()
        .config(RateLimitConfig {
            requests: Some(Rate::per_minute(60).burst(1)),
            mode: Mode::Reject,
            ..Default::default()
        })
        .keyed_by(ByModel)
        .build()
        .unwrap();
    let limits = limit.store();
    let (provider, _) = ScriptedService::<TestRequest>::new([Step::fail(ErrorKind::Overloaded)]);
    let svc = breaker.layer(limit.layer(provider.then(Step::ok(TestResponse::new("ok")))));

    let _ = svc.clone().oneshot(TestRequest::new("gpt-4o")).await;
    assert_eq!(
        breakers.get(&"gpt-4o".to_owned()).unwrap().state(),
        State::Open
    );
    svc.clone()
        .oneshot(TestRequest::new("claude"))
        .await
        .unwrap();
    assert_eq!(
        breakers.get(&"claude".to_owned()).unwrap().state(),
        State::Closed
    );
    assert_eq!(limits.capacity(&"claude".to_owned()).requests, Some(0));
    assert_eq!(limits.capacity(&"gpt-4o".to_owned()).requests, Some(0));
}
