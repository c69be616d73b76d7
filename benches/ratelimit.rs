//! Rate-limit admission beside governor, in one run: one admission check, the same with
//! both cores contending for one limiter, and a call through the layer.
//!
//! Run: `cargo bench --bench ratelimit`. Results and reading: BENCHMARKS.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::future::Future;
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant as StdInstant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use llm_testkit::ReadyService;
use llm_tower::ratelimit::{
    Limiter, Mode, QuantaClock, Rate, RateLimitConfig, RateLimitLayer, RateLimitStore,
};
use tokio::time::Instant;
use tower::{Layer, Service};

/// A limit no benchmark loop reaches: every check is an admission, the success path.
const HUGE: u32 = u32::MAX;

fn ours() -> Limiter {
    Limiter::new(
        Some((u64::from(HUGE), Duration::from_secs(1), u64::from(HUGE))),
        None,
        Instant::now(),
    )
}

fn governor() -> governor::DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(NonZeroU32::new(HUGE).unwrap()))
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("ratelimit/check");
    let limiter = ours();
    group.bench_function(
        "llm-ratelimit-layer Limiter::acquire (clock read included)",
        |b| {
            b.iter(|| black_box(limiter.acquire(0, Instant::now(), Duration::ZERO)).is_ok());
        },
    );
    let config = RateLimitConfig {
        requests: Some(Rate {
            limit: u64::from(HUGE),
            per: Duration::from_secs(10),
            burst: None,
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let fast = RateLimitLayer::builder()
        .config(config)
        .build_with_clock(QuantaClock::new())
        .unwrap()
        .handle();
    group.bench_function(
        "llm-ratelimit-layer LocalStore<QuantaClock>::acquire",
        |b| {
            b.iter(|| {
                black_box(RateLimitStore::<()>::acquire(
                    fast.store(),
                    &(),
                    0,
                    Duration::ZERO,
                ))
            });
        },
    );
    let limiter = ours();
    let now = Instant::now();
    group.bench_function(
        "llm-ratelimit-layer Limiter::acquire (time given, no clock read)",
        |b| {
            b.iter(|| black_box(limiter.acquire(0, black_box(now), Duration::ZERO)).is_ok());
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
        b.iter(|| black_box(gov.check()).is_ok());
    });
    group.finish();
}

/// Both cores hammer one limiter; the time reported is per admission.
fn contention(c: &mut Criterion) {
    const THREADS: usize = 2;
    let mut group = c.benchmark_group("ratelimit/contended (2 threads)");
    group.bench_function("llm-ratelimit-layer LocalStore<QuantaClock>", |b| {
        let config = RateLimitConfig {
            requests: Some(Rate {
                limit: u64::from(HUGE),
                per: Duration::from_secs(10),
                burst: None,
            }),
            mode: Mode::Reject,
            ..RateLimitConfig::default()
        };
        let handle = RateLimitLayer::builder()
            .config(config)
            .build_with_clock(QuantaClock::new())
            .unwrap()
            .handle();
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS as u64);
            let start = StdInstant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let handle = handle.clone();
                    s.spawn(move || {
                        for _ in 0..per_thread {
                            black_box(RateLimitStore::<()>::acquire(
                                handle.store(),
                                &(),
                                0,
                                Duration::ZERO,
                            ));
                        }
                    });
                }
            });
            start.elapsed() / THREADS as u32
        });
    });
    group.bench_function("llm-ratelimit-layer (tokio clock)", |b| {
        let limiter = Arc::new(ours());
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS as u64);
            let start = StdInstant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let limiter = limiter.clone();
                    s.spawn(move || {
                        for _ in 0..per_thread {
                            black_box(limiter.acquire(0, Instant::now(), Duration::ZERO)).ok();
                        }
                    });
                }
            });
            start.elapsed() / THREADS as u32
        });
    });
    group.bench_function("governor", |b| {
        let gov = Arc::new(governor());
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(THREADS as u64);
            let start = StdInstant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let gov = gov.clone();
                    s.spawn(move || {
                        for _ in 0..per_thread {
                            black_box(gov.check()).ok();
                        }
                    });
                }
            });
            start.elapsed() / THREADS as u32
        });
    });
    group.finish();
}

fn hop(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let config = RateLimitConfig {
        requests: Some(Rate {
            limit: u64::from(HUGE),
            per: Duration::from_secs(10),
            burst: None,
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let mut svc = RateLimitLayer::new(config)
        .unwrap()
        .layer(ReadyService::new(()));
    let mut group = c.benchmark_group("hop/ratelimit");
    group.bench_function("llm-ratelimit-layer (requests per interval)", |b| {
        b.iter(|| {
            assert!(matches!(
                Service::<u32>::poll_ready(&mut svc, &mut cx),
                Poll::Ready(Ok(()))
            ));
            let fut = std::pin::pin!(svc.call(black_box(7)));
            assert!(matches!(Future::poll(fut, &mut cx), Poll::Ready(Ok(()))));
        });
    });
    group.finish();
}

criterion_group!(benches, admission, contention, hop);
criterion_main!(benches);
