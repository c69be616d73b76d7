//! What the benches (and `examples/hop_cost.rs`) share: one call through a service, a limit
//! no loop reaches, a loop run by both cores at once, and tower's retry policy doing our
//! retry layer's work on success.
#![allow(dead_code, unreachable_pub)]

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant as StdInstant};

use criterion::Bencher;
use llm_tower::LlmError;
use llm_tower::ratelimit::{Mode, Rate, RateLimitConfig};
use tower::Service;

/// One call: readiness, the call, and its future polled once (every contender's success
/// path completes on the first poll; anything else is a broken bench).
pub fn hop<S: Service<u32, Response = ()>>(svc: &mut S, cx: &mut Context<'_>)
where
    S::Error: std::fmt::Debug,
{
    assert!(
        matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))),
        "always ready"
    );
    let fut = pin!(svc.call(black_box(7)));
    match Future::poll(fut, cx) {
        Poll::Ready(Ok(response)) => black_box(response),
        _ => panic!("the success path completes on the first poll"),
    }
}

/// A current-thread runtime with a clock, whose context the hops run in (futures on the
/// success path register no timer, but nothing may panic for the lack of one).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

/// A requests limit far above what a benchmark loop reaches (1e9 per 10 s, each admission
/// moving the TAT by 10 ns inside a burst of 1e9): every check is an admission.
pub fn unlimited() -> RateLimitConfig {
    RateLimitConfig {
        requests: Some(Rate {
            limit: 1_000_000_000,
            per: Duration::from_secs(10),
            burst: None,
        }),
        mode: Mode::Reject,
        ..RateLimitConfig::default()
    }
}

/// Runs `admit` from `threads` threads at once, reporting the time per admission.
pub fn contended(b: &mut Bencher<'_>, threads: usize, admit: impl Fn() + Sync) {
    b.iter_custom(|iters| {
        let per_thread = iters.div_ceil(threads as u64);
        let start = StdInstant::now();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| (0..per_thread).for_each(|_| admit()));
            }
        });
        start.elapsed() / threads as u32
    });
}

/// tower's own retry, configured to do the same work on success: copy the request, call,
/// look at the result, return it.
#[derive(Clone, Copy)]
pub struct RetryErrors {
    pub left: u32,
}
impl tower::retry::Policy<u32, (), LlmError> for RetryErrors {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut u32, result: &mut Result<(), LlmError>) -> Option<Self::Future> {
        match result {
            Ok(_) => None,
            Err(err) if err.kind().is_retryable() && self.left > 0 => {
                self.left -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &u32) -> Option<u32> {
        Some(*req)
    }
}
