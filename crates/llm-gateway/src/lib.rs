//! A resilient LLM gateway built from llm-tower's public crates: axum in front, one
//! `Retry → Breaker → RateLimit → Provider` stack per provider, fallback chains across them.
//!
//! - `POST /api/chat` — `{"message", "provider"?}` → `{"response", "provider", "model",
//!   "retryCount", "attempts"}`; the named (or first) provider, then the others in order.
//! - `POST /v1/chat/completions` — OpenAI-compatible, streaming or not, routed by model name.
//! - `POST /v1/messages`, `POST /v1/messages/count_tokens` — Anthropic's Messages API over
//!   the same routes.
//! - `POST /v1/responses` — OpenAI's Responses API, stateless, over the same routes.
//! - `POST /v1/embeddings` — OpenAI's embeddings API over `[[embedding_routes]]`.
//! - `GET /v1/models` — the routed model names, in OpenAI's or Anthropic's shape.
//! - `GET /health` — each provider's breaker state and limiter capacity.
//! - `GET /metrics` — Prometheus text.
//!
//! The binary `llm-gateway` runs it from a TOML file (README.md has the full reference); the
//! library serves the same gateway from your own `main`:
//!
//! ```no_run
//! use llm_gateway::Gateway;
//! use llm_gateway::config::GatewayConfig;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vars = |name: &str| std::env::var(name).ok();
//! let config = GatewayConfig::from_file("gateway.toml".as_ref(), &vars)?;
//! let gateway = Gateway::from_config(&config, "gateway.toml", &vars)?;
//! let listener = tokio::net::TcpListener::bind(config.listen).await?;
//! gateway.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod anthropic;
mod api_chat;
mod attempts;
mod auth;
pub mod check;
mod completions;
pub mod config;
#[cfg(feature = "demo")]
#[cfg_attr(docsrs, doc(cfg(feature = "demo")))]
pub mod demo;
mod dispatch;
mod embeddings;
mod error;
mod fields;
mod gateway;
mod keys;
mod messages;
mod metrics;
mod openai;
mod recording;
mod respond;
mod responses;
mod responses_api;
mod server;
mod stack;
mod status;
mod status_page;
#[cfg(feature = "otlp")]
pub mod telemetry;

pub use gateway::Gateway;

// The README's Rust examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
