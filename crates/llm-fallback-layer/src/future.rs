//! [`ResponseFuture`]: the fallback state machine — start a target when it is ready, watch
//! up to two calls (the current target and a hedge), move on or finish.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use llm_core::{
    AttemptBudget, AttemptRecord, Classify, CloneRequest, ErrorKind, FallbackExhausted,
    RequestExtensions, ResponseMetadata, notes,
};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::event::{FallbackEvent, FallbackReason};
use crate::shared::Shared;

/// A target whose readiness is being awaited before its call.
struct Starting<S> {
    target: usize,
    service: S,
}

/// Everything but the two pinned calls.
struct Core<S, Req, C, R> {
    shared: Arc<Shared<S, Req>>,
    classifier: C,
    cloner: R,
    // The original request, copied for each target; `None` once it was sent as it is.
    request: Option<Req>,
    // Targets before this index have been started.
    next: usize,
    starting: Option<Starting<S>>,
    first_target: usize,
    second_target: usize,
    hedge_timer: Option<Pin<Box<Sleep>>>,
    hedges: u32,
    failures: Vec<AttemptRecord>,
    // The request's attempt budget, kept apart: the last target takes the request itself.
    budget: Option<AttemptBudget>,
    // The call's span (`make_span_with`), or a disabled one.
    span: tracing::Span,
}

enum Step<T> {
    Return(T),
    Continue,
}

pin_project! {
    /// The future of a [`Fallback`](crate::Fallback) call.
    pub struct ResponseFuture<S, Req, C, R>
    where
        S: Service<Req>,
    {
        core: Core<S, Req, C, R>,
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
    }
}

impl<S, Req, C, R> fmt::Debug for ResponseFuture<S, Req, C, R>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("next", &self.core.next)
            .field("failures", &self.core.failures)
            .finish_non_exhaustive()
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    Req: RequestExtensions,
{
    pub(crate) fn new(
        shared: Arc<Shared<S, Req>>,
        classifier: C,
        cloner: R,
        mut request: Req,
    ) -> Self {
        if let Some(max) = shared.max_attempts {
            if request.attempt_budget().is_none() {
                if let Some(extensions) = request.request_extensions_mut() {
                    extensions.insert(AttemptBudget::new(max));
                }
            }
        }
        let budget = request.attempt_budget().cloned();
        let span = match &shared.make_span {
            Some(make_span) => make_span(&request),
            None => tracing::Span::none(),
        };
        let starting = Starting {
            target: 0,
            service: shared.targets[0].service.clone(),
        };
        ResponseFuture {
            core: Core {
                shared,
                classifier,
                cloner,
                request: Some(request),
                next: 1,
                starting: Some(starting),
                first_target: 0,
                second_target: 0,
                hedge_timer: None,
                hedges: 0,
                failures: Vec::new(),
                budget,
                span,
            },
            first: None,
            second: None,
        }
    }
}

impl<S, Req, C, R> Core<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<FallbackExhausted> + fmt::Display + 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    Req: RequestExtensions,
{
    /// The request for `target`: a copy (the original for the last target, or when it
    /// cannot be copied), rewritten, told how many targets remain after it.
    fn request_for(&mut self, target: usize) -> Option<Req> {
        let last = target + 1 == self.shared.targets.len();
        let original = self.request.as_ref()?;
        let mut request = match (last, self.cloner.clone_request(original)) {
            (false, Some(copy)) => copy,
            _ => self.request.take()?,
        };
        if let Some(rewrite) = &self.shared.targets[target].rewrite {
            rewrite(&mut request);
        }
        request.set_remaining_targets((self.shared.targets.len() - target - 1) as u32);
        Some(request)
    }

    /// Whether another target may start now: the deadline has not passed and the attempt
    /// budget is not spent.
    fn may_start_another(&self) -> bool {
        let in_time = self
            .request
            .as_ref()
            .is_some_and(|r| !r.deadline().is_some_and(|d| d.is_expired()));
        in_time && self.budget.as_ref().is_none_or(|b| b.remaining() != 0)
    }

    fn schedule(&mut self, target: usize, reason: FallbackReason) {
        let shared = &self.shared;
        let event = FallbackEvent {
            from: shared.targets[self.next.saturating_sub(1).min(shared.targets.len() - 1)]
                .name
                .clone(),
            to: shared.targets[target].name.clone(),
            reason,
        };
        tracing::info!(
            from = &*event.from,
            to = &*event.to,
            hedge = matches!(event.reason, FallbackReason::Hedged { .. }),
            "falling back"
        );
        #[cfg(feature = "metrics")]
        llm_core::metrics::CounterSeries::new(
            llm_core::metrics::FALLBACKS,
            &[
                ("from", &event.from),
                ("to", &event.to),
                ("reason", event.reason.as_str()),
            ],
        )
        .increment(1);
        if let Some(hook) = &shared.on_fallback {
            hook(&event);
        }
        self.starting = Some(Starting {
            target,
            service: shared.targets[target].service.clone(),
        });
        self.next = target + 1;
    }

