//! [`BreakerLayer`], its builder, and [`BreakerHandle`].

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{CircuitOpen, ConfigError, DefaultClassifier};
use llm_core::{KeyOf, NoKey};
use tokio::time::Instant;
use tower_layer::Layer;

use crate::config::BreakerConfig;
use crate::handle::BreakerHandle;
use crate::keyed::KeyedBreakerLayer;
use crate::service::Breaker;
use crate::state::{CircuitBreaker, Settings, StateChange};

/// Wraps services in a [`Breaker`]. The layer holds one circuit breaker: every service it
/// builds, and every clone of those, shares it — so axum's per-request clones all see one
/// breaker.
///
/// ```
/// use std::time::Duration;
/// use llm_breaker_layer::{BreakerConfig, BreakerLayer, State};
/// use llm_core::ErrorKind;
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = BreakerLayer::builder()
///     .config(BreakerConfig { consecutive_failures: Some(3), ..BreakerConfig::standard() })
///     .name("openai/gpt-4o")
///     .build()
///     .unwrap();
/// let handle = layer.handle();
/// let (provider, calls) = ScriptedService::<u32>::always(Step::fail(ErrorKind::ServerError));
/// let svc = layer.layer(provider);
///
/// for i in 0..3 {
///     assert_eq!(svc.clone().oneshot(i).await.unwrap_err().kind(), ErrorKind::ServerError);
/// }
/// assert_eq!(handle.state(), State::Open);
/// // Open: rejected at once, without calling the provider.
/// let err = svc.clone().oneshot(3).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
/// assert_eq!(calls.call_count(), 3);
/// # }
/// ```
pub struct BreakerLayer<C = DefaultClassifier> {
    breaker: Arc<CircuitBreaker>,
    classifier: C,
}

impl BreakerLayer {
    /// A builder starting from [`BreakerConfig::standard`].
    pub fn builder() -> BreakerLayerBuilder {
        BreakerLayerBuilder {
            key_of: NoKey,
            config: BreakerConfig::standard(),
            name: None,
            on_state_change: None,
            on_rejected: None,
            classifier: DefaultClassifier,
            max_keys: 10_000,
            idle_after: Duration::from_secs(600),
            #[cfg(feature = "redis")]
            shared: None,
        }
    }

    /// A layer with the settings of `config`.
    pub fn new(config: BreakerConfig) -> Result<Self, ConfigError> {
        BreakerLayer::builder().config(config).build()
    }

    /// The [`BreakerConfig::standard`] preset.
    pub fn standard() -> Self {
        BreakerLayer::new(BreakerConfig::standard()).expect("presets are valid configurations")
    }
}

impl<C> BreakerLayer<C> {
    /// Reads and controls the layer's breaker.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.breaker.clone())
    }
}

impl<C: Clone> Clone for BreakerLayer<C> {
    fn clone(&self) -> Self {
        BreakerLayer {
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for BreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayer")
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for BreakerLayer<C> {
    type Service = Breaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Breaker::from_parts(inner, self.breaker.clone(), self.classifier.clone())
    }
}

/// Builds a [`BreakerLayer`] (or, after [`keyed_by`](Self::keyed_by), a breaker per key).
/// [`build`](Self::build) checks every setting and names the field at fault.
///
/// ```
/// use llm_breaker_layer::{BreakerConfig, BreakerLayer};
///
/// let err = BreakerLayer::builder()
///     .config(BreakerConfig { half_open_probes: 0, ..BreakerConfig::standard() })
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "half_open_probes");
/// ```
pub struct BreakerLayerBuilder<C = DefaultClassifier, KF = NoKey> {
    key_of: KF,
    config: BreakerConfig,
    name: Option<Arc<str>>,
    on_state_change: Option<crate::state::OnStateChange>,
    on_rejected: Option<crate::state::OnRejected>,
    classifier: C,
    max_keys: usize,
    idle_after: Duration,
    #[cfg(feature = "redis")]
    shared: Option<crate::RedisConfig>,
}

impl<C, KF> fmt::Debug for BreakerLayerBuilder<C, KF> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerLayerBuilder")
            .field("config", &self.config)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<C, KF> BreakerLayerBuilder<C, KF> {
    /// Replaces every setting with `config`.
    #[must_use]
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Names the breaker (in `CircuitOpen` errors, logs and hooks): a provider and model, a host.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Called on every state change, after the change (the hook may read the breaker).
    #[must_use]
    pub fn on_state_change(mut self, hook: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.on_state_change = Some(Arc::new(hook));
        self
    }

    /// Called for every call the breaker rejects.
    #[must_use]
    pub fn on_rejected(mut self, hook: impl Fn(&CircuitOpen) + Send + Sync + 'static) -> Self {
        self.on_rejected = Some(Arc::new(hook));
        self
    }

    /// For keyed breakers: the most keys kept at once (default 10,000). At the limit, idle
    /// keys are evicted first, then the least recently used.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// For keyed breakers: a key unused this long may be evicted (default 10 min).
    #[must_use]
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// Shares the breaker's state with every instance using the same Redis and prefix
    /// (feature `redis`): a trip or a recovery decided by one is taken on by all, and a
    /// breaker created later starts from the shared state. Admitting and recording calls
    /// never wait for Redis; while it is unreachable each instance decides alone.
    ///
    /// A single breaker needs a [`name`](Self::name) (its key in Redis); keyed breakers
    /// are named by their keys. The layer must be built inside a Tokio runtime: it keeps a
    /// background task on that runtime, which ends when the layer and its services are
    /// dropped (or the runtime shuts down: the breaker then decides alone).
    ///
    /// ```no_run
    /// use llm_breaker_layer::{BreakerLayer, RedisConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = BreakerLayer::builder()
    ///     .name("openai/gpt-4o")
    ///     .shared(RedisConfig::new("redis://127.0.0.1:6379"))
    ///     .build()
    ///     .unwrap();
    /// assert!(layer.handle().is_shared());
    /// # }
    /// ```
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn shared(mut self, config: crate::RedisConfig) -> Self {
        self.shared = Some(config);
        self
    }

    /// Classifies results with `classifier` instead of [`DefaultClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> BreakerLayerBuilder<C2, KF> {
        BreakerLayerBuilder {
            key_of: self.key_of,
            config: self.config,
            name: self.name,
            on_state_change: self.on_state_change,
            on_rejected: self.on_rejected,
            classifier,
            max_keys: self.max_keys,
            idle_after: self.idle_after,
            #[cfg(feature = "redis")]
            shared: self.shared,
        }
    }

