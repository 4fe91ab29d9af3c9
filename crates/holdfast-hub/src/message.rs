//! One published message, encoded once per wire format at publish time. Every subscriber gets
//! clones of the same `Bytes`; only the cursor (for multi-channel subscriptions) is per subscriber.
//!
//! Each format is split around the message id (the cursor after this message):
//! - SSE: `id: <cursor>\n` then [`Message::sse_body`] (`event:`/`data:` lines and the blank line);
//! - JSON envelope: `{"id":"<cursor>` then [`Message::envelope_tail`]
//!   (`","channel":"…","event":"…","data":"…"}`), used by streaming, iframe, long-poll and
//!   WebSocket alike. A payload published as JSON ([`Payload::json`]) is carried as a value,
//!   `"json":…`, instead of the string `"data":"…"`; one that is not UTF-8 as `"data_b64":"…"`.
//!
//! For WebSocket connections with permessage-deflate, the envelope tail and the raw payload are
//! also kept compressed, each computed the first time a subscriber needs it
//! ([`Message::deflated_tail`], [`Message::deflated_payload`]) and then shared like the rest.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::{Bytes, BytesMut};
use holdfast_proto::{json, sse};

use crate::channel::Position;
use crate::cursor::Cursor;

/// A payload as published: its bytes, and whether they are a JSON text (checked by the
/// publisher) that envelopes carry as a value rather than as a string.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// The bytes, as published.
    pub bytes: Bytes,
    /// The bytes are a valid JSON text (`Content-Type: application/json`).
    pub is_json: bool,
}

impl Payload {
    /// Opaque bytes: a string in envelopes when UTF-8, else base64.
    pub fn text(bytes: Bytes) -> Payload {
        Payload { bytes, is_json: false }
    }

    /// A JSON text the caller has checked to be valid.
    pub fn json(bytes: Bytes) -> Payload {
        Payload { bytes, is_json: true }
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload::text(bytes)
    }
}

/// A message in a channel's history.
#[derive(Debug)]
pub struct Message {
    /// The channel it was published to.
    pub channel: Arc<str>,
    /// Its place in the channel.
    pub position: Position,
    /// The event type given by the publisher (`None` = `message`).
    pub event: Option<Box<str>>,
    /// The payload as published.
    pub payload: Bytes,
    /// The payload is JSON, carried in envelopes as the value `"json":…`.
    pub is_json: bool,
    /// When it was published (for `history_seconds`).
    pub published_at: Instant,
    /// The single-channel cursor after this message (its id for one-channel subscriptions).
    pub cursor: Bytes,
    /// SSE event after the `id:` line.
    pub sse_body: Bytes,
    /// JSON envelope after the id value.
    pub envelope_tail: Bytes,
    /// `envelope_tail` compressed (`None`: not worth it), once some subscriber needed it.
    deflated_tail: OnceLock<Option<Bytes>>,
    /// `payload` compressed, likewise.
    deflated_payload: OnceLock<Option<Bytes>>,
}

/// The JSON envelope's opening, up to the id value.
pub const ENVELOPE_HEAD: &[u8] = b"{\"id\":\"";

impl Message {
    /// Encodes a message for every format.
    pub fn new(channel: Arc<str>, position: Position, event: Option<&str>, payload: Payload) -> Message {
        let mut message = Message::encode(channel, event, payload);
        message.place(position, Instant::now());
        message
    }

    /// Gives an encoded message its place in the channel: its position, the cursor after it, and
    /// its publish time. Done under the channel's lock; everything that grows with the payload
    /// was encoded before ([`Message::encode`]).
    pub(crate) fn place(&mut self, position: Position, now: Instant) {
        self.position = position;
        self.cursor = Bytes::from(Cursor::new([(&*self.channel, position)]).encode());
        self.published_at = now;
    }

