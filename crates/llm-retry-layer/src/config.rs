//! [`RetryConfig`]: the retry layer's settings as data — serde, presets and environment.

use std::time::Duration;

use llm_core::__private::{env_var, parse_duration, parse_env_value};
use llm_core::{ConfigError, ErrorKind, ErrorKinds};
use serde::{Deserialize, Serialize};

use crate::budget::RetryBudget;
use llm_core::backoff::{Backoff, Jitter};

/// How delays grow between retries, as configuration names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `base_delay` every time.
    Fixed,
    /// `base_delay`, then `+ step` each retry, up to `max_delay`.
    Linear,
    /// `base_delay`, then `× multiplier` each retry, up to `max_delay`.
    #[default]
    Exponential,
}

/// The process-wide retry budget's settings (see [`RetryBudget`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Whether retries are budgeted at all.
    pub enabled: bool,
    /// Retries allowed per request, on top of the floor (0.2: one retry per five requests).
    pub retry_ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: u32,
    /// The most retries the budget can bank in healthy times.
    pub max_balance: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            enabled: true,
            retry_ratio: 0.2,
            min_per_sec: 10,
            max_balance: 100,
        }
    }
}

impl BudgetConfig {
    /// Builds the budget, or `None` when disabled.
    pub fn build(&self) -> Result<Option<RetryBudget>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        RetryBudget::new(self.retry_ratio, self.min_per_sec, self.max_balance).map(Some)
    }
}

/// The retry layer's settings. Durations are written as `"500ms"`, `"2s"`.
///
/// Start from a preset ([`standard`](Self::standard), [`streaming`](Self::streaming),
/// [`aggressive`](Self::aggressive)) or load it from TOML, YAML, JSON or the environment.
///
/// ```
/// use std::time::Duration;
/// use llm_retry_layer::{RetryConfig, RetryLayer};
///
/// let config: RetryConfig = serde_json::from_str(r#"{
///     "max_retries": 2,
///     "base_delay": "1s",
///     "max_delay": "4s",
///     "jitter": "none",
///     "stop_on": ["rate_limited"]
/// }"#).unwrap();
/// assert_eq!(config.base_delay, Duration::from_secs(1));
/// let layer = RetryLayer::new(config).unwrap();
///
/// let bad: RetryConfig = serde_json::from_str(r#"{"base_delay": "5s", "max_delay": "1s"}"#).unwrap();
/// let err = RetryLayer::new(bad).unwrap_err();
/// assert_eq!(err.field(), "max_delay");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt (0 disables retrying).
    pub max_retries: u32,
    /// How delays grow.
    pub strategy: Strategy,
    /// The first delay.
    #[serde(with = "llm_core::config::duration")]
    pub base_delay: Duration,
    /// The longest delay.
    #[serde(with = "llm_core::config::duration")]
    pub max_delay: Duration,
    /// Growth factor of the exponential strategy.
    pub multiplier: f64,
    /// Growth step of the linear strategy (default: `base_delay`).
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub step: Option<Duration>,
    /// Randomisation of each delay.
    pub jitter: Jitter,
    /// The kinds retried (default: the transient kinds).
    pub retry_on: ErrorKinds,
    /// Kinds never retried, even if `retry_on` names them.
    pub stop_on: ErrorKinds,
    /// A server delay longer than this ends retrying at once, so a fallback can act.
    #[serde(with = "llm_core::config::duration")]
    pub max_retry_after: Duration,
    /// No retry starts after this long since the first attempt.
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_elapsed: Option<Duration>,
    /// With fallback targets left, these kinds hand over at once instead of retrying.
    pub failover_on: ErrorKinds,
    /// With fallback targets left, a wait longer than this hands over instead.
    #[serde(with = "llm_core::config::duration")]
    pub failover_delay: Duration,
    /// The process-wide retry budget.
    pub budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig::standard()
    }
}

impl RetryConfig {
    /// Up to 3 retries; exponential delays from 500 ms, doubling, capped at 8 s, full jitter;
    /// server delays honoured up to 120 s (longer ends retrying); budget of 20 % of requests
    /// plus 10 retries/s.
    ///
    /// With fallback targets left (a fallback layer says so), it hands over instead of
    /// retrying, deterministically: on a timeout or a network failure (the target is silent
    /// or gone); when the planned wait (before jitter) is over 1 s, so two retries at most;
    /// on a rate limit without a delay, or a second one after a short delay was waited out;
    /// and when the target's breaker opened.
    ///
    /// These follow the official OpenAI and Anthropic SDKs (0.5 s initial, 8 s cap, 120 s
    /// Retry-After limit) with one more retry and full jitter.
    pub fn standard() -> Self {
        RetryConfig {
            max_retries: 3,
            strategy: Strategy::Exponential,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            multiplier: 2.0,
            step: None,
            jitter: Jitter::Full,
            retry_on: ErrorKinds::RETRYABLE,
            stop_on: ErrorKinds::NONE,
            max_retry_after: Duration::from_secs(120),
            max_elapsed: None,
            failover_on: ErrorKinds::of(&[ErrorKind::Timeout, ErrorKind::Network]),
            failover_delay: Duration::from_secs(1),
            budget: BudgetConfig::default(),
        }
    }

