//! `RedisStore` against a real `redis-server` (the test kit's `RedisServer`), started by each
//! test on a free loopback port and stopped with it. Without the binary the tests say so and pass — unless
//! `LLM_TOWER_REQUIRE_REDIS` is set (CI sets it), which turns a missing binary into a failure.
//!
//! Time is real here (Redis's clock decides); the waits are a few hundred milliseconds.

use std::time::{Duration, Instant};

use llm_core::{LimitReason, LocalRateLimited, RateLimitInfo};
use llm_ratelimit_layer::{
    FailurePolicy, Grant, Mode, Rate, RateLimitConfig, RateLimitLayer, RateLimitStore, RedisConfig,
    RedisStore, StoreReply,
};
use llm_testkit::RedisServer;

/// Where a test's limiters share their state, and what they do while Redis is down.
#[derive(Clone)]
struct Shared {
    redis: RedisConfig,
    policy: FailurePolicy,
}

fn redis(server: &RedisServer, prefix: &str, policy: FailurePolicy) -> Shared {
    let redis = RedisConfig::new(server.url()).with_key_prefix(format!("test:{prefix}:"));
    Shared { redis, policy }
}

fn limiter(
    config: RateLimitConfig,
    shared: &Shared,
) -> RateLimitLayer<RedisStore<()>, llm_ratelimit_layer::NoKey> {
    RateLimitLayer::builder()
        .config(RateLimitConfig {
            on_redis_failure: shared.policy,
            ..config
        })
        .redis(&shared.redis)
        .build()
        .unwrap()
}

async fn acquire(
    store: &RedisStore<()>,
    tokens: u64,
    max_wait: Duration,
) -> Result<Grant, LocalRateLimited> {
    match store.acquire(&(), tokens, max_wait) {
        StoreReply::Ready(result) => result,
        StoreReply::Pending(future) => future.await,
    }
}

fn per_second(limit: u64, burst: u64) -> RateLimitConfig {
    RateLimitConfig {
        requests: Some(Rate {
            limit,
            per: Duration::from_secs(1),
            burst: Some(burst),
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    }
}

#[test]
fn four_instances_never_exceed_the_global_limit() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = redis(&server, "four", FailurePolicy::Closed);
    let started = Instant::now();
    let run_for = Duration::from_millis(1500);
    // Four limiters, each with its own runtime on its own thread: four gateway instances.
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let config = config.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let layer = limiter(per_second(20, 5), &config);
                    let mut admitted = Vec::new();
                    while started.elapsed() < run_for {
                        if acquire(layer.store(), 0, Duration::ZERO).await.is_ok() {
                            admitted.push(started.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    admitted
                })
            })
        })
        .collect();
    let mut admitted: Vec<Duration> = instances
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    admitted.sort();
    // 20 per second with a burst of 5, for everyone together: in any window of one second at
    // most 5 + 20 (one emission of slack for the window's edge).
    for (i, start) in admitted.iter().enumerate() {
        let within = admitted[i..]
            .iter()
            .take_while(|t| **t < *start + Duration::from_secs(1))
            .count();
        assert!(
            within <= 26,
            "{within} admitted within one second from {start:?}"
        );
    }
    let total = admitted.len();
    assert!(
        (25..=37).contains(&total),
        "{total} admitted in 1.5 s (at most 5 + 30)"
    );
}

