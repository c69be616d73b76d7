//! [`FallbackBuilder`] and [`FallbackLayer`]: how a [`Fallback`] is made.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{ConfigError, DefaultClassifier, UseClone};
use tower_layer::Layer;

use crate::config::FallbackConfig;
use crate::event::{FallbackEvent, OnFallback};
use crate::service::Fallback;
use crate::shared::{MakeSpan, Shared};
use crate::target::Target;

impl<S, Req> Fallback<S, Req> {
    /// A builder over `targets`, tried in order.
    pub fn builder(targets: Vec<Target<S, Req>>) -> FallbackBuilder<S, Req> {
        FallbackBuilder {
            targets,
            hedge_after: None,
            max_hedges: 1,
            max_attempts: None,
            on_fallback: None,
            make_span: None,
            classifier: DefaultClassifier,
            cloner: UseClone,
        }
    }
}

/// Builds a [`Fallback`] (or, with [`build_layer`](Self::build_layer), a [`FallbackLayer`]
/// whose primary is the service it wraps).
pub struct FallbackBuilder<S, Req, C = DefaultClassifier, R = UseClone> {
    targets: Vec<Target<S, Req>>,
    hedge_after: Option<Duration>,
    max_hedges: u32,
    max_attempts: Option<u32>,
    on_fallback: Option<OnFallback>,
    make_span: Option<MakeSpan<Req>>,
    classifier: C,
    cloner: R,
}

impl<S, Req, C, R> fmt::Debug for FallbackBuilder<S, Req, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> FallbackBuilder<S, Req, C, R> {
    /// Starts the next target too when the current one has answered nothing (no response;
    /// for streams, no first chunk) for `delay`. The first answer wins.
    #[must_use]
    pub fn hedge_after(mut self, delay: Duration) -> Self {
        self.hedge_after = Some(delay);
        self
    }

    /// Hedges started per request, at most (default 1).
    #[must_use]
    pub fn max_hedges(mut self, max: u32) -> Self {
        self.max_hedges = max;
        self
    }

    /// Bounds upstream attempts per request across every target and every retry inside
    /// them: requests without an `AttemptBudget` get one of `max`.
    #[must_use]
    pub fn max_attempts(mut self, max: u32) -> Self {
        self.max_attempts = Some(max);
        self
    }

    /// Takes hedging and bounds from `config` (its targets are built with
    /// [`FallbackConfig::targets`]).
    #[must_use]
    pub fn config(mut self, config: &FallbackConfig) -> Self {
        self.hedge_after = config.hedge_after;
        self.max_hedges = config.max_hedges.unwrap_or(1);
        self.max_attempts = config.max_attempts;
        self
    }

    /// Called whenever the chain moves to another target.
    #[must_use]
    pub fn on_fallback(mut self, hook: impl Fn(&FallbackEvent) + Send + Sync + 'static) -> Self {
        self.on_fallback = Some(Arc::new(hook));
        self
    }

    /// Makes a span for each call through the chain — the logical request, whose targets'
    /// calls are polled inside it (their spans are its children, the moves from one to the
    /// next its events). When the call ends the span records `llm.upstream` (the target
    /// that answered), `llm.fallbacks` and `llm.attempts`, or `error.type`; declare them
    /// (`tracing::field::Empty`) to have them. Without it, calls make no span.
    ///
    /// ```
    /// use llm_fallback_layer::{Fallback, Target};
    /// use llm_testkit::{ReadyService, TestRequest};
    /// use tracing::field::Empty;
    ///
    /// let chain = Fallback::builder(vec![Target::<_, TestRequest>::new("a", ReadyService::new(()))])
    ///     .make_span_with(|_request: &TestRequest| {
    ///         tracing::info_span!("llm.request", llm.upstream = Empty, llm.fallbacks = Empty, llm.attempts = Empty, error.type = Empty)
    ///     })
    ///     .build()
    ///     .unwrap();
    /// ```
    #[must_use]
    pub fn make_span_with(
        mut self,
        make_span: impl Fn(&Req) -> tracing::Span + Send + Sync + 'static,
    ) -> Self {
        self.make_span = Some(Arc::new(make_span));
        self
    }