    /// For streaming calls, where a person waits for the first token: up to 2 retries,
    /// 250 ms doubling to at most 2 s with equal jitter, server delays up to 10 s, and no
    /// retry starting 15 s after the first attempt.
    pub fn streaming() -> Self {
        RetryConfig {
            max_retries: 2,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(2),
            jitter: Jitter::Equal,
            max_retry_after: Duration::from_secs(10),
            max_elapsed: Some(Duration::from_secs(15)),
            ..RetryConfig::standard()
        }
    }

    /// For batch work that would rather wait than fail: up to 6 retries, 200 ms growing to
    /// at most 30 s with decorrelated jitter, and a budget of 50 % of requests.
    pub fn aggressive() -> Self {
        RetryConfig {
            max_retries: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            jitter: Jitter::Decorrelated,
            budget: BudgetConfig {
                retry_ratio: 0.5,
                ..BudgetConfig::default()
            },
            ..RetryConfig::standard()
        }
    }

    /// The standard preset, overridden by `RETRY_MAX_ATTEMPTS` (attempts in all, the first
    /// included: 1 disables retrying), `RETRY_BASE_DELAY` and `RETRY_MAX_DELAY` (`"500ms"`,
    /// `"2s"`).
    ///
    /// ```
    /// let config = llm_retry_layer::RetryConfig::from_env().unwrap();
    /// assert!(config.max_retries <= 100);
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        RetryConfig::from_env_with_prefix("")
    }

    /// As [`from_env`](Self::from_env), reading `{prefix}RETRY_MAX_ATTEMPTS` and so on.
    pub fn from_env_with_prefix(prefix: &str) -> Result<Self, ConfigError> {
        RetryConfig::standard().merge_env(prefix)
    }

    /// Overrides this configuration with the `{prefix}RETRY_*` environment variables that
    /// are set.
    pub fn merge_env(self, prefix: &str) -> Result<Self, ConfigError> {
        self.merge_vars(prefix, |key| env_var("", key))
    }

    /// Overrides this configuration with the `{prefix}RETRY_*` variables `lookup` finds: the
    /// environment, or any other source of variables (a test's map, a secrets store).
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_retry_layer::RetryConfig;
    ///
    /// let vars = |key: &str| Ok(match key {
    ///     "APP_RETRY_MAX_ATTEMPTS" => Some("4".to_owned()),
    ///     "APP_RETRY_BASE_DELAY" => Some("1s".to_owned()),
    ///     _ => None,
    /// });
    /// let config = RetryConfig::standard().merge_vars("APP_", vars).unwrap();
    /// assert_eq!(config.max_retries, 3);
    /// assert_eq!(config.base_delay, Duration::from_secs(1));
    /// ```
    pub fn merge_vars(
        mut self,
        prefix: &str,
        lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let attempts_key = format!("{prefix}RETRY_MAX_ATTEMPTS");
        if let Some(value) = lookup(&attempts_key)? {
            let attempts: u32 = parse_env_value(&attempts_key, &value)?;
            if attempts == 0 {
                return Err(ConfigError::new(
                    attempts_key,
                    "must be at least 1 (the first attempt counts)",
                ));
            }
            self.max_retries = attempts - 1;
        }
        let duration = |name: &str| -> Result<Option<Duration>, ConfigError> {
            let key = format!("{prefix}{name}");
            lookup(&key)?
                .map(|value| {
                    parse_duration("", &value)
                        .map_err(|e| ConfigError::new(key, e.reason().to_owned()))
                })
                .transpose()
        };
        if let Some(delay) = duration("RETRY_BASE_DELAY")? {
            self.base_delay = delay;
        }
        if let Some(delay) = duration("RETRY_MAX_DELAY")? {
            self.max_delay = delay;
        }
        self.validate()?;
        Ok(self)
    }

    /// The backoff these settings describe.
    pub fn backoff(&self) -> Backoff {
        match self.strategy {
            Strategy::Fixed => Backoff::fixed(self.base_delay),
            Strategy::Linear => Backoff::linear(
                self.base_delay,
                self.step.unwrap_or(self.base_delay),
                self.max_delay,
            ),
            Strategy::Exponential => {
                Backoff::exponential(self.base_delay, self.multiplier, self.max_delay)
            }
        }
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_retries > 100 {
            return Err(ConfigError::new(
                "max_retries",
                format!(
                    "must be at most 100 (got {}); use a deadline for long waits",
                    self.max_retries
                ),
            ));
        }
        self.backoff().validate()?;
        self.budget.build()?;
        Ok(())
    }
}
