//! [`StreamRecovery`], the service, and its builder.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use llm_core::{ConfigError, LlmError};
use tokio::time::Instant;
use tower_service::Service;

use super::event::{OnRecovery, RecoveryEvent};
use super::policy::RecoveryPolicy;
use super::shared::Shared;
use super::stream::RecoveringStream;
use super::target::RecoveryTarget;
use crate::bounds::StreamTarget;
use crate::stream::ChatStream;
use crate::types::ChatRequest;

/// A streaming service whose broken answers are repaired as its [`RecoveryPolicy`] says.
/// See the [module docs](crate::recovery).
///
/// A request may carry a `RecoveryPolicy` of its own in its extensions: it replaces the
/// chain's for that request (a caller whose answer must not be spliced, such as JSON
/// output, asks to fail clean or to hold back).
///
/// ```
/// use llm_providers::recovery::{RecoveryPolicy, RecoveryTarget, StreamRecovery};
/// use llm_providers::{Provider, ProviderKind};
///
/// let primary = Provider::openai().api_key("sk-…").build().unwrap().streaming();
/// let backup = Provider::anthropic().api_key("sk-ant-…").build().unwrap().streaming();
/// // The chain here is the primary alone; in practice, a Fallback over the targets' stacks.
/// let recovering = StreamRecovery::builder(primary.clone())
///     .target(RecoveryTarget::new("openai", ProviderKind::OpenAi, primary))
///     .target(RecoveryTarget::new("anthropic", ProviderKind::Anthropic, backup).model("claude-3-5-haiku-latest"))
///     .policy(RecoveryPolicy::continuing())
///     .on_recovery(|event| eprintln!("{event:?}"))
///     .build()
///     .unwrap();
/// # let _ = recovering;
/// ```
pub struct StreamRecovery<S> {
    pub(crate) chain: S,
    pub(crate) shared: Arc<Shared>,
}

impl<S: Clone> Clone for StreamRecovery<S> {
    fn clone(&self) -> Self {
        StreamRecovery {
            chain: self.chain.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for StreamRecovery<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecovery")
            .field("policy", &self.shared.policy)
            .field("targets", &self.shared.targets.len())
            .finish_non_exhaustive()
    }
}

impl<S> StreamRecovery<S> {
    /// A builder over `chain`, which answers each request first.
    pub fn builder<T>(chain: S) -> StreamRecoveryBuilder<S, T> {
        StreamRecoveryBuilder {
            chain,
            targets: Vec::new(),
            policy: RecoveryPolicy::default(),
            on_recovery: None,
        }
    }
}

/// Builds a [`StreamRecovery`].
pub struct StreamRecoveryBuilder<S, T> {
    pub(crate) chain: S,
    pub(crate) targets: Vec<RecoveryTarget<T>>,
    pub(crate) policy: RecoveryPolicy,
    pub(crate) on_recovery: Option<OnRecovery>,
}

impl<S, T> fmt::Debug for StreamRecoveryBuilder<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamRecoveryBuilder")
            .field("targets", &self.targets)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, T: StreamTarget> StreamRecoveryBuilder<S, T> {
    /// Adds a target repairs may go to, in the chain's order: a broken answer continues on
    /// the targets after the one that broke, then (with `same_target`) on that one.
    #[must_use]
    pub fn target(mut self, target: RecoveryTarget<T>) -> Self {
        self.targets.push(target);
        self
    }

    /// Sets the policy.
    #[must_use]
    pub fn policy(mut self, policy: RecoveryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Calls `hook` on every repair made or given up.
    #[must_use]
    pub fn on_recovery(mut self, hook: impl Fn(&RecoveryEvent) + Send + Sync + 'static) -> Self {
        self.on_recovery = Some(Arc::new(hook));
        self
    }

    /// Checks the policy and builds the service.
    pub fn build(self) -> Result<StreamRecovery<S>, ConfigError> {
        self.policy.validate()?;
        if !self.policy.is_off() && self.targets.is_empty() {
            return Err(ConfigError::new(
                "targets",
                "must name at least one target to repair on",
            ));
        }
        Ok(StreamRecovery {
            chain: self.chain,
            shared: Arc::new(Shared {
                targets: Box::new(self.targets),
                policy: self.policy,
                on_recovery: self.on_recovery,
            }),
        })
    }
}

impl<S> Service<ChatRequest> for StreamRecovery<S>
where
    S: Service<ChatRequest, Response = ChatStream, Error = LlmError>,
    S::Future: Send + 'static,
{
    type Response = RecoveringStream;
    type Error = LlmError;
    type Future = Pin<Box<dyn Future<Output = Result<RecoveringStream, LlmError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), LlmError>> {
        self.chain.poll_ready(cx)
    }

    fn call(&mut self, request: ChatRequest) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared.clone();
        let first = self.chain.call(request.clone());
        Box::pin(async move {
            let stream = first.await?;
            Ok(RecoveringStream::new(stream, request, shared, started))
        })
    }
}
