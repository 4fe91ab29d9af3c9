//! The hand-over of a connection from the task that read its request to a push shard: what the
//! transport decided (framing, positions, how to answer a held long poll) travels with the
//! socket. A leaf shared by the connection loop, the transports and the shards.

use std::sync::Arc;

use holdfast_hub::Channel;
use holdfast_proto::http1::Persistence;

use crate::socket::CloseReason;
use crate::wire::frame::{Format, Framing};

/// What a transport hands over with a socket.
pub(crate) struct StreamSetup {
    pub framing: Framing,
    /// The iframe callback (`parent.<callback>(…)`) or a long poll's CORS origin: what few
    /// subscribers need. Boxed, so carrying a setup does not grow the connection's future.
    pub extra: Option<Box<Extra>>,
    /// How to answer a held long poll (8 bytes, kept in the shard slot itself).
    pub longpoll: Option<LongPollReply>,
    /// Each channel with the last sequence number already sent.
    pub positions: Vec<(Arc<Channel>, u64)>,
    /// WebSocket: frames the client sent right behind its upgrade request.
    pub early_input: bytes::BytesMut,
    /// WebSocket: permessage-deflate was agreed, so the client may send compressed messages.
    pub inflate: bool,
    /// Milliseconds the subscriber may go without a byte before it gets a heartbeat (4 bytes in
    /// the setup's padding: the setup lives in every connection's future).
    pub heartbeat_ms: u32,
}

/// What a few subscribers need beyond what every slot has.
pub(crate) enum Extra {
    /// The iframe callback (`parent.<callback>(…)`).
    Callback(Box<str>),
    /// The CORS origin to allow in a long poll's answer.
    Origin(Box<str>),
    /// A WebSocket's token rights, for its subscribe and publish ops (access control on).
    Grants(Box<crate::auth::Grants>),
}

/// How to answer a held long poll, decided when its request was read. Packed into 8 bytes: it
/// lives in the shard slot of every held long poll, where a box of its own cost ~48 B each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LongPollReply {
    /// What the request allows (its version and `Connection` field, the request cap) as
    /// `Persistence::KeepAlive { requests_left }`; 0 means `Persistence::Close`. Draining can
    /// still close the connection.
    requests_left: u32,
    pub version: holdfast_proto::http1::Version,
    /// How the close is counted when the answer closes the connection as the request asked.
    close_reason: CloseReason,
    /// Set once the answer is written (maybe partly: the rest is pending): `Some(None)` when it
    /// kept the request's persistence, `Some(Some(reason))` when it closes for that reason.
    answered: Option<Option<CloseReason>>,
    /// The client sent bytes (its next request) while the poll was held or being answered.
    pub early_input: bool,
}

impl LongPollReply {
    pub fn new(
        version: holdfast_proto::http1::Version,
        persistence: Persistence,
        close_reason: CloseReason,
    ) -> LongPollReply {
        let requests_left = match persistence {
            Persistence::KeepAlive { requests_left } => requests_left.max(1),
            Persistence::Close => 0,
        };
        LongPollReply { requests_left, version, close_reason, answered: None, early_input: false }
    }

    /// How to answer the long poll `head` asks for (`served`: requests on the connection, this
    /// one included; the request cap may close it).
    pub fn for_request(head: &holdfast_proto::http1::RequestHead, served: u32, config: &crate::config::Config) -> Self {
        let version = head.version();
        let persistence = Persistence::decide(version, &head.connection, served, config.keepalive_requests, true);
        let close_reason = if head.connection.wants_keep_alive(version) {
            CloseReason::RequestCap
        } else {
            CloseReason::NotPersistent
        };
        LongPollReply::new(version, persistence, close_reason)
    }

    /// What the request allows, and how the close is counted if it closes.
    pub fn persistence(&self) -> (Persistence, CloseReason) {
        match self.requests_left {
            0 => (Persistence::Close, self.close_reason),
            requests_left => (Persistence::KeepAlive { requests_left }, self.close_reason),
        }
    }

    /// Records that the answer went out with `persistence` (the request's own, or a close).
    pub fn set_answered(&mut self, persistence: Persistence, reason: CloseReason) {
        self.answered = Some(match persistence {
            Persistence::Close => Some(reason),
            Persistence::KeepAlive { .. } => None,
        });
    }

    /// What follows the answer, once it is written.
    pub fn answered(&self) -> Option<(Persistence, CloseReason)> {
        self.answered.map(|ending| match ending {
            Some(reason) => (Persistence::Close, reason),
            None => self.persistence(),
        })
    }
}

/// The hand-over of a long poll to a push shard, with how to answer it when the time comes
/// (`served`: requests on the connection, this one included).
pub(crate) fn held_longpoll(
    head: &holdfast_proto::http1::RequestHead,
    subscription: crate::sub_request::Subscription,
    served: u32,
    config: &crate::config::Config,
) -> StreamSetup {
    StreamSetup {
        framing: Framing { format: Format::LongPoll, chunked: false, deflate: false },
        extra: subscription.origin.map(|origin| Box::new(Extra::Origin(origin.into_boxed_str()))),
        longpoll: Some(LongPollReply::for_request(head, served, config)),
        positions: subscription.positions,
        early_input: bytes::BytesMut::new(),
        inflate: false,
        heartbeat_ms: heartbeat_ms(config.longpoll_timeout),
    }
}

/// Hands a connection back to the runtime: a new task runs the keep-alive loop from `idle`
/// (waiting for the next request, parking it if none comes within `park_after`). Given to the
/// parking lot and the push shards at start, so they do not depend on the connection loop.
pub(crate) type Resume =
    Arc<dyn Fn(crate::socket::StdLink, crate::socket::ConnState, crate::socket::IdleDeadline) + Send + Sync>;

/// A heartbeat interval as [`StreamSetup::heartbeat_ms`] (saturating at about 49 days).
pub(crate) fn heartbeat_ms(interval: std::time::Duration) -> u32 {
    interval.as_millis().min(u128::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_proto::http1::Version;

    #[test]
    fn a_long_poll_reply_packs_into_eight_bytes_and_round_trips() {
        assert!(std::mem::size_of::<Option<LongPollReply>>() <= 8);
        let keep = Persistence::KeepAlive { requests_left: 41 };
        let mut reply = LongPollReply::new(Version::Http11, keep, CloseReason::RequestCap);
        assert_eq!(reply.persistence(), (keep, CloseReason::RequestCap));
        assert_eq!(reply.answered(), None);
        reply.set_answered(keep, CloseReason::RequestCap);
        assert_eq!(reply.answered(), Some((keep, CloseReason::RequestCap)));
        reply.set_answered(Persistence::Close, CloseReason::Shutdown);
        assert_eq!(reply.answered(), Some((Persistence::Close, CloseReason::Shutdown)));
        let close = LongPollReply::new(Version::Http10, Persistence::Close, CloseReason::NotPersistent);
        assert_eq!(close.persistence(), (Persistence::Close, CloseReason::NotPersistent));
    }
}
