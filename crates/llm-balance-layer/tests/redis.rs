//! Member state shared through a real `redis-server` (the test kit's `RedisServer`, started
//! by each test on a free loopback port). Without the binary the tests say so and pass —
//! unless `LLM_TOWER_REQUIRE_REDIS` is set (CI sets it).
//!
//! Each instance has its own Tokio runtime, as separate gateway processes would; they meet
//! only in Redis. Time is real here; waits are bounded polls.

use std::time::{Duration, Instant};

use llm_balance_layer::{Member, MemberState, Pool, PoolHandle, RedisConfig};
use llm_core::{ErrorKind, LlmError};
use llm_testkit::{RedisServer, ScriptedService, Step, TestRequest, TestResponse};
use tower::ServiceExt;
use tower::util::BoxCloneService;

type Svc = BoxCloneService<TestRequest, TestResponse, LlmError>;

struct Instance {
    runtime: tokio::runtime::Runtime,
    pool: Pool<Svc, TestRequest>,
}

fn redis(server: &RedisServer, prefix: &str) -> RedisConfig {
    let mut config = RedisConfig::new(server.url()).with_key_prefix(format!("test:{prefix}:"));
    config.resync_every = Duration::from_millis(100);
    config
}

impl Instance {
    /// A pool of `revoked` (refusing its key) and `good`, sharing through `shared`.
    fn start(shared: &RedisConfig) -> Instance {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (revoked, _) =
            ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::Unauthorized));
        let (good, _) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("ok")));
        let pool = runtime.block_on(async {
            Pool::builder(
                "openai",
                vec![
                    Member::new("revoked", Svc::new(revoked)),
                    Member::new("good", Svc::new(good)),
                ],
            )
            .shared(shared.clone())
            .build()
            .unwrap()
        });
        Instance { runtime, pool }
    }

    fn ask(&self) -> Result<TestResponse, LlmError> {
        self.runtime
            .block_on(self.pool.clone().oneshot(TestRequest::new("gpt-4o")))
    }

    fn state_of(&self, member: &str) -> MemberState {
        let _guard = self.runtime.enter();
        state_of(&self.pool.handle(), member)
    }
}

fn state_of(handle: &PoolHandle, member: &str) -> MemberState {
    handle
        .members()
        .into_iter()
        .find(|m| &*m.name == member)
        .unwrap()
        .state
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_key_one_instance_finds_revoked_is_retired_on_every_instance_and_a_late_one() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let shared = redis(&server, "retire");
    let a = Instance::start(&shared);
    let b = Instance::start(&shared);
    // `a` meets the revoked key (the members are picked in turn: within two requests).
    for _ in 0..2 {
        a.ask().unwrap();
    }
    assert!(matches!(a.state_of("revoked"), MemberState::Retired { .. }));
    eventually("b takes the retirement on", || {
        matches!(b.state_of("revoked"), MemberState::Retired { .. })
    });
    // An instance started later reads it at its first resync, and never calls the key.
    let c = Instance::start(&shared);
    eventually("c takes the retirement on", || {
        matches!(c.state_of("revoked"), MemberState::Retired { .. })
    });
    for _ in 0..5 {
        let answer = c.ask().unwrap();
        assert_eq!(answer.body(), "ok");
    }

    // An operator puts the key back on one instance: the record is removed, so an instance
    // started now sees it available.
    assert!(a.pool.handle().restore("revoked"));
    eventually("the record is gone", || {
        let d = Instance::start(&shared);
        std::thread::sleep(Duration::from_millis(300));
        matches!(d.state_of("revoked"), MemberState::Available)
    });
}

#[test]
fn without_redis_each_instance_decides_alone() {
    // A Redis that is not there: the pool answers as without sharing.
    let shared = RedisConfig::new("redis://127.0.0.1:1");
    let a = Instance::start(&shared);
    for _ in 0..4 {
        a.ask().unwrap();
    }
    assert!(matches!(a.state_of("revoked"), MemberState::Retired { .. }));
}
