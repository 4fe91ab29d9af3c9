//! Held long polls inside a push shard.
//!
//! A long poll with nothing to answer yet costs what a streaming subscriber costs: a shard slot,
//! no task, no buffer, no timer of its own (its deadline is one entry in the shard's FIFO: every
//! long poll waits the same `longpoll_timeout`, so deadlines come in the order polls arrive). It
//! is answered from here, with one whole HTTP response, when one of its channels gets a message,
//! at `longpoll_timeout`, when a channel is deleted, on `POST /admin/disconnect` and on shutdown.
//! Once the answer is out the connection is closed (when the answer said `Connection: close`) or
//! stays here, without channels, for the client's next request: a long-poll client sends it at
//! once, and a plain `GET /sub…` long poll is parsed and served here (held again in the same
//! slot, or answered at once), sparing two moves between pollers per message. Anything else, a
//! head not complete yet, or nothing within `park_after` goes to a runtime task (which parks the
//! connection when it stays idle), its bytes unread.
//!
//! While it waits, the client may close (then the slot goes at once) or send its next request
//! early (pipelining): those bytes are left in the socket until the answer is out.

use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use bytes::BytesMut;
use holdfast_proto::http1::Persistence;
use std::os::fd::AsRawFd;

use mio::unix::SourceFd;

use super::{clock_ms_at, Shard};
use crate::handover::{Extra, LongPollReply};
use crate::socket::ConnState;
use crate::socket::IdleDeadline;
use crate::wire::pending::Pending;
use crate::{poll_answer, CloseReason, Server};

/// When a held long poll is due (`longpoll_timeout`), in the shard's FIFO.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    /// On [`clock_ms_at`]'s clock.
    pub due: u64,
    /// Its slot.
    pub index: u32,
    /// Which connection and request it is for: a slot answered early may hold another
    /// connection by its deadline, or the same one waiting on a later request.
    tag: u32,
}

impl Deadline {
    pub fn new(due: u64, index: usize, conn: &ConnState) -> Deadline {
        Deadline { due, index: index as u32, tag: tag_of(conn) }
    }

    /// Whether the slot still holds the connection and request this deadline is for.
    pub fn is_for(&self, conn: &ConnState) -> bool {
        self.tag == tag_of(conn)
    }
}

/// Entries a deadline FIFO may hold beyond twice the shard's subscribers before its stale ones
/// are dropped (so a small shard does not sweep its FIFO at every poll).
const STALE_SLACK: usize = 64;

/// A poll answered before its deadline (or a connection that left, or sent its next request
/// early) leaves its deadline in the FIFO until it comes due: at 1,250 polls/s and a 30 s
/// `longpoll_timeout` that is ~37,000 entries for 2,500 held polls, and the FIFO kept its
/// largest size for good (512 KiB a shard in the soak, bench/RESULTS.md "The restart step").
/// Only one entry per slot can match its occupant's tag (a tag names a connection and a
/// request), so once the FIFO holds more than twice as many entries as the shard has
/// subscribers, the others are dropped, keeping the order; each sweep follows at least as many
/// pushes as it visits entries (amortised O(1)).
fn drop_stale(queue: &mut VecDeque<Deadline>, slots: &[Option<Box<super::Subscriber>>], occupied: usize) {
    if queue.len() <= 2 * occupied + STALE_SLACK {
        return;
    }
    queue.retain(|deadline| {
        slots.get(deadline.index as usize).and_then(Option::as_ref).is_some_and(|sub| deadline.is_for(&sub.conn))
    });
    give_back_room(queue);
}

/// Gives back the room a burst of deadlines took once most have gone.
fn give_back_room(queue: &mut VecDeque<Deadline>) {
    if queue.capacity() > 4 * queue.len() + STALE_SLACK {
        queue.shrink_to(2 * queue.len() + STALE_SLACK);
    }
}

/// The connection id and request number in 32 bits (a mismatch between a stale deadline and a
/// slot's current occupant is what matters; equal tags for different ones are a 1 in 4 billion
/// chance, and then only answer a held poll early, with its cursor).
fn tag_of(conn: &ConnState) -> u32 {
    (conn.id as u32).wrapping_mul(0x9E37_79B9) ^ conn.served.rotate_left(16)
}

/// Whether a request is one the shard may serve itself: a GET on `/sub…` without a body or an
/// `Expect`/`Upgrade` (anything else goes to the runtime's full request handling).
fn is_plain_subscribe(head: &holdfast_proto::http1::RequestHead) -> bool {
    let path = head.path();
    head.method_str() == "GET"
        && (path == "/sub" || path.starts_with("/sub/"))
        && head.header("transfer-encoding").is_none()
        && head.header("content-length").is_none_or(|length| length == b"0")
        && head.header("expect").is_none()
        && head.header("upgrade").is_none()
}

