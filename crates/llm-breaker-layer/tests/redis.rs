//! Breaker state shared through a real `redis-server` (the test kit's `RedisServer`, started
//! by each test on a free loopback port and stopped with it). Without the binary the tests
//! say so and pass — unless `LLM_TOWER_REQUIRE_REDIS` is set (CI sets it).
//!
//! Each instance has its own Tokio runtime, as separate gateway processes would; they meet
//! only in Redis. Time is real here (Redis's clock decides); waits are bounded polls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use llm_breaker_layer::{
    BreakerConfig, BreakerHandle, BreakerLayer, BreakerLayerBuilder, RedisConfig, State,
    StateChange,
};
use llm_core::{ErrorKind, LlmError};
use llm_testkit::{RedisServer, TestResponse};
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneService<u32, TestResponse, LlmError>;

/// One instance: its own runtime, a breaker around an upstream whose health the test sets.
struct Instance {
    runtime: tokio::runtime::Runtime,
    svc: Svc,
    handle: BreakerHandle,
    healthy: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    changes: Arc<Mutex<Vec<StateChange>>>,
}

fn config(open: Duration) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(2),
        open_duration: open,
        open_jitter: 0.0,
        ..BreakerConfig::standard()
    }
}

fn redis(server: &RedisServer, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::new(server.url()).with_key_prefix(format!("test:{prefix}:"));
    config.resync_every = Duration::from_millis(200);
    config
}

fn runtime() -> tokio::runtime::Runtime {
    // One worker: the shared-state task runs on it while the test thread blocks on calls.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn upstream(
    healthy: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<u32, Response = TestResponse, Error = LlmError, Future: Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(move |_: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        let healthy = healthy.load(Ordering::SeqCst);
        async move {
            if healthy {
                Ok(TestResponse::new("ok"))
            } else {
                Err(LlmError::new(ErrorKind::ServerError, "HTTP 503"))
            }
        }
    })
}

impl Instance {
    fn start(breaker: BreakerConfig, shared: &RedisConfig) -> Instance {
        let runtime = runtime();
        let healthy = Arc::new(AtomicBool::new(true));
        let calls = Arc::new(AtomicUsize::new(0));
        let changes = Arc::new(Mutex::new(Vec::new()));
        let log = changes.clone();
        let layer = runtime.block_on(async {
            BreakerLayer::builder()
                .config(breaker)
                .name("openai/gpt-4o")
                .on_state_change(move |change| log.lock().unwrap().push(change.clone()))
                .shared(shared.clone())
                .build()
                .unwrap()
        });
        let svc = BoxCloneService::new(layer.layer(upstream(healthy.clone(), calls.clone())));
        Instance {
            runtime,
            svc,
            handle: layer.handle(),
            healthy,
            calls,
            changes,
        }
    }

    fn call(&self) -> Result<TestResponse, LlmError> {
        self.runtime.block_on(self.svc.clone().oneshot(0))
    }

    fn fail(&self, times: usize) {
        self.healthy.store(false, Ordering::SeqCst);
        for _ in 0..times {
            let _ = self.call();
        }
    }

    fn peer_changes(&self) -> Vec<(State, State)> {
        self.changes
            .lock()
            .unwrap()
            .iter()
            .filter(|change| change.from_peer)
            .map(|change| (change.from, change.to))
            .collect()
    }
}

