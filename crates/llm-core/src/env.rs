//! Reading settings from the environment, naming the variable at fault: what each layer's
//! `from_env` shares.

use std::time::Duration;

use crate::config::ConfigError;

/// Parses a human-readable duration (`"500ms"`, `"2s"`, `"1m 30s"`, `"0s"`) for `field`.
///
/// ```
/// use std::time::Duration;
/// use llm_core::__private::parse_duration;
///
/// assert_eq!(parse_duration("base_delay", "250ms"), Ok(Duration::from_millis(250)));
/// let err = parse_duration("base_delay", "soon").unwrap_err();
/// assert_eq!(err.field(), "base_delay");
/// ```
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|err| {
        ConfigError::new(
            field,
            format!("is not a duration like \"500ms\" or \"2s\" (got {value:?}: {err})"),
        )
    })
}

/// Reads `{prefix}{name}` from the environment: `Ok(None)` when unset, an error naming the
/// variable when it is set but not valid Unicode.
///
/// ```
/// use llm_core::__private::env_var;
///
/// assert_eq!(env_var("LLM_TOWER_DOC_", "SURELY_UNSET").unwrap(), None);
/// ```
pub fn env_var(prefix: &str, name: &str) -> Result<Option<String>, ConfigError> {
    let key = format!("{prefix}{name}");
    match std::env::var(&key) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(ConfigError::new(key, "is not valid Unicode"))
        }
    }
}

/// Parses an environment variable's value with `parse`, naming the variable on failure.
///
/// ```
/// use llm_core::__private::parse_env_value;
///
/// assert_eq!(parse_env_value::<u32>("RETRY_MAX_ATTEMPTS", "3"), Ok(3));
/// let err = parse_env_value::<u32>("RETRY_MAX_ATTEMPTS", "three").unwrap_err();
/// assert_eq!(err.field(), "RETRY_MAX_ATTEMPTS");
/// ```
pub fn parse_env_value<T>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value.trim().parse().map_err(|err| {
        ConfigError::new(
            key.to_owned(),
            format!("cannot be parsed from {value:?}: {err}"),
        )
    })
}
