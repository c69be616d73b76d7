//! When the first target answers, a call through the fallback allocates nothing.

use llm_fallback_layer::{Fallback, Target};
use llm_testkit::ReadyService;
use tower::{Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn primary_success_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut svc = Fallback::builder(vec![
        Target::new("primary", ReadyService::new(())),
        Target::new("backup", ReadyService::new(())),
    ])
    .build()
    .unwrap();
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
