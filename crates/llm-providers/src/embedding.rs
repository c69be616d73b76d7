//! Embeddings, provider-neutral: [`EmbeddingRequest`] in, [`EmbeddingResponse`] out — through
//! the same retry, breaker, rate-limit and fallback layers as chat, since they read only the
//! core's request and response traits.

use std::sync::Arc;

use http::Extensions;
use llm_core::{
    EstimateTokens, ModelRequest, ObserveEnd, Outcome, RateLimitInfo, ReportsUsage,
    RequestExtensions, ResponseMeta, ResponseMetadata, ResponseOutcome, Tokenizer, Usage,
};

/// Texts to embed with a model.
///
/// ```
/// use llm_providers::EmbeddingRequest;
///
/// let request = EmbeddingRequest::new("text-embedding-3-small", ["Why is the sky blue?"])
///     .dimensions(256);
/// assert_eq!(request.inputs().len(), 1);
/// ```
#[derive(Clone, Debug, Default)]
pub struct EmbeddingRequest {
    model: String,
    input: Vec<String>,
    dimensions: Option<u32>,
    user: Option<Arc<str>>,
    extensions: Extensions,
}

impl EmbeddingRequest {
    /// `inputs` embedded by `model`, one vector each, in order.
    pub fn new<I, S>(model: impl Into<String>, inputs: I) -> EmbeddingRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EmbeddingRequest {
            model: model.into(),
            input: inputs.into_iter().map(Into::into).collect(),
            ..EmbeddingRequest::default()
        }
    }

    /// Asks for vectors of `dimensions` (OpenAI `dimensions`, Gemini `outputDimensionality`,
    /// Ollama `dimensions`): the model shortens its vectors to that length.
    #[must_use]
    pub fn dimensions(mut self, dimensions: u32) -> Self {
        self.dimensions = Some(dimensions);
        self
    }

    /// The end user the request is made for (OpenAI `user`).
    #[must_use]
    pub fn end_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The texts.
    pub fn inputs(&self) -> &[String] {
        &self.input
    }

    /// The dimensions asked for.
    pub fn dimensions_value(&self) -> Option<u32> {
        self.dimensions
    }

    /// The end user.
    pub fn end_user_value(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The request's extensions (deadline, attempt budget, …).
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The request's extensions, mutably.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }
}

impl RequestExtensions for EmbeddingRequest {
    fn request_extensions(&self) -> Option<&Extensions> {
        Some(&self.extensions)
    }

    fn request_extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(&mut self.extensions)
    }
}

impl ModelRequest for EmbeddingRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    /// Embeddings have no output to limit.
    fn set_max_tokens(&mut self, _: u32) {}

    /// Embeddings are not sampled.
    fn set_temperature(&mut self, _: f32) {}
}

impl EstimateTokens for EmbeddingRequest {
    /// The inputs' tokens: an embedding call consumes only its input.
    fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        self.input.iter().map(|i| tokenizer.count_tokens(i)).sum()
    }
}

/// One vector per input, in the order of the inputs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EmbeddingResponse {
    /// The vectors, one per input, in order.
    pub embeddings: Vec<Vec<f32>>,
    /// The model that answered.
    pub model: String,
    /// The tokens used (input only), when the provider reports them.
    pub usage: Option<Usage>,
    /// The provider that answered.
    pub provider: Arc<str>,
    /// The provider's rate-limit headers.
    pub rate_limit: RateLimitInfo,
    /// What the layers record about the call (retries, …).
    pub meta: ResponseMeta,
}

impl EmbeddingResponse {
    /// `embeddings` from `provider`'s `model` (for tests and custom services).
    pub fn new(
        provider: impl Into<Arc<str>>,
        model: impl Into<String>,
        embeddings: Vec<Vec<f32>>,
    ) -> EmbeddingResponse {
        EmbeddingResponse {
            embeddings,
            model: model.into(),
            usage: None,
            provider: provider.into(),
            rate_limit: RateLimitInfo::new(),
            meta: ResponseMeta::new(),
        }
    }

    /// The vectors' length (0 without vectors).
    pub fn dimensions(&self) -> usize {
        self.embeddings.first().map_or(0, Vec::len)
    }
}

impl ResponseOutcome for EmbeddingResponse {
    fn response_outcome(&self) -> Outcome {
        Outcome::success().with_rate_limit(self.rate_limit)
    }
}

impl ResponseMetadata for EmbeddingResponse {
    fn metadata(&self) -> Option<&ResponseMeta> {
        Some(&self.meta)
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(&mut self.meta)
    }
}

impl ReportsUsage for EmbeddingResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl ObserveEnd for EmbeddingResponse {}
