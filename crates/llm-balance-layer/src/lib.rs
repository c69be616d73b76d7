//! Load balancing across equivalent LLM endpoints as a tower service: several API keys of
//! one provider, several Azure deployments or regions of one model, several replicas of a
//! self-hosted server — each with its own quota — behind one name.
//!
//! A [`Pool`] sends each request to one [`Member`] (a service with its own stack: retry,
//! breaker, limiter), picked by a [`Strategy`] among the first priority tier that has a
//! member available, and watches each member's health by the kind of its failures:
//!
//! | failure                       | the member                                          |
//! |-------------------------------|-----------------------------------------------------|
//! | 401, 403 (key refused)        | retired for `retire_for` (5 min), then probed once  |
//! | 429 rate limited              | out until the provider's reset, then probed once    |
//! | exhausted quota or credit     | out until its reset (or `quota_cool_down`)          |
//! | its breaker open, limiter full| out until they say                                  |
//! | 5xx, timeout, overload        | stays in (its breaker judges), request moves on     |
//! | 400, context too long         | stays in; the error comes back as it is             |
//!
//! A failed member's request moves to another member — within the request's attempt budget
//! and deadline — so no caller sees a revoked key's 401 while another member is healthy.
//!
//! # A pool or a fallback chain?
//!
//! A pool spreads load over members that are **the same** (same model, same prompt format,
//! same answers); a fallback chain (`llm-fallback-layer`) moves to something **different**
//! (another provider, a smaller model) only when the first fails. Use both: a pool is a
//! fallback target like any other, so `Fallback([pool of OpenAI keys, Anthropic])` spreads
//! over the keys and falls back to Anthropic when no key can answer — the pool then fails
//! with [`NoMemberAvailable`] of the kind of the member back soonest (rate limited, …).
//!
//! # Strategies and their costs
//!
//! Every pick is one scan of a tier's members without allocating (BENCHMARKS.md measures it
//! beside `tower::balance::p2c` with 2 and 8 members):
//!
//! - [`Strategy::QuotaAware`] (default): the most headroom — the provider's
//!   `x-ratelimit-remaining-requests` less what was sent since, or the member's own limiter
//!   ([`Member::headroom_from`]) — then the fewest in flight per weight, ties in turn.
//! - [`Strategy::Weighted`]: at random, in proportion to weights.
//! - [`Strategy::LeastInFlight`]: the fewest in flight per weight.
//! - [`Strategy::PeakEwma`]: power of two choices by peak-EWMA latency × in flight, as
//!   `tower::balance::p2c` does: a member five times slower gets little traffic.
//!
//! Sticky picks ([`PoolBuilder::sticky_by`]) send a user's or session's requests to the same
//! member (weighted rendezvous hashing) while it is available, for prompt-cache affinity.
//!
//! ```
//! use llm_balance_layer::{Member, Pool, Strategy};
//! use llm_core::ErrorKind;
//! use llm_testkit::{ScriptedService, Step, TestRequest, TestResponse};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let (revoked, _) = ScriptedService::<TestRequest>::always(Step::fail(ErrorKind::Unauthorized));
//! let (good, calls) = ScriptedService::<TestRequest>::always(Step::ok(TestResponse::new("hi")));
//! let pool = Pool::builder("openai", vec![
//!     Member::new("old-key", revoked),
//!     Member::new("new-key", good),
//! ])
//! .strategy(Strategy::LeastInFlight)
//! .build()
//! .unwrap();
//! for _ in 0..3 {
//!     let answer = pool.clone().oneshot(TestRequest::new("gpt-4o")).await.unwrap();
//!     assert_eq!(answer.body(), "hi");
//! }
//! // The revoked key was tried at most once, then retired.
//! assert_eq!(calls.call_count(), 3);
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
mod future;
mod handle;
mod health;
mod member;
mod metrics;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod state;
mod strategy;

pub use builder::{MAX_MEMBERS, PoolBuilder};
pub use config::{PoolConfig, Strategy};
pub use future::ResponseFuture;
pub use handle::{MemberState, MemberStatus, PoolHandle};
pub use llm_core::NoMemberAvailable;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use llm_core::RedisConfig;
pub use member::Member;
pub use service::Pool;
