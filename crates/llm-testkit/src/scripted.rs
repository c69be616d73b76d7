//! [`ScriptedService`]: a service whose answers follow a script, on tokio's clock.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use llm_core::{
    EndObserver, ErrorKind, LlmError, ObserveEnd, Outcome, ReportsUsage, ResponseMeta,
    ResponseMetadata, ResponseOutcome, StreamEnd, Usage,
};
use tokio::time::Instant;
use tower_service::Service;

type Make<T> = Arc<dyn Fn() -> T + Send + Sync>;

enum Action<Res, Err> {
    Respond(Make<Res>),
    Compute(Make<Result<Res, Err>>),
    Fail(Make<Err>),
    FailLlm(LlmError),
    Hang,
}

impl<Res, Err> Clone for Action<Res, Err> {
    fn clone(&self) -> Self {
        match self {
            Action::Respond(make) => Action::Respond(make.clone()),
            Action::Compute(make) => Action::Compute(make.clone()),
            Action::Fail(make) => Action::Fail(make.clone()),
            Action::FailLlm(err) => Action::FailLlm(err.clone()),
            Action::Hang => Action::Hang,
        }
    }
}

/// One scripted answer: what to return, after how much (virtual) time.
///
/// ```
/// use std::time::Duration;
/// use llm_core::ErrorKind;
/// use llm_testkit::{Step, TestResponse};
///
/// let steps: Vec<Step<TestResponse>> = vec![
///     Step::fail(ErrorKind::Overloaded),
///     Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(1)),
///     Step::ok(TestResponse::new("fine")).after(Duration::from_millis(50)),
///     Step::hang(),
/// ];
/// ```
pub struct Step<Res = TestResponse, Err = LlmError> {
    delay: Duration,
    action: Action<Res, Err>,
}

impl<Res, Err> Clone for Step<Res, Err> {
    fn clone(&self) -> Self {
        Step {
            delay: self.delay,
            action: self.action.clone(),
        }
    }
}

impl<Res, Err> fmt::Debug for Step<Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let action = match &self.action {
            Action::Respond(_) => "respond".to_owned(),
            Action::Compute(_) => "compute".to_owned(),
            Action::Fail(_) => "fail".to_owned(),
            Action::FailLlm(err) => format!("fail({})", err.kind()),
            Action::Hang => "hang".to_owned(),
        };
        f.debug_struct("Step")
            .field("delay", &self.delay)
            .field("action", &action)
            .finish()
    }
}

impl<Res, Err> Step<Res, Err> {
    /// Answer with a clone of `response`.
    pub fn ok(response: Res) -> Self
    where
        Res: Clone + Send + Sync + 'static,
    {
        Step::respond_with(move || response.clone())
    }

    /// Answer with whatever `make` builds, for response types that are not `Clone`.
    pub fn respond_with(make: impl Fn() -> Res + Send + Sync + 'static) -> Self {
        Step {
            delay: Duration::ZERO,
            action: Action::Respond(Arc::new(make)),
        }
    }

    /// Answer with whatever `compute` returns when the step runs (after its delay): for
    /// targets whose health changes over time.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_core::{ErrorKind, LlmError};
    /// use llm_testkit::{Step, TestResponse};
    /// use tokio::time::Instant;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// // Down for the first 60 seconds, healthy after.
    /// let recovers_at = Instant::now() + Duration::from_secs(60);
    /// let step: Step = Step::from_fn(move || {
    ///     if Instant::now() < recovers_at {
    ///         Err(LlmError::new(ErrorKind::ServerError, "down"))
    ///     } else {
    ///         Ok(TestResponse::new("up"))
    ///     }
    /// });
    /// # }
    /// ```
    pub fn from_fn(compute: impl Fn() -> Result<Res, Err> + Send + Sync + 'static) -> Self {
        Step {
            delay: Duration::ZERO,
            action: Action::Compute(Arc::new(compute)),
        }
    }

    /// Fail with an [`LlmError`] of `kind`, converted into the service's error type.
    pub fn fail(kind: ErrorKind) -> Self {
        Step::fail_with_error(LlmError::new(kind, format!("scripted {kind}")))
    }

    /// Fail with `error`, converted into the service's error type.
    pub fn fail_with_error(error: LlmError) -> Self {
        Step {
            delay: Duration::ZERO,
            action: Action::FailLlm(error),
        }
    }

    /// Fail with whatever `make` builds, for error types other than [`LlmError`].
    pub fn err_with(make: impl Fn() -> Err + Send + Sync + 'static) -> Self {
        Step {
            delay: Duration::ZERO,
            action: Action::Fail(Arc::new(make)),
        }
    }

