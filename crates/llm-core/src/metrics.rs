//! The metrics the llm-tower layers record, one table of names and labels for every crate.
//!
//! With their `metrics` feature on, the layers and providers record through the
//! [`metrics`](https://docs.rs/metrics) facade: install any recorder (Prometheus,
//! OpenTelemetry, StatsD…) and they appear; with none, each record is a no-op. The names
//! and labels below are stable across releases; a label's values are bounded — the names
//! you gave your layers, breakers and upstreams, error kinds, states — never request ids,
//! models a client chose freely, or free text.
//!
//! | name | type | labels | recorded by |
//! |---|---|---|---|
//! | `llm_attempts_total` | counter | `upstream`, `outcome` (`ok` or an [`ErrorKind`](crate::ErrorKind) name) | retry layer, each attempt |
//! | `llm_retries_total` | counter | `upstream`, `kind` (the failure retried) | retry layer |
//! | `llm_retry_give_ups_total` | counter | `upstream`, `reason` (`retries_exhausted`, `not_retryable`, `handed_over`, …) | retry layer |
//! | `llm_fallbacks_total` | counter | `from`, `to`, `reason` (an error kind, or `hedged`) | fallback layer |
//! | `llm_breaker_state` | gauge | `breaker` | breaker layer: 0 closed, 1 half open, 2 open, 3 forced open, 4 disabled |
//! | `llm_breaker_transitions_total` | counter | `breaker`, `from`, `to` | breaker layer |
//! | `llm_breaker_rejections_total` | counter | `breaker` | breaker layer |
//! | `llm_ratelimit_admissions_total` | counter | `limiter` | rate-limit layer, each call let through |
//! | `llm_ratelimit_waits_total` | counter | `limiter` | rate-limit layer, each call held back before it was let through |
//! | `llm_ratelimit_wait_seconds` | histogram | `limiter` | rate-limit layer, the wait of each held call |
//! | `llm_ratelimit_rejections_total` | counter | `limiter` | rate-limit layer |
//! | `llm_ratelimit_available_requests` | gauge | `limiter` | rate-limit layer, after each admission |
//! | `llm_ratelimit_available_tokens` | gauge | `limiter` | rate-limit layer, after each admission (limits with a token budget) |
//! | `llm_pool_picks_total` | counter | `pool`, `member` | balance layer, each request sent to a member (a request moved to another member counts again) |
//! | `llm_pool_member_outs_total` | counter | `pool`, `member`, `reason` (`unauthorized`, `rate_limited`, `quota_exceeded`, `local_rate_limited`) | balance layer, each member taken out of rotation |
//! | `llm_pool_member_available` | gauge | `pool`, `member` | balance layer: 1 in rotation, 0 out (set when it goes out and when it is back) |
//! | `llm_pool_refusals_total` | counter | `pool`, `reason` (the kind of the member back soonest) | balance layer, requests no member could take |
//! | `llm_tokens_total` | counter | `upstream`, `type` (`input`, `output`, `cached_input`, `cache_creation`, `reasoning`) | providers |
//! | `llm_stream_recoveries_total` | counter | `from`, `to` (empty if not repaired), `mode` (`prefill`, `instruction`, `restarted`, or empty), `outcome` (`recovered`, or why not: `budget`, `deadline`, `not_allowed`, …) | providers' stream recovery |
//! | `gen_ai.client.operation.duration` | histogram (s) | `gen_ai.operation.name`, `gen_ai.provider.name`, `llm.upstream`, `error.type` (failures) | providers, each call (streams: until the last chunk) |
//! | `gen_ai.client.token.usage` | histogram | `gen_ai.operation.name`, `gen_ai.provider.name`, `llm.upstream`, `gen_ai.token.type` (`input`, `output`) | providers |
//! | `gen_ai.client.operation.time_to_first_chunk` | histogram (s) | `gen_ai.operation.name`, `gen_ai.provider.name`, `llm.upstream` | providers, streams |
//!
//! `upstream`, `limiter` and `breaker` are the names given to the layers (`name(…)` on
//! their builders; an [`Upstream`](https://docs.rs/llm-tower) names all three, a per-model
//! breaker is `upstream/model`); a layer without a name records an empty label. The three
//! `gen_ai.client.*` metrics are OpenTelemetry's GenAI client metrics; their
//! `gen_ai.request.model` attribute is left out, as a model a caller names freely would be
//! an unbounded label (`llm.upstream` names the configured upstream instead). A Prometheus
//! exporter writes their dots as underscores.
//!
//! Series whose labels are known when a layer is built are built once, and each record
//! finds the recorder current at that moment ([`metrics::with_recorder`]): a recorder
//! installed after the layers were built, or one scoped to a task
//! ([`metrics::with_local_recorder`], as the gateway scopes its own), still receives them.
//! A series keeps the handle of the first real recorder it records into, so that a record
//! into that recorder again allocates nothing and looks nothing up.