/// Waits (up to 3 s) for `done`, naming what did not happen.
fn eventually(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_trip_opens_every_instance_and_a_late_one_starts_open() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "trip");
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::start(config(Duration::from_secs(30)), &shared))
        .collect();
    let [a, b, c] = &instances[..] else {
        unreachable!()
    };
    a.fail(2);
    assert_eq!(a.handle.state(), State::Open);
    eventually("b and c open", || {
        b.handle.state() == State::Open && c.handle.state() == State::Open
    });
    assert_eq!(b.peer_changes(), [(State::Closed, State::Open)]);
    let retry_in = b.handle.metrics().retry_in.unwrap();
    assert!(
        retry_in > Duration::from_secs(28) && retry_in <= Duration::from_secs(30),
        "{retry_in:?}"
    );
    // B rejects without calling its upstream: the failure was A's, the protection is B's.
    let err = b.call().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);
    assert_eq!(b.calls.load(Ordering::SeqCst), 0);
    // The local trips count is shared, so the next open duration grows for everyone.
    assert_eq!(b.handle.metrics().trips, 1);

    // An instance started during the outage reads the record when its breaker is created.
    let late = Instance::start(config(Duration::from_secs(30)), &shared);
    eventually("the late instance open", || {
        late.handle.state() == State::Open
    });
    assert_eq!(late.call().unwrap_err().kind(), ErrorKind::CircuitOpen);
    assert_eq!(late.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_recovery_closes_every_instance_and_a_failed_probe_reopens_them_for_longer() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "recovery");
    let open = Duration::from_millis(400);
    let instances: Vec<Instance> = (0..3)
        .map(|_| Instance::start(config(open), &shared))
        .collect();
    let [a, b, c] = &instances[..] else {
        unreachable!()
    };

    // A trips; after the open duration B's probe fails: everyone reopens, for twice as long.
    a.fail(2);
    eventually("b and c open", || {
        b.handle.state() == State::Open && c.handle.state() == State::Open
    });
    std::thread::sleep(open + Duration::from_millis(50));
    assert_eq!(b.handle.state(), State::HalfOpen);
    b.fail(1);
    assert_eq!(b.handle.state(), State::Open);
    eventually("a and c reopened", || {
        [a, c]
            .iter()
            .all(|i| i.handle.metrics().retry_in > Some(Duration::from_millis(500)))
    });
    assert!(b.handle.metrics().retry_in > Some(Duration::from_millis(500)));

    // After that, A's probe succeeds: B and C close without a probe of their own.
    std::thread::sleep(2 * open + Duration::from_millis(50));
    a.healthy.store(true, Ordering::SeqCst);
    let (b_calls, c_calls) = (
        b.calls.load(Ordering::SeqCst),
        c.calls.load(Ordering::SeqCst),
    );
    assert_eq!(a.call().unwrap().body(), "ok");
    assert_eq!(a.handle.state(), State::Closed);
    eventually("b and c closed", || {
        b.handle.state() == State::Closed && c.handle.state() == State::Closed
    });
    assert_eq!(c.calls.load(Ordering::SeqCst), c_calls);
    assert_eq!(b.calls.load(Ordering::SeqCst), b_calls);
    assert_eq!(
        c.peer_changes(),
        [(State::Closed, State::Open), (State::Open, State::Closed)],
        "C saw the first trip and the recovery (the reopening only moved its time)"
    );
    // Closed again everywhere, each decides from its own calls: one failure trips nobody.
    b.fail(1);
    assert_eq!(b.handle.state(), State::Closed);
}

#[test]
fn a_recovery_loses_to_a_newer_trip() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "race");
    let open = Duration::from_millis(300);
    let a = Instance::start(config(open), &shared);
    a.fail(2);
    std::thread::sleep(open + Duration::from_millis(50));
    // Another instance's probe failed meanwhile and its message has not arrived: its record
    // is newer than anything A knows.
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("HSET")
        .arg("test:race:openai/gpt-4o")
        .arg(&["state", "1", "trips", "2", "epoch", "9000000000000000"])
        .arg("until")
        .arg(u64::MAX / 2)
        .query(&mut connection)
        .unwrap();
    a.healthy.store(true, Ordering::SeqCst);
    assert!(a.call().is_ok(), "the probe itself passes");
    // A's recovery is refused by the newer record, which A takes on instead.
    eventually("a open again", || a.handle.state() == State::Open);
    let state: String = redis::cmd("HGET")
        .arg("test:race:openai/gpt-4o")
        .arg("state")
        .query(&mut connection)
        .unwrap();
    assert_eq!(state, "1");
}

