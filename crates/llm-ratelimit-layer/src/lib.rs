#![doc = include_str!("../README.md")]

mod clock;
mod config;
mod future;
mod gcra;
mod layer;
#[cfg(feature = "redis")]
mod redis;
mod store;

#[cfg(feature = "quanta")]
pub use clock::QuantaClock;
pub use clock::{Clock, TokioClock};
pub use config::{Mode, Rate, RateLimitConfig};
pub use future::ResponseFuture;
pub use gcra::{Capacity, Grant, Limiter};
pub use layer::{NoTokenCost, RateLimit, RateLimitHandle, RateLimitLayer, RateLimitLayerBuilder};
pub use llm_core::keyed::{KeyOf, NoKey};
#[cfg(feature = "redis")]
pub use redis::{FailurePolicy, RedisConfig, RedisKey, RedisStore};
pub use store::{
    KeyedLocalStore, LocalStore, RateLimitStore, StoreLocation, StoreReply, StoreStatus,
};
