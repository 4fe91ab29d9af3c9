//! JSON envelopes (`{"id","channel","event","data"|"data_b64"|"json"}`), the notices carried as
//! envelopes (`holdfast.gap`, `holdfast.closed`) and poll answers, turned into [`Item`]s.

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;

use super::Item;
use crate::error::Error;
use crate::event::{Event, Gap, Message};

/// The notice event types (docs/protocol.md, "Messages and envelopes").
pub(crate) const GAP: &str = "holdfast.gap";
pub(crate) const CLOSED: &str = "holdfast.closed";

/// One envelope. `default_channel` fills in a missing `channel`.
pub(crate) fn item(v: &Value, default_channel: &str) -> Result<Item, Error> {
    let cursor = v["id"].as_str().map(str::to_string);
    let channel = v["channel"].as_str().unwrap_or(default_channel).to_string();
    let event = v["event"].as_str().unwrap_or("message");
    let event = match event {
        GAP => Event::Gap(gap(&v["json"], &channel)?),
        CLOSED => Event::Closed { channel, reason: v["json"]["reason"].as_str().unwrap_or("unknown").to_string() },
        _ => Event::Message(Message {
            channel,
            event: event.to_string(),
            data: payload(v)?,
            cursor: cursor.clone().ok_or_else(|| Error::protocol("an envelope without an id"))?,
        }),
    };
    // A closed notice's own cursor, when its envelope has no id.
    let cursor = cursor.or_else(|| v["json"]["cursor"].as_str().map(str::to_string));
    Ok(Item::Event(event, cursor))
}

/// The payload of a message envelope: `data` (text), `data_b64` (bytes) or `json` (a value).
fn payload(v: &Value) -> Result<Bytes, Error> {
    if let Some(text) = v["data"].as_str() {
        return Ok(Bytes::copy_from_slice(text.as_bytes()));
    }
    if let Some(b64) = v["data_b64"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| Error::protocol("data_b64 is not base64"))?;
        return Ok(Bytes::from(bytes));
    }
    match v.get("json").or_else(|| v.get("data")) {
        Some(json) => Ok(Bytes::from(json.to_string())),
        None => Err(Error::protocol("an envelope without data, data_b64 or json")),
    }
}

/// A gap object: `{"channel","asked","epoch","first_available","lost"}`.
pub(crate) fn gap(v: &Value, default_channel: &str) -> Result<Gap, Error> {
    let first_available =
        v["first_available"].as_u64().ok_or_else(|| Error::protocol("a gap without first_available"))?;
    Ok(Gap {
        channel: v["channel"].as_str().unwrap_or(default_channel).to_string(),
        lost: v["lost"].as_u64(),
        first_available,
    })
}

/// A poll answer `{"messages":[…],"cursor":"…","gap":[…],"deleted":[…]}`: gaps first (they are
/// about what comes before the messages), then deleted channels, then the messages. Gives the
/// answer's cursor.
pub(crate) fn poll_answer(body: &[u8], default_channel: &str, out: &mut Vec<Item>) -> Result<String, Error> {
    let v: Value = serde_json::from_slice(body).map_err(|_| Error::protocol("a poll answer that is not JSON"))?;
    let cursor = v["cursor"].as_str().ok_or_else(|| Error::protocol("a poll answer without a cursor"))?;
    for g in v["gap"].as_array().into_iter().flatten() {
        out.push(Item::Event(Event::Gap(gap(g, default_channel)?), None));
    }
    for channel in v["deleted"].as_array().into_iter().flatten() {
        let channel = channel.as_str().unwrap_or(default_channel).to_string();
        out.push(Item::Event(Event::Closed { channel, reason: "channel_deleted".into() }, None));
    }
    for m in v["messages"].as_array().into_iter().flatten() {
        out.push(item(m, default_channel)?);
    }
    Ok(cursor.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Item {
        item(&serde_json::from_str(text).unwrap(), "room").unwrap()
    }

    fn message(item: Item) -> Message {
        match item {
            Item::Event(Event::Message(m), _) => m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn text_binary_and_json_payloads() {
        let m = message(parse(r#"{"id":"c1","channel":"room","event":"chat","data":"hi"}"#));
        assert_eq!(
            (m.channel.as_str(), m.event.as_str(), m.text(), m.cursor.as_str()),
            ("room", "chat", Some("hi"), "c1")
        );
        let m = message(parse(r#"{"id":"c2","channel":"room","event":"message","data_b64":"AP8="}"#));
        assert_eq!(&m.data[..], &[0, 255]);
        let m = message(parse(r#"{"id":"c3","channel":"room","event":"message","json":{"a":1}}"#));
        assert_eq!(m.text(), Some(r#"{"a":1}"#));
    }

    #[test]
    fn notices_become_gaps_and_closes_with_their_cursor() {
        let gap = parse(
            r#"{"id":"c4","channel":"room","event":"holdfast.gap","json":{"channel":"room","asked":{"epoch":1,"seq":2},"epoch":3,"first_available":1,"lost":null}}"#,
        );
        assert_eq!(
            gap,
            Item::Event(Event::Gap(Gap { channel: "room".into(), lost: None, first_available: 1 }), Some("c4".into()))
        );
        let closed = parse(
            r#"{"id":"c5","channel":"a,b","event":"holdfast.closed","json":{"reason":"shutdown","cursor":"c5"}}"#,
        );
        assert_eq!(
            closed,
            Item::Event(Event::Closed { channel: "a,b".into(), reason: "shutdown".into() }, Some("c5".into()))
        );
    }

    #[test]
    fn poll_answers_put_gaps_before_messages() {
        let mut out = Vec::new();
        let body = br#"{"messages":[{"id":"c9","channel":"room","event":"message","data":"x"}],"cursor":"c9","gap":[{"channel":"room","first_available":5,"lost":4,"epoch":1,"asked":{}}]}"#;
        assert_eq!(poll_answer(body, "room", &mut out).unwrap(), "c9");
        assert!(matches!(&out[0], Item::Event(Event::Gap(g), None) if g.lost == Some(4)));
        assert!(matches!(&out[1], Item::Event(Event::Message(m), Some(c)) if c == "c9" && m.text() == Some("x")));
    }

    #[test]
    fn malformed_answers_are_protocol_errors() {
        let mut out = Vec::new();
        assert!(poll_answer(b"nope", "room", &mut out).unwrap_err().is_protocol());
        assert!(poll_answer(b"{}", "room", &mut out).unwrap_err().is_protocol());
        assert!(item(&serde_json::json!({"channel":"room","data":"x"}), "room").unwrap_err().is_protocol());
    }
}
