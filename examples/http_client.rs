//! The layers need no LLM types: retry, circuit breaker and rate limit around a plain
//! `reqwest::Client` calling an ordinary JSON API (an exchange-rate service served locally).
//!
//! ```text
//! cargo run --example http_client
//! ```
//!
//! The stack is `Retry → Breaker (one per endpoint) → RateLimit → reqwest::Client`. Responses are classified by
//! status and headers (408/429/5xx transient, `Retry-After` honoured), transport errors by
//! reqwest's own flags; `reqwest::Request::try_clone` copies a request for each retry, and
//! the client's error is boxed so the layers' own rejections share its type. The scenes:
//!
//! 1. `/rates/EUR` answers 503, then 429 with `Retry-After: 1`, then 200: retried twice,
//!    the second wait is the server's.
//! 2. `/rates/GBP` is down (500): three failures in a row open its breaker, and the next
//!    calls fail at once without reaching the server; other endpoints are unaffected.
//! 3. Ten calls against a limit of 10 per second with a burst of 2: the limiter spaces them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use llm_tower::BoxError;
use llm_tower::breaker::{BreakerConfig, BreakerLayer};
use llm_tower::ratelimit::{Rate, RateLimitConfig, RateLimitLayer};
use llm_tower::retry::{Jitter, RetryConfig, RetryLayer};
use tower::{Service, ServiceBuilder, ServiceExt};

/// What the run saw, for the test that drives it (`tests/http_client.rs`).
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Scene 1: status of the final answer, and requests the server received.
    pub(crate) flaky: (u16, u32),
    /// Scene 1: the retry delays scheduled.
    pub(crate) retry_delays: Vec<Duration>,
    /// Scene 2: requests the server received for the call sequence, and calls refused by
    /// the open breaker without a request.
    pub(crate) outage: (u32, u32),
    /// Scene 3: how long ten rate-limited calls took.
    pub(crate) paced: Duration,
}

#[derive(Default)]
struct Api {
    eur_calls: AtomicU32,
    gbp_calls: AtomicU32,
}

/// The upstream JSON API: EUR is flaky, GBP is down, USD is healthy.
async fn rates(State(api): State<Arc<Api>>, Path(currency): Path<String>) -> Response {
    let json = |rate: f64| {
        (
            [(header::CONTENT_TYPE, "application/json")],
            format!(r#"{{"currency":"{currency}","rate":{rate}}}"#),
        )
            .into_response()
    };
    match currency.as_str() {
        "EUR" => match api.eur_calls.fetch_add(1, Ordering::SeqCst) {
            0 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            1 => {
                let mut res = StatusCode::TOO_MANY_REQUESTS.into_response();
                res.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                res
            }
            _ => json(1.08),
        },
        "GBP" => {
            api.gbp_calls.fetch_add(1, Ordering::SeqCst);
            (StatusCode::INTERNAL_SERVER_ERROR, "database unavailable").into_response()
        }
        _ => json(1.0),
    }
}

/// Runs the three scenes against a local API; `say` prints the narrative.
pub(crate) async fn run(say: impl Fn(String) + Send + Sync + 'static) -> Result<Summary, BoxError> {
    let api = Arc::new(Api::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/rates/{currency}", get(rates))
        .with_state(api.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let delays = Arc::new(std::sync::Mutex::new(Vec::new()));
    let say = Arc::new(say);
    let retry = {
        let (delays, say) = (delays.clone(), say.clone());
        let mut config = RetryConfig::standard();
        config.base_delay = Duration::from_millis(100);
        config.jitter = Jitter::None;
        RetryLayer::builder()
            .config(config)
            .clone_requests_with(|request: &reqwest::Request| request.try_clone())
            .on_retry(move |event| {
                delays.lock().unwrap().push(event.delay);
                say(format!(
                    "    attempt {} failed ({}); retrying in {:?}{}",
                    event.attempt - 1,
                    event.kind,
                    event.delay,
                    if event.retry_after.is_some() {
                        " as the server asked"
                    } else {
                        ""
                    }
                ));
            })
            .build()?
    };
    let breaker = {
        let say = say.clone();
        let mut config = BreakerConfig::standard();
        config.consecutive_failures = Some(3);
        config.open_duration = Duration::from_secs(30);
        BreakerLayer::builder()
            .config(config)
            .on_state_change(move |change| {
                let endpoint = change.name.as_deref().unwrap_or("?");
                say(format!(
                    "    breaker of {endpoint}: {} → {}",
                    change.from, change.to
                ));
            })
            // One breaker per endpoint: GBP being down must not cut off USD.
            .keyed_by(|request: &reqwest::Request| request.url().path().to_owned())
            .build()?
    };
    let limit = RateLimitLayer::new(RateLimitConfig {
        requests: Some(Rate {
            limit: 10,
            per: Duration::from_secs(1),
            burst: Some(2),
        }),
        ..RateLimitConfig::default()
    })?;

    let client = reqwest::Client::new();
    let service = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .layer(limit)
        .map_err(BoxError::from)
        .service(client.clone());
    let get = |path: &str| client.get(format!("{base}{path}")).build();

    let mut summary = Summary::default();

    say("1. GET /rates/EUR — 503, then 429 with Retry-After: 1, then 200".to_owned());
    let response = service.clone().oneshot(get("/rates/EUR")?).await?;
    let status = response.status().as_u16();
    say(format!("    {status}: {}", response.text().await?));
    summary.flaky = (status, api.eur_calls.load(Ordering::SeqCst));
    summary.retry_delays = delays.lock().unwrap().clone();

    say("2. GET /rates/GBP — the API is down".to_owned());
    let mut refused = 0;
    for call in 1..=3 {
        match service.clone().oneshot(get("/rates/GBP")?).await {
            Ok(response) => say(format!("    call {call}: {}", response.status())),
            Err(err) => {
                if err.is::<llm_tower::CircuitOpen>() {
                    refused += 1;
                }
                say(format!("    call {call}: {err}"));
            }
        }
    }
    summary.outage = (api.gbp_calls.load(Ordering::SeqCst), refused);

    say("3. Ten GET /rates/USD against 10 per second, burst 2".to_owned());
    let started = Instant::now();
    for _ in 0..10 {
        let mut service = service.clone();
        let response = service.ready().await?.call(get("/rates/USD")?).await?;
        assert!(response.status().is_success());
    }
    summary.paced = started.elapsed();
    say(format!("    ten calls took {:?}", summary.paced));
    Ok(summary)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let summary = run(|line| println!("{line}")).await?;
    println!("\n{summary:#?}");
    Ok(())
}
