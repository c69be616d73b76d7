//! `[telemetry]`: the gateway's traces and metrics exported over OTLP/HTTP (feature `otlp`).
//!
//! Traces: the layers' spans — one per logical request (`chat claude`), one per upstream
//! attempt, retries and fallbacks as the request's events — turned into OpenTelemetry spans
//! by `tracing-opentelemetry` under the HTTP request's span, itself the child of the
//! caller's `traceparent`; the upstreams receive a `traceparent` naming the gateway's span.
//! Metrics: what `/metrics` serves, also exported by OpenTelemetry's SDK
//! (`metrics-opentelemetry` bridges the `metrics` facade). The exporters run on threads of
//! their own; at exit [`TracesGuard`] flushes what is left.

use std::sync::atomic::{AtomicBool, Ordering};

use llm_tower::{ConfigError, TraceContext};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::config::{OtlpProtocol, TelemetryConfig};

/// Whether spans are exported in this process: the gateway then names its own span in the
/// `traceparent` it sends upstream.
static TRACING: AtomicBool = AtomicBool::new(false);

fn protocol(config: &TelemetryConfig) -> Protocol {
    match config.otlp_protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
        OtlpProtocol::HttpJson => Protocol::HttpJson,
    }
}

fn resource(config: &TelemetryConfig) -> Resource {
    Resource::builder()
        .with_service_name(config.service_name.clone())
        .build()
}

fn endpoint(config: &TelemetryConfig, signal: &str) -> Option<String> {
    let base = config.otlp_endpoint.as_deref()?;
    Some(format!("{}/v1/{signal}", base.trim_end_matches('/')))
}

fn failed(field: &str, err: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(
        format!("telemetry.{field}"),
        format!("cannot start the exporter: {err}"),
    )
}

/// Flushes and stops the span exporter when dropped (at exit).
#[must_use = "dropping it stops the export"]
#[derive(Debug)]
pub struct TracesGuard(SdkTracerProvider);

impl Drop for TracesGuard {
    fn drop(&mut self) {
        if let Err(err) = self.0.shutdown() {
            eprintln!("llm-gateway: exporting the last spans failed: {err}");
        }
    }
}

/// The tracing layer that exports spans as `config` says, filtered by its `filter`, and
/// the guard that flushes it; `None` without an endpoint.
pub fn traces<S>(
    config: &TelemetryConfig,
) -> Result<Option<(impl Layer<S> + Send + Sync + 'static, TracesGuard)>, ConfigError>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
{
    let Some(endpoint) = endpoint(config, "traces") else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol(config))
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| failed("otlp_endpoint", err))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource(config))
        .build();
    let filter = tracing_subscriber::EnvFilter::builder()
        .parse(&config.filter)
        .map_err(|err| ConfigError::new("telemetry.filter", err.to_string()))?;
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("llm-gateway"))
        .with_filter(filter);
    TRACING.store(true, Ordering::Relaxed);
    Ok(Some((layer, TracesGuard(provider))))
}

/// A `metrics` recorder exporting what it records as `config` says, and its provider (which
/// flushes when dropped); `None` without an endpoint.
pub(crate) fn metrics(
    config: &TelemetryConfig,
) -> Result<
    Option<(
        metrics_opentelemetry::OpenTelemetryRecorder,
        SdkMeterProvider,
    )>,
    ConfigError,
> {
    use opentelemetry::metrics::MeterProvider as _;
    let Some(endpoint) = endpoint(config, "metrics") else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(protocol(config))
        .with_endpoint(endpoint)
        .build()
        .map_err(|err| failed("otlp_endpoint", err))?;
    let reader = PeriodicReader::builder(exporter)
        .with_interval(config.metrics_interval)
        .build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource(config))
        .build();
    let meter = provider.meter("llm-gateway");
    let recorder = metrics_opentelemetry::OpenTelemetryRecorder::new(
        metrics_opentelemetry::OpenTelemetryMetrics::new(meter),
    );
    Ok(Some((recorder, provider)))
}

/// Names `span` (`request`'s) as OpenTelemetry names a server span (`POST /v1/messages`)
/// and makes it the child of the caller's `traceparent`, when spans are exported.
pub(crate) fn continue_trace(span: &tracing::Span, request: &axum::extract::Request) {
    if !TRACING.load(Ordering::Relaxed) || span.is_disabled() {
        return;
    }
    span.record(
        "otel.name",
        format!("{} {}", request.method(), request.uri().path()),
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The trace context to send upstream: when spans are exported, one naming the current span
/// (the gateway's, in the caller's trace); otherwise the caller's as it came.
pub(crate) fn outgoing(incoming: Option<TraceContext>) -> Option<TraceContext> {
    if !TRACING.load(Ordering::Relaxed) {
        return incoming;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let ours = span.span_context();
    if !ours.is_valid() {
        return incoming;
    }
    let traceparent = format!(
        "00-{}-{}-{:02x}",
        ours.trace_id(),
        ours.span_id(),
        ours.trace_flags().to_u8()
    );
    let state = incoming
        .as_ref()
        .and_then(TraceContext::tracestate)
        .map(str::to_owned);
    TraceContext::parse(&traceparent, state.as_deref()).or(incoming)
}

/// Two recorders fed the same records: Prometheus's (for `/metrics`) and the OTLP
/// exporter's.
///
/// NOTE: hand-written rather than `metrics_util::layers::Fanout`, which holds its recorders
/// as `Box<dyn Recorder + Sync>`, not `Send`: the gateway's recorder is shared by threads.
pub(crate) struct Both<A, B>(pub(crate) A, pub(crate) B);

/// A handle of each recorder, fed together.
struct Pair<T>(T, T);

impl metrics::CounterFn for Pair<metrics::Counter> {
    fn increment(&self, value: u64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn absolute(&self, value: u64) {
        self.0.absolute(value);
        self.1.absolute(value);
    }
}

impl metrics::GaugeFn for Pair<metrics::Gauge> {
    fn increment(&self, value: f64) {
        self.0.increment(value);
        self.1.increment(value);
    }

    fn decrement(&self, value: f64) {
        self.0.decrement(value);
        self.1.decrement(value);
    }

    fn set(&self, value: f64) {
        self.0.set(value);
        self.1.set(value);
    }
}

impl metrics::HistogramFn for Pair<metrics::Histogram> {
    fn record(&self, value: f64) {
        self.0.record(value);
        self.1.record(value);
    }
}

impl<A: metrics::Recorder, B: metrics::Recorder> metrics::Recorder for Both<A, B> {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0
            .describe_counter(key.clone(), unit, description.clone());
        self.1.describe_counter(key, unit, description);
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0
            .describe_gauge(key.clone(), unit, description.clone());
        self.1.describe_gauge(key, unit, description);
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.0
            .describe_histogram(key.clone(), unit, description.clone());
        self.1.describe_histogram(key, unit, description);
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        metrics::Counter::from_arc(std::sync::Arc::new(Pair(
            self.0.register_counter(key, metadata),
            self.1.register_counter(key, metadata),
        )))
    }

    fn register_gauge(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Gauge {
        metrics::Gauge::from_arc(std::sync::Arc::new(Pair(
            self.0.register_gauge(key, metadata),
            self.1.register_gauge(key, metadata),
        )))
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(std::sync::Arc::new(Pair(
            self.0.register_histogram(key, metadata),
            self.1.register_histogram(key, metadata),
        )))
    }
}
