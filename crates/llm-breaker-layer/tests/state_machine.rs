//! The pure state machine, stepped with explicit instants; state and metrics checked after
//! each step.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_breaker_layer::{BreakerConfig, CallResult, CircuitBreaker, State, WindowConfig};
use proptest::prelude::*;
use tokio::time::Instant;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

/// Standard settings without jitter, so open durations are exact.
fn config() -> BreakerConfig {
    BreakerConfig {
        open_jitter: 0.0,
        ..BreakerConfig::standard()
    }
}

fn call(b: &CircuitBreaker, at: Instant, result: CallResult) {
    let permit = b.try_acquire(at).expect("the breaker admits the call");
    b.record(permit, result, at);
}

#[test]
fn consecutive_failures_trip_and_a_success_resets_the_count() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(
        BreakerConfig {
            consecutive_failures: Some(3),
            failure_rate: None,
            ..config()
        },
        t0,
    )
    .unwrap();
    call(&b, t0, CallResult::Failure);
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.metrics(t0).consecutive_failures, 2);
    call(&b, t0, CallResult::Success);
    assert_eq!(b.metrics(t0).consecutive_failures, 0);
    call(&b, t0, CallResult::Failure);
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Closed);
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Open);
    let m = b.metrics(t0);
    assert_eq!((m.trips, m.retry_in), (1, Some(S(30))));
}

#[test]
fn failure_rate_waits_for_the_minimum_calls() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 6,
        ..config()
    };
    let b = CircuitBreaker::new(cfg, t0).unwrap();
    // F S F S F: 60 % failures but only five calls.
    for result in [
        CallResult::Failure,
        CallResult::Success,
        CallResult::Failure,
        CallResult::Success,
        CallResult::Failure,
    ] {
        call(&b, t0, result);
    }
    let m = b.metrics(t0);
    assert_eq!((m.state, m.calls, m.failures), (State::Closed, 5, 3));
    assert!((m.failure_rate - 0.6).abs() < 1e-9);
    // A sixth call, a success: 3/6 = 50 %, but a success never trips.
    call(&b, t0, CallResult::Success);
    assert_eq!(b.state(t0), State::Closed);
    // A seventh, a failure: 4/7 ≥ 50 % with the minimum reached.
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Open);
}

#[test]
fn count_window_forgets_calls_older_than_its_size() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        window: WindowConfig::Count { size: 4 },
        minimum_calls: 4,
        ..config()
    };
    let b = CircuitBreaker::new(cfg, t0).unwrap();
    call(&b, t0, CallResult::Failure);
    for _ in 0..4 {
        call(&b, t0, CallResult::Success);
    }
    let m = b.metrics(t0);
    assert_eq!((m.calls, m.failures), (4, 0), "the failure left the window");
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Closed, "1 of 4");
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Open, "2 of 4");
}

#[test]
fn time_window_rates_cover_only_the_recent_past() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(0.5),
        window: WindowConfig::Time {
            length: S(10),
            buckets: 10,
        },
        minimum_calls: 4,
        ..config()
    };
    let b = CircuitBreaker::new(cfg, t0).unwrap();
    for i in 0..3 {
        call(&b, t0 + S(i), CallResult::Failure);
    }
    assert_eq!(b.metrics(t0 + S(2)).failures, 3);
    // Twelve seconds on, those failures have left the window.
    let later = t0 + S(12);
    assert_eq!(b.metrics(later).calls, 0);
    call(&b, later, CallResult::Success);
    call(&b, later, CallResult::Success);
    call(&b, later, CallResult::Failure);
    assert_eq!(b.state(later), State::Closed, "1 failure in 3 calls");
    call(&b, later + MS(500), CallResult::Failure);
    assert_eq!(b.state(later + MS(500)), State::Open, "2 of 4");
}

