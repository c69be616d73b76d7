//! What the server keeps: the attempt log, the plan, the rate-limit budgets.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::limits::Budgets;
use super::plan::{Plan, Route};

/// Request headers whose values the attempt log never keeps.
pub(crate) const SECRET_HEADERS: [&str; 5] = [
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

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<ServerState>,
    pub(crate) api_key: Option<String>,
    /// What the model listings hold (`None`: `models::DEFAULT_MODELS`).
    pub(crate) models: Option<Vec<String>>,
    pub(crate) next_id: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct ServerState {
    pub(crate) plan: Plan,
    pub(crate) started: Instant,
    /// Requests each rule has matched since the last reset (drives sequences).
    pub(crate) used: Vec<usize>,
    pub(crate) log: Vec<Attempt>,
    pub(crate) budgets: Budgets,
    pub(crate) rng: fastrand::Rng,
}

impl ServerState {
    pub(crate) fn new(plan: Plan) -> ServerState {
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
    pub(crate) fn lock(&self) -> MutexGuard<'_, ServerState> {
        // A panicking test thread must not take the server down with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn redacted_headers(headers: &HeaderMap) -> Vec<(String, String)> {
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn record(
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
