//! [`ResponseFuture`]: admission (at once, after a wait, or rejected), the call, and the
//! feedback its result gives the limiter.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use llm_core::{
    Classify, EndObserver, ErrorKind, LimitReason, LocalRateLimited, ObserveEnd, ReportsUsage,
    RequestExtensions, TokenCost,
};
use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tokio::time::Sleep;
use tower_service::Service;

use crate::config::Mode;
use crate::gcra::Grant;
use llm_core::KeyOf;

use crate::shared::{Shared, Stats};
use crate::store::{RateLimitStore, StoreReply};

type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A grant and the key it was made for; until `sent`, the future's drop hands it back to the
/// store (a call that never went).
struct Held<K> {
    key: K,
    grant: Grant,
    sent: bool,
}

/// Counts a request as waiting while it lives.
struct Waiting(Arc<Stats>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // Waiting for a concurrency permit.
        Permit { acquire: Boxed<Result<OwnedSemaphorePermit, AcquireError>> },
        // Waiting for a store that answers later.
        Acquiring { pending: Boxed<Result<Grant, LocalRateLimited>> },
        // Waiting for the reserved slot (boxed: a `Sleep` is most of the future's size, and
        // only a call that waits needs one).
        Sleeping { sleep: Pin<Box<Sleep>> },
        // Waiting for the inner service's readiness after a wait.
        Readying,
        Called { #[pin] future: F },
        Rejected { error: Option<LocalRateLimited> },
    }
}

pin_project! {
    /// The future of a [`RateLimit`](crate::RateLimit) call.
    pub struct ResponseFuture<S, Req, St, KF, C, Cl>
    where
        S: Service<Req>,
        KF: KeyOf<Req>,
        St: RateLimitStore<KF::Key>,
    {
        #[pin]
        state: State<S::Future>,
        shared: Arc<Shared<St, KF, C, Cl>>,
        key: Option<KF::Key>,
        tokens: u64,
        max_wait: Duration,
        held: Option<Held<KF::Key>>,
        permit: Option<OwnedSemaphorePermit>,
        waiting: Option<Waiting>,
        // Only when the call could not go at once: a clone of the inner service (polled for
        // readiness before the call) and the request.
        service: Option<S>,
        request: Option<Req>,
    }

    // NOTE: the grant goes back through the layer's store, which the future holds anyway:
    // no store handle of its own per call.
    impl<S, Req, St, KF, C, Cl> PinnedDrop for ResponseFuture<S, Req, St, KF, C, Cl>
    where
        S: Service<Req>,
        KF: KeyOf<Req>,
        St: RateLimitStore<KF::Key>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(held) = this.held.take() {
                if !held.sent {
                    this.shared.store.release(&held.key, &held.grant);
                }
            }
        }
    }
}

impl<S, Req, St, KF, C, Cl> fmt::Debug for ResponseFuture<S, Req, St, KF, C, Cl>
where
    S: Service<Req>,
    KF: KeyOf<Req>,
    St: RateLimitStore<KF::Key>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl<S, Req, St, KF, C, Cl> ResponseFuture<S, Req, St, KF, C, Cl>
