//! [`TestRequest`]: a chat-shaped request for layer tests — a model to rewrite, limits,
//! a prompt to price, extensions for deadlines and budgets.

use llm_core::{EstimateTokens, ModelRequest, RequestExtensions, Tokenizer};

/// A chat-shaped request: what the fallback layer rewrites, the limiter prices, and the
/// retry layer reads deadlines from — without the providers crate.
///
/// ```
/// use std::time::Duration;
/// use llm_core::{Deadline, ModelRequest, RequestExtensions};
/// use llm_testkit::TestRequest;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let req = TestRequest::new("gpt-4o").with_prompt("Hi").with(Deadline::after(Duration::from_secs(5)));
/// assert_eq!(req.model(), "gpt-4o");
/// assert!(req.deadline().is_some());
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TestRequest {
    /// The model asked for.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// The answer's token limit.
    pub max_tokens: Option<u32>,
    /// The sampling temperature.
    pub temperature: Option<f32>,
    extensions: http::Extensions,
}

impl TestRequest {
    /// A request for `model`.
    pub fn new(model: impl Into<String>) -> Self {
        TestRequest {
            model: model.into(),
            ..TestRequest::default()
        }
    }

    /// With `prompt`.
    #[must_use]
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    /// With a token limit.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// With `value` in the extensions (a `Deadline`, an `AttemptBudget`).
    #[must_use]
    pub fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }
}

impl RequestExtensions for TestRequest {
    fn request_extensions(&self) -> Option<&http::Extensions> {
        Some(&self.extensions)
    }

    fn request_extensions_mut(&mut self) -> Option<&mut http::Extensions> {
        Some(&mut self.extensions)
    }
}

impl ModelRequest for TestRequest {
    fn model(&self) -> &str {
        &self.model
    }

    fn set_model(&mut self, model: &str) {
        model.clone_into(&mut self.model);
    }

    fn set_max_tokens(&mut self, max_tokens: u32) {
        self.max_tokens = Some(max_tokens);
    }

    fn set_temperature(&mut self, temperature: f32) {
        self.temperature = Some(temperature);
    }
}

impl EstimateTokens for TestRequest {
    fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        tokenizer.count_tokens(&self.prompt) + u64::from(self.max_tokens.unwrap_or(0))
    }
}
