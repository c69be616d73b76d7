#![doc = include_str!("../README.md")]

mod config;
mod future;
mod keyed;
mod layer;
mod service;
mod state;
mod window;

pub use config::{BreakerConfig, WindowConfig};
pub use future::ResponseFuture;
pub use keyed::{KeyedBreaker, KeyedBreakerHandle, KeyedBreakerLayer};
pub use layer::{BreakerHandle, BreakerLayer, BreakerLayerBuilder};
pub use service::Breaker;
pub use state::{CallResult, CircuitBreaker, Metrics, Permit, State, StateChange};
