//! [`LlmError`], the one error an LLM stack returns, and the small errors layers create
//! when they reject a call on their own: [`CircuitOpen`], [`LocalRateLimited`],
//! [`FallbackExhausted`].
//!
//! Layers keep their inner service's error type and require `E: From<TheirError>`, so a stack
//! of layers returns one flat error rather than `RetryError<BreakerError<…>>`. [`LlmError`]
//! implements every such `From`; so does `BoxError`, from which the stock classifier finds
//! these types again by downcasting.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::delay::RateLimitInfo;
use crate::kind::ErrorKind;
use crate::outcome::ErrorOutcome;
use crate::outcome::Outcome;

/// A type-erased error, as tower uses it. The stock classifier finds our errors, I/O errors
/// and timeouts inside one.
///
/// ```
/// use llm_core::{BoxError, ErrorKind, ErrorOutcome};
///
/// let err: BoxError = Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut));
/// assert_eq!(err.error_outcome().kind(), Some(ErrorKind::Timeout));
/// ```
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of an LLM call: what kind of failure it was, who said so, and what they said.
///
/// Providers build it from status codes and bodies; layers convert their own rejections into
/// it. It never carries a secret: providers put only the provider's message, status and code
/// into it, never request headers.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use llm_core::{ErrorKind, LlmError};
///
/// let err = LlmError::new(ErrorKind::RateLimited, "Rate limit reached for gpt-4o")
///     .with_provider("openai")
///     .with_status(StatusCode::TOO_MANY_REQUESTS)
///     .with_code("rate_limit_exceeded")
///     .with_retry_after(Duration::from_millis(644));
/// assert_eq!(err.kind(), ErrorKind::RateLimited);
/// assert_eq!(err.retry_after(), Some(Duration::from_millis(644)));
/// assert_eq!(
///     err.to_string(),
///     "openai: rate_limited (HTTP 429, rate_limit_exceeded): Rate limit reached for gpt-4o"
/// );
/// ```
#[derive(Clone)]
pub struct LlmError {
    // NOTE: boxed so that `Result<Response, LlmError>` stays small on the success path;
    // errors may allocate, successes must not pay for their size.
    inner: Box<Inner>,
}

#[derive(Clone)]
struct Inner {
    kind: ErrorKind,
    message: Cow<'static, str>,
    provider: Option<Cow<'static, str>>,
    status: Option<StatusCode>,
    code: Option<String>,
    retry_after: Option<Duration>,
    rate_limit: RateLimitInfo,
    exhausted: Option<Arc<FallbackExhausted>>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
    // Upstream calls this error stands for, noted by a retry layer (0: not noted).
    attempts: u32,
    // The target that failed is closed (its breaker open) for this long after the failure.
    closed_for: Option<Duration>,
}

