//! A call through a closed breaker allocates nothing (counted by dhat).

use llm_testkit::{ReadyService, count_allocations};
use tower::Layer;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn closed_path_allocates_nothing() {
    let svc = llm_breaker_layer::BreakerLayer::standard().layer(ReadyService::new(()));
    assert_eq!(count_allocations(svc, 10_000), 0);
}
