//! [`ProviderConfig`] (serde, for TOML/YAML/env-driven services) and [`ProviderRegistry`]
//! (providers by name: a gateway's `provider` parameter).

use std::collections::BTreeMap;
use std::fmt;

use llm_core::ConfigError;

use crate::inner::Timeouts;
use crate::kind::ProviderKind;
use crate::provider::Provider;

/// One provider's configuration, as a service loads it.
///
/// The key comes from an environment variable (`api_key_env`, default the kind's usual one:
/// `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, …); `api_key` inline is accepted for tests but never
/// printed.
///
/// ```
/// use llm_providers::{ProviderConfig, ProviderKind};
///
/// let config: ProviderConfig = serde_json::from_str(r#"{
///     "kind": "anthropic",
///     "base_url": "http://127.0.0.1:8089",
///     "timeouts": {"first_token": "20s", "idle": "10s"}
/// }"#).unwrap();
/// let vars = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| "sk-ant-test".to_owned());
/// let provider = config.build_with(vars).unwrap();
/// assert_eq!(provider.kind(), ProviderKind::Anthropic);
///
/// let err = config.build_with(|_| None).unwrap_err();
/// assert_eq!(err.field(), "ANTHROPIC_API_KEY");
/// ```
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// The wire format (`openai`, `azure`, `openrouter`, `anthropic`, `gemini`, `ollama`,
    /// `openai_compatible`).
    pub kind: Option<ProviderKind>,
    /// The endpoint; the kind's public one when absent (required for Azure and
    /// OpenAI-compatible servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The variable holding the key (default: the kind's usual variable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The key itself (prefer `api_key_env`); never printed or serialized.
    #[serde(default, skip_serializing)]
    pub api_key: Option<String>,
    /// Connect, first-token, idle and total timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Azure's `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// OpenRouter's `HTTP-Referer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referer: Option<String>,
    /// OpenRouter's `X-Title`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Extra headers on every request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The largest non-streamed answer read (default 32 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<usize>,
    /// The largest error body read (default 64 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_bytes: Option<usize>,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key_env", &self.api_key_env)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

impl ProviderConfig {
    /// A configuration for `kind` with every default.
    pub fn new(kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            kind: Some(kind),
            ..ProviderConfig::default()
        }
    }

    /// Builds the provider, reading variables through `lookup`.
    pub fn build_with(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Provider, ConfigError> {
        let kind = self.kind.ok_or_else(|| {
            ConfigError::new("kind", "is missing: name the provider's wire format")
        })?;
        let mut builder = Provider::builder(kind).timeouts(self.timeouts);
        if let Some(url) = &self.base_url {
            builder = builder.base_url(url.clone());
        }
        if let Some(key) = &self.api_key {
            builder = builder.api_key(key.clone());
        } else if let Some(variable) = &self.api_key_env {
            match lookup(variable).filter(|v| !v.trim().is_empty()) {
                Some(key) => builder = builder.api_key(key),
                None => {
                    return Err(ConfigError::new(
                        variable.clone(),
                        format!("is not set: {kind} needs an API key"),
                    ));
                }
            }
        }
        if let Some(version) = &self.api_version {
            builder = builder.api_version(version.clone());
        }
        if let Some(referer) = &self.referer {
            builder = builder.referer(referer.clone());
        }
        if let Some(title) = &self.title {
            builder = builder.title(title.clone());
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        if let Some(bytes) = self.max_response_bytes {
            builder = builder.max_response_bytes(bytes);
        }
        if let Some(bytes) = self.max_error_bytes {
            builder = builder.max_error_bytes(bytes);
        }
        builder.env_with(lookup).build()
    }

    /// Builds the provider from the process environment.
    pub fn build(&self) -> Result<Provider, ConfigError> {
        self.build_with(|name| std::env::var(name).ok())
    }
}

/// Providers by name, in the order they were added: what a gateway's `provider` parameter
/// picks from.
///
/// ```
/// use llm_providers::{ProviderConfig, ProviderKind, ProviderRegistry};
///
/// let vars = |name: &str| name.ends_with("_API_KEY").then(|| format!("key-for-{name}"));
/// let registry = ProviderRegistry::from_configs(
///     [
///         ("openai", ProviderConfig::new(ProviderKind::OpenAi)),
///         ("claude", ProviderConfig::new(ProviderKind::Anthropic)),
///     ],
///     vars,
/// )
/// .unwrap();
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["openai", "claude"]);
/// assert_eq!(registry.get("claude").unwrap().kind(), ProviderKind::Anthropic);
/// assert_eq!(registry.first().unwrap().0, "openai");
/// assert!(registry.get("gemini").is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProviderRegistry {
    providers: Vec<(String, Provider)>,
}

impl ProviderRegistry {
    /// An empty registry.
    pub fn new() -> ProviderRegistry {
        ProviderRegistry::default()
    }

    /// Adds (or replaces) `provider` under `name`.
    pub fn insert(&mut self, name: impl Into<String>, provider: Provider) {
        let name = name.into();
        match self.providers.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = provider,
            None => self.providers.push((name, provider)),
        }
    }

    /// Builds every configured provider; the first error names the provider and field
    /// (`claude.ANTHROPIC_API_KEY`).
    pub fn from_configs<N: Into<String>>(
        configs: impl IntoIterator<Item = (N, ProviderConfig)>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ProviderRegistry, ConfigError> {
        let mut registry = ProviderRegistry::new();
        for (name, config) in configs {
            let name = name.into();
            let mut config = config;
            if config.kind.is_none() {
                // A provider named after its kind needs no `kind` field.
                config.kind = name.parse().ok();
            }
            let provider = config
                .build_with(&lookup)
                .map_err(|err| err.in_section(&name))?;
            let provider =
                if provider.name() == provider.kind().name() && name != provider.kind().name() {
                    // Errors and metadata say `claude`, not `anthropic`, when that is its name.
                    rename(provider, &name)
                } else {
                    provider
                };
            registry.insert(name, provider);
        }
        Ok(registry)
    }

    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p)
    }

    /// The first provider added (a gateway's default).
    pub fn first(&self) -> Option<(&str, &Provider)> {
        self.providers.first().map(|(n, p)| (n.as_str(), p))
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|(n, _)| n.as_str())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.providers.len()
    }
}

fn rename(provider: Provider, name: &str) -> Provider {
    provider.renamed(name)
}
