//! [`ChatStream`]: a streamed answer under the streaming contract.

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use http::HeaderMap;
use llm_core::{
    EndObserver, ErrorKind, LlmError, ObserveEnd, Outcome, RateLimitInfo, ReportsUsage,
    ResponseMeta, ResponseMetadata, ResponseOutcome, StreamEnd, Usage,
};
use tokio::time::{Instant, Sleep};

use crate::assemble::Assembler;
use crate::decode::Framing;
use crate::inner::{Inner, fmt_duration, named, request_id};
use crate::kind::Operation;
use crate::types::{ChatChunk, ChatResponse, FinishReason};
use crate::wire::{Step, StreamParser};

/// The most a stream may buffer without completing a line: a server that never sends a
/// newline must not grow our memory without bound.
const MAX_PENDING_LINE: usize = 8 << 20;

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A streamed answer: a `Stream` of [`ChatChunk`]s.
///
/// The first content chunk had arrived when the stream was handed over. The stream ends
/// after the provider's terminator (`[DONE]`, `message_stop`, `done: true`; a finish reason
/// followed by a clean end of body counts for OpenAI-style servers and Gemini). Any other end
/// — a cut, a stall past the idle timeout, an error event, a malformed chunk, the total
/// timeout — is one `Err(StreamInterrupted)` item, after which the stream ends: a truncated
/// answer is never presented as complete.
///
/// Layers see its end through [`ObserveEnd`]: the breaker records a stream that broke, the
/// limiter reconciles the usage reported at its end; dropping the stream reports
/// `Cancelled`.
pub struct ChatStream {
    inner: Arc<Inner>,
    body: Option<Body>,
    decoder: Framing,
    parser: StreamParser,
    queue: VecDeque<ChatChunk>,
    timer: Pin<Box<Sleep>>,
    deadline: Instant,
    // When the call started: the stream's time to first chunk and duration count from it.
    started: Instant,
    // The call's span, open until the stream ends or is dropped.
    span: tracing::Span,
    idle: Duration,
    /// Content has reached (or is about to reach) the caller: later errors are in band.
    delivered: bool,
    /// The terminator arrived or the stream failed; `Some` is how it ended.
    end: Option<Result<(), LlmError>>,
    /// The error to yield after the queue drains.
    failure: Option<LlmError>,
    observers: Vec<EndObserver>,
    requested_model: String,
    request_id: Option<String>,
    rate_limit: RateLimitInfo,
    meta: ResponseMeta,
    text_len: usize,
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatStream")
            .field("provider", &self.inner.name)
            .field("model", &self.model())
            .field("queued", &self.queue.len())
            .field("finished", &self.end.is_some())
            .finish_non_exhaustive()
    }
}

