//! The shared vocabulary of [llm-tower](https://docs.rs/llm-tower): one classification of
//! what went wrong, read the same way by every layer.
//!
//! Every decision a resilience stack makes — retry this target? fall back to the next?
//! count it against the circuit breaker? pause the rate limiter? — starts from the same
//! question: *what kind of failure was that, and did the server say when to come back?*
//! This crate answers it once:
//!
//! - [`ErrorKind`] names the failure (rate limited, quota exceeded, overloaded, timeout, …)
//!   and carries the default decisions; [`ErrorKinds`] is a cheap set of them for
//!   configuration.
//! - [`Outcome`] is a classified result: success or failure, the server's delay, and the
//!   rate-limit state it reported. [`Classify`] produces it; [`DefaultClassifier`] reads
//!   `http::Response` statuses and headers, [`LlmError`] kinds, and transport errors inside a
//!   [`BoxError`].
//! - [`delay`] parses every dialect of "wait": `retry-after-ms`, `retry-after` (seconds or
//!   HTTP-date), OpenAI's `6m0s` resets, Anthropic's RFC 3339 resets — never panicking.
//! - [`Deadline`], [`AttemptBudget`] and [`RemainingTargets`] travel in a request's
//!   extensions so that layers agree on how much time and how many attempts are left;
//!   [`ResponseMeta`] travels back with what happened.
//! - [`CircuitOpen`], [`LocalRateLimited`] and [`FallbackExhausted`] are the errors layers
//!   create themselves; [`LlmError`] converts from each, so a whole stack returns one flat
//!   error type.
//! - [`TokenCost`], [`EstimateTokens`] and [`ReportsUsage`] let the rate limiter price a
//!   request before the call and reconcile with the real [`Usage`] afterwards.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use llm_core::{Classify, DefaultClassifier, ErrorKind, LlmError};
//!
//! // A plain HTTP response: a 429 with a Retry-After is a retryable failure with a delay.
//! let res = http::Response::builder()
//!     .status(429)
//!     .header("retry-after", "2")
//!     .body(())
//!     .unwrap();
//! let outcome = DefaultClassifier.classify(Ok::<_, &LlmError>(&res));
//! assert_eq!(outcome.kind(), Some(ErrorKind::RateLimited));
//! assert_eq!(outcome.retry_after(), Some(Duration::from_secs(2)));
//! assert!(outcome.is_retryable());
//!
//! // An LLM error: exhausted quota moves to another provider but is never retried.
//! let err = LlmError::new(ErrorKind::QuotaExceeded, "You exceeded your current quota");
//! let outcome = DefaultClassifier.classify(Err::<&http::Response<()>, _>(&err));
//! assert!(!outcome.is_retryable());
//! assert!(ErrorKind::QuotaExceeded.triggers_fallback());
//! ```
//!
//! # Features
//!
//! - `reqwest`: classify `reqwest::Error` and `reqwest::Response`.
//! - `hyper`: classify `hyper::Error` found in an error chain.
//! - `metrics`: [`metrics::CounterSeries`] and its kin, the fixed series the layers record
//!   through the `metrics` facade (the names of every metric are in [`metrics`] either way).
//! - `redis`: [`RedisConfig`], where the layers share their state (the connection itself is
//!   internal to the llm-tower crates).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
mod chain;
pub mod classify;
mod clone;
pub mod config;
mod cost;
pub mod delay;
mod env;
mod error;
mod keyed;
mod kind;
pub mod metrics;
mod outcome;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod redis_config;
mod request;
mod response;
mod trace_context;
mod transport;

pub use classify::{Classify, DefaultClassifier, ErrorClassifier};
pub use clone::{CloneHttpRequest, CloneRequest, NoClone, UseClone};
pub use config::ConfigError;
pub use cost::{
    ApproxTokenizer, EstimateTokens, EstimatedCost, ReportsUsage, TokenCost, Tokenizer, Usage,
};
pub use delay::RateLimitInfo;
pub use error::{
    AttemptRecord, BoxError, CircuitOpen, FallbackExhausted, LimitReason, LlmError,
    LocalRateLimited, NoMemberAvailable, notes,
};
pub use keyed::{KeyOf, NoKey};
pub use kind::{ErrorKind, ErrorKinds, UnknownErrorKind};
pub use outcome::{ErrorOutcome, Outcome, ResponseOutcome};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis_config::RedisConfig;
pub use request::{
    AttemptBudget, Deadline, EarlierFailures, ModelRequest, RemainingTargets, RequestExtensions,
};
pub use response::{EndObserver, ObserveEnd, ResponseMeta, ResponseMetadata, StreamEnd};
pub use trace_context::TraceContext;

/// Infrastructure the llm-tower crates share among themselves: the keyed registry, the Redis
/// link, environment helpers. Not part of the public API: no semver guarantees.
#[doc(hidden)]
pub mod __private {
    /// Writes a middleware service's `get_ref`, `get_mut` and `into_inner` for its inner
    /// service `$inner` (of type `$S`), as tower's middleware have them.
    #[macro_export]
    #[doc(hidden)]
    macro_rules! __inner_service_accessors {
        ($S:ident, $inner:ident) => {
            /// The inner service.
            pub fn get_ref(&self) -> &$S {
                &self.$inner
            }

            /// The inner service, mutably.
            pub fn get_mut(&mut self) -> &mut $S {
                &mut self.$inner
            }

            /// Unwraps the inner service.
            pub fn into_inner(self) -> $S {
                self.$inner
            }
        };
    }
    pub use crate::__inner_service_accessors as inner_service_accessors;

    pub use crate::env::{env_var, parse_duration, parse_env_value};
    pub use crate::keyed::KeyedRegistry;
    #[cfg(feature = "redis")]
    pub use crate::redis::{
        DEFAULT_TIMEOUT, PROBE_INTERVAL, RedisLink, RedisUnavailable, integers,
    };
}
