//! The targets a broken answer may continue on, type-erased so a recovering stream is one
//! type.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use llm_core::LlmError;

use super::prefill::Prefill;
use crate::bounds::StreamTarget;
use crate::kind::ProviderKind;
use crate::stream::ChatStream;
use crate::types::ChatRequest;

pub(crate) type Repair = Pin<Box<dyn Future<Output = Result<ChatStream, LlmError>> + Send>>;

/// One target a broken answer may continue on.
pub struct RecoveryTarget<T> {
    pub(crate) name: Arc<str>,
    pub(crate) kind: ProviderKind,
    pub(crate) service: T,
    pub(crate) model: Option<String>,
    pub(crate) prefill: Prefill,
}

impl<T> RecoveryTarget<T> {
    /// A target named `name` (as its streams name their provider) of `kind`, calling
    /// `service` (its resilience stack, typically).
    pub fn new(name: impl Into<Arc<str>>, kind: ProviderKind, service: T) -> Self {
        RecoveryTarget {
            name: name.into(),
            kind,
            service,
            model: None,
            prefill: Prefill::Auto,
        }
    }

    /// Asks it for `model` instead of the request's.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Overrides whether it takes a prefill.
    #[must_use]
    pub fn prefill(mut self, prefill: Prefill) -> Self {
        self.prefill = prefill;
        self
    }
}

impl<T> fmt::Debug for RecoveryTarget<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryTarget")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("prefill", &self.prefill)
            .finish_non_exhaustive()
    }
}

/// The targets behind a recovering stream, type-erased so the stream is one type.
pub(crate) trait Targets: Send + Sync {
    fn len(&self) -> usize;
    fn name(&self, index: usize) -> &Arc<str>;
    fn takes_prefill(&self, index: usize, request_model: &str) -> bool;
    fn model(&self, index: usize) -> Option<&str>;
    fn call(&self, index: usize, request: ChatRequest) -> Repair;
}

impl<T: StreamTarget> Targets for Vec<RecoveryTarget<T>> {
    fn len(&self) -> usize {
        <[_]>::len(self)
    }

    fn name(&self, index: usize) -> &Arc<str> {
        &self[index].name
    }

    fn takes_prefill(&self, index: usize, request_model: &str) -> bool {
        let target = &self[index];
        let model = target.model.as_deref().unwrap_or(request_model);
        target.prefill.applies(target.kind, model)
    }

    fn model(&self, index: usize) -> Option<&str> {
        self[index].model.as_deref()
    }

    fn call(&self, index: usize, request: ChatRequest) -> Repair {
        let mut service = self[index].service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
            service.call(request).await
        })
    }
}
