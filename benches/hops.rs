//! Per-layer success-path cost ("hop"): each layer around an inner service whose future is
//! ready at once, compared in the same run with the bare service and with the alternatives
//! users would pick instead.
//!
//! Run: `cargo bench --bench hops`. Results and reading: BENCHMARKS.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod support;

use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use llm_testkit::ReadyService;
use llm_tower::prelude::*;
use std::time::Duration;
use support::{RetryErrors, hop, runtime, unlimited};

use tower::{Layer, Service, ServiceExt};

/// The inner service: always ready, answers at once with `()`, so the bench measures the
/// layers and not the moving of a response.
const INSTANT: ReadyService<()> = ReadyService::new(());

/// The request: a number, which carries no extensions and is free to copy — the bench
/// measures the layer, not the request.
type Ping = u32;

/// tower's retry with its own retry budget (`TpsBudget`), as `RetryLayer::standard()` has
/// one: a success deposits, a retry withdraws. The policy holds the budget in an `Arc`, so
/// that every clone of the layer shares it — as ours does.
#[derive(Clone)]
struct RetryWithBudget {
    left: u32,
    budget: Arc<tower::retry::budget::TpsBudget>,
}
impl tower::retry::Policy<Ping, (), LlmError> for RetryWithBudget {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut Ping, result: &mut Result<(), LlmError>) -> Option<Self::Future> {
        use tower::retry::budget::Budget;
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(err) if err.kind().is_retryable() && self.left > 0 && self.budget.withdraw() => {
                self.left -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &Ping) -> Option<Ping> {
        Some(*req)
    }
}

/// The same policy for services whose errors are boxed (behind tower's `Buffer`).
#[derive(Clone, Copy)]
struct RetryBoxed {
    left: u32,
}
impl tower::retry::Policy<Ping, (), tower::BoxError> for RetryBoxed {
    type Future = Ready<()>;
    fn retry(
        &mut self,
        _: &mut Ping,
        result: &mut Result<(), tower::BoxError>,
    ) -> Option<Self::Future> {
        if result.is_err() && self.left > 0 {
            self.left -= 1;
            return Some(ready(()));
        }
        None
    }
    fn clone_request(&mut self, req: &Ping) -> Option<Ping> {
        Some(*req)
    }
}

fn hop_retry(c: &mut Criterion) {
    // The tower futures here never register a timer on the success path, so no runtime
    // is needed; a runtime context is entered anyway so that nothing could panic.
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("hop/retry");
    let mut bare = INSTANT;
    group.bench_function("bare service", |b| b.iter(|| hop(&mut bare, &mut cx)));

    let mut ours = RetryLayer::standard().layer(INSTANT);
    group.bench_function("llm-retry-layer (standard, with budget)", |b| {
        b.iter(|| hop(&mut ours, &mut cx));
    });

    let no_budget = RetryLayer::builder().no_budget().build().unwrap();
    let mut ours_no_budget = no_budget.layer(INSTANT);
    group.bench_function("llm-retry-layer (no budget)", |b| {
        b.iter(|| hop(&mut ours_no_budget, &mut cx));
    });

    let mut tower_retry = tower::retry::RetryLayer::new(RetryErrors { left: 3 }).layer(INSTANT);
    group.bench_function("tower::retry::Retry", |b| {
        b.iter(|| hop(&mut tower_retry, &mut cx));
    });

    // The same budget as ours: a 20 % retry ratio over 10 s, at least 10 retries a second.
    let budget = Arc::new(tower::retry::budget::TpsBudget::new(
        Duration::from_secs(10),
        10,
        0.2,
    ));
    let mut tower_budget =
        tower::retry::RetryLayer::new(RetryWithBudget { left: 3, budget }).layer(INSTANT);
    group.bench_function("tower::retry::Retry (with TpsBudget)", |b| {
        b.iter(|| hop(&mut tower_budget, &mut cx));
    });
    group.finish();
}

