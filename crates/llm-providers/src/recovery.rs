//! Mid-stream recovery: finishing an answer whose stream died after output reached the
//! caller, or repairing an early failure before anything did.
//!
//! The streaming contract ends a stream that breaks after its first chunk with an in-band
//! `StreamInterrupted`: honest, but the answer is lost. [`StreamRecovery`] wraps a streaming
//! chain (a `Fallback` over streaming provider stacks, or one stack) and, as its
//! [`RecoveryPolicy`] allows:
//!
//! - **continues** a broken answer on another target (or the same one): the original request
//!   plus the text already delivered — as an assistant *prefill* where the target accepts one
//!   ([`Prefill`]), otherwise followed by an instruction to continue — and splices the new
//!   output onto the same stream, overlapping text removed, so the caller reads one answer;
//! - **holds back** the first chunks (a number of them, or a time) so that a failure in that
//!   window is repaired by a silent restart on the next target — latency traded for
//!   integrity;
//! - otherwise **fails clean**: the in-band error is the original failure, never the error
//!   of a repair attempt, and never a clean end.
//!
//! A recovered answer says so: [`RecoveringStream::recovery`], a final chunk carrying
//! [`Recovery`] and the usage of every part added up, a `tracing` event, and the
//! `on_recovery` hook (for metrics).
//!
//! Costs. Continuing sends the conversation again plus the partial answer (input tokens
//! paid twice) and its text is the continuing model's; an instruction-form continuation may
//! not join seamlessly (the model may rephrase). Holding back delays the first token the
//! caller sees by up to the hold. Both are opt-in per chain.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use llm_core::{
    ApproxTokenizer, ConfigError, EndObserver, ErrorKind, LlmError, ModelRequest, ObserveEnd,
    Outcome, ReportsUsage, ResponseMeta, ResponseMetadata, ResponseOutcome, StreamEnd, Usage,
};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::assemble::Assembler;
use crate::kind::ProviderKind;
use crate::stream::ChatStream;
use crate::types::{ChatChunk, ChatRequest, ChatResponse, Message};
pub use crate::types::{Recovery, RecoveryMode};

/// What a continuation asks of a target that cannot take a prefill. The partial answer is
/// in the conversation just before it.
pub const CONTINUE_INSTRUCTION: &str = "Your previous answer was cut off. Continue it exactly \
where it stopped: do not repeat any of it, do not comment, just write the rest.";

/// What happens when a stream breaks after output reached the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AfterOutput {
    /// End with the original error, in band (the streaming contract).
    #[default]
    Fail,
    /// Continue the answer on another target (or the same one) and splice it on.
    Continue,
}

/// When and how a broken stream is repaired, per chain. The default repairs nothing: it is
/// today's contract, so recovery is opt-in.
///
/// ```
/// use std::time::Duration;
/// use llm_providers::recovery::{AfterOutput, RecoveryPolicy};
///
/// let policy: RecoveryPolicy = serde_json::from_str(
///     r#"{"after_output": "continue", "hold_back_tokens": 8, "hold_back_for": "750ms"}"#,
/// ).unwrap();
/// assert_eq!(policy.after_output, AfterOutput::Continue);
/// assert_eq!(policy.max_recoveries, 1);
/// policy.validate().unwrap();
///
/// let bad = RecoveryPolicy { max_recoveries: 0, ..RecoveryPolicy::continuing() };
/// assert_eq!(bad.validate().unwrap_err().field(), "max_recoveries");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryPolicy {
    /// After output reached the caller: continue, or fail clean.
    pub after_output: AfterOutput,
    /// Hold back the first this many content chunks (≈ tokens) from the caller; a failure
    /// before they are released restarts the answer on the next target, unseen (0: no hold
    /// by count).
    pub hold_back_tokens: u32,
    /// …or hold them back for this long after the first one arrived, whichever ends first.
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_back_for: Option<Duration>,
    /// Repairs (restarts and continuations) per request, at most.
    pub max_recoveries: u32,
    /// No repair starts, and none may still be running, this long after the request began.
    #[serde(with = "llm_core::config::duration")]
    pub deadline: Duration,
    /// Whether the target whose stream broke may continue its own answer when no other
    /// target can.
    pub same_target: bool,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            after_output: AfterOutput::Fail,
            hold_back_tokens: 0,
            hold_back_for: None,
            max_recoveries: 1,
            deadline: Duration::from_secs(120),
            same_target: true,
        }
    }
}

impl RecoveryPolicy {
    /// Continue broken answers, at most once per request, within 120 s.
    pub fn continuing() -> Self {
        RecoveryPolicy {
            after_output: AfterOutput::Continue,
            ..RecoveryPolicy::default()
        }
    }