    /// One breaker per key that `key_of` extracts from each request (per model, per
    /// host), created on first use, with bounded memory (`max_keys`, `idle_after`); each is
    /// named by its key.
    pub fn keyed_by<Req, K, F>(self, key_of: F) -> BreakerLayerBuilder<C, PerKey<K, F>>
    where
        F: KeyOf<Req, Key = K>,
    {
        BreakerLayerBuilder {
            key_of: PerKey {
                key_of,
                key: PhantomData,
            },
            config: self.config,
            name: self.name,
            on_state_change: self.on_state_change,
            on_rejected: self.on_rejected,
            classifier: self.classifier,
            max_keys: self.max_keys,
            idle_after: self.idle_after,
            #[cfg(feature = "redis")]
            shared: self.shared,
        }
    }

    fn settings(&self) -> Result<Arc<Settings>, ConfigError> {
        let mut settings = Settings::new(self.config.clone())?;
        settings.on_state_change = self.on_state_change.clone();
        settings.on_rejected = self.on_rejected.clone();
        #[cfg(feature = "redis")]
        if let Some(config) = &self.shared {
            settings.shared = Some(Arc::new(crate::shared::SharedLink::start(config)?));
        }
        Ok(Arc::new(settings))
    }
}

impl<C> BreakerLayerBuilder<C, NoKey> {
    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<BreakerLayer<C>, ConfigError> {
        #[cfg(feature = "redis")]
        if self.shared.is_some() && self.name.is_none() {
            return Err(ConfigError::new(
                "name",
                "a shared breaker needs a name: breakers with the same name share one state",
            ));
        }
        let settings = self.settings()?;
        let breaker = Arc::new(CircuitBreaker::with_settings(
            settings,
            self.name.clone(),
            Instant::now(),
        ));
        breaker.follow_shared();
        Ok(BreakerLayer {
            breaker,
            classifier: self.classifier,
        })
    }
}

impl<C, K, F> BreakerLayerBuilder<C, PerKey<K, F>> {
    /// Builds a layer keeping one breaker per key that `key_of` extracts from each request
    /// (a provider and model, a host), each named by its key.
    ///
    /// ```
    /// use llm_breaker_layer::BreakerLayer;
    ///
    /// let per_host = BreakerLayer::builder()
    ///     .max_keys(1_000)
    ///     .keyed_by(|req: &http::Request<String>| req.uri().host().unwrap_or("").to_owned()).build()
    ///     .unwrap();
    /// assert_eq!(per_host.handle().len(), 0);
    /// ```
    pub fn build(self) -> Result<KeyedBreakerLayer<K, F, C>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        let settings = self.settings()?;
        Ok(KeyedBreakerLayer::new(
            settings,
            self.key_of.key_of,
            self.classifier,
            self.max_keys,
            self.idle_after,
        ))
    }
}

/// A builder's keying: one breaker per key of type `K` that `F` extracts from each request
/// (see [`BreakerLayerBuilder::keyed_by`]).
pub struct PerKey<K, F> {
    key_of: F,
    key: PhantomData<fn() -> K>,
}

impl<K, F> fmt::Debug for PerKey<K, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PerKey(..)")
    }
}
