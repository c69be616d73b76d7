//! A first-try success through the retry layer allocates nothing (counted by dhat).

use std::future::{Ready, ready};
use std::task::{Context, Poll};

use llm_core::{LlmError, Outcome, RequestExtensions, ResponseMetadata, ResponseOutcome};
use llm_retry_layer::RetryLayer;
use tower::{Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Clone, Copy)]
struct Ping;
impl RequestExtensions for Ping {}

struct Pong;
impl ResponseOutcome for Pong {
    fn response_outcome(&self) -> Outcome {
        Outcome::success()
    }
}
impl ResponseMetadata for Pong {}

#[derive(Clone)]
struct Instant;
impl Service<Ping> for Instant {
    type Response = Pong;
    type Error = LlmError;
    type Future = Ready<Result<Pong, LlmError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Ping) -> Self::Future {
        ready(Ok(Pong))
    }
}

#[test]
fn first_try_success_allocates_nothing() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let svc = RetryLayer::standard().layer(Instant);
    runtime.block_on(async {
        // Warm up thread-locals and the runtime.
        for _ in 0..10 {
            svc.clone().oneshot(Ping).await.unwrap();
        }
        let before = dhat::HeapStats::get();
        let mut svc = svc.clone();
        for _ in 0..10_000 {
            svc.ready().await.unwrap().call(Ping).await.unwrap();
        }
        let after = dhat::HeapStats::get();
        dhat::assert_eq!(after.total_blocks - before.total_blocks, 0);
    });
}
