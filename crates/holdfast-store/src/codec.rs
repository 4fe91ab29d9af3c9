//! How channels, messages and the store's own record are laid out in its keyspaces. Every value
//! starts with a version byte, so a store written by a newer Holdfast is refused, not misread.
//!
//! - `messages`: key = channel name, `0x00`, sequence number (u64, big-endian), so one channel's
//!   messages are one ordered range; value = [`encode_message`].
//! - `channels`: key = channel name; value = [`ChannelRow`].
//! - `meta`: `format` (u32, [`FORMAT`]) and `run` ([`RunRecord`]).

use bytes::Bytes;
use holdfast_hub::{Payload, Position};

/// The layout this code writes and reads.
pub const FORMAT: u32 = 1;

const VERSION: u8 = 1;
const FLAG_JSON: u8 = 1;
const FLAG_EVENT: u8 = 2;

/// A message's key: its channel's name, a zero byte (never in a name), its sequence number.
pub fn message_key(channel: &str, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(channel.len() + 9);
    key.extend_from_slice(channel.as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The first key of a channel's messages (prefix scans).
pub fn channel_prefix(channel: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(channel.len() + 1);
    key.extend_from_slice(channel.as_bytes());
    key.push(0);
    key
}

/// A message key's channel and sequence number, or `None` if it is not one.
pub fn split_message_key(key: &[u8]) -> Option<(&str, u64)> {
    let split = key.len().checked_sub(9)?;
    let (name, rest) = key.split_at(split);
    let (&zero, seq) = rest.split_first()?;
    if zero != 0 || name.is_empty() {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    Some((name, u64::from_be_bytes(seq.try_into().ok()?)))
}

/// A message as kept: when it was published (Unix milliseconds), its event type, its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Unix milliseconds at publish.
    pub published_ms: u64,
    /// The event type (`None` = `message`).
    pub event: Option<String>,
    /// The payload bytes.
    pub payload: Bytes,
    /// The payload is a JSON text.
    pub is_json: bool,
}

/// A message's value: version, Unix milliseconds, flags, the event type's length (u16) and
/// bytes, the payload.
pub fn encode_message(published_ms: u64, event: Option<&str>, payload: &Payload) -> Vec<u8> {
    let event_bytes = event.map_or(&b""[..], str::as_bytes);
    let mut value = Vec::with_capacity(1 + 8 + 1 + 2 + event_bytes.len() + payload.bytes.len());
    value.push(VERSION);
    value.extend_from_slice(&published_ms.to_be_bytes());
    let mut flags = 0;
    if payload.is_json {
        flags |= FLAG_JSON;
    }
    if event.is_some() {
        flags |= FLAG_EVENT;
    }
    value.push(flags);
    // Event types are short (the server caps them far below 64 KiB).
    let event_len = event_bytes.len().min(u16::MAX as usize);
    value.extend_from_slice(&(event_len as u16).to_be_bytes());
    value.extend_from_slice(&event_bytes[..event_len]);
    value.extend_from_slice(&payload.bytes);
    value
}

/// A message's value read in place: what [`decode_message`] copies out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageView<'a> {
    /// Unix milliseconds at publish.
    pub published_ms: u64,
    /// The event type (`None` = `message`).
    pub event: Option<&'a str>,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The payload is a JSON text.
    pub is_json: bool,
}

impl MessageView<'_> {
    /// The payload as the hub takes it (a copy, allocated by the calling thread).
    pub fn payload(&self) -> Payload {
        Payload { bytes: Bytes::copy_from_slice(self.payload), is_json: self.is_json }
    }
}

/// Reads a message's value in place, or says why it cannot be read.
pub fn view_message(value: &[u8]) -> Result<MessageView<'_>, String> {
    let (&version, rest) = value.split_first().ok_or("empty message value")?;
    if version != VERSION {
        return Err(format!("message value of version {version} (this Holdfast reads {VERSION})"));
    }
    if rest.len() < 11 {
        return Err("message value is truncated".into());
    }
    let published_ms = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
    let flags = rest[8];
    if flags & !(FLAG_JSON | FLAG_EVENT) != 0 {
        return Err(format!("message value has unknown flags {flags:#04x}"));
    }
    let event_len = u16::from_be_bytes([rest[9], rest[10]]) as usize;
    let rest = &rest[11..];
    if rest.len() < event_len {
        return Err("message value is truncated in its event type".into());
    }
    let (event, payload) = rest.split_at(event_len);
    let event = if flags & FLAG_EVENT != 0 {
        Some(std::str::from_utf8(event).map_err(|_| "event type is not UTF-8")?)
    } else if event_len != 0 {
        return Err("message value has an event type but no flag for it".into());
    } else {
        None
    };
    Ok(MessageView { published_ms, event, payload, is_json: flags & FLAG_JSON != 0 })
}

