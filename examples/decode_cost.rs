//! Instructions per decode of a text-only answer, for `bash benches/instructions.sh decode`:
//! `response N` reads a usual OpenAI completion body N times, `stream N` a 100-token OpenAI
//! stream (the test kit's recorded-shape body) N times. Run at N and at 0; the difference
//! divided by N is the cost of one decode.

use llm_testkit::server::{Route, stream_body};
use llm_tower::providers::{ProviderKind, fuzzing};

const COMPLETION: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how can I help you today?","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":10,"total_tokens":19,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}},"system_fingerprint":"fp"}"#;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_default();
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let stream = stream_body(Route::OpenAi, 100);
    let mut total = 0usize;
    for _ in 0..n {
        total += match mode.as_str() {
            "response" => {
                let body = std::hint::black_box(COMPLETION);
                fuzzing::decode_response(ProviderKind::OpenAi, body).map_or(0, |r| r.text.len())
            }
            _ => {
                let body = std::hint::black_box(&stream);
                fuzzing::decode_stream(ProviderKind::OpenAi, body, 1400)
                    .chunks
                    .len()
            }
        };
    }
    println!("{total}");
}
