//! Decoding client frames (RFC 6455 §5, §8) into messages and control events, with the close
//! code each protocol failure is answered with (§7.4.1).
//!
//! The decoder is buffer-in: the caller appends what it read to a `BytesMut` and calls
//! [`Decoder::decode`] until it answers `Ok(None)`. A frame stays in the buffer until all of it
//! has arrived, then is taken off at once; the decoder never reserves a frame's declared length.
//! Single-frame messages and control payloads are split off the caller's buffer without a copy
//! (they share its allocation while alive); only fragmented messages are copied, into a buffer the
//! decoder holds until the final fragment. Between messages it holds nothing: it is 16 bytes.
//!
//! With permessage-deflate negotiated ([`Decoder::with_deflate`]), a message whose first frame
//! has RSV1 set is inflated once complete ([`super::deflate::inflate`], with no context from
//! earlier messages, as the server's answer asks) and checked after inflating: the size limit
//! applies to the compressed frames and to the inflated message.
//!
//! What it does not own: answering pings, the close handshake, timeouts, and what a message means
//! (the server's); the wire layout of a header (see [`super::frame`]).

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{apply_mask, FrameHeader, OpCode};
use super::{close, deflate};

/// One event from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete text message, valid UTF-8 (reassembled when it came in fragments).
    Text(Bytes),
    /// A complete binary message (reassembled when it came in fragments).
    Binary(Bytes),
    /// A ping with its payload (at most 125 bytes); answer with a pong carrying the same payload
    /// (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A pong with its payload (unsolicited pongs are allowed, RFC 6455 §5.5.3).
    Pong(Bytes),
    /// The client started or answered the close handshake (RFC 6455 §5.5.1). `code` is `None` for
    /// an empty close payload (the status RFC 6455 §7.1.5 calls 1005, which is never sent).
    Close {
        /// The status code, already checked with [`close::is_valid_code`].
        code: Option<u16>,
        /// The reason, valid UTF-8, at most 123 bytes.
        reason: String,
    },
}

/// Why the connection must be closed, with the close code to send: 1002 (protocol error), 1007
/// (invalid UTF-8) or 1009 (message too big).
///
/// After an error the decoder's state is unspecified: send a close frame with `code` (and
/// `reason`, which is short, ASCII and fits a close frame), then close the connection (RFC 6455
/// §7.1.7, "_Fail the WebSocket Connection_").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolError {
    /// The close code to send.
    pub code: u16,
    /// A short description, for the close frame and logs.
    pub reason: &'static str,
}

impl ProtocolError {
    /// A 1002 (protocol error).
    pub(crate) const fn protocol(reason: &'static str) -> ProtocolError {
        ProtocolError { code: close::PROTOCOL_ERROR, reason }
    }

    /// A 1007 (invalid payload data: text that is not UTF-8).
    pub(crate) const fn invalid_payload(reason: &'static str) -> ProtocolError {
        ProtocolError { code: close::INVALID_PAYLOAD, reason }
    }