/// Attempts by outcome.
pub const ATTEMPTS: &str = "llm_attempts_total";
/// Retries by the kind of failure retried.
pub const RETRIES: &str = "llm_retries_total";
/// Calls the retry layer stopped retrying, by reason.
pub const RETRY_GIVE_UPS: &str = "llm_retry_give_ups_total";
/// Moves from one fallback target to the next.
pub const FALLBACKS: &str = "llm_fallbacks_total";
/// A breaker's state, as a number (see [`breaker_state_value`]).
pub const BREAKER_STATE: &str = "llm_breaker_state";
/// Breaker state changes.
pub const BREAKER_TRANSITIONS: &str = "llm_breaker_transitions_total";
/// Calls a breaker refused.
pub const BREAKER_REJECTIONS: &str = "llm_breaker_rejections_total";
/// Calls a rate limiter let through.
pub const RATELIMIT_ADMISSIONS: &str = "llm_ratelimit_admissions_total";
/// Calls a rate limiter held back before letting them through.
pub const RATELIMIT_WAITS: &str = "llm_ratelimit_waits_total";
/// How long a held call waited.
pub const RATELIMIT_WAIT_SECONDS: &str = "llm_ratelimit_wait_seconds";
/// Calls a rate limiter refused.
pub const RATELIMIT_REJECTIONS: &str = "llm_ratelimit_rejections_total";
/// Requests a limiter could admit now.
pub const RATELIMIT_AVAILABLE_REQUESTS: &str = "llm_ratelimit_available_requests";
/// Tokens a limiter could admit now.
pub const RATELIMIT_AVAILABLE_TOKENS: &str = "llm_ratelimit_available_tokens";
/// Requests a pool sent to a member.
pub const POOL_PICKS: &str = "llm_pool_picks_total";
/// Members a pool took out of rotation, by reason.
pub const POOL_MEMBER_OUTS: &str = "llm_pool_member_outs_total";
/// Whether a pool's member is in rotation (1) or out (0).
pub const POOL_MEMBER_AVAILABLE: &str = "llm_pool_member_available";
/// Requests no member of a pool could take.
pub const POOL_REFUSALS: &str = "llm_pool_refusals_total";
/// Tokens the providers reported, by type.
pub const TOKENS: &str = "llm_tokens_total";
/// Broken streams repaired, or not.
pub const STREAM_RECOVERIES: &str = "llm_stream_recoveries_total";
/// OpenTelemetry's `gen_ai.client.operation.duration`.
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// OpenTelemetry's `gen_ai.client.token.usage`.
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// OpenTelemetry's `gen_ai.client.operation.time_to_first_chunk`.
pub const TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";

/// The value [`BREAKER_STATE`] records for a state, by its `snake_case` name: 0 closed,
/// 1 half open, 2 open, 3 forced open, 4 disabled.
pub fn breaker_state_value(state: &str) -> f64 {
    match state {
        "closed" => 0.0,
        "half_open" => 1.0,
        "open" => 2.0,
        "forced_open" => 3.0,
        _ => 4.0,
    }
}

