//! `GET /v1/models`, `/health` and `/metrics`.

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use llm_tower::balance::MemberState;
use llm_tower::ratelimit::StoreLocation;
use llm_tower::upstream::{BreakerScope, UpstreamHealth};
use serde_json::json;

use super::anthropic;
use super::auth::{CallerKey, check_model};
use super::config::ProviderSettings;
use super::gateway::Current;
use super::messages::is_anthropic_client;
use super::respond::{json_response, observed};

/// The routed models, in the shape of the SDK asking: Anthropic's when the request carries
/// `anthropic-version` (its SDKs always send it, OpenAI's never do), OpenAI's otherwise.
pub(crate) async fn models(gw: Current, caller: CallerKey, headers: HeaderMap) -> Response {
    let started = Instant::now();
    // (model, who serves it) of every route the caller's key may use.
    let chat = gw
        .inner
        .routes
        .iter()
        .map(|route| (route.model.as_str(), route.owner.as_str()));
    let allowed = |&(model, _): &(&str, &str)| check_model(&caller, model).is_ok();
    let response = if is_anthropic_client(&headers) {
        let models = chat.filter(allowed).map(|(model, _)| model);
        axum::Json(anthropic::model_list(models)).into_response()
    } else {
        let embedding = gw.inner.embedding_routes.iter().map(|route| {
            let owner = route.targets.first().map_or("", String::as_str);
            (route.model.as_str(), owner)
        });
        let data: Vec<_> = chat
            .chain(embedding)
            .filter(allowed)
            .map(
                |(id, owner)| json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
            )
            .collect();
        axum::Json(json!({ "object": "list", "data": data })).into_response()
    };
    observed(&gw, "/v1/models", started, response)
}

/// One breaker's state as `/health` shows it.
pub(crate) fn breaker_json(
    model: Option<&str>,
    m: &llm_tower::breaker::Metrics,
) -> serde_json::Value {
    let mut value = json!({
        "state": m.state.as_str(),
        "failureRate": m.failure_rate,
        "consecutiveFailures": m.consecutive_failures,
        "retryInMs": m.retry_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "trips": m.trips,
        "rejected": m.rejected,
    });
    if let Some(model) = model {
        value["model"] = json!(model);
    }
    value
}

/// A provider's breakers: a summary (`state` is the breakers' common state, or
/// `partially_open`), and with one breaker per model, each of them. Also whether every one
/// is open.
pub(crate) fn breakers_json(health: &UpstreamHealth) -> (serde_json::Value, bool) {
    use llm_tower::breaker::State;
    let breakers = health.breakers();
    let metrics: Vec<_> = breakers.iter().map(|(_, h)| h.metrics()).collect();
    let open = |m: &llm_tower::breaker::Metrics| matches!(m.state, State::Open | State::ForcedOpen);
    let all_open = !metrics.is_empty() && metrics.iter().all(open);
    let state = match metrics.first() {
        None => State::Closed.as_str(),
        Some(first) if metrics.iter().all(|m| m.state == first.state) => first.state.as_str(),
        Some(_) => "partially_open",
    };
    let unreachable = breakers.iter().any(|(_, h)| h.redis_unreachable());
    let per_model = health.breaker_scope() == BreakerScope::PerModel;
    let mut summary = json!({
        "scope": if per_model { "model" } else { "provider" },
        "state": state,
        "failureRate": metrics.iter().map(|m| m.failure_rate).fold(0.0, f64::max),
        "consecutiveFailures": metrics.iter().map(|m| m.consecutive_failures).max().unwrap_or(0),
        "retryInMs": metrics.iter().filter_map(|m| m.retry_in).min()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        "trips": metrics.iter().map(|m| m.trips).sum::<u64>(),
        "rejected": metrics.iter().map(|m| m.rejected).sum::<u64>(),
        "shared": health.breakers_shared(),
        "redisUnreachable": unreachable,
    });
    if per_model {
        summary["models"] = breakers
            .iter()
            .zip(&metrics)
            .map(|((model, _), m)| breaker_json(model.as_deref(), m))
            .collect();
    }
    (summary, all_open)
}

pub(crate) async fn health(gw: Current) -> Response {
    let started = Instant::now();
    let (status, health) = health_json(&gw);
    observed(&gw, "/health", started, json_response(status, health))
}

