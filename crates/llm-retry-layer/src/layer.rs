//! [`RetryLayer`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{ConfigError, DefaultClassifier, ErrorKinds, Outcome};
use tower_layer::Layer;

use crate::budget::RetryBudget;
use crate::config::{RetryConfig, Strategy};
use crate::policy::{GiveUp, OnGiveUp, OnRetry, Policy, RetryEvent, RetryIf};
use crate::retry_policy::KeepRequest;
use crate::service::Retry;
use llm_core::UseClone;
use llm_core::backoff::{Backoff, Jitter};

/// Applies retries to a service: wraps it in [`Retry`].
///
/// Build one with [`RetryLayer::builder`], from a [`RetryConfig`] with [`RetryLayer::new`],
/// or take a preset. Every clone of the layer, and every service it builds, shares one
/// policy and one retry budget.
///
/// ```
/// use std::time::Duration;
/// use llm_core::ErrorKind;
/// use llm_retry_layer::{Backoff, Jitter, RetryLayer};
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (provider, calls) = ScriptedService::<&str>::new([
///     Step::fail(ErrorKind::Overloaded),
///     Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(2)),
///     Step::ok(TestResponse::new("hello")),
/// ]);
/// let retry = RetryLayer::builder()
///     .max_retries(3)
///     .backoff(Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(5)))
///     .jitter(Jitter::None)
///     .build()
///     .unwrap();
/// let svc = ServiceBuilder::new().layer(retry).service(provider);
///
/// let res = svc.oneshot("hi").await.unwrap();
/// assert_eq!(res.body(), "hello");
/// // 100 ms of backoff, then the server's 2 s (longer than the 200 ms backoff).
/// assert_eq!(calls.gaps(), [Duration::from_millis(100), Duration::from_secs(2)]);
/// # }
/// ```
pub struct RetryLayer<C = DefaultClassifier, R = UseClone, P = KeepRequest> {
    policy: Arc<Policy>,
    classifier: C,
    cloner: R,
    prepare: P,
}

impl RetryLayer {
    /// A builder starting from [`RetryConfig::standard`].
    pub fn builder() -> RetryLayerBuilder {
        RetryLayerBuilder::new(RetryConfig::standard())
    }

    /// A layer with the settings of `config`.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        RetryLayerBuilder::new(config).build()
    }

    /// The [`RetryConfig::standard`] preset.
    ///
    /// ```
    /// let layer = llm_retry_layer::RetryLayer::standard();
    /// assert!(layer.budget().is_some());
    /// ```
    pub fn standard() -> Self {
        RetryLayer::preset(RetryConfig::standard())
    }

    /// The [`RetryConfig::streaming`] preset.
    pub fn streaming() -> Self {
        RetryLayer::preset(RetryConfig::streaming())
    }

    /// The [`RetryConfig::aggressive`] preset.
    pub fn aggressive() -> Self {
        RetryLayer::preset(RetryConfig::aggressive())
    }

    fn preset(config: RetryConfig) -> Self {
        RetryLayer::new(config).expect("presets are valid configurations")
    }
}

impl<C, R, P> RetryLayer<C, R, P> {
    /// The retry budget every service of this layer spends, if it has one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.policy.budget.as_ref()
    }
}

impl<C: Clone, R: Clone, P: Clone> Clone for RetryLayer<C, R, P> {
    fn clone(&self) -> Self {
        RetryLayer {
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
            prepare: self.prepare.clone(),
        }
    }
}

impl<C, R, P> fmt::Debug for RetryLayer<C, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone, R: Clone, P: Clone> Layer<S> for RetryLayer<C, R, P> {
    type Service = Retry<S, C, R, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_parts(
            inner,
            self.policy.clone(),
            self.classifier.clone(),
            self.cloner.clone(),
            self.prepare.clone(),
        )
    }
}

