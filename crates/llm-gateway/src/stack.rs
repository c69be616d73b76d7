//! The services behind the endpoints: one resilient stack per provider, and fallback chains
//! across them.
//!
//! Each provider is an [`Upstream`] (the facade's builder), outermost first:
//!
//! ```text
//! Retry → Recorded → Breaker → RateLimit → Provider
//! ```
//!
//! Every retry passes the breaker and spends a rate permit; `Recorded` wraps each attempt
//! (`Upstream::around_attempts`) so each one — refused locally or sent — lands in the
//! request's [`AttemptLog`] and the metrics. The upstream's complete and streaming services
//! share one breaker and one limit. Chains are [`UpstreamChain`]s over these upstreams; a
//! chain is cheap to clone (axum clones per request) and every clone shares the same breakers
//! and limiters.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use llm_providers::recovery::RecoveryEvent;
use llm_providers::{
    ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse, Provider,
};
use llm_tower::fallback::{Fallback, FallbackEvent, FallbackReason, Target};
use llm_tower::upstream::{
    BreakerScope as UpstreamBreakerScope, EmbedService, Upstream, UpstreamChain,
    UpstreamChainBuilder,
};
use llm_tower::{ConfigError, EndObserver, ErrorKind, LlmError, ObserveEnd, ReportsUsage, Usage};
use serde::Serialize;
use tower::{Layer, Service};

use super::config::{BreakerScope, EmbeddingRouteConfig, ProviderSettings};
use super::metrics::{Metrics, ProviderSeries};

/// One attempt on one provider, as the gateway reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttemptRecord {
    /// The provider tried.
    pub(crate) provider: String,
    /// The upstream model asked for.
    pub(crate) model: String,
    /// `ok`, or the error kind (`rate_limited`, `timeout`, `circuit_open`, …).
    pub(crate) outcome: &'static str,
    /// The provider's HTTP status, when it answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// How long the attempt took.
    pub(crate) latency_ms: u64,
    /// Refused by our own breaker or limiter: no call reached the provider.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) skipped: bool,
}

/// The attempts made for one gateway request, in order. It travels in the request's
/// extensions, so every copy the retry and fallback layers make writes to the same log.
#[derive(Clone, Debug, Default)]
pub(crate) struct AttemptLog(Arc<Mutex<Vec<AttemptRecord>>>);

impl AttemptLog {
    /// The attempts so far.
    pub(crate) fn records(&self) -> Vec<AttemptRecord> {
        self.0.lock().expect("attempt log poisoned").clone()
    }

    /// The calls that reached a provider (a call our own breaker or limiter refused did not).
    pub(crate) fn upstream_calls(&self) -> usize {
        self.0
            .lock()
            .expect("attempt log poisoned")
            .iter()
            .filter(|record| !record.skipped)
            .count()
    }

    fn push(&self, record: AttemptRecord) {
        self.0.lock().expect("attempt log poisoned").push(record);
    }
}

/// What the recorder needs of an answer: the tokens it used, now or when its stream ends.
pub(crate) trait Answer: Send + 'static {
    /// Calls `report` with the usage once it is known (`None`: never reported), and `broke`
    /// if a stream breaks after its first chunk.
    fn when_done(&mut self, report: Box<dyn FnOnce(Option<Usage>, bool) + Send>);
}

impl Answer for ChatResponse {
    fn when_done(&mut self, report: Box<dyn FnOnce(Option<Usage>, bool) + Send>) {
        report(self.usage(), false);
    }
}

impl Answer for ChatStream {
    fn when_done(&mut self, report: Box<dyn FnOnce(Option<Usage>, bool) + Send>) {
        self.observe_end(EndObserver::new(move |end| {
            let broke = end
                .outcome
                .kind()
                .is_some_and(|kind| kind == ErrorKind::StreamInterrupted);
            report(end.usage, broke);
        }));
    }
}

/// Wraps a service in [`Recorded`], reporting as `provider`.
#[derive(Clone)]
pub(crate) struct RecordLayer {
    provider: Arc<str>,
    metrics: Metrics,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            provider: self.provider.clone(),
            series: self.metrics.provider_series(&self.provider),
            metrics: self.metrics.clone(),
        }
    }
}

/// Records each attempt in the request's [`AttemptLog`] and the metrics.
#[derive(Clone)]
pub(crate) struct Recorded<S> {
    inner: S,
    provider: Arc<str>,
    series: ProviderSeries,
    metrics: Metrics,
}

