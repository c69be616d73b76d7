//! Ergonomic stacking: [`ServiceBuilderExt`] for `tower::ServiceBuilder`, and [`LlmServiceExt`]
//! so a stack reads `provider.with_retry(…).with_breaker(…)`.

#[cfg(any(
    feature = "retry",
    feature = "breaker",
    feature = "ratelimit",
    feature = "fallback"
))]
use llm_core::ConfigError;
#[cfg(any(
    feature = "retry",
    feature = "breaker",
    feature = "ratelimit",
    feature = "fallback"
))]
use tower_layer::Layer;
#[cfg(any(feature = "retry", feature = "breaker", feature = "ratelimit"))]
use tower_layer::Stack;

#[cfg(feature = "breaker")]
use llm_breaker_layer::{Breaker, BreakerConfig, BreakerLayer};
#[cfg(feature = "ratelimit")]
use llm_core::EstimatedCost;
#[cfg(feature = "fallback")]
use llm_fallback_layer::{Fallback, Target};
#[cfg(feature = "ratelimit")]
use llm_ratelimit_layer::{LocalStore, NoKey, RateLimit, RateLimitConfig, RateLimitLayer};
#[cfg(feature = "retry")]
use llm_retry_layer::{Retry, RetryConfig, RetryLayer};

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// A retry layer, or what one is built from: a [`RetryConfig`] (presets:
/// `RetryConfig::standard()`, `::streaming()`, `::aggressive()`) or a [`RetryLayer`] built
/// with hooks.
#[cfg(feature = "retry")]
pub trait IntoRetryLayer {
    /// The layer.
    type Layer;
    /// Checks the settings and builds the layer; errors name the field at fault.
    fn into_retry_layer(self) -> Result<Self::Layer, ConfigError>;
}

#[cfg(feature = "retry")]
impl IntoRetryLayer for RetryConfig {
    type Layer = RetryLayer;
    fn into_retry_layer(self) -> Result<RetryLayer, ConfigError> {
        RetryLayer::new(self)
    }
}

