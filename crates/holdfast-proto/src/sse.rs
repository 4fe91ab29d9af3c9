//! Server-Sent Events framing (WHATWG HTML §9.2 "Server-sent events").
//!
//! The encoder writes the parts of an event that are the same for every subscriber (`event:` and
//! `data:` lines); the `id:` line holds a per-subscription cursor and is written separately by
//! [`put_id_line`]. The parser is the client side's (and the tests').
//!
//! Rules kept here: one `data:` line per payload line, with CRLF, LF and CR all ending a line
//! (a CR inside a data line would otherwise end it early in a browser); field values never
//! contain CR, LF or NUL (an `id` with NUL is ignored by browsers); the blank line ends an event.

use bytes::{BufMut, BytesMut};

/// Writes `id: <id>\n`. The caller guarantees `id` holds no CR, LF or NUL (cursors are base64url).
pub fn put_id_line(out: &mut BytesMut, id: &[u8]) {
    debug_assert!(!id.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    out.put_slice(b"id: ");
    out.put_slice(id);
    out.put_u8(b'\n');
}

/// Writes the `event:` line (when the type is not the default `message`), one `data:` line per
/// line of `data`, and the blank line that dispatches the event.
pub fn put_event_body(out: &mut BytesMut, event: Option<&str>, data: &str) {
    if let Some(event) = event.filter(|e| *e != "message") {
        out.put_slice(b"event: ");
        put_single_line(out, event);
        out.put_u8(b'\n');
    }
    for line in split_lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Writes `retry: <ms>\n\n`, sent first so browsers reconnect at this pace.
pub fn put_retry(out: &mut BytesMut, millis: u64) {
    out.put_slice(b"retry: ");
    out.put_slice(millis.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// A comment line: ignored by clients, keeps proxies and the client's watchdog satisfied.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// Splits on CRLF, LF or CR. An empty payload is one empty line (`data: `), so the event still
/// fires with empty data.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(text)
            }
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
        }
    })
}

/// Event types come from publishers; any CR/LF/NUL is replaced so one field cannot become two.
fn put_single_line(out: &mut BytesMut, value: &str) {
    for byte in value.bytes() {
        out.put_u8(if matches!(byte, b'\r' | b'\n' | 0) { b' ' } else { byte });
    }
}

/// One dispatched event, as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The last event ID after this event (it persists across events, as in browsers).
    pub id: String,
    /// The event type (`message` when none was given).
    pub event: String,
    /// The data lines joined with LF.
    pub data: String,
}

/// An incremental SSE parser, following the WHATWG "interpret an event stream" steps.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// Whether the previous byte was a CR (so a following LF belongs to the same line end).
    after_cr: bool,
    last_id: String,
    event: String,
    data: String,
    has_data: bool,
    /// The last `retry:` value, in milliseconds.
    pub retry: Option<u64>,
    /// Comment lines seen (heartbeats).
    pub comments: usize,
}

impl Parser {
    /// Feeds bytes; returns the events they completed.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\r' | b'\n' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line) {
                        events.push(event);
                    }
                }
                _ => self.line.push(byte),
            }
        }
        events
    }

    fn line_done(&mut self, line: &[u8]) -> Option<Event> {
        let line = String::from_utf8_lossy(line);
        if line.is_empty() {
            let event = self.has_data.then(|| Event {
                id: self.last_id.clone(),
                event: if self.event.is_empty() { "message".into() } else { self.event.clone() },
                data: self.data.clone(),
            });
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            return event;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = value.to_string(),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = value.to_string(),
            "retry" => self.retry = value.parse().ok().or(self.retry),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(id: &str, event: Option<&str>, data: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_id_line(&mut out, id.as_bytes());
        put_event_body(&mut out, event, data);
        out.to_vec()
    }

    #[test]
    fn multi_line_payload_is_one_data_line_per_line() {
        let bytes = frame("c1", Some("price"), "a\r\nb\nc\rd");
        assert_eq!(bytes, b"id: c1\nevent: price\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn default_event_type_is_omitted_and_empty_payload_still_dispatches() {
        assert_eq!(frame("x", Some("message"), ""), b"id: x\ndata: \n\n");
        let mut parser = Parser::default();
        let events = parser.feed(&frame("x", None, ""));
        assert_eq!(events, vec![Event { id: "x".into(), event: "message".into(), data: String::new() }]);
    }

    #[test]
    fn event_type_cannot_inject_fields() {
        assert_eq!(frame("1", Some("a\ndata: evil"), "ok"), b"id: 1\nevent: a data: evil\ndata: ok\n\n");
    }

    #[test]
    fn parser_round_trips_split_at_every_byte() {
        let mut stream = Vec::new();
        let mut retry = BytesMut::new();
        put_retry(&mut retry, 2000);
        stream.extend_from_slice(&retry);
        stream.extend_from_slice(HEARTBEAT);
        stream.extend_from_slice(&frame("c1", None, "line one\nline two"));
        stream.extend_from_slice(&frame("c2", Some("tick"), "x\r\ny"));
        for split in 0..=stream.len() {
            let mut parser = Parser::default();
            let mut events = parser.feed(&stream[..split]);
            events.extend(parser.feed(&stream[split..]));
            assert_eq!(events.len(), 2, "split {split}");
            assert_eq!(events[0].data, "line one\nline two");
            assert_eq!(events[1], Event { id: "c2".into(), event: "tick".into(), data: "x\ny".into() });
            assert_eq!(parser.retry, Some(2000));
            assert_eq!(parser.comments, 1);
        }
    }
}