    fn arm_hedge(&mut self, slots_busy: usize) {
        let Some(after) = self.shared.hedge_after else {
            return;
        };
        if slots_busy < 2
            && self.hedges < self.shared.max_hedges
            && self.shared.next_regular(self.next).is_some()
        {
            self.hedge_timer = Some(Box::pin(tokio::time::sleep(after)));
        }
    }

    fn exhausted(&mut self) -> S::Error {
        let attempts = std::mem::take(&mut self.failures);
        // NOTE: when every target was skipped by our own breakers or limiters, this repeats
        // for every request of an outage: debug, not a warning per request.
        if attempts.iter().any(AttemptRecord::reached_upstream) {
            tracing::warn!(attempts = attempts.len(), "every fallback target failed");
        } else {
            tracing::debug!(
                attempts = attempts.len(),
                "every fallback target was skipped"
            );
        }
        S::Error::from(FallbackExhausted::new(attempts))
    }

    /// Handles a finished call of `target`: finish, move on, or wait for the other call.
    fn on_result(
        &mut self,
        target: usize,
        mut result: Result<S::Response, S::Error>,
        other_busy: bool,
    ) -> Step<Result<S::Response, S::Error>> {
        let outcome = self.classifier.classify(result.as_ref());
        let Some(kind) = outcome.kind() else {
            self.record_success(target, &mut result);
            return Step::Return(result);
        };
        let shared = self.shared.clone();
        let failed = &shared.targets[target];
        let moves_on =
            failed.trigger.moves_on(&outcome, kind) || shared.special_chain_for(self.next, kind);
        if !moves_on {
            return Step::Return(result);
        }
        let (message, status, upstream_attempts) = match &result {
            Err(err) => (
                err.to_string(),
                notes::status(err),
                notes::upstream_attempts(err).unwrap_or(u32::from(!kind.is_local_rejection())),
            ),
            Ok(_) => (format!("response classified as {kind}"), None, 1),
        };
        self.failures.push(AttemptRecord {
            target: failed.name.clone(),
            kind,
            message: message.clone(),
            retry_after: outcome.retry_after(),
            status,
            upstream_attempts,
        });
        if other_busy || self.starting.is_some() {
            return Step::Continue;
        }
        match shared
            .next_for(self.next, kind)
            .filter(|_| self.may_start_another())
        {
            Some(next) => {
                self.schedule(next, FallbackReason::Failed { kind, message });
                Step::Continue
            }
            None => Step::Return(Err(self.exhausted())),
        }
    }

    /// Polls the call in `slot` (made to `target`); a finished call is emptied from its
    /// slot and handled. `None` while it runs or when the slot is empty.
    fn poll_call(
        &mut self,
        mut slot: Pin<&mut Option<S::Future>>,
        target: usize,
        other_busy: bool,
        cx: &mut Context<'_>,
    ) -> Option<Step<Result<S::Response, S::Error>>> {
        let result = match slot.as_mut().as_pin_mut()?.poll(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => return None,
        };
        slot.set(None);
        Some(self.on_result(target, result, other_busy))
    }

    fn record_success(&mut self, target: usize, result: &mut Result<S::Response, S::Error>) {
        let Ok(response) = result else { return };
        if !self.span.is_disabled() {
            let upstream: u32 = self.failures.iter().map(|f| f.upstream_attempts).sum();
            let attempts = response.metadata().map_or(1, |meta| meta.attempts.max(1));
            self.span
                .record("llm.upstream", &*self.shared.targets[target].name)
                .record("llm.fallbacks", self.failures.len() as u64)
                .record("llm.attempts", u64::from(attempts + upstream));
        }
        if let Some(meta) = response.metadata_mut() {
            meta.target = Some(self.shared.targets[target].name.clone());
            meta.fallbacks = self.failures.len() as u32;
            // NOTE: upstream calls only: the answering target's own count (its retry layer
            // records it) plus what each failed target's error says it stands for; a target
            // skipped by our own breaker or limiter made none.
            let before: u32 = self.failures.iter().map(|f| f.upstream_attempts).sum();
            meta.attempts = meta.attempts.max(1) + before;
        }
    }
}

