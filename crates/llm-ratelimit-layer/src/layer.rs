//! [`RateLimitLayer`], its builder, [`RateLimit`], and [`RateLimitHandle`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{ConfigError, DefaultClassifier, LocalRateLimited};
use llm_core::{KeyOf, NoKey};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use crate::clock::Clock;
use crate::config::RateLimitConfig;
use crate::cost::NoTokenCost;
use crate::handle::RateLimitHandle;
use crate::service::RateLimit;
use crate::shared::{Concurrency, OnRejected, OnWait, Shared, Stats};
use crate::spec::{Custom, InProcess, KeyedBy, StoreSpec};
use crate::store::{LocalStore, StoreStatus};

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
            name: Arc::from(""),
            store: InProcess::default(),
            key_of: NoKey,
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

/// Builds a [`RateLimitLayer`]. Where its state lives and how requests are keyed are chosen
/// on the builder — [`keyed_by`](Self::keyed_by), [`redis`](Self::redis),
/// [`clock`](Self::clock), [`store`](Self::store) — and one [`build`](Self::build) makes the
/// layer; it checks every setting and names the field at fault.
///
/// ```
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};
///
/// // One limit for every request, in this process (the default).
/// let one = RateLimitLayer::builder().config(RateLimitConfig::per_minute(500, 30_000)).build().unwrap();
/// // One limit per model.
/// let per_model = RateLimitLayer::builder()
///     .config(RateLimitConfig::per_minute(60, 10_000))
///     .keyed_by(|model: &String| model.clone())
///     .build()
///     .unwrap();
/// # let _ = (one, per_model);
/// ```
pub struct RateLimitLayerBuilder<
    C = NoTokenCost,
    Cl = DefaultClassifier,
    St = InProcess,
    KF = NoKey,
> {
    config: RateLimitConfig,
    cost: C,
    classifier: Cl,
    on_rejected: Option<OnRejected>,
    on_wait: Option<OnWait>,
    name: Arc<str>,
    store: St,
    key_of: KF,
}

impl<C, Cl, St, KF> fmt::Debug for RateLimitLayerBuilder<C, Cl, St, KF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<C, Cl, St, KF> RateLimitLayerBuilder<C, Cl, St, KF> {
    /// Names the limiter in its logs and its metrics' `limiter` label
    /// (`llm_core::metrics`). Unnamed, the label is empty.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The limits and mode.
    #[must_use]
    pub fn config(mut self, config: RateLimitConfig) -> Self {
        self.config = config;
        self
    }

    /// Prices requests in tokens before the call (for chat requests: `EstimatedCost`, the
    /// prompt's estimate plus `max_tokens`).
    pub fn token_cost<C2>(self, cost: C2) -> RateLimitLayerBuilder<C2, Cl, St, KF> {
        self.map(|_, classifier, store, key_of| (cost, classifier, store, key_of))
    }

    /// Classifies responses (for provider feedback) with `classifier`.
    pub fn classifier<Cl2>(self, classifier: Cl2) -> RateLimitLayerBuilder<C, Cl2, St, KF> {
        self.map(|cost, _, store, key_of| (cost, classifier, store, key_of))
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

    /// A limit per key that `key_of` extracts from each request (an API key, a user, a
    /// model): in this process with bounded memory (`max_keys`, `idle_after`), or through
    /// Redis with [`redis`](Self::redis), where idle keys expire.
    pub fn keyed_by<Req, K, F>(self, key_of: F) -> RateLimitLayerBuilder<C, Cl, St::Keyed, F>
    where
        F: KeyOf<Req, Key = K>,
        St: KeyedBy<K>,
    {
        self.map(|cost, classifier, store, _| (cost, classifier, store.keyed(), key_of))
    }

    /// Keeps the state in Redis: one limit shared by every instance using the same URL and
    /// key prefix (feature `redis`). See [`RedisStore`](crate::RedisStore).
    ///
    /// ```no_run
    /// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer, RedisConfig};
    ///
    /// let shared = RateLimitLayer::builder()
    ///     .config(RateLimitConfig::per_minute(500, 30_000))
    ///     .redis(&RedisConfig::new("redis://127.0.0.1:6379"))
    ///     .build()
    ///     .unwrap();
    /// ```
    #[cfg(feature = "redis")]
    pub fn redis(self, redis: &crate::RedisConfig) -> RateLimitLayerBuilder<C, Cl, St::Shared, KF>
    where
        St: crate::spec::ThroughRedis,
    {
        self.map(|cost, classifier, store, key_of| {
            (cost, classifier, store.through(redis.clone()), key_of)
        })
    }

    /// Keeps the state in `store`, a [`RateLimitStore`](crate::RateLimitStore) of your own
    /// (the seam another shared store plugs into); it handles the keys, if any.
    pub fn store<St2>(self, store: St2) -> RateLimitLayerBuilder<C, Cl, Custom<St2>, KF> {
        self.map(|cost, classifier, _store, key_of| (cost, classifier, Custom(store), key_of))
    }

    /// The builder with its type-changing parts replaced; the settings and hooks stay.
    fn map<C2, Cl2, St2, KF2>(
        self,
        parts: impl FnOnce(C, Cl, St, KF) -> (C2, Cl2, St2, KF2),
    ) -> RateLimitLayerBuilder<C2, Cl2, St2, KF2> {
        let (cost, classifier, store, key_of) =
            parts(self.cost, self.classifier, self.store, self.key_of);
        RateLimitLayerBuilder {
            config: self.config,
            cost,
            classifier,
            on_rejected: self.on_rejected,
            on_wait: self.on_wait,
            name: self.name,
            store,
            key_of,
        }
    }

    /// Checks every setting and builds the layer over the chosen store.
    pub fn build(self) -> Result<RateLimitLayer<St::Store, KF, C, Cl>, ConfigError>
    where
        St: StoreSpec,
    {
        self.config.limits()?;
        let store = self.store.make(&self.config)?;
        let concurrency = self.config.max_concurrency.map(|n| Concurrency {
            semaphore: Arc::new(Semaphore::new(n as usize)),
            max: n as usize,
        });
        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                key_of: self.key_of,
                cost: self.cost,
                classifier: self.classifier,
                mode: self.config.mode,
                max_wait: self.config.max_wait,
                concurrency,
                stats: Arc::new(Stats::default()),
                on_rejected: self.on_rejected,
                on_wait: self.on_wait,
                meters: crate::metrics::Meters::new(&self.name),
            }),
        })
    }
}

impl<C, Cl> RateLimitLayerBuilder<C, Cl, InProcess, NoKey> {
    /// Reads the time from `clock` instead of tokio's (with the `quanta` feature,
    /// `QuantaClock` makes admission several times cheaper). For a limit in this process
    /// under one key.
    pub fn clock<Clk: Clock>(
        self,
        clock: Clk,
    ) -> RateLimitLayerBuilder<C, Cl, InProcess<Clk>, NoKey> {
        self.map(|cost, classifier, _store, key_of| (cost, classifier, InProcess(clock), key_of))
    }
}