impl LlmError {
    /// An error of `kind` with a human-readable `message`.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        LlmError {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                provider: None,
                status: None,
                code: None,
                retry_after: None,
                rate_limit: RateLimitInfo::new(),
                exhausted: None,
                source: None,
                attempts: 0,
                closed_for: None,
            }),
        }
    }

    /// The caller went away before the call finished.
    ///
    /// ```
    /// assert_eq!(llm_core::LlmError::cancelled().kind(), llm_core::ErrorKind::Cancelled);
    /// ```
    pub fn cancelled() -> Self {
        LlmError::new(ErrorKind::Cancelled, "the request was cancelled")
    }

    /// Names the provider that failed (`"openai"`, `"anthropic"`, a fallback target's name).
    #[must_use]
    pub fn with_provider(mut self, provider: impl Into<Cow<'static, str>>) -> Self {
        self.inner.provider = Some(provider.into());
        self
    }

    /// Records the HTTP status the provider answered with.
    #[must_use]
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// Records the provider's own error code (`insufficient_quota`, `overloaded_error`, …).
    #[must_use]
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.inner.code = Some(code.into());
        self
    }

    /// Records how long the provider asked us to wait.
    #[must_use]
    pub fn with_retry_after(mut self, delay: impl Into<Option<Duration>>) -> Self {
        self.inner.retry_after = delay.into();
        self
    }

    /// Records the rate-limit headers that came with the failure.
    #[must_use]
    pub fn with_rate_limit(mut self, info: RateLimitInfo) -> Self {
        self.inner.rate_limit = info;
        self
    }

    /// Attaches the underlying error (a transport error, a parse error).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(Arc::from(source.into()));
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The message, as the provider or layer wrote it.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The provider or target that failed, when known.
    pub fn provider(&self) -> Option<&str> {
        self.inner.provider.as_deref()
    }

    /// The HTTP status, when the failure came with one.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The provider's own error code, when it sent one.
    pub fn code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// How long the provider (or our own breaker or limiter) asked the caller to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// The rate-limit observations that came with the failure (empty when none did).
    pub fn rate_limit(&self) -> &RateLimitInfo {
        &self.inner.rate_limit
    }

    /// Every attempt, when this error ends a fallback chain.
    pub fn fallback_attempts(&self) -> Option<&FallbackExhausted> {
        self.inner.exhausted.as_deref()
    }

    /// How many calls reached an upstream for this error: what a retry layer noted (every
    /// attempt it made), else 1 for a failure the upstream produced and 0 for a rejection of
    /// our own (open circuit, local rate limit), which never left the process.
    ///
    /// ```
    /// use llm_core::{ErrorKind, LlmError};
    ///
    /// assert_eq!(LlmError::new(ErrorKind::ServerError, "boom").upstream_attempts(), 1);
    /// assert_eq!(LlmError::new(ErrorKind::CircuitOpen, "open").upstream_attempts(), 0);
    /// assert_eq!(LlmError::new(ErrorKind::ServerError, "boom").with_upstream_attempts(4).upstream_attempts(), 4);
    /// ```
    pub fn upstream_attempts(&self) -> u32 {
        match self.inner.attempts {
            0 if self.inner.kind.is_local_rejection() => 0,
            0 => 1,
            noted => noted,
        }
    }

    /// Notes how many upstream calls this error stands for.
    #[must_use]
    pub fn with_upstream_attempts(mut self, attempts: u32) -> Self {
        self.inner.attempts = attempts;
        self
    }

    /// How long the target that produced this error stays closed to further calls (its
    /// circuit breaker opened), when a breaker said so: a retry would be rejected until then.
    pub fn target_closed_for(&self) -> Option<Duration> {
        self.inner.closed_for
    }

    /// Notes that the target stays closed for `delay`.
    #[must_use]
    pub fn with_target_closed_for(mut self, delay: Duration) -> Self {
        self.inner.closed_for = Some(delay);
        self
    }
}

/// Notes layers leave on an error on its way out, read by the layers further out: how many
/// upstream calls it stands for (the retry layer), and that its target is now closed (the
/// breaker). They are kept on an [`LlmError`], or one inside a [`BoxError`]; other error
/// types pass unchanged (the layers then decide as they would without the note).
///
/// ```
/// use std::time::Duration;
/// use llm_core::{ErrorKind, LlmError, notes};
///
/// let mut err = LlmError::new(ErrorKind::ServerError, "boom");
/// notes::set_target_closed_for(&mut err, Duration::from_secs(5));
/// notes::set_upstream_attempts(&mut err, 3);
/// assert_eq!(notes::target_closed_for(&err), Some(Duration::from_secs(5)));
/// assert_eq!(notes::upstream_attempts(&err), Some(3));
///
/// let mut other = std::io::Error::other("boom");
/// notes::set_upstream_attempts(&mut other, 3); // not an LlmError: nothing is kept
/// assert_eq!(notes::upstream_attempts(&other), None);
/// ```
pub mod notes {
    use std::any::Any;
    use std::time::Duration;

    use super::{BoxError, LlmError};