#[test]
fn a_high_slow_call_rate_trips_though_every_call_succeeds() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: None,
        failure_rate: None,
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 4,
        slow_call_duration: Some(S(5)),
        slow_call_rate: 0.5,
        ..config()
    };
    let b = CircuitBreaker::new(cfg, t0).unwrap();
    let mut now = t0;
    for (duration, state) in [
        (S(1), State::Closed),
        (S(6), State::Closed),
        (S(1), State::Closed),
        (S(7), State::Open),
    ] {
        let permit = b.try_acquire(now).unwrap();
        now += duration;
        b.record(permit, CallResult::Success, now);
        assert_eq!(b.state(now), state);
    }
    assert_eq!(b.metrics(now).calls, 0, "opening clears the window");
}

#[test]
fn ignored_results_count_neither_way() {
    let t0 = Instant::now();
    let b = CircuitBreaker::new(
        BreakerConfig {
            consecutive_failures: Some(2),
            ..config()
        },
        t0,
    )
    .unwrap();
    call(&b, t0, CallResult::Failure);
    for _ in 0..10 {
        call(&b, t0, CallResult::Ignored);
    }
    let m = b.metrics(t0);
    assert_eq!((m.calls, m.consecutive_failures), (1, 1));
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Open);
}

/// A breaker that opens on the first failure, with hooks recording transitions.
fn tripping(cfg: BreakerConfig, t0: Instant) -> CircuitBreaker {
    CircuitBreaker::new(
        BreakerConfig {
            consecutive_failures: Some(1),
            ..cfg
        },
        t0,
    )
    .unwrap()
}

#[test]
fn open_rejects_with_the_time_until_a_probe() {
    let t0 = Instant::now();
    let b = tripping(config(), t0);
    call(&b, t0, CallResult::Failure);
    let err = b.try_acquire(t0 + S(12)).unwrap_err();
    assert_eq!(err.retry_in(), S(18));
    assert_eq!(b.metrics(t0 + S(12)).rejected, 1);
    assert_eq!(b.state(t0 + S(29)), State::Open);
    assert_eq!(
        b.state(t0 + S(30)),
        State::HalfOpen,
        "the next call is a probe"
    );
}

#[test]
fn half_open_admits_only_the_configured_probes() {
    let t0 = Instant::now();
    let b = tripping(
        BreakerConfig {
            half_open_probes: 2,
            success_threshold: 2,
            ..config()
        },
        t0,
    );
    call(&b, t0, CallResult::Failure);
    let t1 = t0 + S(30);
    let p1 = b.try_acquire(t1).unwrap();
    let p2 = b.try_acquire(t1).unwrap();
    assert!(p1.is_probe() && p2.is_probe());
    assert_eq!(b.try_acquire(t1).unwrap_err().retry_in(), Duration::ZERO);
    assert_eq!(b.metrics(t1).probes_in_flight, 2);
    b.record(p1, CallResult::Success, t1);
    assert_eq!(b.state(t1), State::HalfOpen, "one success of two");
    let p3 = b.try_acquire(t1).unwrap();
    b.record(p2, CallResult::Success, t1);
    assert_eq!(b.state(t1), State::Closed);
    // p3 belongs to the finished episode: its result changes nothing.
    b.record(p3, CallResult::Failure, t1);
    assert_eq!(b.state(t1), State::Closed);
    assert_eq!(b.metrics(t1).calls, 0);
}

#[test]
fn a_failed_probe_reopens_for_longer_up_to_the_cap() {
    let t0 = Instant::now();
    let b = tripping(
        BreakerConfig {
            open_duration: S(10),
            open_multiplier: 3.0,
            max_open_duration: S(60),
            ..config()
        },
        t0,
    );
    call(&b, t0, CallResult::Failure);
    let mut now = t0;
    for expected in [S(30), S(60), S(60)] {
        now += b.metrics(now).retry_in.unwrap();
        let probe = b.try_acquire(now).unwrap();
        b.record(probe, CallResult::Failure, now);
        assert_eq!(b.metrics(now).retry_in, Some(expected));
    }
    // A recovery resets the growth.
    now += S(60);
    let probe = b.try_acquire(now).unwrap();
    b.record(probe, CallResult::Success, now);
    call(&b, now, CallResult::Failure);
    assert_eq!(b.metrics(now).retry_in, Some(S(10)));
    assert_eq!(b.metrics(now).trips, 5);
}

