//! SSE decoding throughput on a recorded-shape OpenAI stream of 10,000 chunks (and Gemini's
//! CRLF framing), read in 1,400-byte pieces: our `SseDecoder` beside `eventsource-stream`,
//! the decoder async-openai uses, in the same run. "decode + parse" adds serde_json reading
//! each event, which is what a provider stream does with it.
//!
//! `cargo bench --bench sse --features providers`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use llm_testkit::server::{Route, stream_body};
use llm_tower::providers::decode::SseDecoder;

const CHUNKS: usize = 10_000;
const READ: usize = 1400;

fn ours(body: &[u8], parse: bool) -> usize {
    let mut decoder = SseDecoder::new();
    let mut n = 0;
    for read in body.chunks(READ) {
        decoder.push(read);
        while let Some(event) = decoder.next_event() {
            if parse && event.data != "[DONE]" {
                let v: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                n += usize::from(v.is_object());
            } else {
                n += 1;
            }
        }
    }
    n
}

fn theirs(rt: &tokio::runtime::Runtime, reads: &[Bytes], parse: bool) -> usize {
    rt.block_on(async {
        let stream = futures_util::stream::iter(reads.iter().cloned().map(Ok::<_, std::io::Error>));
        let mut events = stream.eventsource();
        let mut n = 0;
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if parse && event.data != "[DONE]" {
                let v: serde_json::Value = serde_json::from_str(&event.data).unwrap();
                n += usize::from(v.is_object());
            } else {
                n += 1;
            }
        }
        n
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, route) in [("openai", Route::OpenAi), ("gemini_crlf", Route::Gemini)] {
        let body = stream_body(route, CHUNKS);
        let reads: Vec<Bytes> = body.chunks(READ).map(Bytes::copy_from_slice).collect();
        assert_eq!(ours(&body, false), theirs(&rt, &reads, false));
        let mut group = c.benchmark_group(format!("sse/{name}"));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.sample_size(30);
        group.bench_function("llm-providers decode", |b| {
            b.iter(|| ours(&body, false));
        });
        group.bench_function("eventsource-stream decode", |b| {
            b.iter(|| theirs(&rt, &reads, false));
        });
        group.bench_function("llm-providers decode+parse", |b| {
            b.iter(|| ours(&body, true));
        });
        group.bench_function("eventsource-stream decode+parse", |b| {
            b.iter(|| theirs(&rt, &reads, true));
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
