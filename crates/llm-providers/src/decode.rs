//! Incremental decoders for streamed bodies: [`SseDecoder`] (server-sent events, the WHATWG
//! rules) and [`NdjsonDecoder`] (Ollama's newline-delimited JSON).
//!
//! Both take bytes as they come off the socket — split anywhere, including inside a line
//! terminator or a multi-byte UTF-8 sequence — and decode only complete lines, so a
//! character is never cut in two. Neither panics on any input.
//!
//! Why not a crate: the SSE crates we looked at decode each network chunk to a `String`
//! before framing (`eventsource-stream`), or frame `\n\n` only; framing bytes first and
//! decoding per line is what makes CRLF (Gemini) and split characters safe, and it lets
//! the decoder reuse one buffer for the whole stream.

/// One server-sent event: its `event:` name (Anthropic's `message_start`, …) and its `data:`
/// lines joined with `\n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when the server named the event.
    pub event: Option<String>,
    /// The data.
    pub data: String,
}

/// Frames server-sent events out of a byte stream.
///
/// ```
/// use llm_providers::decode::{SseDecoder, SseEvent};
///
/// let mut decoder = SseDecoder::new();
/// decoder.push(b"event: ping\r\ndata: {\"a\"");
/// assert_eq!(decoder.next_event(), None); // not complete yet
/// decoder.push(b":1}\r\n\r\n: a comment\n\ndata: [DONE]\n\n");
/// assert_eq!(
///     decoder.next_event(),
///     Some(SseEvent { event: Some("ping".into()), data: "{\"a\":1}".into() })
/// );
/// assert_eq!(decoder.next_event().unwrap().data, "[DONE]");
/// assert_eq!(decoder.next_event(), None);
/// ```
#[derive(Debug, Default)]
pub struct SseDecoder {
    lines: LineBuffer,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        SseDecoder::default()
    }

    /// Adds bytes read from the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    /// Bytes received but not yet framed into a complete line.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next complete event, if the bytes pushed so far hold one.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let rest = self.lines.rest();
            let end = rest.iter().position(|&b| b == b'\n' || b == b'\r')?;
            let terminator = match rest[end] {
                b'\r' => match rest.get(end + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A CR at the end of what we have may be the first half of CRLF.
                    None => return None,
                },
                _ => 1,
            };
            let line_start = self.lines.pos;
            self.lines.pos += end + terminator;
            if let Some(event) = self.line(line_start, line_start + end) {
                return Some(event);
            }
        }
    }

    /// Handles one line; returns an event when the line was the blank line ending one.
    fn line(&mut self, start: usize, end: usize) -> Option<SseEvent> {
        let line = &self.lines.buf[start..end];
        if line.is_empty() {
            let event = self.event.take();
            if !self.has_data {
                return None;
            }
            self.has_data = false;
            if self.data.ends_with('\n') {
                self.data.pop();
            }
            return Some(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
        if line[0] == b':' {
            return None; // a comment (OpenRouter's `: OPENROUTER PROCESSING`)
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[..0]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => {
                // One allocation per event: room for the value and its newline at once.
                self.data.reserve(value.len() + 1);
                self.data.push_str(&value);
                self.data.push('\n');
                self.has_data = true;
            }
            b"event" => self.event = Some(value.into_owned()),
            _ => {} // `id`, `retry` and unknown fields do not concern us
        }
        None
    }
}

/// Frames newline-delimited JSON (Ollama): one line per value, `\n` or `\r\n`, blank lines
/// skipped; at the end of the body a last line without a newline still counts.
///
/// ```
/// use llm_providers::decode::NdjsonDecoder;
///
/// let mut decoder = NdjsonDecoder::new();
/// decoder.push(b"{\"a\":1}\n{\"b\"");
/// assert_eq!(decoder.next_line().as_deref(), Some("{\"a\":1}"));
/// assert_eq!(decoder.next_line(), None);
/// decoder.push(b":2}");
/// assert_eq!(decoder.finish().as_deref(), Some("{\"b\":2}"));
/// ```
#[derive(Debug, Default)]
pub struct NdjsonDecoder {
    lines: LineBuffer,
}

impl NdjsonDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> Self {
        NdjsonDecoder::default()
    }

    /// Adds bytes read from the body.
    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    /// Bytes received but not yet framed into a complete line.
    pub fn buffered(&self) -> usize {
        self.lines.buffered()
    }

    /// The next complete, non-blank line.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            let rest = self.lines.rest();
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = trim_line(&rest[..end]);
            let line = (!line.is_empty()).then(|| String::from_utf8_lossy(line).into_owned());
            self.lines.pos += end + 1;
            if line.is_some() {
                return line;
            }
        }
    }

    /// At the end of the body: the last line, if it had no newline.
    pub fn finish(&mut self) -> Option<String> {
        if let Some(line) = self.next_line() {
            return Some(line);
        }
        let line = trim_line(self.lines.rest());
        let line = (!line.is_empty()).then(|| String::from_utf8_lossy(line).into_owned());
        self.lines.pos = self.lines.buf.len();
        line
    }
}

