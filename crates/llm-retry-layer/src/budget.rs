//! [`RetryBudget`]: retries across a whole process capped at a fraction of recent requests,
//! so a provider outage cannot multiply the load sent to it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use llm_core::ConfigError;
use tokio::time::Instant;

/// Budget arithmetic is in thousandths of a retry, so ratios like 0.2 stay exact.
const UNIT: u64 = 1000;

/// A retry budget shared by every clone of a retry layer (and, if you pass the same budget
/// to several layers, by all of them).
///
/// Each new request deposits `retry_ratio` of a retry; each retry withdraws one. With a
/// ratio of 0.2, a sustained outage sees at most one retry per five requests — plus a small
/// floor of `min_per_sec` retries per second, so that a quiet client can still retry its
/// occasional failure, and plus what was banked before the outage, which is capped at
/// `max_balance` retries so that a long healthy spell cannot bank an unbounded burst.
///
/// The idea is tower's `TpsBudget` (itself Finagle's); unlike it, a deposit — made on every
/// request, the success path — is one atomic operation with no lock and no clock read.
///
/// ```
/// use llm_retry_layer::RetryBudget;
///
/// let budget = RetryBudget::new(0.5, 0, 10).unwrap();
/// assert!(!budget.try_withdraw(), "nothing deposited yet");
/// budget.deposit();
/// budget.deposit();
/// assert!(budget.try_withdraw(), "two requests earn one retry");
/// assert!(!budget.try_withdraw());
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    balance: AtomicU64,
    deposit: u64,
    max_balance: u64,
    min_per_sec: u32,
    floor: Mutex<Floor>,
}

struct Floor {
    tokens: f64,
    refilled: Instant,
}

impl RetryBudget {
    /// A budget allowing `retry_ratio` retries per request (0 to 1000), at least
    /// `min_per_sec` retries per second, banking at most `max_balance` retries.
    pub fn new(retry_ratio: f64, min_per_sec: u32, max_balance: u32) -> Result<Self, ConfigError> {
        if !retry_ratio.is_finite() || !(0.0..=1000.0).contains(&retry_ratio) {
            return Err(ConfigError::new(
                "budget.retry_ratio",
                format!("must be a number from 0 to 1000 (got {retry_ratio})"),
            ));
        }
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                balance: AtomicU64::new(0),
                deposit: (retry_ratio * UNIT as f64).round() as u64,
                max_balance: u64::from(max_balance) * UNIT,
                min_per_sec,
                floor: Mutex::new(Floor {
                    tokens: f64::from(min_per_sec),
                    refilled: Instant::now(),
                }),
            }),
        })
    }

    /// Records a new request (not a retry): earns `retry_ratio` of a retry.
    pub fn deposit(&self) {
        let inner = &*self.inner;
        // NOTE: a full balance is the steady state of a healthy service; reading before
        // writing keeps every core from writing the same cache line on every request.
        if inner.deposit == 0 || inner.balance.load(Ordering::Relaxed) >= inner.max_balance {
            return;
        }
        let _ = inner
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance < inner.max_balance)
                    .then(|| (balance + inner.deposit).min(inner.max_balance))
            });
    }

    /// Takes one retry from the budget: from the deposits first, then from the per-second
    /// floor. `false` when neither has one left.
    pub fn try_withdraw(&self) -> bool {
        let inner = &*self.inner;
        let from_deposits = inner
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |balance| {
                balance.checked_sub(UNIT)
            })
            .is_ok();
        from_deposits || self.withdraw_from_floor()
    }

    fn withdraw_from_floor(&self) -> bool {
        let inner = &*self.inner;
        if inner.min_per_sec == 0 {
            return false;
        }
        let mut floor = inner
            .floor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let rate = f64::from(inner.min_per_sec);
        let refill = now.saturating_duration_since(floor.refilled).as_secs_f64() * rate;
        floor.tokens = (floor.tokens + refill).min(rate);
        floor.refilled = now;
        if floor.tokens >= 1.0 {
            floor.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Retries the deposits currently allow (not counting the floor).
    pub fn balance(&self) -> f64 {
        self.inner.balance.load(Ordering::Acquire) as f64 / UNIT as f64
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("balance", &self.balance())
            .field("retry_ratio", &(self.inner.deposit as f64 / UNIT as f64))
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("max_balance", &(self.inner.max_balance / UNIT))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ratio_is_exact_over_many_requests() {
        let budget = RetryBudget::new(0.2, 0, 1_000).unwrap();
        for _ in 0..1_000 {
            budget.deposit();
        }
        let granted = (0..1_000).filter(|_| budget.try_withdraw()).count();
        assert_eq!(granted, 200);
    }

    #[test]
    fn banked_retries_are_capped() {
        let budget = RetryBudget::new(1.0, 0, 5).unwrap();
        for _ in 0..100 {
            budget.deposit();
        }
        assert_eq!(budget.balance(), 5.0);
        assert_eq!((0..100).filter(|_| budget.try_withdraw()).count(), 5);
    }

    #[test]
    fn ratios_above_one_allow_several_retries_per_request() {
        let budget = RetryBudget::new(2.5, 0, 100).unwrap();
        budget.deposit();
        budget.deposit();
        assert_eq!((0..10).filter(|_| budget.try_withdraw()).count(), 5);
    }

    #[test]
    fn zero_ratio_allows_only_the_floor() {
        let budget = RetryBudget::new(0.0, 0, 100).unwrap();
        budget.deposit();
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn invalid_ratios_are_rejected_by_name() {
        for ratio in [-0.1, 1000.5, f64::NAN, f64::INFINITY] {
            let err = RetryBudget::new(ratio, 1, 1).unwrap_err();
            assert_eq!(err.field(), "budget.retry_ratio");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn floor_refills_per_second() {
        let budget = RetryBudget::new(0.0, 2, 0).unwrap();
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw(), "the floor holds one second's worth");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(budget.try_withdraw(), "half a second refills one of two");
        assert!(!budget.try_withdraw());
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            (0..10).filter(|_| budget.try_withdraw()).count(),
            2,
            "refill is capped"
        );
    }

    #[test]
    fn clones_share_the_balance_across_threads() {
        let budget = RetryBudget::new(1.0, 0, 1_000_000).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let budget = budget.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| budget.deposit()))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(budget.balance(), 40_000.0);
    }
}
