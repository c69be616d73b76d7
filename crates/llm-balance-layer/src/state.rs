//! [`PoolState`]: what every clone of a pool shares besides the services — the members'
//! names, weights, tiers and health — and the pick.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llm_core::ErrorKind;
use tokio::time::Instant;

use crate::config::PoolConfig;
use crate::health::{Clock, MemberHealth, Tick};
use crate::member::Headroom;
use crate::metrics::Meters;
use crate::strategy;

/// A member's description and health.
pub(crate) struct PoolMember {
    pub(crate) name: Arc<str>,
    pub(crate) weight: u32,
    pub(crate) tier: u32,
    /// Its name hashed once, for sticky picks.
    pub(crate) hash: u64,
    pub(crate) headroom: Option<Headroom>,
    pub(crate) health: MemberHealth,
    pub(crate) meters: Meters,
}

/// The pool's shared state; members are sorted by tier.
pub(crate) struct PoolState {
    pub(crate) name: Arc<str>,
    pub(crate) members: Vec<PoolMember>,
    /// Each tier's members, in tier order.
    pub(crate) tiers: Vec<Range<usize>>,
    pub(crate) config: PoolConfig,
    pub(crate) clock: Clock,
    /// Where the scans of the tie-breaking strategies start, in turn.
    pub(crate) turn: AtomicUsize,
    /// Where members going out or back are shared with other instances.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<crate::shared::SharedLink>,
}

/// Why no member was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPick {
    /// Every member was tried for this request already.
    AllTried,
    /// The members not tried are out: the one back soonest is out for `kind`, back in
    /// `retry_in`.
    Out { kind: ErrorKind, retry_in: Duration },
}

impl PoolState {
    /// Picks a member for a request that already tried the members in `tried`, sticky to
    /// `sticky` (a request key's hash) when given, and counts the request as started on it.
    pub(crate) fn pick(
        &self,
        tried: u64,
        sticky: Option<u64>,
        at: Instant,
    ) -> Result<usize, NoPick> {
        let now = self.clock.tick(at);
        let mut skip = tried;
        for range in &self.tiers {
            loop {
                let sticky_member = sticky
                    .map(|key| strategy::rendezvous(self, range.clone(), key))
                    .filter(|&i| self.can_take(i, skip, now));
                let choice =
                    sticky_member.or_else(|| strategy::pick(self, range.clone(), skip, (now, at)));
                let Some(i) = choice else { break };
                let health = &self.members[i].health;
                if health.claim(now, self.config.probe_hold) {
                    health.started();
                    self.members[i].meters.picked();
                    return Ok(i);
                }
                // Another request is probing it.
                skip |= 1 << i;
            }
        }
        self.no_pick(tried, now)
    }

    #[inline]
    pub(crate) fn can_take(&self, i: usize, skip: u64, now: Tick) -> bool {
        skip & (1 << i) == 0 && self.members[i].health.available(now)
    }

    fn no_pick(&self, tried: u64, now: Tick) -> Result<usize, NoPick> {
        let soonest = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| tried & (1 << i) == 0)
            .filter_map(|(_, m)| m.health.out_or_spent(now))
            .min_by_key(|(until, _, _)| *until);
        Err(match soonest {
            Some((until, kind, _)) => NoPick::Out {
                kind,
                retry_in: Duration::from_nanos(until.0.saturating_sub(now.0)),
            },
            None => NoPick::AllTried,
        })
    }

    /// Members other than those in `tried` that a pick could choose at `at`.
    pub(crate) fn others_available(&self, tried: u64, at: Instant) -> bool {
        let now = self.clock.tick(at);
        (0..self.members.len()).any(|i| self.can_take(i, tried, now))
    }

    pub(crate) fn latency(&self, i: usize, at: Instant) -> f64 {
        self.members[i]
            .health
            .latency(at, self.config.latency_decay)
    }

    /// Tells the other instances that member `i` is out for `duration` because of `kind`.
    pub(crate) fn share_out(&self, i: usize, kind: ErrorKind, duration: Duration) {
        self.members[i].meters.went_out(kind);
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            shared.out(&self.members[i].name, duration, kind);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (i, kind, duration);
    }

    /// Tells the other instances that member `i` is back (an operator said so).
    pub(crate) fn share_back(&self, i: usize) {
        self.members[i].meters.came_back();
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            shared.back(&self.members[i].name);
        }
        #[cfg(not(feature = "redis"))]
        let _ = i;
    }

    pub(crate) fn next_turn(&self) -> usize {
        self.turn.fetch_add(1, Ordering::Relaxed)
    }
}
