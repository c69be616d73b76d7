//! The span of each provider call — an upstream attempt — as OpenTelemetry's GenAI
//! conventions describe an inference (`chat gpt-4o`, a client span): what was asked of whom
//! when it starts, what came back when it ends. No message content is recorded.

use llm_core::{ErrorKind, Usage};
use tracing::Span;
use tracing::field::Empty;

use crate::inner::Inner;
use crate::kind::Operation;

/// A call of `operation` (`chat`, `embeddings`) to `inner` for `model`.
pub(crate) fn attempt(inner: &Inner, operation: Operation, model: &str, stream: bool) -> Span {
    let span = tracing::info_span!(
        "gen_ai.client",
        otel.name = Empty,
        otel.kind = "client",
        gen_ai.operation.name = operation.as_str(),
        gen_ai.provider.name = inner.kind.otel_name(),
        gen_ai.request.model = model,
        server.address = inner.base.host_str(),
        server.port = inner.base.port_or_known_default(),
        llm.upstream = &*inner.name,
        llm.stream = stream,
        gen_ai.response.model = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        span.record("otel.name", format!("{} {model}", operation.as_str()));
    }
    span
}

/// The call answered: the model that answered, the answer's id and finish reason, its usage.
pub(crate) fn answered(
    span: &Span,
    model: &str,
    id: Option<&str>,
    finish_reason: Option<&str>,
    usage: Option<Usage>,
) {
    if span.is_disabled() {
        return;
    }
    span.record("gen_ai.response.model", model);
    if let Some(id) = id {
        span.record("gen_ai.response.id", id);
    }
    if let Some(reason) = finish_reason {
        span.record("gen_ai.response.finish_reasons", reason);
    }
    if let Some(usage) = usage {
        span.record("gen_ai.usage.input_tokens", usage.input_tokens)
            .record("gen_ai.usage.output_tokens", usage.output_tokens);
    }
}

/// The call failed.
pub(crate) fn failed(span: &Span, kind: ErrorKind) {
    span.record("error.type", kind.as_str());
}
