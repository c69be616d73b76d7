//! Fields a front door does not translate: passed as they are to upstreams of its own
//! format, refused with a 400 naming them otherwise — never dropped.

use llm_providers::ProviderKind;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Refuses fields passed as they are (`passed`) when a target of the route does not read
/// the front door's format (`speaks`), naming the field and the target: they would mean
/// nothing there, or something else.
pub(crate) fn check_passed(
    passed: &Map<String, Value>,
    targets: &[(&str, ProviderKind)],
    speaks: fn(ProviderKind) -> bool,
    format: &str,
) -> Result<(), ApiError> {
    let Some(field) = passed.keys().next() else {
        return Ok(());
    };
    match targets.iter().find(|(_, kind)| !speaks(*kind)) {
        Some((name, kind)) => Err(ApiError::invalid(format!(
            "`{field}` cannot be sent to {name} ({kind}): the gateway passes fields it does not translate only to {format} upstreams"
        ))
        .param(field.clone())),
        None => Ok(()),
    }
}

/// Refuses a key of `value` that is not in `allowed` and not null: a field of a block, item or
/// part the gateway would otherwise drop (`path` names the object: `messages.0.content.1`).
pub(crate) fn allowed_keys(value: &Value, allowed: &[&str], path: &str) -> Result<(), ApiError> {
    if let Some(map) = value.as_object() {
        if let Some((key, _)) = map
            .iter()
            .find(|(k, v)| !allowed.contains(&k.as_str()) && !v.is_null())
        {
            return Err(ApiError::invalid(
                "is not supported by this gateway (it would be dropped)",
            )
            .param(format!("{path}.{key}")));
        }
    }
    Ok(())
}
