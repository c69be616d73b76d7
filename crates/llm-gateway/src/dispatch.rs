//! What every front door does once it has a provider-neutral request: find the route, call
//! its chain (complete or streamed) under the caller's key limit and the gateway's deadline,
//! and say who answered.

use std::convert::Infallible;

use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::future::Either;
use llm_providers::recovery::{AfterOutput, RecoveringStream, RecoveryPolicy};
use llm_providers::{ChatChunk, ChatRequest, ChatResponse, ProviderKind};
use llm_tower::LlmError;
use tower::{Layer, ServiceExt};

use super::attempts::AttemptLog;
use super::auth::{CallerKey, check_model};
use super::error::ApiError;
use super::gateway::{Current, Route};

/// The route for `model`, after checking the caller's key may use it; a 403 or a 404 naming
/// the routed models otherwise.
pub(crate) fn route_for<'a>(
    gw: &'a Current,
    caller: &CallerKey,
    model: &str,
) -> Result<&'a Route, ApiError> {
    check_model(caller, model)?;
    gw.route(model).ok_or_else(|| {
        let routed: Vec<&str> = gw.inner.routes.iter().map(|r| r.model.as_str()).collect();
        ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!(
                "the model {model:?} is not routed by this gateway (routed: {})",
                routed.join(", ")
            ))
            .param("model")
            .code("model_not_found")
        }
    })
}

/// The route's targets: name and wire format, in order.
pub(crate) fn targets(route: &Route) -> Vec<(&str, ProviderKind)> {
    route
        .chain
        .targets()
        .iter()
        .map(|(n, k)| (&**n, *k))
        .collect()
}

/// The caller's W3C trace context, when it sent a valid one (the front door reads it).
pub(crate) type Traced = Option<axum::Extension<llm_tower::TraceContext>>;

/// The trace context the upstreams get: the caller's, or, when the gateway exports spans, one
/// naming the gateway's own span in the caller's trace.
pub(crate) fn upstream_trace(trace: Traced) -> Option<llm_tower::TraceContext> {
    let trace = trace.map(|axum::Extension(context)| context);
    #[cfg(feature = "otlp")]
    let trace = super::telemetry::outgoing(trace);
    trace
}

/// A request on its way through a route, with the log of its attempts.
pub(crate) struct Call<'a> {
    gw: &'a Current,
    caller: &'a CallerKey,
    route: &'a Route,
    request: ChatRequest,
    /// Every attempt the request made, for the answer's headers.
    pub(crate) log: AttemptLog,
}

impl<'a> Call<'a> {
    /// `request` on `route`, with a fresh attempt log and the gateway's deadline. When the
    /// request asks for JSON, a broken stream is never continued by another model (JSON
    /// spliced from two answers is not JSON): it is held back or failed clean instead.
    pub(crate) fn new(
        gw: &'a Current,
        caller: &'a CallerKey,
        route: &'a Route,
        request: ChatRequest,
        trace: Traced,
    ) -> Call<'a> {
        let wants_json = request.response_format_value().is_some_and(|f| f.is_json());
        let (mut request, log) = gw.prepare(request);
        if let Some(context) = upstream_trace(trace) {
            request.extensions_mut().insert(context);
        }
        if wants_json && route.recovery.after_output == AfterOutput::Continue {
            request.extensions_mut().insert(RecoveryPolicy {
                after_output: AfterOutput::Fail,
                ..route.recovery.clone()
            });
        }
        Call {
            gw,
            caller,
            route,
            request,
            log,
        }
    }

    /// The whole answer.
    pub(crate) async fn complete(self) -> Result<(ChatResponse, AttemptLog), LlmError> {
        let chain = self.route.chain.chat();
        let limit = self.caller.as_ref().and_then(|key| key.limit.as_ref());
        let call = match limit {
            Some(limit) => Either::Left(limit.layer(chain).oneshot(self.request)),
            None => Either::Right(chain.oneshot(self.request)),
        };
        let answer = self.gw.within_deadline(call).await?;
        Ok((answer, self.log))
    }

    /// The whole answer, written by `write` (the door's body for it), with who answered in
    /// the headers; a failure as the door's error.
    pub(crate) async fn respond(
        self,
        write: impl FnOnce(&ChatResponse) -> Response,
    ) -> Result<Response, ApiError> {
        let (answer, log) = self
            .complete()
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = write(&answer);
        annotate(&mut response, &answer.provider, &log);
        Ok(response)
    }

    /// The answer streamed as `writer` writes it, once its first chunk is in; a failure
    /// before it as the door's error.
    pub(crate) async fn respond_streamed(
        self,
        writer: impl StreamWriter,
    ) -> Result<Response, ApiError> {
        let (stream, log) = self
            .stream()
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        Ok(sse(stream, writer, &log))
    }

    /// The answer as a stream, once its first chunk is in.
    pub(crate) async fn stream(self) -> Result<(RecoveringStream, AttemptLog), LlmError> {
        let chain = self.route.chain.stream();
        let limit = self.caller.as_ref().and_then(|key| key.limit.as_ref());
        let call = match limit {
            Some(limit) => Either::Left(limit.layer(chain).oneshot(self.request)),
            None => Either::Right(chain.oneshot(self.request)),
        };
        let stream = self.gw.within_deadline(call).await?;
        Ok((stream, self.log))
    }
}

/// Says who answered and after how many attempts, for clients that want to know.
pub(crate) fn annotate(response: &mut Response, provider: &str, log: &AttemptLog) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-gateway-provider", value);
    }
    headers.insert(
        "x-gateway-attempts",
        HeaderValue::from(log.upstream_calls()),
    );
}

/// How a front door writes a stream: the events for each chunk, the ones that close a
/// complete answer, and the ones that end a stream broken after its first chunk.
pub(crate) trait StreamWriter: Send + 'static {
    /// The events for `chunk` from `model`; `Err`: the stream ends with these events.
    fn chunk(&mut self, model: &str, chunk: &ChatChunk) -> Result<Vec<Event>, Vec<Event>>;
    /// The events after the last chunk of a complete answer.
    fn finish(&mut self, model: &str) -> Vec<Event>;
    /// The events that say the answer broke (never a bare close, which clients take for a
    /// complete answer).
    fn fail(&mut self, model: &str, err: &ApiError) -> Vec<Event>;
}

/// `stream` as server-sent events written by `writer`, with who answered in the headers.
///
/// NOTE: axum's `Sse` writes the events and the stream headers; its keep-alive comments keep
/// proxies from closing a stream whose model thinks for a long time, and every front door's
/// clients drop comments.
pub(crate) fn sse(
    stream: RecoveringStream,
    writer: impl StreamWriter,
    log: &AttemptLog,
) -> Response {
    let provider = stream.provider().to_owned();
    let events = futures_util::stream::unfold(Some((stream, writer)), |state| async move {
        let (mut stream, mut writer) = state?;
        // NOTE: after a repair the stream names the model that finishes the answer.
        let (events, more) = match stream.next().await {
            Some(Ok(chunk)) => match writer.chunk(stream.model(), &chunk) {
                Ok(events) => (events, true),
                Err(events) => (events, false),
            },
            Some(Err(err)) => {
                tracing::warn!(
                    provider = stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    stream.provider()
                );
                (
                    writer.fail(stream.model(), &ApiError::from_llm(&err)),
                    false,
                )
            }
            None => (writer.finish(stream.model()), false),
        };
        Some((events, more.then_some((stream, writer))))
    })
    .flat_map(|events| futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>)));
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response();
    annotate(&mut response, &provider, log);
    response
}
