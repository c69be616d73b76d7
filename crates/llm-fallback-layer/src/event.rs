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

impl FallbackReason {
    /// A stable `snake_case` label: the failure's kind (`rate_limited`, `circuit_open`, …)
    /// or `hedged` — the `reason` of the `llm_fallbacks_total` metric.
    ///
    /// ```
    /// use llm_core::ErrorKind;
    /// use llm_fallback_layer::FallbackReason;
    /// use std::time::Duration;
    ///
    /// let hedged = FallbackReason::Hedged { after: Duration::from_secs(2) };
    /// assert_eq!(hedged.as_str(), "hedged");
    /// ```
    pub fn as_str(&self) -> &'static str {
        match self {
            FallbackReason::Failed { kind, .. } => kind.as_str(),
            FallbackReason::Hedged { .. } => "hedged",
        }
    }
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
