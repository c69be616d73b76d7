//! The fuzz targets' properties (`fuzz/`), bounded, in the normal test suite: the providers'
//! response, error and stream decoders never panic on hostile bytes, and where the network
//! splits a stream changes nothing.

use http::HeaderMap;
use llm_providers::fuzzing::{
    KINDS, chunking_is_invisible, decode_error, decode_response, decode_stream,
};
use llm_providers::{ErrorKind, ProviderKind};
use llm_testkit::server::{Route, canonical_answer, stream_body};
use proptest::prelude::*;

fn route(kind: ProviderKind) -> Route {
    match kind {
        ProviderKind::Azure => Route::Azure,
        ProviderKind::OpenRouter => Route::OpenRouter,
        ProviderKind::Anthropic => Route::Anthropic,
        ProviderKind::Gemini => Route::Gemini,
        ProviderKind::Ollama => Route::Ollama,
        _ => Route::OpenAi,
    }
}

/// JSON-shaped text: objects and arrays of the keys providers use, with odd values.
fn jsonish() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "choices",
        "delta",
        "content",
        "message",
        "text",
        "candidates",
        "parts",
        "usage",
        "finish_reason",
        "stop_reason",
        "type",
        "error",
        "done",
        "model",
        "delta",
        "index",
        "promptFeedback",
        "usageMetadata",
        "code",
        "status",
        "details",
        "retryDelay",
    ]);
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!("{s:?}")),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| {
                let fields: Vec<String> = kv.iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn responses_and_errors_never_panic(
        k in 0..KINDS.len(),
        status in 400u16..600,
        body in prop_oneof![prop::collection::vec(any::<u8>(), 0..256), jsonish().prop_map(String::into_bytes)],
    ) {
        let kind = KINDS[k];
        let _ = decode_response(kind, &body);
        let err = decode_error(kind, status, &HeaderMap::new(), &body);
        prop_assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
    }

    #[test]
    fn streams_of_arbitrary_bytes_ignore_split_points(
        k in 0..KINDS.len(),
        piece in 1usize..64,
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        prop_assert!(chunking_is_invisible(KINDS[k], &body, piece));
    }

    #[test]
    fn streams_of_jsonish_events_ignore_split_points(
        k in 0..KINDS.len(),
        piece in 1usize..32,
        events in prop::collection::vec(jsonish(), 0..6),
    ) {
        let kind = KINDS[k];
        let body: String = if kind == ProviderKind::Ollama {
            events.iter().map(|e| format!("{e}\n")).collect()
        } else {
            events.iter().map(|e| format!("data: {e}\n\n")).collect()
        };
        prop_assert!(chunking_is_invisible(kind, body.as_bytes(), piece));
    }

    /// Every real stream decodes to the canonical answer, complete, however it is split;
    /// cut anywhere, it is never complete and never longer than the answer.
    #[test]
    fn real_streams_decode_whole_however_split(k in 0..KINDS.len(), piece in 1usize..97, tokens in 1usize..20, cut in any::<prop::sample::Index>()) {
        let kind = KINDS[k];
        let body = stream_body(route(kind), tokens);
        let decoded = decode_stream(kind, &body, piece);
        prop_assert!(matches!(decoded.end, Ok(true)), "{:?}", decoded.end);
        let text: String = decoded.chunks.iter().map(|c| c.delta.as_str()).collect();
        prop_assert_eq!(&text, &canonical_answer(tokens));

        let cut = cut.index(body.len() - 1);
        let truncated = decode_stream(kind, &body[..cut], piece);
        let partial: String = truncated.chunks.iter().map(|c| c.delta.as_str()).collect();
        prop_assert!(canonical_answer(tokens).starts_with(&partial));
        match truncated.end {
            Ok(complete) => prop_assert!(!complete || partial == canonical_answer(tokens)),
            Err(err) => prop_assert!(matches!(
                err.kind(),
                ErrorKind::StreamInterrupted | ErrorKind::ServerError | ErrorKind::Network | ErrorKind::Other
            ), "{err:?}"),
        }
    }
}