where
    S: Service<Req> + Clone,
    KF: KeyOf<Req>,
    St: RateLimitStore<KF::Key>,
    C: TokenCost<Req>,
    Req: RequestExtensions,
{
    #[inline]
    pub(crate) fn start(inner: &mut S, shared: Arc<Shared<St, KF, C, Cl>>, request: Req) -> Self {
        let key = shared.key_of.key_of(&request);
        let tokens = shared.cost.cost(&request);
        let max_wait = match shared.mode {
            Mode::Reject => Duration::ZERO,
            Mode::Wait => request
                .deadline()
                .map_or(shared.max_wait, |d| d.remaining().min(shared.max_wait)),
        };
        if shared.concurrency.is_none() {
            let reply = shared.store.acquire(&key, tokens, max_wait);
            if let StoreReply::Ready(Ok(grant)) = reply {
                if grant.wait.is_zero() {
                    // NOTE: most calls: admitted at once. The future is built in one
                    // expression, straight into the caller's slot.
                    shared.admitted::<KF::Key>();
                    return ResponseFuture {
                        state: State::Called {
                            future: inner.call(request),
                        },
                        held: Some(Held {
                            key,
                            grant,
                            sent: true,
                        }),
                        shared,
                        key: None,
                        tokens,
                        max_wait,
                        permit: None,
                        waiting: None,
                        service: None,
                        request: None,
                    };
                }
            }
            return Self::new(shared, key, tokens, max_wait).answered(inner, request, reply);
        }
        Self::new(shared, key, tokens, max_wait).start_limited(inner, request)
    }

    fn new(
        shared: Arc<Shared<St, KF, C, Cl>>,
        key: KF::Key,
        tokens: u64,
        max_wait: Duration,
    ) -> Self {
        ResponseFuture {
            state: State::Readying,
            shared,
            key: Some(key),
            tokens,
            max_wait,
            held: None,
            permit: None,
            waiting: None,
            service: None,
            request: None,
        }
    }

    /// A start under a concurrency limit: a permit first, then the store.
    #[inline(never)]
    fn start_limited(mut self, inner: &mut S, request: Req) -> Self {
        let semaphore = &self
            .shared
            .concurrency
            .as_ref()
            .expect("only called with a concurrency limit")
            .semaphore;
        match semaphore.clone().try_acquire_owned() {
            Ok(permit) => self.permit = Some(permit),
            Err(_) if self.shared.mode == Mode::Reject => {
                return self.reject(LocalRateLimited::new(LimitReason::Concurrency, None));
            }
            Err(_) => {
                self.state = State::Permit {
                    acquire: Box::pin(semaphore.clone().acquire_owned()),
                };
                self.wait_with(inner, request);
                return self;
            }
        }
        let key = self.key.as_ref().expect("set at the start");
        let reply = self.shared.store.acquire(key, self.tokens, self.max_wait);
        self.answered(inner, request, reply)
    }

    /// The store's first answer: call at once, wait for the slot, wait for the store, or
    /// reject.
    #[inline(never)]
    fn answered(mut self, inner: &mut S, request: Req, reply: StoreReply) -> Self {
        match reply {
            StoreReply::Ready(Ok(grant)) if grant.wait.is_zero() => {
                self.hold(grant, true);
                self.state = State::Called {
                    future: inner.call(request),
                };
            }
            StoreReply::Ready(Ok(grant)) => {
                self.shared.waits(grant.wait);
                self.hold(grant, false);
                self.state = State::Sleeping {
                    sleep: Box::pin(tokio::time::sleep(grant.wait)),
                };
                self.wait_with(inner, request);
            }
            StoreReply::Ready(Err(err)) => return self.reject(err),
            StoreReply::Pending(pending) => {
                self.state = State::Acquiring { pending };
                self.wait_with(inner, request);
            }
        }
        self
    }

    fn reject(mut self, err: LocalRateLimited) -> Self {
        self.shared.rejected::<KF::Key>(&err);
        self.state = State::Rejected { error: Some(err) };
        self
    }

    fn wait_with(&mut self, inner: &S, request: Req) {
        // NOTE: the service polled ready is left for the next call; this clone is polled
        // again when the wait is over.
        self.service = Some(inner.clone());
        self.request = Some(request);
        self.shared.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.waiting = Some(Waiting(self.shared.stats.clone()));
    }

    fn hold(&mut self, grant: Grant, sent: bool) {
        let key = self.key.take().expect("the key is held once");
        self.held = Some(Held { key, grant, sent });
        if sent {
            self.shared.admitted::<KF::Key>();
        }
    }
}

