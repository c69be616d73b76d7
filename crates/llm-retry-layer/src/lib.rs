#![doc = include_str!("../README.md")]

mod backoff;
mod budget;
mod clone;
mod config;
mod future;
mod layer;
mod policy;
mod service;

pub use backoff::{Backoff, BackoffStrategy, Jitter};
pub use budget::RetryBudget;
pub use clone::{CloneHttpRequest, CloneRequest, NoRetry, UseClone};
pub use config::{BudgetConfig, RetryConfig, Strategy};
pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryLayerBuilder};
pub use policy::{GiveUp, GiveUpReason, RetryEvent};
pub use service::Retry;
