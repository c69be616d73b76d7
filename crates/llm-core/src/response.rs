//! [`ResponseMeta`]: what happened on the way to a response — attempts made, the target that
//! answered, fallbacks taken — so a gateway can report `retryCount` and `provider` and bill
//! the model that answered.

use std::sync::Arc;

/// What the layers did to produce a response.
///
/// ```
/// use std::sync::Arc;
/// use llm_core::{ResponseMeta, ResponseMetadata};
///
/// let mut res = http::Response::new(());
/// assert_eq!(res.metadata(), None);
/// let meta = res.metadata_mut().unwrap();
/// meta.attempts = 3;
/// meta.target = Some(Arc::from("anthropic"));
/// assert_eq!(res.metadata().unwrap().retries(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseMeta {
    /// Upstream attempts made for this response, the successful one included (at least 1).
    pub attempts: u32,
    /// The name of the fallback target that answered, when a fallback layer chose one.
    pub target: Option<Arc<str>>,
    /// Fallback targets that failed before the one that answered.
    pub fallbacks: u32,
    /// The member of a balanced pool that answered (a key, a deployment, a replica), when a
    /// pool chose one.
    pub member: Option<Arc<str>>,
}

impl ResponseMeta {
    /// One attempt, no fallback.
    pub const fn new() -> Self {
        ResponseMeta {
            attempts: 1,
            target: None,
            fallbacks: 0,
            member: None,
        }
    }

    /// Attempts beyond the first: the `retryCount` a gateway reports.
    pub fn retries(&self) -> u32 {
        self.attempts.saturating_sub(1)
    }
}

impl Default for ResponseMeta {
    fn default() -> Self {
        ResponseMeta::new()
    }
}

/// Access to a response's [`ResponseMeta`].
///
/// `http::Response` keeps it in its extensions, inserted on first `metadata_mut` (layers
/// only call that when there is something to record, so a first-try success allocates
/// nothing); the providers' `ChatResponse` holds it inline. A response type with nowhere to
/// keep it implements the trait with the defaults:
///
/// ```
/// use llm_core::ResponseMetadata;
///
/// struct Pong;
/// impl ResponseMetadata for Pong {}
///
/// assert!(Pong.metadata().is_none());
/// ```
#[diagnostic::on_unimplemented(
    message = "the layers cannot record attempts on `{Self}`",
    note = "implement `ResponseMetadata` for it (every method has a default)",
    note = "for `reqwest::Response`, enable the `reqwest` feature of llm-tower (or of llm-core)"
)]
pub trait ResponseMetadata {
    /// The response's metadata, if any was recorded.
    fn metadata(&self) -> Option<&ResponseMeta> {
        None
    }

    /// The response's metadata for recording, created on demand; `None` when the response
    /// type has nowhere to keep it.
    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        None
    }
}

impl<B> ResponseMetadata for http::Response<B> {
    fn metadata(&self) -> Option<&ResponseMeta> {
        self.extensions().get::<ResponseMeta>()
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(
            self.extensions_mut()
                .get_or_insert_default::<ResponseMeta>(),
        )
    }
}

/// How a streamed response ended: its outcome and, when the provider reported it, the
/// tokens it consumed.
///
/// ```
/// use llm_core::{Outcome, StreamEnd, Usage};
///
/// let end = StreamEnd::new(Outcome::success(), Some(Usage::new(14, 30)));
/// assert_eq!(end.usage.map(|u| u.total_tokens), Some(44));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamEnd {
    /// Success when the terminator arrived; a failure (typically `StreamInterrupted`) when
    /// the stream broke; `Cancelled` when the caller dropped it.
    pub outcome: crate::Outcome,
    /// The usage the stream reported (OpenAI's usage chunk, Anthropic's `message_delta`).
    pub usage: Option<crate::Usage>,
}

impl StreamEnd {
    /// A stream that ended with `outcome`, reporting `usage`.
    pub fn new(outcome: crate::Outcome, usage: Option<crate::Usage>) -> Self {
        StreamEnd { outcome, usage }
    }
}

