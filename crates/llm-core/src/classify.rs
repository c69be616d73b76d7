//! Turning a call's result into an [`Outcome`].
//!
//! A classifier implements [`Classify<Res, Err>`]. The stock ones:
//!
//! - [`DefaultClassifier`] asks the response ([`ResponseOutcome`]) and the error
//!   ([`ErrorOutcome`]) to classify themselves. `http::Response` does so by status and headers,
//!   [`LlmError`] by its kind, `BoxError` by looking through its source chain
//!   for our own errors, `std::io::Error`, timeouts, and (behind features) `reqwest` and `hyper`
//!   errors.
//! - [`ErrorClassifier`] treats every `Ok` as a success and asks only the error.
//! - Any closure `Fn(Result<&Res, &Err>) -> Outcome` is a classifier.
//!
//! The shape follows tower-http's `classify` module; unlike it, a failure here carries a kind,
//! a server delay and rate-limit observations, which the retry, fallback, breaker and limiter
//! layers all read.

use std::error::Error as StdError;
use std::io;
use std::time::SystemTime;

use http::StatusCode;

use crate::delay::{RateLimitInfo, server_delay};
use crate::error::{BoxError, CircuitOpen, FallbackExhausted, LlmError, LocalRateLimited};
use crate::kind::ErrorKind;
use crate::outcome::Outcome;

/// Classifies a call's result.
///
/// ```
/// use llm_core::{Classify, DefaultClassifier, ErrorKind, Outcome};
///
/// let response = http::Response::builder().status(503).body(()).unwrap();
/// let result: Result<&http::Response<()>, &llm_core::BoxError> = Ok(&response);
/// let outcome = DefaultClassifier.classify(result);
/// assert_eq!(outcome.kind(), Some(ErrorKind::ServerError));
///
/// // Closures classify too: here every error is a timeout.
/// let all_timeouts = |result: Result<&u32, &std::io::Error>| match result {
///     Ok(_) => Outcome::success(),
///     Err(_) => Outcome::failure(ErrorKind::Timeout),
/// };
/// let err = std::io::Error::other("late");
/// assert_eq!(all_timeouts.classify(Err(&err)).kind(), Some(ErrorKind::Timeout));
/// ```
pub trait Classify<Res, Err> {
    /// Classifies `result`.
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome;
}

impl<F, Res, Err> Classify<Res, Err> for F
where
    F: Fn(Result<&Res, &Err>) -> Outcome,
{
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        self(result)
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
pub trait ResponseOutcome {
    /// Classifies this response.
    fn response_outcome(&self) -> Outcome;
}

/// An error that can say what kind of failure it is.
///
/// Implement it for your own error type to use [`DefaultClassifier`] with it:
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
pub trait ErrorOutcome {
    /// Classifies this error. The outcome should be a failure.
    fn error_outcome(&self) -> Outcome;
}

/// Asks the response and the error to classify themselves: the classifier every layer uses
/// unless told otherwise.
///
/// ```
/// use llm_core::{Classify, DefaultClassifier, ErrorKind, LlmError};
///
/// let err = LlmError::new(ErrorKind::QuotaExceeded, "out of credit");
/// let result: Result<&http::Response<()>, &LlmError> = Err(&err);
/// let outcome = DefaultClassifier.classify(result);
/// assert_eq!(outcome.kind(), Some(ErrorKind::QuotaExceeded));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl<Res: ResponseOutcome, Err: ErrorOutcome> Classify<Res, Err> for DefaultClassifier {
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(res) => res.response_outcome(),
            Err(err) => err.error_outcome(),
        }
    }
}

/// Treats every `Ok` as a success and asks the error to classify itself: for services whose
/// response type says nothing about failure.
///
/// ```
/// use llm_core::{Classify, ErrorClassifier, ErrorKind, LlmError};
///
/// let ok: Result<&String, &LlmError> = Ok(&String::from("any response"));
/// assert!(ErrorClassifier.classify(ok).is_success());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorClassifier;

impl<Res, Err: ErrorOutcome> Classify<Res, Err> for ErrorClassifier {
    fn classify(&self, result: Result<&Res, &Err>) -> Outcome {
        match result {
            Ok(_) => Outcome::success(),
            Err(err) => err.error_outcome(),
        }
    }
}

