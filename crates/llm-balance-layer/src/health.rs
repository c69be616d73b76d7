//! Each member's health: requests in flight, peak-EWMA latency, headroom, and whether it is
//! out (retired, cooling down) — atomics read at every pick, written when a call settles.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use llm_core::{ErrorKind, Outcome};
use tokio::time::Instant;

use crate::config::PoolConfig;

/// Unknown headroom: counts as the most.
pub(crate) const UNKNOWN: u64 = u64::MAX;

/// A time on the pool's clock: nanoseconds since the pool was built, plus one, so that 0
/// means "never" / "not out".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(pub(crate) u64);

#[derive(Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    pub(crate) fn now(&self) -> Tick {
        self.tick(Instant::now())
    }

    /// `at` on this clock. NOTE: a call reads the time twice, at its pick and when it
    /// settles, and derives everything else from those (with tokio's `test-util`, each read
    /// takes the clock's lock).
    pub(crate) fn tick(&self, at: Instant) -> Tick {
        Tick(at.saturating_duration_since(self.origin).as_nanos() as u64 + 1)
    }

    pub(crate) fn after(now: Tick, delay: Duration) -> Tick {
        Tick(
            now.0
                .saturating_add(delay.as_nanos().min(u64::MAX as u128) as u64),
        )
    }
}

/// Why a member is out, kept as its kind's index (0: not out).
pub(crate) fn kind_code(kind: ErrorKind) -> u8 {
    ErrorKind::ALL
        .iter()
        .position(|k| *k == kind)
        .map_or(0, |i| i as u8 + 1)
}

fn code_kind(code: u8) -> Option<ErrorKind> {
    code.checked_sub(1)
        .and_then(|i| ErrorKind::ALL.get(i as usize).copied())
}

/// The peak-EWMA latency estimate (as `tower::load::PeakEwma` keeps it), in two atomics:
/// no lock on the success path. Two answers settling at once may lose one observation (and
/// pair one's estimate with the other's time), which an estimate can afford.
#[derive(Debug)]
struct Ewma {
    /// The estimate in nanoseconds, as `f64` bits.
    estimate_ns: AtomicU64,
    /// When it was made (a `Tick`).
    at: AtomicU64,
}

impl Ewma {
    fn read(&self) -> (f64, Tick) {
        (
            f64::from_bits(self.estimate_ns.load(Ordering::Relaxed)),
            Tick(self.at.load(Ordering::Relaxed)),
        )
    }
}

/// What a settled call tells the pool about its member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The member answered, or failed in a way that says nothing about it.
    Fine,
    /// The member answered after it was out: back in rotation.
    Back,
    /// The member is out for `duration` because of `kind`: the request may go to another
    /// one.
    Out { kind: ErrorKind, duration: Duration },
    /// The member failed (a server error, a timeout): its breaker judges it; the request
    /// may go to another one.
    Failed,
}

#[derive(Debug)]
pub(crate) struct MemberHealth {
    pub(crate) in_flight: AtomicU32,
    /// When it is back (a `Tick`; 0: not out). Once passed, one request probes it.
    out_until: AtomicU64,
    out_kind: AtomicU8,
    /// Requests left by the provider's last word, less those sent since (`UNKNOWN`).
    remaining: AtomicU64,
    /// When that word expires (the window's reset).
    remaining_until: AtomicU64,
    ewma: Ewma,
    pub(crate) served: AtomicU64,
    pub(crate) failed: AtomicU64,
}

