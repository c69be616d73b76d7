//! **llm-tower** keeps calls to LLM APIs working when providers misbehave: rate limits,
//! exhausted quota, overload, timeouts, silent connections, whole-provider outages.
//!
//! It is a set of [tower](https://docs.rs/tower) layers that you stack around provider
//! services (or around any HTTP client), all reading one classification of failures from
//! [`llm_core`]:
//!
//! | crate | feature | what it does |
//! |---|---|---|
//! | [`llm_core`] | always | error kinds, outcome classification, server-delay parsing, deadlines, budgets |
//! | [`retry`] (`llm-retry-layer`) | `retry` (default) | retries with backoff, jitter, Retry-After, budgets, deadlines |
//! | [`breaker`] (`llm-breaker-layer`) | `breaker` (default) | circuit breaker: failure-rate and slow-call windows, half-open probes, keyed breakers |
//! | [`fallback`] (`llm-fallback-layer`) | `fallback` (default) | ordered fallback: triggers, rewrites, context-window and content-policy chains, bounds, hedging |
//! | [`ratelimit`] (`llm-ratelimit-layer`) | `ratelimit` (default) | requests and tokens per interval, reconciliation, provider feedback, keyed limits |
//! | `providers` (`llm-providers`) | `providers` | OpenAI, Azure OpenAI, OpenRouter, Anthropic, Gemini, Ollama and OpenAI-compatible servers as tower services, streaming and mid-stream recovery included |
//!
//! More features: `fast-clock` (the rate limiter reads the CPU's time-stamp counter),
//! `redis` (rate limits and breaker state shared by every instance through Redis), and
//! `full` (everything but `redis`).
//!
//! # Layer order
//!
//! Per target, outermost first: retry, then breaker, then rate limit, then the provider.
//! Every retry attempt passes the breaker and spends a rate permit; an open breaker stops
//! retries at once; a call the breaker rejects costs no permit. Across targets, a fallback
//! layer tries each target's stack in order, optionally under one deadline.
//!
//! ```text
//!                         ┌── target "openai" ──────────────────────────────────┐
//! request ─▶ Fallback ─┬─▶│ Retry ─▶ Breaker ─▶ RateLimit ─▶ OpenAI provider    │
//!   (deadline,         │  └────────────────────────────────────────────────────┘
//!    attempt budget)   │  ┌── target "anthropic" ───────────────────────────────┐
//!                      └─▶│ Retry ─▶ Breaker ─▶ RateLimit ─▶ Anthropic provider │
//!                         └────────────────────────────────────────────────────┘
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use llm_tower::prelude::*;
//! use llm_testkit::{ScriptedService, Step, TestResponse};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A provider that is overloaded once, then rate limits us with a Retry-After.
//! let (provider, calls) = ScriptedService::<&str>::new([
//!     Step::fail(ErrorKind::Overloaded),
//!     Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(2)),
//!     Step::ok(TestResponse::new("Paris")),
//! ]);
//! let svc = ServiceBuilder::new().layer(RetryLayer::standard()).service(provider);
//!
//! let answer = svc.oneshot("Capital of France?").await.unwrap();
//! assert_eq!(answer.body(), "Paris");
//! assert_eq!(answer.metadata().unwrap().attempts, 3);
//! assert!(calls.gaps()[1] >= Duration::from_secs(2), "the server's delay is honoured");
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod ext;
#[cfg(all(
    feature = "providers",
    feature = "retry",
    feature = "breaker",
    feature = "fallback",
    feature = "ratelimit"
))]
pub mod upstream;

#[cfg(feature = "breaker")]
pub use ext::IntoBreakerLayer;
#[cfg(feature = "ratelimit")]
pub use ext::IntoRateLimitLayer;
#[cfg(feature = "retry")]
pub use ext::IntoRetryLayer;
pub use ext::{LlmServiceExt, ServiceBuilderExt};
pub use llm_core;
pub use llm_core::*;

/// The README's examples, compiled and run as doctests.
#[cfg(all(
    doctest,
    feature = "providers",
    feature = "retry",
    feature = "breaker",
    feature = "fallback",
    feature = "ratelimit",
    feature = "reqwest"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Retries with backoff, jitter, Retry-After, budgets and deadlines: `llm-retry-layer`.
#[cfg(feature = "retry")]
pub use llm_retry_layer as retry;

/// Circuit breaking with failure-rate and slow-call windows, half-open probes and keyed
/// breakers: `llm-breaker-layer`.
#[cfg(feature = "breaker")]
pub use llm_breaker_layer as breaker;

/// Ordered fallback across targets with per-target triggers and rewrites, special chains,
/// bounds and hedging: `llm-fallback-layer`.
#[cfg(feature = "fallback")]
pub use llm_fallback_layer as fallback;

/// Requests and tokens per interval with reconciliation, provider feedback and keyed
/// limits: `llm-ratelimit-layer`.
#[cfg(feature = "ratelimit")]
pub use llm_ratelimit_layer as ratelimit;

/// Pools of equivalent members — API keys, deployments, regions, replicas — with
/// quota-aware, weighted, least-in-flight and peak-EWMA picks, priority tiers, sticky picks
/// and member health by failure kind: `llm-balance-layer`.
#[cfg(feature = "balance")]
pub use llm_balance_layer as balance;

/// OpenAI, Azure OpenAI, OpenRouter, Anthropic, Gemini, Ollama and OpenAI-compatible servers
/// as tower services, streaming included: `llm-providers`.
#[cfg(feature = "providers")]
pub use llm_providers as providers;

/// The names most stacks need, in one import: `use llm_tower::prelude::*;`.
pub mod prelude {
    pub use llm_core::{
        AttemptBudget, Classify, ConfigError, Deadline, DefaultClassifier, ErrorKind, ErrorKinds,
        EstimatedCost, LlmError, Outcome, ReportsUsage, RequestExtensions, ResponseMetadata, Usage,
    };
    pub use tower::ServiceBuilder;

    #[cfg(feature = "retry")]
    pub use llm_retry_layer::{Backoff, Jitter, RetryConfig, RetryLayer};

    #[cfg(feature = "breaker")]
    pub use llm_breaker_layer::{BreakerConfig, BreakerLayer};

    #[cfg(feature = "fallback")]
    pub use llm_fallback_layer::{Chain, Fallback, FallbackConfig, Target};

    #[cfg(feature = "ratelimit")]
    pub use llm_ratelimit_layer::{RateLimitConfig, RateLimitLayer};

    #[cfg(feature = "balance")]
    pub use llm_balance_layer::{Member, Pool, PoolConfig, Strategy};

    #[cfg(feature = "providers")]
    pub use llm_providers::{
        ChatChunk, ChatRequest, ChatResponse, ChatStream, EmbeddingRequest, EmbeddingResponse,
        Message, Provider, ProviderKind,
    };

    #[cfg(all(
        feature = "providers",
        feature = "retry",
        feature = "breaker",
        feature = "fallback",
        feature = "ratelimit"
    ))]
    pub use crate::upstream::{Upstream, UpstreamChain};

    pub use crate::{LlmServiceExt, ServiceBuilderExt};
}
