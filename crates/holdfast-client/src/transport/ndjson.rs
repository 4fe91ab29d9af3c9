//! The chunked NDJSON stream reader: an empty first line, then one JSON envelope per line;
//! later empty lines are heartbeats.

use super::{envelope, Item, LineBuffer};
use crate::error::Error;

/// An incremental NDJSON parser. Holds at most one line.
#[derive(Debug, Default)]
pub(crate) struct NdjsonParser {
    lines: LineBuffer,
    /// The empty line that opens the stream was seen (it is not a heartbeat).
    opened: bool,
}

impl NdjsonParser {
    /// Feeds bytes; pushes the envelopes (and heartbeats) they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8], channel: &str, out: &mut Vec<Item>) -> Result<(), Error> {
        let mut rest = bytes;
        while let Some(line) = self.lines.next_line(&mut rest)? {
            if line.is_empty() {
                if std::mem::replace(&mut self.opened, true) {
                    out.push(Item::Heartbeat);
                }
                continue;
            }
            self.opened = true;
            let v = serde_json::from_slice(&line).map_err(|_| Error::protocol("a stream line that is not JSON"))?;
            out.push(envelope::item(&v, channel)?);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    #[test]
    fn envelopes_and_heartbeats_split_at_every_byte() {
        let input = b"\n{\"id\":\"c1\",\"channel\":\"room\",\"event\":\"message\",\"data\":\"x\"}\n\n\
{\"id\":\"c2\",\"channel\":\"room\",\"event\":\"holdfast.closed\",\"json\":{\"reason\":\"shutdown\",\"cursor\":\"c2\"}}\n";
        for at in 0..=input.len() {
            let mut parser = NdjsonParser::default();
            let mut out = Vec::new();
            parser.feed(&input[..at], "room", &mut out).unwrap();
            parser.feed(&input[at..], "room", &mut out).unwrap();
            assert_eq!(out.len(), 3, "split at {at}: {out:?}");
            assert!(matches!(&out[0], Item::Event(Event::Message(m), Some(c)) if c == "c1" && m.text() == Some("x")));
            assert_eq!(out[1], Item::Heartbeat);
            assert!(matches!(&out[2], Item::Event(Event::Closed { reason, .. }, _) if reason == "shutdown"));
        }
    }
}