impl ChatStream {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        requested_model: String,
        headers: &HeaderMap,
        body: Body,
        ndjson: bool,
        started: Instant,
        first_token: Duration,
        total: Duration,
        span: tracing::Span,
    ) -> ChatStream {
        let kind = inner.kind;
        let idle = inner.timeouts.idle;
        ChatStream {
            inner,
            body: Some(body),
            decoder: Framing::new(ndjson),
            parser: StreamParser::new(kind),
            queue: VecDeque::new(),
            timer: Box::pin(tokio::time::sleep_until(started + first_token)),
            deadline: started + total,
            started,
            span,
            idle,
            delivered: false,
            end: None,
            failure: None,
            observers: Vec::new(),
            requested_model,
            request_id: request_id(headers),
            rate_limit: RateLimitInfo::from_headers(headers, std::time::SystemTime::now()),
            meta: ResponseMeta::new(),
            text_len: 0,
        }
    }

    /// The provider that is answering.
    pub fn provider(&self) -> &str {
        &self.inner.name
    }

    /// The model answering, as the provider reported it (the requested one until it says).
    pub fn model(&self) -> &str {
        self.parser
            .model
            .as_deref()
            .unwrap_or(&self.requested_model)
    }

    /// The provider's request id header.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// The rate-limit headers of the response.
    pub fn rate_limit(&self) -> RateLimitInfo {
        self.rate_limit
    }

    /// The finish reason, once the model stopped.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.parser.finish.as_ref()
    }

    /// Whether the terminator arrived (the answer is complete).
    pub fn is_complete(&self) -> bool {
        matches!(self.end, Some(Ok(())))
    }

    /// Reads the rest of the stream into one [`ChatResponse`] — or the error that broke it.
    pub async fn collect(mut self) -> Result<ChatResponse, LlmError> {
        let mut answer = Assembler::with_capacity(self.text_len);
        while let Some(item) = poll_fn(|cx| Pin::new(&mut self).poll_next(cx)).await {
            answer.push(&item?);
        }
        let mut res = answer.finish(&self.inner.name, self.model());
        res.finish_reason = self.parser.finish.clone();
        res.usage = self.parser.usage;
        res.request_id = self.request_id.clone();
        res.rate_limit = self.rate_limit;
        res.meta = self.meta.clone();
        Ok(res)
    }

    /// Reads until the first content chunk is queued (or the stream ended cleanly without
    /// content); an error before it is returned as it is (not `StreamInterrupted`).
    pub(crate) async fn wait_for_first_content(&mut self) -> Result<(), LlmError> {
        poll_fn(|cx| {
            loop {
                if self.queue.iter().any(ChatChunk::has_content) || self.end.is_some() {
                    if let Some(err) = self.failure.take() {
                        return Poll::Ready(Err(err));
                    }
                    return Poll::Ready(Ok(()));
                }
                match self.poll_body(cx) {
                    Poll::Ready(()) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await?;
        self.delivered = true;
        let now = Instant::now();
        crate::metrics::first_chunk(&self.inner.caller(), Operation::Chat, now - self.started);
        let next = self.idle_deadline(now);
        self.timer.as_mut().reset(next);
        Ok(())
    }

    fn idle_deadline(&self, now: Instant) -> Instant {
        (now + self.idle).min(self.deadline)
    }

    fn fail(&mut self, err: LlmError) {
        let err = named(err, &self.inner);
        self.finish(Outcome::failure(err.kind()));
        self.failure = Some(err);
    }

    /// An error in the current phase: its own kind before delivery, `StreamInterrupted` after.
    fn phase_error(&self, kind: ErrorKind, what: String) -> LlmError {
        let err = if self.delivered {
            LlmError::new(
                ErrorKind::StreamInterrupted,
                format!("stream failed after output began: {what}"),
            )
        } else {
            LlmError::new(kind, what)
        };
        err.with_provider(self.inner.name.to_string())
    }

    fn finish(&mut self, outcome: Outcome) {
        self.body = None;
        self.end = Some(if outcome.is_success() {
            Ok(())
        } else {
            Err(LlmError::new(
                outcome.kind().unwrap_or(ErrorKind::Other),
                "stream failed",
            ))
        });
        let end = StreamEnd::new(outcome, self.parser.usage);
        match outcome.kind() {
            None => crate::spans::answered(&self.span, self.model(), None, None, self.parser.usage),
            Some(kind) => crate::spans::failed(&self.span, kind),
        }
        crate::metrics::call_ended(
            &self.inner.caller(),
            Operation::Chat,
            self.started.elapsed(),
            match outcome.kind() {
                None => Ok(self.parser.usage),
                Some(kind) => Err(kind),
            },
        );
        for observer in self.observers.drain(..) {
            observer.finish(end);
        }
        tracing::debug!(
            gen_ai.provider.name = self.inner.kind.otel_name(),
            llm.upstream = %self.inner.name,
            gen_ai.response.model = self.model(),
            gen_ai.usage.input_tokens = self.parser.usage.map(|u| u.input_tokens),
            gen_ai.usage.output_tokens = self.parser.usage.map(|u| u.output_tokens),
            error.type = outcome.kind().map(|k| k.as_str()),
            "stream ended"
        );
    }

    /// Reads from the body until something changed (a chunk queued, the stream ended) or
    /// nothing is available. `Ready(())` means "look again".
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(());
        };
        match body.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let now = Instant::now();
                if self.delivered {
                    let next = self.idle_deadline(now);
                    self.timer.as_mut().reset(next);
                }
                self.decode(&bytes);
                Poll::Ready(())
            }
            Poll::Ready(Some(Err(err))) => {
                let what = format!("the connection broke: {}", err.without_url());
                let err = self.phase_error(ErrorKind::Network, what);
                self.fail(err);
                Poll::Ready(())
            }
            Poll::Ready(None) => {
                self.end_of_body();
                Poll::Ready(())
            }
            Poll::Pending => {
                if self.timer.as_mut().poll(cx).is_ready() {
                    let now = Instant::now();
                    let what = if now >= self.deadline {
                        "the call exceeded its total timeout".to_owned()
                    } else if self.delivered {
                        format!("no data for {}", fmt_duration(self.idle))
                    } else {
                        format!(
                            "no first token within {}",
                            fmt_duration(self.inner.timeouts.first_token)
                        )
                    };
                    let err = self.phase_error(ErrorKind::Timeout, what);
                    self.fail(err);
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
    }

    fn decode(&mut self, bytes: &[u8]) {
        let inner = self.inner.clone();
        let secrets = inner.secrets();
        self.decoder.push(bytes);
        while let Some((event, data)) = self.decoder.next_event() {
            if self.step(event.as_deref(), &data, &secrets) {
                return;
            }
        }
        let pending = self.decoder.buffered();
        if pending > MAX_PENDING_LINE {
            let err = self.phase_error(
                ErrorKind::ServerError,
                format!("malformed response: {pending} bytes without a line break"),
            );
            self.fail(err);
        }
    }

    /// Applies one event; true when the stream ended.
    fn step(&mut self, event: Option<&str>, data: &str, secrets: &[&str]) -> bool {
        // NOTE: content queued but not yet handed over still counts as delivered once the
        // call resolved; before that, an error replaces the queued content (the call fails).
        match self.parser.event(event, data, self.delivered, secrets) {
            Ok(Step::Nothing) => false,
            Ok(Step::Chunk(chunk)) => {
                self.text_len += chunk.delta.len();
                self.queue.push_back(chunk);
                false
            }
            Ok(Step::Done(chunk)) => {
                self.queue.extend(chunk);
                self.finish(Outcome::success());
                true
            }
            Err(err) => {
                self.fail(err);
                true
            }
        }
    }

    fn end_of_body(&mut self) {
        if let Some(line) = self.decoder.finish() {
            let inner = self.inner.clone();
            let secrets = inner.secrets();
            if self.step(None, &line, &secrets) {
                return;
            }
        }
        if self.parser.complete_at_eof() {
            self.finish(Outcome::success());
        } else {
            let err = self.phase_error(
                ErrorKind::Network,
                "the stream ended before its terminator (truncated answer)".to_owned(),
            );
            self.fail(err);
        }
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk, LlmError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(chunk) = this.queue.pop_front() {
                return Poll::Ready(Some(Ok(chunk)));
            }
            if let Some(err) = this.failure.take() {
                return Poll::Ready(Some(Err(err)));
            }
            if this.end.is_some() {
                return Poll::Ready(None);
            }
            if this.poll_body(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl ObserveEnd for ChatStream {
    fn ends_later(&self) -> bool {
        self.end.is_none()
    }

    fn observe_end(&mut self, observer: EndObserver) {
        match &self.end {
            None => self.observers.push(observer),
            Some(end) => {
                let outcome = match end {
                    Ok(()) => Outcome::success(),
                    Err(err) => Outcome::failure(err.kind()),
                };
                observer.finish(StreamEnd::new(outcome, self.parser.usage));
            }
        }
    }
}

impl ReportsUsage for ChatStream {
    fn usage(&self) -> Option<Usage> {
        self.end.as_ref().and(self.parser.usage)
    }
}

impl ResponseOutcome for ChatStream {
    fn response_outcome(&self) -> Outcome {
        Outcome::success().with_rate_limit(self.rate_limit)
    }
}

impl ResponseMetadata for ChatStream {
    fn metadata(&self) -> Option<&ResponseMeta> {
        Some(&self.meta)
    }

    fn metadata_mut(&mut self) -> Option<&mut ResponseMeta> {
        Some(&mut self.meta)
    }
}