#[test]
fn open_jitter_only_shortens_within_its_share() {
    let t0 = Instant::now();
    for _ in 0..50 {
        let b = tripping(
            BreakerConfig {
                open_jitter: 0.2,
                ..BreakerConfig::standard()
            },
            t0,
        );
        call(&b, t0, CallResult::Failure);
        let open_for = b.metrics(t0).retry_in.unwrap();
        assert!(open_for <= S(30) && open_for >= S(24), "{open_for:?}");
    }
}

/// A probe from an earlier half-open episode may answer while a later episode is under way:
/// it must neither close the breaker nor free the new episode's slot.
#[test]
fn a_probe_from_an_earlier_episode_changes_nothing() {
    let t0 = Instant::now();
    let b = tripping(
        BreakerConfig {
            half_open_probes: 2,
            ..config()
        },
        t0,
    );
    call(&b, t0, CallResult::Failure);
    let t1 = t0 + S(30);
    let old = b.try_acquire(t1).unwrap();
    let failing = b.try_acquire(t1).unwrap();
    b.record(failing, CallResult::Failure, t1);
    let t2 = t1 + S(60);
    let current = b.try_acquire(t2).unwrap();
    assert_eq!(b.metrics(t2).probes_in_flight, 1);
    b.record(old, CallResult::Success, t2);
    assert_eq!(
        b.state(t2),
        State::HalfOpen,
        "the stale success did not close it"
    );
    assert_eq!(
        b.metrics(t2).probes_in_flight,
        1,
        "nor freed the current probe's slot"
    );
    b.record(current, CallResult::Success, t2);
    assert_eq!(b.state(t2), State::Closed);
}

#[test]
fn a_released_probe_frees_its_slot() {
    let t0 = Instant::now();
    let b = tripping(config(), t0);
    call(&b, t0, CallResult::Failure);
    let t1 = t0 + S(30);
    let probe = b.try_acquire(t1).unwrap();
    assert!(b.try_acquire(t1).is_err());
    b.release(probe);
    assert_eq!(b.metrics(t1).probes_in_flight, 0);
    let probe = b.try_acquire(t1).unwrap();
    b.record(probe, CallResult::Ignored, t1);
    assert_eq!(
        b.state(t1),
        State::HalfOpen,
        "an ignored probe decides nothing"
    );
}

#[test]
fn calls_admitted_before_a_trip_do_not_count_after_it() {
    let t0 = Instant::now();
    let b = tripping(config(), t0);
    let early = b.try_acquire(t0).unwrap();
    call(&b, t0, CallResult::Failure);
    b.record(early, CallResult::Failure, t0 + S(31));
    assert_eq!(b.metrics(t0 + S(1)).trips, 1);
}

#[test]
fn a_slow_probe_counts_as_a_failure() {
    let t0 = Instant::now();
    let b = tripping(
        BreakerConfig {
            slow_call_duration: Some(S(5)),
            slow_call_rate: 1.0,
            ..config()
        },
        t0,
    );
    call(&b, t0, CallResult::Failure);
    let t1 = t0 + S(30);
    let probe = b.try_acquire(t1).unwrap();
    b.record(probe, CallResult::Success, t1 + S(6));
    assert_eq!(b.state(t1 + S(6)), State::Open);
}

