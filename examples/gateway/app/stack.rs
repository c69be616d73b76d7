//! The services behind the endpoints: one resilient stack per provider, and fallback chains
//! across them.
//!
//! Per provider, outermost first (DESIGN §4):
//!
//! ```text
//! Retry → Recorded → Breaker → RateLimit → Provider
//! ```
//!
//! Every retry passes the breaker and spends a rate permit; `Recorded` sits under the retry
//! layer so each attempt — refused locally or sent — lands in the request's [`AttemptLog`] and
//! the metrics. The breaker and limiter layers are built once per provider and applied to
//! both the complete and the streaming service, so the two share one breaker and one limit.
//! Chains are `Fallback`s over these stacks; a chain is cheap to clone (axum clones per
//! request) and every clone shares the same breakers and limiters.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use llm_providers::recovery::Prefill;
use llm_providers::{ChatRequest, ChatResponse, ChatStream, Provider, ProviderKind};
use llm_tower::breaker::{BreakerHandle, BreakerLayer, KeyedBreakerHandle};
use llm_tower::fallback::{Fallback, FallbackReason, Target};
use llm_tower::ratelimit::{Capacity, LocalStore, RateLimitHandle, RateLimitLayer, RedisStore};
use llm_tower::retry::{RetryConfig, RetryLayer};
use llm_tower::{
    ConfigError, EndObserver, ErrorKind, EstimatedCost, LlmError, ObserveEnd, ReportsUsage, Usage,
};
use serde::Serialize;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::config::{BreakerScope, ProviderSettings};
use super::metrics::{Metrics, ProviderSeries};

/// A complete-answer service: one provider's stack, or a chain of them.
pub(crate) type ChatService = BoxCloneSyncService<ChatRequest, ChatResponse, LlmError>;
/// A streaming service: one provider's stack, or a chain of them.
pub(crate) type StreamService = BoxCloneSyncService<ChatRequest, ChatStream, LlmError>;

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

/// A provider's rate limiter as `/health` reads it: in this process, or shared through Redis.
#[derive(Clone)]
pub(crate) enum LimiterView {
    /// In this process.
    Local(RateLimitHandle<LocalStore>),
    /// Shared by every instance through Redis.
    Shared(RateLimitHandle<RedisStore<()>>),
}

impl LimiterView {
    /// What it could admit now (for a shared limit: as of its last answer from Redis).
    pub(crate) fn capacity(&self) -> Capacity {
        match self {
            LimiterView::Local(h) => h.capacity(&()),
            LimiterView::Shared(h) => h.capacity(&()),
        }
    }

    /// Requests waiting, admitted and rejected by this instance.
    pub(crate) fn counters(&self) -> (usize, u64, u64) {
        match self {
            LimiterView::Local(h) => (h.waiting(), h.admitted(), h.rejected()),
            LimiterView::Shared(h) => (h.waiting(), h.admitted(), h.rejected()),
        }
    }

    /// Whether the limit is shared, and whether its Redis is unreachable now (`None`: in
    /// this process).
    pub(crate) fn shared(&self) -> Option<bool> {
        match self {
            LimiterView::Local(_) => None,
            LimiterView::Shared(h) => Some(h.store().is_degraded()),
        }
    }
}

/// A provider's circuit breakers as `/health` reads them: one per upstream model (the
/// default), or one for the whole provider.
#[derive(Clone)]
pub(crate) enum BreakerView {
    /// One breaker per `provider/model` key.
    PerModel(KeyedBreakerHandle<String>),
    /// One breaker for every model.
    Provider(BreakerHandle),
}

impl BreakerView {
    /// Each breaker, with the model it covers (`None`: the whole provider).
    pub(crate) fn breakers(&self) -> Vec<(Option<String>, BreakerHandle)> {
        match self {
            BreakerView::Provider(handle) => vec![(None, handle.clone())],
            BreakerView::PerModel(keyed) => {
                let mut keys = keyed.keys();
                keys.sort();
                keys.into_iter()
                    .filter_map(|key| {
                        let handle = keyed.get(&key)?;
                        let model = key.split_once('/').map_or(key.as_str(), |(_, m)| m);
                        Some((Some(model.to_owned()), handle))
                    })
                    .collect()
            }
        }
    }
}

