//! The provider-neutral vocabulary: [`ChatRequest`], [`Message`], [`ChatResponse`],
//! [`ChatChunk`], [`FinishReason`].

use std::sync::Arc;

use http::Extensions;
use llm_core::{
    ErrorKind, EstimateTokens, ModelRequest, ObserveEnd, Outcome, RateLimitInfo, ReportsUsage,
    RequestExtensions, ResponseMeta, ResponseMetadata, ResponseOutcome, Tokenizer, Usage,
};
use serde_json::{Map, Value};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions (sent as Anthropic's top-level `system` and Gemini's `systemInstruction`).
    System,
    /// The user.
    User,
    /// The model (Gemini's `model` role).
    Assistant,
}

impl Role {
    /// The OpenAI name of the role.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
///
/// ```
/// use llm_providers::{Message, Role};
///
/// let m = Message::user("Hi");
/// assert_eq!((m.role, m.content.as_str()), (Role::User, "Hi"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }

    /// An assistant message (also a prefill when it comes last).
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
}

/// A chat request, provider-neutral; each provider writes it in its own wire format.
///
/// Cheap to clone — retries clone it per attempt: the conversation and the extras sit behind
/// `Arc`s. The extensions carry what the layers agree on (deadline, attempt budget).
///
/// ```
/// use llm_providers::{ChatRequest, Message};
///
/// let req = ChatRequest::new("gpt-4o-mini")
///     .system("You are terse.")
///     .message(Message::user("Hi"))
///     .max_tokens(256)
///     .temperature(0.2)
///     .extra("seed", 7);
/// assert_eq!(req.model(), "gpt-4o-mini");
/// assert_eq!(req.messages().len(), 1);
/// assert_eq!(req.extras().unwrap()["seed"], 7);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ChatRequest {
    model: String,
    system: Option<Arc<str>>,
    messages: Arc<Vec<Message>>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Arc<Vec<String>>,
    extras: Option<Arc<Map<String, Value>>>,
    extensions: Extensions,
}

impl ChatRequest {
    /// A request to `model` with no messages yet.
    pub fn new(model: impl Into<String>) -> ChatRequest {
        ChatRequest {
            model: model.into(),
            ..ChatRequest::default()
        }
    }

    /// Sets the system instructions.
    #[must_use]
    pub fn system(mut self, system: impl Into<Arc<str>>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Appends a message.
    #[must_use]
    pub fn message(mut self, message: Message) -> Self {
        Arc::make_mut(&mut self.messages).push(message);
        self
    }

    /// Appends a user message.
    #[must_use]
    pub fn user(self, content: impl Into<String>) -> Self {
        self.message(Message::user(content))
    }

    /// Replaces the conversation.
    #[must_use]
    pub fn messages_from(mut self, messages: impl IntoIterator<Item = Message>) -> Self {
        self.messages = Arc::new(messages.into_iter().collect());
        self
    }

    /// Limits the answer's length.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sampling temperature.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Nucleus sampling.
    #[must_use]
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.top_p = Some(top_p);
        self
    }

    /// Stop sequences.
    #[must_use]
    pub fn stop(mut self, stop: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.stop = Arc::new(stop.into_iter().map(Into::into).collect());
        self
    }

    /// A provider-specific field merged into the request body as it is (`seed`,
    /// `response_format`, `thinking`, `safetySettings`, …); it overrides a field of the same
    /// name.
    #[must_use]
    pub fn extra(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let extras = self.extras.get_or_insert_with(Default::default);
        Arc::make_mut(extras).insert(key.into(), value.into());
        self
    }

    /// The model asked for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The system instructions.
    pub fn system_prompt(&self) -> Option<&str> {
        self.system.as_deref()
    }

    /// The conversation.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// The answer's length limit.
    pub fn max_tokens_limit(&self) -> Option<u32> {
        self.max_tokens
    }

    /// The sampling temperature.
    pub fn temperature_value(&self) -> Option<f32> {
        self.temperature
    }

    /// Nucleus sampling.
    pub fn top_p_value(&self) -> Option<f32> {
        self.top_p
    }

    /// The stop sequences.
    pub fn stop_sequences(&self) -> &[String] {
        &self.stop
    }

