//! A call answered by the member picked first allocates nothing, whatever the strategy.

use llm_balance_layer::{Member, Pool, Strategy};
use llm_testkit::{ReadyService, count_allocations};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[test]
fn a_success_allocates_nothing_with_any_strategy_or_a_sticky_key() {
    // NOTE: one test: `count_allocations` runs dhat's profiler, once per test binary.
    let mut pools = Vec::new();
    for strategy in [
        Strategy::QuotaAware,
        Strategy::Weighted,
        Strategy::LeastInFlight,
        Strategy::PeakEwma,
    ] {
        let members = (0..8)
            .map(|i| Member::new(format!("member-{i}"), ReadyService::new(())))
            .collect();
        pools.push(Pool::<_, u32>::builder("pool", members).strategy(strategy));
    }
    let sticky = Pool::<_, u32>::builder(
        "sticky",
        (0..8)
            .map(|i| Member::new(format!("member-{i}"), ReadyService::new(())))
            .collect(),
    )
    .sticky_by(|request: &u32| Some(*request % 16));
    let pools: Vec<_> = pools.into_iter().map(|b| b.build().unwrap()).collect();
    let sticky = sticky.build().unwrap();
    let mut total = 0;
    for pool in pools {
        total += count_allocations(pool, 2_000);
    }
    total += count_allocations(sticky, 2_000);
    assert_eq!(total, 0);
}