/// One provider with its resilience stacks, complete and streaming.
#[derive(Clone)]
pub(crate) struct Upstream {
    /// Its configured name.
    pub(crate) name: Arc<str>,
    /// Its wire format.
    pub(crate) kind: ProviderKind,
    /// The model `/api/chat` asks it for.
    pub(crate) model: String,
    /// Its breakers' state.
    pub(crate) breaker: BreakerView,
    /// Whether its breakers share their state through Redis.
    pub(crate) breaker_shared: bool,
    /// Its limiter's capacity.
    pub(crate) limiter: LimiterView,
    /// Whether it takes an assistant prefill when continuing a broken stream.
    pub(crate) prefill: Prefill,
    /// Complete answers through its stack, for `/api/chat`: a rate limit moves on at once.
    pub(crate) api_chat: ChatService,
    /// Complete answers through its stack, for routes.
    pub(crate) chat: ChatService,
    /// Streams through its stack, for routes.
    pub(crate) stream: StreamService,
}

/// A retry layer over `config` that logs and counts as `name`.
fn retry_layer(
    name: &Arc<str>,
    metrics: &Metrics,
    config: RetryConfig,
) -> Result<RetryLayer, ConfigError> {
    let (name, metrics) = (name.clone(), metrics.clone());
    let give_up_name = name.clone();
    RetryLayer::builder()
        .config(config)
        .on_retry(move |event| {
            tracing::warn!(
                provider = %name,
                attempt = event.attempt,
                kind = event.kind.as_str(),
                delay_ms = u64::try_from(event.delay.as_millis()).unwrap_or(u64::MAX),
                "retrying {name} after {} in {:?}",
                event.kind,
                event.delay
            );
            metrics.retry(&name, event.kind.as_str());
        })
        .on_give_up(move |give_up| {
            tracing::debug!(
                provider = %give_up_name,
                attempts = give_up.attempts,
                kind = give_up.kind.as_str(),
                "{give_up_name} gives up after {} attempt(s): {:?}",
                give_up.attempts,
                give_up.reason
            );
        })
        .build()
        .map_err(|e| e.in_section("retry"))
}

/// The services above the limiter, over one breaker layer (single or keyed): `Retry →
/// Recorded → Breaker` for `/api/chat`, routes and streams.
struct Guarded {
    api_chat: ChatService,
    chat: ChatService,
    stream: StreamService,
}

impl Guarded {
    fn new<B>(
        breaker: &B,
        retries: [&RetryLayer; 2],
        recorded: &RecordLayer,
        chat: ChatService,
        stream: StreamService,
    ) -> Guarded
    where
        B: Layer<ChatService> + Layer<StreamService>,
        <B as Layer<ChatService>>::Service: Service<ChatRequest, Response = ChatResponse, Error = LlmError>
            + Clone
            + Send
            + Sync
            + 'static,
        <<B as Layer<ChatService>>::Service as Service<ChatRequest>>::Future: Send + 'static,
        <B as Layer<StreamService>>::Service: Service<ChatRequest, Response = ChatStream, Error = LlmError>
            + Clone
            + Send
            + Sync
            + 'static,
        <<B as Layer<StreamService>>::Service as Service<ChatRequest>>::Future: Send + 'static,
    {
        let [api_retry, retry] = retries;
        let chat = recorded.layer(breaker.layer(chat));
        Guarded {
            api_chat: ChatService::new(api_retry.layer(chat.clone())),
            chat: ChatService::new(retry.layer(chat)),
            stream: StreamService::new(retry.layer(recorded.layer(breaker.layer(stream)))),
        }
    }
}