    // NOTE: a type test (two `TypeId` comparisons) rather than a trait bound: the layers stay
    // generic over any error type, and only the failure path pays for it.
    fn llm<E: 'static>(err: &E) -> Option<&LlmError> {
        let any = err as &dyn Any;
        any.downcast_ref::<LlmError>().or_else(|| {
            any.downcast_ref::<BoxError>()
                .and_then(|boxed| boxed.downcast_ref::<LlmError>())
        })
    }

    fn llm_mut<E: 'static>(err: &mut E) -> Option<&mut LlmError> {
        let any = err as &mut dyn Any;
        if any.is::<LlmError>() {
            return any.downcast_mut::<LlmError>();
        }
        any.downcast_mut::<BoxError>()
            .and_then(|boxed| boxed.downcast_mut::<LlmError>())
    }

    /// The upstream calls `err` stands for, when it is an [`LlmError`].
    pub fn upstream_attempts<E: 'static>(err: &E) -> Option<u32> {
        llm(err).map(LlmError::upstream_attempts)
    }

    /// Notes on `err` that it stands for `attempts` upstream calls.
    pub fn set_upstream_attempts<E: 'static>(err: &mut E, attempts: u32) {
        if let Some(err) = llm_mut(err) {
            err.inner.attempts = attempts;
        }
    }

    /// How long the target that produced `err` stays closed, when a breaker noted it.
    pub fn target_closed_for<E: 'static>(err: &E) -> Option<Duration> {
        llm(err).and_then(LlmError::target_closed_for)
    }

    /// Notes on `err` that its target stays closed for `delay`.
    pub fn set_target_closed_for<E: 'static>(err: &mut E, delay: Duration) {
        if let Some(err) = llm_mut(err) {
            err.inner.closed_for = Some(delay);
        }
    }

    /// The HTTP status of `err`, when it is an [`LlmError`] that has one.
    pub fn status<E: 'static>(err: &E) -> Option<u16> {
        llm(err).and_then(LlmError::status).map(|s| s.as_u16())
    }
}

impl fmt::Debug for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("LlmError");
        s.field("kind", &self.inner.kind)
            .field("message", &self.inner.message);
        if let Some(provider) = &self.inner.provider {
            s.field("provider", provider);
        }
        if let Some(status) = &self.inner.status {
            s.field("status", status);
        }
        if let Some(code) = &self.inner.code {
            s.field("code", code);
        }
        if let Some(delay) = &self.inner.retry_after {
            s.field("retry_after", delay);
        }
        if !self.inner.rate_limit.is_empty() {
            s.field("rate_limit", &self.inner.rate_limit);
        }
        if let Some(exhausted) = &self.inner.exhausted {
            s.field("attempts", &exhausted.attempts);
        }
        if let Some(source) = &self.inner.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl fmt::Display for LlmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(provider) = &self.inner.provider {
            write!(f, "{provider}: ")?;
        }
        write!(f, "{}", self.inner.kind)?;
        match (&self.inner.status, &self.inner.code) {
            (Some(status), Some(code)) => write!(f, " (HTTP {}, {code})", status.as_u16())?,
            (Some(status), None) => write!(f, " (HTTP {})", status.as_u16())?,
            (None, Some(code)) => write!(f, " ({code})")?,
            (None, None) => {}
        }
        write!(f, ": {}", self.inner.message)
    }
}

impl StdError for LlmError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

impl ErrorOutcome for LlmError {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(self.inner.kind)
            .with_retry_after(self.inner.retry_after)
            .with_rate_limit(self.inner.rate_limit)
    }
}

impl From<CircuitOpen> for LlmError {
    fn from(err: CircuitOpen) -> Self {
        let mut out =
            LlmError::new(ErrorKind::CircuitOpen, err.to_string()).with_retry_after(err.retry_in);
        out.inner.provider = err.name.map(|name| Cow::Owned(name.to_string()));
        out
    }
}

impl From<LocalRateLimited> for LlmError {
    fn from(err: LocalRateLimited) -> Self {
        LlmError::new(ErrorKind::LocalRateLimited, err.to_string())
            .with_retry_after(err.retry_after)
    }
}

