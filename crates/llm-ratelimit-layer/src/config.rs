//! [`RateLimitConfig`]: requests and tokens per interval, waiting or rejecting.

use std::time::Duration;

use llm_core::ConfigError;
use serde::{Deserialize, Serialize};

use crate::store::Limits;

/// `limit` units per `per`, holding at most `burst` (default: `limit`) at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Units per interval.
    pub limit: u64,
    /// The interval.
    #[serde(with = "llm_core::config::duration")]
    pub per: Duration,
    /// Units that may go at once (default: `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl Rate {
    /// `limit` per minute.
    pub const fn per_minute(limit: u64) -> Self {
        Rate {
            limit,
            per: Duration::from_secs(60),
            burst: None,
        }
    }

    /// With a burst of `burst` units.
    #[must_use]
    pub const fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    fn check(&self, field: &'static str) -> Result<(u64, Duration, u64), ConfigError> {
        if self.limit == 0 {
            return Err(ConfigError::new(
                format!("{field}.limit"),
                "must be at least 1",
            ));
        }
        if self.per.is_zero() {
            return Err(ConfigError::new(
                format!("{field}.per"),
                "must be longer than zero",
            ));
        }
        if self.per.as_nanos() < u128::from(self.limit) {
            return Err(ConfigError::new(
                format!("{field}.limit"),
                "is more than one per nanosecond of `per`",
            ));
        }
        let burst = self.burst.unwrap_or(self.limit);
        if burst == 0 {
            return Err(ConfigError::new(
                format!("{field}.burst"),
                "must be at least 1",
            ));
        }
        Ok((self.limit, self.per, burst))
    }
}

/// What the limiter does when capacity is short.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Wait for capacity, up to `max_wait` and the request's deadline; each waiter keeps its
    /// place in arrival order.
    #[default]
    Wait,
    /// Reject at once with `LocalRateLimited`, saying when capacity returns.
    Reject,
}

/// What a limiter sharing its state through Redis does while Redis cannot be reached
/// ([`RateLimitConfig::on_redis_failure`]; feature `redis`).
///
/// ```
/// use llm_ratelimit_layer::FailurePolicy;
///
/// // Four instances: each keeps a quarter of the quota while they cannot coordinate.
/// let policy: FailurePolicy = serde_json::from_str(r#"{"policy": "open", "share": 0.25}"#).unwrap();
/// assert_eq!(policy, FailurePolicy::Open { share: 0.25 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "policy")]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Admit through a limiter in this process holding `share` (0 to 1) of the limits: the
    /// service keeps working, each instance taking its part of the quota.
    Open {
        /// The share of the configured limits this instance may use alone.
        share: f64,
    },
    /// Refuse with `LocalRateLimited`: never exceed the quota, at the price of availability.
    Closed,
}

impl Default for FailurePolicy {
    /// Open with half the quota: two instances that cannot coordinate together stay within
    /// it, and a lone instance keeps serving.
    fn default() -> Self {
        FailurePolicy::Open { share: 0.5 }
    }
}

/// The rate limiter's settings. Durations are written as `"60s"`, `"1m"`.
///
/// With no limit set (the default), the limiter only follows the provider: a 429 with a
/// delay, or a reported bucket that is empty, holds every request through it until the next
/// one fits, waiting (within `max_wait` and the request's deadline) or rejecting with
/// `LocalRateLimited`, which a fallback takes as a reason to move on.
///
/// ```
/// use llm_ratelimit_layer::{Mode, RateLimitConfig};
///
/// let config: RateLimitConfig = serde_json::from_str(r#"{
///     "requests": {"limit": 500, "per": "1m"},
///     "tokens": {"limit": 30000, "per": "1m"},
///     "mode": "reject"
/// }"#).unwrap();
/// assert_eq!(config.mode, Mode::Reject);
/// config.validate().unwrap();
///
/// let zero: RateLimitConfig = serde_json::from_str(r#"{"requests": {"limit": 0, "per": "1m"}}"#).unwrap();
/// assert_eq!(zero.validate().unwrap_err().field(), "requests.limit");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Rate>,
    /// Tokens per interval (each request priced by the layer's token cost before the call,
    /// corrected by the usage its response reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Rate>,
    /// Calls in flight at once, at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Wait for capacity, or reject.
    pub mode: Mode,
    /// The longest wait (in wait mode).
    #[serde(with = "llm_core::config::duration")]
    pub max_wait: Duration,
    /// For keyed limits: the most keys kept at once.
    pub max_keys: usize,
    /// For keyed limits: a key unused this long may be evicted.
    #[serde(with = "llm_core::config::duration")]
    pub idle_after: Duration,
    /// With the state in Redis: what happens while Redis cannot be reached.
    pub on_redis_failure: FailurePolicy,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            requests: None,
            tokens: None,
            max_concurrency: None,
            mode: Mode::Wait,
            max_wait: Duration::from_secs(30),
            max_keys: 10_000,
            idle_after: Duration::from_secs(600),
            on_redis_failure: FailurePolicy::default(),
        }
    }
}

impl RateLimitConfig {
    /// `rpm` requests and `tpm` tokens per minute, waiting up to 30 s: the shape of an
    /// OpenAI or Anthropic tier.
    pub fn per_minute(rpm: u64, tpm: u64) -> Self {
        RateLimitConfig {
            requests: Some(Rate::per_minute(rpm)),
            tokens: Some(Rate::per_minute(tpm)),
            ..RateLimitConfig::default()
        }
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits().map(|_| ())
    }

    pub(crate) fn limits(&self) -> Result<Limits, ConfigError> {
        let requests = self.requests.map(|r| r.check("requests")).transpose()?;
        let tokens = self.tokens.map(|r| r.check("tokens")).transpose()?;
        if self.max_concurrency == Some(0) {
            return Err(ConfigError::new("max_concurrency", "must be at least 1"));
        }
        if self.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if let FailurePolicy::Open { share } = self.on_redis_failure {
            if !(share > 0.0 && share <= 1.0) {
                return Err(ConfigError::new(
                    "on_redis_failure.share",
                    format!("must be in (0, 1] (got {share})"),
                ));
            }
        }
        Ok(Limits { requests, tokens })
    }
}
