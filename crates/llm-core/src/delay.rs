//! Parsing of server-directed delays and rate-limit observations.
//!
//! Providers say "wait" in half a dozen dialects:
//!
//! | source | example | parser |
//! |---|---|---|
//! | `retry-after-ms`, `x-ms-retry-after-ms` | `1500`, `644.5` | [`parse_millis`] |
//! | `retry-after` | `2`, `1.5`, `Wed, 21 Oct 2026 07:28:00 GMT` | [`parse_retry_after`] |
//! | OpenAI `x-ratelimit-reset-*`, Gemini `RetryInfo.retryDelay` | `6m0s`, `20ms`, `3.95s` | [`parse_go_duration`] |
//! | Anthropic `anthropic-ratelimit-*-reset` | `2026-08-21T12:40:59Z` | [`parse_rfc3339`] |
//!
//! Every parser is total: garbage, negative, NaN, infinite or overflowing input gives `None`,
//! and a value beyond [`MAX_SERVER_DELAY`] is capped to it. None of them panics.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{AsHeaderName, HeaderName};

/// The longest delay a server can ask for: longer values are capped to this.
///
/// A week: long enough for the daily quota resets that providers really announce
/// (`retry-after: 86400`, `23h59m45s`), short enough that no arithmetic on it overflows.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

const NANOS_PER_SEC: u128 = 1_000_000_000;

fn cap(nanos: u128) -> Duration {
    let max = MAX_SERVER_DELAY.as_nanos();
    let nanos = nanos.min(max);
    Duration::new(
        (nanos / NANOS_PER_SEC) as u64,
        (nanos % NANOS_PER_SEC) as u32,
    )
}

/// Parses a non-negative decimal number (`"2"`, `"1.5"`, `".5"`) scaled by `unit_nanos`,
/// exactly (no floating point), capped at [`MAX_SERVER_DELAY`].
fn parse_decimal(s: &str, unit_nanos: u128) -> Option<Duration> {
    let (int, frac) = match s.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (s, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are harmless; a huge integer part saturates rather than overflows.
    let mut nanos: u128 = 0;
    for digit in int.bytes() {
        nanos = nanos
            .saturating_mul(10)
            .saturating_add(u128::from(digit - b'0'));
        if nanos > MAX_SERVER_DELAY.as_nanos() {
            return Some(MAX_SERVER_DELAY);
        }
    }
    nanos = nanos.saturating_mul(unit_nanos);
    // Fraction digits beyond a nanosecond of the unit cannot change the result.
    let mut scale = unit_nanos;
    for digit in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos.saturating_add(u128::from(digit - b'0') * scale);
    }
    Some(cap(nanos))
}

/// Parses a delay in (possibly fractional) milliseconds, as in `retry-after-ms: 1500`.
///
/// ```
/// use std::time::Duration;
/// use llm_core::delay::parse_millis;
///
/// assert_eq!(parse_millis("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_millis("0.5"), Some(Duration::from_micros(500)));
/// assert_eq!(parse_millis("-1"), None);
/// assert_eq!(parse_millis("NaN"), None);
/// ```
pub fn parse_millis(value: &str) -> Option<Duration> {
    parse_decimal(value.trim(), 1_000_000)
}

/// Parses a `Retry-After` value: decimal seconds (`"2"`, `"1.5"`) or an HTTP-date, which is
/// measured from `now` (a date in the past means "now": zero).
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use llm_core::delay::parse_retry_after;
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
/// assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Some(delay) = parse_decimal(value, NANOS_PER_SEC) {
        return Some(delay);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now))
}

/// The time from `now` until `at`: zero when `at` has passed, capped at [`MAX_SERVER_DELAY`].
fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now)
        .map(|d| d.min(MAX_SERVER_DELAY))
        .unwrap_or(Duration::ZERO)
}

