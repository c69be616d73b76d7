//! [`Fallback`], the service: a chain of targets tried in order.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{
    Classify, CloneRequest, DefaultClassifier, FallbackExhausted, RequestExtensions,
    ResponseMetadata, UseClone,
};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::shared::Shared;

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
