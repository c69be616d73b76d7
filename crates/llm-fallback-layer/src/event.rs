//! What `on_fallback` hooks see.

use std::sync::Arc;
use std::time::Duration;

use llm_core::ErrorKind;

/// Why the chain moved to another target, as `on_fallback` hooks see it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FallbackReason {
    /// The previous target failed in a way its trigger moves on from.
    Failed {
        /// How it failed.
        kind: ErrorKind,
        /// The error's message.
        message: String,
    },
    /// The previous target had answered nothing for `after`: a hedge starts beside it.
    Hedged {
        /// The configured hedging delay.
        after: Duration,
    },
}

/// The chain moved from one target to another.
///
/// ```
/// use llm_fallback_layer::{Fallback, FallbackReason, Target};
/// use llm_testkit::{ReadyService, TestRequest};
///
/// let chain = Fallback::builder(vec![Target::<_, TestRequest>::new("a", ReadyService::new(()))])
///     .on_fallback(|event| match &event.reason {
///         FallbackReason::Failed { kind, .. } => eprintln!("{} failed ({kind}); trying {}", event.from, event.to),
///         FallbackReason::Hedged { after } => eprintln!("{} silent for {after:?}; racing {}", event.from, event.to),
///         _ => {}
///     })
///     .build()
///     .unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FallbackEvent {
    /// The target left (or, for a hedge, still running).
    pub from: Arc<str>,
    /// The target started.
    pub to: Arc<str>,
    /// Why.
    pub reason: FallbackReason,
}

pub(crate) type OnFallback = Arc<dyn Fn(&FallbackEvent) + Send + Sync>;