/// Parses a Go-style duration as OpenAI's `x-ratelimit-reset-*` headers and Gemini's
/// `RetryInfo.retryDelay` carry them: `6m0s`, `1s`, `20ms`, `1h2m3.5s`, `33.023s`.
///
/// Units are `h`, `m` (minutes — not `ms`), `s`, `ms`, `us`/`µs`, `ns`; a bare `0` is zero.
///
/// ```
/// use std::time::Duration;
/// use llm_core::delay::parse_go_duration;
///
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(parse_go_duration("3.957525076s"), Some(Duration::new(3, 957_525_076)));
/// assert_eq!(parse_go_duration("-1s"), None);
/// ```
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut rest = value.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "h" => 3_600 * NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "s" => NANOS_PER_SEC,
            "ms" => 1_000_000,
            "us" | "µs" | "μs" => 1_000,
            "ns" => 1,
            _ => return None,
        };
        total = total.saturating_add(parse_decimal(number, unit_nanos)?);
        rest = tail;
    }
    Some(total.min(MAX_SERVER_DELAY))
}

/// Parses an RFC 3339 timestamp (`2026-08-21T12:40:59Z`, `…59.5+02:00`) as Anthropic's
/// `anthropic-ratelimit-*-reset` headers carry it.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use llm_core::delay::parse_rfc3339;
///
/// let z = parse_rfc3339("2025-08-21T12:40:59Z").unwrap();
/// let offset = parse_rfc3339("2025-08-21T14:40:59+02:00").unwrap();
/// assert_eq!(z, offset);
/// assert_eq!(z, UNIX_EPOCH + Duration::from_secs(1_755_780_059));
/// assert_eq!(parse_rfc3339("yesterday"), None);
/// ```
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    // humantime reads UTC (`Z`) timestamps; a numeric offset is folded in here.
    let (utc, offset_secs): (String, i64) = if value.ends_with('Z') || value.ends_with('z') {
        (value.to_owned(), 0)
    } else {
        let split = value.len().checked_sub(6)?;
        if !value.is_char_boundary(split) {
            return None;
        }
        let (stamp, offset) = value.split_at(split);
        let bytes = offset.as_bytes();
        let sign = match bytes[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let digits = |range: std::ops::Range<usize>| bytes[range].iter().all(u8::is_ascii_digit);
        if bytes[3] != b':' || !digits(1..3) || !digits(4..6) {
            return None;
        }
        let hours: i64 = offset[1..3].parse().ok()?;
        let minutes: i64 = offset[4..6].parse().ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        (format!("{stamp}Z"), sign * (hours * 3600 + minutes * 60))
    };
    let at = humantime::parse_rfc3339(&utc).ok()?;
    // A local time ahead of UTC (positive offset) is earlier in absolute time.
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    if offset_secs >= 0 {
        at.checked_sub(shift)
    } else {
        at.checked_add(shift)
    }
}

fn header_str(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers.get(name)?.to_str().ok()
}

/// The delay and rate-limit headers read here, named once.
mod rate_limit_headers {
    use http::HeaderName;

    pub(super) static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");
    pub(super) static MS_RETRY_AFTER_MS: HeaderName =
        HeaderName::from_static("x-ms-retry-after-ms");
    pub(super) static LIMIT_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-limit-requests");
    pub(super) static REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    pub(super) static RESET_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-reset-requests");
    pub(super) static LIMIT_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-limit-tokens");
    pub(super) static REMAINING_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-tokens");
    pub(super) static RESET_TOKENS: HeaderName =
        HeaderName::from_static("x-ratelimit-reset-tokens");
    /// Anthropic's request bucket: limit, remaining, reset.
    pub(super) static ANTHROPIC_REQUESTS: [HeaderName; 3] = [
        HeaderName::from_static("anthropic-ratelimit-requests-limit"),
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ];
    /// Anthropic's token buckets (all tokens, then input tokens): limit, remaining, reset.
    pub(super) static ANTHROPIC_TOKENS: [[HeaderName; 3]; 2] = [
        [
            HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
        ],
        [
            HeaderName::from_static("anthropic-ratelimit-input-tokens-limit"),
            HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
            HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
        ],
    ];
}

