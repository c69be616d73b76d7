//! The limiter's metrics (feature `metrics`): admissions, waits, rejections and the capacity
//! left. Names and labels are in [`llm_core::metrics`]; without the feature every record is
//! an empty inline function.

#[cfg(feature = "metrics")]
pub(crate) use enabled::Meters;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Meters;

#[cfg(feature = "metrics")]
mod enabled {
    use std::time::Duration;

    use llm_core::metrics::{
        CounterSeries, GaugeSeries, HistogramSeries, RATELIMIT_ADMISSIONS,
        RATELIMIT_AVAILABLE_REQUESTS, RATELIMIT_AVAILABLE_TOKENS, RATELIMIT_REJECTIONS,
        RATELIMIT_WAIT_SECONDS, RATELIMIT_WAITS,
    };

    /// One limiter's series, built with its layer.
    #[derive(Debug)]
    pub(crate) struct Meters {
        admissions: CounterSeries,
        waits: CounterSeries,
        wait_seconds: HistogramSeries,
        rejections: CounterSeries,
        available_requests: GaugeSeries,
        available_tokens: GaugeSeries,
    }

    impl Meters {
        pub(crate) fn new(name: &str) -> Self {
            let label = [("limiter", name)];
            Meters {
                admissions: CounterSeries::new(RATELIMIT_ADMISSIONS, &label),
                waits: CounterSeries::new(RATELIMIT_WAITS, &label),
                wait_seconds: HistogramSeries::new(RATELIMIT_WAIT_SECONDS, &label),
                rejections: CounterSeries::new(RATELIMIT_REJECTIONS, &label),
                available_requests: GaugeSeries::new(RATELIMIT_AVAILABLE_REQUESTS, &label),
                available_tokens: GaugeSeries::new(RATELIMIT_AVAILABLE_TOKENS, &label),
            }
        }

        /// The `nth` call (from 0) was let through; `available` is what the limit can
        /// still admit (requests, tokens), when it has one unkeyed budget.
        #[inline]
        pub(crate) fn admitted(
            &self,
            nth: u64,
            available: impl FnOnce() -> Option<(Option<u64>, Option<u64>)>,
        ) {
            self.admissions.increment(1);
            // NOTE: reading the capacity takes the clock; on the success path it is read
            // for one admission in 64 (and at every refusal), which a gauge scraped every
            // few seconds cannot tell apart from every admission.
            if nth % 64 == 0 {
                self.capacity(available);
            }
        }

        /// Sets the capacity gauges from `available`.
        pub(crate) fn capacity(
            &self,
            available: impl FnOnce() -> Option<(Option<u64>, Option<u64>)>,
        ) {
            if let Some((requests, tokens)) = available() {
                if let Some(requests) = requests {
                    self.available_requests.set(requests as f64);
                }
                if let Some(tokens) = tokens {
                    self.available_tokens.set(tokens as f64);
                }
            }
        }

        pub(crate) fn waited(&self, wait: Duration) {
            self.waits.increment(1);
            self.wait_seconds.record(wait.as_secs_f64());
        }

        pub(crate) fn rejected(&self) {
            self.rejections.increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use std::time::Duration;

    #[derive(Debug)]
    pub(crate) struct Meters;

    impl Meters {
        pub(crate) fn new(_name: &str) -> Self {
            Meters
        }
        #[inline(always)]
        pub(crate) fn admitted(
            &self,
            _nth: u64,
            _available: impl FnOnce() -> Option<(Option<u64>, Option<u64>)>,
        ) {
        }
        #[inline(always)]
        pub(crate) fn capacity(
            &self,
            _available: impl FnOnce() -> Option<(Option<u64>, Option<u64>)>,
        ) {
        }
        #[inline(always)]
        pub(crate) fn waited(&self, _wait: Duration) {}
        #[inline(always)]
        pub(crate) fn rejected(&self) {}
    }
}
