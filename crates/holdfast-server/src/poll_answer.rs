//! The answer to a poll, short or long: `{"messages":[…],"cursor":"…"}` (plus `"gap":[…]` when
//! the cursor pointed at lost messages, and `"deleted":[…]` for channels deleted meanwhile),
//! built from the messages' shared envelope bytes. A pure function of the positions, shared by
//! the connection task (short polls, long polls answered at once) and the push shards (held long
//! polls).

use std::sync::Arc;

use holdfast_hub::{Gap, Message, Position, ReadFrom};

use crate::response::Response;
use crate::subscription::{cursor_for, gap_json, Positions};

/// Everything after each position (the whole kept history at most), oldest first across
/// channels; a position evicted meanwhile becomes a gap in `gaps` and restarts at what is kept.
pub(crate) fn collect(positions: &mut Positions, gaps: &mut Vec<Gap>) -> Vec<(usize, Arc<Message>)> {
    let mut messages = Vec::new();
    for (i, (channel, seq)) in positions.iter_mut().enumerate() {
        let mut read = channel.read_after(*seq, usize::MAX);
        if read.lost {
            let (start, gap) = channel.start(ReadFrom::After(Position { epoch: channel.epoch, seq: *seq }));
            gaps.extend(gap);
            *seq = start;
            read = channel.read_after(start, usize::MAX);
        }
        messages.extend(read.messages.into_iter().map(|m| (i, m)));
    }
    if positions.len() > 1 {
        messages.sort_by_key(|(_, m)| m.published_at);
    }
    messages
}

/// Whether a poll has something to say now: messages, gaps, or a deleted (or reset) channel.
pub(crate) fn is_due(positions: &Positions, gaps: &[Gap], messages: &[(usize, Arc<Message>)]) -> bool {
    !messages.is_empty() || !gaps.is_empty() || positions.iter().any(|(c, _)| c.is_deleted())
}

/// The answer: a 200 JSON response (with the CORS origin to allow, if any). The positions are
/// moved past the messages. A long poll's answer announces `longpoll_timeout` as
/// `Holdfast-Heartbeat` (`longest_silence`): a held poll is answered by then at the latest.
pub(crate) fn render(
    positions: &mut Positions,
    gaps: &[Gap],
    messages: &[(usize, Arc<Message>)],
    origin: Option<&str>,
    longest_silence: Option<std::time::Duration>,
) -> Response {
    let single = positions.len() == 1;
    let mut body = Vec::with_capacity(64 + messages.iter().map(|(_, m)| m.envelope_tail.len() + 40).sum::<usize>());
    body.extend_from_slice(b"{\"messages\":[");
    for (n, (i, message)) in messages.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        positions[*i].1 = message.position.seq;
        let id = if single { message.cursor.to_vec() } else { cursor_for(positions).into_bytes() };
        body.extend_from_slice(&message.envelope(&id));
    }
    body.extend_from_slice(b"],\"cursor\":\"");
    body.extend_from_slice(cursor_for(positions).as_bytes());
    body.push(b'"');
    if !gaps.is_empty() {
        body.extend_from_slice(b",\"gap\":[");
        let gaps: Vec<String> = gaps.iter().map(gap_json).collect();
        body.extend_from_slice(gaps.join(",").as_bytes());
        body.push(b']');
    }
    // A channel reset by its broker (history lost) is not deleted: the next poll, with this
    // cursor, lands in its new epoch with a gap.
    let deleted: Vec<String> = positions
        .iter()
        .filter(|(c, _)| c.is_deleted() && !c.was_reset())
        .map(|(c, _)| format!("\"{}\"", c.name))
        .collect();
    if !deleted.is_empty() {
        body.extend_from_slice(format!(",\"deleted\":[{}]", deleted.join(",")).as_bytes());
    }
    body.extend_from_slice(b"}\n");
    let mut response = Response::new(200, "application/json", body).with_header("Cache-Control", "no-store");
    if let Some(silence) = longest_silence {
        response = response.with_header("Holdfast-Heartbeat", crate::transport::heartbeat_header(silence));
    }
    crate::cors::decorate(response, origin)
}
