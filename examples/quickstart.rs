//! What the retry layer does with a misbehaving provider, in virtual time (no API keys, no
//! network, finishes at once). Run it with `cargo run --example quickstart`.
//!
//! Four scenes: a transient failure that recovers, a Retry-After honoured, an exhausted
//! quota that is never retried, and a sustained outage in which the retry budget keeps
//! 1,000 requests from becoming 4,000 upstream calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use llm_testkit::{ScriptedService, Step, TestResponse};
use llm_tower::prelude::*;
use llm_tower::retry::RetryBudget;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn layer(start: Instant) -> RetryLayer {
    RetryLayer::builder()
        .max_retries(3)
        .on_retry(move |e| {
            println!(
                "    t={:>6.3}s  attempt {} failed: {:<13} → retry in {:?}{}",
                start.elapsed().as_secs_f64(),
                e.attempt - 1,
                e.kind.as_str(),
                e.delay,
                e.retry_after
                    .map(|d| format!(" (server asked for {d:?})"))
                    .unwrap_or_default()
            );
        })
        .on_give_up(move |g| {
            println!(
                "    t={:>6.3}s  gave up after {} attempt(s): {} ({})",
                start.elapsed().as_secs_f64(),
                g.attempts,
                g.kind.as_str(),
                g.reason
            );
        })
        .build()
        .expect("valid retry settings")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Virtual time: every backoff below completes instantly but is measured exactly.
    tokio::time::pause();
    let start = Instant::now();

    println!("1. Overloaded, then a 500, then an answer:");
    let (provider, calls) = ScriptedService::<&str>::new([
        Step::fail(ErrorKind::Overloaded),
        Step::fail(ErrorKind::ServerError),
        Step::ok(TestResponse::new("Paris")),
    ]);
    let answer = layer(start)
        .layer(provider)
        .oneshot("Capital of France?")
        .await
        .unwrap();
    println!(
        "    → {:?} after {} upstream calls\n",
        answer.body(),
        calls.call_count()
    );

    println!("2. A 429 with Retry-After: 7s is waited out exactly:");
    let (provider, _) = ScriptedService::<&str>::new([
        Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(7)),
        Step::ok(TestResponse::new("42")),
    ]);
    let answer = layer(start)
        .layer(provider)
        .oneshot("The answer?")
        .await
        .unwrap();
    println!("    → {:?}\n", answer.body());

    println!("3. insufficient_quota is never retried (waiting cannot refill a wallet):");
    let (provider, calls) = ScriptedService::<&str>::new([Step::fail(ErrorKind::QuotaExceeded)]);
    let err = layer(start)
        .layer(provider)
        .oneshot("Hi")
        .await
        .unwrap_err();
    println!(
        "    → error {} after {} call\n",
        err.kind(),
        calls.call_count()
    );

    println!("4. A provider outage: 1,000 requests, each allowed 3 retries.");
    for (label, budget) in [
        ("without a retry budget", None),
        ("with a 10% retry budget", Some(0.1)),
    ] {
        let (provider, calls) = ScriptedService::<u32>::always(Step::fail(ErrorKind::ServerError));
        let builder = RetryLayer::builder().max_retries(3);
        let builder = match budget {
            Some(ratio) => builder.budget(RetryBudget::new(ratio, 0, 100).expect("valid budget")),
            None => builder.no_budget(),
        };
        let svc = builder
            .build()
            .expect("valid retry settings")
            .layer(provider);
        let failed = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..1_000)
            .map(|i| {
                let (svc, failed) = (svc.clone(), failed.clone());
                tokio::spawn(async move {
                    if svc.oneshot(i).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("request task");
        }
        println!(
            "    {label:<24} {} upstream calls for {} failed requests",
            calls.call_count(),
            failed.load(Ordering::Relaxed)
        );
    }
}
