//! [`ResponseFuture`]: the retry state machine.
//!
//! An attempt; on a failure the configuration retries, the [`RetryPolicy`] prepares the
//! next request; the wait; readiness; the next attempt.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use llm_core::{
    Classify, EarlierFailures, ErrorKind, ErrorKinds, Outcome, RequestExtensions, ResponseMetadata,
    notes,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use std::sync::Arc;

use crate::policy::{Attempted, GiveUp, GiveUpReason, Policy, RetryEvent};
use crate::retry_policy::RetryPolicy;
use llm_core::CloneRequest;

pin_project! {
    #[project = ResponseFutureProj]
    /// The future of a [`Retry`](crate::Retry) call: an attempt, a wait, readiness, the next attempt.
    pub struct ResponseFuture<S, Req, C, R, P>
    where
        S: Service<Req>,
        P: RetryPolicy<Req>,
    {
        #[pin]
        state: State<S::Future, P::Future>,
        retry: Again<S, C, R, P>,
        // The copy the next attempt sends; `None` when the request could not be copied.
        request: Option<Req>,
        attempts: u32,
        previous_delay: Duration,
        started: Option<Instant>,
        // The kinds of the failed attempts so far.
        earlier: ErrorKinds,
        // Attempts that reached the upstream (a rejection by our own breaker or limiter
        // below this layer did not).
        upstream: u32,
        // The last failure that came from the upstream: returned instead of a later
        // rejection of our own, which would hide it (boxed: only retried calls keep one).
        upstream_error: Option<Box<S::Error>>,
        // The failed attempt whose retry the policy is preparing: returned if it refuses.
        pending: Option<Box<Pending<S::Response, S::Error>>>,
    }
}

/// What the retries of one call need of its [`Retry`](crate::Retry): a copy of the inner
/// service, and the layer's settings.
pub(crate) struct Again<S, C, R, P> {
    pub(crate) inner: S,
    pub(crate) policy: Arc<Policy>,
    pub(crate) classifier: C,
    pub(crate) cloner: R,
    pub(crate) prepare: P,
}

/// A failed attempt whose retry is being prepared.
struct Pending<T, E> {
    result: Result<T, E>,
    kind: ErrorKind,
    reached_upstream: bool,
    event: RetryEvent,
}

pin_project! {
    #[project = StateProj]
    enum State<F, PF> {
        // An attempt is in flight.
        Called { #[pin] future: F },
        // The policy prepares the next attempt's request.
        Preparing { #[pin] future: PF },
        // Waiting out the delay before the next attempt (boxed: a `Sleep` is most of the
        // future's size, and only retries need one).
        Waiting { sleep: Pin<Box<Sleep>> },
        // Waiting for the inner service to be ready for the next attempt.
        Readying,
    }
}

impl<S, Req, C, R, P> ResponseFuture<S, Req, C, R, P>
where
    S: Service<Req>,
    P: RetryPolicy<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        request: Option<Req>,
        retry: Again<S, C, R, P>,
        started: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            state: State::Called { future },
            retry,
            request,
            attempts: 1,
            previous_delay: Duration::ZERO,
            started,
            earlier: ErrorKinds::NONE,
            upstream: 0,
            upstream_error: None,
            pending: None,
        }
    }
}

impl<S, Req, C, R, P> std::fmt::Debug for ResponseFuture<S, Req, C, R, P>
where
    S: Service<Req>,
    P: RetryPolicy<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R, P> Future for ResponseFuture<S, Req, C, R, P>
where
    S: Service<Req>,
    S::Response: ResponseMetadata,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    P: RetryPolicy<Req>,
    Req: RequestExtensions,
{
    type Output = Result<S::Response, S::Error>;

    // NOTE: a hint, so that the success path below (with its one metrics record) is still
    // inlined into the caller's future; without it the record tipped it out of line.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // NOTE: the first attempt's success is most calls: it is handled here, and all else
        // out of line, so that this stays a handful of instructions.
        let mut this = self.project();
        if let StateProj::Called { future } = this.state.as_mut().project() {
            let result = ready!(future.poll(cx));
            if let Some(result) = Self::settle(&mut this, result) {
                return Poll::Ready(result);
            }
        }
        Self::poll_retrying(&mut this, cx)
    }
}

