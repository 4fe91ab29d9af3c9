//! WebSocket subscribers inside a push shard: client frames (decoded by `holdfast_proto::ws`),
//! the JSON client ops, pings, the heartbeat timeout and close codes.
//!
//! A WebSocket subscriber is a shard slot like any streaming subscriber, plus a decoder and an
//! input buffer that is empty (unallocated) between frames.
//!
//! Close codes Holdfast sends, and what a client should do:
//!
//! | code | reason | reconnect? |
//! | --- | --- | --- |
//! | 1000 | answer to the client's close | no |
//! | 1001 | `heartbeat_timeout`: nothing heard for `heartbeat_timeout` | yes, with the last cursor |
//! | 1002 / 1007 / 1009 | protocol error / invalid UTF-8 / message too big | no: fix the client |
//! | 1012 | `shutdown`: the server is restarting | yes, with the last cursor (maybe elsewhere) |
//! | 4000 | `slow_consumer`: fell more than `max_pending_bytes` behind | yes, with the last cursor |
//! | 4001 | `channel_deleted` | not to that channel |
//! | 4002 | `admin_disconnect` | yes, with the last cursor |

use std::io::{self, Read, Write};
use std::time::Instant;

use bytes::BytesMut;
use holdfast_hub::{Cursor, ReadFrom};
use holdfast_proto::ws::codec::{Decoder, Event, ProtocolError};
use holdfast_proto::ws::{close, frame};
use serde_json::{json, Value};

use super::{cursor_for, ReadCache, Shard};
use crate::{CloseReason, Server};

/// WebSocket state of a subscriber.
pub(super) struct WsPeer {
    pub decoder: Decoder,
    /// Bytes of a frame not yet complete; `None` between frames. Boxed: 8 bytes in every
    /// subscriber instead of a 32-byte `BytesMut` that is empty nearly always.
    pub input: Option<Box<BytesMut>>,
    /// When the peer last sent anything (a pong counts).
    pub last_heard: Instant,
}

impl WsPeer {
    /// `inflate`: permessage-deflate was agreed, so compressed messages are accepted.
    pub fn new(max_message: usize, early_input: BytesMut, inflate: bool) -> WsPeer {
        let input = (!early_input.is_empty()).then(|| Box::new(early_input));
        let decoder = if inflate { Decoder::with_deflate(max_message) } else { Decoder::new(max_message) };
        WsPeer { decoder, input, last_heard: Instant::now() }
    }
}

/// The close code and reason sent when the server ends a WebSocket subscription.
pub(super) fn close_code(reason: CloseReason) -> (u16, &'static str) {
    match reason {
        CloseReason::HeartbeatTimeout => (close::GOING_AWAY, "heartbeat_timeout"),
        CloseReason::Shutdown => (close::SERVICE_RESTART, "shutdown"),
        CloseReason::SlowConsumer => (4000, "slow_consumer"),
        CloseReason::ChannelDeleted => (4001, "channel_deleted"),
        CloseReason::AdminDisconnect => (4002, "admin_disconnect"),
        _ => (close::NORMAL, ""),
    }
}

/// What reading from a WebSocket subscriber produced.
enum Input {
    /// Events, and whether the peer's side ended after them.
    Events(Vec<Event>, Option<CloseReason>),
    Broken(ProtocolError, Vec<Event>),
    Gone(CloseReason),
}

impl Shard {
    /// Reads and handles everything the client sent.
    pub(super) fn read_websocket(&mut self, server: &Server, index: usize) {
        let input = {
            let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
            let Some(peer) = sub.ws.as_mut() else { return };
            read_frames(&sub.stream, peer)
        };
        let (events, broken, gone) = match input {
            Input::Events(events, gone) => (events, None, gone),
            Input::Broken(error, events) => (events, Some(error), None),
            Input::Gone(reason) => return self.close(server, index, reason, None),
        };
        for event in events {
            if !self.on_event(server, index, event) {
                return;
            }
        }
        if let Some(reason) = gone {
            return self.close(server, index, reason, None);
        }
        if let Some(error) = broken {
            let mut out = BytesMut::new();
            close::put_close(&mut out, error.code, error.reason);
            self.send(server, index, &out);
            self.close(server, index, CloseReason::ProtocolError, None);
        }
    }

    /// Handles one client event; false when the subscriber is gone.
    fn on_event(&mut self, server: &Server, index: usize, event: Event) -> bool {
        match event {
            Event::Ping(payload) => {
                let mut out = BytesMut::new();
                frame::put_frame(&mut out, frame::OpCode::Pong, &payload);
                self.send(server, index, &out)
            }
            Event::Pong(_) => true,
            Event::Close { code, .. } => {
                // RFC 6455 §5.5.1: answer with a close frame echoing the code, then close TCP.
                let mut out = BytesMut::new();
                close::put_close(&mut out, code.unwrap_or(close::NORMAL), "");
                self.send(server, index, &out);
                self.close(server, index, CloseReason::WsClosed, None);
                false
            }
            Event::Binary(_) => {
                self.reply(server, index, &error("bad_op", "binary frames carry no ops; send JSON text"))
            }
            Event::Text(text) => {
                let answer = match serde_json::from_slice::<Value>(&text) {
                    Ok(op) => self.op(server, index, &op),
                    Err(e) => error("bad_json", &format!("not JSON: {e}")),
                };
                self.reply(server, index, &answer)
            }
        }
    }

