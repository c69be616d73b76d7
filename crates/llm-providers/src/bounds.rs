//! The bounds a provider stack meets to be boxed, cloned per request and shared across
//! tasks — named once: [`ChatTarget`] and [`StreamTarget`].

use llm_core::LlmError;
use tower_service::Service;

use crate::stream::ChatStream;
use crate::types::{ChatRequest, ChatResponse};

/// A complete-answer service that can be boxed (`BoxCloneSyncService`), cloned per request
/// and shared across tasks: a [`Provider`](crate::Provider), or a resilience stack over one.
///
/// ```
/// use llm_providers::ChatTarget;
///
/// fn takes<T: ChatTarget>(_: T) {}
/// takes(llm_providers::Provider::ollama().build().unwrap());
/// ```
pub trait ChatTarget:
    Service<ChatRequest, Response = ChatResponse, Error = LlmError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> ChatTarget for T where
    T: Service<ChatRequest, Response = ChatResponse, Error = LlmError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A streaming service that can be boxed, cloned and shared, and that a repair can call —
/// what a [`RecoveryTarget`](crate::recovery::RecoveryTarget) wraps: a
/// [`StreamingProvider`](crate::StreamingProvider), or a resilience stack over one.
///
/// ```
/// use llm_providers::StreamTarget;
///
/// fn takes<T: StreamTarget>(_: T) {}
/// takes(llm_providers::Provider::ollama().build().unwrap().streaming());
/// ```
pub trait StreamTarget:
    Service<ChatRequest, Response = ChatStream, Error = LlmError, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> StreamTarget for T where
    T: Service<ChatRequest, Response = ChatStream, Error = LlmError, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}