/// Reads a message's value, or says why it cannot be read.
pub fn decode_message(value: &[u8]) -> Result<StoredMessage, String> {
    let view = view_message(value)?;
    Ok(StoredMessage {
        published_ms: view.published_ms,
        event: view.event.map(str::to_string),
        payload: Bytes::copy_from_slice(view.payload),
        is_json: view.is_json,
    })
}

/// A channel as kept: its epoch, its newest sequence number (kept even once its messages have
/// expired, so a cursor at it resumes with no gap), and the older epoch it continues, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelRow {
    /// The epoch its positions are in.
    pub epoch: u32,
    /// The newest sequence number written.
    pub last_seq: u64,
    /// The older epoch this one continues, up to the last position it kept.
    pub continues: Option<Position>,
}

impl ChannelRow {
    /// Version, epoch, newest sequence number, then 0 or 1 and the continued position.
    pub fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(1 + 4 + 8 + 1 + 12);
        value.push(VERSION);
        value.extend_from_slice(&self.epoch.to_be_bytes());
        value.extend_from_slice(&self.last_seq.to_be_bytes());
        match self.continues {
            None => value.push(0),
            Some(previous) => {
                value.push(1);
                value.extend_from_slice(&previous.epoch.to_be_bytes());
                value.extend_from_slice(&previous.seq.to_be_bytes());
            }
        }
        value
    }

    /// Reads a channel row, or says why it cannot be read.
    pub fn decode(value: &[u8]) -> Result<ChannelRow, String> {
        let bad = || format!("channel row of {} bytes cannot be read", value.len());
        if value.first() != Some(&VERSION) {
            return Err(match value.first() {
                Some(v) => format!("channel row of version {v} (this Holdfast reads {VERSION})"),
                None => bad(),
            });
        }
        let u32_at = |at: usize| value.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4")));
        let u64_at = |at: usize| value.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().expect("8")));
        let epoch = u32_at(1).ok_or_else(bad)?;
        let last_seq = u64_at(5).ok_or_else(bad)?;
        let continues = match (value.get(13), value.len()) {
            (Some(0), 14) => None,
            (Some(1), 26) => Some(Position { epoch: u32_at(14).ok_or_else(bad)?, seq: u64_at(18).ok_or_else(bad)? }),
            _ => return Err(bad()),
        };
        Ok(ChannelRow { epoch, last_seq, continues })
    }
}

/// How the store was last left, kept under `run` in `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The server closed it (everything synced) rather than stopping with it open.
    pub clean: bool,
    /// The durability it ran with (`Durability::label`).
    pub durability: String,
    /// The machine's boot id when it was opened: a different one now means the machine
    /// restarted since, and writes that were not synced may have been lost with it.
    pub boot_id: String,
}

impl RunRecord {
    /// Version, clean flag, then the two strings each after a u16 length.
    pub fn encode(&self) -> Vec<u8> {
        let mut value = vec![VERSION, self.clean as u8];
        for text in [&self.durability, &self.boot_id] {
            let bytes = &text.as_bytes()[..text.len().min(255)];
            value.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            value.extend_from_slice(bytes);
        }
        value
    }

