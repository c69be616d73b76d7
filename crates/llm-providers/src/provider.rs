//! [`Provider`] (a `Service<ChatRequest>` answering [`ChatResponse`]s) and
//! [`StreamingProvider`] (answering [`ChatStream`]s), built by [`ProviderBuilder`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use llm_core::{ConfigError, ErrorKind, LlmError};
use tower_service::Service;

use crate::errors;
use crate::stream::ChatStream;
use crate::types::{ChatRequest, ChatResponse};
use crate::wire;

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

    fn streams_ndjson(self) -> bool {
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

/// How long a call may take, per phase. Each expired timeout is an [`ErrorKind::Timeout`]
/// (after the first chunk of a stream: `StreamInterrupted`, in band).
///
/// While fallback targets remain after this one (a fallback layer says so in the request's
/// extensions) and the request has a deadline, an attempt waits for its first byte or first
/// token at most a third of the time left, so that a silent target leaves the fallbacks two
/// thirds of the deadline.
///
/// ```
/// use std::time::Duration;
/// use llm_providers::Timeouts;
///
/// let t = Timeouts::default();
/// assert_eq!(t.connect, Duration::from_secs(5));
/// assert_eq!(t.first_token, Duration::from_secs(60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Establishing the connection (TCP and TLS). Default 5 s (openai-python's).
    #[serde(with = "llm_core::config::duration")]
    pub connect: Duration,
    /// From sending the request to the first content chunk of a stream. Default 60 s.
    #[serde(with = "llm_core::config::duration")]
    pub first_token: Duration,
    /// From sending a non-streaming request to the first byte of its response (its status
    /// line: most providers send it when the whole answer is ready). Default 5 min; a total
    /// timeout shorter than it shortens it.
    #[serde(with = "llm_core::config::duration")]
    pub first_byte: Duration,
    /// Between two reads of a body, streamed or not. Default 30 s.
    #[serde(with = "llm_core::config::duration")]
    pub idle: Duration,
    /// The whole call, stream included. Default 10 min (the SDKs').
    #[serde(with = "llm_core::config::duration")]
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            first_token: Duration::from_secs(60),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(30),
            total: Duration::from_secs(600),
        }
    }
}

impl Timeouts {
    /// Checks that every timeout is positive and none exceeds the total.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("connect", self.connect),
            ("first_token", self.first_token),
            ("first_byte", self.first_byte),
            ("idle", self.idle),
            ("total", self.total),
        ] {
            if value.is_zero() {
                return Err(
                    ConfigError::new(field, "must be longer than zero").in_section("timeouts")
                );
            }
        }
        if self.first_token > self.total {
            return Err(ConfigError::new(
                "first_token",
                "must not be longer than the total timeout",
            )
            .in_section("timeouts"));
        }
        Ok(())
    }
}

/// An API key: kept out of `Debug`, `Display`, logs and errors.
#[derive(Clone)]
pub(crate) struct ApiKey(Arc<str>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
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

#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub(crate) kind: ProviderKind,
    pub(crate) name: Arc<str>,
    base_url: String,
    // The base URL parsed, for kinds whose URL names the model (Azure, Gemini).
    base: reqwest::Url,
    // The parsed URL every call goes to, for kinds whose URL does not name the model.
    endpoint: Option<reqwest::Url>,
    api_key: Option<ApiKey>,
    pub(crate) timeouts: Timeouts,
    max_response_bytes: usize,
    pub(crate) max_error_bytes: usize,
    api_version: String,
    headers: HeaderMap,
    client: reqwest::Client,
}

impl Inner {
    pub(crate) fn secrets(&self) -> Vec<&str> {
        self.api_key.iter().map(|k| &*k.0).collect()
    }

