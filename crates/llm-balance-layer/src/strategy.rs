//! The picks: each strategy over one tier's available members, and the sticky pick
//! (rendezvous hashing). One scan of the tier, no allocation.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use llm_core::ErrorKind;

use crate::config::Strategy;
use crate::health::{Tick, UNKNOWN};
use crate::state::PoolState;

/// Why no member was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPick {
    /// Every member was tried for this request already.
    AllTried,
    /// The members not tried are out: the one back soonest is out for `kind`, back in
    /// `retry_in`.
    Out { kind: ErrorKind, retry_in: Duration },
}

/// Picks a member for a request that already tried the members in `tried`, sticky to
/// `sticky` (a request key's hash) when given, and counts the request as started on it.
pub(crate) fn pick_member(
    state: &PoolState,
    tried: u64,
    sticky: Option<u64>,
    at: Instant,
) -> Result<usize, NoPick> {
    let now = state.clock.tick(at);
    let mut skip = tried;
    for range in &state.tiers {
        loop {
            let sticky_member = sticky
                .map(|key| rendezvous(state, range.clone(), key))
                .filter(|&i| state.can_take(i, skip, now));
            let choice = sticky_member.or_else(|| pick(state, range.clone(), skip, now));
            let Some(i) = choice else { break };
            let health = &state.members[i].health;
            if health.claim(now, state.config.probe_hold) {
                health.started();
                state.members[i].meters.picked();
                return Ok(i);
            }
            // Another request is probing it.
            skip |= 1 << i;
        }
    }
    no_pick(state, tried, now)
}

fn no_pick(state: &PoolState, tried: u64, now: Tick) -> Result<usize, NoPick> {
    let soonest = state
        .members
        .iter()
        .enumerate()
        .filter(|(i, _)| tried & (1 << i) == 0)
        .filter_map(|(_, m)| m.health.out_or_spent(now))
        .min_by_key(|(until, _)| *until);
    Err(match soonest {
        Some((until, kind)) => NoPick::Out {
            kind,
            retry_in: Duration::from_nanos(until.0.saturating_sub(now.0)),
        },
        None => NoPick::AllTried,
    })
}

/// The member `strategy` picks among `range`'s members not in `skip` and available at `now`.
pub(crate) fn pick(state: &PoolState, range: Range<usize>, skip: u64, now: Tick) -> Option<usize> {
    match state.config.strategy {
        Strategy::Weighted => weighted(state, range, skip, now),
        Strategy::LeastInFlight => least_loaded(state, range, skip, now, |_, _| 0),
        Strategy::QuotaAware => {
            // Most headroom first: its negation is the load compared first.
            least_loaded(state, range, skip, now, |state, i| {
                u64::MAX - headroom(state, i, now)
            })
        }
        Strategy::PeakEwma => peak_ewma(state, range, skip, now),
    }
}

/// A member's headroom: the lower of the provider's word and its own limiter's level.
fn headroom(state: &PoolState, i: usize, now: Tick) -> u64 {
    let member = &state.members[i];
    let said = member.health.remaining(now);
    let own = member
        .headroom
        .as_ref()
        .and_then(|read| read())
        .unwrap_or(UNKNOWN);
    said.min(own)
}

fn weighted(state: &PoolState, range: Range<usize>, skip: u64, now: Tick) -> Option<usize> {
    let total: u64 = range
        .clone()
        .filter(|&i| state.can_take(i, skip, now))
        .map(|i| u64::from(state.members[i].weight))
        .sum();
    if total == 0 {
        return None;
    }
    let mut point = fastrand::u64(0..total);
    for i in range {
        if !state.can_take(i, skip, now) {
            continue;
        }
        let weight = u64::from(state.members[i].weight);
        if point < weight {
            return Some(i);
        }
        point -= weight;
    }
    None
}

/// The member with the lowest `first` key, then the fewest in flight per weight; the scan
/// starts at the next turn, so that ties go round.
fn least_loaded(
    state: &PoolState,
    range: Range<usize>,
    skip: u64,
    now: Tick,
    first: impl Fn(&PoolState, usize) -> u64,
) -> Option<usize> {
    let len = range.len();
    if len == 0 {
        return None;
    }
    let start = if len > 1 { state.next_turn() % len } else { 0 };
    let mut best: Option<(usize, u64, u64, u64)> = None;
    for step in 0..len {
        let i = range.start + (start + step) % len;
        if !state.can_take(i, skip, now) {
            continue;
        }
        let member = &state.members[i];
        let key = first(state, i);
        let in_flight = u64::from(member.health.in_flight.load(Ordering::Relaxed));
        let weight = u64::from(member.weight);
        let better = match best {
            None => true,
            // in_flight / weight < best_in_flight / best_weight, without dividing.
            Some((_, best_key, best_in_flight, best_weight)) => {
                key < best_key
                    || (key == best_key && in_flight * best_weight < best_in_flight * weight)
            }
        };
        if better {
            best = Some((i, key, in_flight, weight));
        }
    }
    best.map(|(i, ..)| i)
}

/// Power of two choices: two members at random, the one with the lower peak-EWMA latency
/// times requests in flight (plus one), per weight.
fn peak_ewma(state: &PoolState, range: Range<usize>, skip: u64, now: Tick) -> Option<usize> {
    let available = range
        .clone()
        .filter(|&i| state.can_take(i, skip, now))
        .count();
    let nth = |n: usize| {
        range
            .clone()
            .filter(|&i| state.can_take(i, skip, now))
            .nth(n)
    };
    match available {
        0 => None,
        1 => nth(0),
        _ => {
            let a = fastrand::usize(0..available);
            let mut b = fastrand::usize(0..available - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (nth(a)?, nth(b)?);
            let cost = |i: usize| {
                let member = &state.members[i];
                let pending = member.health.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
                state.latency(i, now) * pending / f64::from(member.weight)
            };
            Some(if cost(b) < cost(a) { b } else { a })
        }
    }
}

/// The member a request key belongs to among `range` (weighted rendezvous hashing): the
/// same key finds the same member while the tier's members stay the same, and a member
/// added or removed moves only its share of keys.
pub(crate) fn rendezvous(state: &PoolState, range: Range<usize>, key: u64) -> usize {
    let mut best = (range.start, f64::MIN);
    for i in range {
        let member = &state.members[i];
        // A uniform number in (0, 1) from the key and the member, then the weighted score
        // -weight / ln(u): the highest wins.
        let mixed = mix(key ^ member.hash);
        let u = ((mixed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(member.weight) / u.ln();
        if score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// SplitMix64's finaliser: spreads a key's bits over the whole word.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
