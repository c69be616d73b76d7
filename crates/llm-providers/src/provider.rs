//! [`Provider`] (a `Service<ChatRequest>` answering [`ChatResponse`]s) and
//! [`StreamingProvider`] (answering [`ChatStream`]s), built by [`ProviderBuilder`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{ErrorKind, LlmError};
use tower_service::Service;

use crate::errors;
use crate::inner::{
    Inner, Timeouts, attempt_wait, effective_total, fmt_duration, named, read_body, request_id,
};
use crate::kind::{Operation, ProviderKind};
use crate::stream::ChatStream;
use crate::types::{ChatRequest, ChatResponse};
use crate::wire;

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

impl<T> ResponseFuture<T> {
    pub(crate) fn new(inner: impl Future<Output = Result<T, LlmError>> + Send + 'static) -> Self {
        ResponseFuture {
            inner: Box::pin(inner),
        }
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
        use tracing::Instrument;
        let inner = self.inner.clone();
        let span = crate::spans::attempt(&inner, Operation::Chat, req.model(), false);
        ResponseFuture {
            inner: Box::pin(complete(inner, req, span.clone()).instrument(span)),
        }
    }
}

async fn complete(
    inner: Arc<Inner>,
    req: ChatRequest,
    span: tracing::Span,
) -> Result<ChatResponse, LlmError> {
    let kind = inner.kind;
    let total = effective_total(&inner, &req);
    tracing::debug!(
        gen_ai.operation.name = Operation::Chat.as_str(),
        gen_ai.provider.name = kind.otel_name(),
        gen_ai.request.model = req.model(),
        server.address = inner.base.host_str(),
        llm.upstream = %inner.name,
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
    crate::metrics::call_ended(
        &inner.caller(),
        Operation::Chat,
        started.elapsed(),
        result.as_ref().map(|res| res.usage).map_err(LlmError::kind),
    );
    match &result {
        Ok(res) => crate::spans::answered(
            &span,
            &res.model,
            res.id.as_deref(),
            res.finish_reason.as_ref().map(finish_name),
            res.usage,
        ),
        Err(err) => crate::spans::failed(&span, err.kind()),
    }
    match &result {
        Ok(res) => tracing::debug!(
            gen_ai.provider.name = kind.otel_name(),
            llm.upstream = %inner.name,
            gen_ai.response.model = %res.model,
            gen_ai.response.id = res.id.as_deref(),
            gen_ai.response.finish_reasons = res.finish_reason.as_ref().map(finish_name),
            gen_ai.usage.input_tokens = res.usage.map(|u| u.input_tokens),
            gen_ai.usage.output_tokens = res.usage.map(|u| u.output_tokens),
            "provider answered"
        ),
        Err(err) => {
            tracing::debug!(
                gen_ai.provider.name = kind.otel_name(),
                llm.upstream = %inner.name,
                error.type = err.kind().as_str(),
                error = %err,
                "provider failed"
            );
        }
    }
    result
}

/// A finish reason as `gen_ai.response.finish_reasons` names it (the normalized name).
pub(crate) fn finish_name(reason: &crate::types::FinishReason) -> &str {
    use crate::types::FinishReason;
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContextWindow => "context_window",
        FinishReason::Other(other) => other,
    }
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
        use tracing::Instrument;
        let inner = self.inner.clone();
        let span = crate::spans::attempt(&inner, Operation::Chat, req.model(), true);
        ResponseFuture {
            inner: Box::pin(open_stream(inner, req, span.clone()).instrument(span)),
        }
    }
}

async fn open_stream(
    inner: Arc<Inner>,
    req: ChatRequest,
    span: tracing::Span,
) -> Result<ChatStream, LlmError> {
    let kind = inner.kind;
    let started = tokio::time::Instant::now();
    let total = effective_total(&inner, &req);
    let first_token = attempt_wait(inner.timeouts.first_token, &req).min(total);
    tracing::debug!(
        gen_ai.operation.name = Operation::Chat.as_str(),
        gen_ai.provider.name = kind.otel_name(),
        gen_ai.request.model = req.model(),
        server.address = inner.base.host_str(),
        llm.upstream = %inner.name,
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
    let opened = async {
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
        Ok((res, headers))
    };
    // NOTE: a failure before the stream exists is recorded here; once it exists, the
    // stream records its own end.
    let (res, headers) = opened.await.inspect_err(|err| {
        crate::metrics::call_ended(
            &inner.caller(),
            Operation::Chat,
            started.elapsed(),
            Err(err.kind()),
        );
        crate::spans::failed(&span, err.kind());
    })?;
    let mut stream = ChatStream::new(
        inner.clone(),
        req.model().to_owned(),
        &headers,
        Box::pin(res.bytes_stream()),
        kind.streams_ndjson(),
        started,
        first_token,
        total,
        span,
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
