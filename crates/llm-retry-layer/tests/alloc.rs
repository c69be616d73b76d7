//! A first-try success through the retry layer allocates nothing (counted by dhat).

use llm_testkit::{ReadyService, count_allocations};
use tower::Layer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn first_try_success_allocates_nothing() {
    let svc = llm_retry_layer::RetryLayer::standard().layer(ReadyService::new(()));
    assert_eq!(count_allocations(svc, 10_000), 0);
}
