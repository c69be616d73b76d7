//! Helpers shared by the retry layer's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use llm_retry_layer::{Backoff, GiveUp, Jitter, RetryEvent, RetryLayerBuilder};

pub const MS: fn(u64) -> Duration = Duration::from_millis;

/// A builder with no jitter and no budget, so delays are exact and only the test's own
/// settings limit retries.
pub fn exact() -> RetryLayerBuilder {
    llm_retry_layer::RetryLayer::builder()
        .backoff(Backoff::exponential(MS(100), 2.0, Duration::from_secs(10)))
        .jitter(Jitter::None)
        .no_budget()
}

/// Collects what hooks saw.
#[derive(Clone, Default)]
pub struct Recorder {
    pub retries: Arc<Mutex<Vec<RetryEvent>>>,
    pub give_ups: Arc<Mutex<Vec<GiveUp>>>,
}

impl Recorder {
    pub fn attach(&self, builder: RetryLayerBuilder) -> RetryLayerBuilder {
        let retries = self.retries.clone();
        let give_ups = self.give_ups.clone();
        builder
            .on_retry(move |event| retries.lock().unwrap().push(*event))
            .on_give_up(move |event| give_ups.lock().unwrap().push(*event))
    }

    pub fn retries(&self) -> Vec<RetryEvent> {
        self.retries.lock().unwrap().clone()
    }

    pub fn give_ups(&self) -> Vec<GiveUp> {
        self.give_ups.lock().unwrap().clone()
    }
}
