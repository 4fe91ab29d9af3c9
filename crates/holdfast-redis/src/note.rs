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

/// A number Redis answered as an integer or as a string of digits.
pub(crate) fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Integer(n) => u64::try_from(*n).ok(),
        Value::String(s) => s.parse().ok(),
        Value::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
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
        let epoch = u32::try_from(number(&answer.next()?)?).ok()?;
        let seq = number(&answer.next()?)?;
        let now_ms = number(&answer.next()?)?;
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
                b"t" => at_ms = number(&value)?,
                _ => {}
            }
        }
        Some(Entry { seq, event, payload: Payload { bytes: data, is_json }, at_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_read_back_as_the_publish_script_writes_them() {
        let Some(Note::Message { epoch, seq, event, payload }) =
            Note::parse(Bytes::from_static(b"M 77 12 1 tick\n{\"a\":\"b c\\nd\"}"))
        else {
            panic!("a message note");
        };
        assert_eq!((epoch, seq, event.as_deref()), (77, 12, Some("tick")));
        assert!(payload.is_json);
        assert_eq!(&payload.bytes[..], b"{\"a\":\"b c\\nd\"}", "the data is every byte after the first line");

        let Some(Note::Message { event, payload, .. }) = Note::parse(Bytes::from_static(b"M 1 1 0 *\n\xff\n\x00"))
        else {
            panic!("a message note");
        };
        assert_eq!(event, None, "* is no event");
        assert_eq!(&payload.bytes[..], b"\xff\n\x00");
        assert!(matches!(Note::parse(Bytes::from_static(b"D")), Some(Note::Deleted)));
        for foreign in [&b"hello"[..], b"M 1 x 0 *\n", b"M 1 2\n", b"X 1 2 0 *\nd"] {
            assert!(Note::parse(Bytes::copy_from_slice(foreign)).is_none(), "{foreign:?}");
        }
    }

    #[test]
    fn entries_and_the_open_answer_read_back() {
        let entry = |id: &str, fields: &[&str]| {
            Value::Array(vec![
                Value::from(id),
                Value::Array(fields.iter().map(|f| Value::Bytes(Bytes::copy_from_slice(f.as_bytes()))).collect()),
            ])
        };
        let answer = vec![
            Value::from("3000000000"),
            Value::Integer(9),
            Value::Integer(1_700_000_000_123),
            Value::Array(vec![
                entry("8-0", &["e", "*", "d", "eight", "j", "0", "t", "1700000000000"]),
                entry("9-0", &["e", "ev", "d", "[9]", "j", "1", "t", "1700000000100"]),
            ]),
        ];
        let opened = Opened::parse(answer).expect("parsed");
        assert_eq!((opened.epoch, opened.seq, opened.now_ms), (3_000_000_000, 9, 1_700_000_000_123));
        let seqs: Vec<u64> = opened.entries.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [8, 9]);
        assert_eq!(opened.entries[0].event, None);
        assert_eq!(&opened.entries[1].payload.bytes[..], b"[9]");
        assert!(opened.entries[1].payload.is_json);
        assert_eq!(opened.entries[1].at_ms, 1_700_000_000_100);
        assert_eq!(entry_seq("42-0"), Some(42));
    }
}
