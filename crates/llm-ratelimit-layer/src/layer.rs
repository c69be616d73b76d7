//! [`RateLimitLayer`], its builder, [`RateLimit`], and [`RateLimitHandle`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use llm_core::{
    Classify, ConfigError, DefaultClassifier, LocalRateLimited, ObserveEnd, ReportsUsage,
    RequestExtensions, TokenCost,
};
use tokio::sync::Semaphore;
use tower_layer::Layer;
use tower_service::Service;

use crate::clock::{Clock, TokioClock};
use crate::config::{Mode, RateLimitConfig};
use crate::future::ResponseFuture;
use crate::gcra::Capacity;
use crate::store::{KeyedLocalStore, LocalStore, RateLimitStore, StoreLocation, StoreStatus};
use llm_core::keyed::{KeyOf, NoKey};

/// Prices every request at zero tokens: for limiters of requests only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTokenCost;

impl<Req> TokenCost<Req> for NoTokenCost {
    fn cost(&self, _: &Req) -> u64 {
        0
    }
}

/// The concurrency cap: its slots, and how many there are (what `in_flight` counts from).
#[derive(Clone, Debug)]
pub(crate) struct Concurrency {
    pub(crate) semaphore: Arc<Semaphore>,
    max: usize,
}

/// Counters a [`RateLimitHandle`] reads.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) waiting: AtomicUsize,
    pub(crate) admitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

pub(crate) type OnRejected = Arc<dyn Fn(&LocalRateLimited) + Send + Sync>;
pub(crate) type OnWait = Arc<dyn Fn(Duration) + Send + Sync>;

/// Everything a limiter's services share.
pub(crate) struct Shared<St, KF, C, Cl> {
    pub(crate) store: Arc<St>,
    pub(crate) key_of: KF,
    pub(crate) cost: C,
    pub(crate) classifier: Cl,
    pub(crate) mode: Mode,
    pub(crate) max_wait: Duration,
    pub(crate) concurrency: Option<Concurrency>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) on_rejected: Option<OnRejected>,
    pub(crate) on_wait: Option<OnWait>,
}

impl<St, KF, C, Cl> Shared<St, KF, C, Cl> {
    pub(crate) fn rejected(&self, err: &LocalRateLimited) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            retry_after_ms = err.retry_after().map(|d| d.as_millis() as u64),
            "rate limited locally"
        );
        if let Some(hook) = &self.on_rejected {
            hook(err);
        }
    }

    pub(crate) fn waits(&self, wait: Duration) {
        tracing::debug!(
            wait_ms = wait.as_millis() as u64,
            "waiting for rate-limit capacity"
        );
        if let Some(hook) = &self.on_wait {
            hook(wait);
        }
    }
}

/// Applies requests-per-interval, tokens-per-interval and concurrency limits to a service.
/// Every clone of the layer and of its services shares one store: axum's per-request clones
/// see one limit, with no `Buffer`.
///
/// ```
/// use std::time::Duration;
/// use llm_core::ErrorKind;
/// use llm_ratelimit_layer::{Mode, Rate, RateLimitConfig, RateLimitLayer};
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let config = RateLimitConfig { requests: Some(Rate::per_minute(60).burst(2)), mode: Mode::Reject, ..Default::default() };
/// let limit = RateLimitLayer::builder().config(config).build().unwrap();
/// let (provider, _) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
/// let svc = limit.layer(provider);
///
/// svc.clone().oneshot(1).await.unwrap();
/// svc.clone().oneshot(2).await.unwrap();
/// let err = svc.clone().oneshot(3).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::LocalRateLimited);
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
/// # }
/// ```
pub struct RateLimitLayer<St = LocalStore, KF = NoKey, C = NoTokenCost, Cl = DefaultClassifier> {
    shared: Arc<Shared<St, KF, C, Cl>>,
}

impl RateLimitLayer {
    /// A builder (the configuration must set at least one limit).
    pub fn builder() -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            config: RateLimitConfig::default(),
            cost: NoTokenCost,
            classifier: DefaultClassifier,
            on_rejected: None,
            on_wait: None,
        }
    }

    /// A layer with `config`, limiting every request under one key.
    pub fn new(config: RateLimitConfig) -> Result<Self, ConfigError> {
        RateLimitLayer::builder().config(config).build()
    }
}

impl<St: StoreStatus, KF, C, Cl> RateLimitLayer<St, KF, C, Cl> {
    /// Reads the limiter's capacity and counters. The handle's type does not name the store:
    /// a limit in this process and one shared through Redis give the same handle type.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            store: self.shared.store.clone(),
            stats: self.shared.stats.clone(),
            concurrency: self.shared.concurrency.clone(),
        }
    }
}

impl<St, KF, C, Cl> RateLimitLayer<St, KF, C, Cl> {
    /// The store, with its own type: per-key capacity, a Redis store's state.
    pub fn store(&self) -> &St {
        &self.shared.store
    }
}

