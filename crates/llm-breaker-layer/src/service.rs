//! [`Breaker`], the service the layer builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{CircuitOpen, Classify, DefaultClassifier, ObserveEnd, RequestExtensions};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{PermitGuard, ResponseFuture};
use crate::handle::BreakerHandle;
use crate::state::CircuitBreaker;

/// Rejects calls at once while its circuit breaker is open, and records the outcome of the
/// calls it lets through.
///
/// A rejection never reaches the inner service: the call's future fails with
/// [`CircuitOpen`] (converted into the service's error type), carrying the time until a probe.
/// `poll_ready` only asks the inner service: rejecting by staying `Pending` would make a
/// caller wait for an open breaker instead of falling back.
///
/// ```
/// use llm_breaker_layer::BreakerLayer;
/// use llm_testkit::ReadyService;
/// use tower::Layer;
///
/// let breaker = BreakerLayer::standard().layer(ReadyService::new(()));
/// assert_eq!(breaker.handle().state(), llm_breaker_layer::State::Closed);
/// ```
pub struct Breaker<S, C = DefaultClassifier> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
    classifier: C,
}

impl<S, C> Breaker<S, C> {
    pub(crate) fn from_parts(inner: S, breaker: Arc<CircuitBreaker>, classifier: C) -> Self {
        Breaker {
            inner,
            breaker,
            classifier,
        }
    }

    llm_core::__private::inner_service_accessors!(S, inner);

    /// Reads and controls the breaker this service shares with its layer and clones.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(self.breaker.clone())
    }
}

impl<S: Clone, C: Clone> Clone for Breaker<S, C> {
    fn clone(&self) -> Self {
        Breaker {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Breaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for Breaker<S, C>
where
    S: Service<Req>,
    S::Error: From<CircuitOpen> + 'static,
    S::Response: ObserveEnd,
    C: Classify<S::Response, S::Error> + Clone,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        admit(&self.breaker, &mut self.inner, request, &self.classifier)
    }
}

/// Admits or rejects one call through `breaker`: shared by the single and keyed breakers.
pub(crate) fn admit<S, C, Req>(
    breaker: &Arc<CircuitBreaker>,
    inner: &mut S,
    request: Req,
    classifier: &C,
) -> ResponseFuture<S::Future, C>
where
    S: Service<Req>,
    C: Clone,
    Req: RequestExtensions,
{
    match breaker.try_acquire_with(Instant::now) {
        Ok(permit) => {
            // NOTE: a retry whose request already failed here in a way the breaker counts
            // is not counted again: one request's own retries never open the breaker alone.
            let counted = breaker.count_kinds();
            let counts_failure = !request.earlier_failures().intersects(counted);
            let guard = PermitGuard::new(breaker.clone(), permit, counts_failure);
            ResponseFuture::called(inner.call(request), guard, classifier.clone())
        }
        Err(open) => ResponseFuture::rejected(open, classifier.clone()),
    }
}