impl MemberHealth {
    pub(crate) fn new(initial_latency: Duration) -> Self {
        MemberHealth {
            in_flight: AtomicU32::new(0),
            out_until: AtomicU64::new(0),
            out_kind: AtomicU8::new(0),
            remaining: AtomicU64::new(UNKNOWN),
            remaining_until: AtomicU64::new(0),
            ewma: Ewma {
                estimate_ns: AtomicU64::new((initial_latency.as_nanos() as f64).to_bits()),
                // The pool's clock starts with its members.
                at: AtomicU64::new(1),
            },
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Whether a pick may choose it at `now`: not out (a member whose time out has passed
    /// may be chosen: the chooser claims the probe), and not at the end of the requests the
    /// provider said it had left.
    #[inline]
    pub(crate) fn available(&self, now: Tick) -> bool {
        let until = self.out_until.load(Ordering::Relaxed);
        (until == 0 || until <= now.0) && self.remaining(now) != 0
    }

    /// When it is back and why it is out (`Unauthorized`: retired), counting a member at the
    /// end of the requests the provider said it had left as rate limited until their reset.
    pub(crate) fn out_or_spent(&self, now: Tick) -> Option<(Tick, ErrorKind)> {
        let spent = (self.remaining(now) == 0).then(|| {
            let until = Tick(self.remaining_until.load(Ordering::Relaxed));
            (until, ErrorKind::RateLimited)
        });
        match (self.out(), spent) {
            (Some(out), Some(spent)) => Some(out.max(spent)),
            (out, spent) => out.or(spent),
        }
    }

    /// Claims a chosen member: a member coming back takes one probe at a time.
    #[inline]
    pub(crate) fn claim(&self, now: Tick, probe_hold: Duration) -> bool {
        let until = self.out_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        until <= now.0
            && self
                .out_until
                .compare_exchange(
                    until,
                    Clock::after(now, probe_hold).0,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// When it is back and why it is out, if it is (`Unauthorized`: retired).
    pub(crate) fn out(&self) -> Option<(Tick, ErrorKind)> {
        let until = self.out_until.load(Ordering::Relaxed);
        (until != 0).then(|| {
            let kind = code_kind(self.out_kind.load(Ordering::Relaxed)).unwrap_or(ErrorKind::Other);
            (Tick(until), kind)
        })
    }

    /// Its headroom at `now`: the provider's last word, or `UNKNOWN` once its window reset.
    #[inline]
    pub(crate) fn remaining(&self, now: Tick) -> u64 {
        let remaining = self.remaining.load(Ordering::Relaxed);
        if remaining != UNKNOWN && self.remaining_until.load(Ordering::Relaxed) <= now.0 {
            return UNKNOWN;
        }
        remaining
    }

    /// A request leaves for it.
    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                (left != UNKNOWN && left != 0).then(|| left - 1)
            });
    }

    #[inline]
    pub(crate) fn ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Its peak-EWMA latency at `now`, in nanoseconds: decayed towards zero since it was
    /// made, so that a member that was slow once is tried again after a while without
    /// answers, as `tower::load::PeakEwma` does.
    pub(crate) fn latency(&self, now: Tick, decay: Duration) -> f64 {
        let (estimate, at) = self.ewma.read();
        estimate * kept_share(at, now, decay)
    }

    fn observe_latency(&self, rtt: Duration, now: Tick, decay: Duration) {
        let (estimate, at) = self.ewma.read();
        let rtt = rtt.as_nanos() as f64;
        let estimate = if rtt > estimate {
            // The peak: a slow answer counts in full at once.
            rtt
        } else {
            let kept = kept_share(at, now, decay);
            estimate * kept + rtt * (1.0 - kept)
        };
        self.ewma
            .estimate_ns
            .store(estimate.to_bits(), Ordering::Relaxed);
        self.ewma.at.store(now.0, Ordering::Relaxed);
    }

    /// Settles a call that took `rtt` and ended with `outcome`.
    pub(crate) fn settle(
        &self,
        outcome: &Outcome,
        rtt: Duration,
        now: Tick,
        config: &PoolConfig,
    ) -> Verdict {
        let Some(kind) = outcome.kind() else {
            self.served.fetch_add(1, Ordering::Relaxed);
            self.observe_latency(rtt, now, config.latency_decay);
            let was_out = self.back();
            self.note_headroom(outcome, now);
            return if was_out {
                Verdict::Back
            } else {
                Verdict::Fine
            };
        };
        let rate_limit = outcome.rate_limit();
        let reset = || {
            outcome
                .retry_after()
                .or(rate_limit.reset_requests.max(rate_limit.reset_tokens))
        };
        let out_for = match kind {
            ErrorKind::Unauthorized => Some(config.retire_for),
            ErrorKind::QuotaExceeded => Some(reset().unwrap_or(config.quota_cool_down)),
            ErrorKind::RateLimited => Some(reset().unwrap_or(config.cool_down)),
            // The member's own limiter turned the call away: out until it says.
            ErrorKind::LocalRateLimited => Some(outcome.retry_after().unwrap_or(config.cool_down)),
            // NOTE: its breaker may be one model's (the gateway's default): the member stays
            // in rotation for the others, and the breaker refuses this model's calls at once.
            ErrorKind::CircuitOpen => return Verdict::Failed,
            _ => None,
        };
        if let Some(delay) = out_for {
            self.failed.fetch_add(1, Ordering::Relaxed);
            self.put_out(kind, Clock::after(now, delay.max(Duration::from_nanos(1))));
            if kind == ErrorKind::RateLimited {
                self.remaining.store(0, Ordering::Relaxed);
                self.remaining_until
                    .store(Clock::after(now, delay).0, Ordering::Relaxed);
            }
            return Verdict::Out {
                kind,
                duration: delay,
            };
        }
        match kind {
            ErrorKind::Overloaded
            | ErrorKind::ServerError
            | ErrorKind::Timeout
            | ErrorKind::Network
            | ErrorKind::StreamInterrupted => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.observe_latency(rtt, now, config.latency_decay);
                Verdict::Failed
            }
            ErrorKind::ModelNotFound | ErrorKind::Other => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Verdict::Failed
            }
            // The request's own fault, or a caller gone: nothing about the member.
            _ => Verdict::Fine,
        }
    }