    /// The URL and headers of a call.
    pub(crate) fn request(
        &self,
        req: &ChatRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, LlmError> {
        let model = req.model();
        // NOTE: `to_vec`, not `to_string`: `Display` goes through a formatter, twice as slow.
        let body = wire::request_body(self.kind, req, stream).map_err(|err| named(err, self))?;
        let body =
            || serde_json::to_vec(&body).expect("a JSON value with string keys always serializes");
        let url = match (&self.endpoint, self.kind) {
            (Some(endpoint), _) => {
                if model.is_empty() {
                    return Err(self.bad_name("model", model));
                }
                return Ok(self
                    .client
                    .post(endpoint.clone())
                    .headers(self.headers.clone())
                    .body(body()));
            }
            (None, ProviderKind::Azure) => {
                // `deployment|api-version` overrides the configured version for one call.
                let (deployment, version) = model
                    .split_once('|')
                    .unwrap_or((model, self.api_version.as_str()));
                if !is_path_name(deployment) {
                    return Err(self.bad_name("deployment", deployment));
                }
                if !is_path_name(version) {
                    return Err(self.bad_name("api-version", version));
                }
                let mut url = self.url_with_path(&[
                    "openai",
                    "deployments",
                    deployment,
                    "chat",
                    "completions",
                ]);
                url.query_pairs_mut().append_pair("api-version", version);
                url
            }
            (None, _) => {
                if !is_path_name(model) {
                    return Err(self.bad_name("model", model));
                }
                let (method, query) = if stream {
                    ("streamGenerateContent", Some(("alt", "sse")))
                } else {
                    ("generateContent", None)
                };
                let mut url = self.url_with_path(&["models", &format!("{model}:{method}")]);
                if let Some((key, value)) = query {
                    url.query_pairs_mut().append_pair(key, value);
                }
                url
            }
        };
        Ok(self
            .client
            .post(url)
            .headers(self.headers.clone())
            .body(body()))
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn url_with_path(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The error for a name that cannot go into this provider's URL: refused before any call.
    fn bad_name(&self, what: &str, name: &str) -> LlmError {
        LlmError::new(
            ErrorKind::InvalidRequest,
            format!(
                "{name:?} is not a {what} name {} can put in its URL: use letters, digits, `.`, `_` and `-` (at most {MAX_PATH_NAME} characters)",
                self.name
            ),
        )
        .with_code("invalid_model_name")
        .with_provider(self.name.to_string())
    }
}

/// The default of `ProviderBuilder::max_response_bytes`.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;
/// The default of `ProviderBuilder::max_error_bytes`.
pub(crate) const DEFAULT_MAX_ERROR_BYTES: usize = 64 << 10;

/// The longest model, deployment or version name that goes into a URL.
const MAX_PATH_NAME: usize = 256;

/// Whether `name` may go into a URL path as one segment: letters, digits, `.`, `_`, `-`, and
/// not `.` or `..` alone. Every real model, deployment and API version name fits.
fn is_path_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PATH_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A provider as a `Service<ChatRequest>` answering complete [`ChatResponse`]s.
///
/// Clones share the HTTP client and its connection pool. `poll_ready` is always ready: the
/// provider holds no capacity of its own (put a rate limiter in front of it).
///
/// ```no_run
/// use llm_providers::{ChatRequest, Provider, ProviderKind};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), llm_core::LlmError> {
/// let openai = Provider::builder(ProviderKind::OpenAi).env().build().unwrap();
/// let res = openai.oneshot(ChatRequest::new("gpt-4o-mini").user("Hi")).await?;
/// println!("{} ({:?})", res.text, res.usage);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Provider {
    pub(crate) inner: Arc<Inner>,
}

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

    /// The wire format.
    pub fn kind(&self) -> ProviderKind {
        self.inner.kind
    }

    /// The provider's name in errors and metadata.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The endpoint.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The timeouts.
    pub fn timeouts(&self) -> Timeouts {
        self.inner.timeouts
    }

    /// The same provider under another name (errors, metadata and traces use it).
    #[must_use]
    pub fn renamed(&self, name: &str) -> Provider {
        let mut inner = Inner::clone(&self.inner);
        inner.name = Arc::from(name);
        Provider {
            inner: Arc::new(inner),
        }
    }

    /// The same provider answering [`ChatStream`]s.
    pub fn streaming(&self) -> StreamingProvider {
        StreamingProvider {
            inner: self.inner.clone(),
        }
    }
}

/// The future of a provider call. Boxed: a provider call does a network round trip, which
/// dwarfs the allocation, and the box keeps the async body readable.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture<T> {
    inner: Pin<Box<dyn Future<Output = Result<T, LlmError>> + Send>>,
}

impl<T> fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = Result<T, LlmError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl Service<ChatRequest> for Provider {
    type Response = ChatResponse;
    type Error = LlmError;
    type Future = ResponseFuture<ChatResponse>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        let inner = self.inner.clone();
        ResponseFuture {
            inner: Box::pin(async move { complete(inner, req).await }),
        }
    }
}

