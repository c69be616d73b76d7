//! The gateway: axum handlers over llm-tower stacks.
//!
//! - `POST /api/chat` — `{"message", "provider"?}` → `{"response", "provider", "model",
//!   "retryCount", "attempts"}`; the named (or first) provider, then the others in order.
//! - `POST /v1/chat/completions` — OpenAI-compatible, streaming or not, routed by model name.
//! - `GET /v1/models` — the routed model names.
//! - `GET /health` — each provider's breaker state and limiter capacity.
//! - `GET /metrics` — Prometheus text.
//!
//! This module is shared with `tests/gateway.rs`, which starts it over mock providers.

pub(crate) mod config;
pub(crate) mod demo;
pub(crate) mod metrics;
pub(crate) mod openai;
pub(crate) mod stack;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use llm_providers::recovery::{AfterOutput, RecoveringStream, RecoveryPolicy};
use llm_providers::{ChatRequest, ProviderKind};
use llm_tower::fallback::Fallback;
use llm_tower::ratelimit::StoreLocation;
use llm_tower::upstream::{BreakerScope, ChatService, UpstreamChain, UpstreamHealth};
use llm_tower::{ConfigError, Deadline, ErrorKind, LlmError};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tower::ServiceExt;

use self::config::{ConfigFileError, GatewayConfig, Lookup, ServerLimits};
use self::metrics::Metrics;
use self::openai::{ApiError, CompletionRequest};
use self::stack::{AttemptLog, Configured};

/// The gateway's state; axum clones it per request, and every clone shares the providers'
/// breakers, limiters and the metrics.
#[derive(Clone)]
pub(crate) struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    upstreams: Vec<Configured>,
    /// `/api/chat` chains: entry `i` starts at provider `i`, then the others in order.
    chat_chains: Vec<Fallback<ChatService, ChatRequest>>,
    routes: Vec<Route>,
    wildcard: Option<Route>,
    metrics: Metrics,
    request_timeout: Duration,
    max_body_bytes: usize,
    server: ServerLimits,
    /// Request body bytes in flight, in KiB: the byte budget of `server.max_in_flight_bytes`.
    body_budget: Arc<tokio::sync::Semaphore>,
    next_id: AtomicU64,
}

/// A `/v1/chat/completions` route's chains.
struct Route {
    model: String,
    owner: String,
    /// Its targets, complete and streaming (under the route's recovery policy).
    chain: UpstreamChain,
    /// That policy.
    recovery: RecoveryPolicy,
}