/// Gives the current recorder the help text (and unit) of every metric in the table above,
/// for exporters that print it (Prometheus's `# HELP`).
#[cfg(feature = "metrics")]
pub fn describe() {
    use ::metrics::Unit;

    const COUNTERS: [(&str, &str); 14] = [
        (POOL_PICKS, "Requests a pool sent to each member"),
        (
            POOL_MEMBER_OUTS,
            "Members a pool took out of rotation, by reason",
        ),
        (
            POOL_REFUSALS,
            "Requests no member of a pool could take, by the reason of the member back soonest",
        ),
        (
            ATTEMPTS,
            "Attempts on an upstream by outcome (ok, or the error kind; circuit_open and local_rate_limited were refused locally)",
        ),
        (
            RETRIES,
            "Retries on an upstream, by the kind of failure retried",
        ),
        (
            RETRY_GIVE_UPS,
            "Calls an upstream's retry layer stopped retrying, by reason",
        ),
        (FALLBACKS, "Moves from one fallback target to the next"),
        (BREAKER_TRANSITIONS, "Circuit breaker state changes"),
        (BREAKER_REJECTIONS, "Calls a circuit breaker refused"),
        (
            RATELIMIT_ADMISSIONS,
            "Calls the local rate limiter let through",
        ),
        (
            RATELIMIT_WAITS,
            "Calls the local rate limiter held back before sending",
        ),
        (RATELIMIT_REJECTIONS, "Calls the local rate limiter refused"),
        (
            STREAM_RECOVERIES,
            "Broken streams repaired (outcome recovered) or not (outcome: why)",
        ),
        (
            TOKENS,
            "Tokens providers reported, by type: input, output, and of them cached_input, cache_creation, reasoning",
        ),
    ];

    const GAUGES: [(&str, &str); 4] = [
        (
            POOL_MEMBER_AVAILABLE,
            "Whether a pool's member is in rotation (1) or out (0)",
        ),
        (
            BREAKER_STATE,
            "Circuit breaker state: 0 closed, 1 half open, 2 open, 3 forced open, 4 disabled",
        ),
        (
            RATELIMIT_AVAILABLE_REQUESTS,
            "Requests the local rate limiter could admit now",
        ),
        (
            RATELIMIT_AVAILABLE_TOKENS,
            "Tokens the local rate limiter could admit now",
        ),
    ];

    const HISTOGRAMS: [(&str, &str, bool); 4] = [
        (
            RATELIMIT_WAIT_SECONDS,
            "How long the local rate limiter held a call",
            true,
        ),
        (
            OPERATION_DURATION,
            "GenAI operation duration (streams: until the last chunk)",
            true,
        ),
        (
            TOKEN_USAGE,
            "Tokens per GenAI operation, by gen_ai.token.type",
            false,
        ),
        (
            TIME_TO_FIRST_CHUNK,
            "Time to the first chunk of a streamed GenAI operation",
            true,
        ),
    ];

    ::metrics::with_recorder(|recorder| {
        for (name, help) in COUNTERS {
            recorder.describe_counter(name.into(), None, help.into());
        }
        for (name, help) in GAUGES {
            recorder.describe_gauge(name.into(), None, help.into());
        }
        for (name, help, seconds) in HISTOGRAMS {
            let unit = seconds.then_some(Unit::Seconds);
            recorder.describe_histogram(name.into(), unit, help.into());
        }
    });
}

#[cfg(feature = "metrics")]
pub use series::{CounterSeries, GaugeSeries, HistogramSeries};

#[cfg(feature = "metrics")]
mod series {
    use std::sync::OnceLock;

    use ::metrics::{Key, Label, Level, Metadata};