    /// Back in rotation: an answer came, or an operator said so. Whether it was out.
    pub(crate) fn back(&self) -> bool {
        if self.out_until.load(Ordering::Relaxed) == 0 {
            return false;
        }
        self.out_until.store(0, Ordering::Release);
        self.out_kind.store(0, Ordering::Relaxed);
        true
    }

    /// Out of rotation until `until` because of `kind` (`Unauthorized`: retired).
    pub(crate) fn put_out(&self, kind: ErrorKind, until: Tick) {
        self.out_kind.store(kind_code(kind), Ordering::Relaxed);
        self.out_until.store(until.0, Ordering::Release);
    }

    /// Takes on what another instance found: out until `until` because of the kind coded
    /// `code`, unless it is out longer here.
    #[cfg(feature = "redis")]
    pub(crate) fn take_on(&self, code: u8, until: Tick) {
        let Some(kind) = code_kind(code) else { return };
        let current = self.out_until.load(Ordering::Relaxed);
        if current < until.0 {
            self.put_out(kind, until);
        }
    }

    fn note_headroom(&self, outcome: &Outcome, now: Tick) {
        let info = outcome.rate_limit();
        if let Some(left) = info.remaining_requests {
            let reset = info.reset_requests.unwrap_or(Duration::from_secs(60));
            self.remaining
                .store(left.min(UNKNOWN - 1), Ordering::Relaxed);
            self.remaining_until
                .store(Clock::after(now, reset).0, Ordering::Relaxed);
        }
    }
}

/// The share of an estimate made `at` kept at `now`.
fn kept_share(at: Tick, now: Tick, decay: Duration) -> f64 {
    let elapsed = now.0.saturating_sub(at.0) as f64;
    (-elapsed / decay.as_nanos() as f64).exp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use llm_core::RateLimitInfo;

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_member_is_out_until_its_reset_then_takes_one_probe() {
        let clock = Clock::new();
        let health = MemberHealth::new(Duration::from_secs(1));
        let config = PoolConfig::default();
        let verdict = health.settle(
            &Outcome::failure(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(7)),
            Duration::from_millis(5),
            clock.now(),
            &config,
        );
        assert!(matches!(
            verdict,
            Verdict::Out {
                kind: ErrorKind::RateLimited,
                ..
            }
        ));
        assert!(!health.available(clock.now()));
        tokio::time::advance(Duration::from_secs(7)).await;
        assert!(health.available(clock.now()));
        assert!(health.claim(clock.now(), config.probe_hold));
        // The probe holds the member for the others.
        assert!(!health.available(clock.now()));
        assert!(!health.claim(clock.now(), config.probe_hold));
        health.settle(
            &Outcome::success(),
            Duration::from_millis(5),
            clock.now(),
            &config,
        );
        assert!(health.available(clock.now()));
        assert!(health.out().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn headroom_counts_down_from_the_providers_word_and_expires_at_its_reset() {
        let clock = Clock::new();
        let health = MemberHealth::new(Duration::from_secs(1));
        let config = PoolConfig::default();
        assert_eq!(health.remaining(clock.now()), UNKNOWN);
        let info = RateLimitInfo {
            remaining_requests: Some(3),
            reset_requests: Some(Duration::from_secs(10)),
            ..RateLimitInfo::new()
        };
        health.settle(
            &Outcome::success().with_rate_limit(info),
            Duration::from_millis(5),
            clock.now(),
            &config,
        );
        assert_eq!(health.remaining(clock.now()), 3);
        health.started();
        health.started();
        assert_eq!(health.remaining(clock.now()), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(health.remaining(clock.now()), UNKNOWN);
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_takes_a_slow_answer_at_once_and_forgets_it_gradually() {
        let clock = Clock::new();
        let health = MemberHealth::new(Duration::from_millis(10));
        let decay = Duration::from_secs(10);
        health.observe_latency(Duration::from_millis(100), clock.now(), decay);
        assert_eq!(health.latency(clock.now(), decay), 100e6);
        tokio::time::advance(Duration::from_secs(10)).await;
        // Idle, it decays towards zero as a pick reads it.
        let idle = health.latency(clock.now(), decay);
        assert!((idle / 1e6 - 36.8).abs() < 0.5, "{idle}");
        health.observe_latency(Duration::from_millis(10), clock.now(), decay);
        let after = health.latency(clock.now(), decay);
        // e^-1 of the old estimate kept: 100 * 0.368 + 10 * 0.632 ≈ 43 ms.
        assert!((after / 1e6 - 43.1).abs() < 0.5, "{after}");
    }
}