    /// One client op: subscribe, unsubscribe, publish, ping.
    fn op(&mut self, server: &Server, index: usize, op: &Value) -> Value {
        let channels = || -> Result<Vec<String>, Value> {
            let list = op
                .get("channels")
                .and_then(Value::as_array)
                .ok_or_else(|| error("bad_op", "channels must be a list of names"))?;
            list.iter()
                .map(|c| {
                    let name = c.as_str().ok_or_else(|| error("bad_channel", "channel names are strings"))?;
                    holdfast_hub::validate_channel_name(name).map_err(|e| error("bad_channel", &e.to_string()))?;
                    Ok(name.to_string())
                })
                .collect()
        };
        match op.get("op").and_then(Value::as_str) {
            Some("ping") => json!({"op": "pong"}),
            Some("subscribe") => {
                let names = match channels() {
                    Ok(names) => names,
                    Err(e) => return e,
                };
                let cursor = match op.get("cursor").and_then(Value::as_str) {
                    Some(text) => match Cursor::decode(text) {
                        Ok(cursor) => Some(cursor),
                        Err(e) => return error("bad_cursor", &e.to_string()),
                    },
                    None => None,
                };
                let history = op.get("history").and_then(Value::as_u64);
                self.subscribe(server, index, &names, cursor.as_ref(), history)
            }
            Some("unsubscribe") => match channels() {
                Ok(names) => self.unsubscribe(index, &names),
                Err(e) => e,
            },
            Some("publish") => {
                if !server.config.ws_client_publish {
                    return error("forbidden", "publishing over WebSocket is disabled (ws_client_publish)");
                }
                let Some(channel) = op.get("channel").and_then(Value::as_str) else {
                    return error("bad_op", "publish needs a channel");
                };
                let data = match op.get("data") {
                    Some(Value::String(text)) => text.clone(),
                    Some(other) => other.to_string(),
                    None => return error("bad_op", "publish needs data"),
                };
                let event = op.get("event").and_then(Value::as_str);
                match server.broker.publish(channel, event, data.into()) {
                    Ok(published) => {
                        server.stats.published();
                        json!({"op": "published", "channel": channel, "id": String::from_utf8_lossy(&published.message.cursor)})
                    }
                    Err(e) => error(e.label(), &e.to_string()),
                }
            }
            Some(other) => {
                error("bad_op", &format!("unknown op {other:?}; use subscribe, unsubscribe, publish or ping"))
            }
            None => error("bad_op", "a message needs an \"op\""),
        }
    }

