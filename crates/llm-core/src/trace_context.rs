//! The W3C trace context a caller sent (`traceparent`, `tracestate`), carried in a request's
//! extensions so that every upstream call made for it continues the caller's trace.

use http::HeaderValue;

/// A caller's `traceparent` (and `tracestate`), checked against the W3C format
/// (`00-<32 hex>-<16 hex>-<2 hex>`, neither id all zeros) before it is carried: a malformed
/// one is dropped, as the W3C recommendation says, and never reaches an upstream.
///
/// ```
/// use llm_core::TraceContext;
///
/// let context = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None)
///     .unwrap();
/// assert_eq!(context.traceparent(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
/// assert!(TraceContext::parse("00-xyz-00f067aa0ba902b7-01", None).is_none());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

/// The longest `tracestate` carried (the W3C limit is 32 members of at most 256 characters;
/// 512 is what the recommendation asks platforms to propagate at least).
const MAX_TRACESTATE: usize = 512;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceContext {
    /// The context in `traceparent` and `tracestate`, or `None` when `traceparent` is not
    /// a valid version-00 header (a `tracestate` that is too long or not a header value is
    /// dropped alone).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let mut parts = traceparent.split('-');
        let (version, trace_id, parent_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let valid = parts.next().is_none()
            && version == "00"
            && is_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && is_hex(flags, 2);
        if !valid {
            return None;
        }
        let tracestate = tracestate
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE)
            .and_then(|s| HeaderValue::from_str(s).ok());
        Some(TraceContext {
            traceparent: HeaderValue::from_str(traceparent).ok()?,
            tracestate,
        })
    }

    /// The `traceparent` header value.
    pub fn traceparent(&self) -> &str {
        self.traceparent.to_str().unwrap_or_default()
    }

    /// The `tracestate` header value, when there was one.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The headers to send upstream: `traceparent`, and `tracestate` when there was one.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &HeaderValue)> {
        std::iter::once(("traceparent", &self.traceparent))
            .chain(self.tracestate.iter().map(|v| ("tracestate", v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_contexts_are_carried() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert!(TraceContext::parse(bad, None).is_none(), "{bad}");
        }
        let context = TraceContext::parse(good, Some("vendor=x")).unwrap();
        let headers: Vec<_> = context
            .headers()
            .map(|(n, v)| (n, v.to_str().unwrap()))
            .collect();
        assert_eq!(headers, [("traceparent", good), ("tracestate", "vendor=x")]);
        let long = "a".repeat(MAX_TRACESTATE + 1);
        let context = TraceContext::parse(good, Some(&long)).unwrap();
        assert_eq!(
            context.headers().count(),
            1,
            "a tracestate too long is dropped alone"
        );
    }
}
