//! Mid-stream recovery: finishing an answer whose stream died after output reached the
//! caller, or repairing an early failure before anything did.
//!
//! The streaming contract ends a stream that breaks after its first chunk with an in-band
//! `StreamInterrupted`: honest, but the answer is lost. [`StreamRecovery`] wraps a streaming
//! chain (a `Fallback` over streaming provider stacks, or one stack) and, as its
//! [`RecoveryPolicy`] allows:
//!
//! - **continues** a broken answer on another target (or the same one): the original request
//!   plus the text already delivered — as an assistant *prefill* where the target accepts one
//!   ([`Prefill`]), otherwise followed by an instruction to continue — and splices the new
//!   output onto the same stream, overlapping text removed, so the caller reads one answer;
//! - **holds back** the first chunks (a number of them, or a time) so that a failure in that
//!   window is repaired by a silent restart on the next target — latency traded for
//!   integrity;
//! - otherwise **fails clean**: the in-band error is the original failure, never the error
//!   of a repair attempt, and never a clean end.
//!
//! A recovered answer says so: [`RecoveringStream::recovery`], a final chunk carrying
//! [`Recovery`] and the usage of every part added up, a `tracing` event, and the
//! `on_recovery` hook (for metrics).
//!
//! Costs. Continuing sends the conversation again plus the partial answer (input tokens
//! paid twice) and its text is the continuing model's; an instruction-form continuation may
//! not join seamlessly (the model may rephrase). Holding back delays the first token the
//! caller sees by up to the hold. Both are opt-in per chain.

mod event;
mod overlap;
mod policy;
mod prefill;
mod service;
mod shared;
mod stream;
mod target;

pub use crate::bounds::StreamTarget;
pub use crate::types::{Recovery, RecoveryMode};
pub use event::RecoveryEvent;
pub use policy::{AfterOutput, CONTINUE_INSTRUCTION, RecoveryPolicy};
pub use prefill::{Prefill, accepts_prefill};
pub use service::{StreamRecovery, StreamRecoveryBuilder};
pub use stream::RecoveringStream;
pub use target::RecoveryTarget;
