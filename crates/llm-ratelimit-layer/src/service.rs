//! [`RateLimit`], the service the layer builds.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{
    Classify, DefaultClassifier, LocalRateLimited, ObserveEnd, ReportsUsage, RequestExtensions,
    TokenCost,
};
use llm_core::{KeyOf, NoKey};
use tower_service::Service;

use crate::cost::NoTokenCost;
use crate::future::ResponseFuture;
use crate::shared::Shared;
use crate::store::{LocalStore, RateLimitStore};

/// A service behind a rate limiter. Calls that fit go at once; in wait mode, others wait
/// (never past `max_wait` nor the request's deadline) in arrival order; in reject mode, or
/// when the wait would be too long, they fail at once with [`LocalRateLimited`] saying when
/// capacity returns. A provider's 429 with a delay pauses the limiter for every sharer; the
/// provider's remaining-capacity headers resynchronise it; the reported usage corrects each
/// call's token estimate (for streams, at their end).
///
/// ```
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};
/// use llm_testkit::ReadyService;
/// use tower::Layer;
///
/// let limited = RateLimitLayer::new(RateLimitConfig::per_minute(60, 100_000)).unwrap().layer(ReadyService::new(()));
/// let _provider: &ReadyService<()> = limited.get_ref();
/// ```
pub struct RateLimit<S, St = LocalStore, KF = NoKey, C = NoTokenCost, Cl = DefaultClassifier> {
    inner: S,
    shared: Arc<Shared<St, KF, C, Cl>>,
}

impl<S, St, KF, C, Cl> RateLimit<S, St, KF, C, Cl> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<St, KF, C, Cl>>) -> Self {
        RateLimit { inner, shared }
    }

    llm_core::__private::inner_service_accessors!(S, inner);
}

impl<S: Clone, St, KF, C, Cl> Clone for RateLimit<S, St, KF, C, Cl> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug, St, KF, C, Cl> fmt::Debug for RateLimit<S, St, KF, C, Cl> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St, KF, C, Cl, Req> Service<Req> for RateLimit<S, St, KF, C, Cl>
where
    S: Service<Req> + Clone,
    S::Error: From<LocalRateLimited>,
    S::Response: ReportsUsage + ObserveEnd,
    St: RateLimitStore<KF::Key>,
    KF: KeyOf<Req>,
    C: TokenCost<Req>,
    Cl: Classify<S::Response, S::Error>,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, St, KF, C, Cl>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NOTE: the limit needs the request (its key and token cost): it is decided in call.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        ResponseFuture::start(&mut self.inner, self.shared.clone(), request)
    }
}