impl<S, Req, C, R> Future for ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<FallbackExhausted> + fmt::Display + 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    Req: RequestExtensions,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.core.span.is_disabled() {
            return self.poll_chain(cx);
        }
        // NOTE: the targets' calls are polled inside the span: their spans are its children
        // and the retries' and moves' events are its events.
        let span = self.core.span.clone();
        let _entered = span.enter();
        let result = ready!(self.as_mut().poll_chain(cx));
        if let Err(err) = &result {
            let kind = self.core.classifier.classify(Err(err)).kind();
            span.record("error.type", kind.map_or("other", |k| k.as_str()));
        }
        Poll::Ready(result)
    }
}

impl<S, Req, C, R> ResponseFuture<S, Req, C, R>
where
    S: Service<Req> + Clone,
    S::Response: ResponseMetadata,
    S::Error: From<FallbackExhausted> + fmt::Display + 'static,
    C: Classify<S::Response, S::Error>,
    R: CloneRequest<Req>,
    Req: RequestExtensions,
{
    fn poll_chain(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<S::Response, S::Error>> {
        let mut this = self.project();
        let core = &mut *this.core;
        loop {
            let mut progressed = false;

            // 1. A target waiting for readiness.
            if let Some(starting) = core.starting.as_mut() {
                match starting.service.poll_ready(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Err(err)) => {
                        let target = starting.target;
                        core.starting = None;
                        progressed = true;
                        let busy = this.first.is_some() || this.second.is_some();
                        if let Step::Return(out) = core.on_result(target, Err(err), busy) {
                            this.first.set(None);
                            this.second.set(None);
                            return Poll::Ready(out);
                        }
                    }
                    Poll::Ready(Ok(())) => {
                        let Starting {
                            target,
                            mut service,
                        } = core.starting.take().expect("checked above");
                        progressed = true;
                        match core.request_for(target) {
                            Some(request) => {
                                let call = service.call(request);
                                if this.first.is_none() {
                                    this.first.set(Some(call));
                                    core.first_target = target;
                                } else {
                                    this.second.set(Some(call));
                                    core.second_target = target;
                                }
                                let busy = usize::from(this.first.is_some())
                                    + usize::from(this.second.is_some());
                                core.arm_hedge(busy);
                            }
                            // The request was sent as it was and cannot be copied again.
                            None if this.first.is_none() && this.second.is_none() => {
                                return Poll::Ready(Err(core.exhausted()));
                            }
                            None => {}
                        }
                    }
                }
            }

            // 2. The calls in flight. An answer wins: the other call, if any, is dropped
            // (cancelled).
            let (first, second) = (core.first_target, core.second_target);
            match core.poll_call(this.first.as_mut(), first, this.second.is_some(), cx) {
                Some(Step::Return(out)) => {
                    this.second.set(None);
                    return Poll::Ready(out);
                }
                Some(Step::Continue) => progressed = true,
                None => {}
            }
            match core.poll_call(this.second.as_mut(), second, this.first.is_some(), cx) {
                Some(Step::Return(out)) => {
                    this.first.set(None);
                    return Poll::Ready(out);
                }
                Some(Step::Continue) => progressed = true,
                None => {}
            }
            if core.starting.is_none() && this.first.is_none() && this.second.is_none() {
                // Both calls ended in failures that moved on while another was in flight:
                // pick the next target for the last failure now.
                let kind = core.failures.last().map_or(ErrorKind::Other, |f| f.kind);
                match core
                    .shared
                    .next_for(core.next, kind)
                    .filter(|_| core.may_start_another())
                {
                    Some(next) => {
                        let message = core
                            .failures
                            .last()
                            .map(|f| f.message.clone())
                            .unwrap_or_default();
                        core.schedule(next, FallbackReason::Failed { kind, message });
                        continue;
                    }
                    None => return Poll::Ready(Err(core.exhausted())),
                }
            }

            // 3. The hedge timer.
            if let Some(timer) = core.hedge_timer.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    core.hedge_timer = None;
                    progressed = true;
                    let free = this.first.is_none() || this.second.is_none();
                    if free && core.starting.is_none() && core.may_start_another() {
                        if let Some(hedge) = core.shared.next_regular(core.next) {
                            core.hedges += 1;
                            let after = core.shared.hedge_after.unwrap_or_default();
                            core.schedule(hedge, FallbackReason::Hedged { after });
                        }
                    }
                }
            }

            if !progressed {
                return Poll::Pending;
            }
        }
    }
}
