//! `count_allocations` sees allocations: a service that boxes every future is caught.

use llm_testkit::{ScriptedService, Step, TestResponse, count_allocations};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn a_boxing_service_is_counted() {
    let (svc, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::EMPTY));
    assert!(
        count_allocations(svc, 1_000) >= 1_000,
        "one boxed future per call at least"
    );
}