impl Gateway {
    /// Builds every provider and stack of `config`, reading API keys through `vars`.
    pub(crate) fn new(config: &GatewayConfig, vars: Lookup<'_>) -> Result<Gateway, ConfigError> {
        let metrics = Metrics::default();
        let mut upstreams = Vec::with_capacity(config.providers.len());
        for (i, settings) in config.providers.iter().enumerate() {
            let section = format!("providers[{i}]");
            let provider = settings
                .connection
                .build_with(vars)
                .map_err(|e| e.in_section(&section))?;
            let models = config.models_of(&settings.name);
            upstreams.push(Configured {
                upstream: stack::upstream(settings, provider, &models, &metrics)
                    .map_err(|e| e.in_section(&section))?,
                model: settings.model.clone(),
            });
        }

        // `/api/chat` keeps its documented behaviour: a rate limit moves to the next provider.
        let chat_chains = (0..upstreams.len())
            .map(|first| {
                let order =
                    std::iter::once(first).chain((0..upstreams.len()).filter(|&i| i != first));
                order
                    .fold(stack::chain(&metrics), |chain, i| {
                        chain.upstream_as(&upstreams[i].upstream, upstreams[i].model.clone())
                    })
                    .map_retry(|retry| {
                        let mut retry = retry.clone();
                        retry.failover_on = retry.failover_on.with(ErrorKind::RateLimited);
                        retry
                    })
                    .build()
                    .map(|chain| chain.chat())
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut routes = Vec::new();
        let mut wildcard = None;
        for (i, route) in config.effective_routes().into_iter().enumerate() {
            let section = format!("routes[{i}]");
            let chain = route
                .targets
                .iter()
                .fold(stack::chain(&metrics), |chain, target| {
                    let up = &upstreams
                        .iter()
                        .find(|u| u.upstream.name() == target.provider)
                        .expect("validated: every target names a provider")
                        .upstream;
                    match &target.model {
                        Some(model) => chain.upstream_as(up, model.clone()),
                        None => chain.upstream(up),
                    }
                })
                .recovery(route.recovery_policy())
                .build()
                .map_err(|e| e.in_section(&section))?;
            let built = Route {
                owner: route.targets[0].provider.clone(),
                model: route.model.clone(),
                recovery: route.recovery_policy(),
                chain,
            };
            if route.is_wildcard() {
                wildcard = Some(built);
            } else {
                routes.push(built);
            }
        }

        Ok(Gateway {
            inner: Arc::new(Inner {
                upstreams,
                chat_chains,
                routes,
                wildcard,
                metrics,
                request_timeout: config.request_timeout,
                max_body_bytes: config.max_body_bytes,
                server: config.server.clone(),
                body_budget: Arc::new(tokio::sync::Semaphore::new(
                    config.server.max_in_flight_bytes.div_ceil(1024),
                )),
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// As [`new`](Self::new), with errors naming where the configuration came from.
    pub(crate) fn from_config(
        config: &GatewayConfig,
        source: &str,
        vars: Lookup<'_>,
    ) -> Result<Gateway, ConfigFileError> {
        Gateway::new(config, vars).map_err(|error| ConfigFileError {
            source: source.to_owned(),
            error,
        })
    }

    /// The HTTP routes, behind the front door's request caps: at most `max_in_flight`
    /// requests at once (one more gets a fast 503), a body that must arrive within
    /// `body_timeout`, and a declared body over `max_body_bytes` refused with 413 before a
    /// byte of it is read.
    pub(crate) fn router(&self) -> Router {
        use axum::error_handling::HandleErrorLayer;
        use tower::ServiceBuilder;
        use tower_http::limit::RequestBodyLimitLayer;
        use tower_http::timeout::RequestBodyTimeoutLayer;

        let limits = &self.inner.server;
        Router::new()
            .route("/api/chat", post(api_chat))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/models", get(models))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .layer(DefaultBodyLimit::max(self.inner.max_body_bytes))
            // NOTE: inside the size limit and the body timeout, which bound the draining of a
            // refused body.
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                admit_body_bytes,
            ))
            .layer(RequestBodyLimitLayer::new(self.inner.max_body_bytes))
            .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(overloaded))
                    .load_shed()
                    .concurrency_limit(limits.max_in_flight),
            )
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests and streams in
    /// flight finish for up to `shutdown_timeout` and closes what is left.
    ///
    /// NOTE: an accept loop of its own rather than `axum::serve`, which has no cap on
    /// connections, no header-read timeout and no drain deadline (a half-sent request head
    /// held its graceful shutdown forever).
    pub(crate) async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use hyper_util::server::graceful::GracefulShutdown;
        use hyper_util::service::TowerToHyperService;

        let limits = self.inner.server.clone();
        let router = self.router();
        let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        // NOTE: hyper starts this timer whenever it waits for a request head, so an idle
        // keep-alive connection is closed after it as well as a slow one.
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let graceful = GracefulShutdown::new();
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while connections.try_join_next().is_some() {}
            let tcp = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        // Out of descriptors, say: wait for connections to close, not spin.
                        tracing::warn!("accepting a connection failed: {err}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Over the connection cap: closed at once.
                self.inner.metrics.connection_refused();
                continue;
            };
            // Small responses go out at once rather than waiting to be coalesced (Nagle).
            let _ = tcp.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let connection = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
            connections.spawn(async move {
                let _ = connection.await;
                drop(slot);
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "closing {} connection(s) still open after the {:?} drain deadline",
                connections.len(),
                limits.shutdown_timeout
            );
            connections.abort_all();
        }
        Ok(())
    }

    /// The providers' names, in order.
    pub(crate) fn provider_names(&self) -> Vec<&str> {
        self.inner
            .upstreams
            .iter()
            .map(|u| u.upstream.name())
            .collect()
    }

    fn route(&self, model: &str) -> Option<&Route> {
        self.inner
            .routes
            .iter()
            .find(|r| r.model == model)
            .or(self.inner.wildcard.as_ref())
    }

    fn request_id(&self) -> String {
        format!(
            "chatcmpl-gw{:x}{:06x}",
            openai::unix_now(),
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `request` with a fresh attempt log and the gateway's deadline.
    fn prepare(&self, mut request: ChatRequest) -> (ChatRequest, AttemptLog) {
        let log = AttemptLog::default();
        request.extensions_mut().insert(log.clone());
        request
            .extensions_mut()
            .insert(Deadline::after(self.inner.request_timeout));
        (request, log)
    }

    /// Runs `call`, capped by the request timeout (the deadline stops retries and fallbacks
    /// from starting late; this also stops an attempt in flight).
    async fn within_deadline<T>(
        &self,
        call: impl Future<Output = Result<T, LlmError>>,
    ) -> Result<T, LlmError> {
        tokio::time::timeout(self.inner.request_timeout, call)
            .await
            .unwrap_or_else(|_| {
                Err(LlmError::new(
                    ErrorKind::Timeout,
                    format!(
                        "no answer within the gateway's request timeout ({:?})",
                        self.inner.request_timeout
                    ),
                ))
            })
    }
}

/// The answer to a request over `max_in_flight`: a fast 503 asking to come back shortly.
async fn overloaded(err: tower::BoxError) -> Response {
    at_capacity(&err.to_string())
}

/// A fast 503 with `Retry-After`: the gateway holds as much as it admits.
fn at_capacity(what: &str) -> Response {
    let mut response = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({ "error": { "message": format!("the gateway is at capacity ({what}); retry shortly"), "type": "server_error", "code": "gateway_overloaded" } }),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Admits a request's body into the byte budget (its declared length, or the largest body
/// allowed when it declares none) for as long as the request is handled; over budget, a
/// fast 503. Requests without a body pass.
async fn admit_body_bytes(
    State(gw): State<Gateway>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(gw.inner.max_body_bytes)
        .min(gw.inner.max_body_bytes);
    let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    match gw.inner.body_budget.clone().try_acquire_many_owned(kib) {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            // NOTE: the body is read and dropped frame by frame before the 503: a client still
            // sending it would otherwise see a broken pipe instead of the answer.
            let mut frames = request.into_body().into_data_stream();
            while let Some(Ok(_)) = frames.next().await {}
            at_capacity("request bytes in flight")
        }
    }
}

/// Counts a request to `endpoint` once its response is ready.
fn observed(
    gw: &Gateway,
    endpoint: &'static str,
    started: Instant,
    response: Response,
) -> Response {
    gw.inner
        .metrics
        .request(endpoint, response.status().as_u16(), started.elapsed());
    response
}

/// A body axum refused: too large (413), or unreadable (400).
fn body_error(rejection: &BytesRejection) -> (StatusCode, String) {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body too large".to_owned()
    } else {
        format!("cannot read the request body: {rejection}")
    };
    (status, message)
}

/// `/api/chat`'s body.
#[derive(Deserialize)]
struct ApiChat {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    provider: Option<String>,
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

async fn api_chat(State(gw): State<Gateway>, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let response = api_chat_inner(&gw, body).await;
    observed(&gw, "/api/chat", started, response)
}

async fn api_chat_inner(gw: &Gateway, body: Result<Bytes, BytesRejection>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = body_error(&rejection);
            return json_response(status, json!({ "error": message }));
        }
    };
    let chat: ApiChat = match serde_json::from_slice(&body) {
        Ok(chat) => chat,
        Err(err) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({ "error": format!("invalid JSON body: {err}") }),
            );
        }
    };
    let Some(message) = chat.message.filter(|m| !m.trim().is_empty()) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({ "error": "`message` is required and must not be empty" }),
        );
    };
    let first = match chat.provider.as_deref() {
        None => 0,
        Some(name) => match gw
            .inner
            .upstreams
            .iter()
            .position(|u| u.upstream.name() == name)
        {
            Some(index) => index,
            None => {
                let valid = gw.provider_names();
                return json_response(
                    StatusCode::BAD_REQUEST,
                    json!({
                        "error": format!("unknown provider {name:?}; valid providers: {}", valid.join(", ")),
                        "validProviders": valid,
                    }),
                );
            }
        },
    };
    let upstream = &gw.inner.upstreams[first];
    let (request, log) = gw.prepare(ChatRequest::new(upstream.model.clone()).user(message));
    let chain = gw.inner.chat_chains[first].clone();
    let result = gw.within_deadline(chain.oneshot(request)).await;
    let attempts = log.records();
    let retry_count = log.upstream_calls().saturating_sub(1);
    match result {
        Ok(answer) => {
            tracing::info!(
                provider = %answer.provider,
                model = %answer.model,
                retries = retry_count,
                "/api/chat answered by {} after {} attempt(s)",
                answer.provider,
                retry_count + 1
            );
            json_response(
                StatusCode::OK,
                json!({
                    "response": answer.text,
                    "provider": &*answer.provider,
                    "model": answer.model,
                    "retryCount": retry_count,
                    "attempts": attempts,
                }),
            )
        }
        // The request itself was refused upstream: another provider would refuse it too.
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::InvalidRequest | ErrorKind::ContentFiltered | ErrorKind::Unsupported
            ) =>
        {
            json_response(
                StatusCode::BAD_REQUEST,
                json!({
                    "error": err.to_string(),
                    "kind": err.kind().as_str(),
                    "retryCount": retry_count,
                    "attempts": attempts,
                }),
            )
        }
        Err(err) => {
            let last_error = attempts
                .iter()
                .rev()
                .find_map(|a| a.error.clone())
                .unwrap_or_else(|| err.to_string());
            if log.upstream_calls() > 0 {
                tracing::error!(
                    retries = retry_count,
                    "/api/chat: every provider failed: {err}"
                );
            } else {
                // Every provider skipped by its own open breaker or limit: counted, and
                // repeated for every request while it lasts.
                tracing::debug!("/api/chat: every provider was skipped: {err}");
            }
            let retry_after = ApiError::from_llm(&err)
                .retry_after
                .unwrap_or(Duration::from_secs(1));
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "error": "All LLM providers unavailable",
                    "retryCount": retry_count,
                    "lastError": last_error,
                    "attempts": attempts,
                }),
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
    }
}

