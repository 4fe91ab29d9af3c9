//! Request body decoders: Content-Length and chunked (RFC 9112 §6.2, §7.1), buffer in, data out.
//!
//! A decoder never reads a socket: the caller appends bytes to a `BytesMut` and calls
//! [`BodyDecoder::decode`] until it says [`Decoded::End`]. Data is split off the caller's buffer
//! without copying. Whatever follows the body (a pipelined request) stays in the buffer.

use bytes::{Buf, Bytes, BytesMut};

use super::framing::BodyFraming;
use crate::{Limits, ParseError};

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, in order.
    Data(Bytes),
    /// The buffer holds no complete next piece; append more bytes and call again.
    NeedMore,
    /// The body is complete (for chunked: after the last chunk and the trailer section).
    End,
}

/// Decodes one request body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Body bytes delivered so far (for `max_body_bytes`).
    received: u64,
    max_body_bytes: u64,
    /// Chunk-extension bytes seen so far.
    ext_bytes: usize,
    max_ext_bytes: usize,
    /// Trailer bytes seen so far.
    trailer_bytes: usize,
    max_trailer_bytes: usize,
}

/// Where the decoder is in the body. Chunked states are named after the part of
/// `chunk = chunk-size [ chunk-ext ] CRLF chunk-data CRLF` being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Fixed length: this many bytes still to come.
    Length(u64),
    /// Reading hex digits of a chunk size; `digits` read so far.
    Size { size: u64, digits: u8 },
    /// Whitespace after the size (BWS before `;`, RFC 9112 §7.1.1).
    SizeWhitespace { size: u64 },
    /// Inside chunk extensions, up to the CR.
    Extension { size: u64 },
    /// After the CR ending a size line; LF must follow.
    SizeLf { size: u64 },
    /// Chunk data: this many bytes still to come.
    Data(u64),
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final CRLF).
    TrailerLineStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// After a trailer line's CR; LF must follow.
    TrailerLf,
    /// After the final CR; LF ends the body.
    EndLf,
    /// The body is complete.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`. Fails at once (413) when a declared
    /// Content-Length is over the limit, so the server can refuse before reading or sending 100.
    pub fn new(framing: BodyFraming, limits: &Limits) -> Result<BodyDecoder, ParseError> {
        let state = match framing {
            BodyFraming::None => State::Done,
            BodyFraming::Length(n) if n > limits.max_body_bytes => return Err(ParseError::BodyTooLarge),
            BodyFraming::Length(n) => State::Length(n),
            BodyFraming::Chunked => State::Size { size: 0, digits: 0 },
        };
        Ok(BodyDecoder {
            state,
            received: 0,
            max_body_bytes: limits.max_body_bytes,
            ext_bytes: 0,
            max_ext_bytes: limits.max_chunk_ext_bytes,
            trailer_bytes: 0,
            max_trailer_bytes: limits.max_trailer_bytes,
        })
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Body bytes decoded so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Takes the next piece of body from the front of `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ParseError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(0) => {
                    self.state = State::Done;
                    return Ok(Decoded::End);
                }
                State::Length(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let data = take(buf, remaining);
                    self.state = State::Length(remaining - data.len() as u64);
                    self.received += data.len() as u64;
                    return Ok(Decoded::Data(data));
                }
                State::Data(remaining) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let data = take(buf, remaining);
                    let left = remaining - data.len() as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data(left) };
                    return Ok(Decoded::Data(data));
                }
                _ => {
                    let Some(&byte) = buf.first() else {
                        return Ok(Decoded::NeedMore);
                    };
                    buf.advance(1);
                    self.state = self.step(byte)?;
                }
            }
        }
    }

    /// One byte of chunked framing (everything but chunk data).
    fn step(&mut self, byte: u8) -> Result<State, ParseError> {
        use ParseError::{ChunkExtensionsTooLong, InvalidChunk, InvalidChunkSize, TrailersTooLarge};
        Ok(match (self.state, byte) {
            (State::Size { size, digits }, _) if hex_value(byte).is_some() => {
                let value = u64::from(hex_value(byte).unwrap_or(0));
                // Overflow past 64 bits is an error; leading zeros are not.
                let size = size.checked_mul(16).ok_or(InvalidChunkSize)? | value;
                State::Size { size, digits: digits.saturating_add(1) }
            }
            (State::Size { digits: 0, .. }, _) => return Err(InvalidChunkSize),
            (State::Size { size, .. } | State::SizeWhitespace { size }, b' ' | b'\t') => State::SizeWhitespace { size },
            (State::Size { size, .. } | State::SizeWhitespace { size }, b';') => State::Extension { size },
            (State::Size { size, .. } | State::SizeWhitespace { size } | State::Extension { size }, b'\r') => {
                State::SizeLf { size }
            }
            (State::Size { .. } | State::SizeWhitespace { .. }, _) => return Err(InvalidChunkSize),
            (State::Extension { size }, _) => {
                // Extensions are token / quoted-string text; control bytes (bare LF, NUL) are not.
                if byte < 0x20 && byte != b'\t' || byte == 0x7f {
                    return Err(InvalidChunkSize);
                }
                self.ext_bytes += 1;
                if self.ext_bytes > self.max_ext_bytes {
                    return Err(ChunkExtensionsTooLong);
                }
                State::Extension { size }
            }
            (State::SizeLf { size }, b'\n') => {
                if size == 0 {
                    State::TrailerLineStart
                } else {
                    // Refuse an oversized body on the size line, before reading its data.
                    self.received = self.received.checked_add(size).ok_or(ParseError::BodyTooLarge)?;
                    if self.received > self.max_body_bytes {
                        return Err(ParseError::BodyTooLarge);
                    }
                    State::Data(size)
                }
            }
            (State::SizeLf { .. }, _) => return Err(InvalidChunkSize),
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size { size: 0, digits: 0 },
            (State::DataCr | State::DataLf, _) => return Err(InvalidChunk),
            (State::TrailerLineStart, b'\r') => State::EndLf,
            (State::TrailerLineStart | State::TrailerLine, _) => {
                // Trailer fields are read and discarded: Holdfast uses none (RFC 9110 §6.5.1).
                if byte == b'\r' {
                    State::TrailerLf
                } else if byte == b'\n' || byte == 0 {
                    return Err(InvalidChunk);
                } else {
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > self.max_trailer_bytes {
                        return Err(TrailersTooLarge);
                    }
                    State::TrailerLine
                }
            }
            (State::TrailerLf, b'\n') => State::TrailerLineStart,
            (State::EndLf, b'\n') => State::Done,
            (State::TrailerLf | State::EndLf, _) => return Err(InvalidChunk),
            (State::Length(_) | State::Data(_) | State::Done, _) => self.state,
        })
    }
}

fn take(buf: &mut BytesMut, remaining: u64) -> Bytes {
    let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(buf.len());
    buf.split_to(n).freeze()
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in the given pieces; returns the body and what stayed in the buffer.
    fn decode_pieces(
        framing: BodyFraming,
        limits: &Limits,
        pieces: &[&[u8]],
    ) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        let mut decoder = BodyDecoder::new(framing, limits)?;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = pieces.iter();
        loop {
            match decoder.decode(&mut buf)? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => {
                    // Whatever follows the body stays for the next request.
                    for piece in pieces {
                        buf.extend_from_slice(piece);
                    }
                    return Ok((body, buf.to_vec()));
                }
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    // Out of input before the end; no case below expects this.
                    None => return Err(ParseError::Syntax),
                },
            }
        }
    }

    /// Decodes `input` whole and split in two at every offset; every split must agree.
    fn decode_split_everywhere(
        framing: BodyFraming,
        limits: &Limits,
        input: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        let whole = decode_pieces(framing, limits, &[input]);
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(decode_pieces(framing, limits, &[a, b]), whole, "split at {split}");
        }
        // And one byte at a time.
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(framing, limits, &bytes), whole, "byte at a time");
        whole
    }

    fn chunked(input: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ParseError> {
        decode_split_everywhere(BodyFraming::Chunked, &Limits::default(), input)
    }

    #[test]
    fn chunked_split_at_every_byte_decodes() {
        let (body, rest) = chunked(b"5\r\nhello\r\n7;name=val;x=\"q\"\r\n, world\r\n0\r\n\r\nGET /").unwrap();
        assert_eq!(body, b"hello, world");
        assert_eq!(rest, b"GET /");
    }

    #[test]
    fn chunked_with_trailers_and_uppercase_hex() {
        let (body, rest) = chunked(b"A \t;ext\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n").unwrap();
        assert_eq!(body, b"0123456789");
        assert!(rest.is_empty());
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        use ParseError::*;
        let cases: &[(&[u8], ParseError)] = &[
            (b"x\r\n", InvalidChunkSize),
            (b"\r\n", InvalidChunkSize),
            (b" 5\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\rhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5 x\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", InvalidChunkSize),
            (b"5\r\nhelloX\r\n0\r\n\r\n", InvalidChunk),
            (b"5\r\nhello\rX0\r\n\r\n", InvalidChunk),
            (b"5\r\nhello\n0\r\n\r\n", InvalidChunk),
            (b"0\r\n\rX", InvalidChunk),
            (b"0\r\nX: 1\nY\r\n\r\n", InvalidChunk),
            // 17 hex digits overflow 64 bits.
            (b"10000000000000000\r\n", InvalidChunkSize),
            (b"fffffffffffffffff\r\n", InvalidChunkSize),
        ];
        for (input, want) in cases {
            assert_eq!(chunked(input), Err(*want), "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn leading_zeros_do_not_overflow() {
        let (body, _) = chunked(b"00000000000000000005\r\nhello\r\n0\r\n\r\n").unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn chunked_body_over_limit_is_413_before_its_data() {
        let limits = Limits { max_body_bytes: 8, ..Limits::default() };
        let input = b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n";
        assert_eq!(decode_split_everywhere(BodyFraming::Chunked, &limits, input), Err(ParseError::BodyTooLarge));
        // The second size line alone is enough to refuse.
        assert_eq!(
            decode_pieces(BodyFraming::Chunked, &limits, &[b"5\r\nhello\r\n5\r\n"]),
            Err(ParseError::BodyTooLarge)
        );
    }

    #[test]
    fn extensions_and_trailers_are_bounded() {
        let limits = Limits { max_chunk_ext_bytes: 8, max_trailer_bytes: 8, ..Limits::default() };
        let long_ext = b"1;aaaaaaaaaaaa\r\nx\r\n0\r\n\r\n";
        assert_eq!(
            decode_split_everywhere(BodyFraming::Chunked, &limits, long_ext),
            Err(ParseError::ChunkExtensionsTooLong)
        );
        let long_trailer = b"1\r\nx\r\n0\r\nX-Long: aaaaaaaa\r\n\r\n";
        assert_eq!(
            decode_split_everywhere(BodyFraming::Chunked, &limits, long_trailer),
            Err(ParseError::TrailersTooLarge)
        );
    }

    #[test]
    fn length_body_stops_at_its_length() {
        let (body, rest) = decode_split_everywhere(BodyFraming::Length(5), &Limits::default(), b"helloGET").unwrap();
        assert_eq!(body, b"hello");
        assert_eq!(rest, b"GET");
    }

    #[test]
    fn declared_length_over_limit_is_refused_up_front() {
        let limits = Limits { max_body_bytes: 4, ..Limits::default() };
        assert_eq!(BodyDecoder::new(BodyFraming::Length(5), &limits).err(), Some(ParseError::BodyTooLarge));
        assert!(BodyDecoder::new(BodyFraming::Length(4), &limits).is_ok());
    }

    #[test]
    fn no_body_ends_at_once() {
        let mut decoder = BodyDecoder::new(BodyFraming::None, &Limits::default()).unwrap();
        let mut buf = BytesMut::from(&b"GET"[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(Decoded::End));
        assert_eq!(&buf[..], b"GET");
    }
}
