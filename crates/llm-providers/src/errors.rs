//! From a provider's status, headers and body to an [`LlmError`] of the right kind — the
//! providers' documented error answers, provider by provider.

use std::time::Duration;

use http::{HeaderMap, StatusCode};
use llm_core::classify::classify_status;
use llm_core::delay::parse_go_duration;
use llm_core::{ErrorKind, LlmError};
use serde_json::Value;

use crate::kind::ProviderKind;

/// The longest provider message kept in an error (bodies can be whole HTML pages).
const MAX_MESSAGE: usize = 500;

/// What a provider's error body said, read leniently.
#[derive(Debug, Default)]
pub(crate) struct ErrorBody {
    pub(crate) message: Option<String>,
    /// OpenAI `error.type`, Anthropic `error.type`, Gemini `error.status`.
    pub(crate) kind: Option<String>,
    /// OpenAI `error.code`, OpenRouter `error.code` (number or string).
    pub(crate) code: Option<String>,
    /// Gemini `details[].reason`, Azure `innererror.code`, Anthropic `details.error_code`,
    /// OpenRouter `metadata.reasons`.
    pub(crate) reasons: Vec<String>,
    /// Gemini quota ids (`…PerDay…`).
    pub(crate) quota_ids: Vec<String>,
    /// Gemini `RetryInfo.retryDelay`.
    pub(crate) retry_delay: Option<Duration>,
}

fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl ErrorBody {
    /// Reads `{"error": {...}}` (OpenAI, OpenRouter, Gemini, Anthropic's `{"type":"error",
    /// "error":{…}}`), `{"error": "…"}` (Ollama) and Gemini's one-element list.
    pub(crate) fn parse(value: &Value) -> Option<ErrorBody> {
        let value = match value {
            Value::Array(items) if items.len() == 1 => &items[0],
            other => other,
        };
        let error = value.get("error")?;
        let mut body = ErrorBody::default();
        match error {
            Value::String(message) => body.message = Some(message.clone()),
            Value::Object(_) => {
                body.message = error.get("message").and_then(string_of);
                body.kind = error
                    .get("type")
                    .and_then(string_of)
                    .or_else(|| error.get("status").and_then(string_of));
                body.code = error.get("code").and_then(string_of);
                for inner in ["innererror", "inner_error"] {
                    if let Some(code) = error.pointer(&format!("/{inner}/code")).and_then(string_of)
                    {
                        body.reasons.push(code);
                    }
                }
                if let Some(code) = error.pointer("/details/error_code").and_then(string_of) {
                    body.reasons.push(code);
                }
                if let Some(reasons) = error.pointer("/metadata/reasons").and_then(Value::as_array)
                {
                    body.reasons.extend(reasons.iter().filter_map(string_of));
                }
                for detail in error
                    .get("details")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(reason) = detail.get("reason").and_then(string_of) {
                        body.reasons.push(reason);
                    }
                    if let Some(delay) = detail.get("retryDelay").and_then(Value::as_str) {
                        body.retry_delay = parse_go_duration(delay);
                    }
                    for v in detail
                        .get("violations")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(id) = v.get("quotaId").and_then(string_of) {
                            body.quota_ids.push(id);
                        }
                    }
                }
            }
            _ => return None,
        }
        Some(body)
    }

    fn has_reason(&self, reason: &str) -> bool {
        self.reasons.iter().any(|r| r == reason)
    }

    fn message_has(&self, needle: &str) -> bool {
        self.message
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains(needle))
    }
}

