//! An admitted call through the limiter allocates nothing.

use llm_ratelimit_layer::{Mode, Rate, RateLimitConfig, RateLimitLayer};
use llm_testkit::ReadyService;
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn admitted_calls_allocate_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let config = RateLimitConfig {
        requests: Some(Rate::per_minute(u64::from(u32::MAX))),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let mut svc = RateLimitLayer::new(config)
        .unwrap()
        .layer(ReadyService::new(()));
    runtime.block_on(async {
        for i in 0..100u32 {
            ServiceExt::<u32>::ready(&mut svc)
                .await
                .unwrap()
                .call(i)
                .await
                .unwrap();
        }
        let before = dhat::HeapStats::get();
        for i in 0..10_000u32 {
            ServiceExt::<u32>::ready(&mut svc)
                .await
                .unwrap()
                .call(i)
                .await
                .unwrap();
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    });
}
