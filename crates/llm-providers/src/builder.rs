//! [`ProviderBuilder`]: how a [`Provider`] is made, and the constructors that start one.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use llm_core::ConfigError;

use crate::inner::{ApiKey, DEFAULT_MAX_ERROR_BYTES, DEFAULT_MAX_RESPONSE_BYTES, Inner, Timeouts};
use crate::kind::ProviderKind;
use crate::provider::Provider;

impl Provider {
    /// A builder for a provider of `kind`.
    pub fn builder(kind: ProviderKind) -> ProviderBuilder {
        ProviderBuilder::new(kind)
    }

    /// OpenAI from `OPENAI_API_KEY` (and `OPENAI_BASE_URL`).
    pub fn openai() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::OpenAi).env()
    }

    /// Anthropic from `ANTHROPIC_API_KEY`.
    pub fn anthropic() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::Anthropic).env()
    }

    /// Gemini from `GEMINI_API_KEY` (or `GOOGLE_API_KEY`).
    pub fn gemini() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::Gemini).env()
    }

    /// OpenRouter from `OPENROUTER_API_KEY`.
    pub fn openrouter() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::OpenRouter).env()
    }

    /// Azure OpenAI from `AZURE_OPENAI_API_KEY` and `AZURE_OPENAI_ENDPOINT`.
    pub fn azure() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::Azure).env()
    }

    /// Ollama at `OLLAMA_HOST` (default `http://localhost:11434`).
    pub fn ollama() -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::Ollama).env()
    }

    /// An OpenAI-compatible server at `base_url` (vLLM, llama.cpp, LM Studio, Groq, …).
    pub fn openai_compatible(base_url: impl Into<String>) -> ProviderBuilder {
        ProviderBuilder::new(ProviderKind::OpenAiCompatible).base_url(base_url)
    }
}

/// Builds a [`Provider`]. Every field is checked by [`build`](Self::build), which names the
/// one at fault.
///
/// ```
/// use llm_providers::{Provider, ProviderKind};
///
/// let openai = Provider::builder(ProviderKind::OpenAi)
///     .api_key("sk-test")
///     .build()
///     .unwrap();
/// assert_eq!(openai.kind(), ProviderKind::OpenAi);
/// assert!(!format!("{openai:?}").contains("sk-test"));
///
/// let err = Provider::builder(ProviderKind::Anthropic).build().unwrap_err();
/// assert_eq!(err.field(), "ANTHROPIC_API_KEY");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ProviderBuilder {
    kind: ProviderKind,
    name: Option<Arc<str>>,
    base_url: Option<String>,
    // The variable `base_url` was read from, when it came from the environment: its errors
    // name it; a base URL set in code or a file is `base_url`.
    base_url_variable: Option<&'static str>,
    max_response_bytes: usize,
    max_error_bytes: usize,
    api_key: Option<ApiKey>,
    timeouts: Timeouts,
    api_version: Option<String>,
    referer: Option<String>,
    title: Option<String>,
    headers: Vec<(String, String)>,
    client: Option<reqwest::Client>,
}

impl ProviderBuilder {
    fn new(kind: ProviderKind) -> Self {
        ProviderBuilder {
            kind,
            name: None,
            base_url: None,
            base_url_variable: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_error_bytes: DEFAULT_MAX_ERROR_BYTES,
            api_key: None,
            timeouts: Timeouts::default(),
            api_version: None,
            referer: None,
            title: None,
            headers: Vec::new(),
            client: None,
        }
    }

