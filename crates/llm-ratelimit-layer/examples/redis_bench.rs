//! Admission through `RedisStore` against a `redis-server` on loopback: latency percentiles
//! and throughput, one instance and four (each with its own runtime and connection, as four
//! gateway processes would have). It starts its own `redis-server` on a free port.
//!
//! ```text
//! cargo run --release -p llm-ratelimit-layer --features redis --example redis_bench
//! ```

use std::time::{Duration, Instant};

use llm_ratelimit_layer::{
    FailurePolicy, Mode, Rate, RateLimitConfig, RateLimitLayer, RateLimitStore, RedisConfig,
    StoreReply,
};

const SECONDS: u64 = 5;
const TASKS_PER_INSTANCE: usize = 8;

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One instance: `tasks` concurrent callers admitting as fast as they can for `SECONDS`.
fn instance(url: String, tasks: usize) -> Vec<Duration> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let mut redis = RedisConfig::new(url).with_key_prefix("bench:");
        redis.timeout = Duration::from_secs(1);
        let layer = RateLimitLayer::builder()
            .config(RateLimitConfig {
                requests: Some(Rate {
                    limit: 1_000_000_000,
                    per: Duration::from_secs(1),
                    burst: Some(1_000_000_000),
                }),
                mode: Mode::Reject,
                on_redis_failure: FailurePolicy::Closed,
                ..RateLimitConfig::default()
            })
            .redis(&redis)
            .build()
            .expect("valid settings");
        let until = Instant::now() + Duration::from_secs(SECONDS);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..tasks {
            let layer = layer.clone();
            set.spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let result = match layer.store().acquire(&(), 0, Duration::ZERO) {
                        StoreReply::Ready(result) => result,
                        StoreReply::Pending(future) => future.await,
                    };
                    result.expect("admitted");
                    latencies.push(started.elapsed());
                }
                latencies
            });
        }
        let mut all = Vec::new();
        while let Some(latencies) = set.join_next().await {
            all.extend(latencies.expect("no task panics"));
        }
        all
    })
}

fn report(name: &str, instances: usize, tasks: usize, url: &str) {
    let threads: Vec<_> = (0..instances)
        .map(|_| {
            let url = url.to_owned();
            std::thread::spawn(move || instance(url, tasks))
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("no instance panics"))
        .collect();
    latencies.sort_unstable();
    println!(
        "| {name} | {} | {:.0} | {:.1} µs | {:.1} µs | {:.1} µs |",
        instances * tasks,
        latencies.len() as f64 / SECONDS as f64,
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.9).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
    );
}

fn main() {
    let server = llm_testkit::RedisServer::start().expect("redis-server on the PATH");
    let url = server.url();
    println!("| instances | callers in all | admissions/s | p50 | p90 | p99 |");
    println!("|---|---|---|---|---|---|");
    report("1 instance, 1 caller", 1, 1, &url);
    report("1 instance", 1, TASKS_PER_INSTANCE, &url);
    report("4 instances", 4, TASKS_PER_INSTANCE, &url);
}
