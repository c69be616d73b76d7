//! The retry decision: given a failed attempt, retry after some delay or give up, and why.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm_core::{AttemptBudget, Deadline, ErrorKind, ErrorKinds, Outcome};
use tokio::time::Instant;

use crate::budget::RetryBudget;
use llm_core::backoff::{Backoff, Jitter};

pub(crate) type RetryIf = Arc<dyn Fn(&Outcome) -> bool + Send + Sync>;
pub(crate) type OnRetry = Arc<dyn Fn(&RetryEvent) + Send + Sync>;
pub(crate) type OnGiveUp = Arc<dyn Fn(&GiveUp) + Send + Sync>;

/// A retry about to happen, as `on_retry` hooks see it.
///
/// ```
/// use llm_retry_layer::RetryLayer;
///
/// let layer = RetryLayer::builder()
///     .on_retry(|event| tracing::info!(attempt = event.attempt, delay_ms = event.delay.as_millis() as u64, "retrying"))
///     .on_give_up(|give_up| tracing::warn!(attempts = give_up.attempts, reason = give_up.reason.as_str(), "gave up"))
///     .build()
///     .unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryEvent {
    /// The number of the attempt about to be made (2 for the first retry).
    pub attempt: u32,
    /// How long the layer waits before making it.
    pub delay: Duration,
    /// How the previous attempt failed.
    pub kind: ErrorKind,
    /// The delay the server asked for, if it did.
    pub retry_after: Option<Duration>,
}

/// Retrying stopped and the last result goes back to the caller, as `on_give_up` hooks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GiveUp {
    /// Attempts made, the first included.
    pub attempts: u32,
    /// How the last attempt failed.
    pub kind: ErrorKind,
    /// Why no further attempt is made.
    pub reason: GiveUpReason,
}

/// Why the retry layer stopped retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// The failure is not one the layer retries (quota, auth, invalid request, …).
    NotRetryable,
    /// `max_retries` retries were made.
    RetriesExhausted,
    /// The server asked for a wait longer than `max_retry_after`.
    RetryAfterTooLong,
    /// The wait would end past the request's deadline.
    DeadlineExceeded,
    /// The wait would end past the layer's `max_elapsed`.
    ElapsedLimitReached,
    /// The request's attempt budget is spent.
    AttemptBudgetSpent,
    /// The process-wide retry budget is spent: the target is failing for many requests.
    RetryBudgetSpent,
    /// Other fallback targets remain and this failure means the target is silent or gone,
    /// the wait is longer than `failover_delay`, a rate limit gave no delay or came back
    /// after one was waited out, or the target's breaker opened: hand over at once.
    HandedOver,
    /// The target's circuit breaker opened and would reject the next attempt, and no other
    /// target remains: waiting would only end in a rejection.
    TargetClosed,
    /// The request could not be copied for another attempt.
    NotCloneable,
    /// The layer's [`RetryPolicy`](crate::RetryPolicy) refused the retry.
    RefusedByPolicy,
}

impl GiveUpReason {
    /// A stable `snake_case` name for logs and metrics.
    ///
    /// ```
    /// assert_eq!(llm_retry_layer::GiveUpReason::HandedOver.as_str(), "handed_over");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            GiveUpReason::NotRetryable => "not_retryable",
            GiveUpReason::RetriesExhausted => "retries_exhausted",
            GiveUpReason::RetryAfterTooLong => "retry_after_too_long",
            GiveUpReason::DeadlineExceeded => "deadline_exceeded",
            GiveUpReason::ElapsedLimitReached => "elapsed_limit_reached",
            GiveUpReason::AttemptBudgetSpent => "attempt_budget_spent",
            GiveUpReason::RetryBudgetSpent => "retry_budget_spent",
            GiveUpReason::HandedOver => "handed_over",
            GiveUpReason::TargetClosed => "target_closed",
            GiveUpReason::NotCloneable => "not_cloneable",
            GiveUpReason::RefusedByPolicy => "refused_by_policy",
        }
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Everything the layer decides by; built once per layer and shared by every clone.
pub(crate) struct Policy {
    pub(crate) max_retries: u32,
    pub(crate) backoff: Backoff,
    pub(crate) jitter: Jitter,
    pub(crate) retry_on: ErrorKinds,
    pub(crate) retry_if: Option<RetryIf>,
    pub(crate) max_retry_after: Duration,
    pub(crate) max_elapsed: Option<Duration>,
    pub(crate) failover_on: ErrorKinds,
    pub(crate) failover_delay: Duration,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) on_retry: Option<OnRetry>,
    pub(crate) on_give_up: Option<OnGiveUp>,
    /// The name its logs and metrics give the layer.
    pub(crate) name: Arc<str>,
    pub(crate) meters: crate::metrics::Meters,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("jitter", &self.jitter)
            .field("retry_on", &self.retry_on)
            .field("retry_if", &self.retry_if.as_ref().map(|_| ".."))
            .field("max_retry_after", &self.max_retry_after)
            .field("max_elapsed", &self.max_elapsed)
            .field("failover_on", &self.failover_on)
            .field("failover_delay", &self.failover_delay)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// What the layer knows about the request when an attempt fails.
