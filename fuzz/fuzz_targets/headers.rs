//! Every server-delay and rate-limit header parser: arbitrary text never panics, and no
//! delay read from a server exceeds the cap (a week).
#![no_main]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use llm_core::RateLimitInfo;
use llm_core::delay::{
    parse_go_duration, parse_millis, parse_retry_after, parse_rfc3339, server_delay,
};

const CAP: Duration = Duration::from_secs(7 * 24 * 3600);
const NAMES: [&str; 12] = [
    "retry-after",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-requests",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "date",
];

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let text = String::from_utf8_lossy(data);
    for delay in [
        parse_millis(&text),
        parse_retry_after(&text, now),
        parse_go_duration(&text),
    ]
    .into_iter()
    .flatten()
    {
        assert!(delay <= CAP, "{text:?} gave {delay:?}");
    }
    let _ = parse_rfc3339(&text);

    // Each line sets one of the headers providers send: its first byte picks which, the rest
    // is the value.
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let Some((&first, value)) = line.as_bytes().split_first() else {
            continue;
        };
        let name = HeaderName::from_static(NAMES[usize::from(first) % NAMES.len()]);
        if let Ok(value) = HeaderValue::from_bytes(value.trim_ascii()) {
            headers.append(name, value);
        }
    }
    if let Some(delay) = server_delay(&headers, now) {
        assert!(delay <= CAP);
    }
    let info = RateLimitInfo::from_headers(&headers, now);
    if let Some(delay) = info.exhausted_reset() {
        assert!(delay <= CAP);
    }
});
