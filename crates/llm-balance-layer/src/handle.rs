//! [`PoolHandle`]: reads the members' health (for `/health`, a status page) and puts a
//! member back in or out of rotation.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use llm_core::ErrorKind;

use crate::health::{Clock, UNKNOWN};
use crate::state::PoolState;

/// Reads and controls a pool's members; cheap to clone, shared with the pool.
#[derive(Clone)]
pub struct PoolHandle {
    pub(crate) state: Arc<PoolState>,
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("name", &self.state.name)
            .finish_non_exhaustive()
    }
}

/// Where a member stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// In rotation.
    Available,
    /// Its key was refused (401, 403), or an operator retired it: out until `back_in`,
    /// then probed by one request.
    Retired {
        /// Time until the probe.
        back_in: Duration,
    },
    /// Out for `reason` (rate limited, out of quota, its limiter full)
    /// until `back_in`, then probed by one request.
    CoolingDown {
        /// Why.
        reason: ErrorKind,
        /// Time until the probe.
        back_in: Duration,
    },
    /// Its time out has passed: the next request picked for it probes it.
    Probing,
}

impl MemberState {
    /// A short name: `available`, `retired`, `cooling_down`, `probing`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MemberState::Available => "available",
            MemberState::Retired { .. } => "retired",
            MemberState::CoolingDown { .. } => "cooling_down",
            MemberState::Probing => "probing",
        }
    }
}

/// A member as the pool sees it now.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct MemberStatus {
    /// Its name.
    pub name: Arc<str>,
    /// Its tier.
    pub tier: u32,
    /// Its weight.
    pub weight: u32,
    /// Where it stands.
    pub state: MemberState,
    /// Requests in flight to it.
    pub in_flight: u32,
    /// Its peak-EWMA latency.
    pub latency: Duration,
    /// Requests left by the provider's last word, less those sent since (`None`: unknown).
    pub remaining_requests: Option<u64>,
    /// Calls it answered.
    pub served: u64,
    /// Calls it failed.
    pub failed: u64,
}

impl PoolHandle {
    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// Every member, by tier then in the order given.
    pub fn members(&self) -> Vec<MemberStatus> {
        let now = self.state.clock.now();
        self.state
            .members
            .iter()
            .enumerate()
            .map(|(i, member)| {
                let health = &member.health;
                let state = match health.out_or_spent(now) {
                    None => MemberState::Available,
                    Some((until, _)) if until <= now => MemberState::Probing,
                    Some((until, kind)) => {
                        let back_in = Duration::from_nanos(until.0 - now.0);
                        if kind == ErrorKind::Unauthorized {
                            MemberState::Retired { back_in }
                        } else {
                            MemberState::CoolingDown {
                                reason: kind,
                                back_in,
                            }
                        }
                    }
                };
                let remaining = health.remaining(now);
                MemberStatus {
                    name: member.name.clone(),
                    tier: member.tier,
                    weight: member.weight,
                    state,
                    in_flight: health.in_flight.load(Ordering::Relaxed),
                    latency: Duration::from_nanos(self.state.latency(i, now) as u64),
                    remaining_requests: (remaining != UNKNOWN).then_some(remaining),
                    served: health.served.load(Ordering::Relaxed),
                    failed: health.failed.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// How many members are in rotation or coming back (not retired or cooling down).
    pub fn available(&self) -> usize {
        self.members()
            .iter()
            .filter(|m| matches!(m.state, MemberState::Available | MemberState::Probing))
            .count()
    }

    /// Puts `member` back in rotation (its key was replaced, its quota raised); `false`
    /// when the pool has no such member.
    pub fn restore(&self, member: &str) -> bool {
        let Some(i) = self.find(member) else {
            return false;
        };
        self.state.members[i].health.back();
        self.state.member_back(i);
        true
    }

    /// Takes `member` out of rotation for `duration` (then one request probes it); `false`
    /// when the pool has no such member.
    pub fn retire(&self, member: &str, duration: Duration) -> bool {
        let duration = duration.max(Duration::from_nanos(1));
        let Some(i) = self.find(member) else {
            return false;
        };
        let until = Clock::after(self.state.clock.now(), duration);
        self.state.members[i]
            .health
            .put_out(ErrorKind::Unauthorized, until);
        self.state.member_out(i, ErrorKind::Unauthorized, duration);
        true
    }

    fn find(&self, member: &str) -> Option<usize> {
        self.state.members.iter().position(|m| &*m.name == member)
    }
}
