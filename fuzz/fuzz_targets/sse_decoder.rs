//! The SSE decoder: arbitrary bytes never panic, and where the network splits them changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_providers::decode::{SseDecoder, SseEvent};

fn decode(pieces: &[&[u8]]) -> Vec<SseEvent> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(event) = decoder.next_event() {
            events.push(event);
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let whole = decode(&[body]);
    let pieces: Vec<&[u8]> = body.chunks(usize::from(piece).max(1)).collect();
    assert_eq!(decode(&pieces), whole);
});
