//! What every call of a provider shares — its kind, name, endpoint, key, timeouts, limits and
//! HTTP client — and the helpers its complete and streaming services both use.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use llm_core::{ConfigError, ErrorKind, LlmError};

use crate::errors;
use crate::kind::ProviderKind;
use crate::metrics::{Caller, Meters};
use crate::types::ChatRequest;
use crate::wire;

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
pub(crate) struct ApiKey(pub(crate) Arc<str>);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Inner {
    pub(crate) kind: ProviderKind,
    pub(crate) name: Arc<str>,
    pub(crate) base_url: String,
    // The base URL parsed, for kinds whose URL names the model (Azure, Gemini).
    pub(crate) base: reqwest::Url,
    // The parsed URL every call goes to, for kinds whose URL does not name the model.
    pub(crate) endpoint: Option<reqwest::Url>,
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_error_bytes: usize,
    pub(crate) api_version: String,
    pub(crate) headers: HeaderMap,
    pub(crate) client: reqwest::Client,
    pub(crate) meters: Meters,
}

impl Inner {
    /// This provider as its metrics name it.
    pub(crate) fn caller(&self) -> Caller<'_> {
        Caller {
            name: &self.name,
            kind: self.kind,
            meters: &self.meters,
        }
    }

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
                return Ok(with_trace_context(
                    self.client
                        .post(endpoint.clone())
                        .headers(self.headers.clone())
                        .body(body()),
                    req.extensions(),
                ));
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
        Ok(with_trace_context(
            self.client
                .post(url)
                .headers(self.headers.clone())
                .body(body()),
            req.extensions(),
        ))
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    pub(crate) fn url_with_path(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has a path")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// The error for a name that cannot go into this provider's URL: refused before any call.
    pub(crate) fn bad_name(&self, what: &str, name: &str) -> LlmError {
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

/// `builder` with the caller's W3C trace context, when the request carries one
/// ([`llm_core::TraceContext`]): the upstream call continues the caller's trace.
pub(crate) fn with_trace_context(
    mut builder: reqwest::RequestBuilder,
    extensions: &http::Extensions,
) -> reqwest::RequestBuilder {
    if let Some(context) = extensions.get::<llm_core::TraceContext>() {
        for (name, value) in context.headers() {
            builder = builder.header(name, value.clone());
        }
    }
    builder
}

/// The default of `ProviderBuilder::max_response_bytes`.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;
/// The default of `ProviderBuilder::max_error_bytes`.
pub(crate) const DEFAULT_MAX_ERROR_BYTES: usize = 64 << 10;

/// The longest model, deployment or version name that goes into a URL.
const MAX_PATH_NAME: usize = 256;

/// Whether `name` may go into a URL path as one segment: letters, digits, `.`, `_`, `-`, and
/// not `.` or `..` alone. Every real model, deployment and API version name fits.
pub(crate) fn is_path_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_PATH_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
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
pub(crate) fn attempt_wait(
    configured: Duration,
    req: &impl llm_core::RequestExtensions,
) -> Duration {
    match req.deadline() {
        Some(deadline) if req.remaining_targets() > 0 => configured.min(deadline.remaining() / 3),
        _ => configured,
    }
}

/// The request's deadline, when it is sooner than the total timeout.
pub(crate) fn effective_total(inner: &Inner, req: &impl llm_core::RequestExtensions) -> Duration {
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
