//! The providers' metrics (feature `metrics`): OpenTelemetry's GenAI client metrics and the
//! tokens counted by type. Names and labels are in [`llm_core::metrics`]; without the feature
//! every record is an empty inline function.

use std::time::Duration;

use llm_core::{ErrorKind, Usage};

use crate::kind::{Operation, ProviderKind};

/// Who made a call, as its metrics name it: the provider's name and wire format, and its
/// series.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) struct Caller<'a> {
    pub(crate) name: &'a str,
    pub(crate) kind: ProviderKind,
    pub(crate) meters: &'a Meters,
}

/// A provider's series for each operation, built at their first use so that a record
/// allocates nothing. A clone starts empty: a renamed provider builds its own.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    #[cfg(feature = "metrics")]
    chat: std::sync::OnceLock<enabled::OperationSeries>,
    #[cfg(feature = "metrics")]
    embeddings: std::sync::OnceLock<enabled::OperationSeries>,
}

impl Clone for Meters {
    fn clone(&self) -> Self {
        Meters::default()
    }
}

#[cfg(feature = "metrics")]
mod enabled {
    use llm_core::metrics::{
        CounterSeries, HistogramSeries, OPERATION_DURATION, STREAM_RECOVERIES, TIME_TO_FIRST_CHUNK,
        TOKEN_USAGE, TOKENS,
    };

    use super::{Caller, Duration, ErrorKind, Operation, Usage};

    /// The series of one operation of one provider.
    #[derive(Debug)]
    pub(super) struct OperationSeries {
        duration: HistogramSeries,
        usage: [HistogramSeries; 2],
        tokens: [CounterSeries; 5],
        first_chunk: HistogramSeries,
    }

    const TOKEN_TYPES: [&str; 5] = [
        "input",
        "output",
        "cached_input",
        "cache_creation",
        "reasoning",
    ];

    fn labels<'a>(caller: &Caller<'a>, operation: Operation) -> [(&'static str, &'a str); 3] {
        [
            ("gen_ai.operation.name", operation.as_str()),
            ("gen_ai.provider.name", caller.kind.otel_name()),
            ("llm.upstream", caller.name),
        ]
    }

    impl Caller<'_> {
        fn operation(&self, operation: Operation) -> &OperationSeries {
            let slot = match operation {
                Operation::Chat => &self.meters.chat,
                Operation::Embeddings => &self.meters.embeddings,
            };
            slot.get_or_init(|| {
                let common = labels(self, operation);
                let [a, b, c] = common;
                OperationSeries {
                    duration: HistogramSeries::new(OPERATION_DURATION, &common),
                    usage: ["input", "output"].map(|token_type| {
                        HistogramSeries::new(
                            TOKEN_USAGE,
                            &[a, b, c, ("gen_ai.token.type", token_type)],
                        )
                    }),
                    tokens: TOKEN_TYPES.map(|token_type| {
                        CounterSeries::new(TOKENS, &[("upstream", self.name), ("type", token_type)])
                    }),
                    first_chunk: HistogramSeries::new(TIME_TO_FIRST_CHUNK, &common),
                }
            })
        }
    }

    pub(crate) fn call_ended(
        caller: &Caller<'_>,
        operation: Operation,
        elapsed: Duration,
        outcome: Result<Option<Usage>, ErrorKind>,
    ) {
        let usage = match outcome {
            Ok(usage) => usage,
            Err(kind) => {
                // NOTE: built per failure: failures are few, and their kinds many.
                let [a, b, c] = labels(caller, operation);
                HistogramSeries::new(
                    OPERATION_DURATION,
                    &[a, b, c, ("error.type", kind.as_str())],
                )
                .record(elapsed.as_secs_f64());
                return;
            }
        };
        let series = caller.operation(operation);
        series.duration.record(elapsed.as_secs_f64());
        let Some(usage) = usage else { return };
        series.usage[0].record(usage.input_tokens as f64);
        series.usage[1].record(usage.output_tokens as f64);
        let counts = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_input_tokens,
            usage.cache_creation_tokens,
            usage.reasoning_tokens,
        ];
        for (counter, n) in series.tokens.iter().zip(counts) {
            if n > 0 {
                counter.increment(n);
            }
        }
    }

    pub(crate) fn first_chunk(caller: &Caller<'_>, operation: Operation, elapsed: Duration) {
        caller
            .operation(operation)
            .first_chunk
            .record(elapsed.as_secs_f64());
    }

    pub(crate) fn stream_recovery(from: &str, to: &str, mode: &str, outcome: &str) {
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
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::{call_ended, first_chunk, stream_recovery};

/// A call of `operation` (`chat`, `embeddings`) ended after `elapsed`, with the usage it
/// reported or how it failed.
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn call_ended(
    _caller: &Caller<'_>,
    _operation: Operation,
    _elapsed: Duration,
    _outcome: Result<Option<Usage>, ErrorKind>,
) {
}

/// A stream of `operation` delivered its first content after `elapsed`.
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn first_chunk(_caller: &Caller<'_>, _operation: Operation, _elapsed: Duration) {}

/// A stream broken after `from` delivered content was repaired on `to` by `mode`
/// (`outcome` "recovered"), or not (`outcome` why, `to` and `mode` empty).
#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(crate) fn stream_recovery(_from: &str, _to: &str, _mode: &str, _outcome: &str) {}
