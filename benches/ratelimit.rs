//! Rate-limit admission beside governor, in one run: one admission check, the same with
//! both cores contending for one limiter, and a call through the layer.
//!
//! Run: `cargo bench --bench ratelimit --features fast-clock`. Results: BENCHMARKS.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod support;

use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use llm_testkit::ReadyService;
use llm_tower::ratelimit::{
    Limiter, LocalStore, QuantaClock, RateLimitLayer, RateLimitStore, StoreReply,
};
use support::{contended, hop, runtime, unlimited};
use tokio::time::Instant;
use tower::Layer;

fn ours() -> Limiter {
    Limiter::new(
        Some((1_000_000_000, Duration::from_secs(10), 1_000_000_000)),
        None,
        Instant::now(),
    )
}

fn governor() -> governor::DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(NonZeroU32::new(u32::MAX).unwrap()))
}

/// One admission through the TSC-clocked store: whether it admitted at once.
#[inline(always)]
fn admitted_fast(store: &LocalStore<QuantaClock>) -> bool {
    matches!(
        RateLimitStore::<()>::acquire(store, &(), 0, Duration::ZERO),
        StoreReply::Ready(Ok(_))
    )
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/check");
    let limiter = ours();
    group.bench_function(
        "llm-ratelimit-layer Limiter::acquire (clock read included)",
        |b| {
            b.iter(|| black_box(limiter.acquire(0, Instant::now(), Duration::ZERO).is_ok()));
        },
    );
    let fast = RateLimitLayer::builder()
        .config(unlimited())
        .clock(QuantaClock::new())
        .build()
        .unwrap();
    // NOTE: each contender hands the loop whether it admitted (`black_box` of a bool), as a
    // caller branching on it would: black-boxing our whole `StoreReply` (a grant, or a
    // rejection with its reason) forces it through memory and cost ~8 ns more here, where
    // governor's `Result<(), NotUntil>` is smaller.
    group.bench_function(
        "llm-ratelimit-layer LocalStore<QuantaClock>::acquire",
        |b| b.iter(|| black_box(admitted_fast(fast.store()))),
    );
    let clock = quanta::Clock::new();
    let origin = clock.raw();
    group.bench_function("quanta TSC clock read alone (as both use it)", |b| {
        b.iter(|| black_box(clock.delta_as_nanos(origin, clock.raw())));
    });
    let now = Instant::now();
    group.bench_function(
        "llm-ratelimit-layer Limiter::acquire (time given, no clock read)",
        |b| {
            b.iter(|| black_box(limiter.acquire(0, black_box(now), Duration::ZERO).is_ok()));
        },
    );
    group.bench_function("tokio::time::Instant::now() alone", |b| {
        b.iter(|| black_box(Instant::now()));
    });
    group.bench_function("std::time::Instant::now() alone", |b| {
        b.iter(|| black_box(StdInstant::now()));
    });
    let gov = governor();
    group.bench_function("governor check()", |b| {
        b.iter(|| black_box(gov.check().is_ok()));
    });
    group.finish();
}

/// Both cores hammer one limiter; the time reported is per admission.
fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/contended (2 threads)");
    let fast = RateLimitLayer::builder()
        .config(unlimited())
        .clock(QuantaClock::new())
        .build()
        .unwrap();
    group.bench_function("llm-ratelimit-layer LocalStore<QuantaClock>", |b| {
        contended(b, 2, || {
            black_box(admitted_fast(fast.store()));
        });
    });
    let limiter = ours();
    group.bench_function("llm-ratelimit-layer (tokio clock)", |b| {
        contended(b, 2, || {
            black_box(limiter.acquire(0, Instant::now(), Duration::ZERO).is_ok());
        });
    });
    let gov = governor();
    group.bench_function("governor", |b| {
        contended(b, 2, || {
            black_box(gov.check().is_ok());
        });
    });
    group.finish();
}

fn layer_hop(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("hop/ratelimit");
    let mut svc = RateLimitLayer::new(unlimited())
        .unwrap()
        .layer(ReadyService::new(()));
    group.bench_function("llm-ratelimit-layer (tokio clock)", |b| {
        b.iter(|| hop(&mut svc, &mut cx));
    });
    let fast = RateLimitLayer::builder()
        .config(unlimited())
        .clock(QuantaClock::new())
        .build()
        .unwrap();
    let mut svc = fast.layer(ReadyService::new(()));
    group.bench_function("llm-ratelimit-layer (QuantaClock)", |b| {
        b.iter(|| hop(&mut svc, &mut cx));
    });
    group.finish();
}

criterion_group!(benches, admission, contention, layer_hop);
criterion_main!(benches);
