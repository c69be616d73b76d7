//! [`Fallback`], its builder, [`FallbackLayer`], and the events hooks see.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use llm_core::{
    Classify, CloneRequest, ConfigError, DefaultClassifier, ErrorKind, FallbackExhausted,
    RequestExtensions, ResponseMetadata, UseClone,
};
use tower_layer::Layer;
use tower_service::Service;

use crate::config::FallbackConfig;
use crate::future::ResponseFuture;
use crate::target::{Chain, Target};

/// Why the chain moved to another target, as `on_fallback` hooks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The previous target failed in a way its trigger moves on from.
    Failed {
        /// How it failed.
        kind: ErrorKind,
        /// The error's message.
        message: String,
    },
    /// The previous target had answered nothing for `after`: a hedge starts beside it.
    Hedged {
        /// The configured hedging delay.
        after: Duration,
    },
}

/// The chain moved from one target to another.
///
/// ```
/// use llm_fallback_layer::{Fallback, FallbackReason, Target};
/// use llm_testkit::{ReadyService, TestRequest};
///
/// let chain = Fallback::builder(vec![Target::<_, TestRequest>::new("a", ReadyService::new(()))])
///     .on_fallback(|event| match &event.reason {
///         FallbackReason::Failed { kind, .. } => eprintln!("{} failed ({kind}); trying {}", event.from, event.to),
///         FallbackReason::Hedged { after } => eprintln!("{} silent for {after:?}; racing {}", event.from, event.to),
///         _ => {}
///     })
///     .build()
///     .unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackEvent {
    /// The target left (or, for a hedge, still running).
    pub from: Arc<str>,
    /// The target started.
    pub to: Arc<str>,
    /// Why.
    pub reason: FallbackReason,
}

pub(crate) type OnFallback = Arc<dyn Fn(&FallbackEvent) + Send + Sync>;

/// The chain and its settings, shared by every clone of a [`Fallback`].
pub(crate) struct Shared<S, Req> {
    pub(crate) targets: Vec<Target<S, Req>>,
    pub(crate) hedge_after: Option<Duration>,
    pub(crate) max_hedges: u32,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) on_fallback: Option<OnFallback>,
}

impl<S, Req> Shared<S, Req> {
    /// The target a failure of `kind` leads to, among those from `from` on.
    pub(crate) fn next_for(&self, from: usize, kind: ErrorKind) -> Option<usize> {
        let first_on =
            |chain: Chain| (from..self.targets.len()).find(|&i| self.targets[i].chain == chain);
        match kind {
            ErrorKind::ContextLengthExceeded => {
                first_on(Chain::ContextWindow).or_else(|| first_on(Chain::Regular))
            }
            ErrorKind::ContentFiltered => first_on(Chain::ContentPolicy),
            _ => first_on(Chain::Regular),
        }
    }

    /// Whether a failure of `kind` has a special chain waiting for it from `from` on.
    pub(crate) fn special_chain_for(&self, from: usize, kind: ErrorKind) -> bool {
        let wanted = match kind {
            ErrorKind::ContextLengthExceeded => Chain::ContextWindow,
            ErrorKind::ContentFiltered => Chain::ContentPolicy,
            _ => return false,
        };
        self.targets[from.min(self.targets.len())..]
            .iter()
            .any(|t| t.chain == wanted)
    }

    /// The next regular target from `from` on: where a hedge goes.
    pub(crate) fn next_regular(&self, from: usize) -> Option<usize> {
        (from..self.targets.len()).find(|&i| self.targets[i].chain == Chain::Regular)
    }
}

/// Tries its targets in order until one answers: each failure that the failed target's
/// trigger moves on from leads to the next target (on the chain the failure calls for).
///
/// - Failures that do not move on come back unchanged: a 400 stays the 400.
/// - When every target failed, the error is [`FallbackExhausted`] (converted into the
///   targets' error type) listing every attempt in order.
/// - Each target's readiness is polled when it is its turn, so `poll_ready` is always
///   ready: a primary that is not ready never holds back the backups.
/// - Each target gets a copy of the request, rewritten for it, with the number of targets
///   left after it, so a retry layer inside hands over at once on a timeout.
/// - No target starts after the request's deadline, or once its attempt budget is spent.
/// - With `hedge_after`, the next target also starts when the current one has answered
///   nothing for that long; the first answer wins and the other call is dropped.
/// - The response's metadata names the target that answered and counts the fallbacks.
///
/// ```
/// use llm_fallback_layer::{Fallback, Target};
/// use llm_testkit::{ReadyService, TestRequest};
///
/// let chain = Fallback::builder(vec![
///     Target::<_, TestRequest>::new("primary", ReadyService::new(())),
///     Target::new("backup", ReadyService::new(())),
/// ])
/// .build()
/// .unwrap();
/// assert_eq!(chain.target_names().collect::<Vec<_>>(), ["primary", "backup"]);
/// ```
pub struct Fallback<S, Req, C = DefaultClassifier, R = UseClone> {
    pub(crate) shared: Arc<Shared<S, Req>>,
    pub(crate) classifier: C,
    pub(crate) cloner: R,
}

impl<S, Req> Fallback<S, Req> {
    /// A builder over `targets`, tried in order.
    pub fn builder(targets: Vec<Target<S, Req>>) -> FallbackBuilder<S, Req> {
        FallbackBuilder {
            targets,
            hedge_after: None,
            max_hedges: 1,
            max_attempts: None,
            on_fallback: None,
            classifier: DefaultClassifier,
            cloner: UseClone,
        }
    }
}

impl<S, Req, C, R> Fallback<S, Req, C, R> {
    /// The targets' names, in order.
    pub fn target_names(&self) -> impl Iterator<Item = &str> {
        self.shared.targets.iter().map(|t| t.name())
    }
}

impl<S, Req, C: Clone, R: Clone> Clone for Fallback<S, Req, C, R> {
    fn clone(&self) -> Self {
        Fallback {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
        }
    }
}

impl<S, Req, C, R> fmt::Debug for Fallback<S, Req, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("targets", &self.shared.targets)
            .field("hedge_after", &self.shared.hedge_after)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Service<Req> for Fallback<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<FallbackExhausted> + fmt::Display + 'static,
    C: Classify<S::Response, S::Error> + Clone,
    R: CloneRequest<Req> + Clone,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NOTE: each target's readiness is polled in the future, when it is its turn.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::new(
            self.shared.clone(),
            self.classifier.clone(),
            self.cloner.clone(),
            request,
        )
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

    /// Classifies results with `classifier` instead of [`DefaultClassifier`].
    pub fn classifier<C2>(self, classifier: C2) -> FallbackBuilder<S, Req, C2, R> {
        FallbackBuilder {
            targets: self.targets,
            hedge_after: self.hedge_after,
            max_hedges: self.max_hedges,
            max_attempts: self.max_attempts,
            on_fallback: self.on_fallback,
            classifier,
            cloner: self.cloner,
        }
    }

    /// Copies requests for each target with `cloner` (see [`CloneRequest`]).
    pub fn clone_requests_with<R2>(self, cloner: R2) -> FallbackBuilder<S, Req, C, R2> {
        FallbackBuilder {
            targets: self.targets,
            hedge_after: self.hedge_after,
            max_hedges: self.max_hedges,
            max_attempts: self.max_attempts,
            on_fallback: self.on_fallback,
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
        };
        Fallback {
            shared: Arc::new(shared),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
        }
    }
}
