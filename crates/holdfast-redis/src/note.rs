//! What the scripts send and answer, read back: notes on the pub/sub channel and stream entries.
//!
//! A note is `M <epoch> <seq> <json 0|1> <event>\n<data>` for a message (the data is the rest,
//! any bytes), or `D` for a delete. An event is `[A-Za-z0-9_.:-]{1,64}`, so `*` stands for none.

use bytes::Bytes;
use fred::types::Value;
use holdfast_hub::Payload;

/// The event field of a message without an event type.
pub(crate) const NO_EVENT: &str = "*";

/// A note from the pub/sub channel.
#[derive(Debug, Clone)]
pub(crate) enum Note {
    Message { epoch: u32, seq: u64, event: Option<String>, payload: Payload },
    Deleted,
}

impl Note {
    pub(crate) fn parse(bytes: Bytes) -> Option<Note> {
        if bytes.as_ref() == b"D" {
            return Some(Note::Deleted);
        }
        let line_end = bytes.iter().position(|&b| b == b'\n')?;
        let head = std::str::from_utf8(&bytes[..line_end]).ok()?;
        let mut fields = head.split(' ');
        if fields.next()? != "M" {
            return None;
        }
        let epoch = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let is_json = fields.next()? == "1";
        let event = event_of(fields.next()?);
        let payload = Payload { bytes: bytes.slice(line_end + 1..), is_json };
        Some(Note::Message { epoch, seq, event, payload })
    }
}

fn event_of(field: &str) -> Option<String> {
    (field != NO_EVENT).then(|| field.to_string())
}

/// The sequence number of a stream entry id (`<seq>-0`).
pub(crate) fn entry_seq(id: &str) -> Option<u64> {
    id.split('-').next()?.parse().ok()
}

/// One stream entry, read back.
pub(crate) struct Entry {
    pub seq: u64,
    pub event: Option<String>,
    pub payload: Payload,
    /// Redis time of its publish (ms).
    pub at_ms: u64,
}

/// The open script's answer.
pub(crate) struct Opened {
    pub epoch: u32,
    pub seq: u64,
    pub now_ms: u64,
    pub entries: Vec<Entry>,
}

impl Opened {
    pub(crate) fn parse(answer: Vec<Value>) -> Option<Opened> {
        let mut answer = answer.into_iter();
        let epoch = u32::try_from(answer.next()?.as_u64()?).ok()?;
        let seq = answer.next()?.as_u64()?;
        let now_ms = answer.next()?.as_u64()?;
        let entries = answer.next()?.into_array().into_iter().map(Entry::parse).collect::<Option<Vec<_>>>()?;
        Some(Opened { epoch, seq, now_ms, entries })
    }
}

impl Entry {
    /// `[id, [field, value, …]]`.
    fn parse(entry: Value) -> Option<Entry> {
        let mut parts = entry.into_array().into_iter();
        let seq = entry_seq(&parts.next()?.as_string()?)?;
        let mut fields = parts.next()?.into_array().into_iter();
        let (mut event, mut data, mut is_json, mut at_ms) = (None, Bytes::new(), false, 0);
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            match name.as_bytes()? {
                b"e" => event = event_of(&value.as_string()?),
                b"d" => data = value.into_bytes()?,
                b"j" => is_json = value.as_bytes()? == b"1",
                b"t" => at_ms = value.as_u64()?,
                _ => {}
            }
        }
        Some(Entry { seq, event, payload: Payload { bytes: data, is_json }, at_ms })
    }
}
