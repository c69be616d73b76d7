//! Backoff strategies and jitter: the pure arithmetic of "how long until the next attempt",
//! shared by the retry layer's delays and the circuit breaker's growing open durations.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::ConfigError;

/// Computes the delay before a retry, for strategies the built-in [`Backoff`]s do not cover.
///
/// ```
/// use std::time::Duration;
/// use llm_core::backoff::{Backoff, BackoffStrategy};
///
/// /// Fibonacci delays in hundreds of milliseconds: 100, 100, 200, 300, 500, …
/// struct Fibonacci;
/// impl BackoffStrategy for Fibonacci {
///     fn delay(&self, retry: u32) -> Duration {
///         let (mut a, mut b) = (1u64, 1u64);
///         for _ in 1..retry { (a, b) = (b, a.saturating_add(b)); }
///         Duration::from_millis(100u64.saturating_mul(a))
///     }
/// }
/// let backoff = Backoff::custom(Fibonacci);
/// assert_eq!(backoff.base_delay(4), Duration::from_millis(300));
/// ```
pub trait BackoffStrategy: Send + Sync + 'static {
    /// The delay before retry number `retry` (1 for the first retry), before jitter.
    fn delay(&self, retry: u32) -> Duration;
}

/// How the delay grows from one retry to the next.
///
/// ```
/// use std::time::Duration;
/// use llm_core::backoff::Backoff;
///
/// let exp = Backoff::exponential(Duration::from_millis(500), 2.0, Duration::from_secs(8));
/// let delays: Vec<_> = (1..=6).map(|retry| exp.base_delay(retry)).collect();
/// assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 8.0].map(Duration::from_secs_f64));
///
/// let linear = Backoff::linear(Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(3));
/// assert_eq!(linear.base_delay(2), Duration::from_secs(2));
/// assert_eq!(linear.base_delay(9), Duration::from_secs(3));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum Backoff {
    /// The same delay before every retry.
    Fixed {
        /// The delay.
        delay: Duration,
    },
    /// `initial`, then `initial + step`, `initial + 2 × step`, … up to `max`.
    Linear {
        /// The first delay.
        initial: Duration,
        /// Added for each further retry.
        step: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// `initial`, then `initial × multiplier`, `initial × multiplier²`, … up to `max`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth factor, at least 1.
        multiplier: f64,
        /// The longest delay.
        max: Duration,
    },
    /// A strategy of your own.
    Custom(Arc<dyn BackoffStrategy>),
}

impl Backoff {
    /// The same `delay` before every retry.
    pub const fn fixed(delay: Duration) -> Self {
        Backoff::Fixed { delay }
    }

    /// Delays growing by `step` from `initial`, capped at `max`.
    pub const fn linear(initial: Duration, step: Duration, max: Duration) -> Self {
        Backoff::Linear { initial, step, max }
    }

    /// Delays growing by `multiplier` from `initial`, capped at `max`.
    pub const fn exponential(initial: Duration, multiplier: f64, max: Duration) -> Self {
        Backoff::Exponential {
            initial,
            multiplier,
            max,
        }
    }

    /// A strategy of your own.
    pub fn custom(strategy: impl BackoffStrategy) -> Self {
        Backoff::Custom(Arc::new(strategy))
    }

