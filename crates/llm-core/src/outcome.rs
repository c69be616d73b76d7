//! [`Outcome`]: what a classifier concluded about one call.

use std::time::Duration;

use crate::delay::RateLimitInfo;
use crate::kind::ErrorKind;

/// The classification of one call's result: success, or a failure of some [`ErrorKind`];
/// plus the delay the server asked for and the rate-limit state it reported.
///
/// It is `Copy` and allocation-free, so every layer can classify every call.
///
/// ```
/// use std::time::Duration;
/// use llm_core::{ErrorKind, Outcome};
///
/// let ok = Outcome::success();
/// assert!(ok.is_success());
///
/// let limited = Outcome::failure(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(2));
/// assert_eq!(limited.kind(), Some(ErrorKind::RateLimited));
/// assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    kind: Option<ErrorKind>,
    retry_after: Option<Duration>,
    rate_limit: RateLimitInfo,
}

impl Outcome {
    /// The call succeeded.
    pub const fn success() -> Self {
        Outcome {
            kind: None,
            retry_after: None,
            rate_limit: RateLimitInfo::new(),
        }
    }

    /// The call failed as `kind`.
    pub const fn failure(kind: ErrorKind) -> Self {
        Outcome {
            kind: Some(kind),
            retry_after: None,
            rate_limit: RateLimitInfo::new(),
        }
    }

    /// Records the delay the server asked for (`None` leaves it unset).
    #[must_use]
    pub fn with_retry_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.retry_after = delay.into();
        self
    }

    /// Records the rate-limit state the server reported.
    #[must_use]
    pub fn with_rate_limit(mut self, info: RateLimitInfo) -> Self {
        self.rate_limit = info;
        self
    }

    /// Whether the call succeeded.
    pub const fn is_success(&self) -> bool {
        self.kind.is_none()
    }

    /// Whether the call failed.
    pub const fn is_failure(&self) -> bool {
        self.kind.is_some()
    }

    /// The kind of failure; `None` on success.
    pub const fn kind(&self) -> Option<ErrorKind> {
        self.kind
    }

    /// The delay the server asked for before the next call, if it said.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The rate-limit state the server reported (empty when it reported none).
    pub const fn rate_limit(&self) -> &RateLimitInfo {
        &self.rate_limit
    }

    /// Whether the default policy retries this outcome on the same target.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_some_and(ErrorKind::is_retryable)
    }
}

/// A response that can say whether it is a failure: an `http::Response` with status 503 is an
/// `Ok` to tower but a failure to a retry policy.
///
/// ```
/// use llm_core::{ErrorKind, ResponseOutcome};
///
/// let res = http::Response::builder().status(429).header("retry-after", "3").body(()).unwrap();
/// let outcome = res.response_outcome();
/// assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
/// assert_eq!(outcome.retry_after(), Some(std::time::Duration::from_secs(3)));
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot say whether it is a success or a failure",
    note = "implement `ResponseOutcome` for it, or give the layer a classifier of your own",
    note = "for `reqwest::Response`, enable the `reqwest` feature of llm-tower (or of llm-core)"
)]
pub trait ResponseOutcome {
    /// Classifies this response.
    fn response_outcome(&self) -> Outcome;
}

/// An error that can say what kind of failure it is.
///
/// Implement it for your own error type to use [`DefaultClassifier`](crate::DefaultClassifier) with it:
///
/// ```
/// use llm_core::{ErrorKind, ErrorOutcome, Outcome};
///
/// #[derive(Debug)]
/// enum MyError { Busy, BadInput }
///
/// impl ErrorOutcome for MyError {
///     fn error_outcome(&self) -> Outcome {
///         match self {
///             MyError::Busy => Outcome::failure(ErrorKind::Overloaded),
///             MyError::BadInput => Outcome::failure(ErrorKind::InvalidRequest),
///         }
///     }
/// }
/// assert!(MyError::Busy.error_outcome().is_retryable());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot say what kind of failure it is",
    note = "implement `ErrorOutcome` for it, or map it into `LlmError` or `BoxError`",
    note = "for `reqwest::Error` and `hyper::Error`, enable the `reqwest` or `hyper` feature of llm-tower (or of llm-core)"
)]
pub trait ErrorOutcome {
    /// Classifies this error. The outcome should be a failure.
    fn error_outcome(&self) -> Outcome;
}