pub(crate) struct Attempted<'a> {
    /// Attempts made so far, the failed one included.
    pub(crate) attempts: u32,
    /// The delay slept before the failed attempt (zero before the first).
    pub(crate) previous_delay: Duration,
    /// When the first attempt started, if the layer has an elapsed limit.
    pub(crate) started: Option<Instant>,
    pub(crate) deadline: Option<Deadline>,
    pub(crate) remaining_targets: u32,
    pub(crate) attempt_budget: Option<&'a AttemptBudget>,
    /// The kinds of the earlier failed attempts of this request (not the one just failed).
    pub(crate) earlier: ErrorKinds,
    /// How long the target stays closed, when its breaker opened on this failure.
    pub(crate) closed_for: Option<Duration>,
}

impl Policy {
    /// Decides what follows a failed attempt: `Ok(delay)` to retry after `delay`, or why not.
    /// Budgets are only spent when the answer is to retry.
    pub(crate) fn decide(
        &self,
        outcome: &Outcome,
        kind: ErrorKind,
        attempted: &Attempted<'_>,
        now: Instant,
        unit: f64,
    ) -> Result<Duration, GiveUpReason> {
        let retryable = match &self.retry_if {
            Some(retry_if) => retry_if(outcome),
            None => self.retry_on.contains(kind),
        };
        if !retryable {
            return Err(GiveUpReason::NotRetryable);
        }
        if attempted.attempts > self.max_retries {
            return Err(GiveUpReason::RetriesExhausted);
        }
        let server_delay = outcome.retry_after();
        if server_delay.is_some_and(|d| d > self.max_retry_after) {
            return Err(GiveUpReason::RetryAfterTooLong);
        }
        let retry = attempted.attempts; // the retry about to be made: 1 after the first attempt
        let base = self.backoff.base_delay(retry);
        let previous = if attempted.previous_delay.is_zero() {
            base
        } else {
            attempted.previous_delay
        };
        let max = self.backoff.max().unwrap_or(Duration::MAX);
        let backoff = self
            .jitter
            .apply(base, previous, self.backoff.initial(), max, unit);
        // NOTE: the server's delay is a floor: retrying earlier is refused anyway.
        let floor = server_delay.unwrap_or(Duration::ZERO);
        let delay = backoff.max(floor);

        // The next attempt would meet an open breaker: waiting only ends in a rejection.
        let closed = attempted.closed_for.is_some_and(|closed| closed > delay);
        if attempted.remaining_targets > 0 {
            // NOTE: hand-over is judged on the schedule before jitter, so that identical
            // runs hand over after the same number of attempts.
            let planned = base.max(floor);
            let rate_limited_again = kind == ErrorKind::RateLimited
                && (server_delay.is_none() || attempted.earlier.contains(ErrorKind::RateLimited));
            if self.failover_on.contains(kind)
                || planned > self.failover_delay
                || rate_limited_again
                || closed
            {
                return Err(GiveUpReason::HandedOver);
            }
        }
        if closed {
            return Err(GiveUpReason::TargetClosed);
        }
        let wake = now.checked_add(delay);
        if let Some(deadline) = attempted.deadline {
            if wake.is_none_or(|wake| wake >= deadline.instant()) {
                return Err(GiveUpReason::DeadlineExceeded);
            }
        }
        if let (Some(limit), Some(started)) = (self.max_elapsed, attempted.started) {
            let end = started.checked_add(limit);
            if wake.zip(end).is_none_or(|(wake, end)| wake >= end) {
                return Err(GiveUpReason::ElapsedLimitReached);
            }
        }
        if attempted.attempt_budget.is_some_and(|b| b.remaining() == 0) {
            return Err(GiveUpReason::AttemptBudgetSpent);
        }
        if let Some(budget) = &self.budget {
            if !budget.try_withdraw() {
                return Err(GiveUpReason::RetryBudgetSpent);
            }
        }
        if let Some(budget) = attempted.attempt_budget {
            if !budget.try_acquire() {
                return Err(GiveUpReason::AttemptBudgetSpent);
            }
        }
        Ok(delay)
    }
}
