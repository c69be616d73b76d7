//! `GET /metrics`: Prometheus counters and histograms fed by the layers' hooks.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

type Labels<const N: usize> = [(&'static str, String); N];
type Histograms = Family<Labels<1>, Histogram, fn() -> Histogram>;

/// Latency buckets from 5 ms to about 80 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The gateway's metrics; clones share them.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<Labels<2>, Counter>,
    request_seconds: Histograms,
    attempts: Family<Labels<2>, Counter>,
    attempt_seconds: Histograms,
    retries: Family<Labels<2>, Counter>,
    fallbacks: Family<Labels<3>, Counter>,
    breaker_transitions: Family<Labels<3>, Counter>,
    limiter_waits: Family<Labels<1>, Counter>,
    limiter_rejections: Family<Labels<1>, Counter>,
    local_rejections: Family<Labels<2>, Counter>,
    connections_refused: Counter,
    tokens: Family<Labels<2>, Counter>,
    stream_interruptions: Family<Labels<1>, Counter>,
    stream_recoveries: Family<Labels<4>, Counter>,
    // The 200 count and the latency of each of `HOT_ENDPOINTS`, looked up once.
    hot_requests: [(Counter, Histogram); 2],
}

/// A metric registered under `name`, with its help text.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let r = &mut registry;
        let histograms = || Histograms::new_with_constructor(latency_histogram);
        let requests: Family<Labels<2>, Counter> = register(
            r,
            "requests",
            "Gateway requests by endpoint and HTTP status",
            Family::default(),
        );
        let request_seconds = register(
            r,
            "request_duration_seconds",
            "Gateway request latency by endpoint (streams: until the first chunk)",
            histograms(),
        );
        let attempts = register(
            r,
            "upstream_attempts",
            "Attempts on a provider by outcome (ok, or the error kind; circuit_open and local_rate_limited were refused locally)",
            Family::default(),
        );
        let attempt_seconds = register(
            r,
            "upstream_attempt_duration_seconds",
            "Latency of one attempt on a provider",
            histograms(),
        );
        let retries = register(
            r,
            "retries",
            "Retries scheduled on a provider, by the kind of failure retried",
            Family::default(),
        );
        let fallbacks = register(
            r,
            "fallbacks",
            "Moves from one provider to the next",
            Family::default(),
        );
        let breaker_transitions = register(
            r,
            "breaker_transitions",
            "Circuit breaker state changes",
            Family::default(),
        );
        let limiter_waits = register(
            r,
            "limiter_waits",
            "Requests the local rate limiter held back before sending",
            Family::default(),
        );
        let limiter_rejections = register(
            r,
            "limiter_rejections",
            "Requests the local rate limiter refused",
            Family::default(),
        );
        let local_rejections = register(
            r,
            "local_rejections",
            "Calls our own breaker or limiter refused before they reached the provider",
            Family::default(),
        );
        let connections_refused = register(
            r,
            "connections_refused",
            "Client connections closed at once: the gateway held max_connections",
            Counter::default(),
        );
        let tokens = register(
            r,
            "tokens",
            "Tokens providers reported, by type: input, output, and of them cached_input, cache_creation, reasoning",
            Family::default(),
        );
        let stream_interruptions = register(
            r,
            "stream_interruptions",
            "Streams that broke after their first chunk",
            Family::default(),
        );
        let stream_recoveries = register(
            r,
            "stream_recoveries",
            "Broken streams repaired (outcome recovered) or not (outcome: why)",
            Family::default(),
        );
        let hot_requests = HOT_ENDPOINTS.map(|endpoint| {
            let ok = [
                ("endpoint", endpoint.to_owned()),
                ("status", "200".to_owned()),
            ];
            (
                requests.get_or_create(&ok).clone(),
                request_seconds
                    .get_or_create(&[("endpoint", endpoint.to_owned())])
                    .clone(),
            )
        });
        Metrics {
            inner: Arc::new(Inner {
                hot_requests,
                registry,
                requests,
                request_seconds,
                attempts,
                attempt_seconds,
                retries,
                fallbacks,
                breaker_transitions,
                limiter_waits,
                limiter_rejections,
                local_rejections,
                connections_refused,
                tokens,
                stream_interruptions,
                stream_recoveries,
            }),
        }
    }
}

/// The series one provider's successful attempts touch, looked up once: a lookup in a
/// family allocates its labels and takes a lock, on every call.
#[derive(Clone)]
pub(crate) struct ProviderSeries {
    name: Arc<str>,
    attempts_ok: Counter,
    attempt_seconds: Histogram,
    input_tokens: Counter,
    output_tokens: Counter,
    cached_input_tokens: Counter,
    cache_creation_tokens: Counter,
    reasoning_tokens: Counter,
}

impl ProviderSeries {
    /// One attempt ended with `outcome` after `elapsed`.
    pub(crate) fn attempt(&self, metrics: &Metrics, outcome: &str, elapsed: Duration) {
        if outcome == "ok" {
            self.attempts_ok.inc();
            self.attempt_seconds.observe(elapsed.as_secs_f64());
        } else {
            metrics.attempt(&self.name, outcome, elapsed);
        }
    }

