//! WebSocket subscribers inside a push shard: client frames (decoded by `holdfast_proto::ws`),
//! the JSON client ops, pings, the heartbeat timeout and close codes.
//!
//! A WebSocket subscriber is a shard slot like any streaming subscriber, plus a decoder and an
//! input buffer that is empty (unallocated) between frames. Input is decoded and handled one
//! message at a time, within the shard's read and message budgets (`super::READ_BUDGET`,
//! `super::MESSAGE_BUDGET`, `super::MESSAGE_BYTES_PER_SECOND`): a connection over budget is read
//! again in a later round, so its peer is slowed down by TCP rather than served at the others'
//! expense. Subscribe and publish ops go through the same code as HTTP (`crate::subscription`,
//! `crate::publish`).
//!
//! Close codes Holdfast sends, and what a client should do:
//!
//! | code | reason | reconnect? |
//! | --- | --- | --- |
//! | 1000 | answer to the client's close | no |
//! | 1001 | `heartbeat_timeout`: nothing heard for `heartbeat_timeout` | yes, with the last cursor |
//! | 1002 / 1007 / 1009 | protocol error / invalid UTF-8 / message too big | no: fix the client |
//! | 1008 | `flooding`: sent pings or ops faster than it read the answers | no: fix the client |
//! | 1008 | `rate_limited`: kept publishing far over `publishes_per_ip_per_second` | no: slow down |
//! | 1012 | `shutdown`: the server is restarting | yes, with the last cursor (maybe elsewhere) |
//! | 4000 | `slow_consumer` (fell more than `max_pending_bytes` behind) or `send_timeout` | yes, with the last cursor |
//! | 4001 | `channel_deleted` | not to that channel |
//! | 4002 | `admin_disconnect` | yes, with the last cursor |
//! | 4003 | `token_expired`: the token the connection was opened with expired | yes, with a new token and the last cursor |
//! | 4004 | `history_lost`: the broker lost the channel's history (new epoch) | yes, with the last cursor (a gap notice follows) |

use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use holdfast_hub::Payload;
use holdfast_proto::ws::codec::{Decoder, Event, ProtocolError};
use holdfast_proto::ws::{close, frame};
use serde_json::{json, Value};

use super::{clock_ms_at, ReadCache, Shard, MESSAGE_BUDGET, MESSAGE_BYTES_PER_SECOND, READ_BUDGET};
use crate::socket::LinkMut;
use crate::subscription::{self, Refusal};
use crate::{CloseReason, Server};

/// WebSocket ops of one connection that may wait on the broker at once (publish and subscribe
/// ops a network broker answers later); past it the connection's input is not read until some
/// are answered, so a peer that floods ops while Redis is slow holds at most this many tasks.
const MAX_DEFERRED_OPS: u32 = 64;
/// How long such a connection's input waits before it is looked at again (ms).
const DEFERRED_PAUSE_MS: u64 = 5;

/// WebSocket state of a subscriber.
pub(super) struct WsPeer {
    pub decoder: Decoder,
    /// Bytes of a frame not yet complete; `None` between frames. Boxed: 8 bytes in every
    /// subscriber instead of a 32-byte `BytesMut` that is empty nearly always.
    pub input: Option<Box<BytesMut>>,
    /// When the peer last sent anything (a pong counts), in milliseconds on `clock_ms_at`'s
    /// clock (wrapping: 4 bytes rather than an `Instant`'s 16; silences are far below 49 days).
    pub last_heard: u32,
    /// Message bytes this connection may still have handled now (a token bucket refilled at
    /// `MESSAGE_BYTES_PER_SECOND`, up to one second's worth); below zero it is not read until
    /// the bucket refills.
    credit: i32,
    /// When `credit` was last refilled, in milliseconds on `clock_ms_at`'s clock (wrapping).
    credit_at: u32,
    /// When the peer was last pinged for its silence (see [`WsPeer::wants_ping`]), on the same
    /// clock (wrapping).
    pinged_at: u32,
    /// Bytes read from the peer in the shard (for `/admin/connections`).
    pub bytes_in: u64,
}