    /// A 1009 (message too big).
    pub(crate) const fn too_big(reason: &'static str) -> ProtocolError {
        ProtocolError { code: close::MESSAGE_TOO_BIG, reason }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes the frames a client sends into [`Event`]s.
///
/// Checks, each answered with its close code ([`ProtocolError`]):
/// - 1002: an unmasked frame, RSV bits set (RSV1 is allowed on the first frame of a data message
///   when permessage-deflate is on, RFC 7692 §6.1), a reserved opcode, a fragmented or over-125-byte
///   control frame, a continuation with no message in progress or a new data frame while one is,
///   a 64-bit length with its top bit set, a length not in its shortest encoding, a close payload
///   of one byte or with an invalid close code;
/// - 1007: text that is not UTF-8 (judged frame by frame across fragments, so as soon as the
///   frame holding a bad sequence arrives, and at the end of a message that stops inside one),
///   and a close reason that is not UTF-8;
/// - 1007: compressed data that is not valid DEFLATE;
/// - 1009: a message (all its fragments together) longer than `max_message`, as soon as a header
///   says so; a compressed message longer than that once inflated, as soon as inflating gets
///   there.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// 32 bits, so the limit and the deflate flag share a word: no message near 4 GiB is sane.
    max_message: u32,
    /// permessage-deflate was negotiated: RSV1 marks a compressed message.
    deflate: bool,
    /// The fragmented message in progress, boxed so an idle decoder stays two words.
    message: Option<Box<Partial>>,
}

/// A fragmented message between its first and final frame.
#[derive(Debug, Clone)]
struct Partial {
    /// Text (validated as UTF-8) or binary.
    text: bool,
    /// Compressed (RSV1 on its first frame): `data` is DEFLATE data, inflated and checked at the
    /// end.
    compressed: bool,
    /// The payload so far, unmasked.
    data: BytesMut,
    /// For text: the length of the prefix of `data` known to be whole, valid UTF-8. What follows
    /// it is at most a 3-byte prefix of a valid sequence, waiting for the next fragment.
    valid_utf8: usize,
}

impl Partial {
    /// RFC 6455 §8.1: an endpoint that finds text is not UTF-8 MUST fail the connection (1007,
    /// §7.4.1). Judges the bytes added since the last call; `fin` when the message ends here.
    fn check_utf8(&mut self, fin: bool) -> Result<(), ProtocolError> {
        match std::str::from_utf8(&self.data[self.valid_utf8..]) {
            Ok(_) => self.valid_utf8 = self.data.len(),
            // `error_len` is Some for a sequence no later byte can make valid.
            Err(e) if e.error_len().is_some() => return Err(ProtocolError::invalid_payload("invalid UTF-8 in text")),
            Err(_) if fin => return Err(ProtocolError::invalid_payload("text ends inside a UTF-8 sequence")),
            Err(e) => self.valid_utf8 += e.valid_up_to(),
        }
        Ok(())
    }
}

impl Decoder {
    /// A decoder refusing (1009) messages longer than `max_message` bytes (at most 4 GiB).
    pub fn new(max_message: usize) -> Decoder {
        Decoder { max_message: u32::try_from(max_message).unwrap_or(u32::MAX), deflate: false, message: None }
    }

    /// [`Decoder::new`] for a connection with permessage-deflate negotiated.
    pub fn with_deflate(max_message: usize) -> Decoder {
        Decoder { deflate: true, ..Decoder::new(max_message) }
    }

    /// The largest message accepted, in bytes.
    pub fn max_message(&self) -> usize {
        self.max_message as usize
    }

    /// Whether a fragmented message is in progress (its first frame has come, its final one not).
    pub fn is_assembling(&self) -> bool {
        self.message.is_some()
    }