    /// Never answer: the call's future stays pending until it is dropped.
    pub fn hang() -> Self {
        Step {
            delay: Duration::ZERO,
            action: Action::Hang,
        }
    }

    /// Take `delay` of tokio time before answering.
    #[must_use]
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Attach a server delay to a scripted failure (it is ignored on other steps).
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        if let Action::FailLlm(err) = self.action {
            self.action = Action::FailLlm(err.with_retry_after(delay));
        }
        self
    }
}

impl<B, Err> Step<http::Response<B>, Err>
where
    B: Default + 'static,
{
    /// Answer with an `http::Response` of `status` and an empty body.
    ///
    /// ```
    /// use llm_testkit::Step;
    /// let step: Step<http::Response<String>> = Step::status(503);
    /// ```
    pub fn status(status: u16) -> Self {
        Step::http(status, &[])
    }

    /// Answer with an `http::Response` of `status`, `headers` and an empty body.
    ///
    /// ```
    /// use llm_testkit::Step;
    /// let step: Step<http::Response<String>> = Step::http(429, &[("retry-after", "2")]);
    /// ```
    pub fn http(status: u16, headers: &[(&str, &str)]) -> Self {
        let status = http::StatusCode::from_u16(status).expect("a valid HTTP status code");
        let headers: Vec<(http::HeaderName, http::HeaderValue)> = headers
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::try_from(*name).expect("a valid header name"),
                    http::HeaderValue::try_from(*value).expect("a valid header value"),
                )
            })
            .collect();
        Step::respond_with(move || {
            let mut res = http::Response::new(B::default());
            *res.status_mut() = status;
            res.headers_mut().extend(headers.iter().cloned());
            res
        })
    }
}

/// The default response of a [`ScriptedService`]: a body, optional usage, and room for the
/// layers' [`ResponseMeta`]. It is always a success.
///
/// ```
/// use llm_core::{ReportsUsage, Usage};
/// use llm_testkit::TestResponse;
///
/// let res = TestResponse::new("hi").with_usage(Usage::new(3, 1));
/// assert_eq!(res.body(), "hi");
/// assert_eq!(res.usage(), Some(Usage::new(3, 1)));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TestResponse {
    body: String,
    usage: Option<Usage>,
    meta: Option<ResponseMeta>,
}

impl TestResponse {
    /// A response with an empty body: cloning it allocates nothing.
    pub const EMPTY: TestResponse = TestResponse {
        body: String::new(),
        usage: None,
        meta: None,
    };

    /// A response with `body`.
    pub fn new(body: impl Into<String>) -> Self {
        TestResponse {
            body: body.into(),
            usage: None,
            meta: None,
        }
    }

    /// Reports `usage` for the limiter's reconciliation.
    #[must_use]
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = Some(usage);
        self
    }

    /// The body.
    pub fn body(&self) -> &str {
        &self.body
    }
}

impl ResponseOutcome for TestResponse {
    fn response_outcome(&self) -> Outcome {
        Outcome::success()
    }
}

impl ReportsUsage for TestResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl ResponseMetadata for TestResponse {
    fn metadata(&self) -> Option<&ResponseMeta> {
        self.meta.as_ref()
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(self.meta.get_or_insert_with(ResponseMeta::new))
    }
}

impl ObserveEnd for TestResponse {}

/// A streamed response whose end the test decides: [`finish`](Self::finish) it as a
/// complete stream or [`interrupt`](Self::interrupt) it mid-way; dropping it unfinished
/// tells observers the caller went away. Layers that watch streams (breaker, limiter) see
/// these ends exactly as they would a provider's.
///
/// ```
/// use llm_core::ObserveEnd;
/// use llm_testkit::TestStream;
///
/// let stream = TestStream::new();
/// assert!(stream.ends_later());
/// stream.interrupt();
/// ```
#[derive(Debug, Default)]
pub struct TestStream {
    observers: Vec<EndObserver>,
    meta: Option<ResponseMeta>,
}

impl TestStream {
    /// A stream no one observes yet.
    pub fn new() -> Self {
        TestStream::default()
    }

    /// Ends the stream with its terminator: a success.
    pub fn finish(self) {
        self.end(StreamEnd::new(Outcome::success(), None));
    }

    /// Ends the stream with its terminator, reporting `usage` (as a final usage chunk does).
    pub fn finish_with_usage(self, usage: Usage) {
        self.end(StreamEnd::new(Outcome::success(), Some(usage)));
    }

    /// Breaks the stream after output began: a `StreamInterrupted` failure.
    pub fn interrupt(self) {
        self.end(StreamEnd::new(
            Outcome::failure(ErrorKind::StreamInterrupted),
            None,
        ));
    }

    /// Ends the stream as `end` says.
    pub fn end(mut self, end: StreamEnd) {
        for observer in self.observers.drain(..) {
            observer.finish(end);
        }
    }