async fn chat_completions(
    State(gw): State<Gateway>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let response = match completions_inner(&gw, body).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    };
    observed(&gw, "/v1/chat/completions", started, response)
}

async fn completions_inner(
    gw: &Gateway,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        let (status, message) = body_error(&rejection);
        ApiError::body(status, message)
    })?;
    let mut request: CompletionRequest = serde_json::from_slice(&body)
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))?;
    // The body's bytes are parsed: not held for the rest of the request.
    drop(body);
    let Some(route) = gw.route(&request.model) else {
        let routed: Vec<&str> = gw.inner.routes.iter().map(|r| r.model.as_str()).collect();
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            ..ApiError::invalid(format!(
                "the model {:?} is not routed by this gateway (routed: {})",
                request.model,
                routed.join(", ")
            ))
            .param("model")
            .code("model_not_found")
        });
    };
    let targets: Vec<(&str, ProviderKind)> = route
        .chain
        .targets()
        .iter()
        .map(|(n, k)| (&**n, *k))
        .collect();
    let passed = request.check_fields(&targets)?;
    // The fields checked are the ones that go; `take_chat_request` sends what `rest` holds.
    request.rest = passed;
    let (mut chat, log) = gw.prepare(request.take_chat_request()?);
    if request.wants_json() && route.recovery.after_output == AfterOutput::Continue {
        // JSON spliced from two answers is not JSON: hold back or fail clean instead.
        chat.extensions_mut().insert(RecoveryPolicy {
            after_output: AfterOutput::Fail,
            ..route.recovery.clone()
        });
    }
    let id = gw.request_id();
    if !request.stream {
        let answer = gw
            .within_deadline(route.chain.chat().oneshot(chat))
            .await
            .map_err(|err| ApiError::from_llm(&err))?;
        let mut response = axum::Json(openai::completion(&id, &answer)).into_response();
        annotate(&mut response, &answer.provider, log.upstream_calls());
        return Ok(response);
    }
    let stream = gw
        .within_deadline(route.chain.stream().oneshot(chat))
        .await
        .map_err(|err| ApiError::from_llm(&err))?;
    let provider = stream.provider().to_owned();
    let mut response = Response::new(Body::from_stream(sse_events(
        stream,
        id,
        request.include_usage(),
    )));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    annotate(&mut response, &provider, log.upstream_calls());
    Ok(response)
}