    /// Takes the next event from the front of `buf`.
    ///
    /// - `Ok(Some(event))`: the frames it came from were taken off `buf`; call again, more may be
    ///   there.
    /// - `Ok(None)`: `buf` holds no complete frame that completes an event; read more and call
    ///   again. Complete non-final fragments may have been taken off into the decoder.
    /// - `Err(e)`: close the connection with `e.code` (see [`ProtocolError`]).
    ///
    /// The answer does not depend on how the bytes were split between calls.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, ProtocolError> {
        loop {
            let Some(head) = FrameHeader::parse_with(buf, self.deflate)? else { return Ok(None) };
            // RFC 6455 §5.1: "The server MUST close the connection upon receiving a frame that is
            // not masked" (with 1002, §7.4.1).
            let Some(key) = head.mask else { return Err(ProtocolError::protocol("unmasked client frame")) };
            // RFC 7692 §6.1: the "Per-Message Compressed" bit belongs on the first frame of a
            // data message only.
            if head.rsv1 && !matches!(head.opcode, OpCode::Text | OpCode::Binary) {
                return Err(ProtocolError::protocol("RSV1 on a control frame or a continuation"));
            }
            // RFC 6455 §5.4: a fragmented message is a first frame, continuations and a final
            // one, with only control frames in between.
            let so_far = match (head.opcode, &self.message) {
                (OpCode::Continuation, None) => {
                    return Err(ProtocolError::protocol("continuation frame with no message in progress"))
                }
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(ProtocolError::protocol("new message while a fragmented one is in progress"))
                }
                (OpCode::Continuation, Some(message)) => message.data.len(),
                _ => 0,
            };
            // Refuse an oversized message on its header, before buffering its payload (1009,
            // RFC 6455 §7.4.1). Control payloads are at most 125 bytes (checked in the header).
            if !head.opcode.is_control() && head.payload_len > (self.max_message() - so_far) as u64 {
                return Err(ProtocolError::too_big("message too big"));
            }
            // Fits in usize: at most max_message, or 125.
            let len = head.payload_len as usize;
            if buf.len() - head.header_len < len {
                return Ok(None);
            }
            buf.advance(head.header_len);
            let mut payload = buf.split_to(len);
            apply_mask(&mut payload, key);

            match head.opcode {
                OpCode::Ping => return Ok(Some(Event::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Event::Pong(payload.freeze()))),
                OpCode::Close => return close_event(&payload).map(Some),
                OpCode::Text | OpCode::Binary if head.fin => {
                    let data = if head.rsv1 { deflate::inflate(&payload, self.max_message())? } else { payload };
                    return complete(head.opcode == OpCode::Text, data).map(Some);
                }
                OpCode::Text | OpCode::Binary => {
                    // Copied, so the caller's read buffer is not pinned by a message in progress.
                    let text = head.opcode == OpCode::Text;
                    let data = BytesMut::from(&payload[..]);
                    let mut message = Box::new(Partial { text, compressed: head.rsv1, data, valid_utf8: 0 });
                    if text && !message.compressed {
                        message.check_utf8(false)?;
                    }
                    self.message = Some(message);
                }
                OpCode::Continuation => {
                    let Some(message) = self.message.as_mut() else {
                        return Err(ProtocolError::protocol("continuation frame with no message in progress"));
                    };
                    message.data.extend_from_slice(&payload);
                    if message.text && !message.compressed {
                        message.check_utf8(head.fin)?;
                    }
                    if head.fin {
                        let message = self.message.take().map(|m| *m);
                        if let Some(Partial { text, compressed, data, .. }) = message {
                            let data = if compressed { deflate::inflate(&data, self.max_message())? } else { data };
                            return complete(text, data).map(Some);
                        }
                    }
                }
            }
        }
    }
}

/// A whole message as an event; text is checked for UTF-8 here unless it was checked as its
/// fragments came (RFC 6455 §8.1: invalid text is a 1007).
fn complete(text: bool, data: BytesMut) -> Result<Event, ProtocolError> {
    if !text {
        return Ok(Event::Binary(data.freeze()));
    }
    if std::str::from_utf8(&data).is_err() {
        return Err(ProtocolError::invalid_payload("invalid UTF-8 in text"));
    }
    Ok(Event::Text(data.freeze()))
}

