//! The breaker's metrics (feature `metrics`): its state, its transitions and the calls it
//! refused. Names and labels are in [`llm_core::metrics`]; without the feature every record
//! is an empty inline function.

#[cfg(feature = "metrics")]
pub(crate) use enabled::Meters;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Meters;

#[cfg(feature = "metrics")]
mod enabled {
    use llm_core::metrics::{
        BREAKER_REJECTIONS, BREAKER_STATE, BREAKER_TRANSITIONS, CounterSeries, GaugeSeries,
        breaker_state_value,
    };

    /// One breaker's series, built with it.
    #[derive(Debug)]
    pub(crate) struct Meters {
        state: GaugeSeries,
        rejections: CounterSeries,
    }

    impl Meters {
        /// The series of the breaker `name`, its state gauge set to closed.
        pub(crate) fn new(name: &str) -> Self {
            let label = [("breaker", name)];
            let meters = Meters {
                state: GaugeSeries::new(BREAKER_STATE, &label),
                rejections: CounterSeries::new(BREAKER_REJECTIONS, &label),
            };
            meters.state.set(breaker_state_value("closed"));
            meters
        }

        pub(crate) fn rejected(&self) {
            self.rejections.increment(1);
        }

        pub(crate) fn changed(&self, name: &str, from: &'static str, to: &'static str) {
            self.state.set(breaker_state_value(to));
            CounterSeries::new(
                BREAKER_TRANSITIONS,
                &[("breaker", name), ("from", from), ("to", to)],
            )
            .increment(1);
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    #[derive(Debug)]
    pub(crate) struct Meters;

    impl Meters {
        pub(crate) fn new(_name: &str) -> Self {
            Meters
        }
        #[inline(always)]
        pub(crate) fn rejected(&self) {}
        #[inline(always)]
        pub(crate) fn changed(&self, _name: &str, _from: &'static str, _to: &'static str) {}
    }
}