impl Upstream {
    /// Builds `settings`' stacks over `provider`, reporting to `metrics` and the log; with
    /// one breaker per model, the breakers of `models` (the ones the configuration names)
    /// exist from the start.
    pub(crate) fn new(
        settings: &ProviderSettings,
        provider: Provider,
        models: &[&str],
        metrics: &Metrics,
    ) -> Result<Upstream, ConfigError> {
        let name: Arc<str> = Arc::from(settings.name.as_str());
        let provider = provider.renamed(&settings.name);

        let retry = retry_layer(&name, metrics, settings.retry.clone())?;
        // `/api/chat` keeps its documented behaviour: a rate limit moves to the next provider.
        let mut api_config = settings.retry.clone();
        api_config.failover_on = api_config.failover_on.with(ErrorKind::RateLimited);
        let api_retry = retry_layer(&name, metrics, api_config)?;

        let breaker = {
            let (name, metrics) = (name.clone(), metrics.clone());
            let mut builder = BreakerLayer::builder()
                .config(settings.breaker.clone())
                .name(name.clone())
                .on_state_change(move |change| {
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
                    metrics.breaker_transition(&name, change.from.as_str(), change.to.as_str());
                });
            if let Some(shared) = &settings.shared_breaker {
                builder = builder.shared(shared.clone());
            }
            builder
        };
        let streaming = provider.streaming();
        let (limiter, chat_inner, stream_inner) = {
            let (name, metrics) = (name.clone(), metrics.clone());
            let wait_name = name.clone();
            let wait_metrics = metrics.clone();
            // NOTE: a rejection is counted by `Recorded`, which sees it as the call's result.
            let builder = RateLimitLayer::builder()
                .config(settings.rate_limit.clone())
                .token_cost(EstimatedCost::approximate())
                .on_rejected(move |rejected| {
                    tracing::debug!(provider = %name, "rate limit of {name}: {rejected}");
                    metrics.limiter_rejection(&name);
                })
                .on_wait(move |wait| {
                    tracing::debug!(provider = %wait_name, "rate limit of {wait_name}: waiting {wait:?}");
                    wait_metrics.limiter_wait(&wait_name);
                });
            match &settings.shared_limit {
                Some(redis) => {
                    let limit = builder
                        .build_redis(redis)
                        .map_err(|e| e.in_section("rate_limit"))?;
                    (
                        LimiterView::Shared(limit.handle()),
                        ChatService::new(limit.layer(provider.clone())),
                        StreamService::new(limit.layer(streaming)),
                    )
                }
                None => {
                    let limit = builder.build().map_err(|e| e.in_section("rate_limit"))?;
                    (
                        LimiterView::Local(limit.handle()),
                        ChatService::new(limit.layer(provider.clone())),
                        StreamService::new(limit.layer(streaming)),
                    )
                }
            }
        };

        let recorded = RecordLayer {
            provider: name.clone(),
            metrics: metrics.clone(),
        };
        let retries = [&api_retry, &retry];
        let (breaker, guarded) = match settings.breaker_scope {
            BreakerScope::Provider => {
                let layer = breaker.build().map_err(|e| e.in_section("breaker"))?;
                let guarded = Guarded::new(&layer, retries, &recorded, chat_inner, stream_inner);
                (BreakerView::Provider(layer.handle()), guarded)
            }
            BreakerScope::Model => {
                let key_name = name.clone();
                // NOTE: the key names the provider too: keyed breakers are named by their key,
                // and a Redis-shared breaker is stored under its name.
                let layer = breaker
                    .build_keyed(move |req: &ChatRequest| format!("{key_name}/{}", req.model()))
                    .map_err(|e| e.in_section("breaker"))?;
                let guarded = Guarded::new(&layer, retries, &recorded, chat_inner, stream_inner);
                let handle = layer.handle();
                for model in models {
                    handle.get_or_create(&format!("{name}/{model}"));
                }
                (BreakerView::PerModel(handle), guarded)
            }
        };
        Ok(Upstream {
            name,
            kind: provider.kind(),
            model: settings.model.clone(),
            breaker,
            breaker_shared: settings.shared_breaker.is_some(),
            limiter,
            prefill: settings.prefill,
            api_chat: guarded.api_chat,
            chat: guarded.chat,
            stream: guarded.stream,
        })
    }
}

/// A fallback chain over `targets` (upstream, model to ask it for — `None`: the model the
/// client asked for), logging and counting each move.
pub(crate) fn chain<S, R>(
    targets: Vec<(S, Arc<str>, Option<String>)>,
    metrics: &Metrics,
) -> Result<BoxCloneSyncService<ChatRequest, R, LlmError>, ConfigError>
where
    S: Service<ChatRequest, Response = R, Error = LlmError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    R: llm_tower::ResponseMetadata + Send + 'static,
    llm_tower::DefaultClassifier: llm_tower::Classify<R, LlmError>,
{
    let targets = targets
        .into_iter()
        .map(|(service, name, model)| {
            let target = Target::new(name, service);
            match model {
                Some(model) => target.model(model),
                None => target,
            }
        })
        .collect();
    let metrics = metrics.clone();
    let chain = Fallback::builder(targets)
        .on_fallback(move |event| {
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
        })
        .build()?;
    Ok(BoxCloneSyncService::new(chain))
}
