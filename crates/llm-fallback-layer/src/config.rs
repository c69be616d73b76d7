//! [`FallbackConfig`]: a chain's triggers, rewrites and bounds as data.

use std::time::Duration;

use llm_core::{ConfigError, ErrorKinds, ModelRequest};
use serde::{Deserialize, Serialize};

use crate::target::{Chain, Target};

/// One target of a [`FallbackConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The service's name, as the caller of [`FallbackConfig::targets`] knows it.
    pub name: String,
    /// The kinds of this target's failures that move on (default: every kind but invalid
    /// requests, content refusals and cancellations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<ErrorKinds>,
    /// Which failures lead here.
    #[serde(default)]
    pub chain: Chain,
    /// The model to send instead of the requested one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The answer's token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}

/// A fallback chain as configuration: targets in order, hedging, bounds. Durations are
/// written as `"2s"`.
///
/// ```
/// use llm_fallback_layer::FallbackConfig;
///
/// let config: FallbackConfig = serde_json::from_str(r#"{
///     "targets": [
///         {"name": "openai"},
///         {"name": "openrouter", "model": "openai/gpt-4o", "on": ["rate_limited", "server_error"]},
///         {"name": "gemini", "model": "gemini-1.5-pro", "chain": "context_window"}
///     ],
///     "hedge_after": "3s",
///     "max_attempts": 6
/// }"#).unwrap();
/// config.validate().unwrap();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// The targets, first tried first.
    pub targets: Vec<TargetConfig>,
    /// Start the next target when the current one has answered nothing for this long.
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub hedge_after: Option<Duration>,
    /// Hedges started per request, at most (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_hedges: Option<u32>,
    /// Upstream attempts per request across every target and retry, at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
}

impl FallbackConfig {
    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.targets.is_empty() {
            return Err(ConfigError::new("targets", "must name at least one target"));
        }
        for (i, target) in self.targets.iter().enumerate() {
            if target.name.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("targets[{i}].name"),
                    "must not be empty",
                ));
            }
            if self.targets[..i].iter().any(|t| t.name == target.name) {
                return Err(ConfigError::new(
                    format!("targets[{i}].name"),
                    format!(
                        "names `{}` twice: target names identify attempts",
                        target.name
                    ),
                ));
            }
            if target.max_tokens == Some(0) {
                return Err(ConfigError::new(
                    format!("targets[{i}].max_tokens"),
                    "must be at least 1",
                ));
            }
            if let Some(t) = target.temperature {
                if !(t.is_finite() && t >= 0.0) {
                    return Err(ConfigError::new(
                        format!("targets[{i}].temperature"),
                        format!("must be a finite number ≥ 0 (got {t})"),
                    ));
                }
            }
        }
        check_bounds(self.hedge_after, self.max_attempts)
    }

    /// Builds the targets, looking each name up with `service`. The error names the target
    /// whose service was not found.
    ///
    /// ```
    /// use llm_fallback_layer::{Fallback, FallbackConfig};
    /// use llm_testkit::{ReadyService, TestRequest, TestResponse};
    ///
    /// let config: FallbackConfig = serde_json::from_str(r#"{"targets": [{"name": "a"}, {"name": "b"}]}"#).unwrap();
    /// let targets = config.targets::<_, TestRequest>(|name| match name {
    ///     "a" | "b" => Some(ReadyService::new(TestResponse::EMPTY)),
    ///     _ => None,
    /// }).unwrap();
    /// let fallback = Fallback::builder(targets).config(&config).build().unwrap();
    ///
    /// let missing: FallbackConfig = serde_json::from_str(r#"{"targets": [{"name": "c"}]}"#).unwrap();
    /// let err = missing.targets::<ReadyService<TestResponse>, TestRequest>(|_| None).unwrap_err();
    /// assert_eq!(err.field(), "targets[0].name");
    /// ```
    pub fn targets<S, Req>(
        &self,
        mut service: impl FnMut(&str) -> Option<S>,
    ) -> Result<Vec<Target<S, Req>>, ConfigError>
    where
        Req: ModelRequest + 'static,
    {
        self.validate()?;
        self.targets
            .iter()
            .enumerate()
            .map(|(i, config)| {
                let svc = service(&config.name).ok_or_else(|| {
                    ConfigError::new(
                        format!("targets[{i}].name"),
                        format!("names no known service: `{}`", config.name),
                    )
                })?;
                let mut target = Target::new(config.name.as_str(), svc).chain(config.chain);
                if let Some(kinds) = config.on {
                    target = target.on(kinds);
                }
                if let Some(model) = &config.model {
                    target = target.model(model.clone());
                }
                if let Some(max_tokens) = config.max_tokens {
                    target = target.max_tokens(max_tokens);
                }
                if let Some(temperature) = config.temperature {
                    target = target.temperature(temperature);
                }
                Ok(target)
            })
            .collect()
    }
}

/// The bounds every chain checks, from configuration or from the builder.
pub(crate) fn check_bounds(
    hedge_after: Option<Duration>,
    max_attempts: Option<u32>,
) -> Result<(), ConfigError> {
    if hedge_after.is_some_and(|d| d.is_zero()) {
        return Err(ConfigError::new(
            "hedge_after",
            "must be longer than zero (leave it out to disable hedging)",
        ));
    }
    if max_attempts == Some(0) {
        return Err(ConfigError::new("max_attempts", "must be at least 1"));
    }
    Ok(())
}
