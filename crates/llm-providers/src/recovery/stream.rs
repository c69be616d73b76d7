//! [`RecoveringStream`]: the repair state machine.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use llm_core::{
    ApproxTokenizer, EndObserver, ErrorKind, LlmError, ModelRequest, ObserveEnd, Outcome,
    ReportsUsage, ResponseMeta, ResponseMetadata, ResponseOutcome, StreamEnd, Usage,
};
use tokio::time::{Instant, Sleep};

use super::event::RecoveryEvent;
use super::overlap::Overlap;
use super::policy::{AfterOutput, CONTINUE_INSTRUCTION, RecoveryPolicy};
use super::shared::Shared;
use super::target::Repair;
use crate::assemble::Assembler;
use crate::stream::ChatStream;
use crate::types::{ChatChunk, ChatRequest, ChatResponse, Message};
use crate::types::{Recovery, RecoveryMode};

/// The most delivered text kept for a continuation (1 MiB): past it, a break fails clean.
pub(crate) const MAX_CONTINUABLE: usize = 1 << 20;

/// A repair under way.
pub(crate) struct Repairing {
    pub(crate) future: Repair,
    pub(crate) target: usize,
    pub(crate) mode: RecoveryMode,
    /// Targets still to try in this repair, in order.
    pub(crate) candidates: VecDeque<usize>,
}

/// The stream of a [`StreamRecovery`](super::StreamRecovery): the chain's stream, repaired as the policy allows.
/// Items are chunks, then — if the answer could not be repaired — one `Err` with the
/// original failure. A repaired answer ends with a chunk carrying the [`Recovery`] and the
/// usage of every part.
pub struct RecoveringStream {
    pub(crate) shared: Arc<Shared>,
    pub(crate) request: ChatRequest,
    pub(crate) deadline: Instant,
    pub(crate) current: Option<ChatStream>,
    pub(crate) current_target: Option<Arc<str>>,
    pub(crate) repairing: Option<Repairing>,
    pub(crate) recoveries: u32,
    /// Text and content chunks the caller has received.
    pub(crate) delivered: String,
    pub(crate) delivered_tokens: u32,
    /// Held back from the caller (nothing delivered yet).
    pub(crate) holding: bool,
    pub(crate) held: VecDeque<ChatChunk>,
    pub(crate) held_tokens: u32,
    pub(crate) hold_timer: Option<Pin<Box<Sleep>>>,
    pub(crate) overlap: Option<Overlap>,
    pub(crate) out: VecDeque<Result<ChatChunk, LlmError>>,
    /// The break the current repair answers for: what the caller gets if it fails.
    pub(crate) cause: Option<LlmError>,
    pub(crate) usage_before: Option<Usage>,
    pub(crate) usage_now: Option<Usage>,
    pub(crate) recovery: Option<Recovery>,
    pub(crate) model: String,
    pub(crate) meta: ResponseMeta,
    pub(crate) observers: Vec<EndObserver>,
    pub(crate) ended: Option<Outcome>,
    // The chain's policy, or the one the request carries in its extensions.
    pub(crate) policy: RecoveryPolicy,
    // More was delivered than is kept for a continuation.
    pub(crate) too_long: bool,
    // Part of a tool call reached the caller: a continuation would splice inside it.
    pub(crate) tool_call_delivered: bool,
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
    pub(crate) fn new(
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
        match event {
            RecoveryEvent::Recovered(r) => {
                crate::metrics::stream_recovery(&r.from, &r.to, r.mode.as_str(), "recovered");
            }
            RecoveryEvent::Failed { from, reason, .. } => {
                crate::metrics::stream_recovery(from, "", "", reason);
            }
        }
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