    /// Hold back the first `tokens` chunks (at most `for_at_most`) and restart unseen when
    /// the stream breaks inside them; fail clean after.
    pub fn holding_back(tokens: u32, for_at_most: Duration) -> Self {
        RecoveryPolicy {
            hold_back_tokens: tokens,
            hold_back_for: Some(for_at_most),
            ..RecoveryPolicy::default()
        }
    }

    /// Whether this policy ever repairs anything.
    pub fn is_off(&self) -> bool {
        self.after_output == AfterOutput::Fail && !self.holds_back()
    }

    fn holds_back(&self) -> bool {
        self.hold_back_tokens > 0 || self.hold_back_for.is_some()
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_recoveries == 0 || self.max_recoveries > 10 {
            return Err(ConfigError::new(
                "max_recoveries",
                format!("must be from 1 to 10 (got {})", self.max_recoveries),
            ));
        }
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be longer than 0s"));
        }
        if let Some(hold) = self.hold_back_for {
            if hold.is_zero() || hold >= self.deadline {
                return Err(ConfigError::new(
                    "hold_back_for",
                    format!("must be longer than 0s and shorter than deadline ({hold:?})"),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a target accepts an assistant prefill (a conversation ending with the start of
/// the assistant's answer, which it continues).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Prefill {
    /// Decide by provider and model family ([`accepts_prefill`]).
    #[default]
    Auto,
    /// It does.
    Supported,
    /// It does not: continue with an instruction instead.
    Unsupported,
}

impl Prefill {
    /// Whether a target of `kind` serving `model` takes a prefill under this setting.
    pub fn applies(self, kind: ProviderKind, model: &str) -> bool {
        match self {
            Prefill::Supported => true,
            Prefill::Unsupported => false,
            Prefill::Auto => accepts_prefill(kind, model),
        }
    }
}

/// The defaults behind [`Prefill::Auto`]: Anthropic's Claude models before 4.6 (4.6 and
/// later answer a prefill with a 400), the same models through OpenRouter, and Ollama,
/// which continues a trailing assistant message. OpenAI-style chat APIs and Gemini treat a
/// trailing assistant message as history, not as the start of the answer: no.
///
/// ```
/// use llm_providers::ProviderKind;
/// use llm_providers::recovery::accepts_prefill;
///
/// assert!(accepts_prefill(ProviderKind::Anthropic, "claude-3-5-haiku-latest"));
/// assert!(accepts_prefill(ProviderKind::Anthropic, "claude-sonnet-4-5-20250929"));
/// assert!(!accepts_prefill(ProviderKind::Anthropic, "claude-opus-4-6"));
/// assert!(!accepts_prefill(ProviderKind::Anthropic, "claude-sonnet-5"));
/// assert!(accepts_prefill(ProviderKind::OpenRouter, "anthropic/claude-3.7-sonnet"));
/// assert!(accepts_prefill(ProviderKind::Ollama, "llama3.2"));
/// assert!(!accepts_prefill(ProviderKind::OpenAi, "gpt-4o"));
/// ```
pub fn accepts_prefill(kind: ProviderKind, model: &str) -> bool {
    match kind {
        ProviderKind::Anthropic => claude_accepts_prefill(model),
        ProviderKind::OpenRouter => model
            .strip_prefix("anthropic/")
            .is_some_and(claude_accepts_prefill),
        ProviderKind::Ollama => true,
        _ => false,
    }
}

/// Claude's version from its name (`claude-3-5-haiku-…`, `claude-sonnet-4-5`,
/// `claude-opus-4-20250514`, `claude-3.7-sonnet`): before 4.6 a prefill is accepted; an
/// unrecognised name is treated as new (no prefill).
fn claude_accepts_prefill(model: &str) -> bool {
    let Some(rest) = model.strip_prefix("claude-") else {
        return false;
    };
    // Version numbers are the short numeric parts; an 8-digit date is not one.
    let numbers: Vec<u32> = rest
        .split(['-', '.', '@'])
        .filter(|part| !part.is_empty() && part.len() <= 2)
        .filter_map(|part| part.parse().ok())
        .take(2)
        .collect();
    match numbers.as_slice() {
        [major, minor, ..] => (*major, *minor) < (4, 6),
        [major] => *major <= 4,
        [] => false,
    }
}

/// What `on_recovery` hooks see: a repair that succeeded, or one that could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// The answer goes on from another stream.
    Recovered(Recovery),
    /// No repair was possible or allowed; the caller gets the original error.
    Failed {
        /// The target whose stream broke.
        from: Arc<str>,
        /// Content chunks the caller had received.
        after_tokens: u32,
        /// How it broke.
        cause: ErrorKind,
        /// Why it was not repaired (`"budget"`, `"deadline"`, `"not allowed"`, `"too long to
        /// continue"`, `"no target answered"`).
        reason: &'static str,
    },
}

type Repair = Pin<Box<dyn Future<Output = Result<ChatStream, LlmError>> + Send>>;
type OnRecovery = Arc<dyn Fn(&RecoveryEvent) + Send + Sync>;

/// One target a broken answer may continue on.
pub struct RecoveryTarget<T> {
    name: Arc<str>,
    kind: ProviderKind,
    service: T,
    model: Option<String>,
    prefill: Prefill,
}

impl<T> RecoveryTarget<T> {
    /// A target named `name` (as its streams name their provider) of `kind`, calling
    /// `service` (its resilience stack, typically).
    pub fn new(name: impl Into<Arc<str>>, kind: ProviderKind, service: T) -> Self {
        RecoveryTarget {
            name: name.into(),
            kind,
            service,
            model: None,
            prefill: Prefill::Auto,
        }
    }

    /// Asks it for `model` instead of the request's.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Overrides whether it takes a prefill.
    #[must_use]
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }
}

impl<T> fmt::Debug for RecoveryTarget<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryTarget")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("prefill", &self.prefill)
            .finish_non_exhaustive()
    }
}

/// A streaming service a repair can call — what a [`RecoveryTarget`] wraps: a
/// [`StreamingProvider`](crate::StreamingProvider), or a resilience stack over one.
///
/// ```
/// use llm_providers::recovery::StreamTarget;
///
/// fn takes<T: StreamTarget>(_: T) {}
/// takes(llm_providers::Provider::ollama().build().unwrap().streaming());
/// ```
pub trait StreamTarget:
    Service<ChatRequest, Response = ChatStream, Error = LlmError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> StreamTarget for T where
    T: Service<ChatRequest, Response = ChatStream, Error = LlmError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The targets behind a recovering stream, type-erased so the stream is one type.
trait Targets: Send + Sync {
    fn len(&self) -> usize;
    fn name(&self, index: usize) -> &Arc<str>;
    fn takes_prefill(&self, index: usize, request_model: &str) -> bool;
    fn model(&self, index: usize) -> Option<&str>;
    fn call(&self, index: usize, request: ChatRequest) -> Repair;
}

impl<T: StreamTarget> Targets for Vec<RecoveryTarget<T>> {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn name(&self, index: usize) -> &Arc<str> {
        &self[index].name
    }

