//! The pick's cost: a call through a pool of 2 and of 8 members, each an instant service,
//! per strategy, beside `tower::balance::p2c` (peak-EWMA and pending-requests loads) in the
//! same run.
//!
//! Run: `cargo bench --bench balance`. Results and reading: BENCHMARKS.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod support;

use std::task::{Context, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use llm_testkit::ReadyService;
use llm_tower::balance::{Member, Pool, Strategy};
use support::{hop, runtime};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PeakEwma, PendingRequests};

const INSTANT: ReadyService<()> = ReadyService::new(());

fn pool(members: usize, strategy: Strategy) -> Pool<ReadyService<()>, u32> {
    Pool::builder(
        "bench",
        (0..members)
            .map(|i| Member::new(format!("member-{i}"), INSTANT))
            .collect(),
    )
    .strategy(strategy)
    .build()
    .unwrap()
}

fn picks(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    for members in [2, 8] {
        let mut group = c.benchmark_group(format!("pick/{members}"));
        group.bench_function("bare service", |b| {
            let mut bare = INSTANT;
            b.iter(|| hop(&mut bare, &mut cx));
        });
        for (name, strategy) in [
            ("llm-balance-layer (quota-aware)", Strategy::QuotaAware),
            ("llm-balance-layer (weighted)", Strategy::Weighted),
            (
                "llm-balance-layer (least in flight)",
                Strategy::LeastInFlight,
            ),
            ("llm-balance-layer (peak-EWMA p2c)", Strategy::PeakEwma),
        ] {
            let mut pool = pool(members, strategy);
            group.bench_function(name, |b| b.iter(|| hop(&mut pool, &mut cx)));
        }
        let mut sticky = Pool::<_, u32>::builder(
            "bench",
            (0..members)
                .map(|i| Member::new(format!("member-{i}"), INSTANT))
                .collect(),
        )
        .sticky_by(|request: &u32| Some(*request))
        .build()
        .unwrap();
        group.bench_function("llm-balance-layer (sticky, quota-aware)", |b| {
            b.iter(|| hop(&mut sticky, &mut cx));
        });

        let services = (0..members).map(|_| {
            PeakEwma::new(
                INSTANT,
                Duration::from_millis(100),
                10e9,
                CompleteOnResponse::default(),
            )
        });
        let mut ewma: Balance<_, u32> =
            Balance::new(ServiceList::new::<u32>(services.collect::<Vec<_>>()));
        group.bench_function("tower::balance::p2c (PeakEwma)", |b| {
            b.iter(|| hop(&mut ewma, &mut cx));
        });
        let services =
            (0..members).map(|_| PendingRequests::new(INSTANT, CompleteOnResponse::default()));
        let mut pending: Balance<_, u32> =
            Balance::new(ServiceList::new::<u32>(services.collect::<Vec<_>>()));
        group.bench_function("tower::balance::p2c (PendingRequests)", |b| {
            b.iter(|| hop(&mut pending, &mut cx));
        });
        group.finish();
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
