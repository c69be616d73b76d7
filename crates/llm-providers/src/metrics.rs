//! The providers' metrics (feature `metrics`): OpenTelemetry's GenAI client metrics and the
//! tokens counted by type. Names and labels are in [`llm_core::metrics`]; without the feature
//! every record is an empty inline function.
//!
//! NOTE: the series are built per call (a few small allocations), not once per provider: a
//! provider call already builds a JSON body, a URL and headers, and a provider is renamed
//! by cloning.

use std::time::Duration;

use llm_core::{ErrorKind, Usage};

use crate::inner::Inner;

/// A call of `operation` (`chat`, `embeddings`) ended after `elapsed`, with the usage it
/// reported or how it failed.
#[cfg(feature = "metrics")]
pub(crate) fn call_ended(
    inner: &Inner,
    operation: &'static str,
    elapsed: Duration,
    outcome: Result<Option<Usage>, ErrorKind>,
) {
    use llm_core::metrics::{
        CounterSeries, HistogramSeries, OPERATION_DURATION, TOKEN_USAGE, TOKENS,
    };

    let provider = inner.kind.otel_name();
    let common = [
        ("gen_ai.operation.name", operation),
        ("gen_ai.provider.name", provider),
        ("llm.upstream", &*inner.name),
    ];
    let usage = match outcome {
        Ok(usage) => {
            HistogramSeries::new(OPERATION_DURATION, &common).record(elapsed.as_secs_f64());
            usage
        }
        Err(kind) => {
            let [a, b, c] = common;
            HistogramSeries::new(
                OPERATION_DURATION,
                &[a, b, c, ("error.type", kind.as_str())],
            )
            .record(elapsed.as_secs_f64());
            return;
        }
    };
    let Some(usage) = usage else { return };
    for (token_type, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
    ] {
        let [a, b, c] = common;
        HistogramSeries::new(TOKEN_USAGE, &[a, b, c, ("gen_ai.token.type", token_type)])
            .record(n as f64);
    }
    for (token_type, n) in [
        ("input", usage.input_tokens),
        ("output", usage.output_tokens),
        ("cached_input", usage.cached_input_tokens),
        ("cache_creation", usage.cache_creation_tokens),
        ("reasoning", usage.reasoning_tokens),
    ] {
        if n > 0 {
            CounterSeries::new(TOKENS, &[("upstream", &inner.name), ("type", token_type)])
                .increment(n);
        }
    }
}

/// A stream of `operation` delivered its first content after `elapsed`.
#[cfg(feature = "metrics")]
pub(crate) fn first_chunk(inner: &Inner, operation: &'static str, elapsed: Duration) {
    use llm_core::metrics::{HistogramSeries, TIME_TO_FIRST_CHUNK};

    HistogramSeries::new(
        TIME_TO_FIRST_CHUNK,
        &[
            ("gen_ai.operation.name", operation),
            ("gen_ai.provider.name", inner.kind.otel_name()),
            ("llm.upstream", &inner.name),
        ],
    )
    .record(elapsed.as_secs_f64());
}

/// A stream broken after `from` delivered content was repaired on `to` by `mode`
/// (`outcome` "recovered"), or not (`outcome` why, `to` and `mode` empty).
#[cfg(feature = "metrics")]
pub(crate) fn stream_recovery(from: &str, to: &str, mode: &str, outcome: &str) {
    use llm_core::metrics::{CounterSeries, STREAM_RECOVERIES};

    let outcome = outcome.replace(' ', "_");
    CounterSeries::new(
        STREAM_RECOVERIES,
        &[
            ("from", from),
            ("to", to),
            ("mode", mode),
            ("outcome", &outcome),
        ],
    )
    .increment(1);
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn stream_recovery(_from: &str, _to: &str, _mode: &str, _outcome: &str) {}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn call_ended(
    _inner: &Inner,
    _operation: &'static str,
    _elapsed: Duration,
    _outcome: Result<Option<Usage>, ErrorKind>,
) {
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn first_chunk(_inner: &Inner, _operation: &'static str, _elapsed: Duration) {}
