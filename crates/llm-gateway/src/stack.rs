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
//! request's [`AttemptLog`]. The layers and providers record their own metrics (the table
//! in `llm_tower::metrics`) into the gateway's recorder. The upstream's complete and streaming services
//! share one breaker and one limit. Chains are [`UpstreamChain`]s over these upstreams; a
//! chain is cheap to clone (axum clones per request) and every clone shares the same breakers
//! and limiters.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use llm_providers::{ChatRequest, EmbeddingRequest, EmbeddingResponse, Provider};
use llm_tower::balance::Member;
use llm_tower::fallback::{Fallback, FallbackEvent, FallbackReason, Target};
use llm_tower::upstream::{
    BreakerScope as UpstreamBreakerScope, EmbedService, Upstream, UpstreamChain,
    UpstreamChainBuilder,
};
use llm_tower::{ConfigError, ErrorKind, LlmError};
use tower::{Layer, Service};

use super::attempts::{AttemptLog, AttemptRecord};
use super::config::{BreakerScope, EmbeddingRouteConfig, Lookup, ProviderSettings};

/// Wraps a service in [`Recorded`], reporting as `provider`.
#[derive(Clone)]
pub(crate) struct RecordLayer {
    provider: Arc<str>,
}

impl<S> Layer<S> for RecordLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            provider: self.provider.clone(),
        }
    }
}

/// Records each attempt in the request's [`AttemptLog`].
#[derive(Clone)]
pub(crate) struct Recorded<S> {
    inner: S,
    provider: Arc<str>,
}

impl<S, R> Service<ChatRequest> for Recorded<S>
where
    S: Service<ChatRequest, Response = R, Error = LlmError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<R, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let Some(log) = request.extensions().get::<AttemptLog>().cloned() else {
            return Box::pin(self.inner.call(request));
        };
        let model = request.model().to_owned();
        let provider = self.provider.clone();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let result = call.await;
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
            log.push(AttemptRecord {
                provider: provider.to_string(),
                model,
                outcome,
                status,
                error,
                latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                skipped,
            });
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
    /// Its providers, for probes: itself, or each member of a pool, as
    /// (`provider` or `provider/member`, provider).
    pub(crate) providers: Vec<(String, Provider)>,
}

/// Builds `settings`' stack over `provider`, narrating to the log; with one
/// breaker per model, the breakers of `models` (the ones the configuration names) exist
/// from the start.
pub(crate) fn upstream(
    settings: &ProviderSettings,
    provider: Provider,
    models: &[&str],
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
        });
    if let Some(redis) = &settings.shared_limit {
        builder = builder.shared_rate_limit(redis.clone());
    }
    if let Some(redis) = &settings.shared_breaker {
        builder = builder.shared_breaker(redis.clone());
    }
    // NOTE: the layers log give-ups, limiter waits and refusals themselves (DEBUG); these
    // hooks say what an operator reads at WARN, in the provider's name.
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
        })
        .build()
}

/// A configured provider's providers: itself, or each member of a pool over the provider's
/// connection with the member's key and endpoint, as (`provider` or `provider/member`,
/// provider). Errors name the member (`keys[1].api_key_env`).
pub(crate) fn providers_of(
    settings: &ProviderSettings,
    vars: Lookup<'_>,
) -> Result<Vec<(String, Provider)>, ConfigError> {
    if settings.members.is_empty() {
        let provider = settings.connection.build_with(vars)?;
        return Ok(vec![(settings.name.clone(), provider)]);
    }
    let list = if settings.members.iter().any(|m| m.base_url.is_some()) {
        "deployments"
    } else {
        "keys"
    };
    let mut providers = Vec::with_capacity(settings.members.len());
    for (j, member) in settings.members.iter().enumerate() {
        let name = member
            .name
            .clone()
            .unwrap_or_else(|| format!("member-{}", j + 1));
        let mut connection = settings.connection.clone();
        if let Some(base_url) = &member.base_url {
            connection.base_url = Some(base_url.clone());
        }
        if member.api_key.is_some() || member.api_key_env.is_some() {
            connection.api_key = member.api_key.clone();
            connection.api_key_env = member.api_key_env.clone();
        }
        let provider = connection
            .build_with(vars)
            .map_err(|e| e.in_section(&format!("{list}[{j}]")))?;
        providers.push((format!("{}/{name}", settings.name), provider));
    }
    Ok(providers)
}

/// A pooled provider (`keys` or `deployments`) over its members' `providers`
/// ([`providers_of`]): each member an upstream of its own — named `<provider>/<member>` in
/// logs, metrics and breakers — in one pool.
pub(crate) fn pool(
    settings: &ProviderSettings,
    providers: &[(String, Provider)],
    models: &[&str],
) -> Result<Upstream, ConfigError> {
    let mut members = Vec::with_capacity(providers.len());
    for ((label, provider), member) in providers.iter().zip(&settings.members) {
        let own = ProviderSettings {
            name: label.clone(),
            ..settings.clone()
        };
        let upstream = upstream(&own, provider.clone(), models)?;
        let name = label
            .strip_prefix(&format!("{}/", settings.name))
            .unwrap_or(label);
        members.push(
            Member::new(name, upstream)
                .weight(member.weight)
                .tier(member.tier),
        );
    }
    let mut pool = Upstream::pool(settings.name.as_str(), members).config(&settings.pool);
    if let Some(redis) = &settings.shared_pool {
        pool = pool.shared(redis.clone());
    }
    if settings.sticky_pool {
        pool = pool.sticky_by(llm_tower::upstream::session_of);
    }
    pool.build()
}

/// What the gateway says on a move to the next target: DEBUG for a target our own breaker
/// or limiter skipped, WARN otherwise.
fn on_fallback(event: &FallbackEvent) {
    let reason = event.reason.as_str();
    // NOTE: a target skipped by our own breaker or limiter is an expected, counted
    // event: logging it per request at WARN would flood the log during an outage.
    let skipped =
        matches!(&event.reason, FallbackReason::Failed { kind, .. } if kind.is_local_rejection());
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
}

/// The embedding chain of `route`: each target's embedding stack, asked for the route's
/// vector size (unless the target says not to send it) and held to it — an answer of
/// another size fails that target (`unsupported`: not retried, the next target is tried).
pub(crate) fn embedding_chain(
    route: &EmbeddingRouteConfig,
    upstreams: &[&Upstream],
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
    Fallback::builder(targets).on_fallback(on_fallback).build()
}

/// A chain builder that narrates each move to the next provider (the stream recovery
/// narrates its repairs itself).
pub(crate) fn chain() -> UpstreamChainBuilder {
    UpstreamChain::builder().on_fallback(on_fallback)
}
