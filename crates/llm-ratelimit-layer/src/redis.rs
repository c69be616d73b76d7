//! [`RedisStore`] (feature `redis`): the limiter's state in Redis, shared by every instance
//! of a service, so that N gateways against one provider quota admit the quota once, not N
//! times.
//!
//! Admission is one atomic round trip: a Lua script runs the same GCRA as the in-process
//! [`Limiter`](crate::Limiter) for requests and tokens together, with the Redis server's
//! clock (`TIME`), never the clients'. Releases, reconciliations with reported usage, and
//! provider pauses are sent in the background. Keys carry a TTL, so idle keys expire.
//!
//! Redis faults never hang a request: every call has a timeout, and while Redis is
//! unreachable the store follows its [`FailurePolicy`] — admit through a local limiter with
//! a share of the quota, or refuse with `LocalRateLimited` — at once for every call but one
//! probe every 250 ms, logging once per outage and recovering by itself when Redis answers
//! again (the connection manager reconnects).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_core::__private::{RedisLink, RedisUnavailable, integers};
use llm_core::{ConfigError, LimitReason, LocalRateLimited, RateLimitInfo, RedisConfig};
use tokio::time::Instant;

use crate::config::FailurePolicy;
use crate::gcra::{Capacity, Grant, Limiter};
use crate::store::{Limits, RateLimitStore, StoreLocation, StoreReply, StoreStatus};

/// GCRA over two buckets and a pause, in microseconds of the server's clock.
///
/// KEYS: requests TAT, tokens TAT, paused-until. ARGV: operation, request interval and
/// capacity, token interval and capacity (0: no such bucket), token cost, max wait, key TTL
/// in ms, and an operation argument. `acquire` answers `{1, wait_us, req_avail, tok_avail}`
/// or `{0, retry_us, reason}` (0 a pause, 1 requests, 2 tokens); the others answer 1.
/// `clamp` lowers what each bucket could admit to what the provider reported remaining:
/// the requests left plus one in the argument, the tokens left plus one in the cost (0:
/// not reported).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local ri, rcap = tonumber(ARGV[2]), tonumber(ARGV[3])
local ti, tcap = tonumber(ARGV[4]), tonumber(ARGV[5])
local cost, max_wait, ttl, arg = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local function tat(k) return tonumber(redis.call('GET', k) or '0') end
local function put(k, v) redis.call('SET', k, string.format('%.0f', v), 'PX', ttl) end
if op == 'acquire' then
  local from = math.max(now, tat(KEYS[3]))
  local deadline = now + max_wait
  if from > deadline then return {0, from - now, 0} end
  local go, rt, tt = from, 0, 0
  if ri > 0 then
    rt = math.max(tat(KEYS[1]), from) + ri
    local at = math.max(rt - rcap, from)
    if at > deadline then return {0, at - now, 1} end
    go = math.max(go, at)
  end
  if ti > 0 then
    tt = math.max(tat(KEYS[2]), from) + ti * cost
    local at = math.max(tt - tcap, from)
    if at > deadline then return {0, at - now, 2} end
    go = math.max(go, at)
  end
  if ri > 0 then put(KEYS[1], rt) end
  if ti > 0 then put(KEYS[2], tt) end
  local ra = -1
  if ri > 0 then ra = math.floor(math.max(0, rcap - (rt - now)) / ri) end
  local ta = -1
  if ti > 0 then ta = math.floor(math.max(0, tcap - (tt - now)) / ti) end
  return {1, go - now, ra, ta}
elseif op == 'refund' then
  if ri > 0 and arg > 0 then put(KEYS[1], math.max(0, tat(KEYS[1]) - ri)) end
  if ti > 0 and cost > 0 then put(KEYS[2], math.max(0, tat(KEYS[2]) - ti * cost)) end
elseif op == 'charge' then
  if ti > 0 and cost > 0 then put(KEYS[2], math.max(tat(KEYS[2]), now) + ti * cost) end
