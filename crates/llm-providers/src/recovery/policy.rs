//! [`RecoveryPolicy`]: when a broken answer is repaired, and how.

use std::time::Duration;

use llm_core::ConfigError;
use serde::{Deserialize, Serialize};

/// What a continuation asks of a target that cannot take a prefill. The partial answer is
/// in the conversation just before it.
pub const CONTINUE_INSTRUCTION: &str = "Your previous answer was cut off. Continue it exactly \
where it stopped: do not repeat any of it, do not comment, just write the rest.";

/// What happens when a stream breaks after output reached the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AfterOutput {
    /// End with the original error, in band (the streaming contract).
    #[default]
    Fail,
    /// Continue the answer on another target (or the same one) and splice it on.
    Continue,
}

/// When and how a broken stream is repaired, per chain. The default repairs nothing: it is
/// today's contract, so recovery is opt-in.
///
/// ```
/// use std::time::Duration;
/// use llm_providers::recovery::{AfterOutput, RecoveryPolicy};
///
/// let policy: RecoveryPolicy = serde_json::from_str(
///     r#"{"after_output": "continue", "hold_back_tokens": 8, "hold_back_for": "750ms"}"#,
/// ).unwrap();
/// assert_eq!(policy.after_output, AfterOutput::Continue);
/// assert_eq!(policy.max_recoveries, 1);
/// policy.validate().unwrap();
///
/// let bad = RecoveryPolicy { max_recoveries: 0, ..RecoveryPolicy::continuing() };
/// assert_eq!(bad.validate().unwrap_err().field(), "max_recoveries");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoveryPolicy {
    /// After output reached the caller: continue, or fail clean.
    pub after_output: AfterOutput,
    /// Hold back the first this many content chunks (≈ tokens) from the caller; a failure
    /// before they are released restarts the answer on the next target, unseen (0: no hold
    /// by count).
    pub hold_back_tokens: u32,
    /// …or hold them back for this long after the first one arrived, whichever ends first.
    #[serde(
        with = "llm_core::config::option_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub hold_back_for: Option<Duration>,
    /// Repairs (restarts and continuations) per request, at most.
    pub max_recoveries: u32,
    /// No repair starts, and none may still be running, this long after the request began.
    #[serde(with = "llm_core::config::duration")]
    pub deadline: Duration,
    /// Whether the target whose stream broke may continue its own answer when no other
    /// target can.
    pub same_target: bool,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            after_output: AfterOutput::Fail,
            hold_back_tokens: 0,
            hold_back_for: None,
            max_recoveries: 1,
            deadline: Duration::from_secs(120),
            same_target: true,
        }
    }
}

impl RecoveryPolicy {
    /// Continue broken answers, at most once per request, within 120 s.
    pub fn continuing() -> Self {
        RecoveryPolicy {
            after_output: AfterOutput::Continue,
            ..RecoveryPolicy::default()
        }
    }

    /// Hold back the first `tokens` chunks (at most `for_at_most`) and restart unseen when
    /// the stream breaks inside them; fail clean after.
    pub fn holding_back(tokens: u32, for_at_most: Duration) -> Self {
        RecoveryPolicy {
            hold_back_tokens: tokens,
            hold_back_for: Some(for_at_most),
            ..RecoveryPolicy::default()
        }
    }

    /// Whether this policy ever repairs anything.
    pub fn is_off(&self) -> bool {
        self.after_output == AfterOutput::Fail && !self.holds_back()
    }

    pub(crate) fn holds_back(&self) -> bool {
        self.hold_back_tokens > 0 || self.hold_back_for.is_some()
    }

    /// Checks every field; the error names the first one at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_recoveries == 0 || self.max_recoveries > 10 {
            return Err(ConfigError::new(
                "max_recoveries",
                format!("must be from 1 to 10 (got {})", self.max_recoveries),
            ));
        }
        if self.deadline.is_zero() {
            return Err(ConfigError::new("deadline", "must be longer than 0s"));
        }
        if let Some(hold) = self.hold_back_for {
            if hold.is_zero() || hold >= self.deadline {
                return Err(ConfigError::new(
                    "hold_back_for",
                    format!("must be longer than 0s and shorter than deadline ({hold:?})"),
                ));
            }
        }
        Ok(())
    }
}