/// What `/health` answers: each provider's breakers, limiter and probes, each route, and
/// the gateway's status (`ok`; `degraded` with some provider's every breaker open; `down`,
/// a 503, with all of them).
pub(crate) fn health_json(gw: &Current) -> (StatusCode, serde_json::Value) {
    let mut open = 0;
    let providers: Vec<_> = gw
        .inner
        .upstreams
        .iter()
        .map(|configured| {
            let up = &configured.upstream;
            let health = up.health();
            let (breaker, all_open) = breakers_json(health);
            if all_open {
                open += 1;
            }
            let limiter = health.limiter();
            let capacity = limiter.capacity().unwrap_or_default();
            let (shared, unreachable) = match limiter.location() {
                StoreLocation::Shared { reachable } => (true, !reachable),
                _ => (false, false),
            };
            let limits = &configured.settings.rate_limit;
            let most = |rate: Option<llm_tower::ratelimit::Rate>| {
                rate.map(|rate| rate.burst.unwrap_or(rate.limit))
            };
            let limiter = json!({
                "requestsAvailable": capacity.requests,
                "requestsBurst": most(limits.requests),
                "tokensAvailable": capacity.tokens,
                "tokensBurst": most(limits.tokens),
                "pausedForMs": u64::try_from(capacity.paused_for.as_millis()).unwrap_or(u64::MAX),
                "waiting": limiter.waiting(),
                "admitted": limiter.admitted(),
                "rejected": limiter.rejected(),
                "shared": shared,
                "redisUnreachable": unreachable,
            });
            let mut entry = json!({
                "name": up.name(),
                "kind": up.kind().to_string(),
                "model": configured.model,
                "breaker": breaker,
                "limiter": limiter,
                "probes": gw.inner.probes.of(up.name()),
            });
            if let Some(members) = members_json(&configured.settings, health) {
                entry["members"] = members;
            }
            entry
        })
        .collect();
    let (status, label) = match open {
        0 => (StatusCode::OK, "ok"),
        n if n < providers.len() => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "down"),
    };
    let health = json!({ "status": label, "providers": providers, "routes": routes_json(gw) });
    (status, health)
}

/// A pooled provider's members: where each stands in the pool (available, retired,
/// cooling down and why, probing), its load, its headroom and its own breakers.
fn members_json(settings: &ProviderSettings, health: &UpstreamHealth) -> Option<serde_json::Value> {
    let (handle, members) = health.pool_members()?;
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let statuses = handle.members();
    let list = statuses
        .iter()
        .map(|status| {
            let own = members.iter().find(|m| {
                m.name()
                    .rsplit_once('/')
                    .is_some_and(|(_, n)| n == &*status.name)
            });
            let region = settings
                .members
                .iter()
                .find(|m| m.name.as_deref() == Some(&*status.name))
                .and_then(|m| m.region.clone());
            let (state, reason, back_in) = match status.state {
                MemberState::Retired { back_in } => {
                    ("retired", Some("unauthorized"), Some(ms(back_in)))
                }
                MemberState::CoolingDown { reason, back_in } => {
                    ("cooling_down", Some(reason.as_str()), Some(ms(back_in)))
                }
                ref other => (other.as_str(), None, None),
            };
            json!({
                "name": &*status.name,
                "region": region,
                "tier": status.tier,
                "weight": status.weight,
                "state": state,
                "reason": reason,
                "backInMs": back_in,
                "inFlight": status.in_flight,
                "latencyMs": ms(status.latency),
                "remainingRequests": status.remaining_requests,
                "served": status.served,
                "failed": status.failed,
                "breaker": own.map(|h| breakers_json(h).0),
            })
        })
        .collect::<Vec<_>>();
    Some(json!(list))
}

/// Each route, the front doors that reach it and its targets in order.
fn routes_json(gw: &Current) -> Vec<serde_json::Value> {
    let chat = ["/v1/chat/completions", "/v1/messages", "/v1/responses"];
    let targets = |names: Vec<&str>| names.join(" → ");
    gw.inner
        .routes
        .iter()
        .chain(&gw.inner.wildcard)
        .map(|route| {
            json!({
                "model": route.model,
                "endpoints": chat,
                "targets": targets(route.chain.targets().iter().map(|(n, _)| &**n).collect()),
            })
        })
        .chain(gw.inner.embedding_routes.iter().map(|route| {
            json!({
                "model": route.model,
                "endpoints": ["/v1/embeddings"],
                "dimensions": route.dimensions,
                "targets": targets(route.targets.iter().map(String::as_str).collect()),
            })
        }))
        .collect()
}

pub(crate) async fn metrics(gw: Current) -> Response {
    let body = gw.inner.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