impl From<FallbackExhausted> for LlmError {
    fn from(err: FallbackExhausted) -> Self {
        // The chain failed as its last real upstream failure failed: that kind (not a later
        // target skipped by our own breaker) decides what a caller further out (another
        // fallback, a gateway's status code) does next.
        let (kind, retry_after, status) = err
            .last_upstream_failure()
            .map_or((ErrorKind::Other, None, None), |a| {
                (a.kind, a.retry_after, a.status)
            });
        let mut out = LlmError::new(kind, err.to_string()).with_retry_after(retry_after);
        out.inner.status = status.and_then(|s| StatusCode::from_u16(s).ok());
        out.inner.attempts = err.upstream_attempts();
        out.inner.exhausted = Some(Arc::new(err));
        out
    }
}

impl From<std::io::Error> for LlmError {
    fn from(err: std::io::Error) -> Self {
        LlmError::from(BoxError::from(err))
    }
}

impl From<tokio::time::error::Elapsed> for LlmError {
    fn from(err: tokio::time::error::Elapsed) -> Self {
        LlmError::new(ErrorKind::Timeout, "the call timed out").with_source(err)
    }
}

/// Our circuit breaker rejected the call without sending it.
///
/// ```
/// use std::time::Duration;
/// use llm_core::{CircuitOpen, ErrorKind, LlmError};
///
/// let err = CircuitOpen::new(Duration::from_secs(5)).with_name("openai/gpt-4o");
/// assert_eq!(err.to_string(), "circuit open for openai/gpt-4o: next probe in 5s");
/// let err = LlmError::from(err);
/// assert_eq!(err.kind(), ErrorKind::CircuitOpen);
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_in: Duration,
    name: Option<Arc<str>>,
}

impl CircuitOpen {
    /// The breaker will let a probe through in `retry_in`.
    pub const fn new(retry_in: Duration) -> Self {
        CircuitOpen {
            retry_in,
            name: None,
        }
    }

    /// Names the breaker (its key: a provider and model, or a host).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Time until the breaker lets a probe through.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }

    /// The breaker's name, when it has one.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(
                f,
                "circuit open for {name}: next probe in {:?}",
                self.retry_in
            ),
            None => write!(f, "circuit open: next probe in {:?}", self.retry_in),
        }
    }
}

impl StdError for CircuitOpen {}

impl ErrorOutcome for CircuitOpen {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(ErrorKind::CircuitOpen).with_retry_after(self.retry_in)
    }
}

/// No member of a balanced pool could take the call: each was retired, cooling down, or
/// behind its open breaker (or already failed this request).
///
/// Its kind is the reason of the member back soonest — a caller further out (a fallback
/// chain, a retry layer, a gateway's status code) acts on that — and `retry_in` says when.
///
/// ```
/// use std::time::Duration;
/// use llm_core::{ErrorKind, LlmError, NoMemberAvailable};
///
/// let err = NoMemberAvailable::new("openai", ErrorKind::RateLimited, Some(Duration::from_secs(3)));
/// assert_eq!(err.to_string(), "no member of pool openai is available (rate_limited): the first is back in 3s");
/// let err = LlmError::from(err);
/// assert_eq!(err.kind(), ErrorKind::RateLimited);
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoMemberAvailable {
    pool: Arc<str>,
    kind: ErrorKind,
    retry_in: Option<Duration>,
}

impl NoMemberAvailable {
    /// No member of `pool` is available, for `kind`, until `retry_in` (if known).
    pub fn new(pool: impl Into<Arc<str>>, kind: ErrorKind, retry_in: Option<Duration>) -> Self {
        NoMemberAvailable {
            pool: pool.into(),
            kind,
            retry_in,
        }
    }

    /// The pool's name.
    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// Why the member back soonest is out.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Time until a member is back, when known.
    pub fn retry_in(&self) -> Option<Duration> {
        self.retry_in
    }
}

impl fmt::Display for NoMemberAvailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no member of pool {} is available ({})",
            self.pool,
            self.kind.as_str()
        )?;
        match self.retry_in {
            Some(delay) => write!(f, ": the first is back in {delay:?}"),
            None => Ok(()),
        }
    }
}

impl StdError for NoMemberAvailable {}

