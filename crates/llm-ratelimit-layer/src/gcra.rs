//! [`Limiter`]: requests and tokens per interval as two GCRA buckets on atomics, plus a
//! provider-directed pause — driven by explicit instants.
//!
//! GCRA keeps one number per bucket, the theoretical arrival time (TAT) of the next unit:
//! admitting `n` units moves it `n` emission intervals later. A request may pass when the
//! TAT, less the bucket's capacity, is not after now. A request that must wait reserves
//! its slot at once (the TAT moves) and sleeps until it: waiters are served in arrival
//! order with no queue, and one that leaves early hands its units back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use llm_core::{LimitReason, LocalRateLimited, RateLimitInfo};
use tokio::time::Instant;

/// One bucket: `limit` units per `per`, holding at most `burst` units.
#[derive(Debug)]
pub(crate) struct Bucket {
    emission_ns: u64,
    capacity_ns: u64,
    burst: u64,
    tat: AtomicU64,
}

impl Bucket {
    pub(crate) fn new(limit: u64, per: Duration, burst: u64) -> Self {
        let emission_ns = (per.as_nanos() / u128::from(limit.max(1))).max(1) as u64;
        Bucket {
            emission_ns,
            capacity_ns: emission_ns.saturating_mul(burst),
            burst,
            tat: AtomicU64::new(0),
        }
    }

    #[inline]
    fn span(&self, units: u64) -> u64 {
        units.saturating_mul(self.emission_ns)
    }

    /// When `units` could go, starting no earlier than `from` (nanoseconds since origin),
    /// and the TAT that taking them then leaves.
    #[inline]
    fn plan(&self, tat: u64, from: u64, units: u64) -> (u64, u64) {
        let new_tat = tat.max(from).saturating_add(self.span(units));
        (new_tat.saturating_sub(self.capacity_ns).max(from), new_tat)
    }

    /// Reserves `units`, going no earlier than `from`, if they can go by `deadline`:
    /// `Ok(go)` (committed) or `Err(go)` (nothing taken).
    #[inline]
    fn reserve(&self, from: u64, units: u64, deadline: u64) -> Result<u64, u64> {
        // `go > deadline` with `go = max(new_tat - capacity, from)` and `from <= deadline`
        // is `new_tat > deadline + capacity`: one comparison in the loop, and `go` is only
        // worked out for a call that may wait.
        let latest = deadline.saturating_add(self.capacity_ns);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let (go, new_tat) = self.plan(tat, from, units);
            if new_tat > latest {
                return Err(go);
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(if from == deadline { from } else { go }),
                Err(actual) => tat = actual,
            }
        }
    }

    /// Hands `units` back (a reservation not used, a usage lower than estimated).
    fn refund(&self, units: u64) {
        let span = self.span(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(span))
            });
    }

    /// Takes `units` more at `now` (a usage higher than estimated), even past the burst.
    fn charge(&self, now: u64, units: u64) {
        let span = self.span(units);
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(span))
            });
    }

    /// Units that could go at once at `now`.
    fn available(&self, now: u64) -> u64 {
        let used = self.tat.load(Ordering::Acquire).saturating_sub(now);
        self.capacity_ns.saturating_sub(used) / self.emission_ns
    }

    /// Lowers what is available at `now` to at most `units` (never raises it).
    fn clamp_available(&self, now: u64, units: u64) {
        let target = now.saturating_add(self.capacity_ns.saturating_sub(self.span(units)));
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                (tat < target).then_some(target)
            });
    }
}

/// What a limiter granted: when the call may go, and the tokens it reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// How long the call waits before going.
    pub wait: Duration,
    /// Tokens reserved for it (its estimated cost).
    pub tokens: u64,
}

/// How much a limiter could admit now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capacity {
    /// Requests that could go at once (`None`: requests are not limited).
    pub requests: Option<u64>,
    /// Tokens that could go at once (`None`: tokens are not limited).
    pub tokens: Option<u64>,
    /// How long a provider-directed pause still lasts.
    pub paused_for: Duration,
}