    /// The name errors, metadata and traces use (default: the kind's name; e.g. `groq` for
    /// an OpenAI-compatible server).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Overrides the endpoint (`https://api.openai.com/v1`, a mock server, a proxy). Azure:
    /// the resource endpoint `https://{resource}.openai.azure.com`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The API key (sent in the provider's own header; never printed).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        let key: String = key.into();
        self.api_key = Some(ApiKey(Arc::from(key)));
        self
    }

    /// The largest answer read whole (a non-streamed response body). Default 32 MiB; a
    /// larger one ends the call with an error of kind `Other` (code `response_too_large`),
    /// which is not retried on the same target, without reading further.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The largest error body read (a non-success response's body). Default 64 KiB; the rest
    /// of a longer one is not read.
    pub fn max_error_bytes(mut self, bytes: usize) -> Self {
        self.max_error_bytes = bytes;
        self
    }

    /// All timeouts at once.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.connect = timeout;
        self
    }

    /// Time to the first content chunk of a stream.
    pub fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.first_token = timeout;
        self
    }

    /// Silence allowed between two reads of a stream.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.idle = timeout;
        self
    }

    /// The whole call.
    pub fn total_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts.total = timeout;
        self
    }

    /// Azure's `api-version` (default `2024-10-21`); a request's `deployment|version` model
    /// overrides it per call.
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = Some(version.into());
        self
    }

    /// OpenRouter's `HTTP-Referer` attribution header.
    pub fn referer(mut self, url: impl Into<String>) -> Self {
        self.referer = Some(url.into());
        self
    }

    /// OpenRouter's `X-Title` attribution header.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// An extra header on every request (`OpenAI-Organization`, `anthropic-beta`, …).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Uses `client` (your TLS, proxy and pool settings) instead of building one; the
    /// connect timeout is then the client's.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.client = Some(client);
        self
    }

    /// Fills what is unset from the environment through `lookup` (the kind's key variable,
    /// its base-URL variable, `OPENAI_API_VERSION` for Azure); an absent key is an error at
    /// [`build`](Self::build), naming the variable.
    pub fn env_with(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if self.api_key.is_none() {
            let value = match self.kind {
                ProviderKind::Gemini => get("GEMINI_API_KEY").or_else(|| get("GOOGLE_API_KEY")),
                kind => kind.key_variable().and_then(get),
            };
            if let Some(key) = value {
                self = self.api_key(key);
            }
        }
        if self.base_url.is_none() {
            if let Some(variable) = self.kind.base_url_variable() {
                if let Some(url) = get(variable) {
                    self.base_url = Some(url);
                    self.base_url_variable = Some(variable);
                }
            }
        }
        if self.kind == ProviderKind::Azure && self.api_version.is_none() {
            self.api_version =
                get("OPENAI_API_VERSION").or_else(|| get("AZURE_OPENAI_API_VERSION"));
        }
        self
    }

    /// Fills what is unset from the process environment (see [`env_with`](Self::env_with)).
    pub fn env(self) -> Self {
        self.env_with(|name| std::env::var(name).ok())
    }

    /// Checks the configuration and builds the provider.
    pub fn build(self) -> Result<Provider, ConfigError> {
        let kind = self.kind;
        self.timeouts.validate()?;
        if self.max_response_bytes == 0 {
            return Err(ConfigError::new("max_response_bytes", "must be at least 1"));
        }
        if self.max_error_bytes == 0 {
            return Err(ConfigError::new("max_error_bytes", "must be at least 1"));
        }
        let base_url = match self
            .base_url
            .or_else(|| kind.default_base_url().map(str::to_owned))
        {
            Some(url) => {
                normalize_base_url(kind, &url, self.base_url_variable.unwrap_or("base_url"))?
            }
            None => {
                let field = kind.base_url_variable().unwrap_or("base_url");
                return Err(ConfigError::new(
                    field,
                    format!("is required for {kind}: set it or call base_url(…)"),
                ));
            }
        };
        if self.api_key.is_none() {
            if let Some(variable) = kind.key_variable() {
                return Err(ConfigError::new(
                    variable,
                    format!(
                        "is not set: {kind} needs an API key (set {variable} or call api_key(…))"
                    ),
                ));
            }
        }
        if let Some(key) = &self.api_key {
            if HeaderValue::from_str(&key.0).is_err() || key.0.trim().is_empty() {
                return Err(ConfigError::new(
                    kind.key_variable().unwrap_or("api_key"),
                    "is not a valid header value (empty, or control characters)",
                ));
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new("headers", format!("{name:?} is not a header name"))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                ConfigError::new(
                    "headers",
                    format!("the value of {name} is not a header value"),
                )
            })?;
            headers.append(name, value);
        }
        if kind == ProviderKind::OpenRouter {
            if let Some(referer) = &self.referer {
                let value = HeaderValue::from_str(referer)
                    .map_err(|_| ConfigError::new("referer", "is not a header value"))?;
                headers.insert("http-referer", value);
            }
            if let Some(title) = &self.title {
                let value = HeaderValue::from_str(title)
                    .map_err(|_| ConfigError::new("title", "is not a header value"))?;
                headers.insert("x-title", value);
            }
        }
        // Everything a call sends that does not change per call is made once, here: the
        // fixed headers (the key marked sensitive, left out of Debug output) and, where the
        // model is not part of it, the parsed endpoint URL.
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(key) = &self.api_key {
            let (name, value) = match kind {
                ProviderKind::Azure => ("api-key", key.0.to_string()),
                ProviderKind::Anthropic => ("x-api-key", key.0.to_string()),
                ProviderKind::Gemini => ("x-goog-api-key", key.0.to_string()),
                _ => ("authorization", format!("Bearer {}", key.0)),
            };
            // Checked above.
            if let Ok(mut value) = HeaderValue::from_str(&value) {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        if kind == ProviderKind::Anthropic {
            headers.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        }
        let endpoint = match kind {
            ProviderKind::OpenAi | ProviderKind::OpenRouter | ProviderKind::OpenAiCompatible => {
                Some(format!("{base_url}/chat/completions"))
            }
            ProviderKind::Anthropic => Some(format!("{base_url}/v1/messages")),
            ProviderKind::Ollama => Some(format!("{base_url}/api/chat")),
            ProviderKind::Azure | ProviderKind::Gemini => None,
        };
        let parse = |url: &str| {
            reqwest::Url::parse(url)
                .map_err(|err| ConfigError::new("base_url", format!("{url:?}: {err}")))
        };
        let endpoint = endpoint.as_deref().map(parse).transpose()?;
        let base = parse(&base_url)?;
        let client = match self.client {
            Some(client) => client,
            None => reqwest::Client::builder()
                .connect_timeout(self.timeouts.connect)
                .build()
                .map_err(|err| {
                    ConfigError::new("client", format!("cannot be built: {}", err.without_url()))
                })?,
        };
        Ok(Provider {
            inner: Arc::new(Inner {
                kind,
                name: self.name.unwrap_or_else(|| Arc::from(kind.name())),
                base_url,
                base,
                endpoint,
                api_key: self.api_key,
                timeouts: self.timeouts,
                max_response_bytes: self.max_response_bytes,
                max_error_bytes: self.max_error_bytes,
                api_version: self.api_version.unwrap_or_else(|| "2024-10-21".to_owned()),
                headers,
                client,
                meters: Default::default(),
            }),
        })
    }
}

fn normalize_base_url(
    kind: ProviderKind,
    url: &str,
    field: &'static str,
) -> Result<String, ConfigError> {
    let mut url = url.trim().trim_end_matches('/').to_owned();
    // NOTE: a query or fragment would ride along on every call, and a path built after it
    // would land in the query: refused, so that a base URL is only scheme, host and path.
    if url.contains(['?', '#']) {
        return Err(ConfigError::new(
            field,
            format!("must not carry a query or fragment (got {url:?})"),
        ));
    }
    // OLLAMA_HOST is often `127.0.0.1:11434`, without a scheme.
    if kind == ProviderKind::Ollama && !url.contains("://") {
        url = format!("http://{url}");
    }
    let parsed: http::Uri = url
        .parse()
        .map_err(|_| ConfigError::new(field, format!("is not a URL: {url:?}")))?;
    match parsed.scheme_str() {
        Some("http" | "https") if parsed.host().is_some() => Ok(url),
        _ => Err(ConfigError::new(
            field,
            format!("must be an http:// or https:// URL with a host (got {url:?})"),
        )),
    }
}
