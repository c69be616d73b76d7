#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod future;
mod handle;
mod keyed;
mod layer;
mod metrics;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod state;
mod window;

pub use config::{BreakerConfig, WindowConfig};
pub use future::ResponseFuture;
pub use handle::BreakerHandle;
pub use keyed::{KeyedBreaker, KeyedBreakerHandle, KeyedBreakerLayer};
pub use layer::{BreakerLayer, BreakerLayerBuilder, PerKey};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use llm_core::RedisConfig;
pub use service::Breaker;
pub use state::{CallResult, CircuitBreaker, Metrics, Permit, State, StateChange};
