//! [`Clock`]: where the in-process stores read the time.
//!
//! The default, [`TokioClock`], is tokio's clock — so tests with paused time control the
//! limiter too. Reading the system clock is most of an admission's cost (about 25 ns on this
//! project's VM, against about 17 ns for the admission itself); with the `quanta` feature,
//! [`QuantaClock`] reads the CPU's time-stamp counter instead, as governor does.

use tokio::time::Instant;

/// A monotonic source of time for a rate-limit store, in nanoseconds on its own scale (only
/// differences between its readings matter). It is read on every admission.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds on this clock's scale, now.
    fn now_ns(&self) -> u64;
}

/// tokio's clock, which tests pause and advance.
///
/// ```
/// use std::time::Duration;
/// use llm_ratelimit_layer::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let clock = TokioClock::new();
/// let before = clock.now_ns();
/// tokio::time::advance(Duration::from_secs(1)).await;
/// assert_eq!(clock.now_ns() - before, 1_000_000_000);
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock counting from now.
    pub fn new() -> Self {
        TokioClock {
            origin: Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(
            Instant::now()
                .saturating_duration_since(self.origin)
                .as_nanos(),
        )
        .unwrap_or(u64::MAX)
    }
}

/// The CPU's time-stamp counter, through `quanta`: several times cheaper to read than the
/// system clock. It runs in real time: use [`TokioClock`] where tests pause time.
///
/// ```
/// use llm_ratelimit_layer::{Clock, QuantaClock};
///
/// let clock = QuantaClock::new();
/// let (a, b) = (clock.now_ns(), clock.now_ns());
/// assert!(b >= a);
/// ```
#[cfg(feature = "quanta")]
#[derive(Clone, Debug)]
pub struct QuantaClock {
    clock: quanta::Clock,
    origin_raw: u64,
}

#[cfg(feature = "quanta")]
impl QuantaClock {
    /// A clock calibrated now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let origin_raw = clock.raw();
        QuantaClock { clock, origin_raw }
    }
}

#[cfg(feature = "quanta")]
impl Default for QuantaClock {
    fn default() -> Self {
        QuantaClock::new()
    }
}

#[cfg(feature = "quanta")]
impl Clock for QuantaClock {
    #[inline]
    fn now_ns(&self) -> u64 {
        self.clock.delta_as_nanos(self.origin_raw, self.clock.raw())
    }
}