/// Builds a [`RetryLayer`]; [`build`](Self::build) checks every setting and names the field
/// at fault.
///
/// ```
/// use std::time::Duration;
/// use llm_core::ErrorKind;
/// use llm_retry_layer::RetryLayer;
///
/// let err = RetryLayer::builder().max_retries(1_000).build().unwrap_err();
/// assert_eq!(err.field(), "max_retries");
///
/// let layer = RetryLayer::builder()
///     .stop_on(ErrorKind::RateLimited)        // let the fallback handle 429s
///     .max_retry_after(Duration::from_secs(30))
///     .on_retry(|event| eprintln!("retry {} in {:?} after {}", event.attempt, event.delay, event.kind))
///     .build()
///     .unwrap();
/// ```
pub struct RetryLayerBuilder<C = DefaultClassifier, R = UseClone, P = KeepRequest> {
    config: RetryConfig,
    custom_backoff: Option<Backoff>,
    budget: Option<RetryBudget>,
    retry_if: Option<RetryIf>,
    on_retry: Option<OnRetry>,
    on_give_up: Option<OnGiveUp>,
    name: Arc<str>,
    classifier: C,
    cloner: R,
    prepare: P,
}

impl<C, R, P> fmt::Debug for RetryLayerBuilder<C, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl RetryLayerBuilder {
    fn new(config: RetryConfig) -> Self {
        RetryLayerBuilder {
            config,
            custom_backoff: None,
            budget: None,
            retry_if: None,
            on_retry: None,
            on_give_up: None,
            name: Arc::from(""),
            classifier: DefaultClassifier,
            cloner: UseClone,
            prepare: KeepRequest,
        }
    }
}

