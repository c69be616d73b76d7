#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod future;
mod handle;
mod keyed;
mod layer;
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
pub use service::Breaker;
#[cfg(feature = "redis")]
pub use shared::RedisConfig;
pub use state::{CallResult, CircuitBreaker, Metrics, Permit, State, StateChange};
