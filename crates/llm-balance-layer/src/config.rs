//! [`PoolConfig`] and [`Strategy`]: how a pool picks and how long a failed member stays out.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a pool picks among the available members of a tier.
///
/// Every strategy costs one scan of the tier's members (no allocation); peak-EWMA looks at
/// two of them (BENCHMARKS.md has the picks' costs beside `tower::balance::p2c`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// The member with the most headroom: the fewest requests left by the provider's
    /// `x-ratelimit-remaining-requests` (less what was sent since) or its own limiter's
    /// level, whichever is lower; unknown headroom counts as the most. Ties go to the fewest
    /// in flight per weight, then in turn. The default: keys with per-key quotas fill
    /// evenly, and without any quota information it is least-in-flight.
    #[default]
    QuotaAware,
    /// At random, in proportion to the members' weights.
    Weighted,
    /// The fewest requests in flight per weight; ties in turn.
    LeastInFlight,
    /// Power of two choices by peak-EWMA latency times requests in flight, as
    /// `tower::balance::p2c` with `PeakEwma` does: slow members get little traffic.
    PeakEwma,
}

/// A pool's settings, as read from a configuration file.
///
/// ```
/// use std::time::Duration;
/// use llm_balance_layer::{PoolConfig, Strategy};
///
/// let config: PoolConfig = toml::from_str(r#"
///     strategy = "peak_ewma"
///     retire_for = "10m"
/// "#).unwrap();
/// assert_eq!(config.strategy, Strategy::PeakEwma);
/// assert_eq!(config.retire_for, Duration::from_secs(600));
/// assert_eq!(config.cool_down, PoolConfig::default().cool_down);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct PoolConfig {
    /// How members are picked.
    pub strategy: Strategy,
    /// How long a member whose key was refused (401, 403) stays out before one request
    /// probes it again.
    #[serde(with = "humantime_serde")]
    pub retire_for: Duration,
    /// How long a rate-limited member (429) stays out when the provider said nothing about
    /// its reset (`retry-after`, `x-ratelimit-reset-*`).
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// How long a member with exhausted quota or credit stays out when the provider said
    /// nothing about when it returns.
    #[serde(with = "humantime_serde")]
    pub quota_cool_down: Duration,
    /// How long one probe of a member coming back holds off other requests to it.
    #[serde(with = "humantime_serde")]
    pub probe_hold: Duration,
    /// The peak-EWMA latency's decay: how fast an old latency is forgotten.
    #[serde(with = "humantime_serde")]
    pub latency_decay: Duration,
    /// The latency a member is assumed to have before its first answer.
    #[serde(with = "humantime_serde")]
    pub initial_latency: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            strategy: Strategy::default(),
            retire_for: Duration::from_secs(5 * 60),
            cool_down: Duration::from_secs(5),
            quota_cool_down: Duration::from_secs(60),
            probe_hold: Duration::from_secs(30),
            latency_decay: Duration::from_secs(10),
            initial_latency: Duration::from_secs(1),
        }
    }
}

impl PoolConfig {
    /// Checks what serde cannot; errors name the key.
    pub fn validate(&self) -> Result<(), llm_core::ConfigError> {
        for (key, value) in [
            ("retire_for", self.retire_for),
            ("cool_down", self.cool_down),
            ("quota_cool_down", self.quota_cool_down),
            ("probe_hold", self.probe_hold),
            ("latency_decay", self.latency_decay),
        ] {
            if value.is_zero() {
                return Err(llm_core::ConfigError::new(key, "must be longer than 0s"));
            }
        }
        Ok(())
    }
}
