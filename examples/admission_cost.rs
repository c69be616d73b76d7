//! Runs N rate-limit admissions of one contender, for counting instructions under callgrind
//! (wall-clock nanoseconds on a shared VM move by 30 %; instruction counts do not).
//!
//! `cargo build --release --features fast-clock --example admission_cost`, then
//! `bash benches/instructions.sh` runs each contender under callgrind at N and at 0 and
//! prints instructions per admission.
//!
//! Usage: `admission_cost <contender> <N>`, contenders `llm-tower-fixed` / `governor-fixed`
//! (both on a clock that never moves: the admission alone, deterministic), and
//! `llm-tower-tokio`, `llm-tower-quanta`, `governor` (with their real clocks; quanta's
//! fallback under valgrind varies between runs, so those counts do too).

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::{Quota, RateLimiter};
use llm_tower::ratelimit::{
    Clock, Mode, QuantaClock, Rate, RateLimitConfig, RateLimitLayer, RateLimitStore, TokioClock,
};

/// A clock that never moves: what is left to count is the admission itself.
struct Fixed;

impl Clock for Fixed {
    fn now_ns(&self) -> u64 {
        black_box(1_000)
    }
}

/// `n` admissions through the in-process store reading `clock`.
fn admit(config: RateLimitConfig, clock: impl Clock, n: u64) {
    let layer = RateLimitLayer::builder()
        .config(config)
        .clock(clock)
        .build()
        .expect("valid limits");
    for _ in 0..n {
        black_box(RateLimitStore::<()>::acquire(
            layer.store(),
            &(),
            0,
            Duration::ZERO,
        ));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let contender = args
        .next()
        .expect("a contender: llm-tower-quanta, llm-tower-tokio or governor");
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number of admissions");
    let config = RateLimitConfig {
        requests: Some(Rate {
            limit: u64::from(u32::MAX),
            per: Duration::from_secs(10),
            burst: None,
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _guard = runtime.enter();
    match contender.as_str() {
        "llm-tower-quanta" => admit(config, QuantaClock::new(), n),
        "llm-tower-tokio" => admit(config, TokioClock::new(), n),
        "llm-tower-fixed" => admit(config, Fixed, n),
        "governor-fixed" => {
            let clock = governor::clock::FakeRelativeClock::default();
            // 1e9 per second: each admission moves the TAT by 1 ns, far inside the burst.
            let quota = Quota::per_second(NonZeroU32::new(1_000_000_000).expect("non-zero"));
            let limiter = RateLimiter::direct_with_clock(quota, clock);
            for _ in 0..n {
                let _ = black_box(limiter.check());
            }
        }
        "governor" => {
            let limiter = RateLimiter::direct(Quota::per_second(
                NonZeroU32::new(u32::MAX).expect("non-zero"),
            ));
            for _ in 0..n {
                let _ = black_box(limiter.check());
            }
        }
        other => panic!("unknown contender {other}"),
    }
}
