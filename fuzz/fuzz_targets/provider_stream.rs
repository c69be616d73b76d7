//! Every provider's stream decoding (SSE or NDJSON, then the provider's events): arbitrary
//! bodies never panic, and where the network splits them changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_providers::fuzzing::{KINDS, chunking_is_invisible};

fuzz_target!(|data: &[u8]| {
    let [k, piece, body @ ..] = data else {
        return;
    };
    let kind = KINDS[usize::from(*k) % KINDS.len()];
    assert!(chunking_is_invisible(
        kind,
        body,
        usize::from(*piece).max(1)
    ));
});