impl<St, KF, C, Cl> Clone for RateLimitLayer<St, KF, C, Cl> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<St, KF, C, Cl> fmt::Debug for RateLimitLayer<St, KF, C, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("mode", &self.shared.mode)
            .field("max_wait", &self.shared.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, St, KF, C, Cl> Layer<S> for RateLimitLayer<St, KF, C, Cl> {
    type Service = RateLimit<S, St, KF, C, Cl>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Builds a [`RateLimitLayer`]; the build checks every setting and names the field at fault.
pub struct RateLimitLayerBuilder<C = NoTokenCost, Cl = DefaultClassifier> {
    config: RateLimitConfig,
    cost: C,
    classifier: Cl,
    on_rejected: Option<OnRejected>,
    on_wait: Option<OnWait>,
}

impl<C, Cl> fmt::Debug for RateLimitLayerBuilder<C, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C, Cl> RateLimitLayerBuilder<C, Cl> {
    /// The limits and mode.
    #[must_use]
    pub fn config(mut self, config: RateLimitConfig) -> Self {
        self.config = config;
        self
    }

    /// Prices requests in tokens before the call (for chat requests: `EstimatedCost`, the
    /// prompt's estimate plus `max_tokens`).
    pub fn token_cost<C2>(self, cost: C2) -> RateLimitLayerBuilder<C2, Cl> {
        RateLimitLayerBuilder {
            config: self.config,
            cost,
            classifier: self.classifier,
            on_rejected: self.on_rejected,
            on_wait: self.on_wait,
        }
    }

    /// Classifies responses (for provider feedback) with `classifier`.
    pub fn classifier<Cl2>(self, classifier: Cl2) -> RateLimitLayerBuilder<C, Cl2> {
        RateLimitLayerBuilder {
            config: self.config,
            cost: self.cost,
            classifier,
            on_rejected: self.on_rejected,
            on_wait: self.on_wait,
        }
    }

    /// Called for every request the limiter turns away.
    #[must_use]
    pub fn on_rejected(mut self, hook: impl Fn(&LocalRateLimited) + Send + Sync + 'static) -> Self {
        self.on_rejected = Some(Arc::new(hook));
        self
    }

    /// Called for every request that must wait for capacity, with how long it waits.
    #[must_use]
    pub fn on_wait(mut self, hook: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        self.on_wait = Some(Arc::new(hook));
        self
    }

    /// One limiter for every request.
    pub fn build(self) -> Result<RateLimitLayer<LocalStore, NoKey, C, Cl>, ConfigError> {
        self.build_with_clock(TokioClock::new())
    }

    /// One limiter for every request, reading the time from `clock` (with the `quanta`
    /// feature, `QuantaClock` makes admission several times cheaper).
    pub fn build_with_clock<Clk: Clock>(
        self,
        clock: Clk,
    ) -> Result<RateLimitLayer<LocalStore<Clk>, NoKey, C, Cl>, ConfigError> {
        let limits = self.config.limits()?;
        self.build_with_store(LocalStore::new(limits, clock), NoKey)
    }

    /// One limit shared through Redis by every instance using the same URL and key prefix
    /// (feature `redis`). See [`RedisStore`](crate::RedisStore).
    ///
    /// ```no_run
    /// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer, RedisConfig};
    ///
    /// let shared = RateLimitLayer::builder()
    ///     .config(RateLimitConfig::per_minute(500, 30_000))
    ///     .build_redis(&RedisConfig::new("redis://127.0.0.1:6379"))
    ///     .unwrap();
    /// ```
    #[cfg(feature = "redis")]
    pub fn build_redis(
        self,
        redis: &crate::RedisConfig,
    ) -> Result<RateLimitLayer<crate::RedisStore<()>, NoKey, C, Cl>, ConfigError> {
        let limits = self.config.limits()?;
        let store = crate::RedisStore::new(redis, limits).map_err(|e| e.in_section("redis"))?;
        self.build_with_store(store, NoKey)
    }

    /// A limit per key that `key_of` extracts from each request, shared through Redis
    /// (feature `redis`); idle keys expire in Redis.
    #[cfg(feature = "redis")]
    pub fn build_redis_keyed<Req, K, F>(
        self,
        redis: &crate::RedisConfig,
        key_of: F,
    ) -> Result<RateLimitLayer<crate::RedisStore<K>, F, C, Cl>, ConfigError>
    where
        F: KeyOf<Req, Key = K>,
    {
        let limits = self.config.limits()?;
        let store = crate::RedisStore::new(redis, limits).map_err(|e| e.in_section("redis"))?;
        self.build_with_store(store, key_of)
    }

    /// A limiter per key that `key_of` extracts from each request, with bounded memory
    /// (`max_keys`, `idle_after`).
    pub fn build_keyed<Req, K, F>(
        self,
        key_of: F,
    ) -> Result<RateLimitLayer<KeyedLocalStore<K>, F, C, Cl>, ConfigError>
    where
        F: KeyOf<Req, Key = K>,
        K: Hash + Eq + Clone,
    {
        let limits = self.config.limits()?;
        let store = KeyedLocalStore::new(limits, self.config.max_keys, self.config.idle_after);
        self.build_with_store(store, key_of)
    }

    /// A limiter whose state lives in `store` (another process's view of the same limits:
    /// the seam a shared store plugs into).
    pub fn build_with_store<St, KF>(
        self,
        store: St,
        key_of: KF,
    ) -> Result<RateLimitLayer<St, KF, C, Cl>, ConfigError> {
        self.config.limits()?;
        let concurrency = self.config.max_concurrency.map(|n| Concurrency {
            semaphore: Arc::new(Semaphore::new(n as usize)),
            max: n as usize,
        });
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                key_of,
                cost: self.cost,
                classifier: self.classifier,
                mode: self.config.mode,
                max_wait: self.config.max_wait,
                concurrency,
                stats: Arc::new(Stats::default()),
                on_rejected: self.on_rejected,
                on_wait: self.on_wait,
            }),
        })
    }
}