/// The kind a provider's error body means, refining the status's kind.
pub(crate) fn body_kind(
    kind: ProviderKind,
    status: Option<StatusCode>,
    body: &ErrorBody,
) -> Option<ErrorKind> {
    let error_kind = body.kind.as_deref().unwrap_or_default();
    let code = body.code.as_deref().unwrap_or_default();
    let context = body.message_has("maximum context length")
        || body.message_has("context length")
        || body.message_has("context_length_exceeded")
        || code == "context_length_exceeded";
    let found = match kind {
        ProviderKind::Anthropic => match error_kind {
            "rate_limit_error" if body.has_reason("enforced_spend_limit_reached") => {
                ErrorKind::QuotaExceeded
            }
            "rate_limit_error" => ErrorKind::RateLimited,
            "overloaded_error" => ErrorKind::Overloaded,
            "billing_error" => ErrorKind::QuotaExceeded,
            "authentication_error" | "permission_error" => ErrorKind::Unauthorized,
            "not_found_error" => ErrorKind::ModelNotFound,
            "timeout_error" => ErrorKind::Timeout,
            "api_error" => ErrorKind::ServerError,
            "request_too_large" => ErrorKind::InvalidRequest,
            "invalid_request_error" if body.message_has("credit balance is too low") => {
                ErrorKind::QuotaExceeded
            }
            "invalid_request_error"
                if body.message_has("prompt is too long")
                    || body.message_has("exceed context limit")
                    || body.message_has("prompt: length") =>
            {
                ErrorKind::ContextLengthExceeded
            }
            "invalid_request_error" => ErrorKind::InvalidRequest,
            _ => return None,
        },
        ProviderKind::Gemini => match error_kind {
            "RESOURCE_EXHAUSTED" if body.quota_ids.iter().any(|id| id.contains("PerDay")) => {
                ErrorKind::QuotaExceeded
            }
            "RESOURCE_EXHAUSTED" => ErrorKind::RateLimited,
            "INVALID_ARGUMENT"
                if body.has_reason("API_KEY_INVALID") || body.message_has("api key not valid") =>
            {
                ErrorKind::Unauthorized
            }
            "INVALID_ARGUMENT" if body.message_has("exceeds the maximum number of tokens") => {
                ErrorKind::ContextLengthExceeded
            }
            "INVALID_ARGUMENT" => ErrorKind::InvalidRequest,
            "FAILED_PRECONDITION" => ErrorKind::QuotaExceeded,
            "PERMISSION_DENIED" | "UNAUTHENTICATED" => ErrorKind::Unauthorized,
            "NOT_FOUND" => ErrorKind::ModelNotFound,
            "UNAVAILABLE" => ErrorKind::Overloaded,
            "INTERNAL" | "UNKNOWN" => ErrorKind::ServerError,
            "DEADLINE_EXCEEDED" => ErrorKind::Timeout,
            _ => return None,
        },
        ProviderKind::Ollama => match status.map(|s| s.as_u16()) {
            _ if context || body.message_has("longer than the context") => {
                ErrorKind::ContextLengthExceeded
            }
            Some(404) => ErrorKind::ModelNotFound,
            Some(429) if body.message_has("usage limit") => ErrorKind::QuotaExceeded,
            Some(503) => ErrorKind::Overloaded,
            Some(499) => ErrorKind::Cancelled,
            // Mid-stream errors arrive with status 200 and only a message.
            _ if status.is_none_or(|s| s.is_success()) => ErrorKind::ServerError,
            _ => return None,
        },
        ProviderKind::OpenRouter => match status.map(|s| s.as_u16()) {
            Some(402) => ErrorKind::QuotaExceeded,
            Some(403) if !body.reasons.is_empty() || body.message_has("moderation") => {
                ErrorKind::ContentFiltered
            }
            Some(400) if context => ErrorKind::ContextLengthExceeded,
            Some(503) => ErrorKind::Overloaded,
            Some(408) => ErrorKind::Timeout,
            // In a 200 stream: `{"error":{"code":"server_error",…}}`.
            _ if status.is_none_or(|s| s.is_success()) => match code {
                "rate_limit_exceeded" | "429" => ErrorKind::RateLimited,
                "context_length_exceeded" => ErrorKind::ContextLengthExceeded,
                _ => ErrorKind::ServerError,
            },
            _ => return None,
        },
        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::OpenAiCompatible => {
            if error_kind == "insufficient_quota" || code == "insufficient_quota" {
                ErrorKind::QuotaExceeded
            } else if body.message_has("request too large") && body.message_has("per min") {
                // The request alone exceeds the per-minute budget: waiting cannot help.
                ErrorKind::QuotaExceeded
            } else if context {
                ErrorKind::ContextLengthExceeded
            } else if code == "content_filter"
                || code == "content_policy_violation"
                || body.has_reason("ResponsibleAIPolicyViolation")
            {
                ErrorKind::ContentFiltered
            } else if code == "model_not_found" || code == "DeploymentNotFound" {
                ErrorKind::ModelNotFound
            } else if code == "invalid_api_key" {
                ErrorKind::Unauthorized
            } else if status.is_none_or(|s| s.is_success()) {
                // An error event inside a 200 stream.
                match error_kind {
                    "rate_limit_exceeded" | "requests" | "tokens" => ErrorKind::RateLimited,
                    "invalid_request_error" => ErrorKind::InvalidRequest,
                    _ => ErrorKind::ServerError,
                }
            } else if status.is_some_and(|s| s == StatusCode::SERVICE_UNAVAILABLE) {
                ErrorKind::Overloaded
            } else {
                return None;
            }
        }
    };
    Some(found)
}

/// The error for a non-success response.
pub(crate) fn from_status(
    kind: ProviderKind,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> LlmError {
    let outcome = classify_status(status, headers);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let parsed = json.as_ref().and_then(ErrorBody::parse);
    let mut error_kind = outcome.kind().unwrap_or(ErrorKind::Other);
    let mut retry_after = outcome.retry_after();
    let mut code = None;
    let message = match &parsed {
        Some(body) => {
            if let Some(k) = body_kind(kind, Some(status), body) {
                error_kind = k;
            }
            retry_after = retry_after.or(body.retry_delay);
            code = body.code.clone().or_else(|| body.kind.clone());
            body.message
                .clone()
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
        }
        // 5xx bodies are often HTML or empty: keep a readable start of them.
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() || text.starts_with('<') {
                format!(
                    "HTTP {} {}",
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("")
                )
                .trim_end()
                .to_owned()
            } else {
                text.to_owned()
            }
        }
    };
    // Azure writes a day-long Retry-After for an exhausted daily quota.
    if error_kind == ErrorKind::RateLimited
        && retry_after.is_some_and(|d| d >= Duration::from_secs(3600))
    {
        error_kind = ErrorKind::QuotaExceeded;
    }
    let mut err = LlmError::new(error_kind, scrub(&message, secrets))
        .with_provider(kind.name())
        .with_status(status)
        .with_retry_after(retry_after)
        .with_rate_limit(*outcome.rate_limit());
    if let Some(code) = code {
        err = err.with_code(code);
    }
    err
}

