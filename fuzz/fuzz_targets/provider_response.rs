//! Every provider's response and error decoders: arbitrary bodies and statuses never panic;
//! they become an answer or a classified error.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use llm_providers::fuzzing::{KINDS, decode_error, decode_response};

fuzz_target!(|data: &[u8]| {
    let [k, s1, s2, retry, body @ ..] = data else {
        return;
    };
    let kind = KINDS[usize::from(*k) % KINDS.len()];
    let _ = decode_response(kind, body);
    let status = 400 + u16::from_le_bytes([*s1, *s2]) % 200;
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", HeaderValue::from(u16::from(*retry)));
    let err = decode_error(kind, status, &headers, body);
    assert!(!err.message().is_empty() || body.is_empty() || err.status().is_some());
});
