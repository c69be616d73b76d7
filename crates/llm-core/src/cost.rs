//! Token accounting for the rate limiter: estimate a request's cost before the call
//! ([`TokenCost`], [`EstimateTokens`], [`Tokenizer`]), read what it really cost afterwards
//! ([`ReportsUsage`], [`Usage`]).

/// Tokens a call consumed, as the provider reported them.
///
/// ```
/// use llm_core::Usage;
///
/// let usage = Usage::new(13, 5);
/// assert_eq!(usage.total_tokens, 18);
/// assert_eq!(usage + Usage::new(2, 1), Usage::new(15, 6));
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub input_tokens: u64,
    /// Completion (output) tokens.
    pub output_tokens: u64,
    /// All tokens billed; may exceed input + output (reasoning tokens some providers count apart).
    pub total_tokens: u64,
    /// Of the input, tokens read from the provider's prompt cache (OpenAI `cached_tokens`,
    /// Anthropic `cache_read_input_tokens`, Gemini `cachedContentTokenCount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// Of the input, tokens written to the provider's prompt cache (Anthropic
    /// `cache_creation_input_tokens`, OpenAI and OpenRouter `cache_write_tokens`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_creation_tokens: u64,
    /// Of the output, reasoning tokens (OpenAI `reasoning_tokens`, Anthropic
    /// `thinking_tokens`, Gemini `thoughtsTokenCount`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage of `input` prompt tokens and `output` completion tokens; the total is their sum.
    pub const fn new(input: u64, output: u64) -> Self {
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            cached_input_tokens: 0,
            cache_creation_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// The same usage, saying how much of the input came from the prompt cache and how much
    /// was written to it.
    ///
    /// ```
    /// let usage = llm_core::Usage::new(100, 5).with_cache(80, 20).with_reasoning(3);
    /// assert_eq!((usage.cached_input_tokens, usage.cache_creation_tokens), (80, 20));
    /// assert_eq!(usage.reasoning_tokens, 3);
    /// assert_eq!(usage.total_tokens, 105);
    /// ```
    #[must_use]
    pub const fn with_cache(mut self, read: u64, written: u64) -> Self {
        self.cached_input_tokens = read;
        self.cache_creation_tokens = written;
        self
    }

    /// The same usage, saying how many of the output tokens were reasoning.
    #[must_use]
    pub const fn with_reasoning(mut self, reasoning: u64) -> Self {
        self.reasoning_tokens = reasoning;
        self
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            total_tokens: self.total_tokens.saturating_add(other.total_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(other.cached_input_tokens),
            cache_creation_tokens: self
                .cache_creation_tokens
                .saturating_add(other.cache_creation_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(other.reasoning_tokens),
        }
    }
}

/// A response that can say how many tokens it consumed, for the limiter's reconciliation.
///
/// `http::Response` reports a [`Usage`] found in its extensions (put there by whoever
/// decoded the body); the providers' `ChatResponse` reports its own.
///
/// ```
/// use llm_core::{ReportsUsage, Usage};
///
/// let mut res = http::Response::new(());
/// assert_eq!(res.usage(), None);
/// res.extensions_mut().insert(Usage::new(10, 20));
/// assert_eq!(res.usage(), Some(Usage::new(10, 20)));
/// ```
pub trait ReportsUsage {
    /// The tokens the call consumed, when known.
    fn usage(&self) -> Option<Usage>;
}

impl<B> ReportsUsage for http::Response<B> {
    fn usage(&self) -> Option<Usage> {
        self.extensions().get::<Usage>().copied()
    }
}

/// Counts tokens in text. Plug in a real tokenizer for exact pre-call estimates; the
/// default [`ApproxTokenizer`] needs no vocabulary.
///
/// ```
/// use llm_core::{ApproxTokenizer, Tokenizer};
///
/// assert_eq!(ApproxTokenizer::default().count_tokens("Hello, world!"), 4);
/// ```
pub trait Tokenizer: Send + Sync {
    /// The number of tokens `text` encodes to.
    fn count_tokens(&self, text: &str) -> u64;
}

/// Estimates tokens as characters divided by a ratio (four for English text with the BPE
/// vocabularies of GPT-4-class models), rounded up. Cheap and close enough to reserve
/// capacity; the limiter corrects it from the reported usage.
///
/// ```
/// use llm_core::{ApproxTokenizer, Tokenizer};
///
/// // Code and non-English text run denser: three characters a token.
/// let dense = ApproxTokenizer::new(3.0);
/// assert_eq!(dense.count_tokens("fn main() {}"), 4);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApproxTokenizer {
    chars_per_token: f64,
}