    /// The delay before retry number `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let n = retry.max(1) - 1;
        match self {
            Backoff::Fixed { delay } => *delay,
            Backoff::Linear { initial, step, max } => step
                .checked_mul(n)
                .and_then(|grown| initial.checked_add(grown))
                .map_or(*max, |delay| delay.min(*max)),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                // Exponents beyond a few hundred overflow f64 to infinity; `min` in seconds
                // keeps every step finite and at most `max`.
                let secs = initial.as_secs_f64() * multiplier.powi(n.min(1024) as i32);
                if secs.is_finite() && secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    *max
                }
            }
            Backoff::Custom(strategy) => strategy.delay(retry),
        }
    }

    /// The shortest delay the strategy produces: the floor of decorrelated jitter.
    pub fn initial(&self) -> Duration {
        match self {
            Backoff::Fixed { delay } => *delay,
            Backoff::Linear { initial, .. } | Backoff::Exponential { initial, .. } => *initial,
            Backoff::Custom(strategy) => strategy.delay(1),
        }
    }

    /// The longest delay the strategy produces (`None` for custom strategies).
    pub fn max(&self) -> Option<Duration> {
        match self {
            Backoff::Fixed { delay } => Some(*delay),
            Backoff::Linear { max, .. } | Backoff::Exponential { max, .. } => Some(*max),
            Backoff::Custom(_) => None,
        }
    }

    /// Checks the strategy: a finite multiplier of at least 1, a maximum not below the
    /// initial delay. The error names the field (`multiplier`, `max_delay`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_core::backoff::Backoff;
    ///
    /// let err = Backoff::exponential(Duration::from_secs(2), 2.0, Duration::from_secs(1)).validate().unwrap_err();
    /// assert_eq!(err.field(), "max_delay");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => {
                if !multiplier.is_finite() || *multiplier < 1.0 {
                    return Err(ConfigError::new(
                        "multiplier",
                        format!("must be a finite number of at least 1 (got {multiplier})"),
                    ));
                }
                check_max(*initial, *max)
            }
            Backoff::Linear { initial, max, .. } => check_max(*initial, *max),
            Backoff::Fixed { .. } | Backoff::Custom(_) => Ok(()),
        }
    }
}

fn check_max(initial: Duration, max: Duration) -> Result<(), ConfigError> {
    if max < initial {
        return Err(ConfigError::new(
            "max_delay",
            format!("must not be shorter than base_delay ({max:?} < {initial:?})"),
        ));
    }
    Ok(())
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backoff::Fixed { delay } => f.debug_struct("Fixed").field("delay", delay).finish(),
            Backoff::Linear { initial, step, max } => f
                .debug_struct("Linear")
                .field("initial", initial)
                .field("step", step)
                .field("max", max)
                .finish(),
            Backoff::Exponential {
                initial,
                multiplier,
                max,
            } => f
                .debug_struct("Exponential")
                .field("initial", initial)
                .field("multiplier", multiplier)
                .field("max", max)
                .finish(),
            Backoff::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Randomisation of each delay, so that clients failing together do not retry together.
///
/// `unit` is a random number in `[0, 1)`; the layer draws it, tests pass it.
///
/// ```
/// use std::time::Duration;
/// use llm_core::backoff::Jitter;
///
/// let base = Duration::from_secs(2);
/// assert_eq!(Jitter::None.apply(base, base, Duration::ZERO, Duration::MAX, 0.7), base);
/// assert_eq!(Jitter::Full.apply(base, base, Duration::ZERO, Duration::MAX, 0.25), Duration::from_millis(500));
/// assert_eq!(Jitter::Equal.apply(base, base, Duration::ZERO, Duration::MAX, 0.5), Duration::from_millis(1500));
/// ```
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// The delay exactly as the backoff computed it.
    None,
    /// Uniform in `[0, delay)`: the most spread, the best against herds (AWS "full jitter").
    #[default]
    Full,
    /// Uniform in `[delay / 2, delay)`: spread, but never much shorter than planned.
    Equal,
    /// Uniform in `[initial, previous × 3)`, capped at the maximum: each delay grows from the
    /// last one actually slept (AWS "decorrelated jitter").
    Decorrelated,
}

