//! [`ErrorKind`], the one classification every layer reads, and [`ErrorKinds`], a set of them.

use http::StatusCode;
use std::fmt;
use std::str::FromStr;

/// What went wrong with a call, in the terms every llm-tower layer decides by.
///
/// Each kind carries the default decisions of the design table: whether the same target may
/// be tried again ([`is_retryable`](Self::is_retryable)), whether another target should be
/// tried ([`triggers_fallback`](Self::triggers_fallback)), and whether the failure says the
/// target is unhealthy ([`counts_against_breaker`](Self::counts_against_breaker)). Layers let
/// users override these per kind with [`ErrorKinds`] sets.
///
/// ```
/// use llm_core::ErrorKind;
///
/// // A 429 asking us to slow down is retried; an empty wallet is not.
/// assert!(ErrorKind::RateLimited.is_retryable());
/// assert!(!ErrorKind::QuotaExceeded.is_retryable());
/// // Both move on to the next provider, and neither means the provider is broken.
/// assert!(ErrorKind::QuotaExceeded.triggers_fallback());
/// assert!(!ErrorKind::RateLimited.counts_against_breaker());
/// assert_eq!("quota_exceeded".parse::<ErrorKind>(), Ok(ErrorKind::QuotaExceeded));
/// ```
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The provider asked us to slow down (429 `rate_limit_exceeded`, Gemini per-minute
    /// `RESOURCE_EXHAUSTED`). Retried after the server's delay.
    RateLimited,
    /// Quota or credit is exhausted (429 `insufficient_quota`, OpenRouter 402, a daily quota).
    /// Waiting does not help: never retried.
    QuotaExceeded,
    /// The provider is overloaded (Anthropic 529, Gemini 503 `UNAVAILABLE`).
    Overloaded,
    /// A server error: 500, 502, 503, 504.
    ServerError,
    /// Connect, first-token, idle or total timeout, or HTTP 408.
    Timeout,
    /// The connection failed: reset, refused, DNS, TLS, a truncated body.
    Network,
    /// A stream ended without its terminator or carried an error event after it began.
    StreamInterrupted,
    /// The key is missing, invalid or lacks permission (401, 403, Gemini `API_KEY_INVALID`).
    Unauthorized,
    /// The request itself is malformed (400). Sending it again cannot succeed.
    InvalidRequest,
    /// The prompt does not fit the model's context window. A larger model may take it.
    ContextLengthExceeded,
    /// A content policy refused the prompt or the answer.
    ContentFiltered,
    /// The model (or, for plain HTTP, the resource) does not exist here (404).
    ModelNotFound,
    /// Our own circuit breaker rejected the call without sending it.
    CircuitOpen,
    /// Our own rate limiter rejected the call, or would have had to wait too long.
    LocalRateLimited,
    /// The caller dropped the request. Never recorded as a failure of the target.
    Cancelled,
    /// The target cannot honour a feature the request needs (tools, a JSON schema, an image
    /// by URL, a reasoning budget, …), found before the call: it was never sent. Not
    /// retried; a fallback chain moves on to a target that can; not counted by the breaker.
    Unsupported,
    /// An error nothing else describes. Falls back rather than failing the request.
    Other,
}