elseif op == 'pause' then
  local until_ = now + arg
  if until_ > tat(KEYS[3]) then put(KEYS[3], until_) end
elseif op == 'clamp' then
  if ri > 0 and arg > 0 then
    local floor = now + rcap - (arg - 1) * ri
    if floor > tat(KEYS[1]) then put(KEYS[1], floor) end
  end
  if ti > 0 and cost > 0 then
    local floor = now + tcap - (cost - 1) * ti
    if floor > tat(KEYS[2]) then put(KEYS[2], floor) end
  end
end
return 1
";

/// The key prefix of limiters whose [`RedisConfig`] names none.
const DEFAULT_PREFIX: &str = "llm-tower:ratelimit:";

/// Turns a key into the part of a Redis key after the prefix.
///
/// ```
/// use llm_ratelimit_layer::RedisKey;
///
/// struct Tenant(u32);
/// impl RedisKey for Tenant {
///     fn redis_key(&self) -> String { format!("tenant-{}", self.0) }
/// }
/// assert_eq!(Tenant(7).redis_key(), "tenant-7");
/// assert_eq!(().redis_key(), "");
/// ```
pub trait RedisKey {
    /// The key's text (empty for an unkeyed limit).
    fn redis_key(&self) -> String;
}

impl RedisKey for () {
    fn redis_key(&self) -> String {
        String::new()
    }
}

impl RedisKey for String {
    fn redis_key(&self) -> String {
        self.clone()
    }
}

impl RedisKey for &'static str {
    fn redis_key(&self) -> String {
        (*self).to_owned()
    }
}

/// Bucket parameters in microseconds: (interval per unit, capacity).
#[derive(Clone, Copy, Debug, Default)]
struct Micros {
    requests: (u64, u64),
    tokens: (u64, u64),
    token_burst: u64,
}

impl Micros {
    fn of(limits: Limits) -> Micros {
        let bucket = |(limit, per, burst): (u64, Duration, u64)| {
            let interval = (per.as_micros() / u128::from(limit.max(1))).max(1) as u64;
            (interval, interval.saturating_mul(burst))
        };
        Micros {
            requests: limits.requests.map_or((0, 0), bucket),
            tokens: limits.tokens.map_or((0, 0), bucket),
            token_burst: limits.tokens.map_or(0, |(_, _, burst)| burst),
        }
    }

    /// How long an idle key is kept: long enough to refill completely.
    fn ttl_ms(self) -> u64 {
        (self.requests.1.max(self.tokens.1) / 1000).max(1000) * 2
    }
}

struct Shared {
    link: RedisLink,
    script: redis::Script,
    prefix: String,
    policy: FailurePolicy,
    micros: Micros,
    fallback: Option<Limiter>,
    /// Last known availability, for `capacity` (which cannot wait for Redis).
    requests_available: AtomicU64,
    tokens_available: AtomicU64,
}

/// Rate-limit state in Redis, shared by every instance using the same URL and prefix.
/// Build a layer over it with
/// [`RateLimitLayerBuilder::redis`](crate::RateLimitLayerBuilder::redis).
///
/// ```no_run
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer, RedisConfig};
///
/// let layer = RateLimitLayer::builder()
///     .config(RateLimitConfig::per_minute(500, 30_000))
///     .redis(&RedisConfig::new("redis://127.0.0.1:6379")).build()
///     .unwrap();
/// assert!(!layer.store().is_degraded());
/// ```
pub struct RedisStore<K> {
    shared: Arc<Shared>,
    _key: std::marker::PhantomData<fn(&K)>,
}

impl<K> fmt::Debug for RedisStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.prefix)
            .field("timeout", &self.shared.link.timeout())
            .field("policy", &self.shared.policy)
            .field("down", &self.shared.link.is_down())
            .finish_non_exhaustive()
    }
}

