//! A call through a closed breaker allocates nothing (counted by dhat).

use llm_breaker_layer::BreakerLayer;
use llm_testkit::{ReadyService, TestResponse};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn closed_path_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut svc = BreakerLayer::standard().layer(ReadyService::new(TestResponse::default()));
    runtime.block_on(async {
        for i in 0..100 {
            ServiceExt::<u32>::ready(&mut svc)
                .await
                .unwrap()
                .call(i)
                .await
                .unwrap();
        }
        let before = dhat::HeapStats::get();
        for i in 0..10_000 {
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
