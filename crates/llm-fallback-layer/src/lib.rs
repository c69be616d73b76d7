#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod event;
mod future;
mod layer;
mod service;
mod shared;
mod target;

pub use config::{FallbackConfig, TargetConfig};
pub use event::{FallbackEvent, FallbackReason};
pub use future::ResponseFuture;
pub use layer::{FallbackBuilder, FallbackLayer};
pub use service::Fallback;
pub use target::{Chain, Target};
