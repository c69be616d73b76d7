//! [`RateLimitHandle`]: a limiter's capacity and counters, whatever its store.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::gcra::Capacity;
use crate::shared::{Concurrency, Stats};
use crate::store::{StoreLocation, StoreStatus};

/// Reads a limiter: its capacity and counters. One type for every store — in this process,
/// per key, or shared through Redis — so a health page holds the handles of limiters of
/// different kinds in one list.
///
/// ```
/// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer, StoreLocation};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = RateLimitLayer::new(RateLimitConfig::per_minute(500, 30_000)).unwrap();
/// let handle = layer.handle();
/// let capacity = handle.capacity().unwrap();
/// assert_eq!((capacity.requests, capacity.tokens), (Some(500), Some(30_000)));
/// assert_eq!(handle.location(), StoreLocation::Local);
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitHandle {
    store: Arc<dyn StoreStatus>,
    stats: Arc<Stats>,
    concurrency: Option<Concurrency>,
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("location", &self.store.location())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RateLimitHandle {
    pub(crate) fn new(
        store: Arc<dyn StoreStatus>,
        stats: Arc<Stats>,
        concurrency: Option<Concurrency>,
    ) -> Self {
        RateLimitHandle {
            store,
            stats,
            concurrency,
        }
    }

    /// What the limit could admit now; `None` for a limit keyed per request (read a key's
    /// capacity from [`RateLimitLayer::store`](crate::RateLimitLayer::store)). A limit shared through Redis reports what
    /// Redis said at its last answer.
    pub fn capacity(&self) -> Option<Capacity> {
        self.store.unkeyed_capacity()
    }

    /// Where the limit's state lives, and whether a shared store is reachable.
    pub fn location(&self) -> StoreLocation {
        self.store.location()
    }

    /// Requests waiting for capacity now.
    pub fn waiting(&self) -> usize {
        self.stats.waiting.load(Ordering::Relaxed)
    }

    /// Requests admitted so far.
    pub fn admitted(&self) -> u64 {
        self.stats.admitted.load(Ordering::Relaxed)
    }

    /// Requests turned away so far.
    pub fn rejected(&self) -> u64 {
        self.stats.rejected.load(Ordering::Relaxed)
    }

    /// Calls holding a concurrency slot now (`None` without `max_concurrency`): zero once
    /// every call has ended, however it ended — cancelled ones included.
    ///
    /// ```
    /// use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};
    ///
    /// let layer = RateLimitLayer::new(RateLimitConfig { max_concurrency: Some(8), ..RateLimitConfig::default() }).unwrap();
    /// assert_eq!(layer.handle().in_flight(), Some(0));
    /// ```
    pub fn in_flight(&self) -> Option<usize> {
        self.concurrency
            .as_ref()
            .map(|c| c.max - c.semaphore.available_permits())
    }
}
