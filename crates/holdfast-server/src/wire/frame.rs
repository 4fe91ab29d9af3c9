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
//! WebSocket with permessage-deflate (`Framing::deflate`): a message worth compressing goes as
//! one RSV1 frame whose payload is the envelope head and id in a stored DEFLATE block followed by
//! the message's shared compressed tail (raw: the shared compressed payload). The compressed
//! copies are made once per message, by the first subscriber that needs them
//! ([`SharedDeflater`]). Notices, answers and pings go uncompressed, as RFC 7692 §6 allows.
//!
//! On HTTP/1.1 each piece is one chunk (`<hex len>\r\n … \r\n`); HTTP/1.0 clients get the bytes
//! unframed and the stream ends with the connection.

use std::io::IoSlice;
use std::ops::Range;

use bytes::Bytes;
use holdfast_hub::message::ENVELOPE_HEAD;
use holdfast_hub::Message;
use holdfast_proto::ws::deflate::{self, MessageDeflater};
use holdfast_proto::{sse, ws};

use super::pending::Pending;

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
    /// A held long poll: answered once with a whole HTTP response, then back to keep-alive.
    LongPoll,
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
            Format::LongPoll => 4,
        }
    }

    pub fn label(self) -> &'static str {
        ["sse", "stream", "iframe", "websocket", "longpoll"][self.stats_index()]
    }
}

/// An empty ping: the WebSocket heartbeat (RFC 6455 §5.5.2).
const WS_PING: &[u8] = &[0x89, 0x00];

/// A format plus whether HTTP/1.1 chunked framing wraps each piece, and for WebSocket whether
/// messages may go compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framing {
    pub format: Format,
    pub chunked: bool,
    /// permessage-deflate was agreed with the full 15-bit window, so the shared compressed copies
    /// fit this connection. (A client that limited the server's window gets messages
    /// uncompressed: one compressed copy per window size is not worth keeping.)
    pub deflate: bool,
}

/// The compressor of a push shard: made the first time a message must be compressed, then kept
/// for the shard's life (its state is a few hundred KiB, reset between messages).
#[derive(Default)]
pub(crate) struct SharedDeflater(Option<MessageDeflater>);

impl SharedDeflater {
    fn get(&mut self) -> &mut MessageDeflater {
        self.0.get_or_insert_with(|| MessageDeflater::new(deflate::MAX_WINDOW_BITS))
    }
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
            // The answer is its own heartbeat (at `longpoll_timeout` at the latest).
            (Format::LongPoll, _) => b"",
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

