//! The pool's metrics (feature `metrics`): picks per member, members going out and coming
//! back, refusals. Names and labels are in [`llm_core::metrics`]; without the feature every
//! record is an empty inline function.

use llm_core::ErrorKind;

#[cfg(feature = "metrics")]
pub(crate) use enabled::Meters;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Meters;

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::Arc;

    use llm_core::metrics::{
        CounterSeries, GaugeSeries, POOL_MEMBER_AVAILABLE, POOL_MEMBER_OUTS, POOL_PICKS,
        POOL_REFUSALS,
    };

    use super::ErrorKind;

    /// One member's series, built once; the rare ones on use.
    #[derive(Debug)]
    pub(crate) struct Meters {
        pool: Arc<str>,
        member: Arc<str>,
        picks: CounterSeries,
        available: GaugeSeries,
    }

    impl Meters {
        pub(crate) fn new(pool: &Arc<str>, member: &Arc<str>) -> Self {
            let labels = [("pool", &**pool), ("member", &**member)];
            let meters = Meters {
                picks: CounterSeries::new(POOL_PICKS, &labels),
                available: GaugeSeries::new(POOL_MEMBER_AVAILABLE, &labels),
                pool: pool.clone(),
                member: member.clone(),
            };
            // In rotation from the start: the gauge exists before anything goes wrong.
            meters.available.set(1.0);
            meters
        }

        #[inline]
        pub(crate) fn picked(&self) {
            self.picks.increment(1);
        }

        pub(crate) fn went_out(&self, reason: ErrorKind) {
            let labels = [
                ("pool", &*self.pool),
                ("member", &*self.member),
                ("reason", reason.as_str()),
            ];
            CounterSeries::new(POOL_MEMBER_OUTS, &labels).increment(1);
            self.available.set(0.0);
        }

        pub(crate) fn came_back(&self) {
            self.available.set(1.0);
        }

        pub(crate) fn refused(pool: &str, reason: ErrorKind) {
            CounterSeries::new(
                POOL_REFUSALS,
                &[("pool", pool), ("reason", reason.as_str())],
            )
            .increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use std::sync::Arc;

    use super::ErrorKind;

    #[derive(Debug)]
    pub(crate) struct Meters;

    impl Meters {
        pub(crate) fn new(_pool: &Arc<str>, _member: &Arc<str>) -> Self {
            Meters
        }
        #[inline(always)]
        pub(crate) fn picked(&self) {}
        #[inline(always)]
        pub(crate) fn went_out(&self, _reason: ErrorKind) {}
        #[inline(always)]
        pub(crate) fn came_back(&self) {}
        #[inline(always)]
        pub(crate) fn refused(_pool: &str, _reason: ErrorKind) {}
    }
}
