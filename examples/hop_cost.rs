//! Runs N calls through one layer, each polled once on its success path (as `benches/hops.rs`
//! does), for counting instructions under callgrind: wall-clock nanoseconds on a shared VM
//! move by a third between runs, instruction counts repeat exactly.
//!
//! `bash benches/instructions.sh hops` builds this and prints instructions per call.
//!
//! Usage: `hop_cost <contender> <N>`, contenders `ours` (`RetryLayer::standard()`),
//! `ours-no-budget`, `tower` (tower's retry, no budget), `breaker`, `fallback` (two targets,
//! the first answers), `ratelimit` (tokio clock, reject mode), `stack` (fallback over retry →
//! breaker → rate limit), `bare` (the inner service alone) and `record` (one counter
//! recorded through the `metrics` facade, no layer).
//!
//! With `RECORDER=prometheus` in the environment, a Prometheus recorder
//! (`metrics-exporter-prometheus`, as the gateway's `/metrics` has) is installed first: what
//! the layers' metrics cost with a real recorder. Without it, they record into the `metrics`
//! facade's no-op recorder.

use std::task::{Context, Waker};

use llm_testkit::ReadyService;
use llm_tower::prelude::*;
use tower::{Layer, Service};

// The benches' own `hop` and tower policy: the counts describe what criterion times.
#[path = "../benches/support/mod.rs"]
mod support;
use support::{RetryErrors, hop};

fn run<S: Service<u32, Response = ()>>(mut svc: S, n: u64)
where
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        hop(&mut svc, &mut cx);
    }
}

/// The benches' limit: one no loop reaches, in reject mode.
fn limiter() -> RateLimitLayer {
    RateLimitLayer::new(support::unlimited()).expect("valid")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let contender = args.next().expect("a contender");
    let n: u64 = args.next().and_then(|n| n.parse().ok()).expect("N");
    let runtime = support::runtime();
    let _guard = runtime.enter();
    if std::env::var("RECORDER").as_deref() == Ok("prometheus") {
        // NOTE: built and set, not `install_recorder()`: that one also starts an upkeep
        // thread, whose instructions callgrind would count.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        metrics::set_global_recorder(recorder).expect("the only recorder");
    }
    let instant = ReadyService::new(());
    match contender.as_str() {
        "ours" => run(RetryLayer::standard().layer(instant), n),
        "ours-no-budget" => run(
            RetryLayer::builder()
                .no_budget()
                .build()
                .expect("valid")
                .layer(instant),
            n,
        ),
        "tower" => run(
            tower::retry::RetryLayer::new(RetryErrors { left: 3 }).layer(instant),
            n,
        ),
        "breaker" => run(BreakerLayer::standard().layer(instant), n),
        "fallback" => run(
            Fallback::builder(vec![
                Target::new("primary", instant),
                Target::new("backup", instant),
            ])
            .build()
            .expect("valid"),
            n,
        ),
        "ratelimit" => run(limiter().layer(instant), n),
        "stack" => {
            let target = |name: &'static str| {
                let limited = limiter().layer(instant);
                let stack = RetryLayer::standard().layer(BreakerLayer::standard().layer(limited));
                Target::new(name, stack)
            };
            let fallback = Fallback::builder(vec![target("primary"), target("backup")]);
            run(fallback.build().expect("valid"), n);
        }
        // One counter record through the `metrics` facade, alone: what each of the layers'
        // records costs.
        "record" => {
            let series = llm_tower::metrics::CounterSeries::new(
                llm_tower::metrics::ATTEMPTS,
                &[("upstream", "primary"), ("outcome", "ok")],
            );
            for _ in 0..n {
                std::hint::black_box(&series).increment(1);
            }
        }
        _ => run(instant, n),
    }
}