    /// How many layers are watching for the end.
    pub fn observers(&self) -> usize {
        self.observers.len()
    }
}

impl ObserveEnd for TestStream {
    fn ends_later(&self) -> bool {
        true
    }

    fn observe_end(&mut self, observer: EndObserver) {
        self.observers.push(observer);
    }
}

impl ResponseOutcome for TestStream {
    fn response_outcome(&self) -> Outcome {
        Outcome::success()
    }
}

impl ReportsUsage for TestStream {
    fn usage(&self) -> Option<Usage> {
        // Known only at the end of the stream: see `finish_with_usage`.
        None
    }
}

impl ResponseMetadata for TestStream {
    fn metadata(&self) -> Option<&ResponseMeta> {
        self.meta.as_ref()
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(self.meta.get_or_insert_with(ResponseMeta::new))
    }
}

/// One recorded call.
///
/// ```
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (svc, handle) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")));
/// svc.oneshot(42).await.unwrap();
/// let call = &handle.calls()[0];
/// assert_eq!((call.index, call.request), (0, 42));
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Call<Req> {
    /// The call's position, from 0.
    pub index: usize,
    /// When `call` was made, on tokio's clock.
    pub at: Instant,
    /// The request.
    pub request: Req,
}

struct State<Req, Res, Err> {
    script: VecDeque<Step<Res, Err>>,
    otherwise: Option<Step<Res, Err>>,
    calls: Vec<Call<Req>>,
    in_flight: usize,
    completed: usize,
    dropped: usize,
    ready: bool,
    waiters: Vec<Waker>,
}

struct Shared<Req, Res, Err> {
    state: Mutex<State<Req, Res, Err>>,
}

impl<Req, Res, Err> Shared<Req, Res, Err> {
    fn lock(&self) -> MutexGuard<'_, State<Req, Res, Err>> {
        // A panicking test thread must not hide the state from the assertions after it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A service that answers each call with the next [`Step`] of its script, records every call
/// with its tokio-clock timestamp, and enforces tower's `poll_ready`-before-`call` contract.
///
/// When the script runs out it answers with the `otherwise` step ([`ScriptedService::then`];
/// by default a panic that names the call, so an unexpected extra attempt fails the test).
/// Clones share the script and the record; each clone has its own readiness.
///
/// ```
/// use llm_core::ErrorKind;
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::{Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // Down for three calls, then healthy for good.
/// let (svc, handle) = ScriptedService::<u32>::new(vec![Step::fail(ErrorKind::ServerError); 3]);
/// let svc = svc.then(Step::ok(TestResponse::new("ok")));
/// for i in 0..5 {
///     let _ = svc.clone().oneshot(i).await;
/// }
/// assert_eq!(handle.call_count(), 5);
/// # }
/// ```
pub struct ScriptedService<Req, Res = TestResponse, Err = LlmError> {
    shared: Arc<Shared<Req, Res, Err>>,
    ready: bool,
}

impl<Req, Res, Err> fmt::Debug for ScriptedService<Req, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ScriptedService")
            .field("steps_left", &state.script.len())
            .field("calls", &state.calls.len())
            .field("ready", &self.ready)
            .finish()
    }
}

impl<Req, Res, Err> Clone for ScriptedService<Req, Res, Err> {
    fn clone(&self) -> Self {
        // NOTE: tower's contract: a clone of a ready service is not ready.
        ScriptedService {
            shared: self.shared.clone(),
            ready: false,
        }
    }
}

impl<Req, Res, Err> ScriptedService<Req, Res, Err> {
    /// A service following `steps`, and the handle that reads its record.
    pub fn new(
        steps: impl IntoIterator<Item = Step<Res, Err>>,
    ) -> (Self, ScriptHandle<Req, Res, Err>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                script: steps.into_iter().collect(),
                otherwise: None,
                calls: Vec::new(),
                in_flight: 0,
                completed: 0,
                dropped: 0,
                ready: true,
                waiters: Vec::new(),
            }),
        });
        (
            ScriptedService {
                shared: shared.clone(),
                ready: false,
            },
            ScriptHandle { shared },
        )
    }

    /// A service that answers every call with `step`.
    pub fn always(step: Step<Res, Err>) -> (Self, ScriptHandle<Req, Res, Err>) {
        let (svc, handle) = ScriptedService::new([]);
        (svc.then(step), handle)
    }

    /// Answer with `step` once the script has run out.
    #[must_use]
    pub fn then(self, step: Step<Res, Err>) -> Self {
        self.shared.lock().otherwise = Some(step);
        self
    }
}

