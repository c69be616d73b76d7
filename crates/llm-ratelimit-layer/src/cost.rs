//! [`NoTokenCost`]: the token price of a limiter of requests only.

use llm_core::TokenCost;

/// Prices every request at zero tokens: for limiters of requests only.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTokenCost;

impl<Req> TokenCost<Req> for NoTokenCost {
    fn cost(&self, _: &Req) -> u64 {
        0
    }
}
