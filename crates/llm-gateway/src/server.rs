//! The front door: the router with its request caps, and the accept loop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post};
use futures_util::StreamExt;
use tokio::net::TcpListener;

use super::api_chat::api_chat;
use super::auth::{admit, authenticate};
use super::completions::chat_completions;
use super::embeddings::embeddings;
use super::error::ApiError;
use super::gateway::{Current, Gateway};
use super::messages::{count_tokens, messages};
use super::recording::RecordInto;
use super::respond::{at_capacity, refusal};
use super::responses::responses;
use super::status::{health, metrics, models};
use super::status_page::{status_data, status_page};

impl Gateway {
    /// The HTTP routes, behind the front door's request caps: at most `max_in_flight`
    /// requests at once (one more gets a fast 503), a body that must arrive within
    /// `body_timeout`, and a declared body over `max_body_bytes` refused with 413 before a
    /// byte of it is read.
    ///
    /// Merge it into your own axum app to serve the gateway beside your routes (it carries
    /// its state: a `Router<()>`); [`serve`](Self::serve) adds the connection-level caps.
    pub fn router(&self) -> Router {
        use axum::error_handling::HandleErrorLayer;
        use tower::ServiceBuilder;
        use tower_http::limit::RequestBodyLimitLayer;
        use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
        use tower_http::timeout::RequestBodyTimeoutLayer;
        use tower_http::trace::TraceLayer;

        let current = self.current();
        let limits = &current.inner.server;
        let mut routes = Router::new()
            .route("/api/chat", post(api_chat))
            .route("/v1/chat/completions", post(chat_completions))
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/responses", post(responses))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models));
        if !current.inner.admin_apart {
            routes = routes
                .route("/health", get(health))
                .route("/metrics", get(metrics))
                .route("/status", get(status_page))
                .route("/status/data", get(status_data));
        }
        routes
            .layer(DefaultBodyLimit::max(current.inner.max_body_bytes))
            .layer(RequestBodyLimitLayer::new(current.inner.max_body_bytes))
            // NOTE: outside the size limit, so that a declared length over it is refused in
            // the endpoint's own error shape; inside the body timeout, which bounds the
            // draining of a refused body in time (the drain stops at `max_body_bytes`).
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                front_door,
            ))
            .layer(RequestBodyTimeoutLayer::new(limits.body_timeout))
            .layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(overloaded))
                    .load_shed()
                    .concurrency_limit(limits.max_in_flight),
            )
            // Every request gets an `x-request-id` (the caller's, or a fresh one), in its
            // tracing span and echoed in the answer, refusals included.
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(RequestIds::new()))
                    .layer(TraceLayer::new_for_http().make_span_with(request_span))
                    .layer(PropagateRequestIdLayer::x_request_id()),
            )
            // Outermost: what every layer above and every handler records lands in this
            // gateway's metrics.
            .layer(RecordInto(current.inner.metrics.clone()))
            .with_state(self.clone())
    }

    /// `/health` and `/metrics` alone, behind the admin key when one is configured: what
    /// the `[admin]` listener serves (with `admin.listen` set, [`router`](Self::router)
    /// leaves them out).
    pub fn admin_router(&self) -> Router {
        Router::new()
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/status", get(status_page))
            .route("/status/data", get(status_data))
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                authenticate,
            ))
            .layer(RecordInto(self.current().inner.metrics.clone()))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `shutdown` completes, then lets requests and streams in
    /// flight finish for up to `shutdown_timeout` and closes what is left.
    ///
    /// NOTE: an accept loop of its own rather than `axum::serve`, which has no cap on
    /// connections, no header-read timeout and no drain deadline (a half-sent request head
    /// held its graceful shutdown forever).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        use hyper_util::server::graceful::GracefulShutdown;
        use hyper_util::service::TowerToHyperService;

        let limits = self.current().inner.server.clone();
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
                self.current().inner.metrics.connection_refused();
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
}

/// Fresh request ids: a random prefix drawn once per process and a counter
/// (`gw-5f1c0e2a9b3d4c7e-1`) — unique across instances and restarts.
///
/// NOTE: tower-http's `MakeRequestUuid` draws each UUID from the operating system (a system
/// call per request); a counter costs an atomic increment (BENCHMARKS.md, "Issue 24's
/// gateway").
#[derive(Clone, Debug)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    fn new() -> RequestIds {
        RequestIds {
            prefix: Arc::from(format!("gw-{:016x}-", fastrand::u64(..))),
            next: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(
        &mut self,
        _: &http::Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}{n:x}", self.prefix);
        http::HeaderValue::from_str(&id)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// A request's span: method, path and request id (never a header that could hold a key).
///
/// NOTE: at DEBUG, so off by default (`RUST_LOG=info,llm_gateway=debug` turns it on): an
/// INFO span formatted on every request cost ~15 µs of CPU per request under load, 8 % of
/// the gateway's whole cost (BENCHMARKS.md, "Issue 24's gateway").
fn request_span(request: &axum::extract::Request) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = request.uri().path(),
        request_id = id,
        otel.name = tracing::field::Empty,
        otel.kind = "server",
    );
    #[cfg(feature = "otlp")]
    super::telemetry::continue_trace(&span, request);
    span
}

/// The answer to a request over `max_in_flight`: a fast 503 asking to come back shortly, in
/// the endpoint's shape.
pub(crate) async fn overloaded(uri: http::Uri, err: tower::BoxError) -> Response {
    at_capacity(uri.path(), &err.to_string())
}

/// The API's front door: checks the caller's key ([`admit`]), then admits the request's body
/// into the byte budget (its declared length, or the largest body allowed when it declares
/// none) for as long as the request is handled; over budget, a fast 503. Requests without a
/// body pass the budget.
///
/// NOTE: one middleware for both, not two: each axum `from_fn` clones the inner service and
/// boxes a future per request (BENCHMARKS.md, "Issue 24's gateway").
pub(crate) async fn front_door(
    gw: Current,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use axum::http::Method;
    // NOTE: before the byte budget: a request without a valid key holds none of it.
    if let Err(refused) = admit(gw.clone(), &mut request) {
        return *refused;
    }
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    // The caller's trace context goes on to the upstreams when it is well formed.
    // NOTE: header names made once: a lookup by `&str` parses the name on every request.
    static TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");
    static TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");
    if let Some(traceparent) = request.headers().get(&TRACEPARENT) {
        let tracestate = request
            .headers()
            .get(&TRACESTATE)
            .and_then(|v| v.to_str().ok());
        let context = traceparent
            .to_str()
            .ok()
            .and_then(|t| llm_tower::TraceContext::parse(t, tracestate));
        if let Some(context) = context {
            request.extensions_mut().insert(context);
        }
    }
    let max = gw.inner.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        // Refused before a byte of it is read, in the endpoint's shape.
        let error = ApiError::body(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large (at most {max} bytes)"),
        );
        return refusal(request.uri().path(), error);
    }
    let declared = declared.map_or(max, |len| usize::try_from(len).unwrap_or(max));
    let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    match gw.inner.body_budget.clone().try_acquire_many_owned(kib) {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            let path = request.uri().path().to_owned();
            // NOTE: the body is read and dropped frame by frame before the 503: a client still
            // sending it would otherwise see a broken pipe instead of the answer. At most
            // `max_body_bytes` of it: a longer one is cut (the connection then closes).
            let mut frames = request.into_body().into_data_stream();
            let mut read = 0;
            while let Some(Ok(frame)) = frames.next().await {
                read += frame.len();
                if read > max {
                    break;
                }
            }
            at_capacity(&path, "request bytes in flight")
        }
    }
}