/// The kind an HTTP status means on its own, without a body to refine it: `None` for
/// success, 408 timeout, 429 rate limited, 529 overloaded, other 5xx server errors,
/// 401/403 unauthorized, 402 quota, 404 not found, other 4xx invalid request.
///
/// Providers refine this with the body (`insufficient_quota`, context length, …).
///
/// ```
/// use http::StatusCode;
/// use llm_core::{ErrorKind, classify::status_kind};
///
/// assert_eq!(status_kind(StatusCode::OK), None);
/// assert_eq!(status_kind(StatusCode::from_u16(529).unwrap()), Some(ErrorKind::Overloaded));
/// assert_eq!(status_kind(StatusCode::BAD_REQUEST), Some(ErrorKind::InvalidRequest));
/// ```
pub fn status_kind(status: StatusCode) -> Option<ErrorKind> {
    let kind = match status.as_u16() {
        100..=399 => return None,
        408 => ErrorKind::Timeout,
        429 => ErrorKind::RateLimited,
        401 | 403 => ErrorKind::Unauthorized,
        402 => ErrorKind::QuotaExceeded,
        404 => ErrorKind::ModelNotFound,
        400..=499 => ErrorKind::InvalidRequest,
        529 => ErrorKind::Overloaded,
        _ => ErrorKind::ServerError,
    };
    Some(kind)
}

/// Classifies a status and its headers: the kind from [`status_kind`], the server delay from
/// the `retry-after` family, and the rate-limit headers. A 429 without a `retry-after` takes
/// its delay from an exhausted bucket's reset, when the headers report one.
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use llm_core::{ErrorKind, classify::classify_status};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-tokens", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-tokens", "20ms".parse().unwrap());
/// let outcome = classify_status(StatusCode::TOO_MANY_REQUESTS, &headers);
/// assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
/// assert_eq!(outcome.retry_after(), Some(std::time::Duration::from_millis(20)));
/// ```
pub fn classify_status(status: StatusCode, headers: &http::HeaderMap) -> Outcome {
    let kind = status_kind(status);
    let no_rate_headers = !headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")
    });
    // NOTE: the success path must stay cheap: no clock read and no header parsing when a
    // 2xx carries no rate-limit headers, which is what most plain HTTP APIs send.
    if kind.is_none() && no_rate_headers {
        return Outcome::success();
    }
    let now = SystemTime::now();
    let rate_limit = if no_rate_headers {
        RateLimitInfo::new()
    } else {
        RateLimitInfo::from_headers(headers, now)
    };
    let Some(kind) = kind else {
        return Outcome::success().with_rate_limit(rate_limit);
    };
    let mut delay = server_delay(headers, now);
    if delay.is_none() && kind == ErrorKind::RateLimited {
        delay = rate_limit.next_slot();
    }
    Outcome::failure(kind)
        .with_retry_after(delay)
        .with_rate_limit(rate_limit)
}

impl<B> ResponseOutcome for http::Response<B> {
    fn response_outcome(&self) -> Outcome {
        classify_status(self.status(), self.headers())
    }
}

impl ErrorOutcome for BoxError {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(&**self)
    }
}

impl ErrorOutcome for io::Error {
    fn error_outcome(&self) -> Outcome {
        classify_error_chain(self)
    }
}

impl ErrorOutcome for tokio::time::error::Elapsed {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(ErrorKind::Timeout)
    }
}

impl ErrorOutcome for std::convert::Infallible {
    fn error_outcome(&self) -> Outcome {
        match *self {}
    }
}

/// The kind of an `std::io::Error`: timeouts, and the connection failures a retry may cure.
fn io_kind(err: &io::Error) -> ErrorKind {
    use io::ErrorKind as Io;
    match err.kind() {
        Io::TimedOut | Io::WouldBlock => ErrorKind::Timeout,
        Io::ConnectionRefused
        | Io::ConnectionReset
        | Io::ConnectionAborted
        | Io::NotConnected
        | Io::AddrNotAvailable
        | Io::BrokenPipe
        | Io::UnexpectedEof
        | Io::Interrupted
        | Io::HostUnreachable
        | Io::NetworkUnreachable
        | Io::NetworkDown => ErrorKind::Network,
        _ => ErrorKind::Other,
    }
}

