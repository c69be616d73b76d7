#![doc = include_str!("../README.md")]

mod config;
mod future;
mod gcra;
mod layer;
mod store;

pub use config::{Mode, Rate, RateLimitConfig};
pub use future::ResponseFuture;
pub use gcra::{Capacity, Grant, Limiter};
pub use layer::{
    KeyOf, NoKey, NoTokenCost, RateLimit, RateLimitHandle, RateLimitLayer, RateLimitLayerBuilder,
};
pub use store::{KeyedLocalStore, LocalStore, RateLimitStore, StoreReply};