impl<S, R> Service<ChatRequest> for Recorded<S>
where
    S: Service<ChatRequest, Response = R, Error = LlmError>,
    S::Future: Send + 'static,
    R: Answer,
{
    type Response = R;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<R, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let log = request.extensions().get::<AttemptLog>().cloned();
        let model = request.model().to_owned();
        let provider = self.provider.clone();
        let metrics = self.metrics.clone();
        let series = self.series.clone();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut result = call.await;
            let elapsed = started.elapsed();
            let (outcome, status, error) = match &result {
                Ok(_) => ("ok", None, None),
                Err(err) => (
                    err.kind().as_str(),
                    err.status().map(|s| s.as_u16()),
                    Some(err.to_string()),
                ),
            };
            let skipped = result
                .as_ref()
                .is_err_and(|err| err.kind().is_local_rejection());
            if skipped {
                // Not an upstream attempt: counted apart, and not logged per request.
                metrics.local_rejection(&provider, outcome);
            } else {
                series.attempt(&metrics, outcome, elapsed);
            }
            if let Ok(answer) = &mut result {
                let metrics = metrics.clone();
                let provider = provider.clone();
                answer.when_done(Box::new(move |usage, broke| {
                    if let Some(usage) = usage {
                        series.tokens(&usage);
                    }
                    if broke {
                        metrics.stream_interrupted(&provider);
                    }
                }));
            }
            if let Some(log) = log {
                log.push(AttemptRecord {
                    provider: provider.to_string(),
                    model,
                    outcome,
                    status,
                    error,
                    latency_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                    skipped,
                });
            }
            result
        })
    }
}

/// One configured provider: its stack, and the model `/api/chat` asks it for.
#[derive(Clone)]
pub(crate) struct Configured {
    /// Its stack and health handles, under its configured name.
    pub(crate) upstream: Upstream,
    /// The model `/api/chat` asks it for.
    pub(crate) model: String,
    /// The settings it was built from: a reload that leaves them as they are keeps this
    /// stack, its breakers' and limiters' state included.
    pub(crate) settings: ProviderSettings,
    /// Its provider, for probes.
    pub(crate) provider: Provider,
}

/// Builds `settings`' stack over `provider`, reporting to `metrics` and the log; with one
/// breaker per model, the breakers of `models` (the ones the configuration names) exist
/// from the start.
pub(crate) fn upstream(
    settings: &ProviderSettings,
    provider: Provider,
    models: &[&str],
    metrics: &Metrics,
) -> Result<Upstream, ConfigError> {
    let name: Arc<str> = Arc::from(settings.name.as_str());
    let mut builder = Upstream::builder(name.clone(), provider)
        .retry(settings.retry.clone())
        .breaker(settings.breaker.clone())
        .breaker_scope(match settings.breaker_scope {
            BreakerScope::Model => UpstreamBreakerScope::PerModel,
            BreakerScope::Provider => UpstreamBreakerScope::Provider,
        })
        .known_models(models.iter().copied())
        .rate_limit(settings.rate_limit.clone())
        .prefill(settings.prefill)
        .around_attempts(RecordLayer {
            provider: name.clone(),
            metrics: metrics.clone(),
        });
    if let Some(redis) = &settings.shared_limit {
        builder = builder.shared_rate_limit(redis.clone());
    }
    if let Some(redis) = &settings.shared_breaker {
        builder = builder.shared_breaker(redis.clone());
    }
    let retries = metrics.clone();
    let breakers = metrics.clone();
    let (rejections, waits) = (metrics.clone(), metrics.clone());
    let (rejected_by, waited_on) = (name.clone(), name.clone());
    builder
        .on_retry(move |name, event| {
            tracing::warn!(
                provider = %name,
                attempt = event.attempt,
                kind = event.kind.as_str(),
                delay_ms = u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX),
                "retrying {name} after {} in {:?}",
                event.kind,
                event.delay
            );
            retries.retry(name, event.kind.as_str());
        })
        .on_give_up(|name, give_up| {
            tracing::debug!(
                provider = %name,
                attempts = give_up.attempts,
                kind = give_up.kind.as_str(),
                "{name} gives up after {} attempt(s): {:?}",
                give_up.attempts,
                give_up.reason
            );
        })
        .on_breaker_change(move |change| {
            let held = change
                .open_for
                .map(|open_for| format!(" for {open_for:?}"))
                .unwrap_or_default();
            let peer = if change.from_peer {
                " (decided by another instance)"
            } else {
                ""
            };
            let of = change.name.as_deref().unwrap_or(&name);
            tracing::warn!(
                provider = %name,
                breaker = %of,
                from = change.from.as_str(),
                to = change.to.as_str(),
                from_peer = change.from_peer,
                "circuit breaker of {of}: {} → {}{held}{peer}",
                change.from,
                change.to
            );
            breakers.breaker_transition(&name, change.from.as_str(), change.to.as_str());
        })
        // NOTE: a rejection is also counted by `Recorded`, which sees it as the call's result.
        .on_rate_limited(move |rejected| {
            tracing::debug!(provider = %rejected_by, "rate limit of {rejected_by}: {rejected}");
            rejections.limiter_rejection(&rejected_by);
        })
        .on_rate_limit_wait(move |wait| {
            tracing::debug!(provider = %waited_on, "rate limit of {waited_on}: waiting {wait:?}");
            waits.limiter_wait(&waited_on);
        })
        .build()
}

