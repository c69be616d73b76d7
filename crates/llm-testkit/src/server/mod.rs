//! [`MockProvider`]: a fault-injecting HTTP server that speaks OpenAI, Azure OpenAI,
//! OpenRouter, Anthropic, Gemini and Ollama wire formats on an ephemeral loopback port.
//!
//! Every answer is the [`canonical_answer`] (60 tokens unless the plan says otherwise), cut
//! short by a smaller `max_tokens` with finish reason `length`, so a truncated or spliced
//! answer is visible. Faults come from a [`Plan`] of [`Rule`]s; every request lands in the
//! [`Attempt`] log with its secrets redacted.
//!
//! ```
//! use llm_testkit::server::{Fault, MockProvider, Rule, canonical_answer};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> std::io::Result<()> {
//! let mock = MockProvider::builder()
//!     .rule(Rule::model("gpt-4o").sequence([Fault::status(503)]))
//!     .start()
//!     .await?;
//! let client = reqwest::Client::new();
//! let send = || {
//!     client
//!         .post(mock.url("/v1/chat/completions"))
//!         .bearer_auth("sk-test")
//!         .body(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}"#)
//!         .send()
//! };
//! assert_eq!(send().await.unwrap().status(), 503);
//! let body: serde_json::Value = send().await.unwrap().json().await.unwrap();
//! assert_eq!(body["choices"][0]["message"]["content"], canonical_answer(60));
//! assert_eq!(mock.attempts().len(), 2);
//! # Ok(()) }
//! ```

pub mod conversation;
mod limits;
mod plan;
mod wire;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use llm_core::ConfigError;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use plan::{DelayFormat, Fault, Latency, Plan, RateLimitSim, Route, Rule};
pub use wire::{canonical_answer, canonical_token, stream_body};

use limits::{Budgets, Refusal};
use wire::{ErrorReply, Exchange, Frame};

/// Request headers whose values the attempt log never keeps.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "proxy-authorization",
];

/// One request as the mock provider saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Attempt {
    /// Position in the log, from 0.
    pub index: u64,
    /// Time since the server started (or was reset).
    #[serde(with = "llm_core::config::duration")]
    pub at: Duration,
    /// The wire format it used.
    pub route: Route,
    /// The request path (no query string: Gemini's `?key=` never reaches the log).
    pub path: String,
    /// The model it named (Azure: the deployment; Gemini: from the path).
    pub model: String,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// Its headers, secrets (`authorization`, `x-api-key`, `api-key`, `x-goog-api-key`)
    /// replaced by `[redacted]`.
    pub headers: Vec<(String, String)>,
    /// The fault it got (`ok`, `status 503`, `cut_after 5`, `rate_limit budget`, …).
    pub fault: String,
    /// The status answered; `None` when the connection was reset or never answered.
    pub status: Option<u16>,
}

