//! What the tests against the test kit's mock provider share.

use llm_providers::{Provider, ProviderKind};

/// A provider of `kind` pointed at the mock at `base` as that kind's real base URL reads
/// (OpenAI's with `/v1`, Gemini's with `/v1beta`, …), with `key` (Ollama takes none).
pub(crate) fn provider(base: &str, kind: ProviderKind, key: &str) -> Provider {
    let url = match kind {
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => format!("{base}/v1"),
        ProviderKind::OpenRouter => format!("{base}/api/v1"),
        ProviderKind::Gemini => format!("{base}/v1beta"),
        _ => base.to_owned(),
    };
    let mut builder = Provider::builder(kind).base_url(url);
    if kind != ProviderKind::Ollama {
        builder = builder.api_key(key);
    }
    builder.build().unwrap()
}
