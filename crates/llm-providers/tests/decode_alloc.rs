//! Heap allocations of the SSE and NDJSON decoders per event, on recorded-shape streams of
//! 10,000 chunks cut into 1,400-byte reads (a TCP segment's payload): one block per event —
//! the event's data — and nothing for framing.

use llm_providers::decode::{NdjsonDecoder, SseDecoder};
use llm_testkit::server::{Route, stream_body};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const CHUNKS: usize = 10_000;

#[test]
fn decoding_allocates_one_block_per_event() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let openai = stream_body(Route::OpenAi, CHUNKS);
    let gemini = stream_body(Route::Gemini, CHUNKS);
    let ollama = stream_body(Route::Ollama, CHUNKS);

    let mut results = Vec::new();
    for (name, body) in [("openai", &openai), ("gemini (CRLF)", &gemini)] {
        let mut decoder = SseDecoder::new();
        // Warm up the decoder's buffer so that its growth is not counted.
        decoder.push(&body[..4096]);
        while decoder.next_event().is_some() {}
        let mut decoder_events = 0_u64;
        let mut decoder = std::mem::replace(&mut decoder, SseDecoder::new());
        let before = dhat::HeapStats::get().total_blocks;
        for read in body.chunks(1400) {
            decoder.push(read);
            while let Some(event) = decoder.next_event() {
                decoder_events += 1;
                std::hint::black_box(&event);
            }
        }
        let blocks = dhat::HeapStats::get().total_blocks - before;
        results.push((name, blocks, decoder_events));
    }
    let mut decoder = NdjsonDecoder::new();
    let before = dhat::HeapStats::get().total_blocks;
    let mut lines = 0_u64;
    for read in ollama.chunks(1400) {
        decoder.push(read);
        while let Some(line) = decoder.next_line() {
            lines += 1;
            std::hint::black_box(&line);
        }
    }
    results.push((
        "ollama (NDJSON)",
        dhat::HeapStats::get().total_blocks - before,
        lines,
    ));

    for (name, blocks, events) in results {
        let per_event = blocks as f64 / events as f64;
        println!("{name}: {events} events, {blocks} heap blocks, {per_event:.3} per event");
        assert!(events >= CHUNKS as u64, "{name}: {events} events");
        assert!(per_event <= 1.01, "{name}: {per_event:.3} blocks per event");
    }
}
