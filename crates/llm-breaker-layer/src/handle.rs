//! [`BreakerHandle`]: reads and controls one circuit breaker.

use std::fmt;
use std::sync::Arc;

use tokio::time::Instant;

use crate::state::{CircuitBreaker, Metrics, State};

/// Reads and controls one circuit breaker: its state, a metrics snapshot, and manual
/// control. Cheap to clone; every clone controls the same breaker.
///
/// ```
/// use llm_breaker_layer::{BreakerLayer, State};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let handle = BreakerLayer::standard().handle();
/// handle.force_open();
/// assert_eq!(handle.state(), State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.metrics().state, State::Closed);
/// # }
/// ```
#[derive(Clone)]
pub struct BreakerHandle {
    breaker: Arc<CircuitBreaker>,
}

impl BreakerHandle {
    pub(crate) fn new(breaker: Arc<CircuitBreaker>) -> Self {
        BreakerHandle { breaker }
    }

    /// The breaker's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.breaker.name()
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.breaker.state(Instant::now())
    }

    /// A snapshot of the state and the window now.
    pub fn metrics(&self) -> Metrics {
        self.breaker.metrics(Instant::now())
    }

    /// Opens the breaker until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.breaker.force_open(Instant::now());
    }

    /// Lets every call through, uncounted, until [`reset`](Self::reset).
    pub fn force_closed(&self) {
        self.breaker.force_closed(Instant::now());
    }

    /// Back to closed with an empty window.
    pub fn reset(&self) {
        self.breaker.reset(Instant::now());
    }

    /// Whether the state is shared with other instances through Redis (feature `redis`).
    pub fn is_shared(&self) -> bool {
        self.breaker.is_shared()
    }

    /// Whether the shared state's Redis was unreachable at its last call: the breaker
    /// decides alone meanwhile. Always false for a breaker that is not shared.
    pub fn redis_unreachable(&self) -> bool {
        self.breaker.redis_unreachable()
    }
}

impl fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BreakerHandle").field(&self.breaker).finish()
    }
}
