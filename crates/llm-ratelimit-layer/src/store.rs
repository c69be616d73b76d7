//! [`RateLimitStore`]: where a limiter's state lives — in this process, per key, or (behind
//! a feature of a later release) in Redis, shared by every instance.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use llm_core::__private::KeyedRegistry;
use llm_core::{LocalRateLimited, RateLimitInfo};
use tokio::time::Instant;

use crate::clock::{Clock, TokioClock};
use crate::gcra::{Capacity, Grant, Limiter};

/// A store's answer to an admission request: at once (an in-process store, which never
/// allocates), or later (a store that asks a server).
pub enum StoreReply {
    /// The answer now.
    Ready(Result<Grant, LocalRateLimited>),
    /// The answer when the future completes.
    Pending(Pin<Box<dyn Future<Output = Result<Grant, LocalRateLimited>> + Send>>),
}

impl fmt::Debug for StoreReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreReply::Ready(result) => f.debug_tuple("Ready").field(result).finish(),
            StoreReply::Pending(_) => f.write_str("Pending(..)"),
        }
    }
}

/// Holds rate-limit state for the layer. Every operation is per key; a store that is not
/// keyed ignores the key. A store shared between processes (Redis) implements the same
/// operations, so replacing the in-process store changes neither the layer's behaviour nor
/// its API.
///
/// A store of your own — here one that admits everything and counts what it saw — plugs in
/// with the builder's `store`:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::time::Duration;
/// use llm_core::RateLimitInfo;
/// use llm_ratelimit_layer::{Capacity, Grant, NoKey, RateLimitConfig, RateLimitLayer, RateLimitStore, StoreReply, StoreStatus};
///
/// #[derive(Default)]
/// struct Counting { admitted: AtomicU64 }
///
/// impl StoreStatus for Counting {}
///
/// impl<K> RateLimitStore<K> for Counting {
///     fn acquire(&self, _: &K, tokens: u64, _: Duration) -> StoreReply {
///         self.admitted.fetch_add(1, Ordering::Relaxed);
///         StoreReply::Ready(Ok(Grant { wait: Duration::ZERO, tokens }))
///     }
///     fn release(&self, _: &K, _: &Grant) {}
///     fn reconcile(&self, _: &K, _: &Grant, _: u64) {}
///     fn pause(&self, _: &K, _: Duration) {}
///     fn observe(&self, _: &K, _: &RateLimitInfo) {}
///     fn capacity(&self, _: &K) -> Capacity { Capacity::default() }
/// }
///
/// let layer = RateLimitLayer::builder()
///     .config(RateLimitConfig::per_minute(60, 1_000))
///     .store(Counting::default()).build()
///     .unwrap();
/// assert_eq!(layer.store().admitted.load(Ordering::Relaxed), 0);
/// ```
pub trait RateLimitStore<K>: StoreStatus {
    /// Admits one request costing `tokens` for `key`, waiting at most `max_wait`.
    fn acquire(&self, key: &K, tokens: u64, max_wait: Duration) -> StoreReply;
    /// Hands back a grant whose call never went.
    fn release(&self, key: &K, grant: &Grant);
    /// Corrects a grant to the tokens the call really used.
    fn reconcile(&self, key: &K, grant: &Grant, actual_tokens: u64);
    /// Pauses `key` for everyone sharing it: the provider asked for `delay`.
    fn pause(&self, key: &K, delay: Duration);
    /// Resynchronises `key` with what the provider reported.
    fn observe(&self, key: &K, info: &RateLimitInfo);
    /// What `key` could admit now.
    fn capacity(&self, key: &K) -> Capacity;
}

/// What a [`RateLimitHandle`](crate::RateLimitHandle) reads of its store, whatever the
/// store's key type: the handle does not carry the store's type, so one handle type covers a
/// limit in this process, per key, or shared through Redis. Both methods have defaults (an
/// in-process store that reports no unkeyed capacity).
pub trait StoreStatus: Send + Sync + 'static {
    /// What an unkeyed limit could admit now (`None` for a store keyed per request: its
    /// capacity is per key, read with [`RateLimitStore::capacity`]).
    fn unkeyed_capacity(&self) -> Option<Capacity> {
        None
    }

    /// Where the limit's state lives.
    fn location(&self) -> StoreLocation {
        StoreLocation::Local
    }
}

/// Where a limiter's state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreLocation {
    /// In this process.
    Local,
    /// Shared by every instance (Redis).
    Shared {
        /// Whether the shared store answered its last call (when it does not, the store's
        /// failure policy is in force).
        reachable: bool,
    },
}

