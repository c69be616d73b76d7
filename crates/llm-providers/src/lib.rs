#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod assemble;
mod bounds;
mod builder;
mod config;
mod conversation;
pub mod decode;
mod embed;
mod embedding;
mod errors;
#[doc(hidden)]
pub mod fuzzing;
mod inner;
mod kind;
mod metrics;
mod probe;
mod provider;
pub mod recovery;
mod spans;
mod stream;
mod types;
mod wire;

pub use assemble::Assembler;
pub use bounds::{ChatTarget, StreamTarget};
pub use builder::ProviderBuilder;
pub use config::{ProviderConfig, ProviderRegistry};
pub use conversation::{
    Content, Media, MediaSource, Part, Reasoning, ReasoningConfig, ReasoningDelta, ReasoningEffort,
    ResponseFormat, Tool, ToolCall, ToolCallDelta, ToolChoice,
};
pub use embedding::{EmbeddingRequest, EmbeddingResponse};
pub use inner::Timeouts;
pub use kind::ProviderKind;
pub use llm_core::{ErrorKind, LlmError, Usage};
pub use probe::Probe;
pub use provider::{Provider, ResponseFuture, StreamingProvider};
pub use stream::ChatStream;
pub use types::{ChatChunk, ChatRequest, ChatResponse, FinishReason, Message, Role};
