//! [`ProviderKind`]: which wire format a provider speaks, and what each kind needs.

use std::fmt;

use llm_core::ConfigError;

/// Which wire format a provider speaks.
///
/// ```
/// use llm_providers::ProviderKind;
///
/// assert_eq!("anthropic".parse::<ProviderKind>().unwrap(), ProviderKind::Anthropic);
/// assert_eq!(ProviderKind::Gemini.key_variable(), Some("GEMINI_API_KEY"));
/// assert!("watson".parse::<ProviderKind>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProviderKind {
    /// OpenAI Chat Completions.
    #[serde(rename = "openai")]
    OpenAi,
    /// Azure OpenAI deployments (`api-key`, `api-version`).
    Azure,
    /// OpenRouter.
    #[serde(rename = "openrouter")]
    OpenRouter,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini `generateContent`.
    Gemini,
    /// Ollama's native `/api/chat`.
    Ollama,
    /// Any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, Groq, Together, Ollama's `/v1`.
    #[serde(rename = "openai_compatible")]
    OpenAiCompatible,
}

impl ProviderKind {
    /// Every kind.
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::OpenAi,
        ProviderKind::Azure,
        ProviderKind::OpenRouter,
        ProviderKind::Anthropic,
        ProviderKind::Gemini,
        ProviderKind::Ollama,
        ProviderKind::OpenAiCompatible,
    ];

    /// The kind's name (`openai`, `azure`, `openrouter`, `anthropic`, `gemini`, `ollama`,
    /// `openai_compatible`).
    pub const fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Azure => "azure",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Ollama => "ollama",
            ProviderKind::OpenAiCompatible => "openai_compatible",
        }
    }

    /// The provider's `gen_ai.provider.name` in OpenTelemetry's GenAI semantic conventions
    /// (`openai`, `azure.ai.openai`, `anthropic`, `gcp.gemini`; the conventions list no value
    /// for OpenRouter and Ollama, which keep their names; an OpenAI-compatible server speaks
    /// OpenAI's API and is reported as `openai`).
    ///
    /// ```
    /// use llm_providers::ProviderKind;
    ///
    /// assert_eq!(ProviderKind::Gemini.otel_name(), "gcp.gemini");
    /// ```
    pub const fn otel_name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => "openai",
            ProviderKind::Azure => "azure.ai.openai",
            ProviderKind::OpenRouter => "openrouter",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gcp.gemini",
            ProviderKind::Ollama => "ollama",
        }
    }

    /// The environment variable holding the key (`None`: no key needed).
    pub const fn key_variable(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("OPENAI_API_KEY"),
            ProviderKind::Azure => Some("AZURE_OPENAI_API_KEY"),
            ProviderKind::OpenRouter => Some("OPENROUTER_API_KEY"),
            ProviderKind::Anthropic => Some("ANTHROPIC_API_KEY"),
            ProviderKind::Gemini => Some("GEMINI_API_KEY"),
            ProviderKind::Ollama | ProviderKind::OpenAiCompatible => None,
        }
    }

    /// The environment variable that overrides the base URL.
    pub const fn base_url_variable(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("OPENAI_BASE_URL"),
            ProviderKind::Azure => Some("AZURE_OPENAI_ENDPOINT"),
            ProviderKind::OpenRouter => Some("OPENROUTER_BASE_URL"),
            ProviderKind::Anthropic => Some("ANTHROPIC_BASE_URL"),
            ProviderKind::Gemini => Some("GEMINI_BASE_URL"),
            ProviderKind::Ollama => Some("OLLAMA_HOST"),
            ProviderKind::OpenAiCompatible => None,
        }
    }

    /// The public endpoint (`None`: it must be configured — Azure's resource endpoint, an
    /// OpenAI-compatible server's URL).
    pub const fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::OpenRouter => Some("https://openrouter.ai/api/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com/v1beta"),
            ProviderKind::Ollama => Some("http://localhost:11434"),
            ProviderKind::Azure | ProviderKind::OpenAiCompatible => None,
        }
    }

    pub(crate) fn streams_ndjson(self) -> bool {
        self == ProviderKind::Ollama
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let normalized = s.trim().to_ascii_lowercase().replace('-', "_");
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.name() == normalized)
            .or(match normalized.as_str() {
                "azure_openai" => Some(ProviderKind::Azure),
                "compatible" | "vllm" | "llamacpp" | "lmstudio" | "groq" | "together" => {
                    Some(ProviderKind::OpenAiCompatible)
                }
                "google" => Some(ProviderKind::Gemini),
                "claude" => Some(ProviderKind::Anthropic),
                _ => None,
            })
            .ok_or_else(|| {
                ConfigError::new(
                    "kind",
                    format!(
                        "must be one of openai, azure, openrouter, anthropic, gemini, ollama, openai_compatible (got {s:?})"
                    ),
                )
            })
    }
}

/// A provider call's operation, as OpenTelemetry's GenAI conventions name it
/// (`gen_ai.operation.name`), for the calls' spans and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// A chat completion, whole or streamed.
    Chat,
    /// Embeddings.
    Embeddings,
}

impl Operation {
    /// The convention's name.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::Embeddings => "embeddings",
        }
    }
}
