//! [`Provider::probe`]: a cheap check that a provider accepts its credentials and knows a
//! model, through its model listing — no tokens spent, classified like any call.

use std::time::{Duration, Instant};

use llm_core::{ErrorKind, LlmError};
use serde_json::Value;

use crate::errors;
use crate::inner::{Inner, named, read_body};
use crate::kind::ProviderKind;
use crate::provider::Provider;

/// The longest a probe may take, connection included, when the provider's own timeouts
/// allow more: a check before traffic should answer quickly or say it could not.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a successful [`Provider::probe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probe {
    /// How long the listing took.
    pub latency: Duration,
    /// Whether the model was confirmed: `false` where the provider lists no models a key can
    /// read (Azure OpenAI's deployments; an OpenAI-compatible server without `/models`) —
    /// the credentials were accepted, the model is not known to be served.
    pub model_confirmed: bool,
}

impl Provider {
    /// Checks, without spending tokens, that the provider accepts its credentials and serves
    /// `model`, from its model listing: OpenAI, OpenRouter and OpenAI-compatible servers
    /// `GET …/models`; Anthropic `GET /v1/models/{model}` (aliases resolve); Gemini `GET
    /// …/models/{model}`; Ollama `GET /api/tags`; Azure OpenAI `GET /openai/models` (the
    /// key only: deployments are not listed to a key).
    ///
    /// A refusal is classified like a call's (`Unauthorized`, `RateLimited`, …); a model
    /// the listing lacks is `ModelNotFound`. Bounded by the provider's connect and idle
    /// timeouts and at most 10 s in all.
    ///
    /// ```no_run
    /// use llm_providers::Provider;
    ///
    /// # async fn run() -> Result<(), llm_core::LlmError> {
    /// let openai = Provider::openai().env().build().unwrap();
    /// let probe = openai.probe("gpt-4o-mini").await?;
    /// assert!(probe.model_confirmed);
    /// # Ok(()) }
    /// ```
    pub async fn probe(&self, model: &str) -> Result<Probe, LlmError> {
        let inner = &*self.inner;
        let limit = PROBE_TIMEOUT.min(inner.timeouts.total);
        match tokio::time::timeout(limit, probe(inner, model)).await {
            Ok(result) => result.map_err(|err| named(err, inner)),
            Err(_) => Err(named(
                LlmError::new(
                    ErrorKind::Timeout,
                    format!("the model listing did not answer within {limit:?}"),
                ),
                inner,
            )),
        }
    }
}

async fn probe(inner: &Inner, model: &str) -> Result<Probe, LlmError> {
    let started = Instant::now();
    let base = inner.base_url.trim_end_matches('/');
    let segment = || {
        let mut url = inner.base.clone();
        url.path_segments_mut()
            .expect("an http(s) base URL has a path")
            .pop_if_empty()
            .extend(match inner.kind {
                ProviderKind::Anthropic => vec!["v1", "models", model],
                _ => vec!["models", model],
            });
        url
    };
    let url = match inner.kind {
        ProviderKind::OpenAi | ProviderKind::OpenRouter | ProviderKind::OpenAiCompatible => {
            format!("{base}/models")
        }
        ProviderKind::Anthropic | ProviderKind::Gemini => segment().to_string(),
        ProviderKind::Ollama => format!("{base}/api/tags"),
        ProviderKind::Azure => format!("{base}/openai/models?api-version={}", inner.api_version),
    };
    let mut res = inner
        .client
        .get(&url)
        .headers(inner.headers.clone())
        .send()
        .await
        .map_err(|err| errors::from_transport(inner.kind, err))?;
    let status = res.status();
    let headers = res.headers().clone();
    let body = read_body(&mut res, inner.max_response_bytes, inner).await?;
    let latency = started.elapsed();
    if !status.is_success() {
        if status.as_u16() == 404 && inner.kind == ProviderKind::OpenAiCompatible {
            // A server without a model listing: reached, the model not known to be served.
            return Ok(Probe {
                latency,
                model_confirmed: false,
            });
        }
        let err = errors::from_status(inner.kind, status, &headers, &body, &inner.secrets());
        return Err(err);
    }
    let listing: Value = serde_json::from_slice(&body).map_err(|err| {
        LlmError::new(
            ErrorKind::Other,
            format!("the model listing is not JSON: {err}"),
        )
        .with_code("invalid_response")
    })?;
    let listed = match inner.kind {
        ProviderKind::Anthropic | ProviderKind::Gemini => Some(true),
        ProviderKind::Azure => None,
        ProviderKind::Ollama => Some(
            names(&listing, "models", "name")
                .any(|name| name == model || name.strip_suffix(":latest") == Some(model)),
        ),
        _ => Some(names(&listing, "data", "id").any(|id| id == model)),
    };
    match listed {
        Some(false) => Err(LlmError::new(
            ErrorKind::ModelNotFound,
            format!("the model {model:?} is not in the provider's model listing"),
        )
        .with_code("model_not_found")),
        listed => Ok(Probe {
            latency,
            model_confirmed: listed.is_some(),
        }),
    }
}

/// The `field` of each object in `listing[array]`.
fn names<'a>(listing: &'a Value, array: &str, field: &'a str) -> impl Iterator<Item = &'a str> {
    listing
        .get(array)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |item| item.get(field).and_then(Value::as_str))
}
