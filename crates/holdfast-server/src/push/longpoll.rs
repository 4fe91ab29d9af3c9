//! Held long polls inside a push shard.
//!
//! A long poll with nothing to answer yet costs what a streaming subscriber costs: a shard slot,
//! no task, no buffer, no timer of its own (its deadline is one entry in the shard's FIFO: every
//! long poll waits the same `longpoll_timeout`, so deadlines come in the order polls arrive). It
//! is answered from here, with one whole HTTP response, when one of its channels gets a message,
//! at `longpoll_timeout`, when a channel is deleted, on `POST /admin/disconnect` and on shutdown.
//! Once the answer is out the connection goes back to keep-alive: to a new runtime task that
//! waits for the client's next request (and parks the connection if it does not come within
//! `park_after`), or it is closed, when the answer said `Connection: close`.
//!
//! While it waits, the client may close (then the slot goes at once) or send its next request
//! early (pipelining): those bytes are left in the socket for the task that reads it next.

use std::io;
use std::time::Instant;

use std::os::fd::AsRawFd;

use bytes::BytesMut;
use holdfast_proto::http1::Persistence;
use mio::unix::SourceFd;

use super::{clock_ms_at, Shard};
use crate::handover::Extra;
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
    /// The low half of its connection id: a slot answered early may hold another connection by
    /// its deadline; ids that agree in 32 bits are 4 billion connections apart.
    conn_low: u32,
}

impl Deadline {
    pub fn new(due: u64, index: usize, conn_id: u64) -> Deadline {
        Deadline { due, index: index as u32, conn_low: conn_id as u32 }
    }

    /// Whether the slot still holds the long poll this deadline is for.
    pub fn is_for(&self, conn_id: u64) -> bool {
        self.conn_low == conn_id as u32
    }
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
        let keepalive_secs = server.config.keepalive_timeout.as_secs();
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
        let longest_silence = Some(server.config.longpoll_timeout);
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
        if let Some(reply) = sub.longpoll.as_mut() {
            reply.set_answered(persistence, reason);
        }
        let mut head = BytesMut::new();
        response.encode_head(&mut head, persistence, reply.version, keepalive_secs);
        server.stats.delivered(messages.len() as u64);
        let mut out = Pending::default();
        sub.bytes_out += (head.len() + response.body.len()) as u64;
        out.push(head.freeze());
        out.push(response.body);
        if let Err(e) = out.write_to(&sub.stream) {
            return self.close(server, index, crate::socket::io_close_reason(&e));
        }
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
            CloseReason::Shutdown | CloseReason::ChannelDeleted => Answer::Now,
            CloseReason::AdminDisconnect => Answer::NowAndClose,
            _ => return false,
        };
        if unanswered {
            self.answer_longpoll(server, index, answer);
        }
        unanswered
    }

    /// The answer is out: the connection leaves the shard for the parking lot (keep-alive) or
    /// is closed.
    fn hand_back(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.detach(server, index) else { return };
        let (persistence, reason) =
            sub.longpoll.and_then(|reply| reply.answered()).unwrap_or((Persistence::Close, CloseReason::Shutdown));
        let super::Subscriber { stream, conn, .. } = *sub;
        match persistence {
            // Straight to a runtime task, which waits for the next poll (a long-poll client sends
            // it at once) and parks the connection only if none comes within `park_after`.
            Persistence::KeepAlive { .. } => {
                // The descriptor lives on in the runtime: out of this shard's poller first.
                let _ = self.registry().deregister(&mut SourceFd(&stream.as_raw_fd()));
                (self.resume)(stream, conn, IdleDeadline::between_requests(&server.config))
            }
            Persistence::Close => {
                drop(stream);
                server.connection_closed(conn.id, conn.peer, conn.served, reason);
            }
        }
    }

    /// Answers the long polls whose `longpoll_timeout` has passed; returns when the next one is
    /// due (on [`clock_ms_at`]'s clock), if any.
    pub(super) fn expire_longpolls(&mut self, server: &Server, now_ms: u64) -> Option<u64> {
        while let Some(&deadline) = self.longpoll_deadlines.front() {
            if deadline.due > now_ms {
                return Some(deadline.due);
            }
            self.longpoll_deadlines.pop_front();
            let index = deadline.index as usize;
            let current = self.slots.get(index).and_then(Option::as_ref).is_some_and(|s| deadline.is_for(s.conn.id));
            if current {
                self.answer_longpoll(server, index, Answer::Now);
            }
        }
        None
    }

    /// A held long poll's client sent something: EOF (it left: the slot goes) or the start of
    /// its next request (left unread for the task that serves it).
    pub(super) fn read_longpoll(&mut self, server: &Server, index: usize) {
        let Some(sub) = self.slots.get(index).and_then(Option::as_ref) else { return };
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        match socket2::SockRef::from(&sub.stream).peek(&mut byte) {
            Ok(0) => self.close(server, index, CloseReason::PeerClosed),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => self.close(server, index, crate::socket::io_close_reason(&e)),
        }
    }
}
