//! A first-try success through the retry layer allocates nothing (counted by dhat).

use llm_retry_layer::RetryLayer;
use llm_testkit::{ReadyService, TestResponse};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn first_try_success_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let svc = RetryLayer::standard().layer(ReadyService::new(TestResponse::default()));
    runtime.block_on(async {
        // Warm up thread-locals and the runtime.
        for _ in 0..10 {
            svc.clone().oneshot(0u32).await.unwrap();
        }
        let before = dhat::HeapStats::get();
        let mut svc = svc.clone();
        for _ in 0..10_000 {
            ServiceExt::<u32>::ready(&mut svc)
                .await
                .unwrap()
                .call(0)
                .await
                .unwrap();
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    });
}