impl ErrorOutcome for NoMemberAvailable {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(self.kind).with_retry_after(self.retry_in)
    }
}

impl From<NoMemberAvailable> for LlmError {
    fn from(err: NoMemberAvailable) -> Self {
        let mut out = LlmError::new(err.kind, err.to_string()).with_retry_after(err.retry_in);
        out.inner.provider = Some(Cow::Owned(err.pool.to_string()));
        out
    }
}

/// Why our rate limiter turned a call away.
///
/// ```
/// use llm_core::{LimitReason, LocalRateLimited};
///
/// let err = LocalRateLimited::new(LimitReason::ProviderPause, Some(std::time::Duration::from_secs(20)));
/// assert!(matches!(err.reason(), LimitReason::ProviderPause));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitReason {
    /// The requests-per-interval budget is spent.
    Requests,
    /// The tokens-per-interval budget is spent.
    Tokens,
    /// Too many calls are in flight.
    Concurrency,
    /// The provider told us to pause (a 429 with a reset time) and the pause has not ended.
    ProviderPause,
    /// The request costs more tokens than the bucket can ever hold: waiting cannot help.
    CostExceedsCapacity {
        /// The request's estimated cost in tokens.
        cost: u64,
        /// The most tokens the bucket holds.
        capacity: u64,
    },
}

/// Our rate limiter rejected the call, or it would have had to wait past its limit.
///
/// ```
/// use std::time::Duration;
/// use llm_core::{LimitReason, LocalRateLimited};
///
/// let err = LocalRateLimited::new(LimitReason::Tokens, Some(Duration::from_millis(1500)));
/// assert_eq!(err.to_string(), "local rate limit (tokens): capacity returns in 1.5s");
/// let never = LocalRateLimited::new(LimitReason::CostExceedsCapacity { cost: 50_000, capacity: 30_000 }, None);
/// assert!(never.never_fits());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRateLimited {
    reason: LimitReason,
    retry_after: Option<Duration>,
}

impl LocalRateLimited {
    /// A rejection for `reason`; `retry_after` says when capacity returns, if it will.
    pub const fn new(reason: LimitReason, retry_after: Option<Duration>) -> Self {
        LocalRateLimited {
            reason,
            retry_after,
        }
    }

    /// Why the call was turned away.
    pub fn reason(&self) -> LimitReason {
        self.reason
    }

    /// When capacity returns; `None` when it never will for this request.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Whether the request can never pass this limiter, however long it waits.
    pub fn never_fits(&self) -> bool {
        matches!(self.reason, LimitReason::CostExceedsCapacity { .. })
    }
}

impl fmt::Display for LocalRateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            LimitReason::Requests => "requests",
            LimitReason::Tokens => "tokens",
            LimitReason::Concurrency => "concurrency",
            LimitReason::ProviderPause => "provider pause",
            LimitReason::CostExceedsCapacity { cost, capacity } => {
                return write!(
                    f,
                    "local rate limit: request costs {cost} tokens but the bucket holds at most {capacity}"
                );
            }
        };
        match self.retry_after {
            Some(delay) => write!(
                f,
                "local rate limit ({what}): capacity returns in {delay:?}"
            ),
            None => write!(f, "local rate limit ({what})"),
        }
    }
}

impl StdError for LocalRateLimited {}

impl ErrorOutcome for LocalRateLimited {
    fn error_outcome(&self) -> Outcome {
        Outcome::failure(ErrorKind::LocalRateLimited).with_retry_after(self.retry_after)
    }
}

/// One failed attempt in a fallback chain.
///
/// ```
/// use llm_core::{AttemptRecord, ErrorKind};
///
/// let record = AttemptRecord {
///     target: "openai".into(),
///     kind: ErrorKind::RateLimited,
///     message: "slow down".into(),
///     retry_after: None,
///     status: Some(429),
///     upstream_attempts: 1,
/// };
/// assert_eq!(record.target.as_ref(), "openai");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The target's name.
    pub target: Arc<str>,
    /// How it failed.
    pub kind: ErrorKind,
    /// The error's message.
    pub message: String,
    /// The delay the target asked for, if any.
    pub retry_after: Option<Duration>,
    /// The upstream's HTTP status, when it answered with one.
    pub status: Option<u16>,
    /// Calls that reached the target's upstream (retries included); 0 when the target was
    /// skipped without a call (its circuit open, its local limit reached).
    pub upstream_attempts: u32,
}