/// The state after a store answered a waiting request: sleep until its slot, or reject.
fn admitted<F, St, K, KF, C, Cl>(
    result: Result<Grant, LocalRateLimited>,
    shared: &Arc<Shared<St, KF, C, Cl>>,
    key: &mut Option<K>,
    held: &mut Option<Held<K>>,
) -> State<F>
where
    St: RateLimitStore<K>,
{
    match result {
        Ok(grant) => {
            if !grant.wait.is_zero() {
                shared.waits(grant.wait);
            }
            let key = key.take().expect("the key is held until admission");
            *held = Some(Held {
                key,
                grant,
                sent: false,
            });
            State::Sleeping {
                sleep: Box::pin(tokio::time::sleep(grant.wait)),
            }
        }
        Err(err) => {
            shared.rejected::<K>(&err);
            State::Rejected { error: Some(err) }
        }
    }
}

impl<S, Req, St, KF, C, Cl> Future for ResponseFuture<S, Req, St, KF, C, Cl>
where
    S: Service<Req>,
    S::Error: From<LocalRateLimited>,
    S::Response: ReportsUsage + ObserveEnd,
    KF: KeyOf<Req>,
    St: RateLimitStore<KF::Key>,
    Cl: Classify<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { error } => {
                    let error = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(S::Error::from(error)));
                }
                StateProj::Permit { acquire } => {
                    let permit = ready!(acquire.as_mut().poll(cx))
                        .expect("the limiter never closes its semaphore");
                    *this.permit = Some(permit);
                    let key = this.key.as_ref().expect("the key is held until admission");
                    match this.shared.store.acquire(key, *this.tokens, *this.max_wait) {
                        StoreReply::Ready(result) => {
                            let next = admitted(result, this.shared, this.key, this.held);
                            this.state.set(next);
                        }
                        StoreReply::Pending(pending) => {
                            this.state.set(State::Acquiring { pending });
                        }
                    }
                }
                StateProj::Acquiring { pending } => {
                    let result = ready!(pending.as_mut().poll(cx));
                    let next = admitted(result, this.shared, this.key, this.held);
                    this.state.set(next);
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    let service = this
                        .service
                        .as_mut()
                        .expect("a waiting call keeps a service");
                    ready!(service.poll_ready(cx))?;
                    let request = this
                        .request
                        .take()
                        .expect("a waiting call keeps its request");
                    if let Some(held) = this.held.as_mut() {
                        held.sent = true;
                    }
                    *this.waiting = None;
                    this.shared.admitted::<KF::Key>();
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Called { future } => {
                    let mut result = ready!(future.poll(cx));
                    let outcome = this.shared.classifier.classify(result.as_ref());
                    let held = this.held.take().expect("a call is made with a grant");
                    let store = &this.shared.store;
                    if outcome.kind() == Some(ErrorKind::RateLimited) {
                        if let Some(delay) = outcome.retry_after() {
                            // NOTE: the provider's pause holds for everyone sharing this limiter.
                            store.pause(&held.key, delay);
                        }
                    }
                    if !outcome.rate_limit().is_empty() {
                        store.observe(&held.key, outcome.rate_limit());
                    }
                    let permit = this.permit.take();
                    match &mut result {
                        Ok(response) if outcome.is_success() && response.ends_later() => {
                            if held.grant.tokens > 0 || permit.is_some() {
                                let store = store.clone();
                                response.observe_end(EndObserver::new(move |end| {
                                    if let Some(usage) = end.usage {
                                        store.reconcile(&held.key, &held.grant, usage.total_tokens);
                                    }
                                    drop(permit);
                                }));
                            }
                        }
                        Ok(response) => {
                            if let Some(usage) = response.usage() {
                                store.reconcile(&held.key, &held.grant, usage.total_tokens);
                            }
                        }
                        // A failed call is not billed: its estimate goes back.
                        Err(_) => store.reconcile(&held.key, &held.grant, 0),
                    }
                    return Poll::Ready(result);
                }
            }
        }
    }
}