#[cfg(feature = "retry")]
impl<C, R, P> IntoRetryLayer for RetryLayer<C, R, P> {
    type Layer = Self;
    fn into_retry_layer(self) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

/// A circuit breaker layer, or a [`BreakerConfig`] (preset: `BreakerConfig::standard()`).
#[cfg(feature = "breaker")]
pub trait IntoBreakerLayer {
    /// The layer.
    type Layer;
    /// Checks the settings and builds the layer; errors name the field at fault.
    fn into_breaker_layer(self) -> Result<Self::Layer, ConfigError>;
}

#[cfg(feature = "breaker")]
impl IntoBreakerLayer for BreakerConfig {
    type Layer = BreakerLayer;
    fn into_breaker_layer(self) -> Result<BreakerLayer, ConfigError> {
        BreakerLayer::new(self)
    }
}

#[cfg(feature = "breaker")]
impl<C> IntoBreakerLayer for BreakerLayer<C> {
    type Layer = Self;
    fn into_breaker_layer(self) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

/// A rate limit layer, or a [`RateLimitConfig`] (e.g. `RateLimitConfig::per_minute(500,
/// 30_000)`). From a configuration, requests are priced in tokens before the call with
/// [`EstimatedCost`] (the prompt's estimate plus `max_tokens`), corrected from the reported
/// usage after; build a layer to price them otherwise.
#[cfg(feature = "ratelimit")]
pub trait IntoRateLimitLayer {
    /// The layer.
    type Layer;
    /// Checks the settings and builds the layer; errors name the field at fault.
    fn into_rate_limit_layer(self) -> Result<Self::Layer, ConfigError>;
}

#[cfg(feature = "ratelimit")]
impl IntoRateLimitLayer for RateLimitConfig {
    type Layer = RateLimitLayer<LocalStore, NoKey, EstimatedCost>;
    fn into_rate_limit_layer(self) -> Result<Self::Layer, ConfigError> {
        RateLimitLayer::builder()
            .config(self)
            .token_cost(EstimatedCost::approximate())
            .build()
    }
}

#[cfg(feature = "ratelimit")]
impl<St, KF, C, Cl> IntoRateLimitLayer for RateLimitLayer<St, KF, C, Cl> {
    type Layer = Self;
    fn into_rate_limit_layer(self) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

/// Adds llm-tower's layers to `tower::ServiceBuilder` from a configuration or preset, in
/// the recommended order (outermost first: retry, breaker, rate limit — see the crate's "Layer order"), and ends a
/// stack in a fallback chain. Each method checks its settings: an invalid configuration is
/// an error naming the field, at start-up, and `?` keeps the chain readable.
///
/// The names differ from tower's own `retry` and `rate_limit` builder methods, which take
/// tower's policies and would be picked first.
///
/// ```
/// use llm_tower::prelude::*;
/// use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (provider, _) = ScriptedService::<TestRequest>::new([Step::fail(ErrorKind::Overloaded), Step::ok(TestResponse::new("ok"))]);
/// let svc = ServiceBuilder::new()
///     .retrying(RetryConfig::standard())?
///     .circuit_breaker(BreakerConfig::standard())?
///     .rate_limited(RateLimitConfig::per_minute(500, 30_000))?
///     .service(provider);
/// assert_eq!(svc.oneshot(TestRequest::new("gpt-4o")).await?.body(), "ok");
///
/// // A configuration that cannot work is refused, naming the field.
/// let bad = RetryConfig { max_retries: 1_000, ..RetryConfig::standard() };
/// let err = ServiceBuilder::new().retrying(bad).unwrap_err();
/// assert!(err.to_string().contains("max_retries"), "{err}");
/// # Ok(()) }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a retry layer, from a [`RetryConfig`] or a built [`RetryLayer`].
    #[cfg(feature = "retry")]
    fn retrying<T: IntoRetryLayer>(
        self,
        retry: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError>;

    /// Adds a circuit breaker, from a [`BreakerConfig`] or a built [`BreakerLayer`].
    #[cfg(feature = "breaker")]
    fn circuit_breaker<T: IntoBreakerLayer>(
        self,
        breaker: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError>;

    /// Adds a rate limiter, from a [`RateLimitConfig`] or a built [`RateLimitLayer`].
    #[cfg(feature = "ratelimit")]
    fn rate_limited<T: IntoRateLimitLayer>(
        self,
        limit: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError>;

    /// Ends the stack in a fallback chain over `targets`, tried in order: the layers added
    /// so far wrap the whole chain (a deadline or a concurrency limit for the request, say).
    #[cfg(feature = "fallback")]
    fn fallback<S, Req>(self, targets: Vec<Target<S, Req>>) -> Result<L::Service, ConfigError>
    where
        S: tower_service::Service<Req>,
        L: Layer<Fallback<S, Req>>;
}

impl<L> ServiceBuilderExt<L> for tower::ServiceBuilder<L> {
    #[cfg(feature = "retry")]
    fn retrying<T: IntoRetryLayer>(
        self,
        retry: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError> {
        Ok(self.layer(retry.into_retry_layer()?))
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker<T: IntoBreakerLayer>(
        self,
        breaker: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError> {
        Ok(self.layer(breaker.into_breaker_layer()?))
    }

    #[cfg(feature = "ratelimit")]
    fn rate_limited<T: IntoRateLimitLayer>(
        self,
        limit: T,
    ) -> Result<tower::ServiceBuilder<Stack<T::Layer, L>>, ConfigError> {
        Ok(self.layer(limit.into_rate_limit_layer()?))
    }

    #[cfg(feature = "fallback")]
    fn fallback<S, Req>(self, targets: Vec<Target<S, Req>>) -> Result<L::Service, ConfigError>
    where
        // NOTE: bounding `S` here lets a boxed service name the request type, so a chain
        // built before its first call needs no annotation.
        S: tower_service::Service<Req>,
        L: Layer<Fallback<S, Req>>,
    {
        Ok(self.service(Fallback::builder(targets).build()?))
    }
}

/// Wraps any service in llm-tower's layers, method by method: build a stack from the
/// provider outwards.
///
/// ```
/// use llm_tower::prelude::*;
/// use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (openai, _) = ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::QuotaExceeded));
/// let (backup, _) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("from the backup")));
/// let svc = openai
///     .with_fallbacks("openai", vec![Target::new("openrouter", backup).model("openai/gpt-4o")])
///     .unwrap();
/// let answer = svc.oneshot(TestRequest::new("gpt-4o")).await.unwrap();
/// assert_eq!(answer.body(), "from the backup");
/// # }
/// ```
pub trait LlmServiceExt<Req>: tower_service::Service<Req> + Sized {
    /// Retries this service's failed calls.
    #[cfg(feature = "retry")]
    fn with_retry<C: Clone, R: Clone, P: Clone>(
        self,
        layer: RetryLayer<C, R, P>,
    ) -> Retry<Self, C, R, P> {
        layer.layer(self)
    }

    /// Puts this service behind a circuit breaker.
    #[cfg(feature = "breaker")]
    fn with_breaker<C: Clone>(self, layer: BreakerLayer<C>) -> Breaker<Self, C> {
        layer.layer(self)
    }

    /// Puts this service behind a rate limiter.
    #[cfg(feature = "ratelimit")]
    fn with_rate_limit<St, KF, C, Cl>(
        self,
        layer: RateLimitLayer<St, KF, C, Cl>,
    ) -> RateLimit<Self, St, KF, C, Cl> {
        layer.layer(self)
    }

    /// Makes this service the first target, named `name`, of a fallback chain over
    /// `backups` (targets share one service type: box different stacks with
    /// `tower::util::BoxCloneSyncService`, which is also `Sync` as axum state needs).
    #[cfg(feature = "fallback")]
    fn with_fallbacks(
        self,
        name: &str,
        backups: Vec<Target<Self, Req>>,
    ) -> Result<Fallback<Self, Req>, ConfigError> {
        let mut targets = Vec::with_capacity(backups.len() + 1);
        targets.push(Target::new(name, self));
        targets.extend(backups);
        Fallback::builder(targets).build()
    }
}

impl<S, Req> LlmServiceExt<Req> for S where S: tower_service::Service<Req> {}