/// The error for an error event inside a 200 stream. Before the first content chunk it keeps
/// its own kind (retry and fallback handle it); after, it is `StreamInterrupted`.
pub(crate) fn from_stream_event(
    kind: ProviderKind,
    json: &Value,
    delivered: bool,
    secrets: &[&str],
) -> Option<LlmError> {
    let body = ErrorBody::parse(json)?;
    let found = body_kind(kind, None, &body).unwrap_or(ErrorKind::ServerError);
    let message = body
        .message
        .clone()
        .unwrap_or_else(|| "the provider reported an error during streaming".to_owned());
    let code = body.code.clone().or_else(|| body.kind.clone());
    let (error_kind, message) = if delivered {
        (
            ErrorKind::StreamInterrupted,
            format!(
                "stream failed after output began: {} ({message})",
                found.as_str()
            ),
        )
    } else {
        (found, message)
    };
    let mut err = LlmError::new(error_kind, scrub(&message, secrets))
        .with_provider(kind.name())
        .with_retry_after(body.retry_delay);
    if let Some(code) = code {
        err = err.with_code(code);
    }
    Some(err)
}

/// The shortest piece of a key that is masked wherever it appears in upstream text.
const MIN_FRAGMENT: usize = 8;

/// `text` with every run of at least [`MIN_FRAGMENT`] bytes that also stands in one of
/// `keys` replaced by `[redacted]`: an upstream echoing a key's prefix, middle or reversal.
fn mask_fragments(text: &str, keys: &[&[u8]]) -> String {
    let bytes = text.as_bytes();
    let in_a_key = |piece: &[u8]| {
        keys.iter()
            .any(|key| key.windows(piece.len()).any(|w| w == piece))
    };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let mut copied = 0;
    while i + MIN_FRAGMENT <= bytes.len() {
        if !text.is_char_boundary(i) || !in_a_key(&bytes[i..i + MIN_FRAGMENT]) {
            i += 1;
            continue;
        }
        let mut end = i + MIN_FRAGMENT;
        while end < bytes.len() && in_a_key(&bytes[i..=end]) {
            end += 1;
        }
        if !text.is_char_boundary(end) {
            i += 1;
            continue;
        }
        out.push_str(&text[copied..i]);
        out.push_str("[redacted]");
        copied = end;
        i = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Keeps provider messages short and free of anything that looks like a key: the keys of
/// this provider and any piece of one (8 characters or more, reversed too), and `sk-…`-style
/// tokens some providers echo back masked.
pub(crate) fn scrub(message: &str, secrets: &[&str]) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    for (i, word) in message.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let looks_like_key = word.starts_with("sk-") || word.starts_with("AIza");
        if looks_like_key {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(*secret) {
            out = out.replace(*secret, "[redacted]");
        }
    }
    for secret in secrets.iter().filter(|s| s.len() >= MIN_FRAGMENT) {
        let reversed: String = secret.chars().rev().collect();
        out = mask_fragments(&out, &[secret.as_bytes(), reversed.as_bytes()]);
    }
    if out.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A transport failure (connect, timeout, broken body), without the URL: reqwest's errors
/// print the URL, and a URL may carry a key (`?key=`).
pub(crate) fn from_transport(kind: ProviderKind, err: reqwest::Error) -> LlmError {
    let err = err.without_url();
    // The core's transport classifier (timeouts vs. connection and body failures).
    let error_kind = llm_core::classify::classify_error_chain(&err)
        .kind()
        .filter(|k| *k != ErrorKind::Other)
        .unwrap_or(ErrorKind::Network);
    let message = error_chain_text(&err);
    LlmError::new(error_kind, message)
        .with_provider(kind.name())
        .with_source(err)
}

fn error_chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_a_key_are_masked_wherever_they_stand() {
        let key = "sk-proj-Zq8xVt3LmN5pR7sK2wY9";
        let reversed: String = key.chars().rev().collect();
        for (text, gone) in [
            (format!("bad key {} here", &key[3..15]), &key[3..15]),
            (format!("key={}!", &key[10..]), &key[10..]),
            (format!("reversed: {reversed}"), &reversed[..]),
            (format!("glued{}glued", &key[8..20]), &key[8..20]),
        ] {
            let out = scrub(&text, &[key]);
            assert!(!out.contains(gone), "{out}");
            assert!(out.contains("[redacted]"), "{out}");
        }
        // Short coincidences and ordinary text stay.
        assert_eq!(scrub("proj ok 2wY9", &[key]), "proj ok 2wY9");
        assert_eq!(scrub("Ünïcode ✓ text", &[key]), "Ünïcode ✓ text");
    }
}
