//! [`Prefill`]: which targets take an assistant prefill when continuing an answer.

use serde::{Deserialize, Serialize};

use crate::kind::ProviderKind;

/// Whether a target accepts an assistant prefill (a conversation ending with the start of
/// the assistant's answer, which it continues).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Prefill {
    /// Decide by provider and model family ([`accepts_prefill`]).
    #[default]
    Auto,
    /// It does.
    Supported,
    /// It does not: continue with an instruction instead.
    Unsupported,
}

impl Prefill {
    /// Whether a target of `kind` serving `model` takes a prefill under this setting.
    pub fn applies(self, kind: ProviderKind, model: &str) -> bool {
        match self {
            Prefill::Supported => true,
            Prefill::Unsupported => false,
            Prefill::Auto => accepts_prefill(kind, model),
        }
    }
}

/// The defaults behind [`Prefill::Auto`]: Anthropic's Claude models before 4.6 (4.6 and
/// later answer a prefill with a 400), the same models through OpenRouter, and Ollama,
/// which continues a trailing assistant message. OpenAI-style chat APIs and Gemini treat a
/// trailing assistant message as history, not as the start of the answer: no.
///
/// ```
/// use llm_providers::ProviderKind;
/// use llm_providers::recovery::accepts_prefill;
///
/// assert!(accepts_prefill(ProviderKind::Anthropic, "claude-3-5-haiku-latest"));
/// assert!(accepts_prefill(ProviderKind::Anthropic, "claude-sonnet-4-5-20250929"));
/// assert!(!accepts_prefill(ProviderKind::Anthropic, "claude-opus-4-6"));
/// assert!(!accepts_prefill(ProviderKind::Anthropic, "claude-sonnet-5"));
/// assert!(accepts_prefill(ProviderKind::OpenRouter, "anthropic/claude-3.7-sonnet"));
/// assert!(accepts_prefill(ProviderKind::Ollama, "llama3.2"));
/// assert!(!accepts_prefill(ProviderKind::OpenAi, "gpt-4o"));
/// ```
pub fn accepts_prefill(kind: ProviderKind, model: &str) -> bool {
    match kind {
        ProviderKind::Anthropic => claude_accepts_prefill(model),
        ProviderKind::OpenRouter => model
            .strip_prefix("anthropic/")
            .is_some_and(claude_accepts_prefill),
        ProviderKind::Ollama => true,
        _ => false,
    }
}

/// Claude's version from its name (`claude-3-5-haiku-…`, `claude-sonnet-4-5`,
/// `claude-opus-4-20250514`, `claude-3.7-sonnet`): before 4.6 a prefill is accepted; an
/// unrecognised name is treated as new (no prefill).
pub(crate) fn claude_accepts_prefill(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("claude-") else {
        return false;
    };
    // Version numbers are the short numeric parts; an 8-digit date is not one.
    let numbers: Vec<u32> = rest
        .split(['-', '.', '@'])
        .filter(|part| !part.is_empty() && part.len() <= 2)
        .filter_map(|part| part.parse().ok())
        .take(2)
        .collect();
    match numbers.as_slice() {
        [major, minor, ..] => (*major, *minor) < (4, 6),
        [major] => *major <= 4,
        [] => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_versions_decide_prefill() {
        for (model, ok) in [
            ("claude-3-5-haiku-latest", true),
            ("claude-3-7-sonnet-20250219", true),
            ("claude-sonnet-4-20250514", true),
            ("claude-opus-4-1-20250805", true),
            ("claude-haiku-4-5", true),
            ("claude-opus-4-6", false),
            ("claude-sonnet-4-7", false),
            ("claude-opus-5", false),
            ("claude-next", false),
        ] {
            assert_eq!(claude_accepts_prefill(model), ok, "{model}");
        }
    }
}
