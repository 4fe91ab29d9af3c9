//! permessage-deflate (RFC 7692): choosing an offer, compressing a message so one copy serves
//! every subscriber, and inflating a client's compressed message under a size cap.
//!
//! The policy is fixed by memory per connection and by fan-out:
//! - The server never takes over its LZ77 window between messages and says so
//!   (`server_no_context_takeover`, which §7.1.1.1 lets it include whatever the offer held). So a
//!   message compressed once is valid on every connection, and no connection keeps a compressor.
//! - The server asks clients not to take over theirs (`client_no_context_takeover`, §7.1.1.2), so
//!   a connection needs an inflater only while a compressed message is being decoded, not between
//!   messages (32 KiB of window per idle connection otherwise).
//! - A per-subscriber prefix (the JSON envelope's id, a cursor that differs per multi-channel
//!   subscriber) goes in front of the shared compressed part as a stored (uncompressed) DEFLATE
//!   block, [`put_stored_block`]: the shared part starts a fresh DEFLATE stream on a byte
//!   boundary and refers to nothing before it, so the concatenation inflates to prefix + rest.
//! - An offer limiting the server's window (`server_max_window_bits=N`) is accepted for
//!   N in 9..=15 and the answer repeats N. Compressing for a smaller window than the shared copy's
//!   is the caller's business (Holdfast's push path sends such a connection's messages
//!   uncompressed, which §6 allows per message). N = 8 is declined: the DEFLATE implementation
//!   cannot produce a 256-byte window.
//!
//! What it does not own: the RSV1 rules of frames (see [`super::codec`]), which messages are
//! worth compressing and which connection gets what (the server's).

use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::codec::ProtocolError;
use crate::http1::request::trim_ows;
use crate::http1::RequestHead;

/// The extension's name in `Sec-WebSocket-Extensions` (RFC 7692 §6).
pub const EXTENSION: &str = "permessage-deflate";

/// The largest LZ77 window, and the one the shared compressed copies use.
pub const MAX_WINDOW_BITS: u8 = 15;

/// The empty stored block a sync flush ends with, which a sender removes from the end of a
/// compressed message and a receiver appends back before inflating (RFC 7692 §7.2.1, §7.2.2).
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Messages shorter than this are not worth trying: the DEFLATE overhead eats the gain.
pub const MIN_COMPRESS_BYTES: usize = 64;