impl WsPeer {
    /// `inflate`: permessage-deflate was agreed, so compressed messages are accepted.
    pub fn new(max_message: usize, early_input: BytesMut, inflate: bool) -> WsPeer {
        let bytes_in = early_input.len() as u64;
        let input = (!early_input.is_empty()).then(|| Box::new(early_input));
        let decoder = if inflate { Decoder::with_deflate(max_message) } else { Decoder::new(max_message) };
        WsPeer {
            decoder,
            input,
            last_heard: clock_ms_at(Instant::now()) as u32,
            credit: MESSAGE_BYTES_PER_SECOND as i32,
            credit_at: clock_ms_at(Instant::now()) as u32,
            pinged_at: clock_ms_at(Instant::now()) as u32,
            bytes_in,
        }
    }

    /// Milliseconds since the peer last sent anything.
    pub fn silence_ms(&self, now_ms: u64) -> u32 {
        (now_ms as u32).wrapping_sub(self.last_heard)
    }

    /// Whether to ping the peer now for its own silence: it has sent nothing for `interval` ms
    /// and was not pinged for that in the last `interval` either. Marks it pinged.
    pub fn wants_ping(&mut self, now_ms: u64, interval: u64) -> bool {
        let silent = u64::from(self.silence_ms(now_ms)) >= interval;
        let since_ping = (now_ms as u32).wrapping_sub(self.pinged_at);
        if silent && u64::from(since_ping) >= interval {
            self.pinged_at = now_ms as u32;
            return true;
        }
        false
    }

    /// Refills the message credit for the time passed; returns it.
    fn refill(&mut self, now_ms: u64) -> i32 {
        let elapsed = (now_ms as u32).wrapping_sub(self.credit_at);
        let refill = u64::from(elapsed) * MESSAGE_BYTES_PER_SECOND / 1000;
        self.credit = (i64::from(self.credit) + refill as i64).min(MESSAGE_BYTES_PER_SECOND as i64) as i32;
        self.credit_at = now_ms as u32;
        self.credit
    }

    /// Milliseconds until the credit is back above zero.
    fn wait_for_credit(&self) -> u64 {
        (u64::from(self.credit.unsigned_abs()) * 1000).div_ceil(MESSAGE_BYTES_PER_SECOND)
    }
}

/// The close code and reason sent when the server ends a WebSocket subscription.
pub(super) fn close_code(reason: CloseReason) -> (u16, &'static str) {
    match reason {
        CloseReason::HeartbeatTimeout => (close::GOING_AWAY, "heartbeat_timeout"),
        CloseReason::Shutdown => (close::SERVICE_RESTART, "shutdown"),
        CloseReason::SlowConsumer => (4000, "slow_consumer"),
        CloseReason::SendTimeout => (4000, "send_timeout"),
        CloseReason::Flooding => (close::POLICY_VIOLATION, "flooding"),
        CloseReason::RateLimited => (close::POLICY_VIOLATION, "rate_limited"),
        CloseReason::ChannelDeleted => (4001, "channel_deleted"),
        CloseReason::AdminDisconnect => (4002, "admin_disconnect"),
        CloseReason::HistoryLost => (4004, "history_lost"),
        CloseReason::TokenExpired => (4003, "token_expired"),
        _ => (close::NORMAL, ""),
    }
}

/// One step of reading a WebSocket subscriber's input.
enum Step {
    /// A complete message or control frame, and its size after inflating.
    Event(Event, usize),
    /// No complete frame is buffered: read more.
    NeedInput,
    /// The peer broke the protocol: close with this code.
    Broken(ProtocolError),
}

impl Shard {
    /// Reads and handles what the client sent, one message at a time, until its socket is empty
    /// or a budget runs out (then it is read again in a later round). The answers to its frames
    /// gather and go out in one write at the end (a flood of pings costs one `send` per turn, not
    /// one per ping).
    pub(super) fn read_websocket(&mut self, server: &Server, index: usize) {
        self.batching = Some(index);
        self.read_frames(server, index);
        if self.batching == Some(index) {
            self.batching = None;
            self.flush_replies(server, index);
        }
    }

