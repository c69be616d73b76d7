//! The whole recommended stack — a two-target fallback over retry → breaker → rate limit —
//! allocates nothing when the first target answers.

use std::time::Duration;

use llm_testkit::{ReadyService, count_allocations};
use llm_tower::prelude::*;
use llm_tower::ratelimit::{Mode, Rate};
use tower::Layer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn the_full_stack_allocates_nothing_on_success() {
    let limits = RateLimitConfig {
        requests: Some(Rate {
            limit: u64::from(u32::MAX),
            per: Duration::from_secs(10),
            burst: None,
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let target = |name: &'static str| {
        let limited = RateLimitLayer::new(limits.clone())
            .unwrap()
            .layer(ReadyService::new(()));
        Target::new(
            name,
            RetryLayer::standard().layer(BreakerLayer::standard().layer(limited)),
        )
    };
    let stack = Fallback::builder(vec![target("primary"), target("backup")])
        .build()
        .unwrap();
    assert_eq!(count_allocations(stack, 10_000), 0);
}
