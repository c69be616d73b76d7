//! `GET /status`: the live status page, one self-contained HTML file (no external assets)
//! that reads `GET /status/data` every second — each provider's breaker, limiter, recent
//! success rate and latency, and the last requests with their attempts and fallbacks.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::attempts::{RecentRequests, RequestRecord};
use super::gateway::Current;
use super::respond::json_response;
use super::status::health_json;

/// The page. It holds no data: what it shows comes from `/status/data`, behind the admin
/// key when one is configured (the page asks for it).
const PAGE: &str = include_str!("status_page.html");

/// How many of the recent requests the page lists (the success rates use all of them).
const LISTED: usize = 25;

pub(crate) async fn status_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE,
    )
        .into_response()
}

pub(crate) async fn status_data(gw: Current) -> Response {
    let (_, mut health) = health_json(&gw);
    let recent = gw.inner.recent.snapshot();
    if let Some(providers) = health["providers"].as_array_mut() {
        for provider in providers {
            let name = provider["name"].as_str().unwrap_or_default().to_owned();
            provider["recent"] = recent_json(&name, &recent);
        }
    }
    health["requests"] = json!(recent.iter().rev().take(LISTED).collect::<Vec<_>>());
    health["kept"] = json!(RecentRequests::CAPACITY);
    health["nowMs"] = json!(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    );
    let mut response = json_response(StatusCode::OK, health);
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// `provider`'s attempts among the recent requests (a pool's: its members', logged as
/// `provider/member`): how many reached it, how many it answered, how many our own breaker
/// or limiter refused, and its answers' latency.
fn recent_json(provider: &str, recent: &[RequestRecord]) -> serde_json::Value {
    let of_provider = |name: &str| {
        name == provider
            || name
                .strip_prefix(provider)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    let attempts = recent
        .iter()
        .flat_map(|request| &request.attempts)
        .filter(|attempt| of_provider(&attempt.provider));
    let (mut sent, mut skipped) = (0u64, 0u64);
    let mut answered = Vec::new();
    for attempt in attempts {
        if attempt.skipped {
            skipped += 1;
            continue;
        }
        sent += 1;
        if attempt.outcome == "ok" {
            answered.push(attempt.latency_ms);
        }
    }
    answered.sort_unstable();
    let percentile =
        |p: usize| (!answered.is_empty()).then(|| answered[(answered.len() - 1) * p / 100]);
    json!({
        "attempts": sent,
        "answered": answered.len(),
        "skipped": skipped,
        "successRate": (sent > 0).then(|| answered.len() as f64 / sent as f64),
        "p50Ms": percentile(50),
        "p95Ms": percentile(95),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attempts::AttemptRecord;

    fn attempt(provider: &str, outcome: &'static str, latency_ms: u64) -> AttemptRecord {
        AttemptRecord {
            provider: provider.to_owned(),
            model: "m".to_owned(),
            outcome,
            status: None,
            error: None,
            latency_ms,
            skipped: outcome == "circuit_open",
        }
    }

    #[test]
    fn a_provider_s_rate_counts_what_reached_it_and_its_latency_what_it_answered() {
        let request = |attempts| RequestRecord {
            at_ms: 0,
            model: "m".to_owned(),
            answered: true,
            latency_ms: 0,
            attempts,
        };
        let recent = [
            request(vec![attempt("a", "overloaded", 5), attempt("b", "ok", 40)]),
            request(vec![
                attempt("a", "circuit_open", 0),
                attempt("b", "ok", 20),
            ]),
            request(vec![attempt("b", "ok", 30), attempt("c", "ok", 1)]),
        ];
        let a = recent_json("a", &recent);
        assert_eq!(a["attempts"], 1);
        assert_eq!(a["skipped"], 1);
        assert_eq!(a["successRate"], 0.0);
        assert_eq!(a["p50Ms"], serde_json::Value::Null);
        let b = recent_json("b", &recent);
        assert_eq!(
            (b["attempts"].clone(), b["successRate"].clone()),
            (json!(3), json!(1.0))
        );
        assert_eq!(
            (b["p50Ms"].clone(), b["p95Ms"].clone()),
            (json!(30), json!(30))
        );
        assert_eq!(
            recent_json("nobody", &recent)["successRate"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn a_pool_s_rate_counts_its_members_attempts() {
        let recent = [RequestRecord {
            at_ms: 0,
            model: "m".to_owned(),
            answered: true,
            latency_ms: 0,
            attempts: vec![
                attempt("openai/old", "unauthorized", 3),
                attempt("openai/new", "ok", 30),
                attempt("openairish", "ok", 1),
            ],
        }];
        let pool = recent_json("openai", &recent);
        assert_eq!(
            (pool["attempts"].clone(), pool["answered"].clone()),
            (json!(2), json!(1))
        );
    }
}
