//! [`RateLimitLayer`], its builder, [`RateLimit`], and [`RateLimitHandle`].

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{ConfigError, DefaultClassifier, LocalRateLimited};
use llm_core::{KeyOf, NoKey};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use crate::clock::{Clock, TokioClock};
use crate::config::RateLimitConfig;
use crate::cost::NoTokenCost;
use crate::handle::RateLimitHandle;
use crate::service::RateLimit;
use crate::shared::{Concurrency, OnRejected, OnWait, Shared, Stats};
use crate::store::{KeyedLocalStore, LocalStore, StoreStatus};

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
        RateLimitHandle::new(
            self.shared.store.clone(),
            self.shared.stats.clone(),
            self.shared.concurrency.clone(),
        )
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
        RateLimit::new(inner, self.shared.clone())
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
