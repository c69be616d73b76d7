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
mod embeddings;
mod handler;
mod limits;
mod models;
mod parse;
mod plan;
mod routes;
mod send;
mod state;
mod transport;
mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_core::ConfigError;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use plan::{DelayFormat, Fault, Latency, Plan, RateLimitSim, Route, Rule};
pub use state::Attempt;
pub use wire::{canonical_answer, canonical_token, stream_body};

use routes::router;
use state::{ServerState, Shared};
use transport::accept_loop;

/// Builds a [`MockProvider`].
#[derive(Debug)]
#[must_use]
pub struct MockProviderBuilder {
    plan: Plan,
    addr: SocketAddr,
    api_key: Option<String>,
    models: Option<Vec<String>>,
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
/// | model listings (not in the attempt log) | `GET /v1/models`, `GET /v1/models/{model}` (Anthropic), `GET /api/v1/models`, `GET /openai/models`, `GET /v1beta/models/{model}`, `GET /api/tags` |
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

impl MockProvider {
    /// A builder with the default plan: 60-token answers, no faults, a budget no test
    /// reaches, bound to `127.0.0.1:0` (an ephemeral port).
    pub fn builder() -> MockProviderBuilder {
        MockProviderBuilder {
            plan: Plan::default(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            models: None,
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

    /// How many requests so far were answered with `status` (429: what a limit let through
    /// to be refused).
    pub fn answered_with(&self, status: u16) -> usize {
        let state = self.shared.lock();
        state
            .log
            .iter()
            .filter(|a| a.status == Some(status))
            .count()
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

    /// The models its listings hold (`GET /v1/models` and the other providers' listings, what
    /// a provider's probe reads); by default a few common names (`gpt-4o`, `gpt-4o-mini`,
    /// `claude-3-5-haiku-latest`, `gemini-2.0-flash`, `llama3.2`, …). Chat calls are answered
    /// for any model either way.
    pub fn models<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.models = Some(models.into_iter().map(Into::into).collect());
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
            models: self.models,
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
