//! How one message, heartbeat or notice looks on each streaming transport, assembled from shared
//! pieces into an I/O-vector list so a message's bytes are never copied per subscriber.
//!
//! | format | one message | heartbeat |
//! | --- | --- | --- |
//! | SSE | `id: <cursor>\n` + `event:`/`data:` lines + `\n` | `:\n\n` |
//! | NDJSON (`transport=stream`) | `{"id":"<cursor>",…}\n` | `\n` |
//! | iframe | `<script>parent.<cb>({"id":"<cursor>",…});</script>\n` | `<!-- -->\n` |
//! | WebSocket (JSON) | a text frame holding the envelope | a ping frame |
//! | WebSocket (raw) | the payload as a text frame (UTF-8) or a binary frame | a ping frame |
//!
//! On HTTP/1.1 each piece is one chunk (`<hex len>\r\n … \r\n`); HTTP/1.0 clients get the bytes
//! unframed and the stream ends with the connection.

use std::io::IoSlice;
use std::ops::Range;

use holdfast_hub::message::ENVELOPE_HEAD;
use holdfast_hub::Message;
use holdfast_proto::{sse, ws};

/// A streaming wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Sse,
    Ndjson,
    Iframe,
    /// WebSocket with JSON envelopes (the default).
    WsJson,
    /// WebSocket with raw payloads (`?format=raw`).
    WsRaw,
}

impl Format {
    pub fn is_websocket(self) -> bool {
        matches!(self, Format::WsJson | Format::WsRaw)
    }

    /// Which `subscribers` counter of `/admin/stats` this format counts in.
    pub fn stats_index(self) -> usize {
        match self {
            Format::Sse => 0,
            Format::Ndjson => 1,
            Format::Iframe => 2,
            Format::WsJson | Format::WsRaw => 3,
        }
    }

    pub fn label(self) -> &'static str {
        ["sse", "stream", "iframe", "websocket"][self.stats_index()]
    }
}

/// An empty ping: the WebSocket heartbeat (RFC 6455 §5.5.2).
const WS_PING: &[u8] = &[0x89, 0x00];

/// A format plus whether HTTP/1.1 chunked framing wraps each piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    pub format: Format,
    pub chunked: bool,
}

const CHUNK_END: &[u8] = b"\r\n";
/// The last chunk: a clean end of a chunked stream.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

impl Framing {
    /// The heartbeat, framed.
    pub fn heartbeat(self) -> &'static [u8] {
        match (self.format, self.chunked) {
            (Format::Sse, false) => sse::HEARTBEAT,
            (Format::Sse, true) => b"3\r\n:\n\n\r\n",
            (Format::Ndjson, false) => b"\n",
            (Format::Ndjson, true) => b"1\r\n\n\r\n",
            (Format::Iframe, false) => b"<!-- -->\n",
            (Format::Iframe, true) => b"9\r\n<!-- -->\n\r\n",
            (Format::WsJson | Format::WsRaw, _) => WS_PING,
        }
    }

    /// Appends a complete piece (already in the format's syntax) with chunk framing.
    pub fn put_piece(self, out: &mut Vec<u8>, piece: &[u8]) {
        if piece.is_empty() {
            return;
        }
        if self.format.is_websocket() {
            let (header, len) = ws::frame::header(true, ws::frame::OpCode::Text, piece.len() as u64);
            out.extend_from_slice(&header[..len]);
            out.extend_from_slice(piece);
            return;
        }
        if self.chunked {
            out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        }
        out.extend_from_slice(piece);
        if self.chunked {
            out.extend_from_slice(CHUNK_END);
        }
    }

    /// A notice (gap, closed) in this format: an SSE event of type `event` whose data is the JSON
    /// object `data`, or an envelope `{"channel":…,"event":…,"data":<object>}`.
    pub fn put_notice(self, out: &mut Vec<u8>, callback: Option<&str>, channel: Option<&str>, event: &str, data: &str) {
        let piece = match self.format {
            Format::Sse => format!("event: {event}\ndata: {data}\n\n"),
            Format::Ndjson | Format::Iframe | Format::WsJson | Format::WsRaw => {
                let channel = channel.map_or("null".to_string(), |c| format!("\"{c}\""));
                let envelope = format!("{{\"channel\":{channel},\"event\":\"{event}\",\"data\":{data}}}");
                match self.format {
                    Format::Iframe => format!("<script>parent.{}({envelope});</script>\n", callback.unwrap_or("")),
                    Format::Ndjson => format!("{envelope}\n"),
                    _ => envelope,
                }
            }
        };
        self.put_piece(out, piece.as_bytes());
    }
}

