//! The WebSocket frame on the wire (RFC 6455 §5.2): opcodes, reading a frame header, writing the
//! header of a server frame, and the masking transform (§5.3).
//!
//! What it does not own: which frames may follow which, message assembly, UTF-8 and close-frame
//! rules (see [`super::codec`]), or what a close payload holds (see [`super::close`]).

use bytes::BytesMut;

use super::codec::ProtocolError;

/// The largest payload of a control frame (RFC 6455 §5.5: "125 bytes or less").
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame's opcode (RFC 6455 §5.2, §11.8). The reserved values 0x3–0x7 and 0xB–0xF have no
/// variant: a frame carrying one is a protocol error.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OpCode {
    /// 0x0: the next fragment of the message in progress.
    Continuation,
    /// 0x1: the first frame of a text (UTF-8) message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close (a control frame).
    Close,
    /// 0x9: ping (a control frame).
    Ping,
    /// 0xA: pong (a control frame).
    Pong,
}

impl OpCode {
    /// The opcode for the low four bits of a frame's first byte, or `None` for a reserved value.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The four bits this opcode is sent as.
    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong: the most significant opcode bit is
    /// set, RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A frame header as read from the wire, checked against the rules that hold for every frame
/// whoever sent it. Role rules (a client must mask, §5.1) are the caller's.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of its message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the first frame of a compressed message (RFC 7692 §6).
    pub rsv1: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// The payload length (below 2^63).
    pub payload_len: u64,
    /// The header's size on the wire: 2 to 14 bytes.
    pub header_len: usize,
}

impl FrameHeader {
    /// Reads a frame header from the front of `buf` without taking anything off it, with no
    /// extension negotiated: every RSV bit is an error.
    ///
    /// `Ok(None)` while the header is incomplete. Each rule is judged as soon as the bytes it
    /// needs are there, in wire order, so the answer never depends on how the bytes arrived.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        FrameHeader::parse_with(buf, false)
    }

    /// [`FrameHeader::parse`], letting RSV1 through when `rsv1_allowed` (permessage-deflate was
    /// negotiated; which frames may carry it is the decoder's rule).
    pub fn parse_with(buf: &[u8], rsv1_allowed: bool) -> Result<Option<FrameHeader>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        // RFC 6455 §5.2: RSV1-3 MUST be 0 unless an extension defines them; permessage-deflate
        // defines RSV1 only (RFC 7692 §6).
        let reserved = if rsv1_allowed { 0x30 } else { 0x70 };
        if b0 & reserved != 0 {
            return Err(ProtocolError::protocol("reserved bits set"));
        }
        let rsv1 = b0 & 0x40 != 0;
        // RFC 6455 §5.2: "If an unknown opcode is received, the receiving endpoint MUST _Fail the
        // WebSocket Connection_."
        let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::protocol("reserved opcode"))?;
        let fin = b0 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        if opcode.is_control() {
            // RFC 6455 §5.5: control frames MUST NOT be fragmented and MUST have a payload of
            // 125 bytes or less.
            if !fin {
                return Err(ProtocolError::protocol("fragmented control frame"));
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::protocol("control frame over 125 bytes"));
            }
        }
        let (payload_len, mut header_len) = match len7 {
            126 => {
                let Some(bytes) = buf.get(2..4) else { return Ok(None) };
                let len = u16::from_be_bytes([bytes[0], bytes[1]]);
                // RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length".
                if len < 126 {
                    return Err(ProtocolError::protocol("non-minimal length encoding"));
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else { return Ok(None) };
                let mut be = [0; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                // RFC 6455 §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::protocol("64-bit length with the top bit set"));
                }
                // RFC 6455 §5.2: minimal encoding; a length up to 65535 fits the 16-bit form.
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::protocol("non-minimal length encoding"));
                }
                (len, 10)
            }
            len => (u64::from(len), 2),
        };
        let mask = if b1 & 0x80 != 0 {
            let Some(bytes) = buf.get(header_len..header_len + 4) else { return Ok(None) };
            header_len += 4;
            Some([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            None
        };
        Ok(Some(FrameHeader { fin, rsv1, opcode, mask, payload_len, header_len }))
    }
}

/// The header of a server frame: FIN unless `fin` is false, no RSV bits, never masked (RFC 6455
/// §5.1: "A server MUST NOT mask any frames"), and the shortest length encoding (§5.2). Returns
/// the bytes and how many of them to send.
pub fn header(fin: bool, opcode: OpCode, payload_len: u64) -> ([u8; 10], usize) {
    header_with(fin, false, opcode, payload_len)
}