/// Requests and tokens per interval, with a provider-directed pause. Shared by reference;
/// every operation is a few atomic steps, no lock.
///
/// ```
/// use std::time::Duration;
/// use llm_ratelimit_layer::Limiter;
/// use tokio::time::Instant;
///
/// let t0 = Instant::now();
/// // 60 requests per minute with a burst of 10.
/// let limiter = Limiter::new(Some((60, Duration::from_secs(60), 10)), None, t0);
/// for _ in 0..10 {
///     assert_eq!(limiter.acquire(0, t0, Duration::ZERO).unwrap().wait, Duration::ZERO);
/// }
/// let err = limiter.acquire(0, t0, Duration::ZERO).unwrap_err();
/// assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
/// // Or wait for it: the eleventh goes one second later.
/// assert_eq!(limiter.acquire(0, t0, Duration::from_secs(5)).unwrap().wait, Duration::from_secs(1));
/// ```
#[derive(Debug)]
pub struct Limiter {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    paused_until: AtomicU64,
    // Learned from the provider: while its request bucket is empty, one request per this many
    // nanoseconds (0: not pacing), the next slot at `paced_tat`.
    pace_ns: AtomicU64,
    paced_tat: AtomicU64,
    origin: Instant,
}

impl Limiter {
    /// A limiter of `requests` and `tokens`, each `(limit, per, burst)`, created at `now`.
    pub fn new(
        requests: Option<(u64, Duration, u64)>,
        tokens: Option<(u64, Duration, u64)>,
        now: Instant,
    ) -> Self {
        let bucket = |(limit, per, burst)| Bucket::new(limit, per, burst);
        Limiter {
            requests: requests.map(bucket),
            tokens: tokens.map(bucket),
            paused_until: AtomicU64::new(0),
            pace_ns: AtomicU64::new(0),
            paced_tat: AtomicU64::new(0),
            origin: now,
        }
    }