    /// The provider-specific extras.
    pub fn extras(&self) -> Option<&Map<String, Value>> {
        self.extras.as_deref()
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

impl RequestExtensions for ChatRequest {
    fn request_extensions(&self) -> Option<&Extensions> {
        Some(&self.extensions)
    }

    fn request_extensions_mut(&mut self) -> Option<&mut Extensions> {
        Some(&mut self.extensions)
    }
}

impl ModelRequest for ChatRequest {
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

impl EstimateTokens for ChatRequest {
    /// Prompt tokens (system and messages, 4 tokens of framing each) plus `max_tokens`
    /// (1024 when unset) — the most the call may consume.
    fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        let system = self
            .system
            .as_deref()
            .map_or(0, |s| tokenizer.count_tokens(s) + 4);
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| tokenizer.count_tokens(&m.content) + 4)
            .sum();
        system + messages + u64::from(self.max_tokens.unwrap_or(1024))
    }
}

/// Why the model stopped, normalized across providers.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FinishReason {
    /// It finished (`stop`, `end_turn`, `stop_sequence`, `STOP`).
    Stop,
    /// It hit `max_tokens` (`length`, `max_tokens`, `MAX_TOKENS`).
    Length,
    /// A content policy stopped it (`content_filter`, `refusal`, `SAFETY`, `RECITATION`, …).
    ContentFilter,
    /// It called tools (`tool_calls`, `tool_use`).
    ToolCalls,
    /// It ran out of context window (Anthropic `model_context_window_exceeded`).
    ContextWindow,
    /// Something else, as the provider named it.
    Other(String),
}

impl FinishReason {
    /// Normalizes a provider's finish reason.
    ///
    /// ```
    /// use llm_providers::FinishReason;
    ///
    /// assert_eq!(FinishReason::from_provider("end_turn"), FinishReason::Stop);
    /// assert_eq!(FinishReason::from_provider("MAX_TOKENS"), FinishReason::Length);
    /// assert_eq!(FinishReason::from_provider("SAFETY"), FinishReason::ContentFilter);
    /// ```
    pub fn from_provider(reason: &str) -> FinishReason {
        match reason {
            "stop" | "end_turn" | "stop_sequence" | "STOP" | "pause_turn" => FinishReason::Stop,
            "length" | "max_tokens" | "MAX_TOKENS" => FinishReason::Length,
            "content_filter" | "refusal" | "SAFETY" | "RECITATION" | "BLOCKLIST"
            | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => FinishReason::ContentFilter,
            "tool_calls" | "function_call" | "tool_use" => FinishReason::ToolCalls,
            "model_context_window_exceeded" => FinishReason::ContextWindow,
            other => FinishReason::Other(other.to_owned()),
        }
    }
}

/// A complete answer.
///
/// Its outcome ([`ResponseOutcome`]) is a success, except that an answer a content policy
/// stopped is a `ContentFiltered` failure (never retried, not counted by the breaker) that
/// still reaches the caller.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ChatResponse {
    /// The answer's text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: Option<FinishReason>,
    /// What it cost.
    pub usage: Option<Usage>,
    /// The provider that answered (`openai`, `anthropic`, …).
    pub provider: Arc<str>,
    /// The model that answered, as the provider reported it.
    pub model: String,
    /// The provider's id of the answer.
    pub id: Option<String>,
    /// The provider's request id header (`x-request-id`, `request-id`, …).
    pub request_id: Option<String>,
    /// The rate-limit headers of the response.
    pub rate_limit: RateLimitInfo,
    /// What the layers did (attempts, fallback target).
    pub meta: ResponseMeta,
}

impl ChatResponse {
    /// An answer of `text` from `provider`'s `model` (mostly for tests and custom services).
    pub fn new(
        provider: impl Into<Arc<str>>,
        model: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ChatResponse {
            text: text.into(),
            finish_reason: Some(FinishReason::Stop),
            usage: None,
            provider: provider.into(),
            model: model.into(),
            id: None,
            request_id: None,
            rate_limit: RateLimitInfo::new(),
            meta: ResponseMeta::new(),
        }
    }
}

impl ResponseOutcome for ChatResponse {
    fn response_outcome(&self) -> Outcome {
        let outcome = match self.finish_reason {
            Some(FinishReason::ContentFilter) => Outcome::failure(ErrorKind::ContentFiltered),
            _ => Outcome::success(),
        };
        outcome.with_rate_limit(self.rate_limit)
    }
}

impl ResponseMetadata for ChatResponse {
    fn metadata(&self) -> Option<&ResponseMeta> {
        Some(&self.meta)
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(&mut self.meta)
    }
}

impl ReportsUsage for ChatResponse {
    fn usage(&self) -> Option<Usage> {
        self.usage
    }
}

impl ObserveEnd for ChatResponse {}

/// One piece of a streamed answer.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatChunk {
    /// New text (empty on chunks that only carry the finish reason or usage).
    pub delta: String,
    /// Set on the chunk where the model stopped.
    pub finish_reason: Option<FinishReason>,
    /// Set on the chunk that reports usage (for Anthropic: the cumulative total).
    pub usage: Option<Usage>,
    /// Set on the last chunk of an answer that [`StreamRecovery`](crate::recovery::StreamRecovery)
    /// repaired: from which target, after how many delivered tokens, how.
    pub recovery: Option<crate::recovery::Recovery>,
}

impl ChatChunk {
    /// A chunk of text.
    pub fn text(delta: impl Into<String>) -> ChatChunk {
        ChatChunk {
            delta: delta.into(),
            ..ChatChunk::default()
        }
    }
}
