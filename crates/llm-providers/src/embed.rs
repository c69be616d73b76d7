//! A provider as a `Service<EmbeddingRequest>`: the inputs sent in batches the provider
//! takes, the vectors put back together in order.

use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{ErrorKind, LlmError, ModelRequest, Usage};
use tower_service::Service;

use crate::embedding::{EmbeddingRequest, EmbeddingResponse};
use crate::errors;
use crate::inner::{
    Inner, effective_total, fmt_duration, is_path_name, named, read_body, with_trace_context,
};
use crate::kind::{Operation, ProviderKind};
use crate::provider::{Provider, ResponseFuture};
use crate::wire::embeddings;

/// Embeddings: one call per batch the provider takes (OpenAI 2,048 inputs, Gemini 100),
/// the vectors back in input order. The whole request — every batch — runs within the
/// provider's total timeout (or the request's deadline, when sooner); a failed batch fails
/// the request, so retry and fallback see one error.
///
/// ```no_run
/// use llm_providers::{EmbeddingRequest, Provider};
/// use tower::ServiceExt;
///
/// # async fn run() -> Result<(), llm_core::LlmError> {
/// let openai = Provider::openai().build().unwrap();
/// let answer = openai
///     .oneshot(EmbeddingRequest::new("text-embedding-3-small", ["Why is the sky blue?"]))
///     .await?;
/// assert_eq!(answer.embeddings.len(), 1);
/// # Ok(()) }
/// ```
impl Service<EmbeddingRequest> for Provider {
    type Response = EmbeddingResponse;
    type Error = LlmError;
    type Future = ResponseFuture<EmbeddingResponse>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: EmbeddingRequest) -> Self::Future {
        use tracing::Instrument;
        let span = crate::spans::attempt(&self.inner, Operation::Embeddings, req.model(), false);
        ResponseFuture::new(embed(self.inner.clone(), req, span.clone()).instrument(span))
    }
}

/// The URL of `inner`'s embeddings endpoint for `model`.
fn url(inner: &Inner, model: &str) -> Result<reqwest::Url, LlmError> {
    let base = inner.base_url.trim_end_matches('/');
    let parse = |url: String| {
        reqwest::Url::parse(&url).map_err(|err| {
            LlmError::new(ErrorKind::InvalidRequest, format!("{url:?}: {err}"))
                .with_provider(inner.name.to_string())
        })
    };
    match inner.kind {
        ProviderKind::Anthropic => Err(LlmError::new(
            ErrorKind::Unsupported,
            "anthropic has no embeddings API",
        )
        .with_provider(inner.name.to_string())),
        ProviderKind::Azure => {
            if !is_path_name(model) {
                return Err(inner.bad_name("deployment", model));
            }
            let mut url = inner.url_with_path(&["openai", "deployments", model, "embeddings"]);
            url.query_pairs_mut()
                .append_pair("api-version", &inner.api_version);
            Ok(url)
        }
        ProviderKind::Gemini => {
            if !is_path_name(model) {
                return Err(inner.bad_name("model", model));
            }
            Ok(inner.url_with_path(&["models", &format!("{model}:batchEmbedContents")]))
        }
        ProviderKind::Ollama => parse(format!("{base}/api/embed")),
        ProviderKind::OpenAi | ProviderKind::OpenRouter | ProviderKind::OpenAiCompatible => {
            parse(format!("{base}/embeddings"))
        }
    }
}

async fn embed(
    inner: Arc<Inner>,
    req: EmbeddingRequest,
    span: tracing::Span,
) -> Result<EmbeddingResponse, LlmError> {
    if req.inputs().is_empty() {
        return Err(LlmError::new(
            ErrorKind::InvalidRequest,
            "an embedding request needs at least one input",
        )
        .with_provider(inner.name.to_string()));
    }
    let url = url(&inner, req.model())?;
    let total = effective_total(&inner, &req);
    tracing::debug!(
        gen_ai.operation.name = Operation::Embeddings.as_str(),
        gen_ai.provider.name = inner.kind.otel_name(),
        gen_ai.request.model = req.model(),
        server.address = inner.base.host_str(),
        llm.upstream = %inner.name,
        inputs = req.inputs().len(),
        "provider embeddings call"
    );
    let batches = async {
        let mut answer = EmbeddingResponse::new(inner.name.clone(), req.model(), Vec::new());
        answer.embeddings.reserve(req.inputs().len());
        let mut usage: Option<Usage> = None;
        for inputs in req.inputs().chunks(embeddings::max_batch(inner.kind)) {
            let body = serde_json::to_vec(&embeddings::body(inner.kind, &req, inputs))
                .expect("a JSON value with string keys always serializes");
            let request = inner
                .client
                .post(url.clone())
                .headers(inner.headers.clone())
                .body(body);
            let mut res = with_trace_context(request, req.extensions())
                .send()
                .await
                .map_err(|err| errors::from_transport(inner.kind, err))?;
            let status = res.status();
            let headers = std::mem::take(res.headers_mut());
            let cap = if status.is_success() {
                inner.max_response_bytes
            } else {
                inner.max_error_bytes
            };
            let body = read_body(&mut res, cap, &inner).await?;
            if !status.is_success() {
                let err =
                    errors::from_status(inner.kind, status, &headers, &body, &inner.secrets());
                return Err(named(err, &inner));
            }
            let batch = embeddings::parse(inner.kind, &body, inputs.len())
                .map_err(|err| named(err, &inner))?;
            if let Some(model) = batch.model {
                answer.model = model;
            }
            usage = match (usage, batch.usage) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            };
            answer.embeddings.extend(batch.vectors);
            answer.rate_limit =
                llm_core::RateLimitInfo::from_headers(&headers, std::time::SystemTime::now());
        }
        answer.usage = usage;
        Ok(answer)
    };
    let started = tokio::time::Instant::now();
    let result = match tokio::time::timeout(total, batches).await {
        Ok(result) => result,
        Err(_) => Err(LlmError::new(
            ErrorKind::Timeout,
            format!("no embeddings within {}", fmt_duration(total)),
        )
        .with_provider(inner.name.to_string())),
    };
    match &result {
        Ok(answer) => crate::spans::answered(&span, &answer.model, None, None, answer.usage),
        Err(err) => crate::spans::failed(&span, err.kind()),
    }
    crate::metrics::call_ended(
        &inner.caller(),
        Operation::Embeddings,
        started.elapsed(),
        result.as_ref().map(|res| res.usage).map_err(LlmError::kind),
    );
    result
}
