//! [`RedisLink`] (feature `redis`): the connection every layer that shares state through
//! Redis goes through — the rate limiter's store and the breaker's shared state — so that
//! they time out, notice an outage, log it and recover the same way.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::ConfigError;

/// While Redis is down, how often one call tries it again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

/// The default bound on one Redis call: far above a loopback or same-zone round trip, far
/// below what a caller should wait before its layer decides without Redis.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

/// A lazily opened, self-reconnecting Redis connection with a bounded time per call and an
/// outage state.
///
/// Every [`run`](Self::run) is bounded by the timeout. The first failure of an outage is
/// logged once (a `warn` event naming what is shared and what happens meanwhile); while
/// down, calls fail at once except one probe per [`PROBE_INTERVAL`], so an outage costs
/// callers nothing but that probe; the first success logs the recovery. The connection
/// manager reconnects by itself.
///
/// ```
/// use std::time::Duration;
/// use llm_core::redis::RedisLink;
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
    connection: OnceCell<ConnectionManager>,
    timeout: Duration,
    shared: String,
    meanwhile: String,
    down: AtomicBool,
    // While down, calls fail at once until this many milliseconds after `origin`.
    probe_at_ms: AtomicU64,
    origin: Instant,
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
            connection: OnceCell::new(),
            timeout,
            shared: shared.into(),
            meanwhile: meanwhile.into(),
            down: AtomicBool::new(false),
            probe_at_ms: AtomicU64::new(0),
            origin: Instant::now(),
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
        self.down.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `call` on the shared connection, bounded by the timeout.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, RedisUnavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if self.down.load(Ordering::Acquire) {
            let now = self.now_ms();
            let probe_at = self.probe_at_ms.load(Ordering::Acquire);
            let next = now + PROBE_INTERVAL.as_millis() as u64;
            if now < probe_at
                || self
                    .probe_at_ms
                    .compare_exchange(probe_at, next, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
            {
                return Err(RedisUnavailable("down, waiting to probe".to_owned()));
            }
        }
        let attempt = async {
            let connection = self
                .connection
                .get_or_try_init(|| ConnectionManager::new(self.client.clone()))
                .await?
                .clone();
            call(connection).await
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(value)) => {
                self.recovered();
                Ok(value)
            }
            Ok(Err(err)) => Err(self.failed(err.to_string())),
            Err(_) => Err(self.failed(format!("no answer within {:?}", self.timeout))),
        }
    }

    /// Marks an outage (logged at its first failure) and postpones the next probe.
    pub fn failed(&self, why: String) -> RedisUnavailable {
        self.probe_at_ms.fetch_max(
            self.now_ms() + PROBE_INTERVAL.as_millis() as u64,
            Ordering::AcqRel,
        );
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                shared = %self.shared,
                "Redis unreachable ({why}); {} until it answers",
                self.meanwhile
            );
        }
        RedisUnavailable(why)
    }

    fn recovered(&self) {
        if self.down.swap(false, Ordering::AcqRel) {
            tracing::info!(shared = %self.shared, "Redis answers again; sharing resumed");
        }
    }
}

/// The integers of a script's reply (`-1` for anything that is not one).
///
/// ```
/// use llm_core::redis::integers;
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