#[test]
fn manual_control_forces_and_resets() {
    let t0 = Instant::now();
    let b = tripping(config(), t0);
    b.force_open(t0);
    assert_eq!(b.state(t0), State::ForcedOpen);
    assert!(
        b.try_acquire(t0 + S(3600)).is_err(),
        "forced open does not time out"
    );
    b.force_closed(t0);
    assert_eq!(b.state(t0), State::Disabled);
    for _ in 0..10 {
        call(&b, t0, CallResult::Failure);
    }
    assert_eq!(
        (b.state(t0), b.metrics(t0).calls),
        (State::Disabled, 0),
        "nothing is counted"
    );
    b.reset(t0);
    assert_eq!(b.state(t0), State::Closed);
    call(&b, t0, CallResult::Failure);
    assert_eq!(b.state(t0), State::Open);
}

#[test]
fn metrics_report_time_in_state() {
    let t0 = Instant::now();
    let b = tripping(config(), t0);
    call(&b, t0 + S(5), CallResult::Failure);
    assert_eq!(b.metrics(t0 + S(8)).time_in_state, S(3));
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Acquire,
    Record(u8, CallResult),
    Release(u8),
    Advance(u16),
    ForceOpen,
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    let result = prop_oneof![
        Just(CallResult::Success),
        Just(CallResult::Failure),
        Just(CallResult::Ignored)
    ];
    prop_oneof![
        4 => Just(Op::Acquire),
        4 => (any::<u8>(), result).prop_map(|(i, r)| Op::Record(i, r)),
        1 => any::<u8>().prop_map(Op::Release),
        3 => (0u16..20_000).prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Reset),
    ]
}

/// Automatic transitions follow Closed → Open → HalfOpen → Closed | Open; manual control
/// (force open, force closed, reset to Closed) may come from anywhere.
fn legal(from: State, to: State) -> bool {
    use State::*;
    matches!(
        (from, to),
        (Closed | HalfOpen, Open) | (Open, HalfOpen) | (HalfOpen, Closed)
    ) || matches!(to, ForcedOpen | Disabled | Closed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Never more probes in flight than permitted; while open, nothing passes; every
    /// transition is a legal one.
    #[test]
    fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..200), probes in 1u32..4) {
        let t0 = Instant::now();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let log = changes.clone();
        let config = BreakerConfig {
            consecutive_failures: Some(3),
            half_open_probes: probes,
            success_threshold: 2,
            open_duration: S(5),
            ..BreakerConfig::standard()
        };
        let b = CircuitBreaker::observed(config, t0, move |c| log.lock().unwrap().push((c.from, c.to))).unwrap();
        let mut now = t0;
        let mut held = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    let before = b.state(now);
                    match b.try_acquire(now) {
                        Ok(permit) => {
                            prop_assert!(matches!(before, State::Closed | State::HalfOpen | State::Disabled), "admitted while {before}");
                            held.push(permit);
                        }
                        Err(err) => {
                            prop_assert!(!matches!(before, State::Closed | State::Disabled), "rejected while {before}");
                            if before == State::Open {
                                prop_assert!(err.retry_in() > Duration::ZERO);
                            }
                        }
                    }
                }
                Op::Record(i, result) if !held.is_empty() => {
                    let permit = held.swap_remove(usize::from(i) % held.len());
                    b.record(permit, result, now);
                }
                Op::Release(i) if !held.is_empty() => {
                    let permit = held.swap_remove(usize::from(i) % held.len());
                    b.release(permit);
                }
                Op::Advance(ms) => now += MS(u64::from(ms)),
                Op::ForceOpen => b.force_open(now),
                Op::Reset => b.reset(now),
                _ => {}
            }
            prop_assert!(b.metrics(now).probes_in_flight <= probes);
        }
        // The transitions the breaker made form one legal chain from Closed.
        let mut state = State::Closed;
        for &(from, to) in changes.lock().unwrap().iter() {
            prop_assert_eq!(from, state, "transitions chain");
            prop_assert!(legal(from, to), "{} → {} is not a legal transition", from, to);
            state = to;
        }
    }
}