/// Says who answered and after how many attempts, for clients that want to know.
fn annotate(response: &mut Response, provider: &str, attempts: usize) {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(provider) {
        headers.insert("x-gateway-provider", value);
    }
    headers.insert("x-gateway-attempts", HeaderValue::from(attempts));
}

struct SseState {
    stream: RecoveringStream,
    id: String,
    created: u64,
    first: bool,
    include_usage: bool,
    usage: Option<llm_tower::Usage>,
}

fn event(value: &serde_json::Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// The stream as OpenAI's server-sent events. A stream that breaks after its first chunk ends
/// with an error event and no `[DONE]`, so no client mistakes a truncated answer for a
/// complete one.
fn sse_events(
    stream: RecoveringStream,
    id: String,
    include_usage: bool,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let state = SseState {
        stream,
        id,
        created: openai::unix_now(),
        first: true,
        include_usage,
        usage: None,
    };
    futures_util::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        match state.stream.next().await {
            Some(Ok(chunk)) => {
                if chunk.usage.is_some() {
                    state.usage = chunk.usage;
                }
                // NOTE: after a repair the stream names the model that finishes the answer.
                let model = state.stream.model();
                let bytes = if let Some(recovery) = &chunk.recovery {
                    // The answer was repaired: say so, by whom, after how much.
                    event(&openai::recovery_chunk(
                        &state.id,
                        state.created,
                        model,
                        recovery,
                    ))
                } else if !chunk.has_content()
                    && chunk.finish_reason.is_none()
                    && chunk.logprobs.is_none()
                    && chunk.other_choices.is_empty()
                    && !state.first
                {
                    // A usage-only chunk: its numbers go in the final usage chunk.
                    Bytes::new()
                } else {
                    event(&openai::chunk(
                        &state.id,
                        state.created,
                        model,
                        &chunk,
                        state.first,
                    ))
                };
                state.first = false;
                Some((Ok(bytes), Some(state)))
            }
            Some(Err(err)) => {
                tracing::warn!(
                    provider = state.stream.provider(),
                    "stream from {} broke after its first chunk: {err}",
                    state.stream.provider()
                );
                Some((Ok(event(&ApiError::from_llm(&err).to_json())), None))
            }
            None => {
                let mut tail = String::new();
                if let (true, Some(usage)) = (state.include_usage, state.usage) {
                    let usage =
                        openai::usage_chunk(&state.id, state.created, state.stream.model(), usage);
                    tail.push_str(&format!("data: {usage}\n\n"));
                }
                tail.push_str("data: [DONE]\n\n");
                Some((Ok(Bytes::from(tail)), None))
            }
        }
    })
}