/// When a held long poll is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Only if it has news (messages, a gap, a deleted channel).
    IfDue,
    /// Now, with whatever there is (timeout, shutdown, a deleted channel).
    Now,
    /// Now, then close the connection (`POST /admin/disconnect`: move the client elsewhere).
    NowAndClose,
}

impl Shard {
    /// Answers a held long poll as `answer` says, and hands its connection back once the answer
    /// has gone out (now, or when its socket has taken the rest).
    pub(super) fn answer_longpoll(&mut self, server: &Server, index: usize, answer: Answer) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let Some(reply) = sub.longpoll else { return };
        if reply.answered().is_some() {
            if sub.pending.is_none() {
                self.hand_back(server, index);
            }
            return;
        }
        let mut positions = sub.positions();
        let mut gaps = Vec::new();
        let messages = poll_answer::collect(&mut positions, &mut gaps);
        if answer == Answer::IfDue && !poll_answer::is_due(&positions, &gaps, &messages) {
            return;
        }
        let longest_silence = Some(server.config().longpoll_timeout);
        let origin = match sub.extra.as_deref() {
            Some(Extra::Origin(origin)) => Some(&**origin),
            _ => None,
        };
        let response = poll_answer::render(&mut positions, &gaps, &messages, origin, longest_silence);
        let (persistence, reason) = if server.is_draining() {
            (Persistence::Close, CloseReason::Shutdown)
        } else if answer == Answer::NowAndClose {
            (Persistence::Close, CloseReason::AdminDisconnect)
        } else {
            reply.persistence()
        };
        let mut reply = reply;
        reply.set_answered(persistence, reason);
        sub.longpoll = Some(reply);
        server.stats.delivered(messages.len() as u64);
        // A held poll is answered as soon as it has news: what it carries was published while it
        // waited (one that had news when it came was answered at once, untimed).
        let now = Instant::now();
        for (_, message) in &messages {
            self.tally.delivery.observe(now.saturating_duration_since(message.published_at));
        }
        self.send_answer(server, index, &response, persistence);
    }

    /// Answers a held long poll whose token expired: 401 `token_expired` (the client gets a new
    /// token and polls again from its cursor, which the answer does not move).
    pub(super) fn answer_longpoll_expired(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let Some(mut reply) = sub.longpoll else { return };
        if reply.answered().is_some() {
            return;
        }
        let mut response = crate::auth::Rejection::Expired.response();
        if let Some(Extra::Origin(origin)) = sub.extra.as_deref() {
            response = crate::cors::decorate(response, Some(origin));
        }
        let (persistence, reason) = reply.persistence();
        let (persistence, reason) =
            if server.is_draining() { (Persistence::Close, CloseReason::Shutdown) } else { (persistence, reason) };
        reply.set_answered(persistence, reason);
        sub.longpoll = Some(reply);
        self.send_answer(server, index, &response, persistence);
    }

    /// Writes a long poll's answer (its `longpoll` says it is answered); the connection goes on
    /// (or closes) once its socket has taken all of it.
    fn send_answer(
        &mut self,
        server: &Server,
        index: usize,
        response: &crate::response::Response,
        persistence: Persistence,
    ) {
        // Out of its channels (and no longer counted a subscriber) before the answer is written:
        // a client that reads its answer and at once asks /admin/stats or GET /pub must not find
        // itself still counted.
        self.leave_channels(server, index);
        let keepalive_secs = server.config().keepalive_timeout.as_secs();
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let Some(reply) = sub.longpoll else { return };
        let mut head = BytesMut::new();
        response.encode_head(&mut head, persistence, reply.version, keepalive_secs);
        let mut out = Pending::default();
        sub.bytes_out += (head.len() + response.body.len()) as u64;
        out.push(head.freeze());
        out.push(response.body.clone());
        match out.write_to(&mut self.sessions.link(index, &sub.stream)) {
            Ok(n) => self.tally.bytes_out += n as u64,
            Err(e) => return self.close(server, index, crate::socket::io_close_reason(&e)),
        }
        server.stats.responded(response.status);
        if out.is_empty() {
            return self.hand_back(server, index);
        }
        sub.pending = Some(Box::new(out));
        sub.last_write = clock_ms_at(Instant::now());
        self.want_writable(index, true);
    }

    /// Whether the long poll at `index` ends by being answered (it is one, and `reason` is one
    /// the server initiates); if so, it is answered now.
    pub(super) fn ends_by_answering(&mut self, server: &Server, index: usize, reason: CloseReason) -> bool {
        let unanswered = self
            .slots
            .get(index)
            .and_then(Option::as_ref)
            .is_some_and(|sub| sub.longpoll.is_some_and(|reply| reply.answered().is_none()));
        let answer = match reason {
            CloseReason::Shutdown | CloseReason::ChannelDeleted | CloseReason::HistoryLost => Answer::Now,
            CloseReason::AdminDisconnect => Answer::NowAndClose,
            _ => return false,
        };
        if unanswered {
            self.answer_longpoll(server, index, answer);
        }
        unanswered
    }

    /// The answer is out: the connection waits here for the client's next request (keep-alive)
    /// or is closed.
    fn hand_back(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return };
        let (persistence, reason) =
            sub.longpoll.and_then(|reply| reply.answered()).unwrap_or((Persistence::Close, CloseReason::Shutdown));
        if let Persistence::KeepAlive { .. } = persistence {
            return self.await_next_request(server, index);
        }
        let Some((sub, _)) = self.detach(server, index) else { return };
        let conn = sub.conn;
        drop(sub.stream);
        server.connection_closed_as("longpoll", conn.id, conn.peer(), conn.served, reason);
    }

    /// A long poll being answered leaves its channels and stops counting as a subscriber (once:
    /// its places are empty afterwards, which is also how `detach` knows not to count it again).
    fn leave_channels(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let places = std::mem::take(&mut sub.places);
        if !places.is_empty() {
            server.stats.subscriber_closed(crate::wire::frame::Format::LongPoll);
        }
        for place in places.iter() {
            self.leave(index, place);
        }
    }

    /// An answered long poll's connection stays in the shard for the client's next request: a
    /// long-poll client sends it at once, and serving it here spares the connection two moves
    /// between pollers (four `epoll_ctl`s and a task) per message. It leaves its channels, and
    /// waits at most `park_after` before going to the runtime (which parks it).
    fn await_next_request(&mut self, server: &Server, index: usize) {
        self.leave_channels(server, index);
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        let early_input = sub.longpoll.is_some_and(|reply| reply.early_input);
        sub.longpoll = None;
        sub.extra = None;
        let due = clock_ms_at(Instant::now()) + server.config().park_after.as_millis() as u64;
        self.awaiting_deadlines.push_back(Deadline::new(due, index, &sub.conn));
        let occupied = self.slots.len() - self.free.len();
        drop_stale(&mut self.awaiting_deadlines, &self.slots, occupied);
        // Its next request came while it was held: readiness is edge-triggered, so no new event
        // will say so. (Bytes arriving from now on bring their own event.)
        if early_input {
            self.more_input.push((index, 0));
        }
    }

    /// The next request of a connection waiting in the shard: a long poll is served here (held
    /// again, or answered at once); anything else, or a head not complete in the socket yet,
    /// goes to a runtime task with the bytes still unread.
    fn next_request(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        // Kept between requests (one per shard): sized once, not zeroed per request.
        let limit = server.config().max_header_bytes.max(256);
        if self.peek_buf.len() < limit {
            self.peek_buf.resize(limit, 0);
        }
        let limit = limit.min(self.peek_buf.len());
        let peeked = match self.sessions.link(index, &sub.stream).peek(&mut self.peek_buf[..limit]) {
            Ok(0) => return self.close(server, index, CloseReason::PeerClosed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => return self.close(server, index, crate::socket::io_close_reason(&e)),
        };
        let mut bytes = BytesMut::from(&self.peek_buf[..peeked]);
        let head = match holdfast_proto::http1::parse_request(&mut bytes, &server.limits()) {
            // With access control on, the runtime serves it (and checks its token).
            Ok(Some(head))
                if is_plain_subscribe(&head) && !server.is_draining() && !crate::auth::is_enabled(server) =>
            {
                head
            }
            _ => return self.hand_to_runtime(server, index),
        };
        // A refusal, another transport, or a channel that a network broker must open first: the
        // runtime serves it.
        let mut request = match crate::sub_request::parse_ready(&head, &*server.broker, &server.config()) {
            Some(Ok(request)) if request.transport == crate::sub_request::Transport::LongPoll => request,
            _ => return self.hand_to_runtime(server, index),
        };
        // Take the head out of the socket (it is there: it was just peeked).
        let mut left = head.wire_len();
        while left > 0 {
            match self.sessions.link(index, &sub.stream).read(&mut self.peek_buf[..left]) {
                Ok(0) => return self.close(server, index, CloseReason::PeerAborted),
                Ok(n) => {
                    left -= n;
                    self.tally.bytes_in += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.close(server, index, crate::socket::io_close_reason(&e)),
            }
        }
        sub.conn.served = sub.conn.served.saturating_add(1);
        server.stats.request_served(true);
        let mut reply = LongPollReply::for_request(&head, sub.conn.served, &server.config());
        // Pipelined requests behind this one are in the socket already.
        reply.early_input = peeked > head.wire_len();
        let messages = poll_answer::collect(&mut request.positions, &mut request.gaps);
        if poll_answer::is_due(&request.positions, &request.gaps, &messages) {
            server.stats.delivered(messages.len() as u64);
            let longest_silence = Some(server.config().longpoll_timeout);
            let origin = request.origin.as_deref();
            let response =
                poll_answer::render(&mut request.positions, &request.gaps, &messages, origin, longest_silence);
            let (persistence, reason) = reply.persistence();
            reply.set_answered(persistence, reason);
            sub.longpoll = Some(reply);
            return self.send_answer(server, index, &response, persistence);
        }
        // Held again, in the same slot.
        sub.longpoll = Some(reply);
        sub.extra = request.origin.map(|origin| Box::new(Extra::Origin(origin.into_boxed_str())));
        let due = clock_ms_at(Instant::now()) + server.config().longpoll_timeout.as_millis() as u64;
        self.hold_until(due, index);
        server.stats.subscriber_opened(crate::wire::frame::Format::LongPoll);
        let places: super::Places =
            request.positions.into_iter().map(|(channel, seq)| self.join(index, channel, seq)).collect();
        if let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) {
            sub.places = places;
        }
        // A publish between the read of the history above and the join is caught here.
        self.answer_longpoll(server, index, Answer::IfDue);
    }

    /// A connection waiting here whose next request the shard does not serve: to a runtime task
    /// (its bytes still in the socket), out of this shard's poller first.
    fn hand_to_runtime(&mut self, server: &Server, index: usize) {
        let Some((sub, tls)) = self.detach(server, index) else { return };
        let _ = self.registry().deregister(&mut SourceFd(&sub.stream.as_raw_fd()));
        let super::Subscriber { stream, conn, .. } = *sub;
        let link = crate::socket::StdLink { socket: stream, tls };
        (self.resume)(link, conn, IdleDeadline::between_requests(&server.config()))
    }

    /// Puts a held long poll's deadline in the FIFO (its slot filled already).
    pub(super) fn hold_until(&mut self, due: u64, index: usize) {
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return };
        self.longpoll_deadlines.push_back(Deadline::new(due, index, &sub.conn));
        let occupied = self.slots.len() - self.free.len();
        drop_stale(&mut self.longpoll_deadlines, &self.slots, occupied);
    }

    /// Connections that waited `park_after` here without a next request go to the runtime,
    /// which parks them; returns when the next one is due, if any.
    pub(super) fn expire_awaiting(&mut self, server: &Server, now_ms: u64) -> Option<u64> {
        while let Some(&deadline) = self.awaiting_deadlines.front() {
            if deadline.due > now_ms {
                return Some(deadline.due);
            }
            self.awaiting_deadlines.pop_front();
            give_back_room(&mut self.awaiting_deadlines);
            let index = deadline.index as usize;
            let waiting = self
                .slots
                .get(index)
                .and_then(Option::as_ref)
                .is_some_and(|s| s.is_awaiting() && deadline.is_for(&s.conn));
            if waiting {
                self.hand_to_runtime(server, index);
            }
        }
        None
    }

    /// Answers the long polls whose `longpoll_timeout` has passed; returns when the next one is
    /// due (on [`clock_ms_at`]'s clock), if any.
    pub(super) fn expire_longpolls(&mut self, server: &Server, now_ms: u64) -> Option<u64> {
        while let Some(&deadline) = self.longpoll_deadlines.front() {
            if deadline.due > now_ms {
                return Some(deadline.due);
            }
            self.longpoll_deadlines.pop_front();
            give_back_room(&mut self.longpoll_deadlines);
            let index = deadline.index as usize;
            let current = self.slots.get(index).and_then(Option::as_ref).is_some_and(|s| deadline.is_for(&s.conn));
            if current {
                self.answer_longpoll(server, index, Answer::Now);
            }
        }
        None
    }

    /// A held long poll's client sent something: EOF (it left: the slot goes) or the start of
    /// its next request (left unread for the task that serves it).
    pub(super) fn read_longpoll(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get_mut(index).and_then(Option::as_mut) else { return };
        if sub.is_awaiting() {
            return self.next_request(server, index);
        }
        let mut byte = [0u8; 1];
        match self.sessions.link(index, &sub.stream).peek(&mut byte) {
            Ok(0) => self.close(server, index, CloseReason::PeerClosed),
            // Its next request, early: read once the answer is out (no new readiness comes for
            // bytes already there).
            Ok(_) => {
                if let Some(reply) = sub.longpoll.as_mut() {
                    reply.early_input = true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.close(server, index, crate::socket::io_close_reason(&e)),
        }
    }
}
