//! Ergonomic stacking: [`ServiceBuilderExt`] for `tower::ServiceBuilder`, and [`LlmServiceExt`]
//! so a stack reads `provider.with_retry(…).with_breaker(…)`.

#[cfg(any(feature = "retry", feature = "breaker", feature = "ratelimit"))]
use tower_layer::{Layer, Stack};

#[cfg(feature = "breaker")]
use llm_breaker_layer::{Breaker, BreakerLayer};
#[cfg(feature = "fallback")]
use llm_fallback_layer::{Fallback, Target};
#[cfg(feature = "ratelimit")]
use llm_ratelimit_layer::{RateLimit, RateLimitLayer};
#[cfg(feature = "retry")]
use llm_retry_layer::{Retry, RetryLayer};

mod sealed {
    pub trait Sealed {}
    impl<L> Sealed for tower::ServiceBuilder<L> {}
}

/// Adds llm-tower's layers to `tower::ServiceBuilder` by name, in the order DESIGN.md
/// recommends (outermost first: retry, breaker, rate limit). The names differ from
/// tower's own `retry` and `rate_limit` builder methods, which take tower's policies.
///
/// ```
/// use llm_tower::prelude::*;
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (provider, _) = ScriptedService::<u32>::new([Step::fail(ErrorKind::Overloaded), Step::ok(TestResponse::new("ok"))]);
/// let svc = ServiceBuilder::new()
///     .retrying(RetryLayer::standard())
///     .circuit_breaker(BreakerLayer::standard())
///     .rate_limited(RateLimitLayer::new(RateLimitConfig::per_minute(500, 30_000)).unwrap())
///     .service(provider);
/// assert_eq!(svc.oneshot(1).await.unwrap().body(), "ok");
/// # }
/// ```
pub trait ServiceBuilderExt<L>: sealed::Sealed + Sized {
    /// Adds a retry layer.
    #[cfg(feature = "retry")]
    fn retrying<C, R>(
        self,
        layer: RetryLayer<C, R>,
    ) -> tower::ServiceBuilder<Stack<RetryLayer<C, R>, L>>;

    /// Adds a circuit breaker.
    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: BreakerLayer<C>,
    ) -> tower::ServiceBuilder<Stack<BreakerLayer<C>, L>>;

    /// Adds a rate limiter.
    #[cfg(feature = "ratelimit")]
    fn rate_limited<St, KF, C, Cl>(
        self,
        layer: RateLimitLayer<St, KF, C, Cl>,
    ) -> tower::ServiceBuilder<Stack<RateLimitLayer<St, KF, C, Cl>, L>>;
}

impl<L> ServiceBuilderExt<L> for tower::ServiceBuilder<L> {
    #[cfg(feature = "retry")]
    fn retrying<C, R>(
        self,
        layer: RetryLayer<C, R>,
    ) -> tower::ServiceBuilder<Stack<RetryLayer<C, R>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "breaker")]
    fn circuit_breaker<C>(
        self,
        layer: BreakerLayer<C>,
    ) -> tower::ServiceBuilder<Stack<BreakerLayer<C>, L>> {
        self.layer(layer)
    }

    #[cfg(feature = "ratelimit")]
    fn rate_limited<St, KF, C, Cl>(
        self,
        layer: RateLimitLayer<St, KF, C, Cl>,
    ) -> tower::ServiceBuilder<Stack<RateLimitLayer<St, KF, C, Cl>, L>> {
        self.layer(layer)
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
    fn with_retry<C: Clone, R: Clone>(self, layer: RetryLayer<C, R>) -> Retry<Self, C, R> {
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
    /// `tower::util::BoxCloneService`).
    #[cfg(feature = "fallback")]
    fn with_fallbacks(
        self,
        name: &str,
        backups: Vec<Target<Self, Req>>,
    ) -> Result<Fallback<Self, Req>, llm_core::ConfigError> {
        let mut targets = Vec::with_capacity(backups.len() + 1);
        targets.push(Target::new(name, self));
        targets.extend(backups);
        Fallback::builder(targets).build()
    }
}

impl<S, Req> LlmServiceExt<Req> for S where S: tower_service::Service<Req> {}