    /// Encodes a message for every format, before it has a position (see [`Message::place`]),
    /// so the work that grows with the payload is done outside the channel's lock.
    pub(crate) fn encode(channel: Arc<str>, event: Option<&str>, payload: Payload) -> Message {
        let Payload { bytes: payload, is_json } = payload;
        let position = Position { epoch: 0, seq: 0 };
        let cursor = Bytes::new();
        let text = std::str::from_utf8(&payload).ok();
        // A JSON text is UTF-8 (RFC 8259 §8.1); anything else is carried as bytes.
        let is_json = is_json && text.is_some();

        let mut sse_body = BytesMut::with_capacity(payload.len() + 32);
        match text {
            Some(text) => sse::put_event_body(&mut sse_body, event, text),
            None => {
                // SSE carries text: a binary payload goes as base64, announced by a comment.
                sse_body.extend_from_slice(b": data is base64\n");
                sse::put_event_body(&mut sse_body, event, &STANDARD.encode(&payload));
            }
        }

        let mut tail = BytesMut::with_capacity(payload.len() + channel.len() + 48);
        tail.extend_from_slice(b"\",\"channel\":");
        json::put_string(&mut tail, &channel);
        tail.extend_from_slice(b",\"event\":");
        json::put_string(&mut tail, event.unwrap_or("message"));
        match text {
            Some(text) if is_json => {
                tail.extend_from_slice(b",\"json\":");
                json::put_json(&mut tail, text);
            }
            Some(text) => {
                tail.extend_from_slice(b",\"data\":");
                json::put_string(&mut tail, text);
            }
            None => {
                tail.extend_from_slice(b",\"data_b64\":\"");
                tail.extend_from_slice(STANDARD.encode(&payload).as_bytes());
                tail.extend_from_slice(b"\"");
            }
        }
        tail.extend_from_slice(b"}");

        Message {
            channel,
            position,
            event: event.map(Into::into),
            payload,
            is_json,
            published_at: Instant::now(),
            cursor,
            sse_body: sse_body.freeze(),
            envelope_tail: tail.freeze(),
            deflated_tail: OnceLock::new(),
            deflated_payload: OnceLock::new(),
        }
    }

    /// The envelope tail compressed by `deflate` the first time this is asked (later calls share
    /// that result); `None` when `deflate` found it not worth compressing. `deflate` must give
    /// the same kind of result to every caller: a self-contained DEFLATE stream
    /// (`holdfast_proto::ws::deflate::MessageDeflater`).
    pub fn deflated_tail(&self, deflate: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Option<&Bytes> {
        self.deflated_tail.get_or_init(|| deflate(&self.envelope_tail).map(Bytes::from)).as_ref()
    }

    /// The payload compressed, like [`Message::deflated_tail`].
    pub fn deflated_payload(&self, deflate: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Option<&Bytes> {
        self.deflated_payload.get_or_init(|| deflate(&self.payload).map(Bytes::from)).as_ref()
    }

    /// Bytes this message holds, counted against `history_max_bytes`.
    pub fn size(&self) -> usize {
        self.payload.len() + self.cursor.len() + self.sse_body.len() + self.envelope_tail.len() + 160
    }

    /// The whole JSON envelope with the given id (cursor).
    pub fn envelope(&self, id: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENVELOPE_HEAD.len() + id.len() + self.envelope_tail.len());
        out.extend_from_slice(ENVELOPE_HEAD);
        out.extend_from_slice(id);
        out.extend_from_slice(&self.envelope_tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8], event: Option<&str>) -> Message {
        Message::new("room:1".into(), Position { epoch: 9, seq: 3 }, event, Bytes::copy_from_slice(payload).into())
    }

    #[test]
    fn envelope_is_valid_json_with_the_cursor_as_id() {
        let m = message(b"hello \"world\"\n<b>", Some("chat"));
        let envelope = String::from_utf8(m.envelope(&m.cursor)).unwrap();
        let cursor = std::str::from_utf8(&m.cursor).unwrap();
        assert!(envelope.starts_with(&format!("{{\"id\":\"{cursor}\",\"channel\":\"room:1\",\"event\":\"chat\",")));
        assert!(envelope.ends_with(r#""data":"hello \"world\"\n\u003cb\u003e"}"#), "{envelope}");
        assert_eq!(Cursor::decode(cursor).unwrap().position("room:1"), Some(Position { epoch: 9, seq: 3 }));
    }

    #[test]
    fn binary_payload_is_base64_in_json_and_sse() {
        let m = message(&[0xff, 0x00, 0x80], None);
        assert!(std::str::from_utf8(&m.envelope_tail).unwrap().ends_with(r#""event":"message","data_b64":"/wCA"}"#));
        assert_eq!(&m.sse_body[..], b": data is base64\ndata: /wCA\n\n");
    }

    #[test]
    fn sse_body_splits_lines() {
        assert_eq!(&message(b"a\nb", Some("x")).sse_body[..], b"event: x\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn json_payloads_are_values_in_envelopes_and_text_in_sse() {
        let payload = Payload::json(Bytes::from_static(b"{\"a\": [1, \"<b>\"]}"));
        let m = Message::new("c".into(), Position { epoch: 1, seq: 1 }, None, payload);
        let envelope: serde_json::Value = serde_json::from_slice(&m.envelope(b"X")).unwrap();
        assert_eq!(envelope["json"], serde_json::json!({"a": [1, "<b>"]}));
        assert!(envelope.get("data").is_none());
        assert!(!m.envelope_tail.contains(&b'<'));
        assert_eq!(&m.sse_body[..], b"data: {\"a\": [1, \"<b>\"]}\n\n");
    }
}
