//! [`PoolState`]: what every clone of a pool shares besides the services — the members'
//! names, weights, tiers and health — and what a member going out or back tells.

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

/// The shared-state task reads the members' names and hands over what other instances
/// found.
#[cfg(feature = "redis")]
impl crate::shared::Members for PoolState {
    fn names(&self) -> Vec<Arc<str>> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    fn take_on(&self, member: usize, code: u8, left: Duration) {
        let until = Clock::after(self.clock.now(), left);
        if let Some(member) = self.members.get(member) {
            member.health.take_on(code, until);
        }
    }
}

impl PoolState {
    #[inline]
    pub(crate) fn can_take(&self, i: usize, skip: u64, now: Tick) -> bool {
        skip & (1 << i) == 0 && self.members[i].health.available(now)
    }

    /// Members other than those in `tried` that a pick could choose at `at`.
    pub(crate) fn others_available(&self, tried: u64, at: Instant) -> bool {
        let now = self.clock.tick(at);
        (0..self.members.len()).any(|i| self.can_take(i, tried, now))
    }

    pub(crate) fn latency(&self, i: usize, now: Tick) -> f64 {
        self.members[i]
            .health
            .latency(now, self.config.latency_decay)
    }

    /// Member `i` is out for `duration` because of `kind`: counted, and told to the other
    /// instances.
    pub(crate) fn member_out(&self, i: usize, kind: ErrorKind, duration: Duration) {
        self.members[i].meters.went_out(kind);
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.shared {
            shared.out(&self.members[i].name, duration, kind);
        }
        #[cfg(not(feature = "redis"))]
        let _ = (i, kind, duration);
    }

    /// Member `i` is back because an operator said so: counted, and told to the other
    /// instances.
    pub(crate) fn member_back(&self, i: usize) {
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