impl Attempt {
    /// The value of request header `name` as logged (secrets read `[redacted]`).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Builds a [`MockProvider`].
#[derive(Debug)]
#[must_use]
pub struct MockProviderBuilder {
    plan: Plan,
    addr: SocketAddr,
    api_key: Option<String>,
}

/// A running mock provider: its address, attempt log and controls. Dropping it shuts the
/// server down; [`shutdown`](Self::shutdown) also waits until the port is released.
///
/// Routes (base URL `http://127.0.0.1:PORT`):
///
/// | route | path |
/// |---|---|
/// | OpenAI, OpenAI-compatible | `POST /v1/chat/completions` |
/// | Azure OpenAI | `POST /openai/deployments/{deployment}/chat/completions?api-version=…` |
/// | OpenRouter | `POST /api/v1/chat/completions` |
/// | Anthropic | `POST /v1/messages` |
/// | Gemini | `POST /v1beta/models/{model}:generateContent`, `…:streamGenerateContent?alt=sse` |
/// | Ollama | `POST /api/chat` |
/// | attempt log | `GET /__mock/attempts` |
/// | reset (log, sequences, windows, budgets) | `POST /__mock/reset` |
/// | replace the plan (TOML body) | `PUT /__mock/plan` |
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<ServerState>,
    api_key: Option<String>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct ServerState {
    plan: Plan,
    started: Instant,
    /// Requests each rule has matched since the last reset (drives sequences).
    used: Vec<usize>,
    log: Vec<Attempt>,
    budgets: Budgets,
    rng: fastrand::Rng,
}

impl ServerState {
    fn new(plan: Plan) -> ServerState {
        ServerState {
            used: vec![0; plan.rules.len()],
            rng: fastrand::Rng::with_seed(plan.seed),
            plan,
            started: Instant::now(),
            log: Vec::new(),
            budgets: Budgets::default(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A panicking test thread must not take the server down with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl MockProvider {
    /// A builder with the default plan: 60-token answers, no faults, a budget no test
    /// reaches, bound to `127.0.0.1:0` (an ephemeral port).
    pub fn builder() -> MockProviderBuilder {
        MockProviderBuilder {
            plan: Plan::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` — point a provider's base URL here (with `/v1` for OpenAI,
    /// `/api/v1` for OpenRouter, `/v1beta` for Gemini).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The absolute URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in arrival order.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.shared.lock().log.clone()
    }

    /// Clears the log, restarts sequences and time windows, refills every budget.
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        let plan = state.plan.clone();
        *state = ServerState::new(plan);
    }

    /// Replaces the plan (and resets, as [`reset`](Self::reset) does).
    pub fn set_plan(&self, plan: Plan) -> Result<(), ConfigError> {
        plan.validate()?;
        *self.shared.lock() = ServerState::new(plan);
        Ok(())
    }

    /// Stops accepting, closes every connection and waits until the port is free.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl MockProviderBuilder {
    /// Replaces the whole plan.
    pub fn plan(mut self, plan: Plan) -> Self {
        self.plan = plan;
        self
    }

    /// Adds a fault rule (after those already in the plan: first match wins).
    pub fn rule(mut self, rule: Rule) -> Self {
        self.plan.rules.push(rule);
        self
    }

    /// Tokens in every answer (default 60).
    pub fn answer_tokens(mut self, tokens: usize) -> Self {
        self.plan.answer_tokens = tokens;
        self
    }

    /// Latency added to every response.
    pub fn latency(mut self, latency: Latency) -> Self {
        self.plan.latency = Some(latency);
        self
    }

    /// Pause between stream chunks.
    pub fn chunk_interval(mut self, interval: Duration) -> Self {
        self.plan.chunk_interval = Some(interval);
        self
    }

    /// The per-key requests/tokens budget.
    pub fn rate_limit(mut self, requests_per_minute: u64, tokens_per_minute: u64) -> Self {
        self.plan.rate_limit = RateLimitSim {
            requests_per_minute,
            tokens_per_minute,
        };
        self
    }

    /// Accept only this key (in the route's own header); other keys get the route's
    /// "invalid key" answer. Without it any non-empty key is accepted.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Listen on `addr` instead of `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Binds the port and starts serving on the current tokio runtime.
    ///
    /// Fails with `InvalidInput` when the plan is invalid (the message names the field),
    /// or with the bind error.
    pub async fn start(self) -> io::Result<MockProvider> {
        self.plan
            .validate()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let listener = TcpListener::bind(self.addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(ServerState::new(self.plan)),
            api_key: self.api_key,
            next_id: AtomicU64::new(1),
        });
        let (shutdown, stop) = watch::channel(false);
        let router = router(shared.clone());
        let task = tokio::spawn(accept_loop(listener, router, stop));
        Ok(MockProvider {
            addr,
            shared,
            shutdown,
            task: Some(task),
        })
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                connections.spawn(serve_connection(tcp, router.clone(), stop.clone()));
            }
            // Reap finished connections so a long run does not accumulate handles.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Lets a handler drop its own connection (the `reset` fault).
#[derive(Clone, Debug)]
struct ConnControl {
    kill: Arc<Notify>,
    killed: Arc<AtomicBool>,
}

impl ConnControl {
    fn reset(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.kill.notify_one();
    }
}

async fn serve_connection(tcp: TcpStream, router: Router, mut stop: watch::Receiver<bool>) {
    let control = ConnControl {
        kill: Arc::new(Notify::new()),
        killed: Arc::new(AtomicBool::new(false)),
    };
    let io = ResettableIo {
        tcp,
        killed: control.killed.clone(),
    };
    let kill = control.kill.clone();
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(control.clone());
        let mut router = router.clone();
        tower_service::Service::call(&mut router, req)
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    // Dropping the connection closes the socket (with an RST after a `reset` fault).
    tokio::select! {
        _ = conn => {}
        _ = kill.notified() => {}
        _ = stop.changed() => {}
    }
}

/// The connection's socket; after a `reset` fault it closes with an RST instead of a FIN.
#[derive(Debug)]
struct ResettableIo {
    tcp: TcpStream,
    killed: Arc<AtomicBool>,
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.killed.load(Ordering::SeqCst) {
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    macro_rules! route_handler {
        ($route:expr) => {
            post(|State(s): State<Arc<Shared>>, req: Request| handle($route, s, req))
        };
    }
    Router::new()
        .route("/v1/chat/completions", route_handler!(Route::OpenAi))
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            route_handler!(Route::Azure),
        )
        .route(
            "/api/v1/chat/completions",
            route_handler!(Route::OpenRouter),
        )
        .route("/v1/messages", route_handler!(Route::Anthropic))
        .route("/v1beta/models/{target}", route_handler!(Route::Gemini))
        .route("/api/chat", route_handler!(Route::Ollama))
        .route("/__mock/attempts", get(admin_attempts))
        .route("/__mock/reset", post(admin_reset))
        .route("/__mock/plan", put(admin_plan))
        .with_state(shared)
}

async fn admin_attempts(State(shared): State<Arc<Shared>>) -> Response {
    let log = shared.lock().log.clone();
    json_response(
        StatusCode::OK,
        &serde_json::to_value(log).unwrap_or_default(),
    )
}

async fn admin_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    let mut state = shared.lock();
    let plan = state.plan.clone();
    *state = ServerState::new(plan);
    StatusCode::NO_CONTENT
}

async fn admin_plan(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let text = String::from_utf8_lossy(&body);
    match Plan::from_toml(&text) {
        Ok(plan) => {
            *shared.lock() = ServerState::new(plan);
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .unwrap_or_default()
        }
        Err(err) => json_response(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": err.to_string(), "field": err.field()}),
        ),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_default()
}

/// What the request asked for, read from its path, headers and body.
struct Parsed {
    model: String,
    stream: bool,
    include_usage: bool,
    prompt_tokens: u64,
    max_tokens: Option<u64>,
    prefill: Option<String>,
    key: Option<String>,
    answer: conversation::Answer,
}

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| v.to_owned())
    })
}

/// Reads the request; an `Err` is the route's 400 for a body it cannot use.
fn parse(
    route: Route,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Parsed, String> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|err| format!("We could not parse the JSON body of your request: {err}"))?;
    let mut prompt_tokens = 3;
    let mut last_role = String::new();
    let mut last_text = String::new();
    let mut add = |role: &str, text: String| {
        prompt_tokens += 3 + words(&text);
        last_role = role.to_owned();
        last_text = text;
    };
    let path = uri.path();
    let (model, stream, include_usage, max_tokens, key) = match route {
        Route::OpenAi | Route::Azure | Route::OpenRouter => {
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("'messages' is a required property")?;
            for m in messages {
                add(
                    m.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(m.get("content").unwrap_or(&Value::Null)),
                );
            }
            let model = if route == Route::Azure {
                if query_param(uri, "api-version").is_none() {
                    return Err("Missing required query parameter: api-version".into());
                }
                path.split('/').nth(3).unwrap_or_default().to_owned()
            } else {
                json.get("model")
                    .and_then(Value::as_str)
                    .ok_or("you must provide a model parameter")?
                    .to_owned()
            };
            let key = match route {
                Route::Azure => header_string(headers, "api-key").or_else(|| bearer(headers)),
                _ => bearer(headers),
            };
            (
                model,
                json.get("stream").and_then(Value::as_bool).unwrap_or(false),
                json.pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                json.get("max_completion_tokens")
                    .or_else(|| json.get("max_tokens"))
                    .and_then(Value::as_u64),
                key,
            )
        }
        Route::Anthropic => {
            if headers.get("anthropic-version").is_none() {
                return Err("anthropic-version: header is required".into());
            }
            let max_tokens = json
                .get("max_tokens")
                .and_then(Value::as_u64)
                .ok_or("max_tokens: Field required")?;
            if let Some(system) = json.get("system") {
                add("system", text_of(system));
            }
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("messages: Field required")?;
            for m in messages {
                let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
                if role == "system" {
                    return Err("messages: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role.".into());
                }
                add(role, text_of(m.get("content").unwrap_or(&Value::Null)));
            }
            let model = json
                .get("model")
                .and_then(Value::as_str)
                .ok_or("model: Field required")?
                .to_owned();
            (
                model,
                json.get("stream").and_then(Value::as_bool).unwrap_or(false),
                true,
                Some(max_tokens),
                header_string(headers, "x-api-key"),
            )
        }
        Route::Gemini => {
            let target = path.rsplit('/').next().unwrap_or_default();
            let (model, action) = target.split_once(':').ok_or("unknown method")?;
            let stream = match action {
                "generateContent" => false,
                "streamGenerateContent" => true,
                other => return Err(format!("Method not found: {other}")),
            };
            if let Some(system) = json.pointer("/systemInstruction/parts") {
                add("system", text_of(system));
            }
            let contents = json
                .get("contents")
                .and_then(Value::as_array)
                .ok_or("* GenerateContentRequest.contents: contents is not specified")?;
            for c in contents {
                add(
                    c.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(c.get("parts").unwrap_or(&Value::Null)),
                );
            }
            let key = header_string(headers, "x-goog-api-key").or_else(|| query_param(uri, "key"));
            (
                model.to_owned(),
                stream,
                true,
                json.pointer("/generationConfig/maxOutputTokens")
                    .and_then(Value::as_u64),
                key,
            )
        }
        Route::Ollama => {
            let messages = json
                .get("messages")
                .and_then(Value::as_array)
                .ok_or("messages is required")?;
            for m in messages {
                add(
                    m.get("role").and_then(Value::as_str).unwrap_or("user"),
                    text_of(m.get("content").unwrap_or(&Value::Null)),
                );
            }
            let model = json
                .get("model")
                .and_then(Value::as_str)
                .ok_or("model is required")?
                .to_owned();
            (
                model,
                // Ollama streams unless told not to.
                json.get("stream").and_then(Value::as_bool).unwrap_or(true),
                true,
                json.pointer("/options/num_predict").and_then(Value::as_u64),
                bearer(headers),
            )
        }
    };
    let prefill = matches!(last_role.as_str(), "assistant" | "model").then_some(last_text);
    let answer = conversation::answer(route, &model, &json);
    Ok(Parsed {
        answer,
        model,
        stream,
        include_usage,
        prompt_tokens,
        max_tokens,
        prefill,
        key,
    })
}

fn bad_request(route: Route, message: &str, request_id: &str) -> ErrorReply {
    let body = match route {
        Route::OpenAi | Route::Azure => {
            serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}})
        }
        Route::OpenRouter => serde_json::json!({"error": {"code": 400, "message": message}}),
        Route::Anthropic => serde_json::json!({"type": "error",
            "error": {"type": "invalid_request_error", "message": message}, "request_id": format!("req_{request_id}")}),
        Route::Gemini => {
            serde_json::json!({"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}})
        }
        Route::Ollama => serde_json::json!({"error": message}),
    };
    ErrorReply {
        status: 400,
        headers: Vec::new(),
        content_type: "application/json",
        body: body.to_string(),
    }
}

fn redacted_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect()
}