    /// Reads the run record, or says why it cannot be read.
    pub fn decode(value: &[u8]) -> Result<RunRecord, String> {
        let bad = || "the store's run record cannot be read".to_string();
        let (&version, rest) = value.split_first().ok_or_else(bad)?;
        if version != VERSION {
            return Err(format!("run record of version {version} (this Holdfast reads {VERSION})"));
        }
        let (&clean, mut rest) = rest.split_first().ok_or_else(bad)?;
        let mut text = || -> Result<String, String> {
            let len = rest.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize).ok_or_else(bad)?;
            let bytes = rest.get(2..2 + len).ok_or_else(bad)?;
            rest = &rest[2 + len..];
            String::from_utf8(bytes.to_vec()).map_err(|_| bad())
        };
        let durability = text()?;
        let boot_id = text()?;
        Ok(RunRecord { clean: clean == 1, durability, boot_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_keys_sort_by_channel_then_sequence_and_split_back() {
        let mut keys = [message_key("b", 1), message_key("a", 256), message_key("a", 2), message_key("a.b", 1)];
        keys.sort();
        let split: Vec<_> = keys.iter().map(|k| split_message_key(k).unwrap()).collect();
        assert_eq!(split, [("a", 2), ("a", 256), ("a.b", 1), ("b", 1)]);
        assert!(message_key("a", 7).starts_with(&channel_prefix("a")));
        assert!(!message_key("ab", 7).starts_with(&channel_prefix("a")));
        assert_eq!(split_message_key(b"short"), None);
        assert_eq!(split_message_key(b"name\x01\0\0\0\0\0\0\0\x01"), None);
    }

    #[test]
    fn messages_round_trip_and_damage_is_named() {
        let payload = Payload::json(Bytes::from_static(b"{\"a\":1}"));
        let value = encode_message(1234, Some("tick"), &payload);
        let back = decode_message(&value).unwrap();
        assert_eq!(back.published_ms, 1234);
        assert_eq!(back.event.as_deref(), Some("tick"));
        assert_eq!(&back.payload[..], b"{\"a\":1}");
        assert!(back.is_json);
        let plain = decode_message(&encode_message(5, None, &Payload::text(Bytes::from_static(b"")))).unwrap();
        assert_eq!((plain.event, plain.payload.len(), plain.is_json), (None, 0, false));

        assert!(decode_message(&[]).is_err());
        assert!(decode_message(&value[..8]).unwrap_err().contains("truncated"));
        let mut future = value.clone();
        future[0] = 9;
        assert!(decode_message(&future).unwrap_err().contains("version 9"));
        let mut flags = value;
        flags[9] = 0x80;
        assert!(decode_message(&flags).unwrap_err().contains("flags"));
    }

    /// Whatever the bytes on disk, reading them answers (an error at worst) and never panics:
    /// random values, and valid ones cut and flipped at every place.
    #[test]
    fn damaged_bytes_never_panic() {
        let read_all = |bytes: &[u8]| {
            let _ = decode_message(bytes);
            let _ = ChannelRow::decode(bytes);
            let _ = RunRecord::decode(bytes);
            let _ = split_message_key(bytes);
        };
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(..48);
            let bytes: Vec<u8> = (0..len).map(|_| if rng.bool() { rng.u8(..4) } else { rng.u8(..) }).collect();
            read_all(&bytes);
        }
        let valid = [
            encode_message(9, Some("e"), &Payload::json(Bytes::from_static(b"[1]"))),
            ChannelRow { epoch: 1, last_seq: 2, continues: Some(Position { epoch: 3, seq: 4 }) }.encode(),
            RunRecord { clean: false, durability: "batch".into(), boot_id: "b".into() }.encode(),
            message_key("chan", 5),
        ];
        for value in &valid {
            for cut in 0..=value.len() {
                read_all(&value[..cut]);
                for at in 0..cut {
                    for bit in 0..8 {
                        let mut flipped = value[..cut].to_vec();
                        flipped[at] ^= 1 << bit;
                        read_all(&flipped);
                    }
                }
            }
        }
    }

    #[test]
    fn channel_rows_and_run_records_round_trip() {
        for row in [
            ChannelRow { epoch: 7, last_seq: 0, continues: None },
            ChannelRow { epoch: u32::MAX, last_seq: u64::MAX, continues: Some(Position { epoch: 3, seq: 99 }) },
        ] {
            assert_eq!(ChannelRow::decode(&row.encode()), Ok(row));
        }
        assert!(ChannelRow::decode(&[1, 2, 3]).is_err());
        let run = RunRecord { clean: true, durability: "always".into(), boot_id: "abc-123".into() };
        assert_eq!(RunRecord::decode(&run.encode()), Ok(run));
        assert!(RunRecord::decode(&[1, 0, 0]).is_err());
    }
}
