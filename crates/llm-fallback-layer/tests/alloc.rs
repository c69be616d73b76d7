//! When the first target answers, a call through the fallback allocates nothing.

use llm_fallback_layer::{Fallback, Target};
use llm_testkit::{ReadyService, count_allocations};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn primary_success_allocates_nothing() {
    let svc = Fallback::builder(vec![
        Target::new("primary", ReadyService::new(())),
        Target::new("backup", ReadyService::new(())),
    ])
    .build()
    .unwrap();
    assert_eq!(count_allocations(svc, 10_000), 0);
}