impl<S, Req, C, R, P> ResponseFuture<S, Req, C, R, P>
where
    S: Service<Req>,
    S::Response: ResponseMetadata,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    P: RetryPolicy<Req>,
    Req: RequestExtensions,
{
    /// An attempt's result: `Some` to return it (a success, or the layer gave up), `None`
    /// with the next attempt scheduled.
    #[inline(always)]
    fn settle(
        this: &mut ResponseFutureProj<'_, S, Req, C, R, P>,
        mut result: Result<S::Response, S::Error>,
    ) -> Option<Result<S::Response, S::Error>> {
        let outcome = this.retry.classifier.classify(result.as_ref());
        let Some(kind) = outcome.kind() else {
            this.retry.policy.meters.succeeded();
            record_attempts(&mut result, *this.upstream + 1);
            return Some(result);
        };
        Self::after_failure(this, result, &outcome, kind)
    }

    /// A failed attempt: either `result` to return (the layer gave up, reported), or
    /// `None` with the state set to wait for the next attempt.
    // NOTE: out of line and cold: the success path of `poll` stays small (fewer registers
    // saved, a smaller frame), and it is most calls.
    #[cold]
    #[inline(never)]
    fn after_failure(
        this: &mut ResponseFutureProj<'_, S, Req, C, R, P>,
        result: Result<S::Response, S::Error>,
        outcome: &Outcome,
        kind: ErrorKind,
    ) -> Option<Result<S::Response, S::Error>> {
        let policy = &*this.retry.policy;
        policy.meters.failed(kind);
        let attempts = *this.attempts;
        let reached_upstream = !kind.is_local_rejection();
        if reached_upstream {
            *this.upstream += 1;
        }
        let closed_for = result.as_ref().err().and_then(notes::target_closed_for);
        let decision = match this.request.as_ref() {
            None => Err(GiveUpReason::NotCloneable),
            Some(request) => {
                let attempted = Attempted {
                    attempts,
                    previous_delay: *this.previous_delay,
                    started: *this.started,
                    deadline: request.deadline(),
                    remaining_targets: request.remaining_targets(),
                    attempt_budget: request.attempt_budget(),
                    earlier: *this.earlier,
                    closed_for,
                };
                let unit = if policy.jitter == llm_core::backoff::Jitter::None {
                    0.0
                } else {
                    fastrand::f64()
                };
                policy.decide(outcome, kind, &attempted, Instant::now(), unit)
            }
        };
        let delay = match decision {
            Ok(delay) => delay,
            Err(reason) => return Some(Self::stop(this, result, kind, reached_upstream, reason)),
        };
        let event = RetryEvent {
            attempt: attempts + 1,
            delay,
            kind,
            retry_after: outcome.retry_after(),
        };
        let request = this
            .request
            .take()
            .expect("a retry is only decided with a request copy");
        let future = this.retry.prepare.prepare(request, &event);
        // NOTE: boxed: only retried calls keep a failure while the retry is prepared.
        *this.pending = Some(Box::new(Pending {
            result,
            kind,
            reached_upstream,
            event,
        }));
        this.state.set(State::Preparing { future });
        None
    }

    /// Gives up with `result` (or the upstream failure a later rejection of our own would
    /// hide), reported.
    fn stop(
        this: &mut ResponseFutureProj<'_, S, Req, C, R, P>,
        mut result: Result<S::Response, S::Error>,
        kind: ErrorKind,
        reached_upstream: bool,
        reason: GiveUpReason,
    ) -> Result<S::Response, S::Error> {
        give_up(
            &this.retry.policy,
            GiveUp {
                attempts: *this.attempts,
                kind,
                reason,
            },
        );
        // NOTE: a rejection of our own after a real upstream failure (the breaker opened
        // meanwhile) would hide what the upstream said: return that instead.
        if let (false, Some(earlier)) = (reached_upstream, this.upstream_error.take()) {
            result = Err(*earlier);
        }
        match &mut result {
            Err(err) => notes::set_upstream_attempts(err, *this.upstream),
            Ok(_) => record_attempts(&mut result, *this.upstream),
        }
        result
    }

    /// Schedules the retry `event` describes, its request prepared.
    fn schedule(
        this: &mut ResponseFutureProj<'_, S, Req, C, R, P>,
        failed: Pending<S::Response, S::Error>,
    ) {
        let Pending {
            result,
            kind,
            reached_upstream,
            event,
        } = failed;
        let policy = &*this.retry.policy;
        policy.meters.retried(kind);
        tracing::debug!(
            upstream = &*policy.name,
            attempt = event.attempt,
            delay_ms = event.delay.as_millis() as u64,
            error.kind = kind.as_str(),
            "retrying after failed attempt"
        );
        if let Some(hook) = &policy.on_retry {
            hook(&event);
        }
        *this.previous_delay = event.delay;
        *this.earlier = this.earlier.with(kind);
        if let Some(request) = this.request.as_mut() {
            if let Some(extensions) = request.request_extensions_mut() {
                extensions.insert(EarlierFailures(*this.earlier));
            }
        }
        if reached_upstream {
            if let Err(err) = result {
                *this.upstream_error = Some(Box::new(err));
            }
        } else {
            drop(result);
        }
        if event.delay.is_zero() {
            this.state.set(State::Readying);
        } else {
            this.state.set(State::Waiting {
                sleep: Box::pin(tokio::time::sleep(event.delay)),
            });
        }
    }

    /// The retries: a wait, readiness, the next attempt, its result.
    #[inline(never)]
    fn poll_retrying(
        this: &mut ResponseFutureProj<'_, S, Req, C, R, P>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, S::Error>> {
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    if let Some(result) = Self::settle(this, result) {
                        return Poll::Ready(result);
                    }
                }
                StateProj::Preparing { future } => {
                    let prepared = ready!(future.poll(cx));
                    let failed = *this
                        .pending
                        .take()
                        .expect("a retry is prepared with its failure kept");
                    match prepared {
                        Some(request) => {
                            *this.request = Some(request);
                            Self::schedule(this, failed);
                        }
                        None => {
                            return Poll::Ready(Self::stop(
                                this,
                                failed.result,
                                failed.kind,
                                failed.reached_upstream,
                                GiveUpReason::RefusedByPolicy,
                            ));
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    // NOTE: the clone held here was never polled; tower's contract asks for
                    // readiness before every call, and a retry is a call.
                    ready!(this.retry.inner.poll_ready(cx))?;
                    let request = this
                        .request
                        .take()
                        .expect("a retry is only scheduled with a request copy");
                    *this.request = this.retry.cloner.clone_request(&request);
                    *this.attempts += 1;
                    let future = this.retry.inner.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

fn record_attempts<T: ResponseMetadata, E>(result: &mut Result<T, E>, attempts: u32) {
    // NOTE: only retried responses are touched: for `http::Response` recording allocates
    // its extensions map, and a first-try success must not allocate.
    if attempts > 1 {
        if let Ok(response) = result {
            if let Some(meta) = response.metadata_mut() {
                meta.attempts = meta.attempts.max(attempts);
            }
        }
    }
}

fn give_up(policy: &Policy, event: GiveUp) {
    policy.meters.gave_up(event.reason.as_str());
    let upstream = &*policy.name;
    match event.reason {
        // NOTE: these are per-request routine (a breaker that is open rejects every request):
        // logged at debug, counted through the hooks; a warning per request would flood.
        GiveUpReason::NotRetryable | GiveUpReason::HandedOver | GiveUpReason::TargetClosed => {
            tracing::debug!(
                upstream,
                attempts = event.attempts,
                error.kind = event.kind.as_str(),
                reason = event.reason.as_str(),
                "not retrying"
            );
        }
        _ => tracing::warn!(
            upstream,
            attempts = event.attempts,
            error.kind = event.kind.as_str(),
            reason = event.reason.as_str(),
            "giving up retrying"
        ),
    }
    if let Some(hook) = &policy.on_give_up {
        hook(&event);
    }
}
