//! What `on_recovery` hooks see.

use std::sync::Arc;

use llm_core::ErrorKind;

use crate::types::Recovery;

/// What `on_recovery` hooks see: a repair that succeeded, or one that could not be made.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// The answer goes on from another stream.
    Recovered(Recovery),
    /// No repair was possible or allowed; the caller gets the original error.
    Failed {
        /// The target whose stream broke.
        from: Arc<str>,
        /// Content chunks the caller had received.
        after_tokens: u32,
        /// How it broke.
        cause: ErrorKind,
        /// Why it was not repaired (`"budget"`, `"deadline"`, `"not allowed"`, `"too long to
        /// continue"`, `"no target answered"`).
        reason: &'static str,
    },
}

/// An `on_recovery` hook.
pub(crate) type OnRecovery = Arc<dyn Fn(&RecoveryEvent) + Send + Sync>;
