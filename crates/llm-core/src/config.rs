//! Configuration vocabulary shared by every layer: [`ConfigError`], which names the field
//! at fault, human-readable durations for serde (`"500ms"`, `"2s"`, `"1m 30s"`), and
//! environment-variable reading with an optional prefix.

use std::borrow::Cow;

/// A configuration value was rejected. The message names the field and says why, so a
/// service can stop at start-up with an actionable line.
///
/// ```
/// use llm_core::ConfigError;
///
/// let err = ConfigError::new("max_delay", "must not be shorter than base_delay (500ms > 100ms)")
///     .in_section("retry");
/// assert_eq!(err.field(), "retry.max_delay");
/// assert_eq!(
///     err.to_string(),
///     "invalid configuration: `retry.max_delay` must not be shorter than base_delay (500ms > 100ms)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}` {reason}")]
pub struct ConfigError {
    field: Cow<'static, str>,
    reason: String,
}

impl ConfigError {
    /// `field` is invalid because `reason` (a phrase that reads after the field's name).
    pub fn new(field: impl Into<Cow<'static, str>>, reason: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field with the section it sits in (`retry` → `retry.max_delay`).
    #[must_use]
    pub fn in_section(mut self, section: &str) -> Self {
        self.field = Cow::Owned(format!("{section}.{}", self.field));
        self
    }

    /// The field at fault, with its sections.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Why the value was rejected.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Serde support for `Duration` fields written as `"500ms"`, `"2s"` (`#[serde(with = …)]`).
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Timeouts {
///     #[serde(with = "llm_core::config::duration")]
///     connect: Duration,
/// }
/// let t: Timeouts = serde_json::from_str(r#"{"connect": "1500ms"}"#).unwrap();
/// assert_eq!(t.connect, Duration::from_millis(1500));
/// ```
pub use humantime_serde as duration;

/// Serde support for `Option<Duration>` fields written as `"500ms"` or left out
/// (`humantime-serde`'s `option`).
pub use humantime_serde::option as option_duration;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Sample {
        #[serde(with = "duration")]
        every: Duration,
        #[serde(
            default,
            with = "option_duration",
            skip_serializing_if = "Option::is_none"
        )]
        limit: Option<Duration>,
    }

    #[test]
    fn durations_round_trip_through_serde() {
        let sample: Sample =
            serde_json::from_str(r#"{"every": "1m 30s", "limit": "250ms"}"#).unwrap();
        assert_eq!(
            sample,
            Sample {
                every: Duration::from_secs(90),
                limit: Some(Duration::from_millis(250))
            }
        );
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        let bare: Sample = serde_json::from_str(r#"{"every": "0s"}"#).unwrap();
        assert_eq!(bare.limit, None);
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        let err = serde_json::from_str::<Sample>(r#"{"every": "fast"}"#).unwrap_err();
        assert!(err.to_string().contains("expected a duration"), "{err}");
        let err = serde_json::from_str::<Sample>(r#"{"every": 5}"#).unwrap_err();
        assert!(err.to_string().contains("expected a duration"), "{err}");
    }

    #[test]
    fn config_errors_name_nested_fields() {
        let err = ConfigError::new("rate", "must be between 0 and 1 (got 1.5)")
            .in_section("breaker")
            .in_section("providers.openai");
        assert_eq!(err.field(), "providers.openai.breaker.rate");
        assert_eq!(err.reason(), "must be between 0 and 1 (got 1.5)");
    }
}