impl<C, R, P> RetryLayerBuilder<C, R, P> {
    /// Replaces every setting with `config` (hooks, classifier and request cloner stay).
    #[must_use]
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.config = config;
        self.custom_backoff = None;
        self
    }

    /// Retries after the first attempt; 0 disables retrying.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    /// How delays grow.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.custom_backoff = None;
        match backoff {
            Backoff::Fixed { delay } => {
                self.config.strategy = Strategy::Fixed;
                self.config.base_delay = delay;
                self.config.max_delay = delay;
            }
            Backoff::Linear { initial, step, max } => {
                self.config.strategy = Strategy::Linear;
                self.config.base_delay = initial;
                self.config.step = Some(step);
                self.config.max_delay = max;
            }
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                self.config.strategy = Strategy::Exponential;
                self.config.base_delay = initial;
                self.config.multiplier = multiplier;
                self.config.max_delay = max;
            }
            // Custom strategies, and any kind a later llm-core adds, are kept as they are.
            other => self.custom_backoff = Some(other),
        }
        self
    }

    /// Randomisation of each delay (default [`Jitter::Full`]).
    #[must_use]
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Retries exactly these kinds (default: [`ErrorKinds::RETRYABLE`]).
    #[must_use]
    pub fn retry_on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.config.retry_on = kinds.into();
        self
    }

    /// Never retries these kinds.
    #[must_use]
    pub fn stop_on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.config.stop_on = self.config.stop_on.union(kinds.into());
        self
    }

    /// Decides retryability with `predicate` instead of the kind sets. Limits, budgets and
    /// deadlines still apply.
    #[must_use]
    pub fn retry_if(
        mut self,
        predicate: impl Fn(&Outcome) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(predicate));
        self
    }

    /// A server delay longer than this ends retrying at once (default 120 s).
    #[must_use]
    pub fn max_retry_after(mut self, limit: Duration) -> Self {
        self.config.max_retry_after = limit;
        self
    }

    /// No retry starts later than `limit` after the first attempt.
    #[must_use]
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.config.max_elapsed = Some(limit);
        self
    }

    /// With fallback targets left, these kinds hand over at once (default: timeouts).
    #[must_use]
    pub fn failover_on(mut self, kinds: impl Into<ErrorKinds>) -> Self {
        self.config.failover_on = kinds.into();
        self
    }

    /// With fallback targets left, a wait longer than `delay` hands over (default 1 s).
    #[must_use]
    pub fn failover_delay(mut self, delay: Duration) -> Self {
        self.config.failover_delay = delay;
        self
    }

    /// Spends `budget`, which may be shared with other layers, instead of the configured one.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self.config.budget.enabled = true;
        self
    }

    /// Retries without a process-wide budget.
    #[must_use]
    pub fn no_budget(mut self) -> Self {
        self.budget = None;
        self.config.budget.enabled = false;
        self
    }

    /// Names the layer in its logs and its metrics' `upstream` label (`llm_core::metrics`):
    /// the upstream it retries, say. Unnamed, the label is empty.
    #[must_use]
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Called before each retry's wait.
    #[must_use]
    pub fn on_retry(mut self, hook: impl Fn(&RetryEvent) + Send + Sync + 'static) -> Self {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Called when a failure ends the call (for whatever [`GiveUpReason`](crate::GiveUpReason)).
    #[must_use]
    pub fn on_give_up(mut self, hook: impl Fn(&GiveUp) + Send + Sync + 'static) -> Self {
        self.on_give_up = Some(Arc::new(hook));
        self
    }

    /// Classifies results with `classifier` instead of [`DefaultClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, R, P> {
        self.map(|_, cloner, prepare| (classifier, cloner, prepare))
    }

    /// Copies requests for further attempts with `cloner` (see [`CloneRequest`](llm_core::CloneRequest)).
    pub fn clone_requests_with<R2>(self, cloner: R2) -> RetryLayerBuilder<C, R2, P> {
        self.map(|classifier, _, prepare| (classifier, cloner, prepare))
    }

    /// Prepares each retry's request with `policy` — change it (a smaller `max_tokens`, a
    /// fresh credential) or refuse the retry, asynchronously. See [`RetryPolicy`](crate::RetryPolicy).
    pub fn retry_policy<P2>(self, policy: P2) -> RetryLayerBuilder<C, R, P2> {
        self.map(|classifier, cloner, _| (classifier, cloner, policy))
    }

    /// The builder with its type-changing parts replaced; the settings and hooks stay.
    fn map<C2, R2, P2>(
        self,
        parts: impl FnOnce(C, R, P) -> (C2, R2, P2),
    ) -> RetryLayerBuilder<C2, R2, P2> {
        let (classifier, cloner, prepare) = parts(self.classifier, self.cloner, self.prepare);
        RetryLayerBuilder {
            config: self.config,
            custom_backoff: self.custom_backoff,
            budget: self.budget,
            retry_if: self.retry_if,
            on_retry: self.on_retry,
            on_give_up: self.on_give_up,
            name: self.name,
            classifier,
            cloner,
            prepare,
        }
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<RetryLayer<C, R, P>, ConfigError> {
        self.config.validate()?;
        let budget = match self.budget {
            Some(budget) => Some(budget),
            None => self.config.budget.build()?,
        };
        let backoff = self.custom_backoff.unwrap_or_else(|| self.config.backoff());
        let policy = Policy {
            max_retries: self.config.max_retries,
            backoff,
            jitter: self.config.jitter,
            retry_on: self.config.retry_on.difference(self.config.stop_on),
            retry_if: self.retry_if,
            max_retry_after: self.config.max_retry_after,
            max_elapsed: self.config.max_elapsed,
            failover_on: self.config.failover_on,
            failover_delay: self.config.failover_delay,
            budget,
            on_retry: self.on_retry,
            on_give_up: self.on_give_up,
            meters: crate::metrics::Meters::new(&self.name),
            name: self.name,
        };
        Ok(RetryLayer {
            policy: Arc::new(policy),
            classifier: self.classifier,
            cloner: self.cloner,
            prepare: self.prepare,
        })
    }
}