    /// The provider reported `usage`: input and output tokens, and of them the cached,
    /// cache-written and reasoning ones.
    pub(crate) fn tokens(&self, usage: &llm_tower::Usage) {
        self.input_tokens.inc_by(usage.input_tokens);
        self.output_tokens.inc_by(usage.output_tokens);
        // NOTE: zero for most answers; skipping the atomic add keeps the hot path as it was.
        for (counter, n) in [
            (&self.cached_input_tokens, usage.cached_input_tokens),
            (&self.cache_creation_tokens, usage.cache_creation_tokens),
            (&self.reasoning_tokens, usage.reasoning_tokens),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

/// The endpoints whose successes are counted through series looked up once.
const HOT_ENDPOINTS: [&str; 2] = ["/v1/chat/completions", "/api/chat"];

impl Metrics {
    /// The series of `provider`'s successful attempts.
    pub(crate) fn provider_series(&self, provider: &Arc<str>) -> ProviderSeries {
        let inner = &self.inner;
        let label = || ("provider", provider.to_string());
        let tokens = |direction: &str| {
            let labels = [label(), ("type", direction.to_owned())];
            inner.tokens.get_or_create(&labels).clone()
        };
        ProviderSeries {
            name: provider.clone(),
            attempts_ok: (inner.attempts)
                .get_or_create(&[label(), ("outcome", "ok".to_owned())])
                .clone(),
            attempt_seconds: inner.attempt_seconds.get_or_create(&[label()]).clone(),
            input_tokens: tokens("input"),
            output_tokens: tokens("output"),
            cached_input_tokens: tokens("cached_input"),
            cache_creation_tokens: tokens("cache_creation"),
            reasoning_tokens: tokens("reasoning"),
        }
    }

    /// A request to `endpoint` answered `status` after `elapsed`.
    pub(crate) fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        let inner = &self.inner;
        if status == 200 {
            if let Some(i) = HOT_ENDPOINTS.iter().position(|e| *e == endpoint) {
                let (ok, seconds) = &inner.hot_requests[i];
                ok.inc();
                seconds.observe(elapsed.as_secs_f64());
                return;
            }
        }
        inner
            .requests
            .get_or_create(&[
                ("endpoint", endpoint.to_owned()),
                ("status", status.to_string()),
            ])
            .inc();
        inner
            .request_seconds
            .get_or_create(&[("endpoint", endpoint.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// One attempt on `provider` ended with `outcome` after `elapsed`.
    pub(crate) fn attempt(&self, provider: &str, outcome: &str, elapsed: Duration) {
        let inner = &self.inner;
        inner
            .attempts
            .get_or_create(&[
                ("provider", provider.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        inner
            .attempt_seconds
            .get_or_create(&[("provider", provider.to_owned())])
            .observe(elapsed.as_secs_f64());
    }

    /// A retry on `provider` after a failure of `kind`.
    pub(crate) fn retry(&self, provider: &str, kind: &str) {
        self.inner
            .retries
            .get_or_create(&[("provider", provider.to_owned()), ("kind", kind.to_owned())])
            .inc();
    }

    /// The chain moved from `from` to `to` because of `reason`.
    pub(crate) fn fallback(&self, from: &str, to: &str, reason: &str) {
        self.inner
            .fallbacks
            .get_or_create(&[
                ("from", from.to_owned()),
                ("to", to.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// `provider`'s breaker went from `from` to `to`.
    pub(crate) fn breaker_transition(&self, provider: &str, from: &str, to: &str) {
        self.inner
            .breaker_transitions
            .get_or_create(&[
                ("provider", provider.to_owned()),
                ("from", from.to_owned()),
                ("to", to.to_owned()),
            ])
            .inc();
    }

    /// `provider`'s limiter held a request back.
    pub(crate) fn limiter_wait(&self, provider: &str) {
        self.inner
            .limiter_waits
            .get_or_create(&[("provider", provider.to_owned())])
            .inc();
    }

    /// `provider`'s limiter refused a request.
    pub(crate) fn limiter_rejection(&self, provider: &str) {
        self.inner
            .limiter_rejections
            .get_or_create(&[("provider", provider.to_owned())])
            .inc();
    }

    /// Our own breaker or limiter refused a call to `provider` (`reason`: `circuit_open`,
    /// `local_rate_limited`).
    pub(crate) fn local_rejection(&self, provider: &str, reason: &str) {
        self.inner
            .local_rejections
            .get_or_create(&[
                ("provider", provider.to_owned()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// A client connection was closed at once: the gateway held its cap.
    pub(crate) fn connection_refused(&self) {
        self.inner.connections_refused.inc();
    }

    /// A stream from `provider` broke after its first chunk.
    pub(crate) fn stream_interrupted(&self, provider: &str) {
        self.inner
            .stream_interruptions
            .get_or_create(&[("provider", provider.to_owned())])
            .inc();
    }

    /// A broken stream from `from` was repaired on `to` by `mode` (`outcome` "recovered"), or
    /// not (`outcome` the reason, `to` and `mode` empty).
    pub(crate) fn stream_recovery(&self, from: &str, to: &str, mode: &str, outcome: &str) {
        self.inner
            .stream_recoveries
            .get_or_create(&[
                ("from", from.to_owned()),
                ("to", to.to_owned()),
                ("mode", mode.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.inner.registry).expect("writing to a String cannot fail");
        text
    }
}