/// A list of byte ranges to write in one `writev`: shared slices borrowed from messages, and
/// small per-subscriber pieces (chunk sizes, cursors, callbacks) in a scratch buffer.
#[derive(Default)]
pub(crate) struct Gather<'a> {
    parts: Vec<Part<'a>>,
    scratch: Vec<u8>,
    len: usize,
}

enum Part<'a> {
    Shared(&'a [u8]),
    Scratch(Range<usize>),
}

impl<'a> Gather<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    fn shared(&mut self, bytes: &'a [u8]) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push(Part::Shared(bytes));
        }
    }

    fn scratch(&mut self, bytes: &[u8]) {
        let start = self.scratch.len();
        self.scratch.extend_from_slice(bytes);
        self.len += bytes.len();
        self.parts.push(Part::Scratch(start..self.scratch.len()));
    }

    /// Adds one message with its id: `shared_id` when every subscriber has the same id (one
    /// channel), else `own_id` (this subscriber's multi-channel cursor).
    pub fn message(&mut self, framing: Framing, message: &'a Message, id: Id<'a>, callback: Option<&str>) {
        match framing.format {
            Format::WsRaw => return self.ws_raw(message),
            Format::WsJson => return self.ws_envelope(message, id),
            _ => {}
        }
        let id_len = match id {
            Id::Shared(bytes) => bytes.len(),
            Id::Own(ref text) => text.len(),
        };
        let (prefix_len, suffix): (usize, &'static [u8]) = match framing.format {
            Format::Sse => (4, b""),
            Format::Iframe => (16 + callback.map_or(0, str::len) + ENVELOPE_HEAD.len(), b");</script>\n"),
            _ => (ENVELOPE_HEAD.len(), b"\n"),
        };
        let body: &'a [u8] = match framing.format {
            Format::Sse => &message.sse_body,
            _ => &message.envelope_tail,
        };
        let sse_newline = usize::from(framing.format == Format::Sse);
        let frame_len = prefix_len + id_len + sse_newline + body.len() + suffix.len();
        if framing.chunked {
            self.chunk_size_line(frame_len);
        }
        match framing.format {
            Format::Sse => self.shared(b"id: "),
            Format::Ndjson | Format::WsJson | Format::WsRaw => self.shared(ENVELOPE_HEAD),
            Format::Iframe => {
                self.shared(b"<script>parent.");
                self.scratch(callback.unwrap_or("").as_bytes());
                self.shared(b"(");
                self.shared(ENVELOPE_HEAD);
            }
        }
        match id {
            Id::Shared(bytes) => self.shared(bytes),
            Id::Own(text) => self.scratch(text.as_bytes()),
        }
        if sse_newline == 1 {
            self.shared(b"\n");
        }
        self.shared(body);
        self.shared(suffix);
        if framing.chunked {
            self.shared(CHUNK_END);
        }
    }

    /// `<hex length>\r\n`, formatted on the stack (this runs per message per subscriber).
    fn chunk_size_line(&mut self, len: usize) {
        let mut line = [0u8; 18];
        let mut start = 16;
        let mut n = len;
        loop {
            start -= 1;
            line[start] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        line[16] = b'\r';
        line[17] = b'\n';
        self.scratch(&line[start..]);
    }

    /// A text frame holding the envelope.
    fn ws_envelope(&mut self, message: &'a Message, id: Id<'a>) {
        let id_len = match id {
            Id::Shared(bytes) => bytes.len(),
            Id::Own(ref text) => text.len(),
        };
        let len = ENVELOPE_HEAD.len() + id_len + message.envelope_tail.len();
        let (header, header_len) = ws::frame::header(true, ws::frame::OpCode::Text, len as u64);
        self.scratch(&header[..header_len]);
        self.shared(ENVELOPE_HEAD);
        match id {
            Id::Shared(bytes) => self.shared(bytes),
            Id::Own(text) => self.scratch(text.as_bytes()),
        }
        self.shared(&message.envelope_tail);
    }

    /// The payload alone: a text frame when it is UTF-8, else a binary frame.
    fn ws_raw(&mut self, message: &'a Message) {
        let opcode = if std::str::from_utf8(&message.payload).is_ok() {
            ws::frame::OpCode::Text
        } else {
            ws::frame::OpCode::Binary
        };
        let (header, header_len) = ws::frame::header(true, opcode, message.payload.len() as u64);
        self.scratch(&header[..header_len]);
        self.shared(&message.payload);
    }

    /// The I/O vectors, in order.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Shared(bytes) => IoSlice::new(bytes),
                Part::Scratch(range) => IoSlice::new(&self.scratch[range.clone()]),
            })
            .collect()
    }

    /// The bytes from offset `from` on, copied (kept by a subscriber whose socket is full).
    pub fn tail_from(&self, from: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len.saturating_sub(from));
        let mut offset = 0;
        for slice in self.slices() {
            let end = offset + slice.len();
            if end > from {
                out.extend_from_slice(&slice[from.saturating_sub(offset)..]);
            }
            offset = end;
        }
        out
    }
}

