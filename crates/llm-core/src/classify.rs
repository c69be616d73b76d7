//! Turning a call's result into an [`Outcome`].
//!
//! A classifier implements [`Classify<Res, Err>`]. The stock ones:
//!
//! - [`DefaultClassifier`] asks the response ([`ResponseOutcome`]) and the error
//!   ([`ErrorOutcome`]) to classify themselves. `http::Response` does so by status and headers,
//!   [`LlmError`](crate::LlmError) by its kind, `BoxError` by looking through its source chain
//!   for our own errors, `std::io::Error`, timeouts, and (behind features) `reqwest` and `hyper`
//!   errors.
//! - [`ErrorClassifier`] treats every `Ok` as a success and asks only the error.
//! - Any closure `Fn(Result<&Res, &Err>) -> Outcome` is a classifier.
//!
//! The shape follows tower-http's `classify` module; unlike it, a failure here carries a kind,
//! a server delay and rate-limit observations, which the retry, fallback, breaker and limiter
//! layers all read.

use std::time::SystemTime;

use http::StatusCode;

pub use crate::chain::classify_error_chain;
use crate::delay::{RateLimitInfo, server_delay};
use crate::kind::ErrorKind;
pub use crate::kind::status_kind;
use crate::outcome::Outcome;
pub use crate::outcome::{ErrorOutcome, ResponseOutcome};

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
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot classify a `Result<{Res}, {Err}>`",
    note = "`DefaultClassifier` needs `{Res}: ResponseOutcome` and `{Err}: ErrorOutcome`",
    note = "for `reqwest` and `hyper` types, enable the `reqwest` or `hyper` feature of llm-tower (or of llm-core)"
)]
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

#[cfg(feature = "reqwest")]
impl ResponseOutcome for reqwest::Response {
    fn response_outcome(&self) -> Outcome {
        classify_status(self.status(), self.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BoxError, CircuitOpen, LlmError, LocalRateLimited};
    use std::error::Error as StdError;
    use std::fmt;
    use std::io;
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