/// Classifies any error by walking its `source()` chain, outermost first, and taking the
/// first link it recognises: our own errors ([`LlmError`], [`CircuitOpen`],
/// [`LocalRateLimited`], [`FallbackExhausted`]), `std::io::Error`, tokio's `Elapsed`, and
/// with the `reqwest` / `hyper` features their errors. An unrecognised chain is
/// [`ErrorKind::Other`].
///
/// ```
/// use llm_core::{BoxError, ErrorKind, classify::classify_error_chain};
///
/// let refused: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
/// assert_eq!(classify_error_chain(&*refused).kind(), Some(ErrorKind::Network));
/// ```
pub fn classify_error_chain(err: &(dyn StdError + 'static)) -> Outcome {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(err) = current {
        if let Some(outcome) = classify_known(err) {
            return outcome;
        }
        current = err.source();
    }
    Outcome::failure(ErrorKind::Other)
}

fn classify_known(err: &(dyn StdError + 'static)) -> Option<Outcome> {
    if let Some(err) = err.downcast_ref::<LlmError>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<CircuitOpen>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<LocalRateLimited>() {
        return Some(err.error_outcome());
    }
    if let Some(err) = err.downcast_ref::<FallbackExhausted>() {
        return Some(err.error_outcome());
    }
    if err.is::<tokio::time::error::Elapsed>() {
        return Some(Outcome::failure(ErrorKind::Timeout));
    }
    if let Some(err) = err.downcast_ref::<io::Error>() {
        let kind = io_kind(err);
        // An io::Error often wraps the real cause (hyper and reqwest do this): look inside
        // before settling for `Other`.
        if kind == ErrorKind::Other {
            return err.get_ref().and_then(|inner| classify_known(inner));
        }
        return Some(Outcome::failure(kind));
    }
    #[cfg(feature = "reqwest")]
    if let Some(err) = err.downcast_ref::<reqwest::Error>() {
        return crate::transport::classify_reqwest(err);
    }
    #[cfg(feature = "hyper")]
    if let Some(err) = err.downcast_ref::<hyper::Error>() {
        return crate::transport::classify_hyper(err);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::time::Duration;

    fn response(status: u16, headers: &[(&'static str, &str)]) -> http::Response<()> {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn statuses_map_to_the_design_kinds() {
        let cases: &[(u16, Option<ErrorKind>)] = &[
            (200, None),
            (201, None),
            (204, None),
            (301, None),
            (400, Some(ErrorKind::InvalidRequest)),
            (401, Some(ErrorKind::Unauthorized)),
            (402, Some(ErrorKind::QuotaExceeded)),
            (403, Some(ErrorKind::Unauthorized)),
            (404, Some(ErrorKind::ModelNotFound)),
            (408, Some(ErrorKind::Timeout)),
            (409, Some(ErrorKind::InvalidRequest)),
            (413, Some(ErrorKind::InvalidRequest)),
            (422, Some(ErrorKind::InvalidRequest)),
            (429, Some(ErrorKind::RateLimited)),
            (499, Some(ErrorKind::InvalidRequest)),
            (500, Some(ErrorKind::ServerError)),
            (502, Some(ErrorKind::ServerError)),
            (503, Some(ErrorKind::ServerError)),
            (504, Some(ErrorKind::ServerError)),
            (529, Some(ErrorKind::Overloaded)),
            (599, Some(ErrorKind::ServerError)),
        ];
        for &(status, want) in cases {
            let outcome = response(status, &[]).response_outcome();
            assert_eq!(outcome.kind(), want, "status {status}");
        }
    }

    #[test]
    fn transient_statuses_are_retryable_and_others_not() {
        for status in [408, 429, 500, 502, 503, 504, 529] {
            assert!(
                response(status, &[]).response_outcome().is_retryable(),
                "{status}"
            );
        }
        for status in [200, 400, 401, 402, 403, 404, 413, 422] {
            assert!(
                !response(status, &[]).response_outcome().is_retryable(),
                "{status}"
            );
        }
    }

    #[test]
    fn bare_429_is_rate_limited_without_delay() {
        let outcome = response(429, &[]).response_outcome();
        assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
        assert_eq!(outcome.retry_after(), None);
    }

    #[test]
    fn failures_carry_the_server_delay() {
        let outcome = response(503, &[("retry-after", "2")]).response_outcome();
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(2)));
        let outcome =
            response(429, &[("retry-after-ms", "644"), ("retry-after", "1")]).response_outcome();
        assert_eq!(outcome.retry_after(), Some(Duration::from_millis(644)));
        let outcome = response(429, &[("x-ms-retry-after-ms", "250")]).response_outcome();
        assert_eq!(outcome.retry_after(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn a_429_without_retry_after_waits_for_the_exhausted_bucket() {
        let outcome = response(
            429,
            &[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-remaining-tokens", "5000"),
                ("x-ratelimit-reset-tokens", "6m0s"),
            ],
        )
        .response_outcome();
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(1)));
        assert_eq!(outcome.rate_limit().remaining_tokens, Some(5000));
    }

    #[test]
    fn successes_carry_rate_limit_observations() {
        let outcome = response(200, &[("x-ratelimit-remaining-requests", "59")]).response_outcome();
        assert!(outcome.is_success());
        assert_eq!(outcome.rate_limit().remaining_requests, Some(59));
        assert!(
            response(200, &[("content-type", "application/json")])
                .response_outcome()
                .rate_limit()
                .is_empty()
        );
    }

    #[derive(Debug)]
    struct Wrapper(Box<dyn StdError + Send + Sync>);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn io_errors_map_to_network_and_timeout() {
        use io::ErrorKind as Io;
        let cases = [
            (Io::TimedOut, ErrorKind::Timeout),
            (Io::ConnectionRefused, ErrorKind::Network),
            (Io::ConnectionReset, ErrorKind::Network),
            (Io::ConnectionAborted, ErrorKind::Network),
            (Io::BrokenPipe, ErrorKind::Network),
            (Io::UnexpectedEof, ErrorKind::Network),
            (Io::NotConnected, ErrorKind::Network),
            (Io::PermissionDenied, ErrorKind::Other),
            (Io::InvalidData, ErrorKind::Other),
        ];
        for (io_kind, want) in cases {
            let err = io::Error::from(io_kind);
            assert_eq!(err.error_outcome().kind(), Some(want), "{io_kind:?}");
            let boxed: BoxError = Box::new(Wrapper(Box::new(io::Error::from(io_kind))));
            assert_eq!(
                boxed.error_outcome().kind(),
                Some(want),
                "wrapped {io_kind:?}"
            );
        }
    }

    #[test]
    fn io_errors_that_wrap_a_known_error_are_looked_into() {
        let inner = LlmError::new(ErrorKind::StreamInterrupted, "cut");
        let err = io::Error::other(inner);
        assert_eq!(
            err.error_outcome().kind(),
            Some(ErrorKind::StreamInterrupted)
        );
    }

    #[test]
    fn our_rejections_are_found_inside_box_errors() {
        let boxed: BoxError = Box::new(Wrapper(Box::new(CircuitOpen::new(Duration::from_secs(4)))));
        let outcome = boxed.error_outcome();
        assert_eq!(outcome.kind(), Some(ErrorKind::CircuitOpen));
        assert_eq!(outcome.retry_after(), Some(Duration::from_secs(4)));

        let boxed: BoxError = Box::new(LocalRateLimited::new(crate::LimitReason::Tokens, None));
        assert_eq!(
            boxed.error_outcome().kind(),
            Some(ErrorKind::LocalRateLimited)
        );

        let boxed: BoxError = Box::new(LlmError::new(ErrorKind::ContentFiltered, "filtered"));
        assert_eq!(
            boxed.error_outcome().kind(),
            Some(ErrorKind::ContentFiltered)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_timeouts_are_timeouts() {
        let elapsed = tokio::time::timeout(Duration::from_millis(1), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(elapsed.error_outcome().kind(), Some(ErrorKind::Timeout));
        let boxed: BoxError = Box::new(elapsed);
        assert_eq!(boxed.error_outcome().kind(), Some(ErrorKind::Timeout));
    }

    #[test]
    fn unknown_errors_are_other() {
        let boxed: BoxError = "weird".into();
        assert_eq!(boxed.error_outcome().kind(), Some(ErrorKind::Other));
    }

    #[test]
    fn error_classifier_treats_any_ok_as_success() {
        let err = LlmError::new(ErrorKind::Network, "reset");
        assert!(
            ErrorClassifier
                .classify(Ok::<&(), &LlmError>(&()))
                .is_success()
        );
        assert_eq!(
            ErrorClassifier.classify(Err::<&(), _>(&err)).kind(),
            Some(ErrorKind::Network)
        );
    }
}
