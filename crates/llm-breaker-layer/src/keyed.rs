//! Keyed breakers: one circuit breaker per key (provider and model, host), with bounded memory.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use llm_core::__private::KeyedRegistry;
use llm_core::KeyOf;
use llm_core::{CircuitOpen, Classify, ObserveEnd};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::handle::BreakerHandle;
use crate::service::admit;
use crate::state::{CircuitBreaker, Settings};

/// The breakers of a keyed layer, shared by its services and clones.
struct Registry<K> {
    settings: Arc<Settings>,
    breakers: KeyedRegistry<K, CircuitBreaker>,
}

impl<K: Hash + Eq + Clone + fmt::Display> Registry<K> {
    fn breaker(&self, key: &K) -> Arc<CircuitBreaker> {
        self.breakers.get_or_insert_shared(key, |key| {
            let name: Arc<str> = Arc::from(key.to_string());
            let breaker = Arc::new(CircuitBreaker::with_settings(
                self.settings.clone(),
                Some(name),
                Instant::now(),
            ));
            breaker.follow_shared();
            breaker
        })
    }
}

/// Wraps services in a [`KeyedBreaker`]: one circuit breaker per key, so one failing model
/// or host does not cut off the others. Built by
/// [`BreakerLayerBuilder::keyed_by`](crate::BreakerLayerBuilder::keyed_by).
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
                breakers: KeyedRegistry::new(max_keys, idle_after),
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
            .field("breakers", &self.registry.breakers)
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
    llm_core::__private::inner_service_accessors!(S, inner);
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
    S::Error: From<CircuitOpen> + 'static,
    S::Response: ObserveEnd,
    K: Hash + Eq + Clone + fmt::Display,
    F: KeyOf<Req, Key = K>,
    C: Classify<S::Response, S::Error> + Clone,
    Req: llm_core::RequestExtensions,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let breaker = self.registry.breaker(&self.key_of.key_of(&request));
        admit(&breaker, &mut self.inner, request, &self.classifier)
    }
}

/// Reads and controls the breakers of a keyed layer.
///
/// ```
/// use llm_breaker_layer::BreakerLayer;
///
/// let layer = BreakerLayer::builder().keyed_by(|model: &String| model.clone()).build().unwrap();
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
        self.registry.breakers.get(key).map(BreakerHandle::new)
    }

    /// The keys that have a breaker now.
    pub fn keys(&self) -> Vec<K> {
        self.registry.breakers.keys()
    }

    /// How many keys have a breaker now.
    pub fn len(&self) -> usize {
        self.registry.breakers.len()
    }

    /// Whether no key has a breaker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone + fmt::Display> KeyedBreakerHandle<K> {
    /// The breaker of `key`, created now if the key has none yet: a breaker known before
    /// its first call shows in health checks and, when shared through Redis, follows the
    /// other instances' state from the start, so that its first call already knows a trip
    /// made elsewhere.
    ///
    /// ```
    /// use llm_breaker_layer::{BreakerLayer, State};
    ///
    /// let layer = BreakerLayer::builder().keyed_by(|model: &String| model.clone()).build().unwrap();
    /// let handle = layer.handle();
    /// let gpt4o = handle.get_or_create(&"gpt-4o".to_owned());
    /// assert_eq!(gpt4o.state(), State::Closed);
    /// assert_eq!(handle.len(), 1);
    /// ```
    pub fn get_or_create(&self, key: &K) -> BreakerHandle {
        BreakerHandle::new(self.registry.breaker(key))
    }
}