/// failsafe is not a tower layer: the thinnest tower service around its futures-aware
/// breaker, so that it does the same work per call as the layers beside it.
#[derive(Clone)]
struct Failsafe<S, B> {
    inner: S,
    breaker: B,
}

impl<S, B> Service<Ping> for Failsafe<S, B>
where
    S: Service<Ping, Response = (), Error = LlmError>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = ();
    type Error = failsafe::Error<LlmError>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: Ping) -> Self::Future {
        self.breaker.call(self.inner.call(req))
    }
}

fn hop_breaker(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("hop/breaker");
    let mut bare = INSTANT;
    group.bench_function("bare service", |b| b.iter(|| hop(&mut bare, &mut cx)));

    // Closed path; each configured to trip on 5 failures in a row or a 50 % failure rate.
    let mut ours = BreakerLayer::standard().layer(INSTANT);
    group.bench_function("llm-breaker-layer (standard)", |b| {
        b.iter(|| hop(&mut ours, &mut cx));
    });

    let mut failsafe = Failsafe {
        inner: INSTANT,
        breaker: failsafe::Config::new().build(),
    };
    group.bench_function("failsafe (default policy)", |b| {
        b.iter(|| hop(&mut failsafe, &mut cx));
    });

    let resilience = tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(20)
        .minimum_number_of_calls(10)
        .build()
        .unwrap();
    let mut resilience = resilience.layer(INSTANT);
    group.bench_function("tower-resilience-circuitbreaker", |b| {
        b.iter(|| hop(&mut resilience, &mut cx));
    });
    group.finish();
}

fn hop_fallback(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());

    let mut group = c.benchmark_group("hop/fallback");
    let mut bare = INSTANT;
    group.bench_function("bare service", |b| b.iter(|| hop(&mut bare, &mut cx)));

    // The primary answers: the success path of a two-target chain.
    let mut ours = Fallback::builder(vec![
        Target::new("primary", INSTANT),
        Target::new("backup", INSTANT),
    ])
    .build()
    .unwrap();
    group.bench_function("llm-fallback-layer (primary answers)", |b| {
        b.iter(|| hop(&mut ours, &mut cx));
    });
    group.finish();
}

/// The recommended stack: a two-target fallback over, per target, retry → breaker → rate
/// limit → provider; beside it, tower's own retry over its rate limit (behind a `Buffer`,
/// since `tower::limit::RateLimit` is not `Clone`) needs a runtime, so it is measured by
/// awaiting, as is ours in the second line.
fn full_stack(c: &mut Criterion) {
    use tower::util::BoxCloneService;

    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let limits = unlimited();
    let target = |name: &'static str| {
        let limited = RateLimitLayer::new(limits.clone()).unwrap().layer(INSTANT);
        let stack = RetryLayer::standard().layer(BreakerLayer::standard().layer(limited));
        Target::new(name, stack)
    };
    let mut ours = Fallback::builder(vec![target("primary"), target("backup")])
        .build()
        .unwrap();

    let mut group = c.benchmark_group("stack");
    group.bench_function(
        "llm-tower: fallback[retry → breaker → rate limit] (polled once)",
        |b| {
            b.iter(|| hop(&mut ours, &mut cx));
        },
    );
    group.bench_function("llm-tower: same stack (awaited on a runtime)", |b| {
        b.iter(|| {
            rt.block_on(async {
                ours.ready()
                    .await
                    .unwrap()
                    .call(black_box(7))
                    .await
                    .unwrap();
            });
        });
    });
    let mut tower_stack: BoxCloneService<Ping, (), tower::BoxError> = BoxCloneService::new(
        ServiceBuilder::new()
            .retry(RetryBoxed { left: 3 })
            .buffer(1024)
            .rate_limit(u64::from(u32::MAX), Duration::from_secs(10))
            .service(INSTANT),
    );
    group.bench_function(
        "tower: retry → buffer → rate_limit (awaited on a runtime)",
        |b| {
            b.iter(|| {
                rt.block_on(async {
                    tower_stack
                        .ready()
                        .await
                        .unwrap()
                        .call(black_box(7))
                        .await
                        .unwrap();
                });
            });
        },
    );
    group.finish();
}

