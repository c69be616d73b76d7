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
}

impl ResponseMeta {
    /// One attempt, no fallback.
    pub const fn new() -> Self {
        ResponseMeta {
            attempts: 1,
            target: None,
            fallbacks: 0,
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