/// Told once how a streamed response ended ([`StreamEnd`]): [`Outcome::success`](crate::Outcome::success) when its
/// terminator arrived, a failure (typically [`ErrorKind::StreamInterrupted`](crate::ErrorKind))
/// when it broke, with the usage the stream reported. Dropped without being told — the caller
/// dropped the stream — it reports [`ErrorKind::Cancelled`](crate::ErrorKind), so whatever it
/// guards (a probe slot, a limiter reservation) is released either way.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use llm_core::{EndObserver, ErrorKind, Outcome, StreamEnd};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let log = seen.clone();
/// let observer = EndObserver::new(move |end: StreamEnd| log.lock().unwrap().push(end.outcome.kind()));
/// observer.finish(StreamEnd::new(Outcome::failure(ErrorKind::StreamInterrupted), None));
///
/// let log = seen.clone();
/// drop(EndObserver::new(move |end: StreamEnd| log.lock().unwrap().push(end.outcome.kind())));
/// assert_eq!(*seen.lock().unwrap(), [Some(ErrorKind::StreamInterrupted), Some(ErrorKind::Cancelled)]);
/// ```
pub struct EndObserver {
    callback: Option<Box<dyn FnOnce(StreamEnd) + Send>>,
}

impl EndObserver {
    /// An observer that calls `callback` once with the stream's final outcome.
    pub fn new(callback: impl FnOnce(StreamEnd) + Send + 'static) -> Self {
        EndObserver {
            callback: Some(Box::new(callback)),
        }
    }

    /// Reports how the stream ended.
    pub fn finish(mut self, end: StreamEnd) {
        if let Some(callback) = self.callback.take() {
            callback(end);
        }
    }
}

impl Drop for EndObserver {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            callback(StreamEnd::new(
                crate::Outcome::failure(crate::ErrorKind::Cancelled),
                None,
            ));
        }
    }
}

impl std::fmt::Debug for EndObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndObserver")
            .field("finished", &self.callback.is_none())
            .finish()
    }
}

/// A response whose outcome may only be known when its stream ends (a stream
/// that breaks after its first chunk is a failure too). The breaker records such failures,
/// the limiter reconciles usage at the end.
///
/// Complete responses keep the defaults: `ends_later` is false and layers take the outcome
/// at hand as final. A stream type returns true and keeps every observer it is given, to
/// [`finish`](EndObserver::finish) them when its terminator arrives or it breaks.
///
/// ```
/// use llm_core::{EndObserver, ObserveEnd, Outcome, StreamEnd};
///
/// struct Chunks { observers: Vec<EndObserver> }
/// impl ObserveEnd for Chunks {
///     fn ends_later(&self) -> bool { true }
///     fn observe_end(&mut self, observer: EndObserver) { self.observers.push(observer) }
/// }
/// impl Chunks {
///     fn terminator_arrived(&mut self) {
///         for observer in self.observers.drain(..) { observer.finish(StreamEnd::new(Outcome::success(), None)) }
///     }
/// }
/// ```
pub trait ObserveEnd {
    /// Whether the outcome is only known at the end of a stream.
    fn ends_later(&self) -> bool {
        false
    }

    /// Keeps `observer` to tell it how the stream ended. Only called when
    /// [`ends_later`](Self::ends_later) is true; the default drops it (reporting `Cancelled`).
    fn observe_end(&mut self, observer: EndObserver) {
        drop(observer);
    }
}

impl<B> ObserveEnd for http::Response<B> {}

// Plain response types are successes, complete as they are, with nowhere to keep metadata.
macro_rules! plain_response {
    ($($ty:ty),* $(,)?) => {
        $(
            impl ResponseMetadata for $ty {}
            impl ObserveEnd for $ty {}
            impl crate::ReportsUsage for $ty {
                fn usage(&self) -> Option<crate::Usage> {
                    None
                }
            }
            impl crate::ResponseOutcome for $ty {
                fn response_outcome(&self) -> crate::Outcome {
                    crate::Outcome::success()
                }
            }
        )*
    };
}
plain_response!(
    (),
    String,
    &'static str,
    u8,
    u16,
    u32,
    u64,
    usize,
    i32,
    i64,
    bool
);

impl<T> ResponseMetadata for Vec<T> {}
impl<T> ObserveEnd for Vec<T> {}
impl<T> crate::ResponseOutcome for Vec<T> {
    fn response_outcome(&self) -> crate::Outcome {
        crate::Outcome::success()
    }
}

#[cfg(feature = "reqwest")]
impl ResponseMetadata for reqwest::Response {
    fn metadata(&self) -> Option<&ResponseMeta> {
        self.extensions().get()
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(self.extensions_mut().get_or_insert_default())
    }
}

#[cfg(feature = "reqwest")]
impl ObserveEnd for reqwest::Response {}
