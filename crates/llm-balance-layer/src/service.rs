//! [`Pool`], the service: each request to one member, picked by the strategy, moved to
//! another when its member fails.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{
    Classify, CloneRequest, DefaultClassifier, NoMemberAvailable, RequestExtensions,
    ResponseMetadata, UseClone,
};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::PoolHandle;
use crate::state::PoolState;

/// Hashes a request's sticky key (`PoolBuilder::sticky_by`).
pub(crate) type StickyKey<Req> = Arc<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

/// A pool of equivalent members — API keys, deployments, regions, replicas of one logical
/// model — each request sent to one of them.
///
/// - The pick: the first tier with an available member, then the [`Strategy`], or the
///   member the request's sticky key belongs to while it is available.
/// - A member whose key is refused (401, 403) is retired for `retire_for`; one that is rate
///   limited or out of quota is out until its reset; one whose own limiter turns calls
///   away is out until it says. Then one request probes it.
/// - A member's failure that another member may not share (those above, its breaker open,
///   server errors, timeouts, overload) moves the request to another member, within the
///   request's attempt budget and deadline; a 400 comes back as it is.
/// - Each member's readiness is polled when it is picked, so `poll_ready` is always ready.
/// - When no member can take a request, the error is [`NoMemberAvailable`] (converted into
///   the members' error type), of the kind and delay of the member back soonest.
/// - The response's metadata names the member that answered.
///
/// [`Strategy`]: crate::Strategy
///
/// ```
/// use llm_balance_layer::{Member, Pool};
/// use llm_testkit::{ReadyService, TestRequest};
///
/// let pool = Pool::<_, TestRequest>::builder("openai", vec![
///     Member::new("key-1", ReadyService::new(())),
///     Member::new("key-2", ReadyService::new(())),
/// ])
/// .build()
/// .unwrap();
/// assert_eq!(pool.handle().members().len(), 2);
/// ```
pub struct Pool<S, Req, C = DefaultClassifier, R = UseClone> {
    pub(crate) services: Arc<[S]>,
    pub(crate) state: Arc<PoolState>,
    pub(crate) sticky: Option<StickyKey<Req>>,
    pub(crate) classifier: C,
    pub(crate) cloner: R,
}

impl<S, Req, C, R> Pool<S, Req, C, R> {
    /// Reads and controls the members' health.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            state: self.state.clone(),
        }
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }
}

impl<S, Req, C: Clone, R: Clone> Clone for Pool<S, Req, C, R> {
    fn clone(&self) -> Self {
        Pool {
            services: self.services.clone(),
            state: self.state.clone(),
            sticky: self.sticky.clone(),
            classifier: self.classifier.clone(),
            cloner: self.cloner.clone(),
        }
    }
}

impl<S, Req, C, R> fmt::Debug for Pool<S, Req, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.state.name)
            .field("strategy", &self.state.config.strategy)
            .field(
                "members",
                &self
                    .state
                    .members
                    .iter()
                    .map(|m| &m.name)
                    .collect::<Vec<_>>(),
            )
            .field("sticky", &self.sticky.is_some())
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> Service<Req> for Pool<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<NoMemberAvailable> + 'static,
    C: Classify<S::Response, S::Error> + Clone,
    R: CloneRequest<Req> + Clone,
    Req: RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NOTE: a member's readiness is polled in the future, once it is picked: a member
        // that is not ready never holds back the others.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let sticky = self.sticky.as_ref().and_then(|key| key(&request));
        ResponseFuture::new(
            self.services.clone(),
            self.state.clone(),
            self.classifier.clone(),
            self.cloner.clone(),
            request,
            sticky,
        )
    }
}