async fn complete(inner: Arc<Inner>, req: ChatRequest) -> Result<ChatResponse, LlmError> {
    let kind = inner.kind;
    let total = effective_total(&inner, &req);
    tracing::debug!(
        gen_ai.system = %inner.name,
        gen_ai.request.model = req.model(),
        stream = false,
        "provider call"
    );
    let started = tokio::time::Instant::now();
    let first_byte = attempt_wait(inner.timeouts.first_byte, &req).min(total);
    let call = async {
        let request = inner.request(&req, false)?;
        let mut res = tokio::time::timeout_at(started + first_byte, request.send())
            .await
            .map_err(|_| {
                LlmError::new(
                    ErrorKind::Timeout,
                    format!("no response within {}", fmt_duration(first_byte)),
                )
                .with_provider(inner.name.to_string())
            })?
            .map_err(|err| errors::from_transport(kind, err))?;
        let status = res.status();
        // Taken, not cloned: reading the body needs none of them.
        let headers = std::mem::take(res.headers_mut());
        let cap = if status.is_success() {
            inner.max_response_bytes
        } else {
            inner.max_error_bytes
        };
        let body = read_body(&mut res, cap, &inner).await?;
        if !status.is_success() {
            let err = errors::from_status(kind, status, &headers, &body, &inner.secrets());
            return Err(named(err, &inner));
        }
        let mut response = wire::parse_response(kind, &inner.name, req.model(), &body)
            .map_err(|err| named(err, &inner))?;
        response.request_id = request_id(&headers);
        response.rate_limit =
            llm_core::RateLimitInfo::from_headers(&headers, std::time::SystemTime::now());
        Ok(response)
    };
    let result = match tokio::time::timeout(total, call).await {
        Ok(result) => result,
        Err(_) => Err(LlmError::new(
            ErrorKind::Timeout,
            format!("no complete response within {}", fmt_duration(total)),
        )
        .with_provider(inner.name.to_string())),
    };
    match &result {
        Ok(res) => tracing::debug!(
            gen_ai.system = %inner.name,
            gen_ai.response.model = %res.model,
            gen_ai.usage.input_tokens = res.usage.map(|u| u.input_tokens),
            gen_ai.usage.output_tokens = res.usage.map(|u| u.output_tokens),
            "provider answered"
        ),
        Err(err) => {
            tracing::debug!(gen_ai.system = %inner.name, error.kind = err.kind().as_str(), error = %err, "provider failed");
        }
    }
    result
}