impl ApproxTokenizer {
    /// A tokenizer assuming `chars_per_token` characters per token; non-positive or
    /// non-finite ratios fall back to 4.
    pub fn new(chars_per_token: f64) -> Self {
        let ratio = if chars_per_token.is_finite() && chars_per_token > 0.0 {
            chars_per_token
        } else {
            4.0
        };
        ApproxTokenizer {
            chars_per_token: ratio,
        }
    }
}

impl Default for ApproxTokenizer {
    fn default() -> Self {
        ApproxTokenizer {
            chars_per_token: 4.0,
        }
    }
}

impl Tokenizer for ApproxTokenizer {
    fn count_tokens(&self, text: &str) -> u64 {
        let chars = text.chars().count() as f64;
        (chars / self.chars_per_token).ceil() as u64
    }
}

/// A request that can estimate its own token cost: prompt tokens plus the most it may
/// generate. The providers' `ChatRequest` implements it.
///
/// ```
/// use llm_core::{ApproxTokenizer, EstimateTokens, Tokenizer};
///
/// struct Prompt { text: String, max_tokens: u64 }
/// impl EstimateTokens for Prompt {
///     fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
///         tokenizer.count_tokens(&self.text) + self.max_tokens
///     }
/// }
/// let prompt = Prompt { text: "x".repeat(400), max_tokens: 256 };
/// assert_eq!(prompt.estimate_tokens(&ApproxTokenizer::default()), 356);
/// ```
pub trait EstimateTokens {
    /// The tokens this request is expected to consume, counted with `tokenizer`.
    fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64;
}

/// How the rate limiter prices a request before sending it.
///
/// Any `Fn(&Req) -> u64` is a cost function; [`EstimatedCost`] asks requests that implement
/// [`EstimateTokens`].
///
/// ```
/// use llm_core::TokenCost;
///
/// let per_byte = |body: &Vec<u8>| body.len() as u64;
/// assert_eq!(per_byte.cost(&vec![0; 42]), 42);
/// ```
pub trait TokenCost<Req> {
    /// The tokens `request` is expected to consume.
    fn cost(&self, request: &Req) -> u64;
}

impl<F, Req> TokenCost<Req> for F
where
    F: Fn(&Req) -> u64,
{
    fn cost(&self, request: &Req) -> u64 {
        self(request)
    }
}

/// Prices requests by [`EstimateTokens`] with a [`Tokenizer`] (by default [`ApproxTokenizer`]).
///
/// ```
/// use llm_core::{ApproxTokenizer, EstimateTokens, EstimatedCost, TokenCost, Tokenizer};
///
/// struct Prompt(&'static str);
/// impl EstimateTokens for Prompt {
///     fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 { tokenizer.count_tokens(self.0) }
/// }
/// let cost = EstimatedCost::new(ApproxTokenizer::new(2.0));
/// assert_eq!(cost.cost(&Prompt("abcdef")), 3);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct EstimatedCost<T = ApproxTokenizer> {
    tokenizer: T,
}

impl EstimatedCost {
    /// Prices requests with the [`ApproxTokenizer`] (about four characters per token).
    ///
    /// ```
    /// let cost = llm_core::EstimatedCost::approximate();
    /// # let _ = cost;
    /// ```
    pub const fn approximate() -> Self {
        EstimatedCost {
            tokenizer: ApproxTokenizer {
                chars_per_token: 4.0,
            },
        }
    }
}

impl<T> EstimatedCost<T> {
    /// Prices requests with `tokenizer`.
    pub const fn new(tokenizer: T) -> Self {
        EstimatedCost { tokenizer }
    }
}

impl<T: Tokenizer, Req: EstimateTokens> TokenCost<Req> for EstimatedCost<T> {
    fn cost(&self, request: &Req) -> u64 {
        request.estimate_tokens(&self.tokenizer)
    }
}

#[cfg(feature = "reqwest")]
impl ReportsUsage for reqwest::Response {
    fn usage(&self) -> Option<Usage> {
        self.extensions().get::<Usage>().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn approx_tokenizer_rounds_up_and_counts_chars_not_bytes() {
        let t = ApproxTokenizer::default();
        assert_eq!(t.count_tokens(""), 0);
        assert_eq!(t.count_tokens("a"), 1);
        assert_eq!(t.count_tokens("abcd"), 1);
        assert_eq!(t.count_tokens("abcde"), 2);
        assert_eq!(t.count_tokens("ééééé"), 2);
        assert_eq!(ApproxTokenizer::new(f64::NAN), ApproxTokenizer::default());
        assert_eq!(ApproxTokenizer::new(-1.0), ApproxTokenizer::default());
    }

    #[test]
    fn usage_adds_without_overflow() {
        let big = Usage::new(u64::MAX, 1);
        assert_eq!(big.total_tokens, u64::MAX);
        assert_eq!((big + big).input_tokens, u64::MAX);
    }
}