impl<K> RedisStore<K> {
    pub(crate) fn new(
        config: &RedisConfig,
        limits: Limits,
        policy: FailurePolicy,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let prefix = config.prefix_or(DEFAULT_PREFIX).to_owned();
        let meanwhile = match policy {
            FailurePolicy::Open { share } => {
                format!("rate limiting admits through a local limiter with {share} of the quota")
            }
            FailurePolicy::Closed => "rate limiting refuses every call".to_owned(),
        };
        let link = config.link(format!("rate limit {prefix}"), meanwhile)?;
        let fallback = match policy {
            FailurePolicy::Open { share } => {
                let scale = |(limit, per, burst): (u64, Duration, u64)| {
                    let part = |n: u64| ((n as f64 * share).floor() as u64).max(1);
                    (part(limit), per, part(burst))
                };
                Some(Limiter::new(
                    limits.requests.map(scale),
                    limits.tokens.map(scale),
                    Instant::now(),
                ))
            }
            FailurePolicy::Closed => None,
        };
        let micros = Micros::of(limits);
        Ok(RedisStore {
            shared: Arc::new(Shared {
                link,
                script: redis::Script::new(SCRIPT),
                prefix,
                policy,
                micros,
                fallback,
                requests_available: AtomicU64::new(limits.requests.map_or(0, |r| r.2)),
                tokens_available: AtomicU64::new(limits.tokens.map_or(0, |t| t.2)),
            }),
            _key: std::marker::PhantomData,
        })
    }

    /// Whether Redis was unreachable at the last call (the failure policy is in force).
    pub fn is_degraded(&self) -> bool {
        self.shared.link.is_down()
    }
}

impl Shared {
    /// Runs the script for `op` on `key`, bounded by the timeout; while Redis is down, only
    /// one call per probe interval tries it.
    async fn run(
        &self,
        key: &str,
        op: &str,
        cost: u64,
        max_wait_us: u64,
        arg: u64,
    ) -> Result<Vec<i64>, RedisUnavailable> {
        let m = self.micros;
        let base = format!("{}{key}", self.prefix);
        let reply = self
            .link
            .run(|mut connection| async move {
                let mut invocation = self.script.prepare_invoke();
                invocation
                    .key(format!("{base}:r"))
                    .key(format!("{base}:t"))
                    .key(format!("{base}:p"))
                    .arg(op)
                    .arg(m.requests.0)
                    .arg(m.requests.1)
                    .arg(m.tokens.0)
                    .arg(m.tokens.1)
                    .arg(cost)
                    .arg(max_wait_us)
                    .arg(m.ttl_ms())
                    .arg(arg);
                invocation
                    .invoke_async::<redis::Value>(&mut connection)
                    .await
            })
            .await?;
        Ok(integers(&reply))
    }

    /// The failure policy's answer to an admission.
    fn degraded(&self, tokens: u64, max_wait: Duration) -> Result<Grant, LocalRateLimited> {
        match &self.fallback {
            Some(limiter) => limiter.acquire(tokens, Instant::now(), max_wait),
            None => Err(LocalRateLimited::new(
                LimitReason::Requests,
                Some(Duration::from_secs(1)),
            )),
        }
    }

    fn spawn(self: &Arc<Self>, key: String, op: &'static str, cost: u64, arg: u64) {
        // Outside a runtime there is nothing to send it with; the TTL bounds the error.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let shared = self.clone();
        runtime.spawn(async move {
            let _ = shared.run(&key, op, cost, 0, arg).await;
        });
    }
}

impl<K: 'static> StoreStatus for RedisStore<K> {
    /// The last capacity Redis reported, for an unkeyed limit (`RedisStore<()>`).
    fn unkeyed_capacity(&self) -> Option<Capacity> {
        // NOTE: the counters are the last answer for whichever key asked last: only an
        // unkeyed limit has one capacity to report.
        if std::any::TypeId::of::<K>() != std::any::TypeId::of::<()>() {
            return None;
        }
        Some(self.last_capacity())
    }

    fn location(&self) -> StoreLocation {
        StoreLocation::Shared {
            reachable: !self.is_degraded(),
        }
    }
}

