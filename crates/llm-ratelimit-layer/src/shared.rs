//! What a limiter's layer, services, futures and handle share.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use llm_core::LocalRateLimited;
use tokio::sync::Semaphore;

use crate::config::Mode;
use crate::metrics::Meters;
use crate::store::RateLimitStore;

/// The concurrency cap: its slots, and how many there are (what `in_flight` counts from).
#[derive(Clone, Debug)]
pub(crate) struct Concurrency {
    pub(crate) semaphore: Arc<Semaphore>,
    pub(crate) max: usize,
}

/// Counters a [`RateLimitHandle`] reads.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) waiting: AtomicUsize,
    pub(crate) admitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
}

pub(crate) type OnRejected = Arc<dyn Fn(&LocalRateLimited) + Send + Sync>;
pub(crate) type OnWait = Arc<dyn Fn(Duration) + Send + Sync>;

/// Everything a limiter's services share.
pub(crate) struct Shared<St, KF, C, Cl> {
    pub(crate) store: Arc<St>,
    pub(crate) key_of: KF,
    pub(crate) cost: C,
    pub(crate) classifier: Cl,
    pub(crate) mode: Mode,
    pub(crate) max_wait: Duration,
    pub(crate) concurrency: Option<Concurrency>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) on_rejected: Option<OnRejected>,
    pub(crate) on_wait: Option<OnWait>,
    pub(crate) meters: Meters,
}

impl<St, KF, C, Cl> Shared<St, KF, C, Cl> {
    /// A call was let through (`K`: the limit's key type).
    #[inline]
    pub(crate) fn admitted<K>(&self)
    where
        St: RateLimitStore<K>,
    {
        let nth = self.stats.admitted.fetch_add(1, Ordering::Relaxed);
        self.meters.admitted(nth, || self.capacity());
    }

    /// What the limit can still admit (requests, tokens), when it has one unkeyed budget.
    fn capacity<K>(&self) -> Option<(Option<u64>, Option<u64>)>
    where
        St: RateLimitStore<K>,
    {
        self.store
            .unkeyed_capacity()
            .map(|capacity| (capacity.requests, capacity.tokens))
    }

    /// A call was refused (`K`: the limit's key type).
    pub(crate) fn rejected<K>(&self, err: &LocalRateLimited)
    where
        St: RateLimitStore<K>,
    {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        self.meters.rejected();
        self.meters.capacity(|| self.capacity());
        tracing::debug!(
            retry_after_ms = err.retry_after().map(|d| d.as_millis() as u64),
            "rate limited locally"
        );
        if let Some(hook) = &self.on_rejected {
            hook(err);
        }
    }

    pub(crate) fn waits(&self, wait: Duration) {
        self.meters.waited(wait);
        tracing::debug!(
            wait_ms = wait.as_millis() as u64,
            "waiting for rate-limit capacity"
        );
        if let Some(hook) = &self.on_wait {
            hook(wait);
        }
    }
}
