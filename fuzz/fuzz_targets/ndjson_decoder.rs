//! The NDJSON decoder (Ollama): arbitrary bytes never panic, and where the network splits
//! them changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llm_providers::decode::NdjsonDecoder;

fn decode(pieces: &[&[u8]]) -> Vec<String> {
    let mut decoder = NdjsonDecoder::new();
    let mut lines = Vec::new();
    for piece in pieces {
        decoder.push(piece);
        while let Some(line) = decoder.next_line() {
            lines.push(line);
        }
    }
    lines.extend(decoder.finish());
    lines
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else {
        return;
    };
    let whole = decode(&[body]);
    let pieces: Vec<&[u8]> = body.chunks(usize::from(piece).max(1)).collect();
    assert_eq!(decode(&pieces), whole);
});