    static METADATA: Metadata<'static> =
        Metadata::new("llm_tower", Level::INFO, Some(module_path!()));

    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect();
        Key::from_parts(name, labels)
    }

    /// A recorder's identity: its address. `None` for a zero-sized recorder — the facade's
    /// no-op one (with no recorder installed) — whose handles are not worth keeping.
    fn identity(recorder: &dyn ::metrics::Recorder) -> Option<usize> {
        (size_of_val(recorder) != 0)
            .then_some(recorder as *const dyn ::metrics::Recorder as *const () as usize)
    }

    /// Whether `recorder` is the facade's no-op recorder (current when none is installed),
    /// whose records can be skipped: its vtable is `NoopRecorder`'s.
    ///
    /// NOTE: compares vtables without `unsafe` (`with_addr` gives our pointer the other's
    /// address, `ptr::eq` then compares what is left: the vtables). A vtable duplicated
    /// across codegen units only makes this `false`, and the record goes through the
    /// recorder as before; two types whose vtables were merged have the same code, which for
    /// `NoopRecorder`'s methods ignores `self` and does nothing. Skipping saves the virtual
    /// call and the handle's construction: BENCHMARKS.md.
    #[inline]
    fn is_noop(recorder: &dyn ::metrics::Recorder) -> bool {
        static NOOP: ::metrics::NoopRecorder = ::metrics::NoopRecorder;
        let theirs: *const dyn ::metrics::Recorder = recorder;
        let ours: *const dyn ::metrics::Recorder = &NOOP;
        #[allow(ambiguous_wide_pointer_comparisons)]
        std::ptr::eq(theirs, ours.with_addr(theirs.addr()))
    }

    macro_rules! series {
        ($(#[$doc:meta])* $name:ident, $handle:ty, $register:ident, $method:ident($arg:ty)) => {
            $(#[$doc])*
            ///
            /// NOTE: the handle of the first real recorder it records into is kept: a record
            /// into that recorder again is an atomic operation, not a lookup of the key (with
            /// `metrics-exporter-prometheus`, 1,390 instructions a record instead of about
            /// 50: BENCHMARKS.md). Any other recorder current at a record still gets it,
            /// through a lookup.
            #[derive(Debug)]
            pub struct $name {
                key: Key,
                kept: OnceLock<(usize, $handle)>,
            }

            impl $name {
                /// The series `name` with `labels`.
                pub fn new(name: &'static str, labels: &[(&'static str, &str)]) -> Self {
                    $name {
                        key: key(name, labels),
                        kept: OnceLock::new(),
                    }
                }

                /// Records `value` through the current recorder.
                #[inline]
                pub fn $method(&self, value: $arg) {
                    ::metrics::with_recorder(|recorder| {
                        if is_noop(recorder) {
                            return;
                        }
                        let Some(id) = identity(recorder) else {
                            recorder.$register(&self.key, &METADATA).$method(value);
                            return;
                        };
                        match self.kept.get() {
                            Some((kept, handle)) if *kept == id => handle.$method(value),
                            Some(_) => recorder.$register(&self.key, &METADATA).$method(value),
                            None => {
                                let handle = recorder.$register(&self.key, &METADATA);
                                handle.$method(value);
                                let _ = self.kept.set((id, handle));
                            }
                        }
                    });
                }
            }

            impl Clone for $name {
                fn clone(&self) -> Self {
                    $name {
                        key: self.key.clone(),
                        kept: self.kept.clone(),
                    }
                }
            }
        };
    }

    series!(
        /// A counter whose labels are fixed: built once, incremented without allocating.
        CounterSeries, ::metrics::Counter, register_counter, increment(u64)
    );
    series!(
        /// A gauge whose labels are fixed: built once, set without allocating.
        GaugeSeries, ::metrics::Gauge, register_gauge, set(f64)
    );
    series!(
        /// A histogram whose labels are fixed: built once, recorded without allocating.
        HistogramSeries, ::metrics::Histogram, register_histogram, record(f64)
    );

    #[cfg(test)]
    mod tests {
        use super::*;
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};

        #[test]
        fn a_zero_sized_recorder_of_the_users_gets_every_record() {
            use std::sync::atomic::{AtomicU64, Ordering};

            // Stateless, as the no-op recorder is, but forwarding somewhere: not skipped.
            static COUNTED: AtomicU64 = AtomicU64::new(0);
            struct Forwarding;
            impl ::metrics::CounterFn for Forwarding {
                fn increment(&self, value: u64) {
                    COUNTED.fetch_add(value, Ordering::Relaxed);
                }
                fn absolute(&self, _: u64) {}
            }
            impl ::metrics::Recorder for Forwarding {
                fn describe_counter(
                    &self,
                    _: ::metrics::KeyName,
                    _: Option<::metrics::Unit>,
                    _: ::metrics::SharedString,
                ) {
                }
                fn describe_gauge(
                    &self,
                    _: ::metrics::KeyName,
                    _: Option<::metrics::Unit>,
                    _: ::metrics::SharedString,
                ) {
                }
                fn describe_histogram(
                    &self,
                    _: ::metrics::KeyName,
                    _: Option<::metrics::Unit>,
                    _: ::metrics::SharedString,
                ) {
                }
                fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> ::metrics::Counter {
                    ::metrics::Counter::from_arc(std::sync::Arc::new(Forwarding))
                }
                fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> ::metrics::Gauge {
                    ::metrics::Gauge::noop()
                }
                fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> ::metrics::Histogram {
                    ::metrics::Histogram::noop()
                }
            }
            let counter = CounterSeries::new(crate::metrics::ATTEMPTS, &[("upstream", "z")]);
            counter.increment(5);
            assert!(!is_noop(&Forwarding));
            ::metrics::with_local_recorder(&Forwarding, || counter.increment(2));
            ::metrics::with_local_recorder(&Forwarding, || counter.increment(3));
            assert_eq!(COUNTED.load(Ordering::Relaxed), 5);
        }

        #[test]
        fn a_series_reaches_the_recorder_current_at_each_record() {
            let counter = CounterSeries::new(crate::metrics::ATTEMPTS, &[("upstream", "a")]);
            // No recorder yet: a no-op.
            counter.increment(1);
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            ::metrics::with_local_recorder(&recorder, || counter.increment(2));
            let values: Vec<_> = snapshotter.snapshot().into_vec();
            assert_eq!(values.len(), 1);
            let (key, _, _, value) = &values[0];
            assert_eq!(key.key().name(), "llm_attempts_total");
            assert_eq!(
                key.key()
                    .labels()
                    .map(|l| (l.key(), l.value()))
                    .collect::<Vec<_>>(),
                [("upstream", "a")]
            );
            assert_eq!(value, &DebugValue::Counter(2));

            // The first recorder's handle is kept; another recorder current later still
            // gets what is recorded while it is.
            ::metrics::with_local_recorder(&recorder, || counter.increment(3));
            let other = DebuggingRecorder::new();
            let other_snapshotter = other.snapshotter();
            ::metrics::with_local_recorder(&other, || counter.increment(4));
            let count = |s: &metrics_util::debugging::Snapshotter| match s.snapshot().into_vec()[..]
            {
                [(_, _, _, DebugValue::Counter(n))] => n,
                _ => panic!("one counter"),
            };
            assert_eq!(count(&snapshotter), 3);
            assert_eq!(count(&other_snapshotter), 4);
        }
    }
}