/// The bytes of a body both decoders frame lines from: one reused buffer and how far it has
/// been framed.
#[derive(Debug, Default)]
struct LineBuffer {
    buf: Vec<u8>,
    /// Bytes of `buf` already framed.
    pos: usize,
}

impl LineBuffer {
    fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            // NOTE: compact before growing, so the buffer holds at most one partial line
            // beyond what was just pushed.
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let start = line
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(line.len());
    &line[start..]
}

/// The framing of a provider's streamed body — SSE, or NDJSON for Ollama — as one reader of
/// `(event name, data)` pairs: what the stream and the fuzz entry points both decode with.
pub(crate) enum Framing {
    Sse(SseDecoder),
    Ndjson(NdjsonDecoder),
}

impl Framing {
    /// A reader of NDJSON lines when `ndjson`, of SSE events otherwise.
    pub(crate) fn new(ndjson: bool) -> Framing {
        if ndjson {
            Framing::Ndjson(NdjsonDecoder::new())
        } else {
            Framing::Sse(SseDecoder::new())
        }
    }

    /// Appends bytes as they arrived.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        match self {
            Framing::Sse(d) => d.push(bytes),
            Framing::Ndjson(d) => d.push(bytes),
        }
    }

    /// The next complete event: its name (SSE's `event:`; NDJSON has none) and its data.
    pub(crate) fn next_event(&mut self) -> Option<(Option<String>, String)> {
        match self {
            Framing::Sse(d) => d.next_event().map(|e| (e.event, e.data)),
            Framing::Ndjson(d) => d.next_line().map(|line| (None, line)),
        }
    }

    /// Bytes held without a complete event.
    pub(crate) fn buffered(&self) -> usize {
        match self {
            Framing::Sse(d) => d.buffered(),
            Framing::Ndjson(d) => d.buffered(),
        }
    }

    /// At the end of the body: a last NDJSON line without its newline still counts.
    pub(crate) fn finish(&mut self) -> Option<String> {
        match self {
            Framing::Sse(_) => None,
            Framing::Ndjson(d) => d.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(event) = decoder.next_event() {
                events.push(event);
            }
        }
        events
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let events = decode_all(&[b"data: {\ndata:  \"a\": 1\ndata:}\n\n"]);
        assert_eq!(events[0].data, "{\n \"a\": 1\n}");
    }

    #[test]
    fn cr_lf_and_lone_cr_end_lines_even_when_split() {
        // The second event ends with lone CRs; the last one is only known to be a line end
        // when the next byte is not LF.
        let events = decode_all(&[b"data: a\r", b"\n\r", b"\ndata: b\r\r", b": next"]);
        assert_eq!(
            events.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn a_utf8_character_split_across_reads_is_whole() {
        let text = "data: {\"t\":\"Brasília 🌍\"}\n\n".as_bytes();
        let split = text.iter().position(|&b| b == 0xF0).unwrap() + 2;
        let events = decode_all(&[&text[..split], &text[split..]]);
        assert_eq!(events[0].data, "{\"t\":\"Brasília 🌍\"}");
    }

    #[test]
    fn events_without_data_and_comments_are_skipped() {
        let events = decode_all(&[b": OPENROUTER PROCESSING\n\nevent: x\n\nid: 3\nretry: 10\n\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn an_event_name_does_not_leak_into_the_next_event() {
        let events = decode_all(&[b"event: ping\ndata: 1\n\ndata: 2\n\n"]);
        assert_eq!(events[1].event, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

        /// Arbitrary bytes split at arbitrary points never panic, and decode to what the
        /// whole input decodes to.
        #[test]
        fn sse_never_panics_and_ignores_split_points(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = decode_all(&[&bytes]);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(&bytes[last..p]);
                last = p;
            }
            chunks.push(&bytes[last..]);
            prop_assert_eq!(decode_all(&chunks), whole);
        }

        #[test]
        fn sse_of_well_formed_events_round_trips(
            datas in proptest::collection::vec("[^\r\n]{0,40}", 1..20),
            cut in any::<usize>(),
        ) {
            let text: String = datas.iter().map(|d| format!("data: {d}\r\n\r\n")).collect();
            let bytes = text.as_bytes();
            let cut = cut % (bytes.len() + 1);
            let events = decode_all(&[&bytes[..cut], &bytes[cut..]]);
            let got: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
            let want: Vec<&str> = datas.iter().map(String::as_str).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn ndjson_never_panics_and_ignores_split_points(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
            cut in any::<usize>(),
        ) {
            let run = |chunks: &[&[u8]]| {
                let mut d = NdjsonDecoder::new();
                let mut lines = Vec::new();
                for c in chunks {
                    d.push(c);
                    while let Some(l) = d.next_line() { lines.push(l); }
                }
                lines.extend(d.finish());
                lines
            };
            let cut = cut % (bytes.len() + 1);
            prop_assert_eq!(run(&[&bytes[..cut], &bytes[cut..]]), run(&[&bytes]));
        }
    }
}
