//! What llm-tower's layers do with misbehaving providers, in virtual time: no API keys, no
//! network, it finishes at once. Run it with `cargo run --example quickstart`.
//!
//! Scenes:
//! 1. a transient failure that recovers (retry);
//! 2. a `Retry-After: 7s` waited out exactly (retry);
//! 3. an exhausted quota: never retried, answered by the backup (fallback);
//! 4. a primary down for a minute: the breaker opens, calls go straight to the backup,
//!    a probe finds the primary healthy again and traffic returns (breaker + fallback);
//! 5. a burst of 12 calls against 6 requests per minute with a burst of 4: the first four go
//!    at once, the rest wait their turn in order (rate limit);
//! 6. a provider outage: 1,000 requests, 3 retries each; the retry budget keeps upstream
//!    calls to 1,100 where a plain retry makes 4,000.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
use llm_tower::breaker::State;
use llm_tower::prelude::*;
use llm_tower::ratelimit::Rate;
use llm_tower::retry::RetryBudget;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type Provider = BoxCloneService<TestRequest, TestResponse, LlmError>;

fn at(start: Instant) -> String {
    format!("t={:>7.3}s", start.elapsed().as_secs_f64())
}

fn retry(start: Instant) -> RetryLayer {
    RetryLayer::builder()
        .max_retries(3)
        .on_retry(move |e| {
            println!(
                "    {}  attempt {} failed: {:<13} → retry in {:?}{}",
                at(start),
                e.attempt - 1,
                e.kind.as_str(),
                e.delay,
                e.retry_after
                    .map(|d| format!(" (server asked for {d:?})"))
                    .unwrap_or_default()
            );
        })
        .build()
        .expect("valid retry settings")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Virtual time: every wait below completes instantly but is measured exactly.
    tokio::time::pause();
    let start = Instant::now();
    let ask = || TestRequest::new("gpt-4o").with_prompt("Capital of France?");

    println!("1. Overloaded, then a 500, then an answer:");
    let (provider, calls) = ScriptedService::<TestRequest>::new([
        Step::fail(ErrorKind::Overloaded),
        Step::fail(ErrorKind::ServerError),
        Step::ok(TestResponse::new("Paris")),
    ]);
    let answer = provider
        .with_retry(retry(start))
        .oneshot(ask())
        .await
        .unwrap();
    println!(
        "    → {:?} after {} upstream calls\n",
        answer.body(),
        calls.call_count()
    );

    println!("2. A 429 with Retry-After: 7s is waited out exactly:");
    let (provider, _) = ScriptedService::<TestRequest>::new([
        Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(7)),
        Step::ok(TestResponse::new("Paris")),
    ]);
    let answer = provider
        .with_retry(retry(start))
        .oneshot(ask())
        .await
        .unwrap();
    println!("    → {:?} at {}\n", answer.body(), at(start));

    println!("3. insufficient_quota is never retried; the backup answers:");
    let (openai, openai_calls) =
        ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::QuotaExceeded));
    let (openrouter, routed) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new(
        "Paris (via OpenRouter)",
    )));
    let chain = openai
        .with_retry(retry(start))
        .with_fallbacks(
            "openai",
            vec![
                Target::new("openrouter", openrouter.with_retry(retry(start)))
                    .model("openai/gpt-4o"),
            ],
        )
        .expect("a valid chain");
    let answer = chain.oneshot(ask()).await.unwrap();
    let meta = answer.metadata().expect("the chain records what it did");
    println!(
        "    → {:?} from {} (model sent: {}), {} call to openai\n",
        answer.body(),
        meta.target.as_deref().unwrap_or("?"),
        routed.calls()[0].request.model,
        openai_calls.call_count()
    );

    println!("4. The primary is down for a minute; its breaker sends traffic to the backup:");
    let recovers_at = Instant::now() + Duration::from_secs(60);
    let (primary, primary_calls) =
        ScriptedService::<TestRequest>::always(Step::from_fn(move || {
            if Instant::now() < recovers_at {
                Err(LlmError::new(ErrorKind::ServerError, "primary down"))
            } else {
                Ok(TestResponse::new("Paris (primary)"))
            }
        }));
    let (backup, _) =
        ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("Paris (backup)")));
    let breaker = BreakerLayer::builder()
        .config(BreakerConfig {
            open_jitter: 0.0,
            ..BreakerConfig::standard()
        })
        .name("primary")
        .on_state_change(move |c| {
            println!(
                "    {}  breaker {}: {} → {}",
                at(start),
                c.name.as_deref().unwrap_or(""),
                c.from,
                c.to
            );
        })
        .build()
        .expect("valid breaker settings");
    let health = breaker.handle();
    let quiet_retry = RetryLayer::builder()
        .max_retries(1)
        .no_budget()
        .build()
        .expect("valid retry settings");
    let primary: Provider = BoxCloneService::new(
        primary
            .with_breaker(breaker)
            .with_retry(quiet_retry.clone()),
    );
    let backup: Provider = BoxCloneService::new(backup.with_retry(quiet_retry));
    let chain = Fallback::builder(vec![
        Target::new("primary", primary),
        Target::new("backup", backup),
    ])
    .build()
    .expect("a valid chain");
    let mut served = [0u32; 2];
    for _ in 0..100 {
        let answer = chain.clone().oneshot(ask()).await.unwrap();
        served
            [usize::from(answer.metadata().and_then(|m| m.target.as_deref()) == Some("backup"))] +=
            1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "    → 100 requests over 100 s: {} answered by the primary, {} by the backup; the primary saw {} calls; breaker now {}\n",
        served[0],
        served[1],
        primary_calls.call_count(),
        match health.state() {
            State::Closed => "closed",
            other => other.as_str(),
        }
    );

    println!("5. A burst of 12 calls against 6 requests per minute (burst 4):");
    let limit = RateLimitLayer::new(RateLimitConfig {
        requests: Some(Rate::per_minute(6).burst(4)),
        max_wait: Duration::from_secs(120),
        ..RateLimitConfig::default()
    })
    .expect("valid limits");
    let (provider, calls) =
        ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
    let svc = provider.with_rate_limit(limit);
    let burst_start = Instant::now();
    let tasks: Vec<_> = (0..12)
        .map(|_| tokio::spawn(svc.clone().oneshot(ask())))
        .collect();
    for task in tasks {
        task.await.expect("task").expect("admitted");
    }
    let offsets: Vec<String> = calls
        .call_times()
        .iter()
        .map(|t| format!("{}s", (*t - burst_start).as_secs()))
        .collect();
    println!("    → sent at {}\n", offsets.join(", "));

    println!("6. A provider outage: 1,000 requests, each allowed 3 retries.");
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
