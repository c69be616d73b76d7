#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod config;
mod future;
mod layer;
mod metrics;
mod policy;
mod retry_policy;
mod service;

pub use budget::RetryBudget;
pub use config::{BudgetConfig, RetryConfig, Strategy};
pub use future::ResponseFuture;
pub use layer::{RetryLayer, RetryLayerBuilder};
pub use llm_core::backoff::{Backoff, BackoffStrategy, Jitter};
pub use llm_core::{CloneHttpRequest, CloneRequest, NoClone, UseClone};
pub use policy::{GiveUp, GiveUpReason, RetryEvent};
pub use retry_policy::{KeepRequest, RetryPolicy};
pub use service::Retry;