    /// A notice (`holdfast.gap`, `holdfast.closed`) in this format, with the same fields as a
    /// message: an SSE event `id: <id>` / `event:` / `data: <json>`, or an envelope
    /// `{"id":…,"channel":…,"event":…,"json":<json>}`. `id` is the cursor to resume from and
    /// `json` a JSON object.
    pub fn put_notice(
        self,
        out: &mut Vec<u8>,
        callback: Option<&str>,
        channel: &str,
        id: &str,
        event: &str,
        json: &str,
    ) {
        let piece = match self.format {
            // A long poll tells its news in its answer.
            Format::LongPoll => return,
            Format::Sse => format!("id: {id}\nevent: {event}\ndata: {json}\n\n"),
            Format::Ndjson | Format::Iframe | Format::WsJson | Format::WsRaw => {
                let mut envelope = bytes::BytesMut::with_capacity(64 + id.len() + channel.len() + json.len());
                envelope.extend_from_slice(ENVELOPE_HEAD);
                envelope.extend_from_slice(id.as_bytes());
                envelope.extend_from_slice(b"\",\"channel\":");
                holdfast_proto::json::put_string(&mut envelope, channel);
                envelope.extend_from_slice(b",\"event\":");
                holdfast_proto::json::put_string(&mut envelope, event);
                envelope.extend_from_slice(b",\"json\":");
                envelope.extend_from_slice(json.as_bytes());
                envelope.extend_from_slice(b"}");
                let envelope = String::from_utf8_lossy(&envelope).into_owned();
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
    /// Bytes that are part of the format (`id: `, chunk ends).
    Fixed(&'static [u8]),
    /// A message's shared bytes.
    Shared(&'a Bytes),
    /// This subscriber's own bytes, in the scratch buffer.
    Scratch(Range<usize>),
}

impl<'a> Gather<'a> {
    pub fn len(&self) -> usize {
        self.len
    }

    fn fixed(&mut self, bytes: &'static [u8]) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.parts.push(Part::Fixed(bytes));
        }
    }

    fn shared(&mut self, bytes: &'a Bytes) {
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
    /// `deflater` compresses for WebSocket subscribers with `framing.deflate`.
    pub fn message(
        &mut self,
        framing: Framing,
        message: &'a Message,
        id: Id<'a>,
        callback: Option<&str>,
        deflater: &mut SharedDeflater,
    ) {
        match framing.format {
            Format::WsRaw if framing.deflate => return self.ws_raw_deflated(message, deflater),
            Format::WsJson if framing.deflate => return self.ws_envelope_deflated(message, id, deflater),
            // Answered whole by `poll_answer`, never gathered.
            Format::LongPoll => return,
            Format::WsRaw => return self.ws_raw(message),
            Format::WsJson => return self.ws_envelope(message, id),
            _ => {}
        }
        let id_len = id.len();
        let (prefix_len, suffix): (usize, &'static [u8]) = match framing.format {
            Format::Sse => (4, b""),
            Format::Iframe => (16 + callback.map_or(0, str::len) + ENVELOPE_HEAD.len(), b");</script>\n"),
            _ => (ENVELOPE_HEAD.len(), b"\n"),
        };
        let body: &'a Bytes = match framing.format {
            Format::Sse => &message.sse_body,
            _ => &message.envelope_tail,
        };
        let sse_newline = usize::from(framing.format == Format::Sse);
        let frame_len = prefix_len + id_len + sse_newline + body.len() + suffix.len();
        if framing.chunked {
            self.chunk_size_line(frame_len);
        }
        match framing.format {
            Format::Sse => self.fixed(b"id: "),
            Format::Ndjson | Format::WsJson | Format::WsRaw | Format::LongPoll => self.fixed(ENVELOPE_HEAD),
            Format::Iframe => {
                self.fixed(b"<script>parent.");
                self.scratch(callback.unwrap_or("").as_bytes());
                self.fixed(b"(");
                self.fixed(ENVELOPE_HEAD);
            }
        }
        self.id(id);
        if sse_newline == 1 {
            self.fixed(b"\n");
        }
        self.shared(body);
        self.fixed(suffix);
        if framing.chunked {
            self.fixed(CHUNK_END);
        }
    }

    /// A message id: shared bytes, or this subscriber's own cursor copied into the scratch.
    fn id(&mut self, id: Id<'a>) {
        match id {
            Id::Shared(bytes) => self.shared(bytes),
            Id::Own(text) => self.scratch(text.as_bytes()),
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
        let id_len = id.len();
        let len = ENVELOPE_HEAD.len() + id_len + message.envelope_tail.len();
        let (header, header_len) = ws::frame::header(true, ws::frame::OpCode::Text, len as u64);
        self.scratch(&header[..header_len]);
        self.fixed(ENVELOPE_HEAD);
        self.id(id);
        self.shared(&message.envelope_tail);
    }

    /// The envelope as a compressed text frame: head and id in a stored block, then the shared
    /// compressed tail. Uncompressed when the tail does not compress or the id is too long for
    /// one stored block.
    fn ws_envelope_deflated(&mut self, message: &'a Message, id: Id<'a>, deflater: &mut SharedDeflater) {
        let id_len = id.len();
        let stored = ENVELOPE_HEAD.len() + id_len;
        // The shared copy is judged against a typical one-channel prefix, so it is the same for
        // every subscriber whoever asks first.
        let overhead = deflate::STORED_BLOCK_OVERHEAD + ENVELOPE_HEAD.len() + message.cursor.len();
        let tail = message.deflated_tail(|tail| deflater.get().deflate(tail, overhead));
        let Some(tail) = tail.filter(|_| stored <= usize::from(u16::MAX)) else {
            return self.ws_envelope(message, id);
        };
        let len = deflate::STORED_BLOCK_OVERHEAD + stored + tail.len();
        let (header, header_len) = ws::frame::header_with(true, true, ws::frame::OpCode::Text, len as u64);
        self.scratch(&header[..header_len]);
        self.scratch(&deflate::stored_block_header(stored as u16));
        self.fixed(ENVELOPE_HEAD);
        self.id(id);
        self.shared(tail);
    }

    /// The payload alone: a text frame when it is UTF-8, else a binary frame.
    fn ws_raw(&mut self, message: &'a Message) {
        let (header, header_len) = ws::frame::header(true, raw_opcode(message), message.payload.len() as u64);
        self.scratch(&header[..header_len]);
        self.shared(&message.payload);
    }

    /// The payload compressed (the shared copy), or as [`Gather::ws_raw`] when it does not
    /// compress.
    fn ws_raw_deflated(&mut self, message: &'a Message, deflater: &mut SharedDeflater) {
        let Some(payload) = message.deflated_payload(|payload| deflater.get().deflate(payload, 0)) else {
            return self.ws_raw(message);
        };
        let (header, header_len) = ws::frame::header_with(true, true, raw_opcode(message), payload.len() as u64);
        self.scratch(&header[..header_len]);
        self.shared(payload);
    }

    /// The I/O vectors, in order.
    pub fn slices(&self) -> Vec<IoSlice<'_>> {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Fixed(bytes) => IoSlice::new(bytes),
                Part::Shared(bytes) => IoSlice::new(bytes),
                Part::Scratch(range) => IoSlice::new(&self.scratch[range.clone()]),
            })
            .collect()
    }

    /// The bytes from offset `from` on, for a subscriber whose socket is full: message bytes
    /// stay shared (a reference, not a copy); only this subscriber's own small pieces are copied.
    pub fn tail_from(&self, from: usize) -> Pending {
        let mut tail = Pending::default();
        let mut offset = 0;
        for part in &self.parts {
            let len = match part {
                Part::Fixed(bytes) => bytes.len(),
                Part::Shared(bytes) => bytes.len(),
                Part::Scratch(range) => range.len(),
            };
            let end = offset + len;
            if end > from {
                let skip = from.saturating_sub(offset);
                tail.push(match part {
                    Part::Fixed(bytes) => Bytes::from_static(&bytes[skip..]),
                    Part::Shared(bytes) => bytes.slice(skip..),
                    Part::Scratch(range) => Bytes::copy_from_slice(&self.scratch[range.start + skip..range.end]),
                });
            }
            offset = end;
        }
        tail
    }
}

/// Raw WebSocket payloads go as text when they are UTF-8, else as binary.
fn raw_opcode(message: &Message) -> ws::frame::OpCode {
    if std::str::from_utf8(&message.payload).is_ok() {
        ws::frame::OpCode::Text
    } else {
        ws::frame::OpCode::Binary
    }
}

/// A message id: shared by all subscribers of one channel, or this subscriber's own cursor.
pub(crate) enum Id<'a> {
    Shared(&'a Bytes),
    Own(String),
}

impl Id<'_> {
    fn len(&self) -> usize {
        match self {
            Id::Shared(bytes) => bytes.len(),
            Id::Own(text) => text.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_hub::Position;

    static CUR: Bytes = Bytes::from_static(b"CUR");
    static X: Bytes = Bytes::from_static(b"X");

    fn joined(gather: &Gather) -> Vec<u8> {
        gather.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    /// A framing without compression.
    fn plain(format: Format, chunked: bool) -> Framing {
        Framing { format, chunked, deflate: false }
    }

    /// One message gathered with a fresh deflater.
    fn gathered<'a>(framing: Framing, m: &'a Message, id: Id<'a>, callback: Option<&str>) -> Gather<'a> {
        let mut gather = Gather::default();
        gather.message(framing, m, id, callback, &mut SharedDeflater::default());
        gather
    }

    fn message() -> Message {
        Message::new("c".into(), Position { epoch: 1, seq: 1 }, Some("tick"), Bytes::from_static(b"a\nb").into())
    }

    #[test]
    fn sse_frame_chunked_and_not() {
        let m = message();
        let gather = gathered(plain(Format::Sse, false), &m, Id::Shared(&CUR), None);
        assert_eq!(joined(&gather), b"id: CUR\nevent: tick\ndata: a\ndata: b\n\n");
        let gather = gathered(plain(Format::Sse, true), &m, Id::Own("CUR".into()), None);
        let frame = b"id: CUR\nevent: tick\ndata: a\ndata: b\n\n";
        let mut want = format!("{:x}\r\n", frame.len()).into_bytes();
        want.extend_from_slice(frame);
        want.extend_from_slice(b"\r\n");
        assert_eq!(joined(&gather), want);
        assert_eq!(gather.len(), want.len());
        assert_eq!(gather.tail_from(5).to_vec(), want[5..].to_vec());
        assert_eq!(gather.tail_from(5).len(), want.len() - 5);
    }

    #[test]
    fn ndjson_and_iframe_frames_carry_the_envelope() {
        let m = message();
        let gather = gathered(plain(Format::Ndjson, false), &m, Id::Shared(&X), None);
        let line = String::from_utf8(joined(&gather)).unwrap();
        assert_eq!(line, "{\"id\":\"X\",\"channel\":\"c\",\"event\":\"tick\",\"data\":\"a\\nb\"}\n");
        let gather = gathered(plain(Format::Iframe, true), &m, Id::Shared(&X), Some("cb.on"));
        let text = String::from_utf8(joined(&gather)).unwrap();
        let body =
            "<script>parent.cb.on({\"id\":\"X\",\"channel\":\"c\",\"event\":\"tick\",\"data\":\"a\\nb\"});</script>\n";
        assert_eq!(text, format!("{:x}\r\n{body}\r\n", body.len()));
    }

    #[test]
    fn heartbeats_are_correctly_chunked() {
        for format in [Format::Sse, Format::Ndjson, Format::Iframe] {
            let plain = Framing { format, chunked: false, deflate: false }.heartbeat();
            let mut chunked = Vec::new();
            Framing { format, chunked: true, deflate: false }.put_piece(&mut chunked, plain);
            assert_eq!(Framing { format, chunked: true, deflate: false }.heartbeat(), &chunked[..]);
        }
    }

    /// The frames in `bytes` (server frames: unmasked, single-frame messages) as (first byte,
    /// payload).
    fn frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let head = ws::frame::FrameHeader::parse_with(bytes, true).unwrap().unwrap();
            let end = head.header_len + head.payload_len as usize;
            out.push((bytes[0], bytes[head.header_len..end].to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    #[test]
    fn deflate_subscribers_get_one_compressed_frame_from_the_shared_copy() {
        let payload = "{\"price\":101.25,\"symbol\":\"ABC\",\"venue\":\"X\"}".repeat(6);
        let m = Message::new("prices".into(), Position { epoch: 1, seq: 7 }, None, Bytes::from(payload.clone()).into());
        let mut deflater = SharedDeflater::default();
        let deflate = Framing { format: Format::WsJson, chunked: false, deflate: true };
        for id in [Id::Shared(&m.cursor), Id::Own("MULTI-CHANNEL-CURSOR".into())] {
            let id_text = match &id {
                Id::Shared(bytes) => String::from_utf8(bytes.to_vec()).unwrap(),
                Id::Own(text) => text.clone(),
            };
            let mut gather = Gather::default();
            gather.message(deflate, &m, id, None, &mut deflater);
            let frames = frames(&joined(&gather));
            assert_eq!(frames.len(), 1);
            // FIN, RSV1, text.
            assert_eq!(frames[0].0, 0xC1);
            let envelope = m.envelope(id_text.as_bytes());
            assert!(frames[0].1.len() < envelope.len() / 2, "{} of {} bytes", frames[0].1.len(), envelope.len());
            assert_eq!(deflate::inflate(&frames[0].1, 1 << 20).unwrap(), envelope[..]);
        }
        // The compressed tail was made once and is shared.
        let first = m.deflated_tail(|_| panic!("compressed again")).unwrap().clone();
        assert_eq!(first.as_ptr(), m.deflated_tail(|_| None).unwrap().as_ptr());

        // Raw: the payload compressed, as text.
        let mut gather = Gather::default();
        gather.message(Framing { format: Format::WsRaw, ..deflate }, &m, Id::Shared(&m.cursor), None, &mut deflater);
        let frames = frames(&joined(&gather));
        assert_eq!(frames[0].0, 0xC1);
        assert_eq!(deflate::inflate(&frames[0].1, 1 << 20).unwrap(), payload.as_bytes());
    }

    #[test]
    fn short_messages_go_uncompressed_even_with_deflate() {
        let m = message();
        let framing = Framing { format: Format::WsJson, chunked: false, deflate: true };
        let gather = gathered(framing, &m, Id::Shared(&X), None);
        let frames = frames(&joined(&gather));
        assert_eq!(frames[0].0, 0x81);
        assert_eq!(frames[0].1, m.envelope(b"X"));
    }
}
