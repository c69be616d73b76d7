//! [`KeyedRegistry`]: one value per key — a breaker per model, a limiter per API key —
//! created on first use, with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tokio::time::Instant;

struct Entry<V> {
    value: Arc<V>,
    // Milliseconds after the registry's origin when the key was last used.
    last_used: AtomicU64,
}

/// One value per key, created on first use. At `max_keys`, a new key first evicts every key
/// idle for `idle_after`, then, if none was, the least recently used one — so memory stays
/// bounded however many keys requests bring.
///
/// Lookups of existing keys take a read lock and, at most once a second per key, write
/// the key's recency; creating a key takes the write lock.
///
/// Hand-written rather than `moka`: idleness is read on tokio's clock, so tests with paused
/// time drive eviction exactly (`moka` reads its own clock and offers no way to replace it),
/// and a lookup of an existing key — on the hot path of every keyed breaker and limiter —
/// stays a read lock and a hash, with no dependency added to the layer crates.
///
/// ```
/// use std::time::Duration;
/// use llm_core::__private::KeyedRegistry;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let registry = KeyedRegistry::new(2, Duration::from_secs(60));
/// let a = registry.get_or_insert_with(&"a", |_| 1);
/// tokio::time::advance(Duration::from_secs(2)).await;
/// registry.get_or_insert_with(&"b", |_| 2);
/// registry.get_or_insert_with(&"c", |_| 3); // evicts the least recently used: "a"
/// assert_eq!(*a, 1);
/// assert!(registry.get(&"a").is_none());
/// assert_eq!(registry.len(), 2);
/// # }
/// ```
pub struct KeyedRegistry<K, V> {
    entries: RwLock<HashMap<K, Entry<V>>>,
    max_keys: usize,
    idle_after: Duration,
    origin: Instant,
}

impl<K, V> fmt::Debug for KeyedRegistry<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRegistry")
            .field("max_keys", &self.max_keys)
            .field("idle_after", &self.idle_after)
            .finish_non_exhaustive()
    }
}

impl<K, V> KeyedRegistry<K, V> {
    /// A registry keeping at most `max_keys` keys (at least one).
    pub fn new(max_keys: usize, idle_after: Duration) -> Self {
        KeyedRegistry {
            entries: RwLock::new(HashMap::new()),
            max_keys: max_keys.max(1),
            idle_after,
            origin: Instant::now(),
        }
    }
}

impl<K: Hash + Eq + Clone, V> KeyedRegistry<K, V> {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<K, Entry<V>>> {
        // The map stays consistent at every step; a panic elsewhere must not poison lookups.
        self.entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<K, Entry<V>>> {
        self.entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of `key`, created with `make` if the key has none.
    pub fn get_or_insert_with(&self, key: &K, make: impl FnOnce(&K) -> V) -> Arc<V> {
        self.get_or_insert_shared(key, |key| Arc::new(make(key)))
    }

    /// As [`get_or_insert_with`](Self::get_or_insert_with), with `make` building the shared
    /// value itself: for values that hand a reference to themselves elsewhere when created.
    pub fn get_or_insert_shared(&self, key: &K, make: impl FnOnce(&K) -> Arc<V>) -> Arc<V> {
        let stamp = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis() as u64;
        if let Some(entry) = self.read().get(key) {
            // NOTE: recency only needs second precision; skip the write (and the cache line
            // it would bounce between cores) while the stamp is fresh.
            if stamp.saturating_sub(entry.last_used.load(Ordering::Relaxed)) >= 1_000 {
                entry.last_used.store(stamp, Ordering::Relaxed);
            }
            return entry.value.clone();
        }
        let mut entries = self.write();
        if let Some(entry) = entries.get(key) {
            return entry.value.clone();
        }
        if entries.len() >= self.max_keys {
            // NOTE: before `idle_after` has passed since the registry began, no key can be
            // idle; a saturating subtraction would call every key stamped 0 idle.
            if let Some(idle_before) = stamp.checked_sub(self.idle_after.as_millis() as u64) {
                entries.retain(|_, entry| entry.last_used.load(Ordering::Relaxed) > idle_before);
            }
            if entries.len() >= self.max_keys {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.last_used.load(Ordering::Relaxed))
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        let value = make(key);
        entries.insert(
            key.clone(),
            Entry {
                value: value.clone(),
                last_used: AtomicU64::new(stamp),
            },
        );
        value
    }

    /// The value of `key`, if it has one (and was not evicted).
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.read().get(key).map(|entry| entry.value.clone())
    }

    /// The keys that have a value now.
    pub fn keys(&self) -> Vec<K> {
        self.read().keys().cloned().collect()
    }

    /// How many keys have a value now.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Picks the key a request is limited or circuit-broken under: API key, user, model, host.
///
/// Any `Fn(&Req) -> K` is one; [`NoKey`] puts every request under one key. The keyed rate
/// limiter and the keyed circuit breaker both take one.
///
/// ```
/// use llm_core::KeyOf;
///
/// let per_user = |req: &(String, &str)| req.0.clone();
/// assert_eq!(per_user.key_of(&("alice".to_owned(), "Hi")), "alice");
/// ```
pub trait KeyOf<Req> {
    /// The key type.
    type Key: Clone + Send + Sync + 'static;
    /// The key of `request`.
    fn key_of(&self, request: &Req) -> Self::Key;
}

/// Every request under one key: an unkeyed layer.
///
/// ```
/// use llm_core::{KeyOf, NoKey};
///
/// let () = NoKey.key_of(&"any request");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NoKey;

impl<Req> KeyOf<Req> for NoKey {
    type Key = ();
    fn key_of(&self, _: &Req) {}
}

impl<F, Req, K> KeyOf<Req> for F
where
    F: Fn(&Req) -> K,
    K: Clone + Send + Sync + 'static,
{
    type Key = K;
    fn key_of(&self, request: &Req) -> K {
        self(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_keys_go_first_then_the_least_recently_used() {
        let registry = KeyedRegistry::new(3, Duration::from_secs(60));
        for key in 0..3 {
            registry.get_or_insert_with(&key, |k| *k);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        registry.get_or_insert_with(&0, |_| unreachable!("0 exists"));
        tokio::time::advance(Duration::from_secs(2)).await;
        registry.get_or_insert_with(&3, |k| *k);
        let mut keys = registry.keys();
        keys.sort_unstable();
        assert_eq!(keys, [0, 2, 3], "1 was the least recently used");
        tokio::time::advance(Duration::from_secs(120)).await;
        registry.get_or_insert_with(&9, |k| *k);
        assert_eq!(registry.keys(), [9], "every idle key went at once");
    }

    /// Regression: at the registry's start every stamp is 0, and a saturating
    /// `stamp - idle_after` made all of them look idle, so one new key evicted every key.
    #[tokio::test(start_paused = true)]
    async fn keys_are_not_idle_before_idle_after_has_passed() {
        let registry = KeyedRegistry::new(3, Duration::from_secs(60));
        for key in 0..4 {
            registry.get_or_insert_with(&key, |k| *k);
        }
        assert_eq!(registry.len(), 3, "only one key made room");
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded() {
        let registry = KeyedRegistry::new(4, Duration::from_secs(60));
        for key in 0..1_000 {
            registry.get_or_insert_with(&key, |k| *k);
            assert!(registry.len() <= 4);
        }
    }
}
