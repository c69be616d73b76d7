//! [`RedisLink`] (feature `redis`): the connection every layer that shares state through
//! Redis goes through — the rate limiter's store and the breaker's shared state — so that
//! they time out, notice an outage, log it and recover the same way.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::ConfigError;

/// While Redis is down, how often a background probe tries it again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The default bound on one Redis call: far above a loopback or same-zone round trip, far
/// below what a caller should wait before its layer decides without Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// A lazily opened, self-reconnecting Redis connection with a bounded time per call and an
/// outage state.
///
/// Every [`run`](Self::run) is bounded by the timeout. The first failure of an outage is
/// logged once (a `warn` event naming what is shared and what happens meanwhile); while
/// down, calls fail at once, and a background task (on the runtime of the call that failed)
/// probes Redis on a fresh connection every [`PROBE_INTERVAL`]. When it answers, the probe's
/// connection replaces the old one and sharing resumes: no call waits for a probe, and
/// recovery does not depend on traffic or on the old connection's reconnect backoff.
///
/// ```
/// use std::time::Duration;
/// use llm_core::__private::RedisLink;
///
/// let link = RedisLink::new("redis://127.0.0.1:6379", Duration::from_millis(50), "breaker state", "each instance decides alone").unwrap();
/// assert!(!link.is_down());
///
/// let err = RedisLink::new("http://127.0.0.1", Duration::from_millis(50), "x", "y").unwrap_err();
/// assert_eq!(err.field(), "url");
/// let err = RedisLink::new("redis://127.0.0.1", Duration::ZERO, "x", "y").unwrap_err();
/// assert_eq!(err.field(), "timeout");
/// ```
pub struct RedisLink {
    client: redis::Client,
    timeout: Duration,
    shared: String,
    meanwhile: String,
    state: Arc<LinkState>,
}

/// What the background probe shares with the link.
struct LinkState {
    // NOTE: a std lock held only to clone or swap the manager, never across an await.
    connection: RwLock<Option<ConnectionManager>>,
    down: AtomicBool,
    probing: AtomicBool,
}

impl fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // NOTE: the URL may carry a password; it is never printed.
        f.debug_struct("RedisLink")
            .field("shared", &self.shared)
            .field("timeout", &self.timeout)
            .field("down", &self.is_down())
            .finish_non_exhaustive()
    }
}

/// Why a [`RedisLink::run`] did not answer: Redis failed, did not answer in time, or is
/// known to be down and this call was not the probe.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Redis unavailable: {0}")]
pub struct RedisUnavailable(String);

impl RedisLink {
    /// A link to `url`, each call bounded by `timeout`. `shared` names what goes through it
    /// and `meanwhile` what happens during an outage, for the outage log line.
    pub fn new(
        url: &str,
        timeout: Duration,
        shared: impl Into<String>,
        meanwhile: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let client = redis::Client::open(url)
            .map_err(|err| ConfigError::new("url", format!("is not a Redis URL: {err}")))?;
        if timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be longer than 0s"));
        }
        Ok(RedisLink {
            client,
            timeout,
            shared: shared.into(),
            meanwhile: meanwhile.into(),
            state: Arc::new(LinkState {
                connection: RwLock::new(None),
                down: AtomicBool::new(false),
                probing: AtomicBool::new(false),
            }),
        })
    }

    /// The client, to open connections of another kind (a subscription).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The longest a call may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the last call failed: an outage is in progress.
    pub fn is_down(&self) -> bool {
        self.state.down.load(Ordering::Relaxed)
    }

    /// Runs `call` on the shared connection, bounded by the timeout; while Redis is down,
    /// fails at once.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.state.down.load(Ordering::Acquire) {
            // The probe may not run yet (the outage began outside a runtime).
            self.probe_in_background();
            return Err(RedisUnavailable(
                "down, probed in the background".to_owned(),
            ));
        }
        let attempt = async {
            let existing = self
                .state
                .connection
                .read()
                .expect("the connection lock is never poisoned")
                .clone();
            let connection = match existing {
                Some(connection) => connection,
                None => {
                    let connection = ConnectionManager::new(self.client.clone()).await?;
                    *self
                        .state
                        .connection
                        .write()
                        .expect("the connection lock is never poisoned") = Some(connection.clone());
                    connection
                }
            };
            call(connection).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.failed(err.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Marks an outage (logged at its first failure) and starts probing in the background.
    pub fn failed(&self, why: String) -> RedisUnavailable {
        if !self.state.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                shared = %self.shared,
                "Redis unreachable ({why}); {} until it answers",
                self.meanwhile
            );
        }
        self.probe_in_background();
        RedisUnavailable(why)
    }

    /// Starts the probe task, unless one runs or no runtime is at hand.
    fn probe_in_background(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.state.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (client, state, shared) =
            (self.client.clone(), self.state.clone(), self.shared.clone());
        // NOTE: a connect attempt may take longer than one call is allowed; not forever.
        let patience = self.timeout.max(Duration::from_millis(500));
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let probe = async {
                    let mut connection = ConnectionManager::new(client.clone()).await?;
                    redis::cmd("PING")
                        .query_async::<()>(&mut connection)
                        .await?;
                    Ok::<_, redis::RedisError>(connection)
                };
                if let Ok(Ok(connection)) = tokio::time::timeout(patience, probe).await {
                    *state
                        .connection
                        .write()
                        .expect("the connection lock is never poisoned") = Some(connection);
                    state.down.store(false, Ordering::Release);
                    state.probing.store(false, Ordering::Release);
                    tracing::info!(shared = %shared, "Redis answers again; sharing resumed");
                    return;
                }
            }
        });
    }
}

/// The integers of a script's reply (`-1` for anything that is not one).
///
/// ```
/// use llm_core::__private::integers;
///
/// let reply = redis::Value::Array(vec![redis::Value::Int(1), redis::Value::Nil]);
/// assert_eq!(integers(&reply), [1, -1]);
/// ```
pub fn integers(value: &redis::Value) -> Vec<i64> {
    match value {
        redis::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                redis::Value::Int(n) => *n,
                _ => -1,
            })
            .collect(),
        redis::Value::Int(n) => vec![*n],
        _ => Vec::new(),
    }
}
