#![doc = include_str!("../README.md")]

mod config;
mod future;
mod service;
mod target;

pub use config::{FallbackConfig, TargetConfig};
pub use future::ResponseFuture;
pub use service::{Fallback, FallbackBuilder, FallbackEvent, FallbackLayer, FallbackReason};
pub use target::{Chain, Target};
