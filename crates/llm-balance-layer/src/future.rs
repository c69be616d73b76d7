//! [`ResponseFuture`]: wait for the picked member's readiness, call it, settle its health,
//! and move to another member when it failed in a way another may not.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use llm_core::{
    AttemptBudget, Classify, CloneRequest, ErrorKind, NoMemberAvailable, RequestExtensions,
    ResponseMetadata, notes,
};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_service::Service;

use crate::health::Verdict;
use crate::metrics::Meters;
use crate::state::PoolState;
use crate::strategy::{self, NoPick};

/// Everything but the pinned call.
struct Core<S, Req, C, R>
where
    S: Service<Req>,
{
    services: Arc<[S]>,
    state: Arc<PoolState>,
    classifier: C,
    cloner: R,
    /// The request, kept to be copied for another member; `None` once sent as it is.
    request: Option<Req>,
    sticky: Option<u64>,
    /// Members tried for this request (bit `i`: member `i`).
    tried: u64,
    /// The member with this request in flight (counted in its health).
    current: Option<usize>,
    /// Its service, until it is ready and called.
    starting: Option<S>,
    started_at: Instant,
    /// Upstream attempts of the members that failed before.
    earlier_attempts: u32,
    /// The error to return at the first poll: no member could take the request.
    refused: Option<S::Error>,
    budget: Option<AttemptBudget>,
}

impl<S, Req, C, R> Drop for Core<S, Req, C, R>
where
    S: Service<Req>,
{
    fn drop(&mut self) {
        // A caller that went away ends the call in flight too.
        if let Some(i) = self.current.take() {
            self.state.members[i].health.ended();
        }
    }
}

pin_project! {
    /// The future of a [`Pool`](crate::Pool) call.
    pub struct ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        core: Core<S, Req, C, R>,
        #[pin]
        call: Option<S::Future>,
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("current", &self.core.current)
            .field("tried", &self.core.tried)
            .finish_non_exhaustive()
    }
}

fn refusal(state: &PoolState, why: NoPick) -> NoMemberAvailable {
    let (kind, retry_in) = match why {
        NoPick::Out { kind, retry_in } => (kind, Some(retry_in)),
        NoPick::AllTried => (ErrorKind::Other, None),
    };
    Meters::refused(&state.name, kind);
    NoMemberAvailable::new(state.name.clone(), kind, retry_in)
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Error: From<NoMemberAvailable>,
    Req: RequestExtensions,
{
    pub(crate) fn new(
        services: Arc<[S]>,
        state: Arc<PoolState>,
        classifier: C,
        cloner: R,
        request: Req,
        sticky: Option<u64>,
    ) -> Self {
        let budget = request.attempt_budget().cloned();
        let started_at = Instant::now();
        let (current, starting, refused) =
            match strategy::pick_member(&state, 0, sticky, started_at) {
                Ok(i) => (Some(i), Some(services[i].clone()), None),
                Err(why) => (None, None, Some(refusal(&state, why).into())),
            };
        ResponseFuture {
            core: Core {
                services,
                state,
                classifier,
                cloner,
                request: Some(request),
                sticky,
                tried: 0,
                current,
                starting,
                started_at,
                earlier_attempts: 0,
                refused,
                budget,
            },
            call: None,
        }
    }
}

enum Step<T> {
    Return(T),
    Continue,
}

impl<S, Req, C, R> Core<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<NoMemberAvailable> + 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    Req: RequestExtensions,
{
    /// The request for the current member: a copy while another member could still take it
    /// (the original otherwise, or when it cannot be copied), told whether targets remain
    /// after it, so that a retry layer in the member hands over instead of waiting.
    fn request_for(&mut self, member: usize) -> Req {
        let tried = self.tried | (1 << member);
        let others = self.state.others_available(tried, self.started_at);
        let mut request = match self.request.as_ref().filter(|_| others) {
            Some(original) => self
                .cloner
                .clone_request(original)
                .unwrap_or_else(|| self.request.take().expect("the request is kept")),
            None => self.request.take().expect("the request is kept"),
        };
        if others && request.remaining_targets() == 0 {
            request.set_remaining_targets(1);
        }
        request
    }

    fn settle(
        &mut self,
        result: Result<S::Response, S::Error>,
    ) -> Step<Result<S::Response, S::Error>> {
        let Some(i) = self.current.take() else {
            return Step::Return(result);
        };
        let member = &self.state.members[i];
        member.health.ended();
        let outcome = self.classifier.classify(result.as_ref());
        let at = Instant::now();
        let verdict = member.health.settle(
            &outcome,
            at.saturating_duration_since(self.started_at),
            self.state.clock.tick(at),
            &self.state.config,
        );
        match verdict {
            Verdict::Out { kind, duration } => self.state.member_out(i, kind, duration),
            Verdict::Back => member.meters.came_back(),
            Verdict::Fine | Verdict::Failed => {}
        }
        let err = match result {
            Ok(mut response) => {
                if let Some(meta) = response.metadata_mut() {
                    meta.member = Some(member.name.clone());
                    meta.attempts += self.earlier_attempts;
                }
                return Step::Return(Ok(response));
            }
            Err(err) => err,
        };
        let kind = outcome.kind().unwrap_or(ErrorKind::Other);
        // NOTE: the members serve one model: a prompt too long or a feature missing for one
        // is so for all, and a fallback chain outside handles those.
        let another_may_not = !matches!(verdict, Verdict::Fine | Verdict::Back)
            && kind.triggers_fallback()
            && !matches!(
                kind,
                ErrorKind::ContextLengthExceeded | ErrorKind::Unsupported
            );
        let in_time = self.request.as_ref().is_some_and(|request| {
            request
                .deadline()
                .is_none_or(|deadline| !deadline.is_expired())
        });
        let budget_left = self.budget.as_ref().is_none_or(|b| b.remaining() != 0);
        if !(another_may_not && in_time && budget_left) {
            return Step::Return(Err(err));
        }
        self.tried |= 1 << i;
        match strategy::pick_member(&self.state, self.tried, self.sticky, at) {
            Ok(next) => {
                self.started_at = at;
                self.earlier_attempts += notes::upstream_attempts(&err).unwrap_or(1);
                self.current = Some(next);
                self.starting = Some(self.services[next].clone());
                Step::Continue
            }
            Err(_) => Step::Return(Err(err)),
        }
    }
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<NoMemberAvailable> + 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    Req: RequestExtensions,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let core = this.core;
        loop {
            if let Some(err) = core.refused.take() {
                return Poll::Ready(Err(err));
            }
            if let Some(call) = this.call.as_mut().as_pin_mut() {
                let result = ready!(call.poll(cx));
                this.call.set(None);
                match core.settle(result) {
                    Step::Return(result) => return Poll::Ready(result),
                    Step::Continue => continue,
                }
            }
            let service = core.starting.as_mut().expect("polled after completion");
            match ready!(service.poll_ready(cx)) {
                Ok(()) => {
                    let member = core.current.expect("a member is picked");
                    let request = core.request_for(member);
                    let mut service = core.starting.take().expect("a member is starting");
                    // NOTE: the latency counts from the pick, readiness included: a member
                    // whose limiter makes requests wait is slower to the caller.
                    this.call.set(Some(service.call(request)));
                }
                Err(err) => {
                    core.starting = None;
                    if let Step::Return(result) = core.settle(Err(err)) {
                        return Poll::Ready(result);
                    }
                }
            }
        }
    }
}