    /// Writes the gathered answers of the connection at `index` (see [`Shard::send`]).
    pub(super) fn flush_replies(&mut self, server: &Server, index: usize) {
        if self.replies.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut self.replies);
        self.write_own(server, index, &replies);
        self.replies = replies;
        self.replies.clear();
        for received in self.publishes_answered.drain(..) {
            server.stats.latency.publish.observe(received.elapsed());
        }
    }

    fn read_frames(&mut self, server: &Server, index: usize) {
        let now_ms = clock_ms_at(Instant::now());
        let mut read_budget = READ_BUDGET;
        let mut message_budget = MESSAGE_BUDGET;
        loop {
            // A peer whose ops wait on the broker (each a task on the runtime) is not read further
            // until some are answered: what it can make the server hold stays bounded.
            let conn_id = self.slots.get(index).and_then(Option::as_ref).map(|s| s.conn.id);
            if conn_id.and_then(|id| self.deferred_ops.get(&id)).is_some_and(|&n| n >= MAX_DEFERRED_OPS) {
                return self.more_input.push((index, now_ms + DEFERRED_PAUSE_MS));
            }
            let step = {
                let Some(peer) = self.slots.get_mut(index).and_then(Option::as_mut).and_then(|s| s.ws.as_mut()) else {
                    return;
                };
                if peer.refill(now_ms) < 0 {
                    let at = now_ms + peer.wait_for_credit();
                    return self.more_input.push((index, at));
                }
                decode_one(peer)
            };
            match step {
                Step::Event(event, size) => {
                    if let Some(peer) = self.slots.get_mut(index).and_then(Option::as_mut).and_then(|s| s.ws.as_mut()) {
                        peer.credit = peer.credit.saturating_sub(i32::try_from(size).unwrap_or(i32::MAX));
                    }
                    if !self.on_event(server, index, event) {
                        return;
                    }
                    message_budget = message_budget.saturating_sub(size.max(1));
                    self.round_budget = self.round_budget.saturating_sub(size.max(1));
                    if message_budget == 0 || self.round_budget == 0 {
                        return self.more_input.push((index, 0));
                    }
                }
                Step::NeedInput => {
                    if read_budget == 0 || self.round_budget == 0 {
                        return self.more_input.push((index, 0));
                    }
                    let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
                    let Some(peer) = sub.ws.as_mut() else { return };
                    match read_some(&mut self.sessions.link(index, &sub.stream), peer, read_budget) {
                        Ok(0) => return self.close(server, index, CloseReason::PeerClosed),
                        Ok(n) => {
                            peer.bytes_in += n as u64;
                            read_budget -= n;
                            self.round_budget = self.round_budget.saturating_sub(n);
                            self.tally.bytes_in += n as u64;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                        Err(e) => {
                            let reason = crate::socket::io_close_reason(&e);
                            return self.close(server, index, reason);
                        }
                    }
                }
                Step::Broken(error) => {
                    let mut out = BytesMut::new();
                    close::put_close(&mut out, error.code, error.reason);
                    self.send(server, index, &out);
                    return self.close(server, index, CloseReason::ProtocolError);
                }
            }
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
                self.close(server, index, CloseReason::WsClosed);
                false
            }
            Event::Binary(_) => {
                self.reply(server, index, &Refusal::bad("bad_op", "binary frames carry no ops; send JSON text").op())
            }
            Event::Text(text) => {
                let received = Instant::now();
                let (answer, is_publish) = match serde_json::from_slice::<Value>(&text) {
                    Ok(op) => {
                        (self.op(server, index, &op, received), op.get("op").and_then(Value::as_str) == Some("publish"))
                    }
                    Err(e) => (Refusal::bad("bad_json", format!("not JSON: {e}")).op(), false),
                };
                let alive = self.reply(server, index, &answer);
                if alive && is_publish && !answer.is_null() {
                    self.publish_answered(server, index, received);
                }
                alive
            }
        }
    }

    /// A publish op received at `received` is answered: its latency is observed now, or, while
    /// this connection's answers gather, once they are written (at the end of its turn).
    fn publish_answered(&mut self, server: &Server, index: usize, received: Instant) {
        if self.batching == Some(index) {
            self.publishes_answered.push(received);
        } else {
            server.stats.latency.publish.observe(received.elapsed());
        }
    }

    /// One client op: subscribe, unsubscribe, publish, ping. `received`: when its frame was read
    /// (a publish's latency runs from there).
    fn op(&mut self, server: &Server, index: usize, op: &Value, received: Instant) -> Value {
        let result = match op.get("op").and_then(Value::as_str) {
            Some("ping") => Ok(json!({"op": "pong"})),
            Some("subscribe") => self.subscribe(server, index, op),
            Some("unsubscribe") => channel_names(op).map(|names: Vec<String>| self.unsubscribe(index, &names)),
            Some("publish") => self.publish(server, index, op, received),
            Some(other) => Err(Refusal::bad(
                "bad_op",
                format!("unknown op {other:?}; use subscribe, unsubscribe, publish or ping"),
            )),
            None => Err(Refusal::bad("bad_op", "a message needs an \"op\"")),
        };
        result.unwrap_or_else(|refusal| refusal.op())
    }

    /// `{"op":"subscribe","channels":[…],"cursor":…,"history":N}`: adds channels, within the
    /// per-connection cap, starting where `/sub` would; gap notices go out before the answer,
    /// messages after it.
    fn subscribe(&mut self, server: &Server, index: usize, op: &Value) -> Result<Value, Refusal> {
        let names = channel_names(op)?;
        for name in &names {
            crate::auth::check_op(server, self.grants(index), false, name)?;
        }
        let cursor = match op.get("cursor") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) if text.is_empty() => None,
            Some(Value::String(text)) => Some(subscription::parse_cursor(text)?),
            Some(_) => return Err(Refusal::bad("bad_cursor", "cursor must be a string")),
        };
        let history = match op.get("history") {
            None | Some(Value::Null) => None,
            Some(n) => Some(n.as_u64().ok_or_else(|| Refusal::bad("bad_history", "history must be a whole number"))?),
        };
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return Ok(Value::Null) };
        let held: Vec<&str> = sub.places.iter().map(|p| &*p.channel.name).collect();
        let new = subscription::new_channel_names(names.iter().map(String::as_str), &held)?;
        let channels = match subscription::ready(&*server.broker, &new) {
            Some(ready) => ready?,
            None => {
                // A network broker must open a channel first: off this thread, then the op runs
                // again here with the channels held (answered then).
                let broker = server.broker.clone();
                let names: Vec<String> = new.iter().map(|name| name.to_string()).collect();
                let op = op.clone();
                self.defer(server, index, async move {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    match subscription::open(&*broker, &names).await {
                        Ok(held) => Deferred::Retry { op, held },
                        Err(refusal) => Deferred::Answer(refusal.op()),
                    }
                });
                return Ok(Value::Null);
            }
        };
        let (added, gaps) = subscription::start(channels, cursor.as_ref(), history);
        let added: Vec<_> = added.into_iter().map(|(channel, seq)| self.join(index, channel, seq)).collect();
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Ok(Value::Null) };
        let mut places = std::mem::take(&mut sub.places).into_vec();
        places.extend(added);
        sub.places = places.into();
        let cursor = sub.cursor();
        let mut notices = Vec::new();
        for gap in &gaps {
            let data = subscription::gap_json(gap);
            sub.framing.put_notice(&mut notices, None, &gap.channel, &cursor, "holdfast.gap", &data);
        }
        let channels: Vec<&str> = sub.places.iter().map(|p| &*p.channel.name).collect();
        let answer = json!({"op": "subscribed", "channels": channels, "cursor": cursor});
        if !notices.is_empty() && !self.send(server, index, &notices) {
            return Ok(Value::Null);
        }
        // What the new channels already have (history, cursor) goes out after the answer.
        self.deliver_soon.push(index);
        Ok(answer)
    }

    fn unsubscribe(&mut self, index: usize, names: &[String]) -> Value {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return Value::Null };
        let (leaving, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut sub.places)
            .into_vec()
            .into_iter()
            .partition(|p| names.iter().any(|n| **n == *p.channel.name));
        sub.places = staying.into();
        let channels: Vec<String> = sub.places.iter().map(|p| p.channel.name.to_string()).collect();
        let cursor = sub.cursor();
        for place in &leaving {
            self.leave(index, place);
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
        if !self.deliver_soon.is_empty() && self.batching == Some(index) {
            // The answer (and any gap notices) before the messages it announces.
            self.flush_replies(server, index);
        }
        let mut cache = ReadCache::new();
        for pending in std::mem::take(&mut self.deliver_soon) {
            self.deliver(server, pending, &mut cache, super::Timing::CatchUp);
        }
        sent
    }

    /// Writes what answers the client's own frames (pongs, close frames, op answers, gap
    /// notices) in order behind whatever is pending; false when the subscriber is gone. It
    /// counts against `max_pending_bytes` like messages: a client that sends frames faster than
    /// it reads their answers is cut with `flooding` past it.
    pub(super) fn send(&mut self, server: &Server, index: usize, bytes: &[u8]) -> bool {
        if self.batching == Some(index) {
            let queued =
                self.slots.get(index).and_then(Option::as_ref).map_or(0, |s| s.pending.as_ref().map_or(0, |p| p.len()));
            if (queued + self.replies.len() + bytes.len()) as u64 > server.config().max_pending_bytes {
                self.replies.clear();
                self.publishes_answered.clear();
                self.batching = None;
                self.close(server, index, CloseReason::Flooding);
                return false;
            }
            self.replies.extend_from_slice(bytes);
            return self.slots.get(index).is_some_and(Option::is_some);
        }
        self.write_own(server, index, bytes)
    }

    /// Writes bytes of our own behind whatever is pending; false when the subscriber is gone.
    fn write_own(&mut self, server: &Server, index: usize, bytes: &[u8]) -> bool {
        let max_pending = server.config().max_pending_bytes;
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return false };
        sub.bytes_out += bytes.len() as u64;
        if let Some(pending) = sub.pending.as_mut() {
            if (pending.len() + bytes.len()) as u64 > max_pending {
                self.close(server, index, CloseReason::Flooding);
                return false;
            }
            pending.push(Bytes::copy_from_slice(bytes));
            return true;
        }
        let written = match self.sessions.link(index, &sub.stream).write(bytes) {
            Ok(n) => {
                self.tally.bytes_out += n as u64;
                n
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                let reason = crate::socket::io_close_reason(&e);
                self.close(server, index, reason);
                return false;
            }
        };
        sub.last_write = clock_ms_at(Instant::now());
        if written < bytes.len() {
            sub.pending = Some(super::pending_of(&bytes[written..]));
            self.want_writable(index, true);
        }
        true
    }

    /// Subscribers silent for `heartbeat_timeout` (no pong to our pings, no frame).
    /// The WebSocket peers silent (not even a pong) for `heartbeat_timeout`, or for two of their
    /// heartbeat intervals when that is longer (a peer that asked for a long interval is pinged
    /// only that often, and answers only then).
    pub(super) fn silent_websockets(&self, server: &Server, now: Instant) -> Vec<usize> {
        let timeout = server.config().heartbeat_timeout;
        let now_ms = clock_ms_at(now);
        let silent = |slot: &Option<Box<super::Subscriber>>| {
            slot.as_ref().is_some_and(|s| {
                let limit = timeout.max(Duration::from_millis(u64::from(s.heartbeat_ms) * 2));
                s.ws.as_ref().is_some_and(|ws| u128::from(ws.silence_ms(now_ms)) > limit.as_millis())
            })
        };
        self.slots.iter().enumerate().filter(|(_, slot)| silent(slot)).map(|(index, _)| index).collect()
    }
}

