//! The chain and its settings, shared by every clone of a fallback and its futures.

use std::time::Duration;

use std::sync::Arc;

use llm_core::ErrorKind;

use crate::event::OnFallback;
use crate::target::{Chain, Target};

/// The chain and its settings, shared by every clone of a [`Fallback`].
pub(crate) struct Shared<S, Req> {
    pub(crate) targets: Vec<Target<S, Req>>,
    pub(crate) hedge_after: Option<Duration>,
    pub(crate) max_hedges: u32,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) on_fallback: Option<OnFallback>,
    pub(crate) make_span: Option<MakeSpan<Req>>,
}

/// Makes the span of one call through the chain (`FallbackBuilder::make_span_with`).
pub(crate) type MakeSpan<Req> = Arc<dyn Fn(&Req) -> tracing::Span + Send + Sync>;

impl<S, Req> Shared<S, Req> {
    /// The target a failure of `kind` leads to, among those from `from` on.
    pub(crate) fn next_for(&self, from: usize, kind: ErrorKind) -> Option<usize> {
        let first_on =
            |chain: Chain| (from..self.targets.len()).find(|&i| self.targets[i].chain == chain);
        match kind {
            ErrorKind::ContextLengthExceeded => {
                first_on(Chain::ContextWindow).or_else(|| first_on(Chain::Regular))
            }
            ErrorKind::ContentFiltered => first_on(Chain::ContentPolicy),
            _ => first_on(Chain::Regular),
        }
    }

    /// Whether a failure of `kind` has a special chain waiting for it from `from` on.
    pub(crate) fn special_chain_for(&self, from: usize, kind: ErrorKind) -> bool {
        let wanted = match kind {
            ErrorKind::ContextLengthExceeded => Chain::ContextWindow,
            ErrorKind::ContentFiltered => Chain::ContentPolicy,
            _ => return false,
        };
        self.targets[from.min(self.targets.len())..]
            .iter()
            .any(|t| t.chain == wanted)
    }

    /// The next regular target from `from` on: where a hedge goes.
    pub(crate) fn next_regular(&self, from: usize) -> Option<usize> {
        (from..self.targets.len()).find(|&i| self.targets[i].chain == Chain::Regular)
    }
}