/// A message id: shared by all subscribers of one channel, or this subscriber's own cursor.
pub(crate) enum Id<'a> {
    Shared(&'a [u8]),
    Own(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use holdfast_hub::Position;

    fn joined(gather: &Gather) -> Vec<u8> {
        gather.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    fn message() -> Message {
        Message::new("c".into(), Position { epoch: 1, seq: 1 }, Some("tick"), Bytes::from_static(b"a\nb"))
    }

    #[test]
    fn sse_frame_chunked_and_not() {
        let m = message();
        let mut gather = Gather::default();
        gather.message(Framing { format: Format::Sse, chunked: false }, &m, Id::Shared(b"CUR"), None);
        assert_eq!(joined(&gather), b"id: CUR\nevent: tick\ndata: a\ndata: b\n\n");
        let mut gather = Gather::default();
        gather.message(Framing { format: Format::Sse, chunked: true }, &m, Id::Own("CUR".into()), None);
        let frame = b"id: CUR\nevent: tick\ndata: a\ndata: b\n\n";
        let mut want = format!("{:x}\r\n", frame.len()).into_bytes();
        want.extend_from_slice(frame);
        want.extend_from_slice(b"\r\n");
        assert_eq!(joined(&gather), want);
        assert_eq!(gather.len(), want.len());
        assert_eq!(gather.tail_from(5), want[5..].to_vec());
    }

    #[test]
    fn ndjson_and_iframe_frames_carry_the_envelope() {
        let m = message();
        let mut gather = Gather::default();
        gather.message(Framing { format: Format::Ndjson, chunked: false }, &m, Id::Shared(b"X"), None);
        let line = String::from_utf8(joined(&gather)).unwrap();
        assert_eq!(line, "{\"id\":\"X\",\"channel\":\"c\",\"event\":\"tick\",\"data\":\"a\\nb\"}\n");
        let mut gather = Gather::default();
        let framing = Framing { format: Format::Iframe, chunked: true };
        gather.message(framing, &m, Id::Shared(b"X"), Some("cb.on"));
        let text = String::from_utf8(joined(&gather)).unwrap();
        let body =
            "<script>parent.cb.on({\"id\":\"X\",\"channel\":\"c\",\"event\":\"tick\",\"data\":\"a\\nb\"});</script>\n";
        assert_eq!(text, format!("{:x}\r\n{body}\r\n", body.len()));
    }

    #[test]
    fn heartbeats_are_correctly_chunked() {
        for format in [Format::Sse, Format::Ndjson, Format::Iframe] {
            let plain = Framing { format, chunked: false }.heartbeat();
            let mut chunked = Vec::new();
            Framing { format, chunked: true }.put_piece(&mut chunked, plain);
            assert_eq!(Framing { format, chunked: true }.heartbeat(), &chunked[..]);
        }
    }
}
