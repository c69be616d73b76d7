//! [`BreakerConfig`]: when the breaker trips, how long it stays open, how it probes.

use std::time::Duration;

use llm_core::__private::{env_var, parse_duration, parse_env_value};
use llm_core::{ConfigError, ErrorKinds};
use serde::{Deserialize, Serialize};

/// The window over which failure and slow-call rates are measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WindowConfig {
    /// The last `size` calls.
    Count {
        /// Calls in the window.
        size: u32,
    },
    /// The calls of the last `length`, in `buckets` slices (the oldest slice drops out as a
    /// whole, so the window is exact to `length / buckets`).
    Time {
        /// The window's length.
        #[serde(with = "llm_core::config::duration")]
        length: Duration,
        /// Slices of the window.
        buckets: u32,
    },
}

/// The circuit breaker's settings. Durations are written as `"30s"`, `"500ms"`.
///
/// The breaker trips (opens) when any enabled rule holds: `consecutive_failures` failures in
/// a row; a failure rate of at least `failure_rate` over the window; a slow-call rate of at
/// least `slow_call_rate` (calls taking `slow_call_duration` or longer). The rate rules wait
/// for `minimum_calls` calls in the window. While open it rejects calls at once with
/// `CircuitOpen`; after the open duration it lets `half_open_probes` probe calls through:
/// `success_threshold` successes close it, one failure opens it again for longer
/// (`open_multiplier`, up to `max_open_duration`, shortened at random by up to `open_jitter`).
///
/// Only the kinds in `count_kinds` count as failures (default: overloaded, server errors,
/// timeouts, network failures, interrupted streams). Rate limits, quota, auth, invalid
/// requests, context length and content filters describe the caller, not the target's
/// health: they are neither failures nor successes.
///
/// ```
/// use std::time::Duration;
/// use llm_breaker_layer::{BreakerConfig, WindowConfig};
///
/// let config: BreakerConfig = serde_json::from_str(r#"{
///     "failure_rate": 0.5,
///     "window": {"kind": "time", "length": "60s", "buckets": 12},
///     "slow_call_duration": "20s",
///     "open_duration": "10s"
/// }"#).unwrap();
/// assert_eq!(config.window, WindowConfig::Time { length: Duration::from_secs(60), buckets: 12 });
/// config.validate().unwrap();
///
/// let zero: BreakerConfig = serde_json::from_str(r#"{"window": {"kind": "count", "size": 0}}"#).unwrap();
/// assert_eq!(zero.validate().unwrap_err().field(), "window.size");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (`None`: no such rule).
    pub consecutive_failures: Option<u32>,
    /// Trip when failures make up at least this share of the window's calls (0 to 1;
    /// `None`: no such rule).
    pub failure_rate: Option<f64>,
    /// The window the rates are measured over.
    pub window: WindowConfig,
    /// Calls the window must hold before a rate rule may trip.
    pub minimum_calls: u32,
    /// A call taking this long or longer is slow (`None`: slowness is not tracked).
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_call_duration: Option<Duration>,
    /// Trip when slow calls make up at least this share of the window's calls (0 to 1).
    pub slow_call_rate: f64,
    /// Probe calls let through at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub success_threshold: u32,
    /// How long the breaker stays open after its first trip.
    #[serde(with = "llm_core::config::duration")]
    pub open_duration: Duration,
    /// Each further trip without a recovery in between multiplies the open duration by this.
    pub open_multiplier: f64,
    /// The longest open duration.
    #[serde(with = "llm_core::config::duration")]
    pub max_open_duration: Duration,
    /// Open durations are shortened at random by up to this share (0 to 1), so that
    /// breakers tripped together do not probe together.
    pub open_jitter: f64,
    /// The kinds of failure that count against the target.
    pub count_kinds: ErrorKinds,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig::standard()
    }
}

impl BreakerConfig {
    /// Trips on 5 failures in a row, or on a 50 % failure rate over the last 20 calls (once
    /// 10 are in); open 30 s, doubling on repeated trips up to 5 min, 10 % jitter; one probe,
    /// which closes it on success. Slow calls are not tracked.
    pub fn standard() -> Self {
        BreakerConfig {
            consecutive_failures: Some(5),
            failure_rate: Some(0.5),
            window: WindowConfig::Count { size: 20 },
            minimum_calls: 10,
            slow_call_duration: None,
            slow_call_rate: 1.0,
            half_open_probes: 1,
            success_threshold: 1,
            open_duration: Duration::from_secs(30),
            open_multiplier: 2.0,
            max_open_duration: Duration::from_secs(300),
            open_jitter: 0.1,
            count_kinds: ErrorKinds::BREAKER_FAILURES,
        }
    }

    /// The standard settings, plus tripping when half the calls over the last 60 s (in 10 s
    /// slices, once 10 calls are in) took `slow` or longer: for LLM targets that degrade by
    /// slowing down before they fail.
    pub fn latency(slow: Duration) -> Self {
        BreakerConfig {
            window: WindowConfig::Time {
                length: Duration::from_secs(60),
                buckets: 6,
            },
            slow_call_duration: Some(slow),
            slow_call_rate: 0.5,
            ..BreakerConfig::standard()
        }
    }