impl AttemptRecord {
    /// Records that `target` failed with `error`.
    ///
    /// ```
    /// use llm_core::{AttemptRecord, ErrorKind, LlmError};
    ///
    /// let err = LlmError::new(ErrorKind::Overloaded, "Overloaded");
    /// let record = AttemptRecord::new("anthropic", &err);
    /// assert_eq!(record.kind, ErrorKind::Overloaded);
    /// ```
    pub fn new<E: ErrorOutcome + fmt::Display>(target: impl Into<Arc<str>>, error: &E) -> Self {
        let outcome = error.error_outcome();
        let kind = outcome.kind().unwrap_or(ErrorKind::Other);
        AttemptRecord {
            target: target.into(),
            kind,
            message: error.to_string(),
            retry_after: outcome.retry_after(),
            status: None,
            upstream_attempts: u32::from(!kind.is_local_rejection()),
        }
    }

    /// Whether a call reached the target's upstream (`false`: it was skipped by a rejection
    /// of our own).
    pub fn reached_upstream(&self) -> bool {
        self.upstream_attempts > 0
    }
}

/// Every target of a fallback chain failed. Lists each attempt in order.
///
/// ```
/// use llm_core::{AttemptRecord, ErrorKind, FallbackExhausted, LlmError};
///
/// let attempts = vec![
///     AttemptRecord::new("openai", &LlmError::new(ErrorKind::RateLimited, "slow down")),
///     AttemptRecord::new("anthropic", &LlmError::new(ErrorKind::Overloaded, "Overloaded")),
/// ];
/// let err = FallbackExhausted::new(attempts);
/// assert_eq!(err.last().unwrap().target.as_ref(), "anthropic");
/// let err = LlmError::from(err);
/// assert_eq!(err.kind(), ErrorKind::Overloaded);
/// assert_eq!(err.fallback_attempts().unwrap().attempts().len(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackExhausted {
    attempts: Vec<AttemptRecord>,
}

impl FallbackExhausted {
    /// The chain failed after `attempts`, in the order they were made.
    pub fn new(attempts: Vec<AttemptRecord>) -> Self {
        FallbackExhausted { attempts }
    }

    /// Every attempt, in order.
    pub fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    /// The last attempt, whose error ends the chain.
    pub fn last(&self) -> Option<&AttemptRecord> {
        self.attempts.last()
    }

    /// The last attempt that reached an upstream, else the last attempt: the real failure
    /// a caller should see, rather than a later target skipped by our own breaker or limiter.
    pub fn last_upstream_failure(&self) -> Option<&AttemptRecord> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.reached_upstream())
            .or_else(|| self.last())
    }

    /// Calls that reached an upstream, over every target.
    pub fn upstream_attempts(&self) -> u32 {
        self.attempts.iter().map(|a| a.upstream_attempts).sum()
    }
}

impl fmt::Display for FallbackExhausted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let skipped = self
            .attempts
            .iter()
            .filter(|a| !a.reached_upstream())
            .count();
        let tried = self.attempts.len() - skipped;
        if skipped == 0 {
            write!(f, "all {tried} fallback targets failed")?;
        } else {
            write!(
                f,
                "{tried} fallback target(s) failed and {skipped} were skipped"
            )?;
        }
        for (i, attempt) in self.attempts.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            let skipped = if attempt.reached_upstream() {
                ""
            } else {
                " skipped"
            };
            write!(
                f,
                "{sep}{}{skipped} ({}): {}",
                attempt.target, attempt.kind, attempt.message
            )?;
        }
        Ok(())
    }
}

impl StdError for FallbackExhausted {}

