//! The gateway: axum handlers over llm-tower stacks.
//!
//! - `POST /api/chat` — `{"message", "provider"?}` → `{"response", "provider", "model",
//!   "retryCount", "attempts"}`; the named (or first) provider, then the others in order.
//! - `POST /v1/chat/completions` — OpenAI-compatible, streaming or not, routed by model name.
//! - `GET /v1/models` — the routed model names.
//! - `GET /health` — each provider's breaker state and limiter capacity.
//! - `GET /metrics` — Prometheus text.
//!
//! This module is shared with `tests/gateway.rs`, which starts it over mock providers.

mod api_chat;
mod completions;
pub(crate) mod config;
pub(crate) mod demo;
mod gateway;
pub(crate) mod metrics;
pub(crate) mod openai;
mod respond;
mod server;
pub(crate) mod stack;
mod status;

pub(crate) use gateway::Gateway;
