//! Cursors: the opaque, URL-safe token that says where a subscriber is in every channel of its
//! subscription.
//!
//! Layout before base64url (no padding): a version byte, then per channel the 32-bit FNV-1a hash
//! of its name (little endian), its epoch and its sequence number as LEB128 varints. A
//! single-channel cursor is 8–20 characters. The hash lets a cursor be reused when channels are
//! listed in another order or some are dropped; the epoch tells when a channel's history was lost.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::channel::Position;

const VERSION: u8 = 1;
/// Channels one cursor may hold (a subscription lists at most this many).
pub const MAX_CURSOR_CHANNELS: usize = 64;
/// Longest accepted cursor text: 64 channels × 19 bytes, base64-expanded, with margin.
const MAX_CURSOR_LEN: usize = 2048;

/// A decoded cursor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cursor {
    entries: Vec<(u32, Position)>,
}

/// Why a cursor was refused (answered with 400 and this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Longer than any cursor this server writes.
    TooLong,
    /// Not base64url.
    NotBase64,
    /// A version this server does not write.
    UnknownVersion,
    /// Cut short or with bytes left over.
    Truncated,
    /// More channels than a subscription may have.
    TooManyChannels,
}

impl fmt::Display for CursorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CursorError::TooLong => "cursor is too long",
            CursorError::NotBase64 => "cursor is not base64url text",
            CursorError::UnknownVersion => "cursor has an unknown version",
            CursorError::Truncated => "cursor is truncated or has trailing bytes",
            CursorError::TooManyChannels => "cursor holds too many channels",
        })
    }
}

impl std::error::Error for CursorError {}

/// The 32-bit FNV-1a hash of a channel name, as stored in cursors.
pub fn channel_hash(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5u32, |hash, byte| (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193))
}

impl Cursor {
    /// A cursor holding these (channel name, position) pairs.
    pub fn new<'a>(positions: impl IntoIterator<Item = (&'a str, Position)>) -> Cursor {
        Cursor { entries: positions.into_iter().map(|(name, p)| (channel_hash(name), p)).collect() }
    }

    /// The position recorded for a channel, if this cursor has one.
    pub fn position(&self, channel: &str) -> Option<Position> {
        let hash = channel_hash(channel);
        self.entries.iter().find(|(h, _)| *h == hash).map(|(_, p)| *p)
    }

    /// Sets (or adds) a channel's position.
    pub fn set(&mut self, channel: &str, position: Position) {
        let hash = channel_hash(channel);
        match self.entries.iter_mut().find(|(h, _)| *h == hash) {
            Some(entry) => entry.1 = position,
            None => self.entries.push((hash, position)),
        }
    }

    /// Parses a cursor given by a client.
    pub fn decode(text: &str) -> Result<Cursor, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| CursorError::NotBase64)?;
        let (&version, mut rest) = bytes.split_first().ok_or(CursorError::Truncated)?;
        if version != VERSION {
            return Err(CursorError::UnknownVersion);
        }
        let mut entries = Vec::new();
        while !rest.is_empty() {
            if entries.len() == MAX_CURSOR_CHANNELS {
                return Err(CursorError::TooManyChannels);
            }
            let (hash, after) = rest.split_first_chunk::<4>().ok_or(CursorError::Truncated)?;
            let (epoch, after) = read_varint(after)?;
            let (seq, after) = read_varint(after)?;
            let epoch = u32::try_from(epoch).map_err(|_| CursorError::Truncated)?;
            entries.push((u32::from_le_bytes(*hash), Position { epoch, seq }));
            rest = after;
        }
        Ok(Cursor { entries })
    }

    /// The cursor as text.
    pub fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(1 + self.entries.len() * 12);
        bytes.push(VERSION);
        for (hash, position) in &self.entries {
            bytes.extend_from_slice(&hash.to_le_bytes());
            write_varint(&mut bytes, u64::from(position.epoch));
            write_varint(&mut bytes, position.seq);
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }
}

fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8]) -> Result<(u64, &[u8]), CursorError> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if i == 9 && bits > 1 {
            return Err(CursorError::Truncated);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(CursorError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: u32, seq: u64) -> Position {
        Position { epoch, seq }
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let cursor = Cursor::new([("room:1", pos(7, 0)), ("prices", pos(u32::MAX, u64::MAX)), ("x", pos(1, 300))]);
        let text = cursor.encode();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{text}");
        let back = Cursor::decode(&text).unwrap();
        assert_eq!(back, cursor);
        assert_eq!(back.position("prices"), Some(pos(u32::MAX, u64::MAX)));
        assert_eq!(back.position("x"), Some(pos(1, 300)));
        assert_eq!(back.position("nope"), None);
    }

    #[test]
    fn single_channel_cursor_is_short() {
        let text = Cursor::new([("chat", pos(123_456, 42))]).encode();
        assert!(text.len() <= 16, "{text}");
    }

    #[test]
    fn malformed_cursors_are_refused_with_a_reason() {
        assert_eq!(Cursor::decode(""), Err(CursorError::Truncated));
        assert_eq!(Cursor::decode("!!"), Err(CursorError::NotBase64));
        assert_eq!(Cursor::decode("AQ=="), Err(CursorError::NotBase64));
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode([2u8, 0, 0, 0, 0, 1, 1])), Err(CursorError::UnknownVersion));
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode([1u8, 0, 0, 0])), Err(CursorError::Truncated));
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode([1u8, 0, 0, 0, 0, 1, 0x80])), Err(CursorError::Truncated));
        let overflow = [1u8, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(Cursor::decode(&URL_SAFE_NO_PAD.encode(overflow)), Err(CursorError::Truncated));
        assert_eq!(Cursor::decode(&"A".repeat(5000)), Err(CursorError::TooLong));
        let many = Cursor::new((0..65).map(|i| (Box::leak(format!("c{i}").into_boxed_str()) as &str, pos(1, 1))));
        assert_eq!(Cursor::decode(&many.encode()), Err(CursorError::TooManyChannels));
        // Text is case-sensitive and every error displays as a sentence.
        assert!(CursorError::Truncated.to_string().contains("truncated"));
    }
}