impl Jitter {
    /// Applies the jitter to `base` (the backoff's delay), given the `previous` delay slept,
    /// the strategy's `initial` delay and `max` delay, and a random `unit` in `[0, 1)`.
    pub fn apply(
        self,
        base: Duration,
        previous: Duration,
        initial: Duration,
        max: Duration,
        unit: f64,
    ) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        match self {
            Jitter::None => base,
            Jitter::Full => base.mul_f64(unit),
            Jitter::Equal => {
                let half = base / 2;
                half + (base - half).mul_f64(unit)
            }
            Jitter::Decorrelated => {
                let upper = previous.max(initial).saturating_mul(3);
                let span = upper.saturating_sub(initial);
                // mul_f64 panics on overflow; the span is at most 3 × a capped delay.
                let delay =
                    initial.saturating_add(Duration::from_secs_f64(span.as_secs_f64() * unit));
                delay.min(max)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn fixed_is_constant() {
        let b = Backoff::fixed(MS(250));
        assert!((1..20).all(|n| b.base_delay(n) == MS(250)));
    }

    #[test]
    fn linear_grows_by_step_and_caps() {
        let b = Backoff::linear(MS(100), MS(50), MS(260));
        let got: Vec<_> = (1..=6).map(|n| b.base_delay(n)).collect();
        assert_eq!(got, [MS(100), MS(150), MS(200), MS(250), MS(260), MS(260)]);
        assert_eq!(
            Backoff::linear(MS(1), Duration::MAX, MS(9)).base_delay(3),
            MS(9)
        );
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let b = Backoff::exponential(Duration::from_secs(1), 2.0, Duration::from_secs(4));
        let got: Vec<_> = (1..=5).map(|n| b.base_delay(n)).collect();
        assert_eq!(got, [1, 2, 4, 4, 4].map(Duration::from_secs));
        // Absurd retry numbers stay finite and capped.
        assert_eq!(b.base_delay(u32::MAX), Duration::from_secs(4));
        let huge = Backoff::exponential(MS(1), 1e300, Duration::from_secs(60));
        assert_eq!(huge.base_delay(5), Duration::from_secs(60));
    }

    #[test]
    fn retry_zero_is_treated_as_the_first() {
        let b = Backoff::exponential(MS(100), 3.0, Duration::from_secs(10));
        assert_eq!(b.base_delay(0), b.base_delay(1));
    }

    #[test]
    fn invalid_strategies_name_the_field() {
        let err = Backoff::exponential(MS(1), 0.5, MS(10))
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "multiplier");
        let err = Backoff::exponential(MS(1), f64::NAN, MS(10))
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "multiplier");
        let err = Backoff::linear(MS(10), MS(1), MS(5))
            .validate()
            .unwrap_err();
        assert_eq!(err.field(), "max_delay");
        assert!(Backoff::fixed(Duration::ZERO).validate().is_ok());
    }

    #[test]
    fn decorrelated_grows_from_the_previous_delay() {
        let (initial, max) = (MS(100), Duration::from_secs(10));
        // unit → 1 reaches towards 3 × previous.
        let d = Jitter::Decorrelated.apply(Duration::ZERO, MS(1000), initial, max, 0.999_999);
        assert!(d > MS(2990) && d < MS(3000), "{d:?}");
        assert_eq!(
            Jitter::Decorrelated.apply(Duration::ZERO, MS(1000), initial, max, 0.0),
            initial
        );
        assert_eq!(
            Jitter::Decorrelated.apply(Duration::ZERO, Duration::from_secs(9), initial, max, 0.9),
            max
        );
    }

    #[test]
    fn non_finite_units_do_not_panic() {
        for unit in [f64::NAN, f64::INFINITY, -1.0, 2.0] {
            for jitter in [
                Jitter::None,
                Jitter::Full,
                Jitter::Equal,
                Jitter::Decorrelated,
            ] {
                let d = jitter.apply(MS(100), MS(100), MS(10), MS(1000), unit);
                assert!(d <= MS(1000));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn exponential_delays_are_monotonic_and_capped(
            initial_ms in 0u64..5_000, multiplier in 1.0f64..8.0, max_ms in 5_000u64..120_000, retry in 1u32..64,
        ) {
            let b = Backoff::exponential(MS(initial_ms), multiplier, MS(max_ms));
            let (now, next) = (b.base_delay(retry), b.base_delay(retry + 1));
            prop_assert!(now <= next);
            prop_assert!(next <= MS(max_ms));
            prop_assert!(now >= MS(initial_ms).min(MS(max_ms)));
        }

        #[test]
        fn jitter_stays_inside_its_range(base_ms in 0u64..60_000, prev_ms in 0u64..60_000, unit in 0.0f64..1.0) {
            let (base, prev, initial, max) = (MS(base_ms), MS(prev_ms), MS(10), MS(60_000));
            prop_assert_eq!(Jitter::None.apply(base, prev, initial, max, unit), base);
            let full = Jitter::Full.apply(base, prev, initial, max, unit);
            prop_assert!(full <= base);
            let equal = Jitter::Equal.apply(base, prev, initial, max, unit);
            prop_assert!(equal >= base / 2 && equal <= base);
            let dec = Jitter::Decorrelated.apply(base, prev, initial, max, unit);
            prop_assert!(dec >= initial && dec <= max);
            prop_assert!(dec <= prev.max(initial) * 3);
        }
    }
}
