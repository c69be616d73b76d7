#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
mod config;
mod cost;
mod future;
mod gcra;
mod handle;
mod layer;
mod metrics;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod shared;
mod spec;
mod store;

#[cfg(feature = "quanta")]
pub use clock::QuantaClock;
pub use clock::{Clock, TokioClock};
pub use config::{FailurePolicy, Mode, Rate, RateLimitConfig};
pub use cost::NoTokenCost;
pub use future::ResponseFuture;
pub use gcra::{Capacity, Grant, Limiter};
pub use handle::RateLimitHandle;
pub use layer::{RateLimitLayer, RateLimitLayerBuilder};
#[cfg(feature = "redis")]
pub use llm_core::RedisConfig;
pub use llm_core::{KeyOf, NoKey};
#[cfg(feature = "redis")]
pub use redis::{RedisKey, RedisStore};
pub use service::RateLimit;
pub use spec::{Custom, InProcess, InProcessKeyed, KeyedBy, StoreSpec};
#[cfg(feature = "redis")]
pub use spec::{Redis, ThroughRedis};
pub use store::{
    KeyedLocalStore, LocalStore, RateLimitStore, StoreLocation, StoreReply, StoreStatus,
};