/// The same stack (polled once) recording its metrics into nothing — the `metrics` facade's
/// no-op recorder, what a user without a recorder gets — and into a Prometheus recorder
/// (`metrics-exporter-prometheus`, as the gateway's `/metrics`), side by side.
fn stack_metrics(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let limits = unlimited();
    let target = |name: &'static str| {
        let limited = RateLimitLayer::builder()
            .name(name)
            .config(limits.clone())
            .build()
            .unwrap()
            .layer(INSTANT);
        let breaker = BreakerLayer::builder().name(name).build().unwrap();
        let retry = RetryLayer::builder().name(name).build().unwrap();
        Target::new(name, retry.layer(breaker.layer(limited)))
    };
    let mut ours = Fallback::builder(vec![target("primary"), target("backup")])
        .build()
        .unwrap();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();

    let mut group = c.benchmark_group("stack/metrics");
    group.bench_function("no recorder (the facade's no-op)", |b| {
        b.iter(|| hop(&mut ours, &mut cx));
    });
    group.bench_function("metrics-exporter-prometheus recorder", |b| {
        metrics::with_local_recorder(&prometheus, || b.iter(|| hop(&mut ours, &mut cx)));
    });
    group.finish();
}

/// One call awaited on a current-thread runtime: for layers whose futures box and await
/// (tower-resilience, tower's buffer), and for ours beside them on the same footing.
fn awaited<S>(rt: &tokio::runtime::Runtime, svc: &mut S)
where
    S: Service<Ping, Response = ()>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        svc.ready().await.unwrap().call(black_box(7)).await.unwrap();
    });
}

/// Retry and rate limit, awaited, beside tower-resilience's (which box every call's future)
/// and tower's rate limit (behind the `Buffer` it needs to be `Clone`).
fn awaited_alternatives(c: &mut Criterion) {
    let rt = runtime();
    let _guard = rt.enter();

    let mut group = c.benchmark_group("awaited/retry");
    let mut ours = RetryLayer::standard().layer(INSTANT);
    group.bench_function("llm-retry-layer (standard)", |b| {
        b.iter(|| awaited(&rt, &mut ours));
    });
    let mut resilience = tower_resilience_retry::RetryLayer::<Ping, (), LlmError>::builder()
        .max_attempts(4)
        .build()
        .layer(INSTANT);
    group.bench_function("tower-resilience-retry", |b| {
        b.iter(|| awaited(&rt, &mut resilience));
    });
    group.finish();

    let mut group = c.benchmark_group("awaited/ratelimit");
    let limits = unlimited();
    let mut ours = RateLimitLayer::new(limits).unwrap().layer(INSTANT);
    group.bench_function("llm-ratelimit-layer (tokio clock)", |b| {
        b.iter(|| awaited(&rt, &mut ours));
    });
    let mut resilience = tower_resilience_ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(1_000_000_000)
        .refresh_period(Duration::from_secs(10))
        .timeout_duration(Duration::ZERO)
        .build()
        .unwrap()
        .layer(INSTANT);
    group.bench_function("tower-resilience-ratelimiter", |b| {
        b.iter(|| awaited(&rt, &mut resilience));
    });
    let mut tower_limit = ServiceBuilder::new()
        .buffer(1024)
        .rate_limit(1_000_000_000, Duration::from_secs(10))
        .service(INSTANT);
    group.bench_function("tower buffer → limit::RateLimit", |b| {
        b.iter(|| awaited(&rt, &mut tower_limit));
    });
    group.finish();
}

criterion_group!(
    benches,
    hop_retry,
    hop_breaker,
    hop_fallback,
    full_stack,
    stack_metrics,
    awaited_alternatives
);
criterion_main!(benches);
