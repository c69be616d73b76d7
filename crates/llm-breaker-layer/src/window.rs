//! The windows failure and slow-call rates are measured over.
//!
//! The count window is lock-free: a ring of per-call flags with running totals. While every
//! call in a full window succeeded, recording another success changes nothing observable,
//! so it only reads — on a healthy service no core writes to shared memory per call. The
//! time window needs the clock anyway and keeps its buckets under a mutex.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::WindowConfig;

pub(crate) const FAILED: u8 = 1;
pub(crate) const SLOW: u8 = 2;

/// Calls, failures and slow calls in a window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u32,
    pub(crate) failures: u32,
    pub(crate) slow: u32,
}

impl Tally {
    pub(crate) fn failure_rate(&self) -> f64 {
        rate(self.failures, self.calls)
    }

    pub(crate) fn slow_rate(&self) -> f64 {
        rate(self.slow, self.calls)
    }
}

fn rate(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

pub(crate) enum Window {
    Count(CountWindow),
    Time(Mutex<TimeWindow>),
}

impl Window {
    pub(crate) fn new(config: WindowConfig, now: Instant) -> Self {
        match config {
            WindowConfig::Count { size } => Window::Count(CountWindow::new(size)),
            WindowConfig::Time { length, buckets } => {
                Window::Time(Mutex::new(TimeWindow::new(length, buckets, now)))
            }
        }
    }

    pub(crate) fn needs_clock(&self) -> bool {
        matches!(self, Window::Time(_))
    }

    pub(crate) fn record(&self, flags: u8, now: impl FnOnce() -> Instant) {
        match self {
            Window::Count(window) => window.record(flags),
            Window::Time(window) => lock(window).record(flags, now()),
        }
    }

    pub(crate) fn tally(&self, now: impl FnOnce() -> Instant) -> Tally {
        match self {
            Window::Count(window) => window.tally(),
            Window::Time(window) => lock(window).tally(now()),
        }
    }

    pub(crate) fn clear(&self, now: impl FnOnce() -> Instant) {
        match self {
            Window::Count(window) => window.clear(),
            Window::Time(window) => lock(window).clear(now()),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state behind these locks stays consistent at every step; a panic elsewhere must
    // not turn into a panic of every later call.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct CountWindow {
    ring: Box<[AtomicU8]>,
    next: AtomicU64,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl CountWindow {
    fn new(size: u32) -> Self {
        CountWindow {
            ring: (0..size).map(|_| AtomicU8::new(0)).collect(),
            next: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    fn size(&self) -> u64 {
        self.ring.len() as u64
    }

    fn record(&self, flags: u8) {
        // NOTE: the read-only fast path: a success into a full window of successes.
        if flags == 0
            && self.next.load(Ordering::Relaxed) >= self.size()
            && self.failures.load(Ordering::Relaxed) == 0
            && self.slow.load(Ordering::Relaxed) == 0
        {
            return;
        }
        let slot = (self.next.fetch_add(1, Ordering::AcqRel) % self.size()) as usize;
        let old = self.ring[slot].swap(flags, Ordering::AcqRel);
        adjust(&self.failures, old & FAILED != 0, flags & FAILED != 0);
        adjust(&self.slow, old & SLOW != 0, flags & SLOW != 0);
    }

    fn tally(&self) -> Tally {
        Tally {
            calls: self.next.load(Ordering::Acquire).min(self.size()) as u32,
            failures: self.failures.load(Ordering::Acquire),
            slow: self.slow.load(Ordering::Acquire),
        }
    }

    fn clear(&self) {
        for slot in self.ring.iter() {
            slot.store(0, Ordering::Release);
        }
        self.next.store(0, Ordering::Release);
        self.failures.store(0, Ordering::Release);
        self.slow.store(0, Ordering::Release);
    }
}

/// Moves a running total by the change of one slot's flag. A slot swapped out while the
/// window was being cleared may decrement a total that was already reset: saturate.
fn adjust(total: &AtomicU32, was: bool, is: bool) {
    match (was, is) {
        (false, true) => {
            total.fetch_add(1, Ordering::AcqRel);
        }
        (true, false) => {
            let _ = total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
        }
        _ => {}
    }
}

pub(crate) struct TimeWindow {
    buckets: Box<[(u64, Tally)]>,
    bucket_len: Duration,
    origin: Instant,
}

impl TimeWindow {
    fn new(length: Duration, buckets: u32, now: Instant) -> Self {
        TimeWindow {
            buckets: vec![(u64::MAX, Tally::default()); buckets as usize].into_boxed_slice(),
            bucket_len: length / buckets,
            origin: now,
        }
    }

    fn epoch(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.origin);
        (elapsed.as_nanos() / self.bucket_len.as_nanos()) as u64
    }

    fn record(&mut self, flags: u8, now: Instant) {
        let epoch = self.epoch(now);
        let len = self.buckets.len() as u64;
        let (stamp, tally) = &mut self.buckets[(epoch % len) as usize];
        if *stamp != epoch {
            *stamp = epoch;
            *tally = Tally::default();
        }
        tally.calls += 1;
        tally.failures += u32::from(flags & FAILED != 0);
        tally.slow += u32::from(flags & SLOW != 0);
    }

    fn tally(&self, now: Instant) -> Tally {
        let epoch = self.epoch(now);
        let len = self.buckets.len() as u64;
        self.buckets
            .iter()
            .filter(|(stamp, _)| *stamp != u64::MAX && *stamp <= epoch && epoch - *stamp < len)
            .fold(Tally::default(), |sum, (_, t)| Tally {
                calls: sum.calls + t.calls,
                failures: sum.failures + t.failures,
                slow: sum.slow + t.slow,
            })
    }

    fn clear(&mut self, now: Instant) {
        self.buckets
            .iter_mut()
            .for_each(|bucket| *bucket = (u64::MAX, Tally::default()));
        self.origin = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_window_keeps_the_last_n_calls() {
        let w = CountWindow::new(4);
        for flags in [FAILED, FAILED, 0, SLOW] {
            w.record(flags);
        }
        assert_eq!(
            w.tally(),
            Tally {
                calls: 4,
                failures: 2,
                slow: 1
            }
        );
        w.record(0); // pushes out the first failure
        assert_eq!(
            w.tally(),
            Tally {
                calls: 4,
                failures: 1,
                slow: 1
            }
        );
        w.record(FAILED | SLOW);
        assert_eq!(
            w.tally(),
            Tally {
                calls: 4,
                failures: 1,
                slow: 2
            }
        );
        w.clear();
        assert_eq!(w.tally(), Tally::default());
    }

    #[test]
    fn successes_into_a_healthy_full_window_write_nothing() {
        let w = CountWindow::new(3);
        for _ in 0..3 {
            w.record(0);
        }
        let next = w.next.load(Ordering::Relaxed);
        w.record(0);
        assert_eq!(
            w.next.load(Ordering::Relaxed),
            next,
            "the read-only path was taken"
        );
        w.record(FAILED);
        assert_eq!(
            w.tally(),
            Tally {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
    }

    #[test]
    fn count_window_totals_stay_exact_across_threads() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    (0..10_000).for_each(|i| w.record(if (i + t) % 4 == 0 { FAILED } else { 0 }));
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let ring_failures = w
            .ring
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) & FAILED != 0)
            .count() as u32;
        assert_eq!(
            w.tally().failures,
            ring_failures,
            "the running total matches the ring"
        );
    }

    #[test]
    fn time_window_drops_old_buckets_whole() {
        let start = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(10), 5, start);
        w.record(FAILED, start);
        w.record(0, start + Duration::from_secs(1));
        w.record(0, start + Duration::from_secs(3));
        assert_eq!(
            w.tally(start + Duration::from_secs(3)),
            Tally {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        // At 10 s the first bucket (0–2 s) has left the window; the 2–4 s bucket remains.
        assert_eq!(
            w.tally(start + Duration::from_secs(10)),
            Tally {
                calls: 1,
                failures: 0,
                slow: 0
            }
        );
        // A bucket reused after a full turn starts from zero.
        w.record(SLOW, start + Duration::from_secs(12));
        assert_eq!(
            w.tally(start + Duration::from_secs(12)),
            Tally {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(w.tally(start + Duration::from_secs(60)), Tally::default());
    }
}
