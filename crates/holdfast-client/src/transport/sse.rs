//! The Server-Sent Events reader (WHATWG HTML §9.2.6 "Interpreting an event stream"): `id:`,
//! `event:`, `data:` lines, a blank line dispatching the event; comment lines are heartbeats,
//! except `: data is base64`, which marks the event's data as base64 (a payload that is not
//! UTF-8). `retry:` is ignored: the SDK paces its own reconnections.

use base64::Engine;
use bytes::Bytes;

use super::{envelope, Item, LineBuffer};
use crate::error::Error;
use crate::event::{Event, Message};

/// The comment the server puts in an event whose data lines are base64.
const BASE64_COMMENT: &[u8] = b": data is base64";

/// An incremental SSE parser. Holds at most one line and one event's data.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    lines: LineBuffer,
    /// The last event ID (it persists across events, as in browsers).
    id: String,
    event: String,
    data: Vec<u8>,
    has_data: bool,
    base64: bool,
}

impl SseParser {
    /// Feeds bytes; pushes the events (and heartbeats) they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8], channel: &str, out: &mut Vec<Item>) -> Result<(), Error> {
        let mut rest = bytes;
        while let Some(line) = self.lines.next_line(&mut rest)? {
            self.line(&line, channel, out)?;
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], channel: &str, out: &mut Vec<Item>) -> Result<(), Error> {
        if line.is_empty() {
            return self.dispatch(channel, out);
        }
        if line == BASE64_COMMENT {
            self.base64 = true;
            return Ok(());
        }
        if line[0] == b':' {
            out.push(Item::Heartbeat);
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => (&line[..i], line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..])),
            None => (line, &b""[..]),
        };
        match field {
            b"id" if !value.contains(&0) => self.id = String::from_utf8_lossy(value).into_owned(),
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, channel: &str, out: &mut Vec<Item>) -> Result<(), Error> {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let (has_data, base64) = (std::mem::take(&mut self.has_data), std::mem::take(&mut self.base64));
        if !has_data {
            return Ok(());
        }
        let cursor = Some(self.id.clone());
        let item = match event.as_str() {
            envelope::GAP | envelope::CLOSED => {
                let json: serde_json::Value =
                    serde_json::from_slice(&data).map_err(|_| Error::protocol("a notice whose data is not JSON"))?;
                if event == envelope::GAP {
                    Item::Event(Event::Gap(envelope::gap(&json, channel)?), cursor)
                } else {
                    let reason = json["reason"].as_str().unwrap_or("unknown").to_string();
                    Item::Event(Event::Closed { channel: channel.to_string(), reason }, cursor)
                }
            }
            _ => {
                let data = if base64 {
                    base64::engine::general_purpose::STANDARD
                        .decode(&data)
                        .map_err(|_| Error::protocol("SSE data announced as base64 is not"))?
                } else {
                    data
                };
                let event = if event.is_empty() { "message".to_string() } else { event };
                let cursor = self.id.clone();
                Item::Event(
                    Event::Message(Message { channel: channel.to_string(), event, data: Bytes::from(data), cursor }),
                    Some(self.id.clone()),
                )
            }
        };
        out.push(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(input: &[u8], at: usize) -> Vec<Item> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        parser.feed(&input[..at], "room", &mut out).unwrap();
        parser.feed(&input[at..], "room", &mut out).unwrap();
        out
    }

    #[test]
    fn events_heartbeats_and_notices_split_at_every_byte() {
        let input =
            b"retry: 2000\n\n:\n\nid: c1\ndata: a\ndata: b\n\nid: c2\nevent: chat\n: data is base64\ndata: AP8=\n\n\
id: c3\nevent: holdfast.gap\ndata: {\"channel\":\"room\",\"first_available\":3,\"lost\":2}\n\n\
id: c4\r\nevent: holdfast.closed\r\ndata: {\"reason\":\"admin_disconnect\",\"cursor\":\"c4\"}\r\n\r\n";
        for at in 0..=input.len() {
            let out = feed_split(input, at);
            assert_eq!(out.len(), 5, "split at {at}: {out:?}");
            assert_eq!(out[0], Item::Heartbeat);
            match &out[1] {
                Item::Event(Event::Message(m), Some(c)) => {
                    assert_eq!((m.text(), m.event.as_str(), c.as_str()), (Some("a\nb"), "message", "c1"))
                }
                other => panic!("{other:?}"),
            }
            match &out[2] {
                Item::Event(Event::Message(m), _) => {
                    assert_eq!((&m.data[..], m.event.as_str()), (&[0u8, 255][..], "chat"))
                }
                other => panic!("{other:?}"),
            }
            assert!(matches!(&out[3], Item::Event(Event::Gap(g), Some(c)) if g.lost == Some(2) && c == "c3"));
            assert!(
                matches!(&out[4], Item::Event(Event::Closed { reason, .. }, Some(c)) if reason == "admin_disconnect" && c == "c4")
            );
        }
    }
}