/// The decision for one request, taken under the lock.
struct Decision {
    fault: Fault,
    label: String,
    latency: Duration,
    chunk_interval: Duration,
    extra_headers: Vec<(&'static str, String)>,
    /// A reply forced by the simulated budget, overriding the fault.
    budget_reply: Option<Fault>,
}

async fn handle(route: Route, shared: Arc<Shared>, req: Request) -> Response {
    let control = req.extensions().get::<ConnControl>().cloned();
    let (parts, body) = req.into_parts();
    let request_id = format!("mock{:012}", shared.next_id.fetch_add(1, Ordering::Relaxed));
    let body = match axum::body::to_bytes(body, 32 << 20).await {
        Ok(body) => body,
        Err(_) => Bytes::new(),
    };
    let parsed = parse(route, &parts.uri, &parts.headers, &body);
    let logged_headers = redacted_headers(&parts.headers);
    let (model, stream) = parsed
        .as_ref()
        .map_or((String::new(), false), |p| (p.model.clone(), p.stream));

    let mut parsed = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            let reply = bad_request(route, &message, &request_id);
            record(
                &shared,
                route,
                &parts.uri,
                model,
                stream,
                logged_headers,
                "bad_request".into(),
                Some(400),
            );
            return error_response(reply, &request_id, route);
        }
    };

    // Build the answer before faults: the canonical answer, continued after a prefill that
    // is a prefix of it, cut by max_tokens.
    let (answer_tokens, decision) = {
        let mut state = shared.lock();
        let elapsed = state.started.elapsed();
        let answer_tokens = state.plan.answer_tokens;
        let mut fault = Fault::Ok;
        let mut label = "ok".to_owned();
        let mut latency = state.plan.latency;
        let mut chunk_interval = state.plan.chunk_interval;
        let mut chosen = None;
        for (i, rule) in state.plan.rules.iter().enumerate() {
            if !rule.matches(route, &parsed.model, parsed.stream, elapsed) {
                continue;
            }
            let used = state.used[i];
            let picked = if let Some(f) = &rule.fault {
                Some(f.clone())
            } else if used < rule.sequence.len() {
                Some(rule.sequence[used].clone())
            } else if rule.repeat {
                Some(rule.sequence[used % rule.sequence.len()].clone())
            } else {
                None
            };
            if let Some(f) = picked {
                chosen = Some(i);
                label = f.label();
                fault = f;
                latency = rule.latency.or(latency);
                chunk_interval = rule.chunk_interval.or(chunk_interval);
                break;
            }
        }
        if let Some(i) = chosen {
            state.used[i] += 1;
        }
        let latency = latency.map_or(Duration::ZERO, |l| {
            let mut rng = state.rng.clone();
            let d = l.draw(&mut rng);
            state.rng = rng;
            d
        });
        (
            answer_tokens,
            Decision {
                fault,
                label,
                latency,
                chunk_interval: chunk_interval.unwrap_or(Duration::ZERO),
                extra_headers: Vec::new(),
                budget_reply: None,
            },
        )
    };
    let mut decision = decision;
    if decision.fault == Fault::RejectPrefill && parsed.prefill.is_none() {
        decision.fault = Fault::Ok;
    }

    // The key: required on every route but Ollama; exact when the builder set one.
    let key_ok = match (&shared.api_key, &parsed.key) {
        (Some(expected), Some(given)) => expected == given,
        (Some(_), None) => false,
        (None, given) => route == Route::Ollama || given.as_deref().is_some_and(|k| !k.is_empty()),
    };
    if !key_ok {
        decision.fault = Fault::Unauthorized;
        decision.label = "unauthorized (key)".into();
    }

    let skip = parsed
        .prefill
        .as_deref()
        .and_then(|prefill| (1..=answer_tokens).find(|&k| canonical_answer(k) == prefill))
        .unwrap_or(0);
    let remaining = answer_tokens - skip;
    let limit = parsed
        .max_tokens
        .map_or(remaining, |m| (m as usize).clamp(1, remaining.max(1)));
    let mut tokens: Vec<String> = (skip..skip + limit.min(remaining))
        .map(canonical_token)
        .collect();
    let mut truncated = limit < remaining;
    let answer = std::mem::take(&mut parsed.answer);
    if let Some(text) = &answer.text {
        // A scripted answer streams word by word (each piece keeps its leading space).
        tokens = text.split_inclusive(' ').map(str::to_owned).collect();
        truncated = false;
    }
    if !answer.calls.is_empty() {
        tokens.clear();
        truncated = false;
    }
    let exchange = Exchange {
        choices: answer.choices.max(1),
        logprobs: answer.logprobs,
        calls: answer.calls,
        thinking: answer.thinking,
        route,
        model: parsed.model.clone(),
        stream: parsed.stream,
        include_usage: parsed.include_usage,
        prompt_tokens: parsed.prompt_tokens,
        truncated,
        tokens,
        request_id: request_id.clone(),
        created: wire::unix_seconds(SystemTime::now()),
    };

    // Charge the simulated budget for requests that would reach the model.
    if matches!(
        decision.fault,
        Fault::Ok
            | Fault::SlowFirstToken { .. }
            | Fault::CutAfter { .. }
            | Fault::StallAfter { .. }
            | Fault::MalformedAt { .. }
            | Fault::ErrorAfter { .. }
            | Fault::NoDone
    ) {
        let key = parsed.key.clone().unwrap_or_default();
        let cost = exchange.prompt_tokens + exchange.completion_tokens();
        let mut state = shared.lock();
        let sim = state.plan.rate_limit;
        match state.budgets.charge(sim, &key, cost, Instant::now()) {
            Ok(seen) => decision.extra_headers = seen.headers(route),
            Err(Refusal::Exhausted(wait, seen)) => {
                decision.extra_headers = seen.headers(route);
                decision.budget_reply = Some(Fault::RateLimited {
                    retry_after: Some(wait),
                    format: DelayFormat::Seconds,
                });
                decision.label = "rate_limit budget".into();
            }
            Err(Refusal::TooLarge(seen)) => {
                decision.extra_headers = seen.headers(route);
                decision.budget_reply = Some(Fault::RequestTooLarge);
                decision.label = "rate_limit budget (request too large)".into();
            }
        }
    }

    let log = |status: Option<u16>| {
        record(
            &shared,
            route,
            &parts.uri,
            exchange.model.clone(),
            exchange.stream,
            logged_headers.clone(),
            decision.label.clone(),
            status,
        );
    };

    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }

    let fault = decision
        .budget_reply
        .clone()
        .unwrap_or(decision.fault.clone());
    match fault {
        Fault::Reset => {
            log(None);
            if let Some(control) = control {
                control.reset();
            }
            return std::future::pending().await;
        }
        Fault::NoResponse => {
            log(None);
            return std::future::pending().await;
        }
        _ => {}
    }
    if let Some(mut reply) = wire::error_reply(&exchange, &fault) {
        log(Some(reply.status));
        reply.headers.extend(decision.extra_headers);
        return error_response(reply, &request_id, route);
    }
    let refusal = matches!(fault, Fault::ContentFilter)
        .then(|| wire::refusal(&exchange))
        .flatten();
    log(Some(200));

    let mut builder = Response::builder().status(StatusCode::OK);
    for (name, value) in request_id_headers(route, &request_id)
        .into_iter()
        .chain(decision.extra_headers)
    {
        if let Ok(value) = HeaderValue::from_str(&value) {
            builder = builder.header(name, value);
        }
    }

    if !exchange.stream {
        if let Fault::SlowFirstToken { delay } = fault {
            tokio::time::sleep(delay).await;
        }
        let body = match &refusal {
            Some((body, _)) => body.to_string(),
            None => wire::success_body(&exchange).to_string(),
        };
        let body = match fault {
            Fault::MalformedAt { .. } => body[..body.len() / 2].to_owned(),
            _ => body,
        };
        return builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap_or_default();
    }

    let content_type = if route == Route::Ollama {
        "application/x-ndjson"
    } else {
        "text/event-stream"
    };
    let gemini_array =
        route == Route::Gemini && query_param(&parts.uri, "alt").as_deref() != Some("sse");
    let frames = match refusal {
        Some((_, frames)) => frames,
        None => wire::stream_frames(&exchange, matches!(fault, Fault::NoDone)),
    };
    if gemini_array {
        // Without `alt=sse` Gemini streams one JSON array; send it whole.
        let items: Vec<String> = frames
            .iter()
            .map(|f| {
                let bytes = f.bytes();
                let text = String::from_utf8_lossy(&bytes);
                text.trim_start_matches("data: ").trim_end().to_owned()
            })
            .collect();
        return builder
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(format!("[{}]", items.join(",\r\n"))))
            .unwrap_or_default();
    }
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(send_stream(
        frames,
        fault,
        exchange,
        decision.chunk_interval,
        tx,
    ));
    builder
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(ChannelBody(rx)))
        .unwrap_or_default()
}

