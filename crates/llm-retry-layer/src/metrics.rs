//! The retry layer's metrics (feature `metrics`): attempts by outcome, retries, give-ups.
//! Names and labels are in [`llm_core::metrics`]; without the feature every record is an
//! empty inline function.

use llm_core::ErrorKind;

#[cfg(feature = "metrics")]
pub(crate) use enabled::Meters;

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::Meters;

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::Arc;

    use llm_core::metrics::{ATTEMPTS, CounterSeries, RETRIES, RETRY_GIVE_UPS};

    use super::ErrorKind;

    /// The layer's series; the success counter is built once, the rest on their (rare) use.
    #[derive(Debug)]
    pub(crate) struct Meters {
        name: Arc<str>,
        attempts_ok: CounterSeries,
    }

    impl Meters {
        pub(crate) fn new(name: &Arc<str>) -> Self {
            Meters {
                attempts_ok: CounterSeries::new(ATTEMPTS, &[("upstream", name), ("outcome", "ok")]),
                name: name.clone(),
            }
        }

        #[inline]
        pub(crate) fn succeeded(&self) {
            self.attempts_ok.increment(1);
        }

        pub(crate) fn failed(&self, kind: ErrorKind) {
            self.count(ATTEMPTS, ("outcome", kind.as_str()));
        }

        pub(crate) fn retried(&self, kind: ErrorKind) {
            self.count(RETRIES, ("kind", kind.as_str()));
        }

        pub(crate) fn gave_up(&self, reason: &str) {
            self.count(RETRY_GIVE_UPS, ("reason", reason));
        }

        fn count(&self, name: &'static str, label: (&'static str, &str)) {
            CounterSeries::new(name, &[("upstream", &self.name), label]).increment(1);
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
        pub(crate) fn new(_name: &Arc<str>) -> Self {
            Meters
        }
        #[inline(always)]
        pub(crate) fn succeeded(&self) {}
        #[inline(always)]
        pub(crate) fn failed(&self, _kind: ErrorKind) {}
        #[inline(always)]
        pub(crate) fn retried(&self, _kind: ErrorKind) {}
        #[inline(always)]
        pub(crate) fn gave_up(&self, _reason: &str) {}
    }
}