impl ErrorKind {
    /// Every kind, in declaration order.
    ///
    /// ```
    /// assert_eq!(llm_core::ErrorKind::ALL.len(), 17);
    /// ```
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::RateLimited,
        ErrorKind::QuotaExceeded,
        ErrorKind::Overloaded,
        ErrorKind::ServerError,
        ErrorKind::Timeout,
        ErrorKind::Network,
        ErrorKind::StreamInterrupted,
        ErrorKind::Unauthorized,
        ErrorKind::InvalidRequest,
        ErrorKind::ContextLengthExceeded,
        ErrorKind::ContentFiltered,
        ErrorKind::ModelNotFound,
        ErrorKind::CircuitOpen,
        ErrorKind::LocalRateLimited,
        ErrorKind::Cancelled,
        ErrorKind::Unsupported,
        ErrorKind::Other,
    ];

    /// Whether sending the same request to the same target again may succeed.
    ///
    /// True for the transient kinds: rate limited, overloaded, server error, timeout, network.
    /// A stream interrupted after output reached the caller is never retried silently.
    ///
    /// ```
    /// use llm_core::ErrorKind;
    /// assert!(ErrorKind::Overloaded.is_retryable());
    /// assert!(!ErrorKind::StreamInterrupted.is_retryable());
    /// ```
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Network
        )
    }

    /// Whether another target (provider, model, base URL) should be tried.
    ///
    /// False only where another target cannot help or must not be asked: a malformed request,
    /// a content-policy refusal (opt-in per chain), and a caller that went away.
    ///
    /// ```
    /// use llm_core::ErrorKind;
    /// assert!(ErrorKind::ContextLengthExceeded.triggers_fallback());
    /// assert!(!ErrorKind::InvalidRequest.triggers_fallback());
    /// ```
    pub const fn triggers_fallback(self) -> bool {
        !matches!(
            self,
            ErrorKind::InvalidRequest | ErrorKind::ContentFiltered | ErrorKind::Cancelled
        )
    }

    /// Whether the failure says the target is unhealthy, so a circuit breaker counts it.
    ///
    /// Rate limits, quota, auth and request errors describe the caller, not the target's health.
    ///
    /// ```
    /// use llm_core::ErrorKind;
    /// assert!(ErrorKind::Timeout.counts_against_breaker());
    /// assert!(!ErrorKind::Unauthorized.counts_against_breaker());
    /// ```
    pub const fn counts_against_breaker(self) -> bool {
        matches!(
            self,
            ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout
                | ErrorKind::Network
                | ErrorKind::StreamInterrupted
        )
    }

    /// Whether this is a rejection of our own (an open circuit, a local rate limit, a
    /// feature the target lacks): the call never reached an upstream.
    ///
    /// ```
    /// use llm_core::ErrorKind;
    /// assert!(ErrorKind::CircuitOpen.is_local_rejection());
    /// assert!(!ErrorKind::ServerError.is_local_rejection());
    /// ```
    pub const fn is_local_rejection(self) -> bool {
        matches!(
            self,
            ErrorKind::CircuitOpen | ErrorKind::LocalRateLimited | ErrorKind::Unsupported
        )
    }

    /// The stable `snake_case` name, as used in configuration, logs and metrics labels.
    ///
    /// ```
    /// assert_eq!(llm_core::ErrorKind::ContextLengthExceeded.as_str(), "context_length_exceeded");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::QuotaExceeded => "quota_exceeded",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::ServerError => "server_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Network => "network",
            ErrorKind::StreamInterrupted => "stream_interrupted",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::ContextLengthExceeded => "context_length_exceeded",
            ErrorKind::ContentFiltered => "content_filtered",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::LocalRateLimited => "local_rate_limited",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Other => "other",
        }
    }

    const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error returned when a string names no [`ErrorKind`].
///
/// ```
/// let err = "teapot".parse::<llm_core::ErrorKind>().unwrap_err();
/// assert!(err.to_string().contains("teapot"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown error kind `{0}` (expected one of: rate_limited, quota_exceeded, overloaded, server_error, timeout, network, stream_interrupted, unauthorized, invalid_request, context_length_exceeded, content_filtered, model_not_found, circuit_open, local_rate_limited, cancelled, unsupported, other)"
)]
pub struct UnknownErrorKind(pub String);

impl FromStr for ErrorKind {
    type Err = UnknownErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownErrorKind(s.to_owned()))
    }
}

#[derive(Clone, Copy)]
enum Decision {
    Retry,
    Fallback,
    Breaker,
}

/// A set of [`ErrorKind`]s, stored as a bit set: copying and testing it costs nothing.
///
/// Layers take these for `retry_on`, `stop_on`, fallback triggers and breaker-counted kinds.
/// The constants hold the defaults of the design table.
///
/// ```
/// use llm_core::{ErrorKind, ErrorKinds};
///
/// let kinds = ErrorKinds::RETRYABLE.without(ErrorKind::RateLimited);
/// assert!(kinds.contains(ErrorKind::Timeout));
/// assert!(!kinds.contains(ErrorKind::RateLimited));
/// assert_eq!(ErrorKinds::of(&[ErrorKind::Timeout, ErrorKind::Network]).len(), 2);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorKinds(u32);

impl ErrorKinds {
    /// No kind at all.
    pub const NONE: ErrorKinds = ErrorKinds(0);
    /// Every kind.
    pub const ALL: ErrorKinds = ErrorKinds::of(&ErrorKind::ALL);
    /// The kinds for which [`ErrorKind::is_retryable`] holds.
    pub const RETRYABLE: ErrorKinds = ErrorKinds::matching(Decision::Retry);
    /// The kinds for which [`ErrorKind::triggers_fallback`] holds.
    pub const FALLBACK: ErrorKinds = ErrorKinds::matching(Decision::Fallback);
    /// The kinds for which [`ErrorKind::counts_against_breaker`] holds.
    pub const BREAKER_FAILURES: ErrorKinds = ErrorKinds::matching(Decision::Breaker);

    /// The set holding exactly `kinds`.
    pub const fn of(kinds: &[ErrorKind]) -> ErrorKinds {
        let mut bits = 0;
        let mut i = 0;
        while i < kinds.len() {
            bits |= kinds[i].bit();
            i += 1;
        }
        ErrorKinds(bits)
    }