/// What was agreed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// The largest window the server may compress with (`server_max_window_bits`, 15 when the
    /// client did not limit it).
    pub server_window_bits: u8,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` value that accepts the offer.
    pub fn response(&self) -> String {
        let mut value = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_bits != MAX_WINDOW_BITS {
            value.push_str(&format!("; server_max_window_bits={}", self.server_window_bits));
        }
        value
    }
}

/// Picks the first `permessage-deflate` offer in the request's `Sec-WebSocket-Extensions` fields
/// that this server can accept (RFC 7692 §5: offers are in the client's order of preference;
/// declining all of them means no compression, not a failed handshake).
///
/// An offer is declined (§7) when it has a parameter this extension does not define, a
/// parameter twice, a value where none belongs or an invalid one (window bits are a decimal
/// 8–15 without leading zeros, as a token or a quoted string), or `server_max_window_bits=8`.
pub fn negotiate(head: &RequestHead) -> Option<Agreement> {
    head.headers_named("sec-websocket-extensions").flat_map(|value| value.split(|&b| b == b',')).find_map(|offer| {
        let mut parts = offer.split(|&b| b == b';').map(trim_ows);
        let name = parts.next()?;
        if !name.eq_ignore_ascii_case(EXTENSION.as_bytes()) {
            return None;
        }
        accept_params(parts)
    })
}

/// The agreement for one offer's parameters, or `None` to decline it.
fn accept_params<'a>(params: impl Iterator<Item = &'a [u8]>) -> Option<Agreement> {
    let mut seen = [false; 4];
    let mut server_window_bits = MAX_WINDOW_BITS;
    for param in params {
        let (name, value) = match param.iter().position(|&b| b == b'=') {
            Some(eq) => (trim_ows(&param[..eq]), Some(unquote(trim_ows(&param[eq + 1..]))?)),
            None => (param, None),
        };
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        let slot = match name.as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        match (slot, value) {
            // Flags carry no value (§7.1.1.1, §7.1.1.2).
            (0 | 1, None) => {}
            (0 | 1, Some(_)) => return None,
            // §7.1.2.1: required value; we compress with at most that window.
            (2, Some(bits)) => server_window_bits = window_bits(bits).filter(|&bits| bits >= 9)?,
            (2, None) => return None,
            // §7.1.2.2: optional value; our inflater always has the full window, which reads a
            // stream made with any smaller one, so it needs no answer.
            (_, Some(bits)) => _ = window_bits(bits)?,
            (_, None) => {}
        }
    }
    Some(Agreement { server_window_bits })
}

/// A token, or a quoted string's content (RFC 7230 §3.2.6 via RFC 6455 §9.1); `None` for an
/// unterminated quote.
fn unquote(value: &[u8]) -> Option<&[u8]> {
    match value {
        [b'"', inner @ .., b'"'] => Some(inner),
        [b'"', ..] => None,
        token => Some(token),
    }
}

/// RFC 7692 §7.1.2: "a decimal integer value 8 to 15, inclusive, … without leading zeros".
fn window_bits(value: &[u8]) -> Option<u8> {
    match value {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Compresses messages one at a time, each as a self-contained DEFLATE stream without the
/// trailing `00 00 ff ff` (RFC 7692 §7.2.1), so each result can go to any connection. Holds a
/// compressor (a few hundred KiB) reset between messages: keep one per thread, not per connection.
pub struct MessageDeflater {
    compress: Compress,
}

impl MessageDeflater {
    /// A deflater whose output never refers further back than `2^window_bits` bytes (9 to 15).
    pub fn new(window_bits: u8) -> MessageDeflater {
        MessageDeflater { compress: Compress::new_with_window_bits(Compression::default(), false, window_bits) }
    }

    /// The compressed form of `data`, or `None` when it would not be smaller than `data` less
    /// `overhead` bytes (for the caller's stored-block prefix), or `data` is too short to try.
    pub fn deflate(&mut self, data: &[u8], overhead: usize) -> Option<Vec<u8>> {
        if data.len() < MIN_COMPRESS_BYTES {
            return None;
        }
        self.compress.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            let before = self.compress.total_in();
            // Sync flush: everything out, ending on a byte boundary with the empty stored block.
            let status = self.compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync);
            consumed += (self.compress.total_in() - before) as usize;
            if status.is_err() {
                return None;
            }
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
            if out.len() + overhead >= data.len() + SYNC_TAIL.len() {
                return None;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&SYNC_TAIL) {
            return None;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        (out.len() + overhead < data.len()).then_some(out)
    }
}

/// The bytes a stored-block prefix adds in front of its data.
pub const STORED_BLOCK_OVERHEAD: usize = 5;

/// Appends `data` (at most 65,535 bytes) as one non-final stored DEFLATE block (RFC 1951 §3.2.4:
/// BFINAL 0, BTYPE 00, padding to the byte, LEN, NLEN), starting on a byte boundary. Put in front
/// of a [`MessageDeflater`] result, the two inflate to `data` followed by the original message.
pub fn put_stored_block(out: &mut Vec<u8>, data: &[u8]) {
    let len = u16::try_from(data.len()).expect("a stored block holds at most 65,535 bytes");
    out.extend_from_slice(&stored_block_header(len));
    out.extend_from_slice(data);
}

/// The 5 bytes in front of `len` bytes of stored data (see [`put_stored_block`]), for a caller
/// that sends the data from elsewhere.
pub fn stored_block_header(len: u16) -> [u8; STORED_BLOCK_OVERHEAD] {
    let [lo, hi] = len.to_le_bytes();
    [0x00, lo, hi, !lo, !hi]
}

/// Inflates one compressed message (its frames' payloads joined) with the full window and no
/// context from earlier messages. Refuses output over `max_len` bytes as soon as it gets there
/// (1009, RFC 6455 §7.4.1), so a small message cannot inflate into a large allocation, and data
/// that is not valid DEFLATE (1007: the payload is inconsistent with the message).
pub fn inflate(compressed: &[u8], max_len: usize) -> Result<BytesMut, ProtocolError> {
    let corrupt = || ProtocolError::invalid_payload("invalid permessage-deflate data");
    let mut inflater = Decompress::new_with_window_bits(false, MAX_WINDOW_BITS);
    // One byte over the cap tells "exactly max_len" from "more".
    let limit = max_len.saturating_add(1);
    let mut out: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(3).max(64).min(limit));
    for input in [compressed, &SYNC_TAIL[..]] {
        let mut consumed = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(ProtocolError::too_big("message too big once inflated"));
                }
                out.reserve((out.capacity()).min(limit - out.len()));
            }
            let before = inflater.total_in();
            let status =
                inflater.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync).map_err(|_| corrupt())?;
            consumed += (inflater.total_in() - before) as usize;
            if out.len() >= limit {
                return Err(ProtocolError::too_big("message too big once inflated"));
            }
            match status {
                // A final block (BFINAL) ends the message; what follows it is not DEFLATE data.
                Status::StreamEnd => return Ok(BytesMut::from(&out[..])),
                _ if consumed == input.len() && out.len() < out.capacity() => break,
                // No progress with room left and input left: the data is cut or corrupt.
                Status::BufError if out.len() < out.capacity() => return Err(corrupt()),
                _ => {}
            }
        }
    }
    Ok(BytesMut::from(&out[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::parse_request;
    use crate::Limits;

    fn offer(extensions: &[&str]) -> Option<Agreement> {
        let mut request = String::from("GET /ws HTTP/1.1\r\nHost: a\r\n");
        for value in extensions {
            request.push_str(&format!("Sec-WebSocket-Extensions: {value}\r\n"));
        }
        request.push_str("\r\n");
        let mut buf = BytesMut::from(request.as_bytes());
        negotiate(&parse_request(&mut buf, &Limits::default()).unwrap().unwrap())
    }

    const FULL: Option<Agreement> = Some(Agreement { server_window_bits: 15 });

    #[test]
    fn offers_browsers_and_libraries_send_are_accepted() {
        // Chromium and Firefox; Python websockets; Autobahn's default offer.
        assert_eq!(offer(&["permessage-deflate; client_max_window_bits"]), FULL);
        assert_eq!(offer(&["permessage-deflate"]), FULL);
        assert_eq!(offer(&["permessage-deflate; client_no_context_takeover; client_max_window_bits"]), FULL);
        assert_eq!(offer(&["PerMessage-Deflate ;Server_No_Context_Takeover"]), FULL);
        assert_eq!(offer(&["permessage-deflate; client_max_window_bits=10"]), FULL);
        assert_eq!(offer(&["permessage-deflate; client_max_window_bits=\"12\""]), FULL);
        assert_eq!(offer(&["permessage-deflate; server_max_window_bits=9"]), Some(Agreement { server_window_bits: 9 }));
        assert_eq!(offer(&["permessage-deflate; server_max_window_bits=\"15\""]), FULL);
    }

    #[test]
    fn the_answer_names_what_the_server_does() {
        assert_eq!(
            FULL.unwrap().response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(
            Agreement { server_window_bits: 10 }.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn bad_offers_are_declined_and_the_next_one_is_taken() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=\"9",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(&[bad]), None, "{bad}");
        }
        assert_eq!(offer(&[]), None);
        // Declining the first offer falls back to the next, in either header layout.
        assert_eq!(offer(&["permessage-deflate; server_max_window_bits=8, permessage-deflate"]), FULL);
        assert_eq!(offer(&["foo", "permessage-deflate; server_max_window_bits=8", "permessage-deflate; x=1"]), None);
        assert_eq!(
            offer(&["permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits=12"]),
            Some(Agreement { server_window_bits: 12 })
        );
    }

    fn json_like(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| format!("{{\"seq\":{i},\"price\":{}.25,\"sym\":\"ABC\"}}", i % 97))
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn deflated_messages_inflate_back_at_every_window() {
        for bits in 9..=15 {
            let mut deflater = MessageDeflater::new(bits);
            for data in [json_like(3), json_like(200), json_like(5000)] {
                let compressed = deflater.deflate(&data, 0).expect("repetitive JSON compresses");
                assert!(compressed.len() < data.len() * 2 / 3, "{} of {}", compressed.len(), data.len());
                assert_eq!(inflate(&compressed, data.len()).unwrap(), data[..], "window {bits}");
            }
        }
    }

    #[test]
    fn short_or_incompressible_data_is_left_alone() {
        let mut deflater = MessageDeflater::new(15);
        assert_eq!(deflater.deflate(b"{\"a\":1}", 0), None);
        // Pseudo-random bytes do not compress.
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(deflater.deflate(&noise, 0), None);
        // The deflater is still good for the next message.
        let data = json_like(50);
        assert_eq!(inflate(&deflater.deflate(&data, 0).unwrap(), usize::MAX).unwrap(), data[..]);
    }

    #[test]
    fn a_stored_prefix_in_front_of_a_shared_copy_inflates_to_both() {
        let tail = json_like(100);
        let shared = MessageDeflater::new(15).deflate(&tail, STORED_BLOCK_OVERHEAD + 40).unwrap();
        for prefix in [&b""[..], b"{\"id\":\"", b"{\"id\":\"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRob"] {
            let mut message = Vec::new();
            put_stored_block(&mut message, prefix);
            assert_eq!(message.len(), STORED_BLOCK_OVERHEAD + prefix.len());
            message.extend_from_slice(&shared);
            assert_eq!(inflate(&message, usize::MAX).unwrap(), [prefix, &tail[..]].concat()[..]);
        }
    }

    #[test]
    fn inflating_stops_at_the_cap() {
        // 1 MiB of zeros compresses to about 1 KB.
        let zeros = vec![0u8; 1 << 20];
        let compressed = MessageDeflater::new(15).deflate(&zeros, 0).unwrap();
        assert!(compressed.len() < 2048);
        assert_eq!(inflate(&compressed, zeros.len()).unwrap().len(), zeros.len());
        let error = inflate(&compressed, zeros.len() - 1).unwrap_err();
        assert_eq!(error.code, crate::ws::close::MESSAGE_TOO_BIG);
        assert_eq!(inflate(&compressed, 1000).unwrap_err().code, crate::ws::close::MESSAGE_TOO_BIG);
    }

    #[test]
    fn corrupt_or_final_block_data() {
        // BTYPE 11 is reserved: not DEFLATE.
        assert_eq!(inflate(&[0xff, 0xff, 0xff], 100).unwrap_err().code, crate::ws::close::INVALID_PAYLOAD);
        // A stored block whose NLEN does not match LEN.
        assert_eq!(inflate(&[0x00, 0x03, 0x00, 0x00, 0x00, 1, 2, 3], 100).unwrap_err().code, 1007);
        // A sender may end with a final block (BFINAL 1): a fixed-Huffman "a", complete stream.
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(64);
        c.compress_vec(b"aaaa", &mut out, FlushCompress::Finish).unwrap();
        assert_eq!(inflate(&out, 100).unwrap(), b"aaaa"[..]);
        // An empty message is the empty stored block without its tail: no bytes at all, or 0x00.
        assert_eq!(inflate(&[], 100).unwrap(), b""[..]);
        assert_eq!(inflate(&[0x00], 100).unwrap(), b""[..]);
    }
}
