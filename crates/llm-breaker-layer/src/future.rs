//! [`ResponseFuture`]: a call that passed the breaker (or was rejected by it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use llm_core::{CircuitOpen, Classify, EndObserver, ErrorKinds, ObserveEnd, Outcome, notes};
use pin_project_lite::pin_project;
use tokio::time::Instant;

use crate::state::{CallResult, CircuitBreaker, Permit};

/// Holds a call's permit until its result is recorded; dropped unrecorded (the caller went
/// away), it releases the permit, so a half-open probe slot is never lost.
pub(crate) struct PermitGuard {
    breaker: Arc<CircuitBreaker>,
    permit: Option<Permit>,
    // `false` for a retry of a request whose earlier attempt already counted a failure.
    counts_failure: bool,
}

impl PermitGuard {
    pub(crate) fn new(breaker: Arc<CircuitBreaker>, permit: Permit, counts_failure: bool) -> Self {
        PermitGuard {
            breaker,
            permit: Some(permit),
            counts_failure,
        }
    }

    fn finish(mut self, mut result: CallResult, at: Option<Instant>) {
        if result == CallResult::Failure && !self.counts_failure {
            result = CallResult::Ignored;
        }
        if let Some(permit) = self.permit.take() {
            self.breaker
                .record_with(permit, result, || at.unwrap_or_else(Instant::now));
        }
    }
}

impl Drop for PermitGuard {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

pub(crate) fn call_result(outcome: &Outcome, counted: ErrorKinds) -> CallResult {
    match outcome.kind() {
        None => CallResult::Success,
        Some(kind) if counted.contains(kind) => CallResult::Failure,
        Some(_) => CallResult::Ignored,
    }
}

pin_project! {
    /// The future of a [`Breaker`](crate::Breaker) call.
    pub struct ResponseFuture<F, C> {
        #[pin]
        inner: Inner<F>,
        guard: Option<PermitGuard>,
        classifier: C,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F> {
        Called { #[pin] future: F },
        Rejected { error: Option<CircuitOpen> },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, guard: PermitGuard, classifier: C) -> Self {
        ResponseFuture {
            inner: Inner::Called { future },
            guard: Some(guard),
            classifier,
        }
    }

    pub(crate) fn rejected(error: CircuitOpen, classifier: C) -> Self {
        ResponseFuture {
            inner: Inner::Rejected { error: Some(error) },
            guard: None,
            classifier,
        }
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    C: Classify<Res, E>,
    E: From<CircuitOpen> + 'static,
    Res: ObserveEnd,
{
    type Output = Result<Res, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.project() {
            InnerProj::Rejected { error } => {
                let error = error
                    .take()
                    .expect("ResponseFuture polled after completion");
                Poll::Ready(Err(E::from(error)))
            }
            InnerProj::Called { future } => {
                let mut result = ready!(future.poll(cx));
                let guard = this
                    .guard
                    .take()
                    .expect("ResponseFuture polled after completion");
                let counted = guard.breaker.count_kinds();
                let call = call_result(&this.classifier.classify(result.as_ref()), counted);
                match &mut result {
                    Ok(response) if call == CallResult::Success && response.ends_later() => {
                        // NOTE: a stream's first chunk is not its outcome: record when it ends
                        // (DESIGN §4), timing slowness to this first response.
                        let at = guard.breaker.needs_clock().then(Instant::now);
                        response.observe_end(EndObserver::new(move |end| {
                            guard.finish(call_result(&end.outcome, counted), at);
                        }));
                    }
                    Err(err) => {
                        let breaker = guard.breaker.clone();
                        guard.finish(call, None);
                        // NOTE: tells a retry layer further out that its next attempt would
                        // be rejected, so that it hands over instead of waiting for nothing.
                        if let Some(open_for) = breaker.open_for_now(Instant::now()) {
                            notes::set_target_closed_for(err, open_for);
                        }
                    }
                    Ok(_) => guard.finish(call, None),
                }
                Poll::Ready(result)
            }
        }
    }
}
