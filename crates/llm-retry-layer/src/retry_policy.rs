//! [`RetryPolicy`]: the extension point that prepares each retry's request, asynchronously.

use std::future::{Future, Ready, ready};

use crate::policy::RetryEvent;

/// Prepares the request of each retry, or refuses it — once the layer's configuration has
/// decided to retry (which failures, how often, after how long: [`RetryConfig`] stays the
/// way to say that).
///
/// A policy gets the copy of the request the next attempt would send and what failed, and
/// answers — asynchronously, so it may fetch a fresh credential or ask a service — with the
/// request to send (changed or not), or `None` to stop retrying and return the last result.
/// Its changes carry over to later retries. It runs before the retry's wait.
///
/// Closures `Fn(Req, &RetryEvent) -> impl Future<Output = Option<Req>>` are policies:
///
/// ```
/// use std::future::ready;
/// use llm_core::{ErrorKind, ErrorKinds};
/// use llm_retry_layer::{RetryConfig, RetryEvent, RetryLayer};
/// use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // A prompt too long for the model: retried once with half the output budget.
/// let (provider, calls) = ScriptedService::<TestRequest>::new([
///     Step::fail(ErrorKind::ContextLengthExceeded),
///     Step::ok(TestResponse::new("short answer")),
/// ]);
/// let retry = RetryLayer::builder()
///     .config(RetryConfig { retry_on: ErrorKinds::of(&[ErrorKind::ContextLengthExceeded]), ..RetryConfig::standard() })
///     .retry_policy(|mut request: TestRequest, event: &RetryEvent| {
///         let max = request.max_tokens.unwrap_or(4_096);
///         request.max_tokens = Some(max / 2);
///         ready((event.kind == ErrorKind::ContextLengthExceeded && max > 256).then_some(request))
///     })
///     .build()
///     .unwrap();
/// let svc = ServiceBuilder::new().layer(retry).service(provider);
///
/// let answer = svc.oneshot(TestRequest::new("gpt-4o").with_max_tokens(4_096)).await.unwrap();
/// assert_eq!(answer.body(), "short answer");
/// assert_eq!(calls.calls()[1].request.max_tokens, Some(2_048));
/// # }
/// ```
///
/// [`RetryConfig`]: crate::RetryConfig
pub trait RetryPolicy<Req> {
    /// The preparation of one retry.
    type Future: Future<Output = Option<Req>>;

    /// Prepares the retry `event` describes (its attempt number, the failure, the wait
    /// ahead) from `request`, the copy it would send.
    fn prepare(&self, request: Req, event: &RetryEvent) -> Self::Future;
}

/// The default policy: every retry sends the request as it was.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeepRequest;

impl<Req> RetryPolicy<Req> for KeepRequest {
    type Future = Ready<Option<Req>>;

    #[inline]
    fn prepare(&self, request: Req, _: &RetryEvent) -> Self::Future {
        ready(Some(request))
    }
}

impl<F, Fut, Req> RetryPolicy<Req> for F
where
    F: Fn(Req, &RetryEvent) -> Fut,
    Fut: Future<Output = Option<Req>>,
{
    type Future = Fut;

    fn prepare(&self, request: Req, event: &RetryEvent) -> Fut {
        self(request, event)
    }
}