/// Reads a whole body, each read within the idle timeout of the one before, at most `cap`
/// bytes: a success body over it is an error (`response_too_large`, read no further); an
/// error body over it is cut there (what was read classifies it).
pub(crate) async fn read_body(
    res: &mut reqwest::Response,
    cap: usize,
    inner: &Inner,
) -> Result<bytes::Bytes, LlmError> {
    let idle = inner.timeouts.idle;
    let is_error = !res.status().is_success();
    let too_large = || {
        LlmError::new(
            ErrorKind::Other,
            format!("the response body exceeds {cap} bytes"),
        )
        .with_code("response_too_large")
        .with_provider(inner.name.to_string())
    };
    // NOTE: a declared length over the cap is refused before a byte is read.
    if res.content_length().is_some_and(|len| len > cap as u64) && !is_error {
        return Err(too_large());
    }
    let mut first: Option<bytes::Bytes> = None;
    let mut rest: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    loop {
        let chunk = tokio::time::timeout(idle, res.chunk())
            .await
            .map_err(|_| {
                LlmError::new(
                    ErrorKind::Timeout,
                    format!("the body stalled for {}", fmt_duration(idle)),
                )
                .with_provider(inner.name.to_string())
            })?
            .map_err(|err| named(errors::from_transport(inner.kind, err), inner))?;
        let Some(mut chunk) = chunk else { break };
        if len + chunk.len() > cap {
            if !is_error {
                return Err(too_large());
            }
            chunk.truncate(cap - len);
        }
        len += chunk.len();
        // NOTE: most bodies arrive in one chunk: it is kept as it is, without a copy.
        match (&mut first, &mut rest) {
            (None, _) => first = Some(chunk),
            (Some(head), None) => {
                let mut buf = bytes::BytesMut::with_capacity(head.len() + chunk.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(&chunk);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&chunk),
        }
        if len >= cap {
            break;
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => bytes::Bytes::new(),
    })
}

/// How long an attempt may wait for its first byte or token: `configured`, or a third of the
/// time left to the request's deadline while fallback targets remain after this one.
fn attempt_wait(configured: Duration, req: &ChatRequest) -> Duration {
    use llm_core::RequestExtensions;
    match req.deadline() {
        Some(deadline) if req.remaining_targets() > 0 => configured.min(deadline.remaining() / 3),
        _ => configured,
    }
}

/// The request's deadline, when it is sooner than the total timeout.
fn effective_total(inner: &Inner, req: &ChatRequest) -> Duration {
    use llm_core::RequestExtensions;
    req.deadline().map_or(inner.timeouts.total, |d| {
        d.remaining().min(inner.timeouts.total)
    })
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Errors carry the provider's configured name (`groq`), not only its kind.
pub(crate) fn named(err: LlmError, inner: &Inner) -> LlmError {
    if inner.name.as_ref() == inner.kind.name() {
        err
    } else {
        err.with_provider(inner.name.to_string())
    }
}

pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    // Named once: looking a header up by `&str` parses the name on every response.
    static NAMES: [HeaderName; 5] = [
        HeaderName::from_static("x-request-id"),
        HeaderName::from_static("request-id"),
        HeaderName::from_static("apim-request-id"),
        HeaderName::from_static("x-generation-id"),
        HeaderName::from_static("x-goog-request-id"),
    ];
    NAMES
        .iter()
        .find_map(|name| headers.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A provider as a `Service<ChatRequest>` answering [`ChatStream`]s.
///
/// The call resolves when the first content chunk has arrived: a status error, an
/// error event or a first-token timeout before it is an ordinary `Err` that retry and
/// fallback handle. After it, failures are an in-band `Err(StreamInterrupted)` item and the
/// stream ends; a stream is complete only after its terminator.
///
/// ```no_run
/// use futures_util::StreamExt;
/// use llm_providers::{ChatRequest, Provider};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), llm_core::LlmError> {
/// let anthropic = Provider::anthropic().build().unwrap().streaming();
/// let mut stream = anthropic
///     .oneshot(ChatRequest::new("claude-sonnet-4-5").user("Hi").max_tokens(256))
///     .await?;
/// while let Some(chunk) = stream.next().await {
///     print!("{}", chunk?.delta);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct StreamingProvider {
    inner: Arc<Inner>,
}

impl StreamingProvider {
    /// The provider's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The wire format.
    pub fn kind(&self) -> ProviderKind {
        self.inner.kind
    }
}

impl Service<ChatRequest> for StreamingProvider {
    type Response = ChatStream;
    type Error = LlmError;
    type Future = ResponseFuture<ChatStream>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: ChatRequest) -> Self::Future {
        let inner = self.inner.clone();
        ResponseFuture {
            inner: Box::pin(async move { open_stream(inner, req).await }),
        }
    }
}

async fn open_stream(inner: Arc<Inner>, req: ChatRequest) -> Result<ChatStream, LlmError> {
    let kind = inner.kind;
    let started = tokio::time::Instant::now();
    let total = effective_total(&inner, &req);
    let first_token = attempt_wait(inner.timeouts.first_token, &req).min(total);
    tracing::debug!(
        gen_ai.system = %inner.name,
        gen_ai.request.model = req.model(),
        stream = true,
        "provider call"
    );
    let timeout_error = || {
        LlmError::new(
            ErrorKind::Timeout,
            format!("no first token within {}", fmt_duration(first_token)),
        )
        .with_provider(inner.name.to_string())
    };
    let request = inner.request(&req, true)?;
    let mut res = tokio::time::timeout_at(started + first_token, request.send())
        .await
        .map_err(|_| timeout_error())?
        .map_err(|err| named(errors::from_transport(kind, err), &inner))?;
    let status = res.status();
    // Taken, not cloned: reading the body needs none of them.
    let headers = std::mem::take(res.headers_mut());
    if !status.is_success() {
        let body = tokio::time::timeout_at(
            started + first_token,
            read_body(&mut res, inner.max_error_bytes, &inner),
        )
        .await
        .map_err(|_| timeout_error())??;
        let err = errors::from_status(kind, status, &headers, &body, &inner.secrets());
        return Err(named(err, &inner));
    }
    let mut stream = ChatStream::new(
        inner.clone(),
        req.model().to_owned(),
        &headers,
        Box::pin(res.bytes_stream()),
        kind.streams_ndjson(),
        started,
        first_token,
        total,
    );
    stream.wait_for_first_content().await?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Azure and a Gemini provider, built once (a client loads its root certificates).
    fn provider(kind: ProviderKind) -> &'static Provider {
        static PROVIDERS: std::sync::OnceLock<[Provider; 2]> = std::sync::OnceLock::new();
        let [azure, gemini] = PROVIDERS.get_or_init(|| {
            [ProviderKind::Azure, ProviderKind::Gemini].map(|kind| {
                Provider::builder(kind)
                    .api_key("k-test-0123456789")
                    .base_url("https://llm.example:8443/prefix")
                    .build()
                    .unwrap()
            })
        });
        if kind == ProviderKind::Azure {
            azure
        } else {
            gemini
        }
    }

    /// The URL a call for `model` would go to, or the error refusing it.
    fn url_for(kind: ProviderKind, model: &str, stream: bool) -> Result<reqwest::Url, LlmError> {
        let req = ChatRequest::new(model).user("hi");
        let built = provider(kind).inner.request(&req, stream)?.build().unwrap();
        Ok(built.url().clone())
    }

    #[test]
    fn names_that_would_steer_the_request_are_refused_before_any_call() {
        for model in [
            "x/../../../admin/x",
            "../admin",
            "..",
            "gpt?key=1",
            "gpt#frag",
            "a\\..\\admin",
            "gemini%2F..%2Fadmin",
            "model name",
            "",
        ] {
            for kind in [ProviderKind::Azure, ProviderKind::Gemini] {
                let err = url_for(kind, model, false).unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidRequest, "{kind} {model:?}");
                assert_eq!(err.code(), Some("invalid_model_name"));
            }
        }
        let err = url_for(ProviderKind::Azure, "gpt-4o|2024-10-21&x=1", false).unwrap_err();
        assert!(err.message().contains("api-version"), "{err}");
    }

    #[test]
    fn real_names_build_the_documented_urls() {
        let azure = url_for(ProviderKind::Azure, "gpt-4o-mini", true).unwrap();
        assert_eq!(
            azure.as_str(),
            "https://llm.example:8443/prefix/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        );
        let gemini = url_for(ProviderKind::Gemini, "gemini-2.0-flash", true).unwrap();
        assert_eq!(
            gemini.as_str(),
            "https://llm.example:8443/prefix/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        );
    }

    #[test]
    fn base_urls_with_a_query_or_fragment_are_refused() {
        for url in ["https://x.example/v1?key=1", "https://x.example/v1#f"] {
            let err = Provider::builder(ProviderKind::OpenAi)
                .api_key("k")
                .base_url(url)
                .build()
                .unwrap_err();
            assert_eq!(err.field(), "base_url", "{url}");
        }
        // From the environment, the error names the variable it came from.
        let err = Provider::builder(ProviderKind::Azure)
            .env_with(|name| match name {
                "AZURE_OPENAI_API_KEY" => Some("k".to_owned()),
                "AZURE_OPENAI_ENDPOINT" => Some("https://x.example?x=1".to_owned()),
                _ => None,
            })
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "AZURE_OPENAI_ENDPOINT");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// No model name changes the host, the path prefix or the query a call goes to.
        #[test]
        fn no_model_name_changes_where_a_call_goes(model in "\\PC{0,40}|[a-z./\\\\?#%&=:@ -]{0,24}", stream: bool) {
            for kind in [ProviderKind::Azure, ProviderKind::Gemini] {
                if let Ok(url) = url_for(kind, &model, stream) {
                    prop_assert_eq!(url.host_str(), Some("llm.example"));
                    prop_assert_eq!(url.port(), Some(8443));
                    let segments: Vec<_> = url.path_segments().unwrap().collect();
                    match kind {
                        ProviderKind::Azure => {
                            prop_assert_eq!(segments.len(), 6);
                            prop_assert_eq!(&segments[..3], &["prefix", "openai", "deployments"]);
                            prop_assert_eq!(&segments[4..], &["chat", "completions"]);
                            prop_assert_eq!(url.query(), Some("api-version=2024-10-21"));
                        }
                        _ => {
                            prop_assert_eq!(segments.len(), 3);
                            prop_assert_eq!(&segments[..2], &["prefix", "models"]);
                            prop_assert_eq!(url.query(), stream.then_some("alt=sse"));
                        }
                    }
                    prop_assert!(url.fragment().is_none());
                }
            }
        }
    }
}