    /// Classifies results with `classifier` instead of [`DefaultClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<S, Req, C2, R> {
        FallbackBuilder {
            targets: self.targets,
            hedge_after: self.hedge_after,
            max_hedges: self.max_hedges,
            max_attempts: self.max_attempts,
            on_fallback: self.on_fallback,
            make_span: self.make_span,
            classifier,
            cloner: self.cloner,
        }
    }

    /// Copies requests for each target with `cloner` (see [`CloneRequest`](llm_core::CloneRequest)).
    pub fn clone_requests_with<R2>(self, cloner: R2) -> FallbackBuilder<S, Req, C, R2> {
        FallbackBuilder {
            targets: self.targets,
            hedge_after: self.hedge_after,
            max_hedges: self.max_hedges,
            max_attempts: self.max_attempts,
            on_fallback: self.on_fallback,
            make_span: self.make_span,
            classifier: self.classifier,
            cloner,
        }
    }

    fn check(&self, extra_targets: usize) -> Result<(), ConfigError> {
        if self.targets.len() + extra_targets == 0 {
            return Err(ConfigError::new("targets", "must name at least one target"));
        }
        crate::config::check_bounds(self.hedge_after, self.max_attempts)
    }

    fn shared(self, targets: Vec<Target<S, Req>>) -> (Shared<S, Req>, C, R) {
        let shared = Shared {
            targets,
            hedge_after: self.hedge_after,
            max_hedges: self.max_hedges,
            max_attempts: self.max_attempts,
            on_fallback: self.on_fallback,
            make_span: self.make_span,
        };
        (shared, self.classifier, self.cloner)
    }

    /// Checks the settings and builds the service.
    pub fn build(mut self) -> Result<Fallback<S, Req, C, R>, ConfigError> {
        self.check(0)?;
        let targets = std::mem::take(&mut self.targets);
        let (shared, classifier, cloner) = self.shared(targets);
        Ok(Fallback {
            shared: Arc::new(shared),
            classifier,
            cloner,
        })
    }

    /// Builds a layer whose wrapped service becomes the first target, named `primary`,
    /// followed by this builder's targets.
    pub fn build_layer(
        mut self,
        primary: impl Into<Arc<str>>,
    ) -> Result<FallbackLayer<S, Req, C, R>, ConfigError> {
        self.check(1)?;
        let backups = std::mem::take(&mut self.targets);
        let (shared, classifier, cloner) = self.shared(Vec::new());
        Ok(FallbackLayer {
            primary: primary.into(),
            backups,
            shared: Arc::new(shared),
            classifier,
            cloner,
        })
    }
}

/// Adds fallback targets behind a service: `layer(primary)` builds a [`Fallback`] over
/// `[primary, backups…]`.
///
/// ```
/// use llm_core::ErrorKind;
/// use llm_fallback_layer::{Fallback, Target};
/// use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (openai, _) = ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::RateLimited));
/// let (openrouter, calls) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("hi")));
/// let layer = Fallback::builder(vec![Target::new("openrouter", openrouter).model("openai/gpt-4o")])
///     .build_layer("openai")
///     .unwrap();
/// let svc = layer.layer(openai);
///
/// let res = svc.oneshot(TestRequest::new("gpt-4o")).await.unwrap();
/// assert_eq!(res.body(), "hi");
/// assert_eq!(calls.calls()[0].request.model, "openai/gpt-4o");
/// # }
/// ```
pub struct FallbackLayer<S, Req, C = DefaultClassifier, R = UseClone> {
    primary: Arc<str>,
    backups: Vec<Target<S, Req>>,
    // Settings only; its targets are assembled per wrapped primary.
    shared: Arc<Shared<S, Req>>,
    classifier: C,
    cloner: R,
}

impl<S: Clone, Req, C: Clone, R: Clone> Clone for FallbackLayer<S, Req, C, R> {
    fn clone(&self) -> Self {
        FallbackLayer {
            primary: self.primary.clone(),
            backups: self.backups.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
        }
    }
}

impl<S, Req, C, R> fmt::Debug for FallbackLayer<S, Req, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("primary", &self.primary)
            .field("backups", &self.backups)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, Req, C: Clone, R: Clone> Layer<S> for FallbackLayer<S, Req, C, R> {
    type Service = Fallback<S, Req, C, R>;

    fn layer(&self, primary: S) -> Self::Service {
        let mut targets = Vec::with_capacity(self.backups.len() + 1);
        targets.push(Target::new(self.primary.clone(), primary));
        targets.extend(self.backups.iter().cloned());
        let shared = Shared {
            targets,
            hedge_after: self.shared.hedge_after,
            max_hedges: self.shared.max_hedges,
            max_attempts: self.shared.max_attempts,
            on_fallback: self.shared.on_fallback.clone(),
            make_span: self.shared.make_span.clone(),
        };
        Fallback {
            shared: Arc::new(shared),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
        }
    }
}