#[tokio::test]
async fn reconciled_tokens_return_to_every_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = redis(&server, "tokens", FailurePolicy::Closed);
    let tokens = RateLimitConfig {
        tokens: Some(Rate {
            limit: 1000,
            per: Duration::from_secs(60),
            burst: Some(1000),
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let a = limiter(tokens.clone(), &config);
    let b = limiter(tokens, &config);
    let grant = acquire(a.store(), 600, Duration::ZERO).await.unwrap();
    // Instance B sees instance A's reservation…
    let err = acquire(b.store(), 800, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err.reason(), LimitReason::Tokens), "{err:?}");
    // …and its correction: the call used 100 tokens, 500 come back for everyone.
    a.store().reconcile(&(), &grant, 100);
    let started = Instant::now();
    loop {
        if acquire(b.store(), 800, Duration::ZERO).await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the refund never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn remaining_counts_reported_to_one_instance_bind_every_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = redis(&server, "observe", FailurePolicy::Closed);
    let per_minute = |limit: u64| Rate {
        limit,
        per: Duration::from_secs(60),
        burst: Some(limit),
    };
    let both = RateLimitConfig {
        requests: Some(per_minute(60)),
        tokens: Some(per_minute(6000)),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let a = limiter(both.clone(), &config);
    let b = limiter(both, &config);
    // The provider tells A: 3 requests and 500 tokens left (another client spends the rest).
    let mut info = RateLimitInfo::new();
    info.remaining_requests = Some(3);
    info.remaining_tokens = Some(500);
    a.store().observe(&(), &info);
    // Wait for the correction to land (it is sent in the background), without spending.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let started = Instant::now();
    loop {
        let written: bool = ::redis::cmd("EXISTS")
            .arg("test:observe::t")
            .query_async(&mut connection)
            .await
            .unwrap();
        if written {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let err = acquire(b.store(), 600, Duration::ZERO).await.unwrap_err();
    assert!(matches!(err.reason(), LimitReason::Tokens), "{err:?}");
    let mut admitted = 0;
    while acquire(b.store(), 1, Duration::ZERO).await.is_ok() {
        admitted += 1;
    }
    assert_eq!(admitted, 3, "B admits what the provider said remains");
    // A report of more than the shared count holds raises nothing.
    info.remaining_requests = Some(50);
    a.store().observe(&(), &info);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(acquire(b.store(), 1, Duration::ZERO).await.is_err());
}

#[tokio::test]
async fn a_provider_pause_is_seen_by_every_instance_and_keys_expire() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let config = redis(&server, "pause", FailurePolicy::Closed);
    let a = limiter(per_second(100, 100), &config);
    let b = limiter(per_second(100, 100), &config);
    acquire(b.store(), 0, Duration::ZERO).await.unwrap();
    a.store().pause(&(), Duration::from_secs(2));
    let started = Instant::now();
    let err = loop {
        match acquire(b.store(), 0, Duration::ZERO).await {
            Err(err) => break err,
            Ok(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "the pause never arrived"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert!(
        matches!(err.reason(), LimitReason::ProviderPause),
        "{err:?}"
    );
    let retry = err.retry_after().unwrap();
    assert!(
        retry > Duration::from_millis(1500) && retry <= Duration::from_secs(2),
        "{retry:?}"
    );
    // A wait long enough is granted, ending with the pause.
    let grant = acquire(b.store(), 0, Duration::from_secs(3)).await.unwrap();
    assert!(grant.wait > Duration::from_millis(1500), "{grant:?}");

    // Every key the store wrote carries a TTL.
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    for suffix in ["r", "p"] {
        let ttl: i64 = ::redis::cmd("PTTL")
            .arg(format!("test:pause::{suffix}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        assert!(ttl > 0, "key {suffix} has no TTL ({ttl})");
    }
}

#[test]
fn redis_down_follows_the_policy_then_recovers_by_itself() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let closed = limiter(
            per_second(100, 100),
            &redis(&server, "closed", FailurePolicy::Closed),
        );
        let open = limiter(
            per_second(100, 100),
            &redis(&server, "open", FailurePolicy::Open { share: 0.1 }),
        );
        acquire(closed.store(), 0, Duration::ZERO).await.unwrap();
        acquire(open.store(), 0, Duration::ZERO).await.unwrap();

        server.stop();
        // Closed: refused, quickly (the timeout is 100 ms), never hanging.
        let started = Instant::now();
        let err = acquire(closed.store(), 0, Duration::ZERO)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert!(err.retry_after().is_some());
        assert!(closed.store().is_degraded());
        // Open: a local limiter with a tenth of the quota (10 per second, burst 10); after
        // the first call finds Redis gone, the others do not wait for it.
        let started = Instant::now();
        let mut admitted = 0;
        for _ in 0..30 {
            if acquire(open.store(), 0, Duration::ZERO).await.is_ok() {
                admitted += 1;
            }
        }
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_millis(900), "{elapsed:?}");
        let most = 10 + (elapsed.as_secs_f64() * 10.0).ceil() as usize;
        assert!(
            (10..=most).contains(&admitted),
            "{admitted} admitted in {elapsed:?} from the local share"
        );
        assert!(open.store().is_degraded());

        server.restart().unwrap();
        let started = Instant::now();
        while acquire(closed.store(), 0, Duration::ZERO).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no recovery after Redis returned"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!closed.store().is_degraded());
    });
}

#[test]
fn with_traffic_through_an_outage_sharing_resumes_within_seconds_and_no_call_waits_for_a_probe() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = redis(&server, "outage", FailurePolicy::Open { share: 0.5 });
        let limit = limiter(per_second(1000, 1000), &config);
        let store = limit.store();
        acquire(store, 0, Duration::ZERO).await.unwrap();

        server.stop();
        // Traffic all through the outage: a call every 10 ms for 2 s. After the first (which
        // finds Redis gone, within its timeout), none waits: no call probes.
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let started = Instant::now();
            let _ = acquire(store, 0, Duration::ZERO).await;
            if i > 0 {
                slowest = slowest.max(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(store.is_degraded());
        // The handle, whose type does not name the store, says the same.
        assert_eq!(
            limit.handle().location(),
            llm_ratelimit_layer::StoreLocation::Shared { reachable: false }
        );
        assert!(
            limit.handle().capacity().is_some(),
            "an unkeyed shared limit has one capacity"
        );
        assert!(
            slowest < Duration::from_millis(20),
            "a call waited {slowest:?}"
        );

        server.restart().unwrap();
        let restarted = Instant::now();
        // Traffic goes on; sharing resumes by itself within a few seconds.
        while store.is_degraded() {
            assert!(
                restarted.elapsed() < Duration::from_secs(3),
                "still local {:?} after Redis returned",
                restarted.elapsed()
            );
            let _ = acquire(store, 0, Duration::ZERO).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "sharing resumed {:?} after the restart",
            restarted.elapsed()
        );
        acquire(store, 0, Duration::ZERO).await.unwrap();
        assert!(!store.is_degraded());
    });
}

#[test]
fn invalid_redis_settings_name_the_field() {
    let mut config = RedisConfig::new("not a url");
    let err = RateLimitLayer::builder()
        .config(per_second(1, 1))
        .redis(&config)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "redis.url");
    config.url = "redis://127.0.0.1:1".to_owned();
    let err = RateLimitLayer::builder()
        .config(RateLimitConfig {
            on_redis_failure: FailurePolicy::Open { share: 0.0 },
            ..per_second(1, 1)
        })
        .redis(&config)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "on_redis_failure.share");
}
