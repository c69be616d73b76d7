#![cfg_attr(feature = "server", doc = include_str!("../README.md"))]
//!
//! # Scripted services
//!
//! Test services for llm-tower layers and for your own middleware.
//!
//! - [`ScriptedService`] answers each call with the next [`Step`] of a script — succeed, fail
//!   with a kind and a server delay, take some virtual time, never answer — and records every
//!   call with its tokio-clock timestamp. Under `#[tokio::test(start_paused = true)]` a whole
//!   backoff schedule runs in microseconds and every timestamp is exact.
//! - [`ReadyService`] is always ready and answers at once without allocating: the inner
//!   service of allocation tests and benchmarks.
//! - [`ContractProbe`] wraps any service and panics when tower's contract is broken: `call`
//!   without a successful `poll_ready`, or a clone used as if it had inherited readiness.
//!
//! ```
//! use std::time::Duration;
//! use llm_core::ErrorKind;
//! use llm_testkit::{ScriptedService, Step, TestResponse};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let (mut svc, handle) = ScriptedService::<&str>::new([
//!     Step::fail(ErrorKind::RateLimited).with_retry_after(Duration::from_secs(2)),
//!     Step::ok(TestResponse::new("hello")).after(Duration::from_millis(300)),
//! ]);
//! let err = svc.ready().await.unwrap().call("hi").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::RateLimited);
//! let res = svc.ready().await.unwrap().call("hi again").await.unwrap();
//! assert_eq!(res.body(), "hello");
//! assert_eq!(handle.call_count(), 2);
//! assert_eq!(handle.calls()[1].request, "hi again");
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod probe;
mod ready;
mod redis_server;
mod request;
mod scripted;

pub use probe::ContractProbe;
pub use ready::{ReadyService, count_allocations, vars};
pub use redis_server::{REQUIRE_REDIS, RedisServer};
pub use request::TestRequest;
pub use scripted::{Call, ScriptHandle, ScriptedService, Step, TestResponse, TestStream};

#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub use server::{MockProvider, MockProviderBuilder};