fn request_id_headers(route: Route, request_id: &str) -> Vec<(&'static str, String)> {
    match route {
        Route::OpenAi => vec![
            ("x-request-id", format!("req_{request_id}")),
            ("openai-processing-ms", "42".into()),
        ],
        Route::Azure => vec![
            ("apim-request-id", request_id.to_owned()),
            ("x-request-id", request_id.to_owned()),
            ("x-ms-region", "Mock Region".into()),
        ],
        Route::OpenRouter => vec![("x-generation-id", format!("gen-{request_id}"))],
        Route::Anthropic => vec![("request-id", format!("req_{request_id}"))],
        Route::Gemini => vec![("x-goog-request-id", request_id.to_owned())],
        Route::Ollama => Vec::new(),
    }
}

fn error_response(reply: ErrorReply, request_id: &str, route: Route) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, reply.content_type);
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for (name, value) in reply
        .headers
        .into_iter()
        .chain(request_id_headers(route, request_id))
    {
        // The fault's own headers win over generic ones of the same name.
        if seen.insert(name, ()).is_some() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(reply.body)).unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
fn record(
    shared: &Shared,
    route: Route,
    uri: &http::Uri,
    model: String,
    stream: bool,
    headers: Vec<(String, String)>,
    fault: String,
    status: Option<u16>,
) {
    let mut state = shared.lock();
    let attempt = Attempt {
        index: state.log.len() as u64,
        at: state.started.elapsed(),
        route,
        path: uri.path().to_owned(),
        model,
        stream,
        headers,
        fault,
        status,
    };
    state.log.push(attempt);
}