    fn takes_prefill(&self, index: usize, request_model: &str) -> bool {
        let target = &self[index];
        let model = target.model.as_deref().unwrap_or(request_model);
        target.prefill.applies(target.kind, model)
    }

    fn model(&self, index: usize) -> Option<&str> {
        self[index].model.as_deref()
    }

    fn call(&self, index: usize, request: ChatRequest) -> Repair {
        let mut service = self[index].service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        })
    }
}

struct Shared {
    targets: Box<dyn Targets>,
    policy: RecoveryPolicy,
    on_recovery: Option<OnRecovery>,
}

/// A streaming service whose broken answers are repaired as its [`RecoveryPolicy`] says.
/// See the [module docs](self).
///
/// A request may carry a `RecoveryPolicy` of its own in its extensions: it replaces the
/// chain's for that request (a caller whose answer must not be spliced, such as JSON
/// output, asks to fail clean or to hold back).
///
/// ```
/// use llm_providers::recovery::{RecoveryPolicy, RecoveryTarget, StreamRecovery};
/// use llm_providers::{Provider, ProviderKind};
///
/// let primary = Provider::openai().api_key("sk-…").build().unwrap().streaming();
/// let backup = Provider::anthropic().api_key("sk-ant-…").build().unwrap().streaming();
/// // The chain here is the primary alone; in practice, a Fallback over the targets' stacks.
/// let recovering = StreamRecovery::builder(primary.clone())
///     .target(RecoveryTarget::new("openai", ProviderKind::OpenAi, primary))
///     .target(RecoveryTarget::new("anthropic", ProviderKind::Anthropic, backup).model("claude-3-5-haiku-latest"))
///     .policy(RecoveryPolicy::continuing())
///     .on_recovery(|event| eprintln!("{event:?}"))
///     .build()
///     .unwrap();
/// # let _ = recovering;
/// ```
pub struct StreamRecovery<S> {
    chain: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for StreamRecovery<S> {
    fn clone(&self) -> Self {
        StreamRecovery {
            chain: self.chain.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for StreamRecovery<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecovery")
            .field("policy", &self.shared.policy)
            .field("targets", &self.shared.targets.len())
            .finish_non_exhaustive()
    }
}

impl<S> StreamRecovery<S> {
    /// A builder over `chain`, which answers each request first.
    pub fn builder<T>(chain: S) -> StreamRecoveryBuilder<S, T> {
        StreamRecoveryBuilder {
            chain,
            targets: Vec::new(),
            policy: RecoveryPolicy::default(),
            on_recovery: None,
        }
    }
}

/// Builds a [`StreamRecovery`].
pub struct StreamRecoveryBuilder<S, T> {
    chain: S,
    targets: Vec<RecoveryTarget<T>>,
    policy: RecoveryPolicy,
    on_recovery: Option<OnRecovery>,
}

impl<S, T> fmt::Debug for StreamRecoveryBuilder<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecoveryBuilder")
            .field("targets", &self.targets)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, T: StreamTarget> StreamRecoveryBuilder<S, T> {
    /// Adds a target repairs may go to, in the chain's order: a broken answer continues on
    /// the targets after the one that broke, then (with `same_target`) on that one.
    #[must_use]
    pub fn target(mut self, target: RecoveryTarget<T>) -> Self {
        self.targets.push(target);
        self
    }

    /// Sets the policy.
    #[must_use]
    pub fn policy(mut self, policy: RecoveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Calls `hook` on every repair made or given up.
    #[must_use]
    pub fn on_recovery(mut self, hook: impl Fn(&RecoveryEvent) + Send + Sync + 'static) -> Self {
        self.on_recovery = Some(Arc::new(hook));
        self
    }

    /// Checks the policy and builds the service.
    pub fn build(self) -> Result<StreamRecovery<S>, ConfigError> {
        self.policy.validate()?;
        if !self.policy.is_off() && self.targets.is_empty() {
            return Err(ConfigError::new(
                "targets",
                "must name at least one target to repair on",
            ));
        }
        Ok(StreamRecovery {
            chain: self.chain,
            shared: Arc::new(Shared {
                targets: Box::new(self.targets),
                policy: self.policy,
                on_recovery: self.on_recovery,
            }),
        })
    }
}

impl<S> Service<ChatRequest> for StreamRecovery<S>
where
    S: Service<ChatRequest, Response = ChatStream, Error = LlmError>,
    S::Future: Send + 'static,
{
    type Response = RecoveringStream;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<RecoveringStream, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.chain.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let first = self.chain.call(request.clone());
        Box::pin(async move {
            let stream = first.await?;
            Ok(RecoveringStream::new(stream, request, shared, started))
        })
    }
}

/// The most delivered text kept for a continuation (1 MiB): past it, a break fails clean.
const MAX_CONTINUABLE: usize = 1 << 20;

/// Removes what an instruction-form continuation repeats of the delivered text.
struct Overlap {
    delivered: String,
    pending: String,
}

/// How much continuation text is read before deciding that it diverged from the delivered
/// text and what of it overlaps.
const DECIDE_AFTER: usize = 64;
/// A shorter overlap between the end of the delivered text and the start of the
/// continuation is taken for coincidence, not repetition.
const MIN_OVERLAP: usize = 8;

impl Overlap {
    /// Feeds continuation text; `Some` is what goes to the caller once decided (the rest of
    /// the stream then passes unchanged).
    fn feed(&mut self, text: &str, at_end: bool) -> Option<String> {
        self.pending.push_str(text);
        let (delivered, pending) = (&self.delivered, &self.pending);
        if pending.starts_with(delivered.as_str()) {
            // It started the answer over: drop the part the caller has.
            return Some(pending[delivered.len()..].to_owned());
        }
        if delivered.starts_with(pending.as_str()) && !at_end {
            return None;
        }
        if pending.len() < DECIDE_AFTER && !at_end {
            return None;
        }
        // The longest start of the continuation that the delivered text ends with.
        let overlap = (MIN_OVERLAP..=pending.len().min(delivered.len()))
            .rev()
            .filter(|&k| pending.is_char_boundary(k))
            .find(|&k| delivered.ends_with(&pending[..k]))
            .unwrap_or(0);
        Some(pending[overlap..].to_owned())
    }
}

/// A repair under way.
struct Repairing {
    future: Repair,
    target: usize,
    mode: RecoveryMode,
    /// Targets still to try in this repair, in order.
    candidates: VecDeque<usize>,
}

/// The stream of a [`StreamRecovery`]: the chain's stream, repaired as the policy allows.
/// Items are chunks, then — if the answer could not be repaired — one `Err` with the
/// original failure. A repaired answer ends with a chunk carrying the [`Recovery`] and the
/// usage of every part.
pub struct RecoveringStream {
    shared: Arc<Shared>,
    request: ChatRequest,
    deadline: Instant,
    current: Option<ChatStream>,
    current_target: Option<Arc<str>>,
    repairing: Option<Repairing>,
    recoveries: u32,
    /// Text and content chunks the caller has received.
    delivered: String,
    delivered_tokens: u32,
    /// Held back from the caller (nothing delivered yet).
    holding: bool,
    held: VecDeque<ChatChunk>,
    held_tokens: u32,
    hold_timer: Option<Pin<Box<Sleep>>>,
    overlap: Option<Overlap>,
    out: VecDeque<Result<ChatChunk, LlmError>>,
    /// The break the current repair answers for: what the caller gets if it fails.
    cause: Option<LlmError>,
    usage_before: Option<Usage>,
    usage_now: Option<Usage>,
    recovery: Option<Recovery>,
    model: String,
    meta: ResponseMeta,
    observers: Vec<EndObserver>,
    ended: Option<Outcome>,
    // The chain's policy, or the one the request carries in its extensions.
    policy: RecoveryPolicy,
    // More was delivered than is kept for a continuation.
    too_long: bool,
    // Part of a tool call reached the caller: a continuation would splice inside it.
    tool_call_delivered: bool,
}

impl fmt::Debug for RecoveringStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveringStream")
            .field("provider", &self.current_target)
            .field("model", &self.model)
            .field("delivered_tokens", &self.delivered_tokens)
            .field("holding", &self.holding)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl RecoveringStream {
    fn new(
        stream: ChatStream,
        request: ChatRequest,
        shared: Arc<Shared>,
        started: Instant,
    ) -> Self {
        // NOTE: a request may narrow the chain's policy for itself (a caller that knows its
        // answer must not be spliced, such as JSON output, asks to fail clean).
        let policy = request
            .extensions()
            .get::<RecoveryPolicy>()
            .unwrap_or(&shared.policy)
            .clone();
        let holding = policy.holds_back();
        let hold_timer = policy
            .hold_back_for
            .map(|hold| Box::pin(tokio::time::sleep(hold)));
        let deadline = started + policy.deadline;
        RecoveringStream {
            deadline,
            current_target: Some(Arc::from(stream.provider())),
            model: stream.model().to_owned(),
            meta: stream.metadata().cloned().unwrap_or_default(),
            current: Some(stream),
            shared,
            request,
            repairing: None,
            recoveries: 0,
            delivered: String::new(),
            delivered_tokens: 0,
            holding,
            held: VecDeque::new(),
            held_tokens: 0,
            hold_timer,
            overlap: None,
            out: VecDeque::new(),
            cause: None,
            usage_before: None,
            usage_now: None,
            recovery: None,
            observers: Vec::new(),
            ended: None,
            policy,
            too_long: false,
            tool_call_delivered: false,
        }
    }

    /// The provider answering now (the one that finished the answer, after a repair).
    pub fn provider(&self) -> &str {
        self.current_target.as_deref().unwrap_or("")
    }

    /// The model answering, as its provider reported it: the first stream's, and after a
    /// repair the model that finishes the answer.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The repair made, if any.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Content chunks the caller has received so far.
    pub fn delivered_tokens(&self) -> u32 {
        self.delivered_tokens
    }

    /// Reads the rest of the stream into one [`ChatResponse`] — repaired as the policy
    /// allows — or the error that broke it. The answer names the provider that finished it.
    pub async fn collect(mut self) -> Result<ChatResponse, LlmError> {
        let mut answer = Assembler::default();
        while let Some(item) = std::future::poll_fn(|cx| Pin::new(&mut self).poll_next(cx)).await {
            answer.push(&item?);
        }
        Ok(answer.finish(self.provider(), self.model()))
    }

    fn hook(&self, event: &RecoveryEvent) {
        if let Some(hook) = &self.shared.on_recovery {
            hook(event);
        }
    }

    /// Hands a chunk to the caller (or to the hold), counting what was delivered.
    fn deliver(&mut self, chunk: ChatChunk) {
        if let Some(usage) = chunk.usage {
            self.usage_now = Some(usage);
        }
        if self.holding {
            if chunk.has_content() {
                self.held_tokens += 1;
            }
            self.held.push_back(chunk);
            let by_count = self.policy.hold_back_tokens;
            if by_count > 0 && self.held_tokens >= by_count {
                self.release();
            }
            return;
        }
        if !chunk.delta.is_empty() {
            self.keep_delivered(&chunk.delta);
        }
        if !chunk.tool_calls.is_empty() || !chunk.other_choices.is_empty() {
            // NOTE: a tool call (or a choice after the first) the caller has begun to read
            // cannot be finished by another answer: a break from here on fails clean.
            self.tool_call_delivered = true;
        }
        self.out.push_back(Ok(chunk));
    }

    /// Keeps what reached the caller, for a continuation, up to [`MAX_CONTINUABLE`] bytes:
    /// an answer longer than that (or an upstream that never stops) is not continued, and
    /// its memory stays bounded.
    fn keep_delivered(&mut self, delta: &str) {
        self.delivered_tokens += 1;
        if self.delivered.len() + delta.len() <= MAX_CONTINUABLE {
            self.delivered.push_str(delta);
        } else {
            self.too_long = true;
        }
    }

    /// Ends the hold: everything held goes to the caller.
    fn release(&mut self) {
        self.holding = false;
        self.hold_timer = None;
        while let Some(chunk) = self.held.pop_front() {
            self.deliver(chunk);
        }
    }

    /// The usage of the part that just broke or ended, estimated when it reported none.
    fn close_part(&mut self, part_tokens: u32) {
        let part = self.usage_now.take().unwrap_or_else(|| {
            let tokenizer = ApproxTokenizer::default();
            let prompt = self.request.prompt_tokens(&tokenizer);
            Usage::new(prompt, u64::from(part_tokens))
        });
        self.usage_before = Some(self.usage_before.map_or(part, |before| before + part));
    }

    /// The targets to try for a repair of a break on `broken`, in order.
    fn candidates(&self, broken: &str) -> VecDeque<usize> {
        let targets = &self.shared.targets;
        let n = targets.len();
        let at = (0..n).find(|&i| &**targets.name(i) == broken);
        let mut order: VecDeque<usize> = match at {
            Some(at) => (at + 1..n).collect(),
            None => (0..n).collect(),
        };
        if let (Some(at), true) = (at, self.policy.same_target) {
            order.push_back(at);
        }
        order
    }

    /// The request a repair on `target` sends.
    fn repair_request(&self, target: usize, mode: RecoveryMode) -> ChatRequest {
        let targets = &self.shared.targets;
        let mut request = self.request.clone();
        if let Some(model) = targets.model(target) {
            request.set_model(model);
        }
        match mode {
            RecoveryMode::Restarted => request,
            RecoveryMode::Prefill => {
                // Anthropic refuses a prefill ending in whitespace; the model supplies it.
                let prefill = self.delivered.trim_end().to_owned();
                let mut request = request.message(Message::assistant(prefill));
                if let Some(max) = self.request.max_tokens_limit() {
                    request.set_max_tokens(max.saturating_sub(self.delivered_tokens).max(1));
                }
                request
            }
            RecoveryMode::Instruction => request
                .message(Message::assistant(self.delivered.clone()))
                .user(CONTINUE_INSTRUCTION),
        }
    }

    /// Starts the next repair attempt from `candidates`; false when none is left.
    fn next_attempt(&mut self, mut candidates: VecDeque<usize>, restart: bool) -> bool {
        let Some(target) = candidates.pop_front() else {
            return false;
        };
        let model = self.request.model().to_owned();
        let mode = if restart {
            RecoveryMode::Restarted
        } else if self.shared.targets.takes_prefill(target, &model) {
            RecoveryMode::Prefill
        } else {
            RecoveryMode::Instruction
        };
        self.start(target, mode, candidates);
        true
    }

    fn start(&mut self, target: usize, mode: RecoveryMode, candidates: VecDeque<usize>) {
        let request = self.repair_request(target, mode);
        let call = self.shared.targets.call(target, request);
        let deadline = self.deadline;
        let future: Repair = Box::pin(async move {
            match tokio::time::timeout_at(deadline, call).await {
                Ok(result) => result,
                Err(_) => Err(LlmError::new(
                    ErrorKind::Timeout,
                    "the recovery deadline passed",
                )),
            }
        });
        tracing::debug!(
            target = %self.shared.targets.name(target),
            mode = mode.as_str(),
            "stream recovery: trying a repair"
        );
        self.repairing = Some(Repairing {
            future,
            target,
            mode,
            candidates,
        });
    }

    /// The current stream broke with `err`.
    fn broke(&mut self, err: LlmError) {
        let broken = self.current_target.clone().unwrap_or_else(|| Arc::from(""));
        let part_tokens = if self.holding {
            self.held_tokens
        } else {
            self.delivered_tokens
        };
        self.current = None;
        self.close_part(part_tokens);
        let policy = &self.policy;
        let restart = self.holding;
        let allowed = restart || policy.after_output == AfterOutput::Continue;
        let reason = if !allowed {
            Some("not allowed")
        } else if self.tool_call_delivered && !restart {
            Some("inside a tool call")
        } else if self.too_long && !restart {
            Some("too long to continue")
        } else if self.recoveries >= policy.max_recoveries {
            Some("budget")
        } else if Instant::now() >= self.deadline {
            Some("deadline")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.give_up(&broken, err, reason);
            return;
        }
        self.recoveries += 1;
        let candidates = self.candidates(&broken);
        self.cause = Some(err);
        if !self.next_attempt(candidates, restart) {
            let err = self.cause.take().expect("just set");
            self.give_up(&broken, err, "no target answered");
        }
    }

    /// No repair: the caller gets `err` — the original break — after what was delivered.
    fn give_up(&mut self, broken: &Arc<str>, err: LlmError, reason: &'static str) {
        if self.holding {
            // A failed restart after a hold: what was held is the answer so far.
            self.release();
        }
        tracing::warn!(
            from = %broken,
            after_tokens = self.delivered_tokens,
            cause = err.kind().as_str(),
            reason,
            "stream broke and was not recovered"
        );
        self.hook(&RecoveryEvent::Failed {
            from: broken.clone(),
            after_tokens: self.delivered_tokens,
            cause: err.kind(),
            reason,
        });
        self.finish(Outcome::failure(err.kind()));
        self.out.push_back(Err(err));
    }

    /// A repair attempt answered.
    fn repaired(&mut self, repairing: Repairing, result: Result<ChatStream, LlmError>) {
        let Repairing {
            target,
            mode,
            candidates,
            ..
        } = repairing;
        let name = self.shared.targets.name(target).clone();
        match result {
            Ok(stream) => {
                let cause = self.cause.take().expect("a repair has a cause");
                let from = self.current_target.replace(name.clone());
                let recovery = Recovery {
                    from: from.unwrap_or_else(|| Arc::from("")),
                    to: name,
                    after_tokens: self.delivered_tokens,
                    mode,
                    cause: cause.kind(),
                };
                tracing::warn!(
                    from = %recovery.from,
                    to = %recovery.to,
                    after_tokens = recovery.after_tokens,
                    mode = mode.as_str(),
                    cause = recovery.cause.as_str(),
                    "stream recovered"
                );
                self.hook(&RecoveryEvent::Recovered(recovery.clone()));
                self.recovery = Some(recovery);
                stream.model().clone_into(&mut self.model);
                self.meta.attempts += 1;
                if mode == RecoveryMode::Instruction {
                    self.overlap = Some(Overlap {
                        delivered: self.delivered.clone(),
                        pending: String::new(),
                    });
                }
                if mode == RecoveryMode::Restarted {
                    // Nothing reached the caller: the new answer replaces the held one, unseen.
                    self.held.clear();
                    self.held_tokens = 0;
                    self.holding = true;
                    self.hold_timer = self
                        .policy
                        .hold_back_for
                        .map(|hold| Box::pin(tokio::time::sleep(hold)));
                }
                self.current = Some(stream);
            }
            // A target refusing the prefill gets the instruction form instead; the 400
            // never reaches the caller.
            Err(err)
                if mode == RecoveryMode::Prefill && err.kind() == ErrorKind::InvalidRequest =>
            {
                tracing::debug!(target = %name, "prefill refused; continuing with an instruction");
                self.start(target, RecoveryMode::Instruction, candidates);
            }
            Err(err) => {
                tracing::debug!(target = %name, "repair attempt failed: {err}");
                let restart = mode == RecoveryMode::Restarted;
                if !self.next_attempt(candidates, restart) {
                    let cause = self.cause.take().expect("a repair has a cause");
                    let broken = self.current_target.clone().unwrap_or_else(|| Arc::from(""));
                    self.give_up(&broken, cause, "no target answered");
                }
            }
        }
    }

    /// The current stream ended complete.
    fn completed(&mut self) {
        self.current = None;
        if let Some(mut overlap) = self.overlap.take() {
            let rest = overlap.feed("", true).unwrap_or_default();
            if !rest.is_empty() {
                self.deliver(ChatChunk::text(rest));
            }
        }
        if self.holding {
            self.release();
        }
        if let Some(recovery) = &self.recovery {
            let part = self.usage_now.take();
            let total = match (self.usage_before, part) {
                (Some(before), Some(part)) => Some(before + part),
                (before, part) => before.or(part),
            };
            self.usage_now = total;
            self.out.push_back(Ok(ChatChunk {
                usage: total,
                recovery: Some(recovery.clone()),
                ..ChatChunk::default()
            }));
        }
        self.finish(Outcome::success());
    }

    fn finish(&mut self, outcome: Outcome) {
        self.ended = Some(outcome);
        let usage = self.usage();
        for observer in self.observers.drain(..) {
            observer.finish(StreamEnd::new(outcome, usage));
        }
    }

    /// One step of the state machine; `Ready(true)` when something may be yielded or the
    /// stream ended.
    fn advance(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(repairing) = &mut self.repairing {
            let result = std::task::ready!(repairing.future.as_mut().poll(cx));
            let repairing = self.repairing.take().expect("polled above");
            self.repaired(repairing, result);
            return Poll::Ready(());
        }
        if self.holding {
            if let Some(timer) = &mut self.hold_timer {
                if timer.as_mut().poll(cx).is_ready() {
                    self.release();
                    return Poll::Ready(());
                }
            }
        }
        let Some(stream) = &mut self.current else {
            return Poll::Ready(());
        };
        match std::task::ready!(Pin::new(stream).poll_next(cx)) {
            Some(Ok(mut chunk)) => {
                if let Some(overlap) = &mut self.overlap {
                    let usage = chunk.usage.take();
                    let finish = chunk.finish_reason.take();
                    let decided = overlap.feed(&chunk.delta, false);
                    if let Some(rest) = decided {
                        self.overlap = None;
                        chunk.delta = rest;
                    } else {
                        chunk.delta.clear();
                    }
                    chunk.usage = usage;
                    chunk.finish_reason = finish;
                    if !chunk.has_content()
                        && chunk.usage.is_none()
                        && chunk.finish_reason.is_none()
                    {
                        return Poll::Ready(());
                    }
                }
                self.deliver(chunk);
            }
            Some(Err(err)) => self.broke(err),
            None => self.completed(),
        }
        Poll::Ready(())
    }
}

impl Stream for RecoveringStream {
    type Item = Result<ChatChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(item) = this.out.pop_front() {
                return Poll::Ready(Some(item));
            }
            if this.ended.is_some() {
                return Poll::Ready(None);
            }
            std::task::ready!(this.advance(cx));
        }
    }
}

