//! [`RedisConfig`] (feature `redis`): where the layers that share state through Redis find
//! it — one configuration for the rate limiter's store and the breaker's shared state.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::redis::{DEFAULT_TIMEOUT, RedisLink};

/// Where a layer shares its state through Redis, and how.
///
/// Every layer takes this one type: the rate limiter (`RateLimitLayer::builder().redis(…)`)
/// and the breaker (`BreakerLayer::builder().shared(…)`). What a layer does while Redis is
/// down belongs to that layer's own configuration (the rate limiter's `on_redis_failure`).
///
/// ```
/// use std::time::Duration;
/// use llm_core::RedisConfig;
///
/// let config: RedisConfig = serde_json::from_str(
///     r#"{"url": "redis://:hunter2@127.0.0.1:6379", "key_prefix": "gw:", "timeout": "50ms"}"#,
/// ).unwrap();
/// assert_eq!(config.timeout, Duration::from_millis(50));
/// assert_eq!(config.prefix_or("llm-tower:ratelimit:"), "gw:");
/// config.validate().unwrap();
/// assert!(!format!("{config:?}").contains("hunter2"), "the password is never printed");
///
/// let bad = RedisConfig { resync_every: Duration::ZERO, ..RedisConfig::new("redis://127.0.0.1") };
/// assert_eq!(bad.validate().unwrap_err().field(), "resync_every");
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port/db` (or `rediss://` with the `redis` crate's TLS
    /// features).
    pub url: String,
    /// Prefixes every key (and the breaker's channel): layers with the same prefix and name
    /// share one state. `None`: the layer's own prefix (`llm-tower:ratelimit:`,
    /// `llm-tower:breaker:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
    /// The longest any Redis call may take before the layer decides without Redis.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// How often a layer that keeps shared state in memory (the breaker) reads it again, to
    /// catch changes whose message was lost (a dropped subscription, a Redis restart).
    #[serde(default = "default_resync", with = "crate::config::duration")]
    pub resync_every: Duration,
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_resync() -> Duration {
    Duration::from_secs(1)
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_password(&self.url))
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("resync_every", &self.resync_every)
            .finish()
    }
}

/// The URL with the password of its user part replaced by `***`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user = rest[..at].split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

impl RedisConfig {
    /// A configuration for `url` with the defaults: the layer's own key prefix, 100 ms per
    /// call, shared records read again every second.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: None,
            timeout: default_timeout(),
            resync_every: default_resync(),
        }
    }

    /// The same configuration with keys prefixed by `prefix`.
    pub fn with_key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    /// The key prefix, or `default` when none is set.
    pub fn prefix_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.key_prefix.as_deref().unwrap_or(default)
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.link("", "")?;
        if self.resync_every.is_zero() {
            return Err(ConfigError::new("resync_every", "must be longer than 0s"));
        }
        Ok(())
    }

    /// The connection this configuration describes; `shared` and `meanwhile` name what goes
    /// through it and what happens during an outage, for the outage log line.
    #[doc(hidden)]
    pub fn link(
        &self,
        shared: impl Into<String>,
        meanwhile: impl Into<String>,
    ) -> Result<RedisLink, ConfigError> {
        RedisLink::new(&self.url, self.timeout, shared, meanwhile)
    }
}

#[cfg(test)]
mod tests {
    use super::without_password;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        assert_eq!(
            without_password("redis://user:s3cret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(
            without_password("redis://:s3cret@host"),
            "redis://:***@host"
        );
        assert_eq!(without_password("redis://host:6379"), "redis://host:6379");
        assert_eq!(without_password("not a url"), "not a url");
    }
}
