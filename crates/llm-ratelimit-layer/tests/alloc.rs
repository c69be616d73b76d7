//! An admitted call through the limiter allocates nothing.

use llm_ratelimit_layer::{Mode, Rate, RateLimitConfig, RateLimitLayer};
use llm_testkit::{ReadyService, count_allocations};
use tower::Layer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn admitted_calls_allocate_nothing() {
    let config = RateLimitConfig {
        requests: Some(Rate::per_minute(u64::from(u32::MAX))),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let svc = RateLimitLayer::new(config)
        .unwrap()
        .layer(ReadyService::new(()));
    assert_eq!(count_allocations(svc, 10_000), 0);
}
