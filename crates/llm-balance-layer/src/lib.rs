#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod config;
mod future;
mod handle;
mod health;
mod member;
mod metrics;
mod service;
#[cfg(feature = "redis")]
mod shared;
mod state;
mod strategy;

pub use builder::{MAX_MEMBERS, PoolBuilder};
pub use config::{PoolConfig, Strategy};
pub use future::ResponseFuture;
pub use handle::{MemberState, MemberStatus, PoolHandle};
pub use llm_core::NoMemberAvailable;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use llm_core::RedisConfig;
pub use member::Member;
pub use service::Pool;