/// The delay a response's headers ask for, in order of precision: `retry-after-ms`,
/// `x-ms-retry-after-ms`, then `retry-after` (seconds or HTTP-date, measured from `now`).
///
/// Rate-limit reset headers are not read here: they say when a bucket is full again, not
/// when the next call may go; see [`RateLimitInfo::exhausted_reset`](crate::RateLimitInfo::exhausted_reset).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use llm_core::delay::server_delay;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "7".parse().unwrap());
/// headers.insert("retry-after-ms", "6500".parse().unwrap());
/// assert_eq!(server_delay(&headers, SystemTime::now()), Some(Duration::from_millis(6500)));
/// ```
pub fn server_delay(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    header_str(headers, &rate_limit_headers::RETRY_AFTER_MS)
        .and_then(parse_millis)
        .or_else(|| {
            header_str(headers, &rate_limit_headers::MS_RETRY_AFTER_MS).and_then(parse_millis)
        })
        .or_else(|| {
            header_str(headers, &http::header::RETRY_AFTER).and_then(|v| parse_retry_after(v, now))
        })
}

/// What a provider said about its rate limits in one response.
///
/// Read from OpenAI-style `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers
/// (also sent by Azure, OpenRouter, Groq) and Anthropic's `anthropic-ratelimit-*` headers.
/// Resets are durations from the moment the response was produced: OpenAI's relative values
/// as they are, Anthropic's absolute timestamps measured from the response's `Date` header
/// (or the local clock when there is none).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use llm_core::RateLimitInfo;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
/// let info = RateLimitInfo::from_headers(&headers, SystemTime::now());
/// assert_eq!(info.remaining_requests, Some(0));
/// assert_eq!(info.remaining_tokens, Some(149_984));
/// assert_eq!(info.exhausted_reset(), Some(Duration::from_secs(1)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimitInfo {
    /// Requests allowed per window.
    pub limit_requests: Option<u64>,
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Time until the request window is full again.
    pub reset_requests: Option<Duration>,
    /// Tokens allowed per window (Anthropic: the most restrictive token limit in effect).
    pub limit_tokens: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// Time until the token window is full again.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitInfo {
    /// An observation with nothing in it.
    pub const fn new() -> Self {
        RateLimitInfo {
            limit_requests: None,
            remaining_requests: None,
            reset_requests: None,
            limit_tokens: None,
            remaining_tokens: None,
            reset_tokens: None,
        }
    }

    /// Reads OpenAI-style and Anthropic rate-limit headers. Absent or malformed values stay
    /// `None`; OpenAI's headers win when a response carries both dialects.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Self {
        use rate_limit_headers as names;
        // NOTE: the names are built once (no parsing or allocation per response): this runs
        // on every response a provider sends.
        let count = |name: &HeaderName| header_str(headers, name).and_then(parse_count);
        let relative = |name: &HeaderName| header_str(headers, name).and_then(parse_go_duration);
        // Anthropic's resets are absolute: measure them on the server's clock when it says.
        let absolute = |name: &HeaderName| {
            let at = header_str(headers, name).and_then(parse_rfc3339)?;
            let server_now = header_str(headers, &http::header::DATE)
                .and_then(|d| httpdate::parse_http_date(d).ok())
                .unwrap_or(now);
            Some(until(at, server_now))
        };
        // Anthropic's token headers: the combined bucket, else the input-token bucket.
        let anthropic_tokens = |field: usize| {
            let [tokens, input_tokens] = &names::ANTHROPIC_TOKENS;
            if headers.contains_key(&tokens[field]) {
                Some(&tokens[field])
            } else {
                headers
                    .contains_key(&input_tokens[field])
                    .then_some(&input_tokens[field])
            }
        };
        let [limit, remaining, reset] = &names::ANTHROPIC_REQUESTS;

        RateLimitInfo {
            limit_requests: count(&names::LIMIT_REQUESTS).or_else(|| count(limit)),
            remaining_requests: count(&names::REMAINING_REQUESTS).or_else(|| count(remaining)),
            reset_requests: relative(&names::RESET_REQUESTS).or_else(|| absolute(reset)),
            limit_tokens: count(&names::LIMIT_TOKENS)
                .or_else(|| anthropic_tokens(0).and_then(count)),
            remaining_tokens: count(&names::REMAINING_TOKENS)
                .or_else(|| anthropic_tokens(1).and_then(count)),
            reset_tokens: relative(&names::RESET_TOKENS)
                .or_else(|| anthropic_tokens(2).and_then(absolute)),
        }
    }

    /// Whether the observation holds nothing.
    pub fn is_empty(&self) -> bool {
        *self == RateLimitInfo::new()
    }

    /// When a bucket the provider reports as empty (`remaining == 0`) is full again: the
    /// longest such reset. `None` while every reported bucket has room.
    pub fn exhausted_reset(&self) -> Option<Duration> {
        let requests = (self.remaining_requests == Some(0))
            .then_some(self.reset_requests)
            .flatten();
        let tokens = (self.remaining_tokens == Some(0))
            .then_some(self.reset_tokens)
            .flatten();
        requests.max(tokens)
    }

    /// When the next request fits again, as far as the headers tell: `None` while every
    /// reported bucket has room.
    ///
    /// A reset says when an empty bucket is *full* again, not when one more request fits:
    /// providers refill continuously, so an empty request bucket of `limit` has room for one
    /// request after `reset / limit`. For tokens the room a request needs is its own size,
    /// which the headers do not say: an empty token bucket waits for its reset.
    ///
    /// ```
    /// use std::time::Duration;
    /// use llm_core::RateLimitInfo;
    ///
    /// let mut info = RateLimitInfo::new();
    /// info.limit_requests = Some(30);
    /// info.remaining_requests = Some(0);
    /// info.reset_requests = Some(Duration::from_secs(60));
    /// assert_eq!(info.next_slot(), Some(Duration::from_secs(2)));
    /// assert_eq!(info.exhausted_reset(), Some(Duration::from_secs(60)));
    /// ```
    pub fn next_slot(&self) -> Option<Duration> {
        let requests = (self.remaining_requests == Some(0))
            .then_some(self.reset_requests)
            .flatten()
            .map(|reset| match self.limit_requests {
                Some(limit) if limit > 0 => reset / u32::try_from(limit).unwrap_or(u32::MAX),
                _ => reset,
            });
        let tokens = (self.remaining_tokens == Some(0))
            .then_some(self.reset_tokens)
            .flatten();
        requests.max(tokens)
    }
}