/// [`header`] with RSV1 set when `compressed`: a single-frame message compressed with
/// permessage-deflate (RFC 7692 §6).
pub fn header_with(fin: bool, compressed: bool, opcode: OpCode, payload_len: u64) -> ([u8; 10], usize) {
    debug_assert!(payload_len >> 63 == 0, "RFC 6455 §5.2: payload length below 2^63");
    let mut out = [0u8; 10];
    out[0] = if fin { 0x80 } else { 0 } | if compressed { 0x40 } else { 0 } | opcode.bits();
    let len = if payload_len < 126 {
        out[1] = payload_len as u8;
        2
    } else if let Ok(len16) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len16.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&payload_len.to_be_bytes());
        10
    };
    (out, len)
}

/// Appends one complete, unfragmented server frame (header and payload) to `out`.
pub fn put_frame(out: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
    put_frame_with(out, false, opcode, payload)
}

/// [`put_frame`] with RSV1 set when `compressed` (the payload is a permessage-deflate message).
pub fn put_frame_with(out: &mut BytesMut, compressed: bool, opcode: OpCode, payload: &[u8]) {
    let (head, len) = header_with(true, compressed, opcode, payload.len() as u64);
    out.reserve(len + payload.len());
    out.extend_from_slice(&head[..len]);
    out.extend_from_slice(payload);
}

/// Masks or unmasks `data` in place (RFC 6455 §5.3: octet i is XORed with octet i mod 4 of the
/// key; the same transform both ways). `data` must start at the first payload byte.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    // Eight bytes at a time: 8 is a multiple of 4, so every word starts at key octet 0.
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        word.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
    }
    for (i, byte) in words.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(fin: bool, opcode: OpCode, payload_len: u64) -> Vec<u8> {
        let (head, len) = header(fin, opcode, payload_len);
        head[..len].to_vec()
    }

    #[test]
    fn headers_match_rfc_6455_section_5_7_examples() {
        // A single-frame unmasked text message "Hello".
        assert_eq!(encoded(true, OpCode::Text, 5), [0x81, 0x05]);
        // A fragmented unmasked text message: "Hel" then "lo".
        assert_eq!(encoded(false, OpCode::Text, 3), [0x01, 0x03]);
        assert_eq!(encoded(true, OpCode::Continuation, 2), [0x80, 0x02]);
        // Unmasked ping and pong with "Hello".
        assert_eq!(encoded(true, OpCode::Ping, 5), [0x89, 0x05]);
        assert_eq!(encoded(true, OpCode::Pong, 5), [0x8A, 0x05]);
        // 256 bytes binary in a single unmasked frame.
        assert_eq!(encoded(true, OpCode::Binary, 256), [0x82, 0x7E, 0x01, 0x00]);
        // 64 KiB binary in a single unmasked frame.
        assert_eq!(encoded(true, OpCode::Binary, 65536), [0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
    }

    #[test]
    fn header_uses_the_shortest_length_encoding() {
        let cases: &[(u64, usize)] =
            &[(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (u32::MAX as u64 + 1, 10), ((1 << 63) - 1, 10)];
        for &(len, want) in cases {
            let bytes = encoded(true, OpCode::Binary, len);
            assert_eq!(bytes.len(), want, "{len}");
            // And it reads back as the same length.
            let parsed = FrameHeader::parse(&bytes).unwrap().unwrap();
            assert_eq!((parsed.payload_len, parsed.header_len, parsed.mask), (len, want, None));
        }
    }

    #[test]
    fn put_frame_writes_header_then_payload() {
        let mut out = BytesMut::new();
        put_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(&out[..], b"\x81\x05Hello");
        let mut out = BytesMut::from(&b"x"[..]);
        put_frame(&mut out, OpCode::Binary, &[7; 256]);
        assert_eq!(&out[..5], [b'x', 0x82, 0x7E, 0x01, 0x00]);
        assert_eq!(out.len(), 1 + 4 + 256);
    }

    #[test]
    fn masking_is_its_own_inverse_at_every_length() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let original: Vec<u8> = (0..len as u8).collect();
            let mut data = original.clone();
            apply_mask(&mut data, key);
            let bytewise: Vec<u8> = original.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            assert_eq!(data, bytewise, "len {len}");
            apply_mask(&mut data, key);
            assert_eq!(data, original);
        }
    }

    #[test]
    fn opcodes_round_trip_and_reserved_ones_have_none() {
        for bits in 0..16u8 {
            match OpCode::from_bits(bits) {
                Some(op) => {
                    assert_eq!(op.bits(), bits);
                    assert_eq!(op.is_control(), bits >= 8);
                }
                None => assert!(matches!(bits, 0x3..=0x7 | 0xB..=0xF), "{bits}"),
            }
        }
    }
}