/// Reads a close payload (RFC 6455 §5.5.1): empty, or a 2-byte code and a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event, ProtocolError> {
    match *payload {
        [] => Ok(Event::Close { code: None, reason: String::new() }),
        // RFC 6455 §5.5.1: "If there is a body, the first two bytes of the body MUST be a 2-byte
        // unsigned integer".
        [_] => Err(ProtocolError::protocol("close payload of one byte")),
        [hi, lo, ref reason @ ..] => {
            let code = u16::from_be_bytes([hi, lo]);
            // RFC 6455 §7.4.1-2: reserved and unassigned codes are a protocol error.
            if !close::is_valid_code(code) {
                return Err(ProtocolError::protocol("invalid close code"));
            }
            // RFC 6455 §5.5.1: the reason is UTF-8; §8.1 makes anything else a 1007.
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::invalid_payload("close reason is not UTF-8"))?;
            Ok(Event::Close { code: Some(code), reason: reason.to_owned() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    const FIN: u8 = 0x80;
    const MAX: usize = 64 * 1024;

    /// A client frame: first byte `b0`, masked with [`KEY`], shortest length encoding.
    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&KEY);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], KEY);
        out
    }

    fn concat(frames: &[Vec<u8>]) -> Vec<u8> {
        frames.concat()
    }

    /// Everything a run of the decoder produced: the events, how it ended (out of input, or the
    /// error), and on running out of input what stayed in the buffer and whether a message was
    /// in progress.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        events: Vec<Event>,
        end: Result<(Vec<u8>, bool), ProtocolError>,
    }

    fn decode_pieces(decoder: &Decoder, pieces: &[&[u8]]) -> Outcome {
        let mut decoder = decoder.clone();
        let mut buf = BytesMut::new();
        let mut events = Vec::new();
        let mut pieces = pieces.iter();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return Outcome { events, end: Ok((buf.to_vec(), decoder.is_assembling())) },
                },
                Err(e) => return Outcome { events, end: Err(e) },
            }
        }
    }

    /// Decodes `input` whole, split in two at every offset (for long inputs: at every offset in
    /// the first and last 64 bytes and every 251st in between) and one byte at a time; every way
    /// must give the same outcome.
    fn replay(max: usize, input: &[u8]) -> Outcome {
        replay_with(&Decoder::new(max), input)
    }

    /// [`replay`] from a given decoder's state.
    fn replay_with(decoder: &Decoder, input: &[u8]) -> Outcome {
        let whole = decode_pieces(decoder, &[input]);
        let every = input.len() <= 1024;
        for split in 0..=input.len() {
            if !every && split > 64 && split + 64 < input.len() && split % 251 != 0 {
                continue;
            }
            let (a, b) = input.split_at(split);
            assert_eq!(decode_pieces(decoder, &[a, b]), whole, "split at {split}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(decoder, &bytes), whole, "byte at a time");
        whole
    }

    /// The events of `input`, which must decode without an error and leave nothing behind.
    fn events(input: &[u8]) -> Vec<Event> {
        let outcome = replay(MAX, input);
        assert_eq!(outcome.end, Ok((vec![], false)), "{outcome:?}");
        outcome.events
    }

    fn error(max: usize, input: &[u8]) -> ProtocolError {
        match replay(max, input).end {
            Err(e) => e,
            Ok(rest) => panic!("no error: {rest:?}"),
        }
    }

    fn text(s: &str) -> Event {
        Event::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rfc_6455_section_5_7_examples_decode() {
        // A single-frame masked text message "Hello", bytes as printed in the RFC.
        let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(events(&hello), [text("Hello")]);
        // A fragmented text message "Hel" + "lo" (masked, as a client sends it).
        assert_eq!(events(&concat(&[masked(0x01, b"Hel"), masked(FIN, b"lo")])), [text("Hello")]);
        // Ping "Hello", and the RFC's masked pong "Hello".
        assert_eq!(events(&masked(0x89, b"Hello")), [Event::Ping(Bytes::from_static(b"Hello"))]);
        let pong = [0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
        assert_eq!(events(&pong), [Event::Pong(Bytes::from_static(b"Hello"))]);
        // 256 bytes of binary: the 16-bit length form.
        let data: Vec<u8> = (0..=255).collect();
        let frame = masked(0x82, &data);
        assert_eq!(frame[1..4], [0xFE, 0x01, 0x00]);
        assert_eq!(events(&frame), [Event::Binary(Bytes::from(data))]);
        // 64 KiB of binary: the 64-bit length form.
        let data: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
        let frame = masked(0x82, &data);
        assert_eq!(frame[1..10], [0xFF, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!(events(&frame), [Event::Binary(Bytes::from(data))]);
    }

    #[test]
    fn valid_sequences_decode_split_at_every_byte() {
        let cases: &[(&[u8], &[Event])] = &[
            // Empty messages and frames.
            (&masked(0x81, b""), &[Event::Text(Bytes::new())]),
            (&masked(0x82, b""), &[Event::Binary(Bytes::new())]),
            (&masked(0x89, b""), &[Event::Ping(Bytes::new())]),
            (&concat(&[masked(0x01, b""), masked(0x00, b""), masked(FIN, b"")]), &[Event::Text(Bytes::new())]),
            // Binary in three fragments.
            (
                &concat(&[masked(0x02, b"\x00\xff"), masked(0x00, b"\x80"), masked(FIN, b"\x01")]),
                &[Event::Binary(Bytes::from_static(b"\x00\xff\x80\x01"))],
            ),
            // A 125-byte ping is the largest allowed.
            (&masked(0x89, &[b'p'; 125]), &[Event::Ping(Bytes::from_static(&[b'p'; 125]))]),
            // Several frames in one buffer.
            (
                &concat(&[masked(0x81, b"a"), masked(0x8A, b"x"), masked(0x82, b"b")]),
                &[text("a"), Event::Pong(Bytes::from_static(b"x")), Event::Binary(Bytes::from_static(b"b"))],
            ),
            // Close frames: empty, a code, a code and a reason.
            (&masked(0x88, b""), &[Event::Close { code: None, reason: String::new() }]),
            (&masked(0x88, b"\x03\xe8"), &[Event::Close { code: Some(1000), reason: String::new() }]),
            (
                &masked(0x88, &[&b"\x0f\xa0"[..], "bye ☃".as_bytes()].concat()),
                &[Event::Close { code: Some(4000), reason: "bye ☃".to_owned() }],
            ),
            // Multi-byte UTF-8 in one frame.
            (&masked(0x81, "κόσμε 😀".as_bytes()), &[text("κόσμε 😀")]),
        ];
        for (input, want) in cases {
            assert_eq!(events(input), *want, "{input:x?}");
        }
    }

    #[test]
    fn ping_between_fragments_is_returned_in_between() {
        let input = concat(&[
            masked(0x01, b"Hel"),
            masked(0x89, b"p1"),
            masked(0x00, b"l"),
            masked(0x8A, b"p2"),
            masked(FIN, b"o"),
            masked(0x81, b"next"),
        ]);
        assert_eq!(
            events(&input),
            [
                Event::Ping(Bytes::from_static(b"p1")),
                Event::Pong(Bytes::from_static(b"p2")),
                text("Hello"),
                text("next"),
            ]
        );
        // The message is still in progress when the ping comes out.
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Event::Ping(Bytes::from_static(b"p1")))));
        assert!(decoder.is_assembling());
        // A close in the middle of a fragmented message is an event too.
        let input = concat(&[masked(0x01, b"Hel"), masked(0x88, b"\x03\xe9")]);
        let outcome = replay(MAX, &input);
        assert_eq!(outcome.events, [Event::Close { code: Some(1001), reason: String::new() }]);
        assert_eq!(outcome.end, Ok((vec![], true)));
    }

    #[test]
    fn utf8_split_across_fragments_is_valid() {
        let euro = "€".as_bytes(); // E2 82 AC
        let input = concat(&[masked(0x01, &euro[..1]), masked(0x00, &euro[1..2]), masked(FIN, &euro[2..])]);
        assert_eq!(events(&input), [text("€")]);
        let emoji = "a😀b".as_bytes(); // a F0 9F 98 80 b
        for cut in 1..emoji.len() {
            let input = concat(&[masked(0x01, &emoji[..cut]), masked(FIN, &emoji[cut..])]);
            assert_eq!(events(&input), [text("a😀b")], "cut at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_fails_on_the_frame_that_holds_it() {
        // "€" begun in the first fragment, broken by the second: 1007 before any final frame.
        let input = concat(&[masked(0x01, b"ok\xe2"), masked(0x00, b"\x28"), masked(FIN, b"")]);
        assert_eq!(error(MAX, &input).code, close::INVALID_PAYLOAD);
        let without_final = concat(&[masked(0x01, b"ok\xe2"), masked(0x00, b"\x28")]);
        assert_eq!(error(MAX, &without_final).code, close::INVALID_PAYLOAD);
        // A byte that can never start a sequence fails in the first fragment.
        assert_eq!(error(MAX, &masked(0x01, b"ok\xff")).code, close::INVALID_PAYLOAD);
        // A surrogate (ED A0 80) is invalid as soon as its second byte is seen.
        assert_eq!(error(MAX, &masked(0x01, b"\xed\xa0")).code, close::INVALID_PAYLOAD);
        // A message that ends inside a sequence.
        let input = concat(&[masked(0x01, b"a\xe2\x82"), masked(FIN, b"")]);
        assert_eq!(error(MAX, &input).code, close::INVALID_PAYLOAD);
        // But a fragment that merely ends inside one is fine until then.
        let outcome = replay(MAX, &masked(0x01, b"a\xe2\x82"));
        assert_eq!(outcome.end, Ok((vec![], true)));
        // Binary messages are never checked.
        let input = concat(&[masked(0x02, b"\xff"), masked(FIN, b"\xe2")]);
        assert_eq!(events(&input), [Event::Binary(Bytes::from_static(b"\xff\xe2"))]);
    }

    #[test]
    fn protocol_errors_get_their_close_code() {
        let too_long_ping = {
            let mut frame = vec![0x89, 0x80 | 126, 0x00, 126];
            frame.extend_from_slice(&KEY);
            frame.extend_from_slice(&[0; 126]);
            frame
        };
        let non_minimal_16 = {
            let mut frame = vec![0x82, 0x80 | 126, 0x00, 125];
            frame.extend_from_slice(&KEY);
            frame.extend_from_slice(&[0; 125]);
            frame
        };
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked text (RFC 6455 §5.7's server frame)", b"\x81\x05Hello".to_vec(), 1002),
            ("unmasked empty ping", b"\x89\x00".to_vec(), 1002),
            ("RSV1", masked(0xC1, b"a"), 1002),
            ("RSV2", masked(0xA1, b"a"), 1002),
            ("RSV3", masked(0x91, b"a"), 1002),
            ("opcode 0x3", masked(0x83, b""), 1002),
            ("opcode 0x7", masked(0x87, b""), 1002),
            ("opcode 0xB", masked(0x8B, b""), 1002),
            ("opcode 0xF", masked(0x8F, b""), 1002),
            ("fragmented ping", masked(0x09, b"a"), 1002),
            ("fragmented close", masked(0x08, b""), 1002),
            ("126-byte ping", too_long_ping, 1002),
            ("continuation with no message", masked(FIN, b"a"), 1002),
            ("non-final continuation with no message", masked(0x00, b"a"), 1002),
            ("text while a message is open", concat(&[masked(0x01, b"a"), masked(0x81, b"b")]), 1002),
            ("binary while a message is open", concat(&[masked(0x02, b"a"), masked(0x02, b"b")]), 1002),
            ("64-bit length with the top bit set", b"\x82\xff\x80\0\0\0\0\0\0\0".to_vec(), 1002),
            ("125 in the 16-bit form", non_minimal_16, 1002),
            ("65535 in the 64-bit form", b"\x82\xff\0\0\0\0\0\0\xff\xff".to_vec(), 1002),
            ("0 in the 64-bit form", b"\x82\xff\0\0\0\0\0\0\0\0".to_vec(), 1002),
            ("invalid UTF-8 text", masked(0x81, b"\xc3\x28"), 1007),
            ("overlong UTF-8", masked(0x81, b"\xc0\xaf"), 1007),
            ("text ending inside a sequence", masked(0x81, b"\xe2\x82"), 1007),
            ("close payload of one byte", masked(0x88, b"\x03"), 1002),
            ("close code 0", masked(0x88, b"\x00\x00"), 1002),
            ("close code 999", masked(0x88, b"\x03\xe7"), 1002),
            ("close code 1004", masked(0x88, b"\x03\xec"), 1002),
            ("close code 1005", masked(0x88, b"\x03\xed"), 1002),
            ("close code 1006", masked(0x88, b"\x03\xee"), 1002),
            ("close code 1015", masked(0x88, b"\x03\xf7"), 1002),
            ("close code 2999", masked(0x88, b"\x0b\xb7"), 1002),
            ("close code 5000", masked(0x88, b"\x13\x88"), 1002),
            ("close reason not UTF-8", masked(0x88, b"\x03\xe8\xff"), 1007),
            ("single frame over max_message", masked(0x82, &[0; 17]), 1009),
            ("fragments over max_message", concat(&[masked(0x01, b"0123456789"), masked(FIN, b"0123456")]), 1009),
        ];
        for (name, input, code) in cases {
            assert_eq!(error(16, &input).code, code, "{name}");
        }
        // Exactly max_message fits, whole or in fragments.
        let outcome = replay(16, &masked(0x82, &[1; 16]));
        assert_eq!(outcome.events, [Event::Binary(Bytes::from_static(&[1; 16]))]);
        let outcome = replay(16, &concat(&[masked(0x01, b"0123456789"), masked(FIN, b"012345")]));
        assert_eq!(outcome.events, [text("0123456789012345")]);
    }

    #[test]
    fn oversized_message_fails_on_its_header() {
        // Only the header of a 1 MiB frame: refused without waiting for the payload.
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&(1u64 << 20).to_be_bytes());
        header.extend_from_slice(&KEY);
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::from(&header[..]);
        assert_eq!(decoder.decode(&mut buf).map_err(|e| e.code), Err(close::MESSAGE_TOO_BIG));
        // The same for the header of a continuation that would take the message over.
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::from(&masked(0x02, &vec![0; MAX - 10])[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0x80, 0x80 | 11]);
        buf.extend_from_slice(&KEY);
        assert_eq!(decoder.decode(&mut buf).map_err(|e| e.code), Err(close::MESSAGE_TOO_BIG));
    }

    #[test]
    fn a_frame_waits_in_the_buffer_until_complete() {
        let frame = masked(0x82, &[9; 1000]);
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&frame[..20]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // Nothing taken, nothing reserved for the declared length.
        assert_eq!((buf.len(), buf.capacity()), (20, 64));
        buf.extend_from_slice(&frame[20..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(Event::Binary(Bytes::from_static(&[9; 1000])))));
        assert!(buf.is_empty());
    }

    #[test]
    fn bytes_after_the_last_complete_frame_stay_in_the_buffer() {
        let second = masked(0x81, b"second");
        let input = concat(&[masked(0x81, b"first"), second[..5].to_vec()]);
        let outcome = replay(MAX, &input);
        assert_eq!(outcome.events, [text("first")]);
        assert_eq!(outcome.end, Ok((second[..5].to_vec(), false)));
    }

    #[test]
    fn decoder_is_small_and_holds_nothing_between_messages() {
        assert_eq!(std::mem::size_of::<Decoder>(), 16);
        let mut decoder = Decoder::new(MAX);
        let mut buf = BytesMut::from(&concat(&[masked(0x01, b"Hel"), masked(FIN, b"lo")])[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Some(text("Hello"))));
        assert!(!decoder.is_assembling());
        assert!(decoder.message.is_none());
    }

    /// `data` compressed as one message (no context, trailer removed).
    fn deflated(data: &[u8]) -> Vec<u8> {
        let mut compress = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        compress.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_inflate_whole_or_in_fragments() {
        const RSV1: u8 = 0x40;
        let decoder = Decoder::with_deflate(MAX);
        let events = |input: &[u8]| {
            let outcome = replay_with(&decoder, input);
            assert_eq!(outcome.end, Ok((vec![], false)), "{outcome:?}");
            outcome.events
        };
        let hello = "Hello, Hello, Hello, κόσμε".repeat(4);
        let packed = deflated(hello.as_bytes());
        // RFC 7692 §7.2.3.1's example: "Hello" compressed, in one frame.
        assert_eq!(events(&masked(FIN | RSV1 | 0x1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00])), [text("Hello")]);
        assert_eq!(events(&masked(FIN | RSV1 | 0x1, &packed)), [text(&hello)]);
        // §7.2.3.1: the same in two fragments, RSV1 on the first only; a ping in between.
        let (a, b) = packed.split_at(packed.len() / 2);
        let input = concat(&[masked(RSV1 | 0x1, a), masked(0x89, b"p"), masked(FIN, b)]);
        assert_eq!(events(&input), [Event::Ping(Bytes::from_static(b"p")), text(&hello)]);
        // Binary, an empty compressed message (a lone 0x00 byte), and uncompressed messages
        // still work beside compressed ones.
        let input = concat(&[
            masked(FIN | RSV1 | 0x2, &deflated(&[0xff; 300])),
            masked(FIN | RSV1 | 0x1, &[0x00]),
            masked(0x81, b"plain"),
        ]);
        assert_eq!(events(&input), [Event::Binary(Bytes::from(vec![0xff; 300])), text(""), text("plain")]);
    }

    #[test]
    fn compressed_messages_are_checked_after_inflating() {
        const RSV1: u8 = 0x40;
        let deflate = Decoder::with_deflate(16);
        let code = |decoder: &Decoder, input: &[u8]| match replay_with(decoder, input).end {
            Err(e) => e.code,
            Ok(rest) => panic!("no error: {rest:?}"),
        };
        // RFC 7692 §6.1: RSV1 only on the first frame of a data message.
        assert_eq!(code(&deflate, &concat(&[masked(RSV1 | 0x1, &[0xf2]), masked(FIN | RSV1, b"")])), 1002);
        assert_eq!(code(&deflate, &masked(FIN | RSV1 | 0x9, b"")), 1002);
        assert_eq!(code(&deflate, &masked(FIN | RSV1 | 0x8, b"")), 1002);
        // RSV2 and RSV3 stay reserved; RSV1 without the extension is an error.
        assert_eq!(code(&deflate, &masked(0xA1, b"a")), 1002);
        assert_eq!(code(&Decoder::new(16), &masked(FIN | RSV1 | 0x1, &deflated(b"a"))), 1002);
        // Too big once inflated: 17 bytes from a 5-byte compressed frame.
        assert_eq!(code(&deflate, &masked(FIN | RSV1 | 0x2, &deflated(&[7; 17]))), 1009);
        let outcome = replay_with(&deflate, &masked(FIN | RSV1 | 0x2, &deflated(&[7; 16])));
        assert_eq!(outcome.events, [Event::Binary(Bytes::from_static(&[7; 16]))]);
        // Not DEFLATE, and text that is not UTF-8 once inflated.
        assert_eq!(code(&deflate, &masked(FIN | RSV1 | 0x1, &[0xff, 0xff])), 1007);
        assert_eq!(code(&deflate, &masked(FIN | RSV1 | 0x1, &deflated(b"ok\xff"))), 1007);
        let cut = deflated(b"a\xe2\x82");
        let (a, b) = cut.split_at(2);
        let input = concat(&[masked(RSV1 | 0x1, a), masked(FIN, b)]);
        assert_eq!(code(&deflate, &input), 1007);
    }

    #[test]
    fn protocol_error_displays_reason_and_code() {
        assert_eq!(ProtocolError::protocol("reserved opcode").to_string(), "reserved opcode (1002)");
    }
}
