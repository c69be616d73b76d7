//! What each request tried: the log of its attempts, which travels with it through the
//! retry and fallback layers, and the recent requests the status page shows.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One attempt on one provider, as the gateway reports it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AttemptRecord {
    /// The provider tried.
    pub(crate) provider: String,
    /// The upstream model asked for.
    pub(crate) model: String,
    /// `ok`, or the error kind (`rate_limited`, `timeout`, `circuit_open`, …).
    pub(crate) outcome: &'static str,
    /// The provider's HTTP status, when it answered with an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<u16>,
    /// The error, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// How long the attempt took.
    pub(crate) latency_ms: u64,
    /// Refused by our own breaker or limiter: no call reached the provider.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) skipped: bool,
}

/// The attempts made for one gateway request, in order. It travels in the request's
/// extensions, so every copy the retry and fallback layers make writes to the same log;
/// when the last copy is dropped — the request and its stream are over — the request joins
/// the [`RecentRequests`].
#[derive(Clone, Debug)]
pub(crate) struct AttemptLog(Arc<Log>);

#[derive(Debug)]
struct Log {
    records: Mutex<Vec<AttemptRecord>>,
    model: String,
    at: SystemTime,
    started: Instant,
    recent: RecentRequests,
}

impl AttemptLog {
    /// A log for a request to `model`, joining `recent` when it is over.
    pub(crate) fn new(model: &str, recent: &RecentRequests) -> AttemptLog {
        AttemptLog(Arc::new(Log {
            records: Mutex::new(Vec::new()),
            model: model.to_owned(),
            at: SystemTime::now(),
            started: Instant::now(),
            recent: recent.clone(),
        }))
    }

    /// The attempts so far.
    pub(crate) fn records(&self) -> Vec<AttemptRecord> {
        self.0.records.lock().expect("attempt log poisoned").clone()
    }

    /// The calls that reached a provider (a call our own breaker or limiter refused did not).
    pub(crate) fn upstream_calls(&self) -> usize {
        self.0
            .records
            .lock()
            .expect("attempt log poisoned")
            .iter()
            .filter(|record| !record.skipped)
            .count()
    }

    pub(crate) fn push(&self, record: AttemptRecord) {
        self.0
            .records
            .lock()
            .expect("attempt log poisoned")
            .push(record);
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let attempts = std::mem::take(self.records.get_mut().expect("attempt log poisoned"));
        if attempts.is_empty() {
            // Refused before any attempt (a gateway key's own limit, say): not a request the
            // providers saw.
            return;
        }
        let answered = attempts.last().is_some_and(|a| a.outcome == "ok");
        self.recent.push(RequestRecord {
            at_ms: self
                .at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            model: std::mem::take(&mut self.model),
            answered,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            attempts,
        });
    }
}

/// A finished request, as the status page shows it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RequestRecord {
    /// When it arrived, in milliseconds since the Unix epoch.
    pub(crate) at_ms: u64,
    /// The model the caller asked for.
    pub(crate) model: String,
    /// Whether its last attempt answered.
    pub(crate) answered: bool,
    /// From its arrival to its end (a stream's last chunk).
    pub(crate) latency_ms: u64,
    /// Its attempts in order: a change of provider is a fallback.
    pub(crate) attempts: Vec<AttemptRecord>,
}

/// The last [`RecentRequests::CAPACITY`] requests, newest last; clones share them.
#[derive(Clone, Debug, Default)]
pub(crate) struct RecentRequests(Arc<Mutex<VecDeque<RequestRecord>>>);

impl RecentRequests {
    /// How many requests are kept: enough for a success rate per provider, small enough to
    /// send to the status page every second.
    pub(crate) const CAPACITY: usize = 200;

    fn push(&self, record: RequestRecord) {
        let mut recent = self.0.lock().expect("recent requests poisoned");
        if recent.len() == Self::CAPACITY {
            recent.pop_front();
        }
        recent.push_back(record);
    }

    /// The requests kept, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<RequestRecord> {
        self.0
            .lock()
            .expect("recent requests poisoned")
            .iter()
            .cloned()
            .collect()
    }
}