/// The limits one limiter enforces, as [`Limiter::new`] takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) requests: Option<(u64, Duration, u64)>,
    pub(crate) tokens: Option<(u64, Duration, u64)>,
}

/// One limiter in this process, shared by every key: the default store. It reads the time
/// from its [`Clock`] (tokio's by default).
#[derive(Debug)]
pub struct LocalStore<Clk = TokioClock> {
    limiter: Limiter,
    clock: Clk,
    origin_ns: u64,
}

impl<Clk: Clock> LocalStore<Clk> {
    pub(crate) fn new(limits: Limits, clock: Clk) -> Self {
        let origin_ns = clock.now_ns();
        let limiter = Limiter::new(limits.requests, limits.tokens, Instant::now());
        LocalStore {
            limiter,
            clock,
            origin_ns,
        }
    }

    /// Now, on the limiter's scale: nanoseconds since this store was made.
    #[inline]
    fn now_ns(&self) -> u64 {
        self.clock.now_ns().saturating_sub(self.origin_ns)
    }
}

impl<Clk: Clock> StoreStatus for LocalStore<Clk> {
    fn unkeyed_capacity(&self) -> Option<Capacity> {
        Some(self.limiter.capacity_at(self.now_ns()))
    }
}

impl<K, Clk: Clock> RateLimitStore<K> for LocalStore<Clk> {
    #[inline]
    fn acquire(&self, _: &K, tokens: u64, max_wait: Duration) -> StoreReply {
        StoreReply::Ready(self.limiter.acquire_at(tokens, self.now_ns(), max_wait))
    }

    fn release(&self, _: &K, grant: &Grant) {
        self.limiter.release(grant);
    }

    fn reconcile(&self, _: &K, grant: &Grant, actual_tokens: u64) {
        self.limiter
            .reconcile_at(grant, actual_tokens, self.now_ns());
    }

    fn pause(&self, _: &K, delay: Duration) {
        self.limiter.pause_at(delay, self.now_ns());
    }

    fn observe(&self, _: &K, info: &RateLimitInfo) {
        self.limiter.observe_at(info, self.now_ns());
    }

    fn capacity(&self, _: &K) -> Capacity {
        self.limiter.capacity_at(self.now_ns())
    }
}

/// A limiter per key in this process — per API key, user or model — with bounded memory:
/// at `max_keys`, idle keys are evicted first, then the least recently used.
pub struct KeyedLocalStore<K> {
    limits: Limits,
    limiters: KeyedRegistry<K, Limiter>,
}

impl<K> fmt::Debug for KeyedLocalStore<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLocalStore")
            .field("limits", &self.limits)
            .field("limiters", &self.limiters)
            .finish()
    }
}

impl<K: Hash + Eq + Clone> KeyedLocalStore<K> {
    pub(crate) fn new(limits: Limits, max_keys: usize, idle_after: Duration) -> Self {
        KeyedLocalStore {
            limits,
            limiters: KeyedRegistry::new(max_keys, idle_after),
        }
    }

    /// How many keys have a limiter now.
    pub fn len(&self) -> usize {
        self.limiters.len()
    }

    /// Whether no key has a limiter.
    pub fn is_empty(&self) -> bool {
        self.limiters.is_empty()
    }

    fn limiter(&self, key: &K) -> Arc<Limiter> {
        self.limiters.get_or_insert_with(key, |_| {
            Limiter::new(self.limits.requests, self.limits.tokens, Instant::now())
        })
    }
}

impl<K: Send + Sync + 'static> StoreStatus for KeyedLocalStore<K> {}

impl<K: Hash + Eq + Clone + Send + Sync + 'static> RateLimitStore<K> for KeyedLocalStore<K> {
    fn acquire(&self, key: &K, tokens: u64, max_wait: Duration) -> StoreReply {
        StoreReply::Ready(self.limiter(key).acquire(tokens, Instant::now(), max_wait))
    }

    fn release(&self, key: &K, grant: &Grant) {
        self.limiter(key).release(grant);
    }

    fn reconcile(&self, key: &K, grant: &Grant, actual_tokens: u64) {
        self.limiter(key)
            .reconcile(grant, actual_tokens, Instant::now());
    }

    fn pause(&self, key: &K, delay: Duration) {
        self.limiter(key).pause(delay, Instant::now());
    }

    fn observe(&self, key: &K, info: &RateLimitInfo) {
        self.limiter(key).observe(info, Instant::now());
    }

    fn capacity(&self, key: &K) -> Capacity {
        self.limiter(key).capacity(Instant::now())
    }
}