#[test]
fn redis_down_each_decides_alone_then_trips_are_shared_again() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "outage");
    let a = Instance::start(config(Duration::from_secs(30)), &shared);
    let b = Instance::start(config(Duration::from_secs(30)), &shared);
    // Both follow the record before the outage.
    std::thread::sleep(Duration::from_millis(100));
    server.stop();

    // Calls never wait for Redis: A trips at once, alone.
    let started = Instant::now();
    a.fail(2);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.handle.state(), State::Open);
    eventually("a notices the outage", || a.handle.redis_unreachable());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.handle.state(), State::Closed, "b cannot know yet");
    assert!(b.call().is_ok());

    // Redis is back (empty: no persistence): A's trip, still in force, is published.
    server.restart().unwrap();
    eventually("b open after Redis returned", || {
        b.handle.state() == State::Open
    });
    eventually("a reachable again", || !a.handle.redis_unreachable());
    let retry_in = b.handle.metrics().retry_in.unwrap();
    assert!(retry_in > Duration::from_secs(25), "{retry_in:?}");
}

#[test]
fn keyed_breakers_share_state_per_key_and_records_expire() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "keyed");
    let instance = |healthy: Arc<AtomicBool>| {
        let runtime = runtime();
        let layer = runtime.block_on(async {
            BreakerLayer::builder()
                .config(config(Duration::from_secs(30)))
                .shared(shared.clone())
                .keyed_by(|model: &u32| format!("model-{model}"))
                .build()
                .unwrap()
        });
        let handle = layer.handle();
        let svc = layer.layer(upstream(healthy, Arc::new(AtomicUsize::new(0))));
        (runtime, svc, handle)
    };
    let a_healthy = Arc::new(AtomicBool::new(true));
    let (a_rt, a_svc, _) = instance(a_healthy.clone());
    let (b_rt, b_svc, b_handle) = instance(Arc::new(AtomicBool::new(true)));
    // B knows both models.
    for model in [1, 2] {
        assert!(b_rt.block_on(b_svc.clone().oneshot(model)).is_ok());
    }
    a_healthy.store(false, Ordering::SeqCst);
    for _ in 0..2 {
        let _ = a_rt.block_on(a_svc.clone().oneshot(1));
    }
    eventually("b's model-1 open", || {
        b_handle.get(&"model-1".to_owned()).unwrap().state() == State::Open
    });
    assert_eq!(
        b_handle.get(&"model-2".to_owned()).unwrap().state(),
        State::Closed
    );

    // The record expires: its open duration plus ten minutes.
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("test:keyed:model-1")
        .query(&mut connection)
        .unwrap();
    assert!(
        ttl > 600_000 && ttl <= 630_000,
        "record TTL {ttl} ms, expected 10 min 30 s"
    );
}

fn builder(shared: RedisConfig) -> BreakerLayerBuilder {
    BreakerLayer::builder().name("x").shared(shared)
}

#[test]
fn invalid_shared_settings_name_the_field() {
    let runtime = runtime();
    let _inside = runtime.enter();
    let err = builder(RedisConfig::new("http://127.0.0.1"))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "shared.url");
    let mut zero = RedisConfig::new("redis://127.0.0.1:1");
    zero.timeout = Duration::ZERO;
    assert_eq!(builder(zero).build().unwrap_err().field(), "shared.timeout");
    let mut zero = RedisConfig::new("redis://127.0.0.1:1");
    zero.resync_every = Duration::ZERO;
    assert_eq!(
        builder(zero).build().unwrap_err().field(),
        "shared.resync_every"
    );
    let unnamed = BreakerLayer::builder()
        .shared(RedisConfig::new("redis://127.0.0.1:1"))
        .build()
        .unwrap_err();
    assert_eq!(unnamed.field(), "name");
    drop(_inside);
    let outside = builder(RedisConfig::new("redis://127.0.0.1:1"))
        .build()
        .unwrap_err();
    assert_eq!(outside.field(), "shared");
    assert!(outside.reason().contains("Tokio runtime"), "{outside}");
}
