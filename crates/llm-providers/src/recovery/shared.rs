//! What a recovering chain and its streams share.

use super::event::OnRecovery;
use super::policy::RecoveryPolicy;
use super::target::Targets;

/// The targets, the policy and the hook, shared by every clone of a [`StreamRecovery`]
/// and every stream it returns.
///
/// [`StreamRecovery`]: super::StreamRecovery
pub(crate) struct Shared {
    pub(crate) targets: Box<dyn Targets>,
    pub(crate) policy: RecoveryPolicy,
    pub(crate) on_recovery: Option<OnRecovery>,
}