/// Decodes the next complete frame from the buffered input, if there is one.
fn decode_one(peer: &mut WsPeer) -> Step {
    let Some(input) = peer.input.as_mut() else { return Step::NeedInput };
    let step = match peer.decoder.decode(input) {
        Ok(Some(event)) => {
            let size = match &event {
                Event::Text(data) | Event::Binary(data) | Event::Ping(data) | Event::Pong(data) => data.len(),
                Event::Close { reason, .. } => reason.len(),
            };
            Step::Event(event, size)
        }
        Ok(None) => Step::NeedInput,
        Err(error) => Step::Broken(error),
    };
    // Keep only an unfinished frame; between frames the subscriber holds no buffer.
    if input.is_empty() {
        peer.input = None;
    }
    step
}

/// Reads up to `budget` bytes (at most 8 KiB) into the peer's input. `Ok(0)` at EOF.
fn read_some(stream: &mut LinkMut<'_>, peer: &mut WsPeer, budget: usize) -> io::Result<usize> {
    let mut scratch = [0u8; 8192];
    let want = budget.min(scratch.len());
    loop {
        match stream.read(&mut scratch[..want]) {
            Ok(0) => return Ok(0),
            Ok(n) => {
                peer.last_heard = clock_ms_at(Instant::now()) as u32;
                peer.input.get_or_insert_with(Default::default).extend_from_slice(&scratch[..n]);
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The `channels` of an op: a list of strings (validated by the subscription rules).
fn channel_names(op: &Value) -> Result<Vec<String>, Refusal> {
    let list = op
        .get("channels")
        .and_then(Value::as_array)
        .ok_or_else(|| Refusal::bad("bad_op", "channels must be a list of names"))?;
    // Nothing past the cap is looked at: a list of 60,000 names costs no more than 65.
    if list.len() > subscription::MAX_CHANNELS {
        return Err(Refusal::bad(
            "too_many_channels",
            format!("at most {} channels per connection", subscription::MAX_CHANNELS),
        ));
    }
    list.iter()
        .map(|c| c.as_str().map(str::to_string).ok_or_else(|| Refusal::bad("bad_channel", "channel names are strings")))
        .collect()
}

/// An op's answer that had to wait on a network broker, handed back to the shard.
pub(super) enum Deferred {
    /// The answer to send.
    Answer(Value),
    /// A publish op's answer, and when its frame was read (for the publish latency).
    Published { answer: Value, received: Instant },
    /// Run the op again: the channels it needs are open now (and held until it has run).
    Retry { op: Value, held: Vec<std::sync::Arc<holdfast_hub::Channel>> },
}

impl Shard {
    /// `{"op":"publish",…}`: answered at once when the broker answers at once (the memory
    /// broker), else when it has (a network broker; other ops may be answered meanwhile).
    fn publish(&mut self, server: &Server, index: usize, op: &Value, received: Instant) -> Result<Value, Refusal> {
        if let Some(channel) = op.get("channel").and_then(Value::as_str) {
            crate::auth::check_op(server, self.grants(index), true, channel)?;
        }
        if server.config().ws_client_publish && !self.within_publish_rate(server, index)? {
            return Ok(Value::Null);
        }
        let (channel, published) = publish(server, op)?;
        // Polled here once (the memory broker's answer is ready at once); a network broker's
        // future needs the runtime's timers and I/O even for that first poll.
        let now = {
            let _runtime = server.runtime.enter();
            holdfast_hub::ready_now(published)
        };
        match now {
            Ok(published) => published.map(|p| published_op(&channel, &p)),
            Err(later) => {
                self.defer(server, index, async move {
                    let answer = later.await.map_or_else(|refusal| refusal.op(), |p| published_op(&channel, &p));
                    Deferred::Published { answer, received }
                });
                Ok(Value::Null)
            }
        }
    }

    /// What the token of the connection in slot `index` grants (access control on).
    fn grants(&self, index: usize) -> Option<&crate::auth::Grants> {
        match self.slots.get(index)?.as_ref()?.extra.as_deref() {
            Some(crate::handover::Extra::Grants(grants)) => Some(&**grants),
            _ => None,
        }
    }

    /// `publishes_per_ip_per_second` for a publish op of the connection in slot `index`, by the
    /// client a trusted proxy named at its upgrade, else its peer: over the rate, the error op
    /// `rate_limited`; still going far over it, the connection is closed (1008 `rate_limited`)
    /// and this is `Ok(false)`.
    fn within_publish_rate(&mut self, server: &Server, index: usize) -> Result<bool, Refusal> {
        let limits = &server.client_limits;
        if !limits.limits_publishes() {
            return Ok(true);
        }
        let Some(conn) = self.slots.get(index).and_then(Option::as_ref).map(|s| s.conn) else { return Ok(false) };
        let client = limits.remembered_client(conn.id).unwrap_or(conn.peer().ip());
        match limits.publish(client) {
            crate::limits::PublishCheck::Allowed => Ok(true),
            crate::limits::PublishCheck::Limited(wait) => {
                server.stats.limited(crate::limits::ClientLimit::Publishes);
                let secs = crate::limits::retry_after_secs(wait);
                Err(Refusal {
                    status: 429,
                    code: "rate_limited",
                    reason: format!("publishing too fast (publishes_per_ip_per_second); retry in {secs} s"),
                })
            }
            crate::limits::PublishCheck::Flooding(_) => {
                server.stats.limited(crate::limits::ClientLimit::Publishes);
                self.close(server, index, CloseReason::RateLimited);
                Ok(false)
            }
        }
    }

    /// Runs `work` on the runtime and hands its outcome back to this shard for the connection in
    /// slot `index` (dropped if that connection is gone by then).
    fn defer(
        &mut self,
        server: &Server,
        index: usize,
        work: impl std::future::Future<Output = Deferred> + Send + 'static,
    ) {
        let Some(conn_id) = self.slots.get(index).and_then(Option::as_ref).map(|s| s.conn.id) else { return };
        *self.deferred_ops.entry(conn_id).or_default() += 1;
        let shard = self.shared.clone();
        server.runtime.spawn(async move {
            let outcome = work.await;
            shard.inbox.lock().unwrap_or_else(|e| e.into_inner()).deferred.push((index, conn_id, outcome));
            let _ = shard.waker.wake();
        });
    }

    /// Takes back what [`Shard::defer`] handed off.
    pub(super) fn resume_deferred(&mut self, server: &Server, index: usize, conn_id: u64, outcome: Deferred) {
        if let Some(out) = self.deferred_ops.get_mut(&conn_id) {
            *out -= 1;
            if *out == 0 {
                self.deferred_ops.remove(&conn_id);
            }
        }
        if self.slots.get(index).and_then(Option::as_ref).map(|s| s.conn.id) != Some(conn_id) {
            return;
        }
        let mut published = None;
        let answer = match outcome {
            Deferred::Answer(answer) => answer,
            Deferred::Published { answer, received } => {
                published = Some(received);
                answer
            }
            Deferred::Retry { op, held } => {
                let answer = self.op(server, index, &op, Instant::now());
                drop(held);
                answer
            }
        };
        if self.reply(server, index, &answer) {
            if let Some(received) = published {
                self.publish_answered(server, index, received);
            }
        }
    }
}

fn published_op(channel: &str, published: &holdfast_hub::Published) -> Value {
    json!({"op": "published", "channel": channel, "id": published.id})
}

/// `{"op":"publish","channel":…,"data":"text"}`, or `"json":<value>` (or `"data"` that is not a
/// string) for a JSON message; `"event"` as `?event=`. Only with `ws_client_publish`. Checked
/// here; what comes back is the channel and the broker's answer to await.
fn publish(
    server: &Server,
    op: &Value,
) -> Result<(String, holdfast_hub::BrokerFuture<Result<holdfast_hub::Published, Refusal>>), Refusal> {
    if !server.config().ws_client_publish {
        return Err(Refusal {
            status: 403,
            code: "forbidden",
            reason: "publishing over WebSocket is disabled (ws_client_publish)".into(),
        });
    }
    let channel =
        op.get("channel").and_then(Value::as_str).ok_or_else(|| Refusal::bad("bad_op", "publish needs a channel"))?;
    let payload = match (op.get("data"), op.get("json")) {
        (Some(Value::String(text)), None) => Payload::text(Bytes::from(text.clone())),
        (Some(value), None) | (None, Some(value)) => Payload::json(Bytes::from(value.to_string())),
        (Some(_), Some(_)) => return Err(Refusal::bad("bad_op", "publish takes data or json, not both")),
        (None, None) => return Err(Refusal::bad("bad_op", "publish needs data (a string) or json (any value)")),
    };
    let event = match op.get("event") {
        None | Some(Value::Null) => None,
        Some(Value::String(event)) => Some(event.as_str()),
        Some(_) => return Err(Refusal::bad("bad_event", "event must be a string")),
    };
    let published = crate::publish::publish_message(&*server.broker, &server.stats, channel, event, payload)?;
    Ok((channel.to_string(), published))
}

/// For the shard: the decoder limit and the early bytes of a new WebSocket subscriber.
pub(super) fn peer_for(server: &Server, early_input: BytesMut, inflate: bool) -> Box<WsPeer> {
    Box::new(WsPeer::new(server.config().ws_max_message_bytes, early_input, inflate))
}