    #[inline]
    fn ns(&self, at: Instant) -> u64 {
        // NOTE: a pause until 0 and a TAT of 0 both lie at or before any now: no sentinel needed.
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Admits one request costing `tokens` at `now`, waiting at most `max_wait`: the grant
    /// (with its wait, reserved and committed), or why not and when capacity returns.
    pub fn acquire(
        &self,
        tokens: u64,
        now: Instant,
        max_wait: Duration,
    ) -> Result<Grant, LocalRateLimited> {
        self.acquire_at(tokens, self.ns(now), max_wait)
    }

    /// As [`acquire`](Self::acquire), with the time as nanoseconds on the limiter's own scale:
    /// no conversion on the hot path.
    #[inline]
    pub(crate) fn acquire_at(
        &self,
        tokens: u64,
        now_ns: u64,
        max_wait: Duration,
    ) -> Result<Grant, LocalRateLimited> {
        let tokens = match &self.tokens {
            None => 0,
            Some(bucket) if tokens > bucket.burst => {
                let reason = LimitReason::CostExceedsCapacity {
                    cost: tokens,
                    capacity: bucket.burst,
                };
                return Err(LocalRateLimited::new(reason, None));
            }
            Some(_) => tokens,
        };
        let max_wait_ns = if max_wait.is_zero() {
            0
        } else {
            u64::try_from(max_wait.as_nanos()).unwrap_or(u64::MAX)
        };
        let deadline = now_ns.saturating_add(max_wait_ns);
        let paused = self.paused_until.load(Ordering::Acquire);
        let mut from = now_ns.max(paused);
        if from > deadline {
            return Err(self.denied(LimitReason::ProviderPause, from - now_ns));
        }
        let pace = self.pace_ns.load(Ordering::Relaxed);
        if pace != 0 {
            from = self
                .paced(from, pace, deadline)
                .map_err(|at| self.denied(LimitReason::ProviderPause, at.saturating_sub(now_ns)))?;
        }
        let mut go = from;
        if let Some(bucket) = &self.requests {
            match bucket.reserve(from, 1, deadline) {
                Ok(at) => go = go.max(at),
                Err(at) => return Err(self.denied(LimitReason::Requests, at - now_ns)),
            }
        }
        if let Some(bucket) = &self.tokens {
            match bucket.reserve(from, tokens, deadline) {
                Ok(at) => go = go.max(at),
                Err(at) => {
                    // Both buckets admit together or neither does.
                    if let Some(requests) = &self.requests {
                        requests.refund(1);
                    }
                    return Err(self.denied(LimitReason::Tokens, at - now_ns));
                }
            }
        }
        // NOTE: most admissions go at once; a `Duration` from nanoseconds costs a division.
        let wait = if go == now_ns {
            Duration::ZERO
        } else {
            Duration::from_nanos(go - now_ns)
        };
        Ok(Grant { wait, tokens })
    }

    /// The next paced slot at or after `from`, taken; `Err` with the slot when it is past
    /// `deadline`.
    #[cold]
    fn paced(&self, from: u64, pace: u64, deadline: u64) -> Result<u64, u64> {
        let mut slot = from;
        self.paced_tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                slot = tat.max(from);
                (slot <= deadline).then(|| slot.saturating_add(pace))
            })
            .map(|_| slot)
            .map_err(|tat| tat.max(from))
    }

    fn denied(&self, reason: LimitReason, wait_ns: u64) -> LocalRateLimited {
        LocalRateLimited::new(reason, Some(Duration::from_nanos(wait_ns)))
    }

    /// Hands back a grant whose call never went (cancelled while waiting).
    pub fn release(&self, grant: &Grant) {
        if let Some(bucket) = &self.requests {
            bucket.refund(1);
        }
        if let Some(bucket) = &self.tokens {
            bucket.refund(grant.tokens);
        }
    }

    /// Corrects a grant's token reservation to the `actual` tokens the call used: refunds
    /// the difference, or charges it.
    pub fn reconcile(&self, grant: &Grant, actual: u64, now: Instant) {
        self.reconcile_at(grant, actual, self.ns(now));
    }

    pub(crate) fn reconcile_at(&self, grant: &Grant, actual: u64, now_ns: u64) {
        let Some(bucket) = &self.tokens else { return };
        match actual.cmp(&grant.tokens) {
            std::cmp::Ordering::Less => bucket.refund(grant.tokens - actual),
            std::cmp::Ordering::Greater => bucket.charge(now_ns, actual - grant.tokens),
            std::cmp::Ordering::Equal => {}
        }
    }

    /// Admits nothing until `now + delay` (a provider's 429 with a server delay), for every
    /// sharer of this limiter. A pause only ever lengthens.
    pub fn pause(&self, delay: Duration, now: Instant) {
        self.pause_at(delay, self.ns(now));
    }

    pub(crate) fn pause_at(&self, delay: Duration, now_ns: u64) {
        let until = now_ns.saturating_add(u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX));
        self.paused_until.fetch_max(until, Ordering::AcqRel);
    }

    /// Resynchronises with what the provider reported: fewer requests or tokens remaining
    /// than the limiter believes lowers its count; an exhausted bucket pauses until the next
    /// request fits ([`RateLimitInfo::next_slot`]), not until the window's full reset.
    pub fn observe(&self, info: &RateLimitInfo, now: Instant) {
        self.observe_at(info, self.ns(now));
    }

    pub(crate) fn observe_at(&self, info: &RateLimitInfo, now_ns: u64) {
        if let (Some(bucket), Some(remaining)) = (&self.requests, info.remaining_requests) {
            bucket.clamp_available(now_ns, remaining);
        }
        if let (Some(bucket), Some(remaining)) = (&self.tokens, info.remaining_tokens) {
            bucket.clamp_available(now_ns, remaining);
        }
        if let Some(reset) = info.next_slot() {
            self.pause_at(reset, now_ns);
        }
        self.learn_pace(info);
    }

    /// Paces to the provider's refill while it reports its request bucket empty: one request
    /// per `reset / limit`, so that waiting requests go one by one as room returns instead of
    /// together into a 429. Pacing ends once the provider reports room for a few requests.
    fn learn_pace(&self, info: &RateLimitInfo) {
        let (Some(remaining), Some(limit)) = (info.remaining_requests, info.limit_requests) else {
            return;
        };
        if remaining == 0 {
            // NOTE: the request bucket's own refill, not `next_slot` (which also waits for an
            // empty token bucket's full reset: that is the pause's job, not the pace's).
            let slot = info
                .reset_requests
                .filter(|_| limit > 0)
                .map(|reset| reset / u32::try_from(limit).unwrap_or(u32::MAX));
            if let Some(slot) = slot {
                let slot = u64::try_from(slot.as_nanos()).unwrap_or(u64::MAX);
                self.pace_ns.store(slot, Ordering::Relaxed);
            }
        } else if remaining >= (limit / 10).max(2) {
            self.pace_ns.store(0, Ordering::Relaxed);
        }
    }

    /// What could be admitted at `now`.
    pub fn capacity(&self, now: Instant) -> Capacity {
        self.capacity_at(self.ns(now))
    }

    pub(crate) fn capacity_at(&self, now_ns: u64) -> Capacity {
        Capacity {
            requests: self.requests.as_ref().map(|b| b.available(now_ns)),
            tokens: self.tokens.as_ref().map(|b| b.available(now_ns)),
            paused_for: Duration::from_nanos(
                self.paused_until
                    .load(Ordering::Acquire)
                    .saturating_sub(now_ns),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn rpm(limit: u64, burst: u64) -> Option<(u64, Duration, u64)> {
        Some((limit, S(60), burst))
    }

    #[test]
    fn sixty_per_minute_with_burst_ten_admits_ten_then_one_per_second() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(60, 10), None, t0);
        for _ in 0..10 {
            l.acquire(0, t0, Duration::ZERO).unwrap();
        }
        assert_eq!(
            l.acquire(0, t0, Duration::ZERO).unwrap_err().retry_after(),
            Some(S(1))
        );
        assert!(l.acquire(0, t0 + MS(999), Duration::ZERO).is_err());
        for i in 1..=5 {
            assert!(
                l.acquire(0, t0 + S(i), Duration::ZERO).is_ok(),
                "one more at {i} s"
            );
            assert!(l.acquire(0, t0 + S(i), Duration::ZERO).is_err());
        }
    }

    #[test]
    fn waiters_reserve_consecutive_slots() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(60, 1), None, t0);
        let waits: Vec<_> = (0..4)
            .map(|_| l.acquire(0, t0, S(10)).unwrap().wait)
            .collect();
        assert_eq!(waits, [S(0), S(1), S(2), S(3)]);
        assert_eq!(
            l.acquire(0, t0, MS(3_500)).unwrap_err().retry_after(),
            Some(S(4))
        );
    }

    #[test]
    fn a_released_reservation_returns_its_slot() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(60, 1), None, t0);
        l.acquire(0, t0, S(10)).unwrap();
        let waiting = l.acquire(0, t0, S(10)).unwrap();
        assert_eq!(waiting.wait, S(1));
        l.release(&waiting);
        assert_eq!(
            l.acquire(0, t0, S(10)).unwrap().wait,
            S(1),
            "the next arrival takes the freed slot"
        );
    }

    #[test]
    fn tokens_are_reserved_and_reconciled_both_ways() {
        let t0 = Instant::now();
        // 6,000 tokens per minute: 100 per second.
        let l = Limiter::new(None, Some((6_000, S(60), 6_000)), t0);
        let grant = l.acquire(1_000, t0, Duration::ZERO).unwrap();
        assert_eq!(l.capacity(t0).tokens, Some(5_000));
        l.reconcile(&grant, 400, t0);
        assert_eq!(l.capacity(t0).tokens, Some(5_600), "600 refunded");
        let grant = l.acquire(500, t0, Duration::ZERO).unwrap();
        l.reconcile(&grant, 1_500, t0);
        assert_eq!(l.capacity(t0).tokens, Some(4_100), "1,000 more charged");
    }

    #[test]
    fn a_cost_that_never_fits_is_its_own_error() {
        let t0 = Instant::now();
        let l = Limiter::new(None, Some((30_000, S(60), 30_000)), t0);
        let err = l.acquire(31_538, t0, S(3600)).unwrap_err();
        assert!(err.never_fits());
        assert_eq!(err.retry_after(), None);
    }

    #[test]
    fn both_buckets_admit_together_or_not_at_all() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(60, 10), Some((1_000, S(60), 1_000)), t0);
        l.acquire(900, t0, Duration::ZERO).unwrap();
        let err = l.acquire(200, t0, Duration::ZERO).unwrap_err();
        assert_eq!(err.reason(), LimitReason::Tokens);
        assert_eq!(
            l.capacity(t0).requests,
            Some(9),
            "the refused call took no request"
        );
    }

    #[test]
    fn a_pause_holds_everyone_until_it_ends() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(600, 100), None, t0);
        l.pause(S(20), t0);
        let err = l.acquire(0, t0 + S(5), Duration::ZERO).unwrap_err();
        assert_eq!(
            (err.reason(), err.retry_after()),
            (LimitReason::ProviderPause, Some(S(15)))
        );
        assert_eq!(l.acquire(0, t0 + S(5), S(60)).unwrap().wait, S(15));
        l.pause(S(1), t0 + S(5));
        assert_eq!(
            l.capacity(t0 + S(5)).paused_for,
            S(15),
            "a shorter pause does not cut a longer one"
        );
        assert!(l.acquire(0, t0 + S(20), Duration::ZERO).is_ok());
    }

    #[test]
    fn an_empty_provider_bucket_paces_requests_to_its_refill_not_its_full_reset() {
        let t0 = Instant::now();
        // No local limit at all, or one far above the real quota: the same learning.
        for l in [
            Limiter::new(None, None, t0),
            Limiter::new(rpm(1000, 1000), None, t0),
        ] {
            let mut empty = RateLimitInfo::new();
            empty.limit_requests = Some(30);
            empty.remaining_requests = Some(0);
            empty.reset_requests = Some(S(60));
            l.observe(&empty, t0);
            // One request per 2 s (60 s / 30), in arrival order, not one minute of silence.
            let waits: Vec<_> = (0..4)
                .map(|_| l.acquire(0, t0, S(10)).unwrap().wait)
                .collect();
            assert_eq!(waits, [S(2), S(4), S(6), S(8)]);
            let err = l.acquire(0, t0, S(1)).unwrap_err();
            assert_eq!(err.reason(), LimitReason::ProviderPause);
            // Room for a few requests again: pacing ends.
            let mut room = empty;
            room.remaining_requests = Some(5);
            l.observe(&room, t0 + S(20));
            assert_eq!(
                l.acquire(0, t0 + S(20), Duration::ZERO).unwrap().wait,
                Duration::ZERO
            );
            assert_eq!(
                l.acquire(0, t0 + S(20), Duration::ZERO).unwrap().wait,
                Duration::ZERO
            );
        }
    }

    #[test]
    fn provider_counts_lower_the_local_count() {
        let t0 = Instant::now();
        let l = Limiter::new(rpm(60, 60), Some((100_000, S(60), 100_000)), t0);
        let info = RateLimitInfo {
            remaining_requests: Some(3),
            remaining_tokens: Some(50_000),
            ..RateLimitInfo::new()
        };
        l.observe(&info, t0);
        assert_eq!(l.capacity(t0).requests, Some(3));
        assert_eq!(l.capacity(t0).tokens, Some(50_000));
        let more = RateLimitInfo {
            remaining_requests: Some(50),
            ..RateLimitInfo::new()
        };
        l.observe(&more, t0);
        assert_eq!(
            l.capacity(t0).requests,
            Some(3),
            "a higher report never raises the local limit"
        );
        let empty = RateLimitInfo {
            remaining_tokens: Some(0),
            reset_tokens: Some(S(7)),
            ..RateLimitInfo::new()
        };
        l.observe(&empty, t0);
        assert_eq!(l.capacity(t0).paused_for, S(7));
    }
}
