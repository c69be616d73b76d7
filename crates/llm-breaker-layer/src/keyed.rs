//! Keyed breakers: one circuit breaker per key (provider and model, host), with bounded memory.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use llm_core::{CircuitOpen, Classify, ObserveEnd};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::BreakerHandle;
use crate::service::admit;
use crate::state::{CircuitBreaker, Settings};

struct Entry {
    breaker: Arc<CircuitBreaker>,
    // Milliseconds after the registry's origin when the key was last used.
    last_used: AtomicU64,
}

/// The breakers of a keyed layer, shared by its services and clones.
struct Registry<K> {
    settings: Arc<Settings>,
    breakers: RwLock<HashMap<K, Entry>>,
    max_keys: usize,
    idle_after: Duration,
    origin: Instant,
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn breaker(&self, key: &K) -> Arc<CircuitBreaker> {
        let now = Instant::now();
        let stamp = self.millis(now);
        {
            let breakers = self
                .breakers
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(entry) = breakers.get(key) {
                // NOTE: recency only needs second precision; skip the write (and the cache
                // line it would bounce between cores) when the stamp is fresh.
                if stamp.saturating_sub(entry.last_used.load(Ordering::Relaxed)) >= 1_000 {
                    entry.last_used.store(stamp, Ordering::Relaxed);
                }
                return entry.breaker.clone();
            }
        }
        let mut breakers = self
            .breakers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(entry) = breakers.get(key) {
            return entry.breaker.clone();
        }
        if breakers.len() >= self.max_keys {
            let idle_before = stamp.saturating_sub(self.idle_after.as_millis() as u64);
            breakers.retain(|_, entry| entry.last_used.load(Ordering::Relaxed) > idle_before);
            if breakers.len() >= self.max_keys {
                let oldest = breakers
                    .iter()
                    .min_by_key(|(_, entry)| entry.last_used.load(Ordering::Relaxed))
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    breakers.remove(&oldest);
                }
            }
        }
        let name: Arc<str> = Arc::from(key.to_string());
        let breaker = Arc::new(CircuitBreaker::with_settings(
            self.settings.clone(),
            Some(name),
            now,
        ));
        breakers.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(stamp),
            },
        );
        breaker
    }
}

/// Wraps services in a [`KeyedBreaker`]: one circuit breaker per key, so one failing model
/// or host does not cut off the others. Built by
/// [`BreakerLayerBuilder::build_keyed`](crate::BreakerLayerBuilder::build_keyed).
pub struct KeyedBreakerLayer<K, F, C> {
    registry: Arc<Registry<K>>,
    key_of: F,
    classifier: C,
}

impl<K, F, C> KeyedBreakerLayer<K, F, C> {
    pub(crate) fn new(
        settings: Arc<Settings>,
        key_of: F,
        classifier: C,
        max_keys: usize,
        idle_after: Duration,
    ) -> Self {
        KeyedBreakerLayer {
            registry: Arc::new(Registry {
                settings,
                breakers: RwLock::new(HashMap::new()),
                max_keys,
                idle_after,
                origin: Instant::now(),
            }),
            key_of,
            classifier,
        }
    }

    /// Reads and controls the breakers, key by key.
    pub fn handle(&self) -> KeyedBreakerHandle<K> {
        KeyedBreakerHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        KeyedBreakerLayer {
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerLayer")
            .field("max_keys", &self.registry.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedBreakerLayer<K, F, C> {
    type Service = KeyedBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBreaker {
            inner,
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A [`Breaker`](crate::Breaker) that picks its circuit breaker by the request's key.
pub struct KeyedBreaker<S, K, F, C> {
    inner: S,
    registry: Arc<Registry<K>>,
    key_of: F,
    classifier: C,
}

impl<S, K, F, C> KeyedBreaker<S, K, F, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        KeyedBreaker {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            key_of: self.key_of.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreaker")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: From<CircuitOpen>,
    S::Response: ObserveEnd,
    K: Hash + Eq + Clone + fmt::Display,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let breaker = self.registry.breaker(&(self.key_of)(&request));
        admit(&breaker, &mut self.inner, request, &self.classifier)
    }
}

/// Reads and controls the breakers of a keyed layer.
///
/// ```
/// use llm_breaker_layer::BreakerLayer;
///
/// let layer = BreakerLayer::builder().build_keyed(|model: &String| model.clone()).unwrap();
/// let handle = layer.handle();
/// assert!(handle.get(&"gpt-4o".to_owned()).is_none(), "a key has a breaker once it was used");
/// ```
pub struct KeyedBreakerHandle<K> {
    registry: Arc<Registry<K>>,
}

impl<K> Clone for KeyedBreakerHandle<K> {
    fn clone(&self) -> Self {
        KeyedBreakerHandle {
            registry: self.registry.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBreakerHandle").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone> KeyedBreakerHandle<K> {
    /// The breaker of `key`, if the key has been used (and not evicted).
    pub fn get(&self, key: &K) -> Option<BreakerHandle> {
        let breakers = self
            .registry
            .breakers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        breakers
            .get(key)
            .map(|entry| BreakerHandle::new(entry.breaker.clone()))
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        let breakers = self
            .registry
            .breakers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        breakers.keys().cloned().collect()
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.registry
            .breakers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