impl<Req, Res, Err> Service<Req> for ScriptedService<Req, Res, Err>
where
    Req: Clone + Send + 'static,
    Res: Send + 'static,
    Err: From<LlmError> + Send + 'static,
{
    type Response = Res;
    type Error = Err;
    type Future = Pin<Box<dyn Future<Output = Result<Res, Err>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Err>> {
        let mut state = self.shared.lock();
        if state.ready {
            self.ready = true;
            Poll::Ready(Ok(()))
        } else {
            state.waiters.push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        assert!(
            std::mem::replace(&mut self.ready, false),
            "poll_ready must be called before call, and return Ready(Ok(())) once per call"
        );
        let mut state = self.shared.lock();
        let index = state.calls.len();
        state.calls.push(Call {
            index,
            at: Instant::now(),
            request,
        });
        let step = state.script.pop_front().or_else(|| state.otherwise.clone());
        let Some(step) = step else {
            panic!(
                "ScriptedService: call {index} has no scripted step (script ran out and no `then` step)"
            );
        };
        state.in_flight += 1;
        drop(state);

        let guard = InFlight {
            shared: self.shared.clone(),
            done: false,
        };
        Box::pin(async move {
            let mut guard = guard;
            if !step.delay.is_zero() {
                tokio::time::sleep(step.delay).await;
            }
            let result = match step.action {
                Action::Respond(make) => Ok(make()),
                Action::Compute(make) => make(),
                Action::Fail(make) => Err(make()),
                Action::FailLlm(err) => Err(Err::from(err)),
                Action::Hang => std::future::pending().await,
            };
            guard.done = true;
            result
        })
    }
}

/// Counts a call as in flight until its future completes or is dropped.
struct InFlight<Req, Res, Err> {
    shared: Arc<Shared<Req, Res, Err>>,
    done: bool,
}

impl<Req, Res, Err> Drop for InFlight<Req, Res, Err> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.in_flight -= 1;
        if self.done {
            state.completed += 1;
        } else {
            state.dropped += 1;
        }
    }
}

/// Reads what a [`ScriptedService`] saw, and controls its readiness.
///
/// ```
/// use std::time::Duration;
/// use llm_testkit::{ScriptedService, Step, TestResponse};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (svc, handle) = ScriptedService::<u32>::always(Step::ok(TestResponse::new("ok")).after(Duration::from_secs(1)));
/// let call = tokio::spawn(svc.oneshot(1));
/// tokio::task::yield_now().await;
/// assert_eq!(handle.in_flight(), 1);
/// call.await.unwrap().unwrap();
/// assert_eq!((handle.in_flight(), handle.completed()), (0, 1));
/// # }
/// ```
pub struct ScriptHandle<Req, Res = TestResponse, Err = LlmError> {
    shared: Arc<Shared<Req, Res, Err>>,
}

impl<Req, Res, Err> Clone for ScriptHandle<Req, Res, Err> {
    fn clone(&self) -> Self {
        ScriptHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<Req, Res, Err> fmt::Debug for ScriptHandle<Req, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ScriptHandle")
            .field("calls", &state.calls.len())
            .field("in_flight", &state.in_flight)
            .finish()
    }
}

impl<Req: Clone, Res, Err> ScriptHandle<Req, Res, Err> {
    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call<Req>> {
        self.shared.lock().calls.clone()
    }

    /// The tokio-clock time of every call so far.
    pub fn call_times(&self) -> Vec<Instant> {
        self.shared
            .lock()
            .calls
            .iter()
            .map(|call| call.at)
            .collect()
    }

    /// The gaps between consecutive calls: the backoff schedule a retry layer followed.
    pub fn gaps(&self) -> Vec<Duration> {
        self.call_times().windows(2).map(|w| w[1] - w[0]).collect()
    }
}

impl<Req, Res, Err> ScriptHandle<Req, Res, Err> {
    /// How many calls were made.
    pub fn call_count(&self) -> usize {
        self.shared.lock().calls.len()
    }

    /// Calls whose futures are still alive.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Calls whose futures were dropped before they answered (cancelled).
    pub fn dropped(&self) -> usize {
        self.shared.lock().dropped
    }

    /// Calls that answered.
    pub fn completed(&self) -> usize {
        self.shared.lock().completed
    }

    /// Steps of the script not yet used.
    pub fn steps_left(&self) -> usize {
        self.shared.lock().script.len()
    }

    /// Makes `poll_ready` pend (`false`) or succeed (`true`) on every clone; waiting tasks
    /// are woken when readiness returns.
    pub fn set_ready(&self, ready: bool) {
        let waiters = {
            let mut state = self.shared.lock();
            state.ready = ready;
            if ready {
                std::mem::take(&mut state.waiters)
            } else {
                Vec::new()
            }
        };
        waiters.into_iter().for_each(Waker::wake);
    }
}