    fn subscribe(
        &mut self,
        server: &Server,
        index: usize,
        names: &[String],
        cursor: Option<&Cursor>,
        history: Option<u64>,
    ) -> Value {
        // Every channel first, so a refusal (max_channels) leaves the subscription as it was.
        let mut channels = Vec::with_capacity(names.len());
        for name in names {
            match server.broker.channel_or_create(name) {
                Ok(channel) => channels.push(channel),
                Err(e) => return error(e.label(), &e.to_string()),
            }
        }
        let mut notices = Vec::new();
        let mut added = Vec::new();
        {
            let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Value::Null };
            let mut positions = std::mem::take(&mut sub.positions).into_vec();
            for (name, channel) in names.iter().zip(channels) {
                if positions.iter().any(|(c, _)| &*c.name == name) {
                    continue;
                }
                let from = match (cursor.and_then(|c| c.position(name)), history) {
                    (Some(position), _) => ReadFrom::After(position),
                    (None, Some(n)) => ReadFrom::Last(n),
                    (None, None) => ReadFrom::Now,
                };
                let (start, gap) = channel.start(from);
                if let Some(gap) = gap {
                    let mut out = Vec::new();
                    sub.framing.put_notice(
                        &mut out,
                        None,
                        Some(&gap.channel),
                        "holdfast.gap",
                        &crate::transport::gap_json(&gap),
                    );
                    notices.push(out);
                }
                channel.subscribers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                added.push(channel.id);
                positions.push((channel, start));
            }
            sub.positions = positions.into_boxed_slice();
        }
        for id in added {
            self.by_channel.entry(id).or_default().push(index);
        }
        for notice in notices {
            if !self.send(server, index, &notice) {
                return Value::Null;
            }
        }
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return Value::Null };
        let channels: Vec<&str> = sub.positions.iter().map(|(c, _)| &*c.name).collect();
        let answer = json!({"op": "subscribed", "channels": channels, "cursor": cursor_for(&sub.positions)});
        // What the new channels already have (history, cursor) goes out after the answer.
        self.deliver_soon.push(index);
        answer
    }

    fn unsubscribe(&mut self, index: usize, names: &[String]) -> Value {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Value::Null };
        let mut removed = Vec::new();
        let positions: Vec<_> = std::mem::take(&mut sub.positions)
            .into_vec()
            .into_iter()
            .filter(|(channel, _)| {
                let leave = names.iter().any(|n| **n == *channel.name);
                if leave {
                    channel.subscribers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    removed.push(channel.id);
                }
                !leave
            })
            .collect();
        sub.positions = positions.into_boxed_slice();
        let channels: Vec<String> = sub.positions.iter().map(|(c, _)| c.name.to_string()).collect();
        let cursor = cursor_for(&sub.positions);
        for id in removed {
            if let Some(members) = self.by_channel.get_mut(&id) {
                members.retain(|&m| m != index);
                if members.is_empty() {
                    self.by_channel.remove(&id);
                }
            }
        }
        json!({"op": "unsubscribed", "channels": channels, "cursor": cursor})
    }

    /// Sends an op answer as a text frame; false when the subscriber is gone.
    fn reply(&mut self, server: &Server, index: usize, answer: &Value) -> bool {
        if answer.is_null() {
            return self.slots.get(index).is_some_and(Option::is_some);
        }
        let mut out = BytesMut::new();
        frame::put_frame(&mut out, frame::OpCode::Text, answer.to_string().as_bytes());
        let sent = self.send(server, index, &out);
        let mut cache = ReadCache::new();
        for pending in std::mem::take(&mut self.deliver_soon) {
            self.deliver(server, pending, &mut cache);
        }
        sent
    }

    /// Writes bytes of our own (pong, close, answers) in order with whatever is pending;
    /// false when the subscriber is gone.
    pub(super) fn send(&mut self, server: &Server, index: usize, bytes: &[u8]) -> bool {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return false };
        sub.bytes_out += bytes.len() as u64;
        if let Some(pending) = sub.pending.as_mut() {
            pending.extend_from_slice(bytes);
            return true;
        }
        let written = match (&sub.stream).write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                let reason = crate::conn::io_close_reason(&e);
                self.close(server, index, reason, None);
                return false;
            }
        };
        sub.last_write = super::clock_ms_at(Instant::now());
        if written < bytes.len() {
            sub.pending = Some(Box::new(bytes[written..].to_vec()));
            self.want_writable(index, true);
        }
        true
    }

    /// Subscribers silent for `heartbeat_timeout` (no pong to our pings, no frame).
    pub(super) fn silent_websockets(&self, server: &Server, now: Instant) -> Vec<usize> {
        let timeout = server.config.heartbeat_timeout;
        let silent = |slot: &Option<Box<super::Subscriber>>| {
            slot.as_ref().and_then(|s| s.ws.as_ref()).is_some_and(|ws| now.duration_since(ws.last_heard) > timeout)
        };
        self.slots.iter().enumerate().filter(|(_, slot)| silent(slot)).map(|(index, _)| index).collect()
    }
}

/// Reads what is available and decodes every complete frame (including bytes that arrived with
/// the upgrade request).
fn read_frames(stream: &std::net::TcpStream, peer: &mut WsPeer) -> Input {
    let mut scratch = [0u8; 8192];
    let mut events = Vec::new();
    let mut gone = None;
    let mut input = peer.input.take().map(|boxed| *boxed).unwrap_or_default();
    loop {
        match (&*stream).read(&mut scratch) {
            Ok(0) => {
                gone = Some(CloseReason::PeerClosed);
                break;
            }
            Ok(n) => {
                peer.last_heard = Instant::now();
                input.extend_from_slice(&scratch[..n]);
                if let Err(error) = decode_all(&mut peer.decoder, &mut input, &mut events) {
                    return Input::Broken(error, events);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                gone = Some(crate::conn::io_close_reason(&e));
                break;
            }
        }
    }
    if let Err(error) = decode_all(&mut peer.decoder, &mut input, &mut events) {
        return Input::Broken(error, events);
    }
    // Keep only an unfinished frame; between frames the subscriber holds no buffer.
    if !input.is_empty() {
        peer.input = Some(Box::new(input));
    }
    match gone {
        Some(reason) if events.is_empty() => Input::Gone(reason),
        // Frames that came before the EOF (a close frame, say) are handled first.
        _ => Input::Events(events, gone),
    }
}

fn decode_all(decoder: &mut Decoder, input: &mut BytesMut, events: &mut Vec<Event>) -> Result<(), ProtocolError> {
    while let Some(event) = decoder.decode(input)? {
        events.push(event);
    }
    Ok(())
}

fn error(code: &str, reason: &str) -> Value {
    json!({"op": "error", "code": code, "reason": reason})
}

/// For the shard: the decoder limit and the early bytes of a new WebSocket subscriber.
pub(super) fn peer_for(server: &Server, early_input: BytesMut, inflate: bool) -> Box<WsPeer> {
    Box::new(WsPeer::new(server.config.ws_max_message_bytes, early_input, inflate))
}
