//! The gateway's metrics registry: a Prometheus recorder of the `metrics` facade that the
//! layers and providers record into (their names: `llm_tower::metrics`), with the front
//! door's own series beside them. `GET /metrics` renders it.
//!
//! Each gateway has a recorder of its own, made current while its requests and their
//! response bodies are polled ([`RecordInto`](super::recording::RecordInto)): two gateways
//! in one process — tests, or an app serving two — keep their counts apart, and an app's
//! own global recorder is left alone. The binary also installs it globally, for what runs
//! outside a request (a breaker change another instance published through Redis).

use std::sync::Arc;
use std::time::Duration;

use llm_tower::ConfigError;
use llm_tower::metrics::{CounterSeries, HistogramSeries};
use metrics::Recorder;

use super::config::TelemetryConfig;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by endpoint and HTTP status.
const REQUESTS: &str = "gateway_requests_total";
/// Request latency by endpoint (streams: until the first chunk).
const REQUEST_SECONDS: &str = "gateway_request_duration_seconds";
/// Client connections closed at once: the gateway held `max_connections`.
const CONNECTIONS_REFUSED: &str = "gateway_connections_refused_total";

/// OpenTelemetry's advice for GenAI durations, in seconds (10 ms to 82 s).
const SECONDS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// OpenTelemetry's advice for `gen_ai.client.token.usage` (1 to 67 M tokens).
const TOKENS: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// The gateway's metrics; clones share them.
#[derive(Clone)]
pub(crate) struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    // Prometheus's recorder, or it and the OTLP exporter's side by side.
    recorder: Arc<dyn Recorder + Send + Sync>,
    handle: PrometheusHandle,
    // The OTLP metrics exporter's provider, kept for as long as the metrics (dropping it
    // flushes and stops the export).
    #[cfg(feature = "otlp")]
    _export: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
    // The 200 count and the latency of each of `HOT_ENDPOINTS`, built once: a series built
    // per request allocates its labels.
    hot_requests: [(CounterSeries, HistogramSeries); 2],
    connections_refused: CounterSeries,
}

/// The endpoints whose successes are counted through series built once.
const HOT_ENDPOINTS: [&str; 2] = ["/v1/chat/completions", "/api/chat"];

impl Metrics {
    /// The gateway's metrics, also exported over OTLP when `telemetry` names an endpoint.
    pub(crate) fn new(telemetry: &TelemetryConfig) -> Result<Metrics, ConfigError> {
        let prometheus = PrometheusBuilder::new()
            .set_buckets(&SECONDS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(llm_tower::metrics::TOKEN_USAGE.into()),
                    &TOKENS,
                )
            })
            .expect("the bucket lists are not empty")
            .build_recorder();
        let handle = prometheus.handle();
        #[cfg(feature = "otlp")]
        let (recorder, export): (Arc<dyn Recorder + Send + Sync>, _) =
            match super::telemetry::metrics(telemetry)? {
                Some((otlp, provider)) => (
                    Arc::new(super::telemetry::Both(prometheus, otlp)),
                    Some(provider),
                ),
                None => (Arc::new(prometheus), None),
            };
        #[cfg(not(feature = "otlp"))]
        let recorder: Arc<dyn Recorder + Send + Sync> = {
            let _ = telemetry;
            Arc::new(prometheus)
        };
        let hot_requests = HOT_ENDPOINTS.map(|endpoint| {
            (
                CounterSeries::new(REQUESTS, &[("endpoint", endpoint), ("status", "200")]),
                HistogramSeries::new(REQUEST_SECONDS, &[("endpoint", endpoint)]),
            )
        });
        let metrics = Metrics {
            inner: Arc::new(Inner {
                recorder,
                handle,
                #[cfg(feature = "otlp")]
                _export: export,
                hot_requests,
                connections_refused: CounterSeries::new(CONNECTIONS_REFUSED, &[]),
            }),
        };
        metrics.describe();
        Ok(metrics)
    }

    /// Runs `f` with this gateway's recorder current: what the layers record in it lands
    /// here.
    #[inline]
    pub(crate) fn scoped<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&*self.inner.recorder, f)
    }

    /// Makes this gateway's recorder the process's global one (the binary: one gateway per
    /// process). `false` if another was installed first.
    pub(crate) fn install_global(&self) -> bool {
        metrics::set_global_recorder(self.inner.recorder.clone()).is_ok()
    }

    /// A request to `endpoint` answered `status` after `elapsed`.
    pub(crate) fn request(&self, endpoint: &'static str, status: u16, elapsed: Duration) {
        self.scoped(|| {
            let seconds = elapsed.as_secs_f64();
            if status == 200 {
                if let Some(i) = HOT_ENDPOINTS.iter().position(|e| *e == endpoint) {
                    let (ok, latency) = &self.inner.hot_requests[i];
                    ok.increment(1);
                    latency.record(seconds);
                    return;
                }
            }
            let status = status.to_string();
            CounterSeries::new(REQUESTS, &[("endpoint", endpoint), ("status", &status)])
                .increment(1);
            HistogramSeries::new(REQUEST_SECONDS, &[("endpoint", endpoint)]).record(seconds);
        });
    }

    /// A client connection was closed at once: the gateway held its cap.
    pub(crate) fn connection_refused(&self) {
        self.scoped(|| self.inner.connections_refused.increment(1));
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        self.inner.handle.run_upkeep();
        self.inner.handle.render()
    }

    /// The help text of the gateway's own series and of the layers' (the table in
    /// `llm_tower::metrics`).
    fn describe(&self) {
        let recorder = &*self.inner.recorder;
        for (name, help) in [
            (REQUESTS, "Gateway requests by endpoint and HTTP status"),
            (
                CONNECTIONS_REFUSED,
                "Client connections closed at once: the gateway held max_connections",
            ),
        ] {
            recorder.describe_counter(name.into(), None, help.into());
        }
        recorder.describe_histogram(
            REQUEST_SECONDS.into(),
            Some(metrics::Unit::Seconds),
            "Gateway request latency by endpoint (streams: until the first chunk)".into(),
        );
        self.scoped(llm_tower::metrics::describe);
    }
}
