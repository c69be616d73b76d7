//! The decoders behind the providers, without a network: entry points for the fuzz targets
//! (`fuzz/`) and the property tests that run the same checks in the normal test suite.
//!
//! Not part of the stable API: it exposes internals so hostile bytes can reach them directly.

use std::sync::Arc;

use http::{HeaderMap, StatusCode};

use crate::decode::Framing;
use crate::kind::ProviderKind;
use crate::types::{ChatChunk, ChatResponse};
use crate::wire::{self, Step, StreamParser};
use crate::{LlmError, errors};

/// Decodes a complete (non-streaming) response body as `kind` sends it.
///
/// ```
/// use llm_providers::{ProviderKind, fuzzing};
///
/// let body = br#"{"model":"gpt-4o","choices":[{"message":{"content":"Hi"},"finish_reason":"stop"}]}"#;
/// assert_eq!(fuzzing::decode_response(ProviderKind::OpenAi, body).unwrap().text, "Hi");
/// assert!(fuzzing::decode_response(ProviderKind::OpenAi, b"{").is_err());
/// ```
pub fn decode_response(kind: ProviderKind, body: &[u8]) -> Result<ChatResponse, LlmError> {
    wire::parse_response(kind, &Arc::from(kind.name()), "model", body)
}

/// The error `kind` means by answering `status` with `headers` and `body`.
///
/// ```
/// use http::HeaderMap;
/// use llm_providers::{ErrorKind, ProviderKind, fuzzing};
///
/// let err = fuzzing::decode_error(ProviderKind::Anthropic, 529, &HeaderMap::new(), b"{}");
/// assert_eq!(err.kind(), ErrorKind::Overloaded);
/// ```
pub fn decode_error(kind: ProviderKind, status: u16, headers: &HeaderMap, body: &[u8]) -> LlmError {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    errors::from_status(kind, status, headers, body, &[])
}

/// How a streamed body decoded: the chunks for the caller, then how it ended.
#[derive(Debug, Clone)]
pub struct DecodedStream {
    /// Chunks in order.
    pub chunks: Vec<ChatChunk>,
    /// `Ok(true)`: the terminator arrived (or the body ended where that counts as complete);
    /// `Ok(false)`: the body ended without it (a truncated answer); `Err`: the stream failed.
    pub end: Result<bool, LlmError>,
}

/// Decodes a streamed body as `kind` sends it (SSE, or NDJSON for Ollama), fed to the
/// decoder in pieces of `piece` bytes (at least 1), as the network would deliver it.
///
/// ```
/// use llm_providers::{ProviderKind, fuzzing};
///
/// let body = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
/// let decoded = fuzzing::decode_stream(ProviderKind::OpenAi, body, 3);
/// assert_eq!(decoded.chunks.iter().map(|c| c.delta.as_str()).collect::<String>(), "Hi");
/// assert!(matches!(decoded.end, Ok(true)));
/// ```
pub fn decode_stream(kind: ProviderKind, body: &[u8], piece: usize) -> DecodedStream {
    let mut parser = StreamParser::new(kind);
    let mut framing = Framing::new(kind == ProviderKind::Ollama);
    let mut chunks = Vec::new();
    let mut apply = |event: Option<&str>, data: &str, chunks: &mut Vec<ChatChunk>| {
        let delivered = !chunks.is_empty();
        match parser.event(event, data, delivered, &[]) {
            Ok(Step::Nothing) => None,
            Ok(Step::Chunk(chunk)) => {
                chunks.push(chunk);
                None
            }
            Ok(Step::Done(chunk)) => {
                chunks.extend(chunk);
                Some(Ok(true))
            }
            Err(err) => Some(Err(err)),
        }
    };
    for bytes in body.chunks(piece.max(1)) {
        framing.push(bytes);
        while let Some((event, data)) = framing.next_event() {
            if let Some(end) = apply(event.as_deref(), &data, &mut chunks) {
                return DecodedStream { chunks, end };
            }
        }
    }
    if let Some(line) = framing.finish() {
        if let Some(end) = apply(None, &line, &mut chunks) {
            return DecodedStream { chunks, end };
        }
    }
    let complete = parser.complete_at_eof();
    DecodedStream {
        chunks,
        end: Ok(complete),
    }
}

/// Whether decoding `body` in pieces of `piece` bytes gives what decoding it whole gives —
/// the same chunks, ending the same way — as it must wherever the network splits a body.
///
/// ```
/// use llm_providers::{ProviderKind, fuzzing};
///
/// let body = b"event: ping\ndata: {\"type\":\"ping\"}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
/// for piece in 1..body.len() {
///     assert!(fuzzing::chunking_is_invisible(ProviderKind::Anthropic, body, piece));
/// }
/// ```
pub fn chunking_is_invisible(kind: ProviderKind, body: &[u8], piece: usize) -> bool {
    let whole = decode_stream(kind, body, body.len().max(1));
    let split = decode_stream(kind, body, piece);
    let same_end = match (&whole.end, &split.end) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.kind() == b.kind() && a.message() == b.message(),
        _ => false,
    };
    whole.chunks == split.chunks && same_end
}

/// The provider kinds, for fuzzers choosing one from a byte.
pub const KINDS: [ProviderKind; 7] = ProviderKind::ALL;