impl ObserveEnd for RecoveringStream {
    fn ends_later(&self) -> bool {
        self.ended.is_none()
    }

    fn observe_end(&mut self, observer: EndObserver) {
        match self.ended {
            None => self.observers.push(observer),
            Some(outcome) => observer.finish(StreamEnd::new(outcome, self.usage())),
        }
    }
}

impl ReportsUsage for RecoveringStream {
    /// Every part's usage added up, once the stream ended.
    fn usage(&self) -> Option<Usage> {
        self.ended?;
        match (self.recovery.is_some(), self.usage_now, self.usage_before) {
            (true, total, _) => total,
            (false, Some(now), _) => Some(now),
            (false, None, before) => before,
        }
    }
}

impl ResponseOutcome for RecoveringStream {
    fn response_outcome(&self) -> Outcome {
        Outcome::success()
    }
}

impl ResponseMetadata for RecoveringStream {
    fn metadata(&self) -> Option<&ResponseMeta> {
        Some(&self.meta)
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(&mut self.meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(delivered: &str) -> Overlap {
        Overlap {
            delivered: delivered.to_owned(),
            pending: String::new(),
        }
    }

    #[test]
    fn a_continuation_that_starts_over_loses_the_repeated_part() {
        let mut o = overlap("Alfa-1 Bravo-2");
        assert_eq!(o.feed("Alfa-1", false), None);
        assert_eq!(
            o.feed(" Bravo-2 Charlie-3", false).as_deref(),
            Some(" Charlie-3")
        );
    }

    #[test]
    fn a_continuation_repeating_the_last_words_loses_them() {
        let mut o = overlap("The capital of France is Paris, a city");
        let rest = o.feed(
            " is Paris, a city on the Seine. It has many museums and long avenues to walk.",
            false,
        );
        assert_eq!(
            rest.as_deref(),
            Some(" on the Seine. It has many museums and long avenues to walk.")
        );
    }

    #[test]
    fn a_clean_continuation_passes_whole_and_short_coincidences_stay() {
        let mut o = overlap("one two three");
        let text = " four five six seven eight nine ten eleven twelve thirteen fourteen";
        assert_eq!(o.feed(text, false).as_deref(), Some(text));
        let mut o = overlap("ends with e");
        assert_eq!(o.feed("e and more", true).as_deref(), Some("e and more"));
    }

    #[test]
    fn claude_versions_decide_prefill() {
        for (model, ok) in [
            ("claude-3-5-haiku-latest", true),
            ("claude-3-7-sonnet-20250219", true),
            ("claude-sonnet-4-20250514", true),
            ("claude-opus-4-1-20250805", true),
            ("claude-haiku-4-5", true),
            ("claude-opus-4-6", false),
            ("claude-sonnet-4-7", false),
            ("claude-opus-5", false),
            ("claude-next", false),
        ] {
            assert_eq!(claude_accepts_prefill(model), ok, "{model}");
        }
    }
}