/// Reads a limiter: its capacity and counters. One type for every store — in this process,
/// per key, or shared through Redis — so a health page holds the handles of limiters of
/// different kinds in one list.
///
/// ```
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer, StoreLocation};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = RateLimitLayer::new(RateLimitConfig::per_minute(500, 30_000)).unwrap();
/// let handle = layer.handle();
/// let capacity = handle.capacity().unwrap();
/// assert_eq!((capacity.requests, capacity.tokens), (Some(500), Some(30_000)));
/// assert_eq!(handle.location(), StoreLocation::Local);
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitHandle {
    store: Arc<dyn StoreStatus>,
    stats: Arc<Stats>,
    concurrency: Option<Concurrency>,
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("location", &self.store.location())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimitHandle {
    /// What the limit could admit now; `None` for a limit keyed per request (read a key's
    /// capacity from [`RateLimitLayer::store`]). A limit shared through Redis reports what
    /// Redis said at its last answer.
    pub fn capacity(&self) -> Option<Capacity> {
        self.store.unkeyed_capacity()
    }

    /// Where the limit's state lives, and whether a shared store is reachable.
    pub fn location(&self) -> StoreLocation {
        self.store.location()
    }

    /// Requests waiting for capacity now.
    pub fn waiting(&self) -> usize {
        self.stats.waiting.load(Ordering::Relaxed)
    }

    /// Requests admitted so far.
    pub fn admitted(&self) -> u64 {
        self.stats.admitted.load(Ordering::Relaxed)
    }

    /// Requests turned away so far.
    pub fn rejected(&self) -> u64 {
        self.stats.rejected.load(Ordering::Relaxed)
    }

    /// Calls holding a concurrency slot now (`None` without `max_concurrency`): zero once
    /// every call has ended, however it ended — cancelled ones included.
    ///
    /// ```
    /// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(RateLimitConfig { max_concurrency: Some(8), ..RateLimitConfig::default() }).unwrap();
    /// assert_eq!(layer.handle().in_flight(), Some(0));
    /// ```
    pub fn in_flight(&self) -> Option<usize> {
        self.concurrency
            .as_ref()
            .map(|c| c.max - c.semaphore.available_permits())
    }
}

/// A service behind a rate limiter. Calls that fit go at once; in wait mode, others wait
/// (never past `max_wait` nor the request's deadline) in arrival order; in reject mode, or
/// when the wait would be too long, they fail at once with [`LocalRateLimited`] saying when
/// capacity returns. A provider's 429 with a delay pauses the limiter for every sharer; the
/// provider's remaining-capacity headers resynchronise it; the reported usage corrects each
/// call's token estimate (for streams, at their end).
///
/// ```
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};
/// use llm_testkit::ReadyService;
/// use tower::Layer;
///
/// let limited = RateLimitLayer::new(RateLimitConfig::per_minute(60, 100_000)).unwrap().layer(ReadyService::new(()));
/// let _provider: &ReadyService<()> = limited.get_ref();
/// ```
pub struct RateLimit<S, St = LocalStore, KF = NoKey, C = NoTokenCost, Cl = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<St, KF, C, Cl>>,
}

impl<S, St, KF, C, Cl> RateLimit<S, St, KF, C, Cl> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St, KF, C, Cl> Clone for RateLimit<S, St, KF, C, Cl> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, St, KF, C, Cl> fmt::Debug for RateLimit<S, St, KF, C, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St, KF, C, Cl, Req> Service<Req> for RateLimit<S, St, KF, C, Cl>
where
    S: Service<Req> + Clone,
    S::Error: From<LocalRateLimited>,
    S::Response: ReportsUsage + ObserveEnd,
    St: RateLimitStore<KF::Key>,
    KF: KeyOf<Req>,
    C: TokenCost<Req>,
    Cl: Classify<S::Response, S::Error>,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, St, KF, C, Cl>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NOTE: the limit needs the request (its key and token cost): it is decided in call.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::start(&mut self.inner, self.shared.clone(), request)
    }
}