impl<K: RedisKey + Send + Sync + 'static> RateLimitStore<K> for RedisStore<K> {
    fn acquire(&self, key: &K, tokens: u64, max_wait: Duration) -> StoreReply {
        let shared = self.shared.clone();
        if shared.micros.tokens.0 > 0 && tokens > shared.micros.token_burst {
            let reason = LimitReason::CostExceedsCapacity {
                cost: tokens,
                capacity: shared.micros.token_burst,
            };
            return StoreReply::Ready(Err(LocalRateLimited::new(reason, None)));
        }
        let key = key.redis_key();
        let max_wait_us = u64::try_from(max_wait.as_micros()).unwrap_or(u64::MAX / 2);
        StoreReply::Pending(Box::pin(async move {
            let Ok(reply) = shared.run(&key, "acquire", tokens, max_wait_us, 0).await else {
                return shared.degraded(tokens, max_wait);
            };
            match reply.as_slice() {
                [1, wait, requests, tokens_left, ..] => {
                    if *requests >= 0 {
                        shared
                            .requests_available
                            .store(*requests as u64, Ordering::Relaxed);
                    }
                    if *tokens_left >= 0 {
                        shared
                            .tokens_available
                            .store(*tokens_left as u64, Ordering::Relaxed);
                    }
                    Ok(Grant {
                        wait: Duration::from_micros(*wait as u64),
                        tokens: if shared.micros.tokens.0 > 0 {
                            tokens
                        } else {
                            0
                        },
                    })
                }
                [0, retry, reason, ..] => {
                    let reason = match reason {
                        0 => LimitReason::ProviderPause,
                        2 => LimitReason::Tokens,
                        _ => LimitReason::Requests,
                    };
                    if matches!(reason, LimitReason::Requests) {
                        shared.requests_available.store(0, Ordering::Relaxed);
                    }
                    Err(LocalRateLimited::new(
                        reason,
                        Some(Duration::from_micros((*retry).max(0) as u64)),
                    ))
                }
                _ => shared.degraded(tokens, max_wait),
            }
        }))
    }

    fn release(&self, key: &K, grant: &Grant) {
        self.shared
            .spawn(key.redis_key(), "refund", grant.tokens, 1);
    }

    fn reconcile(&self, key: &K, grant: &Grant, actual_tokens: u64) {
        match actual_tokens.cmp(&grant.tokens) {
            std::cmp::Ordering::Less => {
                self.shared
                    .spawn(key.redis_key(), "refund", grant.tokens - actual_tokens, 0);
            }
            std::cmp::Ordering::Greater => {
                self.shared
                    .spawn(key.redis_key(), "charge", actual_tokens - grant.tokens, 0);
            }
            std::cmp::Ordering::Equal => {}
        }
    }

    fn pause(&self, key: &K, delay: Duration) {
        let micros = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX / 2);
        self.shared.spawn(key.redis_key(), "pause", 0, micros);
    }

    fn observe(&self, key: &K, info: &RateLimitInfo) {
        let (requests, tokens) = (info.remaining_requests, info.remaining_tokens);
        if requests.is_some() || tokens.is_some() {
            // Fewer left than the shared count believes lowers it for every instance.
            let plus_one = |left: Option<u64>| left.map_or(0, |left| left.saturating_add(1));
            self.shared.spawn(
                key.redis_key(),
                "clamp",
                plus_one(tokens),
                plus_one(requests),
            );
        }
        if let Some(reset) = info.next_slot() {
            self.pause(key, reset);
        }
    }

    fn capacity(&self, _: &K) -> Capacity {
        self.last_capacity()
    }
}

impl<K> RedisStore<K> {
    /// What Redis reported at its last answer.
    fn last_capacity(&self) -> Capacity {
        let m = self.shared.micros;
        let mut capacity = Capacity::default();
        if m.requests.0 > 0 {
            capacity.requests = Some(self.shared.requests_available.load(Ordering::Relaxed));
        }
        if m.tokens.0 > 0 {
            capacity.tokens = Some(self.shared.tokens_available.load(Ordering::Relaxed));
        }
        capacity
    }
}