/// A count as providers print it: digits, maybe a fraction (`"1000.0"`) we drop.
fn parse_count(value: &str) -> Option<u64> {
    let value = value.trim();
    let int = value.split_once('.').map_or(value, |(int, _)| int);
    int.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn retry_after_reads_decimal_seconds() {
        let now = at(0);
        assert_eq!(parse_retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after(" 1.25 ", now),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(
            parse_retry_after(".5", now),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_retry_after("0.000000001", now),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(
            parse_retry_after("86400", now),
            Some(Duration::from_secs(86_400))
        );
    }

    #[test]
    fn retry_after_reads_http_dates_against_now() {
        let now = at(1_445_412_480);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        // Obsolete RFC 850 and asctime forms are HTTP-dates too.
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_retry_after("Wed Oct 21 07:28:05 2015", now),
            Some(Duration::from_secs(5))
        );
        // A date in the past means: go now.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn garbage_negative_nan_and_infinite_retry_after_are_none() {
        let now = at(0);
        for bad in [
            "",
            " ",
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "infinity",
            "1e3",
            "+3",
            "1,5",
            "1..5",
            ".",
            "0x10",
            "2s",
            "soon",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "\u{0}",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn overflowing_and_far_future_delays_are_capped() {
        let now = at(0);
        assert_eq!(
            parse_retry_after("99999999999999999999999999999999", now),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(
            parse_millis("18446744073709551616000"),
            Some(MAX_SERVER_DELAY)
        );
        assert_eq!(parse_go_duration("99999999999h"), Some(MAX_SERVER_DELAY));
        assert_eq!(
            parse_go_duration("9999999h9999999h"),
            Some(MAX_SERVER_DELAY)
        );
    }

    #[test]
    fn millis_headers_read_fractions() {
        assert_eq!(parse_millis("644"), Some(Duration::from_millis(644)));
        assert_eq!(parse_millis("644.5"), Some(Duration::from_micros(644_500)));
    }

    #[test]
    fn go_durations_in_every_observed_form() {
        let cases = [
            ("6m0s", Duration::from_secs(360)),
            ("1s", Duration::from_secs(1)),
            ("12s", Duration::from_secs(12)),
            ("20ms", Duration::from_millis(20)),
            ("9ms", Duration::from_millis(9)),
            ("370ms", Duration::from_millis(370)),
            ("33.023s", Duration::from_millis(33_023)),
            ("1m0s", Duration::from_secs(60)),
            ("1m23s", Duration::from_secs(83)),
            ("23h59m45s", Duration::from_secs(86_385)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("1.5h", Duration::from_secs(5_400)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("36s", Duration::from_secs(36)),
            ("3.957525076s", Duration::new(3, 957_525_076)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_go_duration(text), Some(want), "{text}");
        }
    }

    #[test]
    fn go_duration_minutes_are_not_milliseconds() {
        assert_eq!(parse_go_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_go_duration("1ms"), Some(Duration::from_millis(1)));
        assert_eq!(
            parse_go_duration("1m1ms"),
            Some(Duration::from_millis(60_001))
        );
    }

    #[test]
    fn malformed_go_durations_are_none() {
        for bad in [
            "", "s", "1", "10", "-1s", "1x", "1 s", "1s ", "1.2.3s", "ms", "1sm", "NaNs",
        ] {
            let parsed = parse_go_duration(bad);
            // "1s " is trimmed and fine; everything else must be rejected.
            if bad == "1s " {
                assert_eq!(parsed, Some(Duration::from_secs(1)));
            } else {
                assert_eq!(parsed, None, "{bad:?}");
            }
        }
    }

    #[test]
    fn rfc3339_with_fractions_and_offsets() {
        let base = at(1_755_780_059);
        assert_eq!(parse_rfc3339("2025-08-21T12:40:59Z"), Some(base));
        assert_eq!(
            parse_rfc3339("2025-08-21T12:40:59.250Z"),
            Some(base + Duration::from_millis(250))
        );
        assert_eq!(parse_rfc3339("2025-08-21T10:10:59-02:30"), Some(base));
        assert_eq!(parse_rfc3339("2025-08-21T12:40:59+00:00"), Some(base));
        for bad in [
            "",
            "Z",
            "2025-08-21",
            "2025-08-21T12:40:59",
            "2025-08-21T12:40:59+2:00",
            "2025-13-21T12:40:59Z",
            "2025-08-21T12:40:59+24:00",
            "é2025-08-21T12:40:59",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn server_delay_prefers_the_most_precise_header() {
        let now = at(0);
        let h = headers(&[
            ("retry-after", "7"),
            ("x-ms-retry-after-ms", "6800"),
            ("retry-after-ms", "6500"),
        ]);
        assert_eq!(server_delay(&h, now), Some(Duration::from_millis(6500)));
        let h = headers(&[("retry-after", "7"), ("x-ms-retry-after-ms", "6800")]);
        assert_eq!(server_delay(&h, now), Some(Duration::from_millis(6800)));
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(server_delay(&h, now), Some(Duration::from_secs(7)));
        // A malformed precise header does not hide a good coarse one.
        let h = headers(&[("retry-after", "7"), ("retry-after-ms", "soon")]);
        assert_eq!(server_delay(&h, now), Some(Duration::from_secs(7)));
        assert_eq!(server_delay(&HeaderMap::new(), now), None);
    }

    #[test]
    fn openai_rate_limit_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "59"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-limit-tokens_usage_based", "999"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(0));
        assert_eq!(
            info,
            RateLimitInfo {
                limit_requests: Some(60),
                remaining_requests: Some(59),
                reset_requests: Some(Duration::from_secs(1)),
                limit_tokens: Some(150_000),
                remaining_tokens: Some(149_984),
                reset_tokens: Some(Duration::from_secs(360)),
            }
        );
        assert_eq!(info.exhausted_reset(), None);
    }

    #[test]
    fn anthropic_rate_limit_headers_measure_resets_on_the_server_clock() {
        // Date says 12:40:50; the local clock is a day off and must not matter.
        let h = headers(&[
            ("date", "Thu, 21 Aug 2025 12:40:50 GMT"),
            ("anthropic-ratelimit-requests-limit", "1000"),
            ("anthropic-ratelimit-requests-remaining", "999"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "80000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-08-21T12:40:59Z",
            ),
            ("anthropic-ratelimit-tokens-limit", "96000"),
            ("anthropic-ratelimit-tokens-remaining", "0"),
            ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:41:00Z"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(1_755_780_050 + 86_400));
        assert_eq!(info.limit_requests, Some(1000));
        assert_eq!(info.remaining_requests, Some(999));
        assert_eq!(info.reset_requests, Some(Duration::from_secs(9)));
        assert_eq!(info.limit_tokens, Some(96_000));
        assert_eq!(info.remaining_tokens, Some(0));
        assert_eq!(info.reset_tokens, Some(Duration::from_secs(10)));
        assert_eq!(info.exhausted_reset(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn anthropic_input_tokens_stand_in_when_tokens_are_missing() {
        let h = headers(&[
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "79000"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(0));
        assert_eq!(info.limit_tokens, Some(80_000));
        assert_eq!(info.remaining_tokens, Some(79_000));
    }

    #[test]
    fn malformed_rate_limit_headers_are_ignored() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "lots"),
            ("x-ratelimit-remaining-requests", "-1"),
            ("x-ratelimit-reset-requests", "soon"),
            ("anthropic-ratelimit-tokens-reset", "tomorrow"),
            ("x-ratelimit-remaining-tokens", "1000.0"),
        ]);
        let info = RateLimitInfo::from_headers(&h, at(0));
        assert_eq!(info.limit_requests, None);
        assert_eq!(info.remaining_requests, None);
        assert_eq!(info.reset_requests, None);
        assert_eq!(info.reset_tokens, None);
        assert_eq!(info.remaining_tokens, Some(1000));
        assert!(RateLimitInfo::from_headers(&HeaderMap::new(), at(0)).is_empty());
    }

    #[test]
    fn exhausted_reset_takes_the_longest_empty_bucket() {
        let info = RateLimitInfo {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(1)),
            remaining_tokens: Some(0),
            reset_tokens: Some(Duration::from_secs(30)),
            ..RateLimitInfo::new()
        };
        assert_eq!(info.exhausted_reset(), Some(Duration::from_secs(30)));
    }

    /// Runs every parser on `s`: none may panic, and every delay must be capped.
    fn every_parse_is_capped(s: &str) -> bool {
        let now = at(1_700_000_000);
        let _ = parse_rfc3339(s);
        [
            parse_retry_after(s, now),
            parse_millis(s),
            parse_go_duration(s),
        ]
        .into_iter()
        .flatten()
        .all(|d| d <= MAX_SERVER_DELAY)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn parsers_never_panic_and_stay_capped(s in "\\PC{0,40}") {
            prop_assert!(every_parse_is_capped(&s));
        }

        #[test]
        fn parsers_never_panic_on_delay_shaped_input(s in "[-+0-9.a-zµ :,]{0,24}") {
            prop_assert!(every_parse_is_capped(&s));
        }

        #[test]
        fn integer_seconds_round_trip(secs in 0u64..=604_800) {
            prop_assert_eq!(parse_retry_after(&secs.to_string(), at(0)), Some(Duration::from_secs(secs)));
        }

        #[test]
        fn go_durations_round_trip(h in 0u64..48, m in 0u64..60, ms in 0u64..60_000) {
            let text = format!("{h}h{m}m{}.{:03}s", ms / 1000, ms % 1000);
            let want = Duration::from_secs(h * 3600 + m * 60) + Duration::from_millis(ms);
            prop_assert_eq!(parse_go_duration(&text), Some(want));
        }

        #[test]
        fn http_dates_round_trip(offset in 0u64..604_800) {
            let now = at(1_700_000_000);
            let text = httpdate::fmt_http_date(now + Duration::from_secs(offset));
            prop_assert_eq!(parse_retry_after(&text, now), Some(Duration::from_secs(offset)));
        }

        #[test]
        fn rate_limit_headers_never_panic(values in proptest::collection::vec("[ -~]{0,20}", 6)) {
            let names = [
                "x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens", "anthropic-ratelimit-tokens-reset",
                "anthropic-ratelimit-requests-remaining", "date", "x-ratelimit-limit-tokens",
            ];
            let mut map = HeaderMap::new();
            for (name, value) in names.iter().zip(&values) {
                if let Ok(value) = value.parse() {
                    map.insert(*name, value);
                }
            }
            let info = RateLimitInfo::from_headers(&map, at(1_700_000_000));
            if let Some(d) = info.exhausted_reset() {
                prop_assert!(d <= MAX_SERVER_DELAY);
            }
        }
    }
}