/// A chain builder that logs and counts each move to the next provider and each stream
/// repair.
/// What the gateway does on a move to the next target: a log line (DEBUG for a target our
/// own breaker or limiter skipped, WARN otherwise) and the fallback counter.
fn on_fallback(metrics: Metrics) -> impl Fn(&FallbackEvent) + Send + Sync + 'static {
    move |event| {
        let reason = match &event.reason {
            FallbackReason::Failed { kind, .. } => kind.as_str(),
            FallbackReason::Hedged { .. } => "hedged",
            _ => "other",
        };
        // NOTE: a target skipped by our own breaker or limiter is an expected, counted
        // event: logging it per request at WARN would flood the log during an outage.
        let skipped = matches!(&event.reason, FallbackReason::Failed { kind, .. } if kind.is_local_rejection());
        if skipped {
            tracing::debug!(from = %event.from, to = %event.to, reason, "skipping {} for {} ({reason})", event.from, event.to);
        } else {
            tracing::warn!(
                from = %event.from,
                to = %event.to,
                reason,
                "falling back from {} to {} ({reason})",
                event.from,
                event.to
            );
        }
        metrics.fallback(&event.from, &event.to, reason);
    }
}

/// The embedding chain of `route`: each target's embedding stack, asked for the route's
/// vector size (unless the target says not to send it) and held to it — an answer of
/// another size fails that target (`unsupported`: not retried, the next target is tried).
pub(crate) fn embedding_chain(
    route: &EmbeddingRouteConfig,
    upstreams: &[&Upstream],
    metrics: &Metrics,
) -> Result<Fallback<EmbedService, EmbeddingRequest>, ConfigError> {
    let dimensions = route.dimensions;
    let size = usize::try_from(dimensions).unwrap_or(usize::MAX);
    let targets =
        route
            .targets
            .iter()
            .zip(upstreams)
            .map(|(target, up)| {
                let send = target.send_dimensions;
                let name: Arc<str> = Arc::from(up.name());
                let held = tower::ServiceBuilder::new()
                .map_request(move |request: EmbeddingRequest| {
                    if send { request.dimensions(dimensions) } else { request }
                })
                .map_result(move |result: Result<EmbeddingResponse, LlmError>| {
                    let answer = result?;
                    match answer.embeddings.iter().find(|v| v.len() != size) {
                        Some(other) => Err(LlmError::new(
                            ErrorKind::Unsupported,
                            format!(
                                "{} answered vectors of {} dimensions; the route declares {size}",
                                answer.provider,
                                other.len()
                            ),
                        )),
                        None => Ok(answer),
                    }
                })
                .service(up.embed());
                let mut t = Target::new(name, EmbedService::new(held));
                if let Some(model) = &target.model {
                    t = t.model(model.clone());
                }
                t
            })
            .collect::<Vec<_>>();
    Fallback::builder(targets)
        .on_fallback(on_fallback(metrics.clone()))
        .build()
}

pub(crate) fn chain(metrics: &Metrics) -> UpstreamChainBuilder {
    let recoveries = metrics.clone();
    UpstreamChain::builder()
        .on_fallback(on_fallback(metrics.clone()))
        .on_recovery(move |event| match event {
            RecoveryEvent::Recovered(r) => {
                tracing::warn!(
                    "stream from {} broke after {} tokens ({}); {} continued it ({})",
                    r.from,
                    r.after_tokens,
                    r.cause,
                    r.to,
                    r.mode.as_str()
                );
                recoveries.stream_recovery(&r.from, &r.to, r.mode.as_str(), "recovered");
            }
            // A route that does not continue broken streams has nothing to count here: the
            // interruption itself is counted.
            RecoveryEvent::Failed { reason, .. } if *reason == "not allowed" => {}
            RecoveryEvent::Failed { from, reason, .. } => {
                recoveries.stream_recovery(from, "none", "none", reason);
            }
            _ => {}
        })
}
