//! [`Retry`], the service the layer builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{Classify, DefaultClassifier, RequestExtensions, ResponseMetadata};
use tokio::time::Instant;
use tower_service::Service;

use crate::future::{Again, ResponseFuture};
use crate::policy::Policy;
use crate::retry_policy::{KeepRequest, RetryPolicy};
use llm_core::{CloneRequest, UseClone};

/// Retries failed calls to the inner service as its [`RetryLayer`](crate::RetryLayer)
/// says: which failures, how often, after how long.
///
/// Its error type is the inner service's: retrying creates no error of its own, it returns
/// the last attempt's result (an `Ok` response a classifier judged a failure, such as a
/// 503, included).
///
/// ```
/// use llm_retry_layer::RetryLayer;
/// use llm_testkit::ReadyService;
/// use tower::Layer;
///
/// let retry = RetryLayer::standard().layer(ReadyService::new(()));
/// let _provider: &ReadyService<()> = retry.get_ref();
/// ```
pub struct Retry<S, C = DefaultClassifier, R = UseClone, P = KeepRequest> {
    pub(crate) inner: S,
    pub(crate) policy: Arc<Policy>,
    pub(crate) classifier: C,
    pub(crate) cloner: R,
    pub(crate) prepare: P,
}

impl<S, C, R, P> Retry<S, C, R, P> {
    pub(crate) fn from_parts(
        inner: S,
        policy: Arc<Policy>,
        classifier: C,
        cloner: R,
        prepare: P,
    ) -> Self {
        Retry {
            inner,
            policy,
            classifier,
            cloner,
            prepare,
        }
    }

    llm_core::__private::inner_service_accessors!(S, inner);
}

impl<S: Clone, C: Clone, R: Clone, P: Clone> Clone for Retry<S, C, R, P> {
    fn clone(&self) -> Self {
        Retry {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
            prepare: self.prepare.clone(),
        }
    }
}

impl<S: fmt::Debug, C, R, P> fmt::Debug for Retry<S, C, R, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, P, Req> Service<Req> for Retry<S, C, R, P>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: 'static,
    C: Classify<S::Response, S::Error> + Clone,
    R: CloneRequest<Req> + Clone,
    P: RetryPolicy<Req> + Clone,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, R, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(budget) = &self.policy.budget {
            budget.deposit();
        }
        if let Some(budget) = request.attempt_budget() {
            // NOTE: the first attempt always goes out (there is nothing to return instead);
            // it still counts, so later layers see the budget shrink.
            let _ = budget.try_acquire();
        }
        let started = self.policy.max_elapsed.map(|_| Instant::now());
        let copy = self.cloner.clone_request(&request);
        let future = self.inner.call(request);
        // NOTE: the clone is not ready; the future polls its readiness before any retry.
        let again = Again {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
            prepare: self.prepare.clone(),
        };
        ResponseFuture::new(future, copy, again, started)
    }
}