async fn models(State(gw): State<Gateway>) -> Response {
    let started = Instant::now();
    let data: Vec<_> = gw
        .inner
        .routes
        .iter()
        .map(|route| {
            json!({
                "id": route.model,
                "object": "model",
                "created": 0,
                "owned_by": route.owner,
            })
        })
        .collect();
    let response = axum::Json(json!({ "object": "list", "data": data })).into_response();
    observed(&gw, "/v1/models", started, response)
}

/// One breaker's state as `/health` shows it.
fn breaker_json(model: Option<&str>, m: &llm_tower::breaker::Metrics) -> serde_json::Value {
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
fn breakers_json(health: &UpstreamHealth) -> (serde_json::Value, bool) {
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

async fn health(State(gw): State<Gateway>) -> Response {
    let started = Instant::now();
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
            let limiter = json!({
                "requestsAvailable": capacity.requests,
                "tokensAvailable": capacity.tokens,
                "pausedForMs": u64::try_from(capacity.paused_for.as_millis()).unwrap_or(u64::MAX),
                "waiting": limiter.waiting(),
                "admitted": limiter.admitted(),
                "rejected": limiter.rejected(),
                "shared": shared,
                "redisUnreachable": unreachable,
            });
            json!({
                "name": up.name(),
                "kind": up.kind().to_string(),
                "model": configured.model,
                "breaker": breaker,
                "limiter": limiter,
            })
        })
        .collect();
    let (status, label) = match open {
        0 => (StatusCode::OK, "ok"),
        n if n < providers.len() => (StatusCode::OK, "degraded"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "down"),
    };
    let response = json_response(status, json!({ "status": label, "providers": providers }));
    observed(&gw, "/health", started, response)
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    let body = gw.inner.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