    /// The standard settings overridden by `CIRCUIT_BREAKER_THRESHOLD` (a whole number:
    /// failures in a row; a fraction such as `0.5`: failure rate), `CIRCUIT_BREAKER_TIMEOUT`
    /// (the open duration, `"30s"`) and `CIRCUIT_BREAKER_SUCCESS_THRESHOLD`.
    ///
    /// ```
    /// let config = llm_breaker_layer::BreakerConfig::from_env().unwrap();
    /// assert!(config.success_threshold >= 1);
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        BreakerConfig::standard().merge_vars("", |key| env_var("", key))
    }

    /// Overrides these settings with the `{prefix}CIRCUIT_BREAKER_*` variables `lookup`
    /// finds (the environment, or any other source).
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_breaker_layer::BreakerConfig;
    ///
    /// let vars = |key: &str| Ok(match key {
    ///     "CIRCUIT_BREAKER_THRESHOLD" => Some("0.25".to_owned()),
    ///     "CIRCUIT_BREAKER_TIMEOUT" => Some("45s".to_owned()),
    ///     _ => None,
    /// });
    /// let config = BreakerConfig::standard().merge_vars("", vars).unwrap();
    /// assert_eq!(config.failure_rate, Some(0.25));
    /// assert_eq!(config.open_duration, Duration::from_secs(45));
    /// ```
    pub fn merge_vars(
        mut self,
        prefix: &str,
        lookup: impl Fn(&str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Self, ConfigError> {
        let key = format!("{prefix}CIRCUIT_BREAKER_THRESHOLD");
        if let Some(value) = lookup(&key)? {
            let value = value.trim();
            if let Ok(count) = value.parse::<u32>() {
                self.consecutive_failures = Some(count);
            } else {
                let rate: f64 = parse_env_value(&key, value)?;
                if !(rate > 0.0 && rate <= 1.0) {
                    return Err(ConfigError::new(
                        key,
                        format!(
                            "must be a whole number of failures or a rate in (0, 1] (got {value})"
                        ),
                    ));
                }
                self.failure_rate = Some(rate);
            }
        }
        let key = format!("{prefix}CIRCUIT_BREAKER_TIMEOUT");
        if let Some(value) = lookup(&key)? {
            self.open_duration = parse_duration("", &value)
                .map_err(|e| ConfigError::new(key, e.reason().to_owned()))?;
            self.max_open_duration = self.max_open_duration.max(self.open_duration);
        }
        let key = format!("{prefix}CIRCUIT_BREAKER_SUCCESS_THRESHOLD");
        if let Some(value) = lookup(&key)? {
            self.success_threshold = parse_env_value(&key, &value)?;
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn rate(field: &'static str, value: f64) -> Result<(), ConfigError> {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field,
                    format!("must be a rate in (0, 1] (got {value})"),
                ))
            }
        }
        if self.consecutive_failures == Some(0) {
            return Err(ConfigError::new(
                "consecutive_failures",
                "must be at least 1 (or left out)",
            ));
        }
        if let Some(value) = self.failure_rate {
            rate("failure_rate", value)?;
        }
        if self.slow_call_duration.is_some() {
            rate("slow_call_rate", self.slow_call_rate)?;
        }
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call_duration.is_none()
        {
            return Err(ConfigError::new(
                "consecutive_failures",
                "or failure_rate or slow_call_duration must be set: the breaker has no rule to trip by",
            ));
        }
        match self.window {
            WindowConfig::Count { size } => {
                if size == 0 {
                    return Err(ConfigError::new("window.size", "must be at least 1 call"));
                }
                if size > 100_000 {
                    return Err(ConfigError::new(
                        "window.size",
                        format!("must be at most 100000 calls (got {size})"),
                    ));
                }
                if self.minimum_calls > size {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        format!(
                            "must not exceed window.size ({} > {size}): the rate rules could never trip",
                            self.minimum_calls
                        ),
                    ));
                }
            }
            WindowConfig::Time { length, buckets } => {
                if length.is_zero() {
                    return Err(ConfigError::new(
                        "window.length",
                        "must be longer than zero",
                    ));
                }
                if buckets == 0 || buckets > 1_000 {
                    return Err(ConfigError::new(
                        "window.buckets",
                        format!("must be from 1 to 1000 (got {buckets})"),
                    ));
                }
                if (length / buckets).is_zero() {
                    return Err(ConfigError::new(
                        "window.buckets",
                        "are too many for the window's length",
                    ));
                }
            }
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::new(
                "half_open_probes",
                "must be at least 1: a breaker that never probes never closes",
            ));
        }
        if self.success_threshold == 0 {
            return Err(ConfigError::new("success_threshold", "must be at least 1"));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::new(
                "open_duration",
                "must be longer than zero",
            ));
        }
        self.open_backoff()
            .validate()
            .map_err(|err| match err.field() {
                "max_delay" => ConfigError::new("max_open_duration", err.reason().to_owned()),
                _ => ConfigError::new("open_multiplier", err.reason().to_owned()),
            })?;
        if !(0.0..1.0).contains(&self.open_jitter) {
            return Err(ConfigError::new(
                "open_jitter",
                format!(
                    "must be from 0 up to (not including) 1 (got {})",
                    self.open_jitter
                ),
            ));
        }
        Ok(())
    }

    pub(crate) fn open_backoff(&self) -> llm_core::backoff::Backoff {
        llm_core::backoff::Backoff::exponential(
            self.open_duration,
            self.open_multiplier,
            self.max_open_duration,
        )
    }
}
