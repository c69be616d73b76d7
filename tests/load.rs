//! 10,000 concurrent requests through the full stack — fallback over two targets, each
//! `Retry → Breaker → RateLimit → Provider` — against mock providers over loopback HTTP with
//! mixed faults, complete and streaming. Nothing deadlocks, every request ends with an answer
//! or a classified error, and nothing is left behind: no limiter slot or waiter, no probe
//! slot, no call in flight at the mock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use llm_providers::{ChatRequest, ChatStream, Provider, ProviderKind, Timeouts};
use llm_testkit::server::{MockProvider, Plan};
use llm_tower::breaker::{BreakerHandle, BreakerLayer};
use llm_tower::fallback::{Fallback, Target};
use llm_tower::ratelimit::{RateLimitConfig, RateLimitHandle, RateLimitLayer};
use llm_tower::retry::{RetryConfig, RetryLayer};
use llm_tower::{ErrorKind, LlmError};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

const REQUESTS: usize = 10_000;
const KEY: &str = "load-key";

/// One in five requests to the primary fails, in every way the mock knows how to.
const PRIMARY_PLAN: &str = r#"
[[rule]]
stream = true
sequence = [
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "cut_after", chunks = 3 },
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "malformed_at", chunk = 2 },
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "error_after", chunks = 1 },
]
repeat = true

[[rule]]
sequence = [
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "status", status = 500 },
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "rate_limited", retry_after = "20ms", format = "millis" },
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "overloaded" },
  { fault = "ok" }, { fault = "ok" }, { fault = "ok" }, { fault = "ok" },
  { fault = "reset" },
]
repeat = true
"#;

struct Stack {
    breaker: BreakerHandle,
    limiter: RateLimitHandle,
    chat: BoxCloneSyncService<ChatRequest, llm_providers::ChatResponse, LlmError>,
    stream: BoxCloneSyncService<ChatRequest, ChatStream, LlmError>,
}

fn stack(mock: &MockProvider) -> Stack {
    let timeouts = Timeouts {
        first_token: Duration::from_secs(10),
        total: Duration::from_secs(30),
        ..Timeouts::default()
    };
    let provider = Provider::builder(ProviderKind::OpenAi)
        .base_url(format!("{}/v1", mock.base_url()))
        .api_key(KEY)
        .timeouts(timeouts)
        .build()
        .unwrap();
    let mut retry = RetryConfig::standard();
    retry.base_delay = Duration::from_millis(5);
    retry.max_delay = Duration::from_millis(50);
    let retry = RetryLayer::new(retry).unwrap();
    let breaker = BreakerLayer::standard();
    let limiter = RateLimitLayer::new(RateLimitConfig {
        max_concurrency: Some(64),
        max_wait: Duration::from_secs(60),
        ..RateLimitConfig::default()
    })
    .unwrap();
    Stack {
        breaker: breaker.handle(),
        limiter: limiter.handle(),
        chat: BoxCloneSyncService::new(retry.layer(breaker.layer(limiter.layer(provider.clone())))),
        stream: BoxCloneSyncService::new(
            retry.layer(breaker.layer(limiter.layer(provider.streaming()))),
        ),
    }
}

/// Peak resident memory of this process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_end_classified_and_leave_nothing_behind() {
    let primary = MockProvider::builder()
        .plan(Plan::from_toml(PRIMARY_PLAN).unwrap())
        .answer_tokens(20)
        .api_key(KEY)
        .start()
        .await
        .unwrap();
    let backup = MockProvider::builder()
        .answer_tokens(20)
        .api_key(KEY)
        .start()
        .await
        .unwrap();
    let (a, b) = (stack(&primary), stack(&backup));
    let chat = Fallback::builder(vec![
        Target::new("primary", a.chat.clone()),
        Target::new("backup", b.chat.clone()),
    ])
    .build()
    .unwrap();
    let stream = Fallback::builder(vec![
        Target::new("primary", a.stream.clone()),
        Target::new("backup", b.stream.clone()),
    ])
    .build()
    .unwrap();

    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let request = ChatRequest::new("gpt-4o-mini").user(format!("request {i}"));
        if i % 4 == 0 {
            let stream = stream.clone();
            tasks.spawn(async move {
                match stream.oneshot(request).await {
                    Ok(mut chunks) => {
                        while let Some(chunk) = chunks.next().await {
                            if let Err(err) = chunk {
                                return Err(err.kind());
                            }
                        }
                        Ok(())
                    }
                    Err(err) => Err(err.kind()),
                }
            });
        } else {
            let chat = chat.clone();
            tasks.spawn(async move { chat.oneshot(request).await.map(drop).map_err(|e| e.kind()) });
        }
    }
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let all = tokio::time::timeout(Duration::from_secs(240), async {
        while let Some(done) = tasks.join_next().await {
            let key = match done.expect("no request task panics") {
                Ok(()) => "ok".to_owned(),
                Err(kind) => kind.as_str().to_owned(),
            };
            *outcomes.entry(key).or_default() += 1;
        }
    })
    .await;
    assert!(
        all.is_ok(),
        "deadlock: requests still running after 240 s: {outcomes:?}"
    );
    let elapsed = started.elapsed();
    let rss_after = peak_rss_kib();

    assert_eq!(outcomes.values().sum::<usize>(), REQUESTS, "{outcomes:?}");
    // Complete calls are answered by the backup when the primary fails; streams broken after
    // their first chunk end in-band as StreamInterrupted, and nothing else.
    for (outcome, count) in &outcomes {
        assert!(
            outcome == "ok" || outcome == ErrorKind::StreamInterrupted.as_str(),
            "{count} requests ended {outcome}: {outcomes:?}"
        );
    }
    assert!(outcomes["ok"] >= REQUESTS * 9 / 10, "{outcomes:?}");

    // Nothing left behind.
    for (name, t) in [("primary", &a), ("backup", &b)] {
        assert_eq!(
            t.limiter.in_flight(),
            Some(0),
            "{name}: a concurrency slot leaked"
        );
        assert_eq!(t.limiter.waiting(), 0, "{name}: a waiter leaked");
        assert_eq!(
            t.breaker.metrics().probes_in_flight,
            0,
            "{name}: a probe slot leaked"
        );
    }
    let served = primary.attempts().len() + backup.attempts().len();
    eprintln!(
        "{REQUESTS} requests in {elapsed:?}: {outcomes:?}; upstream attempts {served} \
         (primary {}, backup {}); peak RSS {rss_before:?} KiB before, {rss_after:?} KiB after",
        primary.attempts().len(),
        backup.attempts().len()
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        assert!(
            after - before < 512 * 1024,
            "memory grew by {} KiB",
            after - before
        );
    }
}