/// Sends a stream's frames with the fault applied; ends the body by dropping the sender.
async fn send_stream(
    frames: Vec<Frame>,
    fault: Fault,
    exchange: Exchange,
    interval: Duration,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
) {
    // Faults that act "after N content chunks" act at the frame that would come next: the
    // (N+1)-th content chunk, or what follows the last one (finish reason, terminator).
    let break_at = |n: usize| {
        let mut content = frames.iter().enumerate().filter(|(_, f)| f.content);
        content.nth(n).map(|(i, _)| i).unwrap_or_else(|| {
            frames
                .iter()
                .rposition(|f| f.content)
                .map_or(frames.len(), |i| i + 1)
        })
    };
    let breaks = match fault {
        Fault::CutAfter { chunks, .. }
        | Fault::StallAfter { chunks }
        | Fault::ErrorAfter { chunks } => Some(break_at(chunks)),
        _ => None,
    };
    let mut content_sent = 0;
    for (i, frame) in frames.iter().enumerate() {
        if breaks == Some(i) {
            match fault {
                Fault::CutAfter { abort: true, .. } => {
                    // NOTE: hyper drops its unflushed write buffer when a body fails. Let it
                    // take every frame and flush (it flushes when the body runs dry) before
                    // breaking the body, so the client receives the chunks before the abort.
                    while tx.capacity() < tx.max_capacity() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let err = io::Error::new(io::ErrorKind::ConnectionAborted, "cut");
                    let _ = tx.send(Err(err)).await;
                }
                Fault::StallAfter { .. } => tx.closed().await,
                Fault::ErrorAfter { .. } => {
                    let _ = tx
                        .send(Ok(wire::stream_error_frame(&exchange).bytes()))
                        .await;
                }
                _ => {}
            }
            return;
        }
        if frame.content {
            if content_sent == 0 {
                if let Fault::SlowFirstToken { delay } = fault {
                    tokio::time::sleep(delay).await;
                }
            } else if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            content_sent += 1;
        }
        let bytes = match fault {
            Fault::MalformedAt { chunk } if frame.content && content_sent == chunk => {
                frame.malformed().bytes()
            }
            _ => frame.bytes(),
        };
        if tx.send(Ok(bytes)).await.is_err() {
            return; // the client went away
        }
    }
    if breaks == Some(frames.len()) {
        match fault {
            Fault::StallAfter { .. } => tx.closed().await,
            Fault::ErrorAfter { .. } => {
                let _ = tx
                    .send(Ok(wire::stream_error_frame(&exchange).bytes()))
                    .await;
            }
            _ => {}
        }
    }
}

/// A response body fed by a channel.
struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl futures_core::Stream for ChannelBody {
    type Item = Result<Bytes, io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