impl ErrorOutcome for FallbackExhausted {
    fn error_outcome(&self) -> Outcome {
        self.last_upstream_failure()
            .map_or(Outcome::failure(ErrorKind::Other), |a| {
                Outcome::failure(a.kind).with_retry_after(a.retry_after)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxed_llm_errors_come_back_unchanged() {
        let err = LlmError::new(ErrorKind::QuotaExceeded, "out of credit")
            .with_code("insufficient_quota");
        let boxed: BoxError = Box::new(err.clone());
        let back = LlmError::from(boxed);
        assert_eq!(back.kind(), ErrorKind::QuotaExceeded);
        assert_eq!(back.code(), Some("insufficient_quota"));
    }

    #[test]
    fn boxed_rejections_keep_their_kind_and_delay() {
        let boxed: BoxError = Box::new(CircuitOpen::new(Duration::from_secs(3)));
        let err = LlmError::from(boxed);
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));

        let boxed: BoxError = Box::new(LocalRateLimited::new(
            LimitReason::Requests,
            Some(Duration::from_secs(1)),
        ));
        assert_eq!(LlmError::from(boxed).kind(), ErrorKind::LocalRateLimited);
    }

    #[test]
    fn foreign_errors_are_classified_by_their_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = LlmError::from(io);
        assert_eq!(err.kind(), ErrorKind::Network);
        assert!(err.source().is_some());

        let boxed: BoxError = "something odd".into();
        assert_eq!(LlmError::from(boxed).kind(), ErrorKind::Other);
    }

    #[test]
    fn display_names_provider_status_and_code_when_present() {
        let bare = LlmError::new(ErrorKind::Timeout, "first token did not arrive in 30s");
        assert_eq!(
            bare.to_string(),
            "timeout: first token did not arrive in 30s"
        );
        let coded =
            LlmError::new(ErrorKind::Overloaded, "Overloaded").with_code("overloaded_error");
        assert_eq!(
            coded.to_string(),
            "overloaded (overloaded_error): Overloaded"
        );
        let status = bare.clone().with_status(StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            status.to_string(),
            "timeout (HTTP 408): first token did not arrive in 30s"
        );
    }

    #[test]
    fn exhausted_chain_lists_every_attempt_and_takes_the_last_kind() {
        let err = FallbackExhausted::new(vec![
            AttemptRecord::new(
                "a",
                &LlmError::new(ErrorKind::RateLimited, "slow")
                    .with_retry_after(Duration::from_secs(2)),
            ),
            AttemptRecord::new("b", &LlmError::new(ErrorKind::ServerError, "boom")),
        ]);
        assert_eq!(
            err.to_string(),
            "all 2 fallback targets failed: a (rate_limited): rate_limited: slow; b (server_error): server_error: boom"
        );
        assert_eq!(err.error_outcome().kind(), Some(ErrorKind::ServerError));
        assert_eq!(err.attempts()[0].retry_after, Some(Duration::from_secs(2)));
        let empty = LlmError::from(FallbackExhausted::new(Vec::new()));
        assert_eq!(empty.kind(), ErrorKind::Other);
    }

    #[test]
    fn never_fitting_cost_is_its_own_reason() {
        let err = LocalRateLimited::new(
            LimitReason::CostExceedsCapacity {
                cost: 10,
                capacity: 5,
            },
            None,
        );
        assert!(err.never_fits());
        assert_eq!(
            err.to_string(),
            "local rate limit: request costs 10 tokens but the bucket holds at most 5"
        );
        assert!(!LocalRateLimited::new(LimitReason::Requests, None).never_fits());
    }

    #[test]
    fn llm_error_is_one_pointer_wide() {
        // Results carry the error's size on the success path too.
        assert_eq!(size_of::<LlmError>(), size_of::<usize>());
    }

    #[test]
    fn errors_are_send_sync_and_static() {
        fn assert_bounds<T: Send + Sync + 'static + StdError>() {}
        assert_bounds::<LlmError>();
        assert_bounds::<CircuitOpen>();
        assert_bounds::<LocalRateLimited>();
        assert_bounds::<FallbackExhausted>();
    }
}
