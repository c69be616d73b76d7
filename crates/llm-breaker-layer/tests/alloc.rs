//! A call through a closed breaker allocates nothing (counted by dhat).

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use llm_breaker_layer::BreakerLayer;
use llm_core::{LlmError, ObserveEnd, Outcome, ResponseOutcome};
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

struct Pong;
impl ResponseOutcome for Pong {
    fn response_outcome(&self) -> Outcome {
        Outcome::success()
    }
}
impl ObserveEnd for Pong {}

#[derive(Clone)]
struct Instant;
impl Service<u32> for Instant {
    type Response = Pong;
    type Error = LlmError;
    type Future = Ready<Result<Pong, LlmError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: u32) -> Self::Future {
        ready(Ok(Pong))
    }
}

#[test]
fn closed_path_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut svc = BreakerLayer::standard().layer(Instant);
    runtime.block_on(async {
        for i in 0..100 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let before = dhat::HeapStats::get();
        for i in 0..10_000 {
            svc.ready().await.unwrap().call(i).await.unwrap();
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    });
}
