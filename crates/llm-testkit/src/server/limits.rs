//! The simulated provider budget: requests and tokens per minute per API key, refilled
//! continuously, reported in the provider's rate-limit headers.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::plan::{RateLimitSim, Route};
use super::wire::{go_duration, rfc3339};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: f64, now: Instant) {
        let per_sec = capacity / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.level = (self.level + elapsed * per_sec).min(capacity);
        self.at = now;
    }

    /// Time until `amount` is available.
    fn wait_for(&self, capacity: f64, amount: f64) -> Duration {
        let missing = (amount - self.level).max(0.0);
        Duration::from_secs_f64(missing / (capacity / 60.0))
    }

    /// Time until the bucket is full again (OpenAI's "reset").
    fn reset(&self, capacity: f64) -> Duration {
        self.wait_for(capacity, capacity)
    }
}

/// What a response reports about the budget.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observed {
    limit_requests: u64,
    remaining_requests: u64,
    reset_requests: Duration,
    limit_tokens: u64,
    remaining_tokens: u64,
    reset_tokens: Duration,
}

/// Why a request was refused by the simulated budget.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    /// Over the requests or tokens budget; the budget returns after the delay.
    Exhausted(Duration, Observed),
    /// The request alone needs more tokens than the whole per-minute budget.
    TooLarge(Observed),
}

#[derive(Debug, Default)]
pub(crate) struct Budgets {
    keys: HashMap<String, (Bucket, Bucket)>,
}

impl Budgets {
    /// Charges one request of `tokens` to `key`'s budget.
    pub(crate) fn charge(
        &mut self,
        sim: RateLimitSim,
        key: &str,
        tokens: u64,
        now: Instant,
    ) -> Result<Observed, Refusal> {
        let (rcap, tcap) = (sim.requests_per_minute as f64, sim.tokens_per_minute as f64);
        let (requests, token_bucket) = self.keys.entry(key.to_owned()).or_insert((
            Bucket {
                level: rcap,
                at: now,
            },
            Bucket {
                level: tcap,
                at: now,
            },
        ));
        requests.refill(rcap, now);
        token_bucket.refill(tcap, now);
        let observe = |r: &Bucket, t: &Bucket| Observed {
            limit_requests: sim.requests_per_minute,
            remaining_requests: r.level.max(0.0).floor() as u64,
            reset_requests: r.reset(rcap),
            limit_tokens: sim.tokens_per_minute,
            remaining_tokens: t.level.max(0.0).floor() as u64,
            reset_tokens: t.reset(tcap),
        };
        let tokens = tokens as f64;
        if tokens > tcap {
            return Err(Refusal::TooLarge(observe(requests, token_bucket)));
        }
        if requests.level < 1.0 || token_bucket.level < tokens {
            let wait = requests
                .wait_for(rcap, 1.0)
                .max(token_bucket.wait_for(tcap, tokens));
            return Err(Refusal::Exhausted(wait, observe(requests, token_bucket)));
        }
        requests.level -= 1.0;
        token_bucket.level -= tokens;
        Ok(observe(requests, token_bucket))
    }
}

impl Observed {
    /// The route's rate-limit headers: OpenAI's relative `x-ratelimit-*` (Azure without the
    /// resets), Anthropic's absolute `anthropic-ratelimit-*`; none for Gemini and Ollama.
    pub(crate) fn headers(&self, route: Route) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        match route {
            Route::OpenAi | Route::OpenRouter | Route::Azure => {
                headers.push((
                    "x-ratelimit-limit-requests",
                    self.limit_requests.to_string(),
                ));
                headers.push(("x-ratelimit-limit-tokens", self.limit_tokens.to_string()));
                headers.push((
                    "x-ratelimit-remaining-requests",
                    self.remaining_requests.to_string(),
                ));
                headers.push((
                    "x-ratelimit-remaining-tokens",
                    self.remaining_tokens.to_string(),
                ));
                if route != Route::Azure {
                    headers.push((
                        "x-ratelimit-reset-requests",
                        go_duration(self.reset_requests),
                    ));
                    headers.push(("x-ratelimit-reset-tokens", go_duration(self.reset_tokens)));
                }
            }
            Route::Anthropic => {
                let now = SystemTime::now();
                let reset_r = rfc3339(now + round_up_secs(self.reset_requests));
                let reset_t = rfc3339(now + round_up_secs(self.reset_tokens));
                let (tl, tr) = (
                    self.limit_tokens.to_string(),
                    self.remaining_tokens.to_string(),
                );
                headers.push((
                    "anthropic-ratelimit-requests-limit",
                    self.limit_requests.to_string(),
                ));
                headers.push((
                    "anthropic-ratelimit-requests-remaining",
                    self.remaining_requests.to_string(),
                ));
                headers.push(("anthropic-ratelimit-requests-reset", reset_r));
                for (limit, remaining, reset) in [
                    (
                        "anthropic-ratelimit-tokens-limit",
                        "anthropic-ratelimit-tokens-remaining",
                        "anthropic-ratelimit-tokens-reset",
                    ),
                    (
                        "anthropic-ratelimit-input-tokens-limit",
                        "anthropic-ratelimit-input-tokens-remaining",
                        "anthropic-ratelimit-input-tokens-reset",
                    ),
                    (
                        "anthropic-ratelimit-output-tokens-limit",
                        "anthropic-ratelimit-output-tokens-remaining",
                        "anthropic-ratelimit-output-tokens-reset",
                    ),
                ] {
                    headers.push((limit, tl.clone()));
                    headers.push((remaining, tr.clone()));
                    headers.push((reset, reset_t.clone()));
                }
            }
            Route::Gemini | Route::Ollama => {}
        }
        headers
    }
}

// RFC 3339 resets are written in whole seconds; rounding up keeps them from claiming
// capacity earlier than it returns.
fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(super::wire::ceil_secs(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_refills_continuously_and_refuses_when_empty() {
        let sim = RateLimitSim {
            requests_per_minute: 2,
            tokens_per_minute: 100,
        };
        let mut budgets = Budgets::default();
        let now = Instant::now();
        let first = budgets.charge(sim, "k", 10, now).unwrap();
        assert_eq!(first.remaining_requests, 1);
        assert_eq!(first.remaining_tokens, 90);
        budgets.charge(sim, "k", 10, now).unwrap();
        let Err(Refusal::Exhausted(wait, seen)) = budgets.charge(sim, "k", 10, now) else {
            panic!("a third request in the same instant must be refused");
        };
        assert_eq!(wait, Duration::from_secs(30));
        assert_eq!(seen.remaining_requests, 0);
        assert_eq!(seen.reset_requests, Duration::from_secs(60));
        // Another key has its own budget; the first one refills after 30 s.
        budgets.charge(sim, "other", 10, now).unwrap();
        budgets
            .charge(sim, "k", 10, now + Duration::from_secs(30))
            .unwrap();
        assert!(matches!(
            budgets.charge(sim, "k", 101, now + Duration::from_secs(300)),
            Err(Refusal::TooLarge(_))
        ));
    }
}
