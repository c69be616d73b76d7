//! The provider-neutral vocabulary: [`ChatRequest`], [`Message`], [`ChatResponse`],
//! [`ChatChunk`], [`FinishReason`].

use std::sync::Arc;

use http::Extensions;
use llm_core::{
    ErrorKind, EstimateTokens, ModelRequest, ObserveEnd, Outcome, RateLimitInfo, ReportsUsage,
    RequestExtensions, ResponseMeta, ResponseMetadata, ResponseOutcome, Tokenizer, Usage,
};
use serde_json::{Map, Value};

use crate::conversation::{
    Content, Reasoning, ReasoningConfig, ReasoningDelta, ResponseFormat, Tool, ToolCall,
    ToolCallDelta, ToolChoice,
};

/// Who said a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Instructions (sent as Anthropic's top-level `system` and Gemini's `systemInstruction`).
    System,
    /// The user.
    User,
    /// The model (Gemini's `model` role).
    Assistant,
    /// A tool's result (OpenAI `role: tool`, Anthropic `tool_result` blocks, Gemini
    /// `functionResponse` parts).
    Tool,
}

impl Role {
    /// The OpenAI name of the role.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message of a conversation: text or parts, and for the assistant its tool calls and
/// reasoning, for a tool its result.
///
/// ```
/// use llm_providers::{Message, Role, ToolCall};
///
/// let m = Message::user("Hi");
/// assert_eq!((m.role, m.content.as_text()), (Role::User, Some("Hi")));
///
/// let call = ToolCall::new("call_1", "get_weather", r#"{"city":"Paris"}"#);
/// let turn = Message::assistant("").with_tool_calls(vec![call]);
/// let result = Message::tool_result("call_1", "18 C");
/// assert_eq!(result.tool_call_id.as_deref(), Some("call_1"));
/// assert_eq!(turn.tool_calls.len(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Content,
    /// The participant's name (OpenAI `name`); for a tool result, the tool's name when known.
    pub name: Option<String>,
    /// The tool calls of an assistant turn, in order.
    pub tool_calls: Vec<ToolCall>,
    /// For a tool result: the call it answers.
    pub tool_call_id: Option<String>,
    /// For a tool result: whether the tool failed (Anthropic `is_error`).
    pub is_error: bool,
    /// For an assistant turn: the reasoning shown before it, to send back (signatures).
    pub reasoning: Vec<Reasoning>,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<Content>) -> Message {
        Message {
            role,
            content: content.into(),
            name: None,
            tool_calls: Vec::new(),
            tool_call_id: None,
            is_error: false,
            reasoning: Vec::new(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<Content>) -> Message {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<Content>) -> Message {
        Message::new(Role::User, content)
    }

    /// An assistant message (also a prefill when it comes last).
    pub fn assistant(content: impl Into<Content>) -> Message {
        Message::new(Role::Assistant, content)
    }

    /// A tool's result for the call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<Content>) -> Message {
        let mut message = Message::new(Role::Tool, content);
        message.tool_call_id = Some(call_id.into());
        message
    }

    /// Sets the participant's (or tool's) name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the tool calls of an assistant turn.
    #[must_use]
    pub fn with_tool_calls(mut self, calls: Vec<ToolCall>) -> Self {
        self.tool_calls = calls;
        self
    }

    /// Sets the reasoning of an assistant turn.
    #[must_use]
    pub fn with_reasoning(mut self, reasoning: Vec<Reasoning>) -> Self {
        self.reasoning = reasoning;
        self
    }

    /// Marks a tool result as a failure.
    #[must_use]
    pub fn with_error(mut self, is_error: bool) -> Self {
        self.is_error = is_error;
        self
    }

    /// Tokens of this message for an estimate: its text and tool calls, 4 of framing, and a
    /// flat 1,000 per image or document (providers count media by size; this errs high).
    pub(crate) fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        let text = match &self.content {
            Content::Text(text) => tokenizer.count_tokens(text),
            Content::Parts(parts) => parts
                .iter()
                .map(|p| p.as_text().map_or(1000, |t| tokenizer.count_tokens(t)))
                .sum(),
        };
        let calls: u64 = self
            .tool_calls
            .iter()
            .map(|c| tokenizer.count_tokens(&c.name) + tokenizer.count_tokens(&c.arguments) + 4)
            .sum();
        text + calls + 4
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
    tools: Option<Arc<[Tool]>>,
    tool_choice: Option<ToolChoice>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Arc<ResponseFormat>>,
    reasoning: Option<ReasoningConfig>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    user: Option<Arc<str>>,
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
    pub fn user(self, content: impl Into<Content>) -> Self {
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

    /// The tools the model may call.
    #[must_use]
    pub fn tools(mut self, tools: impl IntoIterator<Item = Tool>) -> Self {
        let tools: Arc<[Tool]> = tools.into_iter().collect();
        self.tools = (!tools.is_empty()).then_some(tools);
        self
    }

    /// Whether and which tool the model must call.
    #[must_use]
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.tool_choice = Some(choice);
        self
    }

    /// Whether the model may call several tools in one turn (OpenAI `parallel_tool_calls`,
    /// Anthropic's `disable_parallel_tool_use` inverted).
    #[must_use]
    pub fn parallel_tool_calls(mut self, parallel: bool) -> Self {
        self.parallel_tool_calls = Some(parallel);
        self
    }

    /// The output the model must produce (JSON, JSON following a schema).
    #[must_use]
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.response_format = Some(Arc::new(format));
        self
    }

    /// How much the model should reason.
    #[must_use]
    pub fn reasoning(mut self, reasoning: ReasoningConfig) -> Self {
        self.reasoning = Some(reasoning);
        self
    }

    /// A sampling seed.
    #[must_use]
    pub fn seed(mut self, seed: i64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The presence penalty (-2 to 2).
    #[must_use]
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.presence_penalty = Some(penalty);
        self
    }

    /// The frequency penalty (-2 to 2).
    #[must_use]
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.frequency_penalty = Some(penalty);
        self
    }

    /// The end user, for the provider's abuse monitoring (OpenAI `user`, Anthropic
    /// `metadata.user_id`).
    #[must_use]
    pub fn end_user(mut self, user: impl Into<Arc<str>>) -> Self {
        self.user = Some(user.into());
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

    /// The tools the model may call.
    pub fn tool_list(&self) -> &[Tool] {
        self.tools.as_deref().unwrap_or_default()
    }

    /// The tool choice.
    pub fn tool_choice_value(&self) -> Option<&ToolChoice> {
        self.tool_choice.as_ref()
    }

    /// Whether parallel tool calls were allowed or forbidden.
    pub fn parallel_tool_calls_value(&self) -> Option<bool> {
        self.parallel_tool_calls
    }

    /// The output format asked for.
    pub fn response_format_value(&self) -> Option<&ResponseFormat> {
        self.response_format.as_deref()
    }

    /// The reasoning asked for.
    pub fn reasoning_value(&self) -> Option<ReasoningConfig> {
        self.reasoning
    }

    /// The sampling seed.
    pub fn seed_value(&self) -> Option<i64> {
        self.seed
    }

    /// The presence penalty.
    pub fn presence_penalty_value(&self) -> Option<f32> {
        self.presence_penalty
    }

    /// The frequency penalty.
    pub fn frequency_penalty_value(&self) -> Option<f32> {
        self.frequency_penalty
    }

    /// The end user.
    pub fn end_user_value(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the conversation uses tools: tool definitions, calls or results.
    pub fn uses_tools(&self) -> bool {
        self.tools.is_some()
            || self
                .messages
                .iter()
                .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool)
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

impl ChatRequest {
    /// The prompt's tokens, estimated with `tokenizer`: system, messages and tool
    /// definitions (what the rate limiter charges before a call, less `max_tokens`).
    pub fn prompt_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        let system = self
            .system
            .as_deref()
            .map_or(0, |s| tokenizer.count_tokens(s) + 4);
        let messages: u64 = self
            .messages
            .iter()
            .map(|m| m.estimate_tokens(tokenizer))
            .sum();
        let tools: u64 = self
            .tool_list()
            .iter()
            .map(|t| {
                let schema = t
                    .parameters
                    .as_ref()
                    .map_or(0, |p| tokenizer.count_tokens(&p.to_string()));
                tokenizer.count_tokens(&t.name)
                    + t.description
                        .as_deref()
                        .map_or(0, |d| tokenizer.count_tokens(d))
                    + schema
                    + 4
            })
            .sum();
        system + messages + tools
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
    /// Prompt tokens (system, messages and tool definitions, 4 tokens of framing each;
    /// 1,000 per image or document) plus `max_tokens` (1024 when unset) — the most the call
    /// may consume.
    fn estimate_tokens(&self, tokenizer: &dyn Tokenizer) -> u64 {
        self.prompt_tokens(tokenizer) + u64::from(self.max_tokens.unwrap_or(1024))
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
    /// The answer's text (empty when the model only called tools).
    pub text: String,
    /// The tools the model called, in order.
    pub tool_calls: Vec<ToolCall>,
    /// The reasoning the model showed (Anthropic thinking blocks, `reasoning_content`, Gemini
    /// thought summaries, Ollama `thinking`), with signatures to send back.
    pub reasoning: Vec<Reasoning>,
    /// OpenAI's `refusal`: the model declined, saying this instead of an answer.
    pub refusal: Option<String>,
    /// OpenAI-format `logprobs` of the answer, as the upstream sent them (asked for with the
    /// `logprobs` extra, which OpenAI-format upstreams read).
    pub logprobs: Option<Value>,
    /// OpenAI-format choices after the first (asked for with the `n` extra, which
    /// OpenAI-format upstreams read), as the upstream sent them; the first choice is this
    /// answer's own fields.
    pub other_choices: Vec<Value>,
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
    /// The answer as an assistant message for the next turn: text, tool calls and reasoning
    /// (with signatures), as the conversation must carry them.
    pub fn to_message(&self) -> Message {
        Message::assistant(self.text.clone())
            .with_tool_calls(self.tool_calls.clone())
            .with_reasoning(self.reasoning.clone())
    }

    /// An answer of `text` from `provider`'s `model` (mostly for tests and custom services).
    pub fn new(
        provider: impl Into<Arc<str>>,
        model: impl Into<String>,
        text: impl Into<String>,
    ) -> Self {
        ChatResponse {
            text: text.into(),
            tool_calls: Vec::new(),
            reasoning: Vec::new(),
            refusal: None,
            logprobs: None,
            other_choices: Vec::new(),
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
    /// Pieces of tool calls (OpenAI's indexed argument fragments, Anthropic's
    /// `input_json_delta`, Gemini's and Ollama's whole calls).
    pub tool_calls: Vec<ToolCallDelta>,
    /// A piece of reasoning.
    pub reasoning: Option<ReasoningDelta>,
    /// A piece of OpenAI's `refusal`.
    pub refusal: Option<String>,
    /// OpenAI-format `logprobs` of this piece, as the upstream sent them.
    pub logprobs: Option<Value>,
    /// OpenAI-format choice deltas after the first (`n` > 1), as the upstream sent them.
    pub other_choices: Vec<Value>,
    /// Set on the chunk where the model stopped.
    pub finish_reason: Option<FinishReason>,
    /// Set on the chunk that reports usage (for Anthropic: the cumulative total).
    pub usage: Option<Usage>,
    /// Set on the last chunk of an answer that [`StreamRecovery`](crate::recovery::StreamRecovery)
    /// repaired: from which target, after how many delivered tokens, how.
    pub recovery: Option<Recovery>,
}

impl ChatChunk {
    /// Whether the chunk carries anything of the answer itself: text, a tool call, reasoning
    /// or a refusal (not only a finish reason or usage).
    pub fn has_content(&self) -> bool {
        !self.delta.is_empty()
            || !self.tool_calls.is_empty()
            || self.reasoning.is_some()
            || self.refusal.is_some()
            || !self.other_choices.is_empty()
    }

    /// A chunk of text.
    pub fn text(delta: impl Into<String>) -> ChatChunk {
        ChatChunk {
            delta: delta.into(),
            ..ChatChunk::default()
        }
    }
}

/// How an answer was repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Nothing had reached the caller: the answer restarted on another target.
    Restarted,
    /// Continued after an assistant prefill of the delivered text.
    Prefill,
    /// Continued after an instruction to continue, overlap removed.
    Instruction,
}

impl RecoveryMode {
    /// `restarted`, `prefill`, `instruction`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecoveryMode::Restarted => "restarted",
            RecoveryMode::Prefill => "prefill",
            RecoveryMode::Instruction => "instruction",
        }
    }
}

/// A repair that happened.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The target whose stream broke.
    pub from: Arc<str>,
    /// The target that finished the answer.
    pub to: Arc<str>,
    /// Content chunks (≈ tokens) the caller had received when the stream broke.
    pub after_tokens: u32,
    /// How.
    pub mode: RecoveryMode,
    /// How the stream broke.
    pub cause: ErrorKind,
}