    // NOTE: derived from the decision methods so the sets can never disagree with them;
    // const fns cannot call through a fn pointer, hence the enum.
    const fn matching(decision: Decision) -> ErrorKinds {
        let mut bits = 0;
        let mut i = 0;
        while i < ErrorKind::ALL.len() {
            let kind = ErrorKind::ALL[i];
            let holds = match decision {
                Decision::Retry => kind.is_retryable(),
                Decision::Fallback => kind.triggers_fallback(),
                Decision::Breaker => kind.counts_against_breaker(),
            };
            if holds {
                bits |= ErrorKind::ALL[i].bit();
            }
            i += 1;
        }
        ErrorKinds(bits)
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: ErrorKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The set with `kind` added.
    #[must_use]
    pub const fn with(self, kind: ErrorKind) -> ErrorKinds {
        ErrorKinds(self.0 | kind.bit())
    }

    /// The set with `kind` removed.
    #[must_use]
    pub const fn without(self, kind: ErrorKind) -> ErrorKinds {
        ErrorKinds(self.0 & !kind.bit())
    }

    /// Every kind in either set.
    #[must_use]
    pub const fn union(self, other: ErrorKinds) -> ErrorKinds {
        ErrorKinds(self.0 | other.0)
    }

    /// The kinds of `self` that are not in `other`.
    #[must_use]
    pub const fn difference(self, other: ErrorKinds) -> ErrorKinds {
        ErrorKinds(self.0 & !other.0)
    }

    /// Whether the two sets share a kind.
    ///
    /// ```
    /// use llm_core::{ErrorKind, ErrorKinds};
    /// let a = ErrorKinds::of(&[ErrorKind::Timeout]);
    /// assert!(a.intersects(ErrorKinds::RETRYABLE));
    /// assert!(!a.intersects(ErrorKinds::NONE));
    /// ```
    pub const fn intersects(self, other: ErrorKinds) -> bool {
        self.0 & other.0 != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many kinds the set holds.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The kinds in the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = ErrorKind> {
        ErrorKind::ALL
            .into_iter()
            .filter(move |kind| self.contains(*kind))
    }
}

impl fmt::Debug for ErrorKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl From<ErrorKind> for ErrorKinds {
    fn from(kind: ErrorKind) -> Self {
        ErrorKinds(kind.bit())
    }
}

impl<const N: usize> From<[ErrorKind; N]> for ErrorKinds {
    fn from(kinds: [ErrorKind; N]) -> Self {
        ErrorKinds::of(&kinds)
    }
}

impl FromIterator<ErrorKind> for ErrorKinds {
    fn from_iter<I: IntoIterator<Item = ErrorKind>>(iter: I) -> Self {
        iter.into_iter().fold(ErrorKinds::NONE, ErrorKinds::with)
    }
}

impl serde::Serialize for ErrorKinds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorKinds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = Vec::<ErrorKind>::deserialize(deserializer)?;
        Ok(kinds.into_iter().collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The design table of error kinds, row by row: (kind, retry, fall back, breaker counts).
    const TABLE: [(ErrorKind, bool, bool, bool); 16] = [
        (ErrorKind::RateLimited, true, true, false),
        (ErrorKind::QuotaExceeded, false, true, false),
        (ErrorKind::Overloaded, true, true, true),
        (ErrorKind::ServerError, true, true, true),
        (ErrorKind::Timeout, true, true, true),
        (ErrorKind::Network, true, true, true),
        (ErrorKind::StreamInterrupted, false, true, true),
        (ErrorKind::Unauthorized, false, true, false),
        (ErrorKind::InvalidRequest, false, false, false),
        (ErrorKind::ContextLengthExceeded, false, true, false),
        (ErrorKind::ContentFiltered, false, false, false),
        (ErrorKind::ModelNotFound, false, true, false),
        (ErrorKind::CircuitOpen, false, true, false),
        (ErrorKind::LocalRateLimited, false, true, false),
        (ErrorKind::Cancelled, false, false, false),
        (ErrorKind::Other, false, true, false),
    ];

    #[test]
    fn default_decisions_follow_the_design_table() {
        for (kind, retry, fallback, breaker) in TABLE {
            assert_eq!(kind.is_retryable(), retry, "{kind} retry");
            assert_eq!(kind.triggers_fallback(), fallback, "{kind} fallback");
            assert_eq!(kind.counts_against_breaker(), breaker, "{kind} breaker");
            assert_eq!(ErrorKinds::RETRYABLE.contains(kind), retry);
            assert_eq!(ErrorKinds::FALLBACK.contains(kind), fallback);
            assert_eq!(ErrorKinds::BREAKER_FAILURES.contains(kind), breaker);
        }
    }

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert_eq!(" Timeout ".parse::<ErrorKind>(), Ok(ErrorKind::Timeout));
        assert!("time_out".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn kind_sets_hold_what_was_put_in() {
        let set = ErrorKinds::of(&[ErrorKind::Timeout, ErrorKind::Network]);
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [ErrorKind::Timeout, ErrorKind::Network]
        );
        assert_eq!(ErrorKinds::ALL.len(), 17);
        assert!(ErrorKinds::NONE.is_empty());
        assert_eq!(set.union(ErrorKind::Other.into()).len(), 3);
        assert_eq!(
            ErrorKinds::ALL.difference(ErrorKinds::ALL),
            ErrorKinds::NONE
        );
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["timeout","network"]"#);
        let back: ErrorKinds = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        assert!(serde_json::from_str::<ErrorKinds>(r#"["nope"]"#).is_err());
    }
}
