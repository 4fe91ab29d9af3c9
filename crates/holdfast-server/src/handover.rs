//! The hand-over of a connection from the task that read its request to a push shard: what the
//! transport decided (framing, positions, how to answer a held long poll) travels with the
//! socket. A leaf shared by the connection loop, the transports and the shards.

use std::sync::Arc;

use holdfast_hub::Channel;
use holdfast_proto::http1::Persistence;

use crate::socket::CloseReason;
use crate::wire::frame::Framing;

/// What a transport hands over with a socket.
pub(crate) struct StreamSetup {
    pub framing: Framing,
    /// The iframe callback (`parent.<callback>(…)`), or how to answer a held long poll. Boxed,
    /// so carrying a setup does not grow the connection's future.
    pub extra: Option<Box<Extra>>,
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
    /// A held long poll.
    LongPoll(LongPollReply),
}

/// How to answer a held long poll, decided when its request was read.
pub(crate) struct LongPollReply {
    pub version: holdfast_proto::http1::Version,
    /// What the request allows (its version and `Connection` field, the request cap); draining
    /// can still close the connection.
    pub persistence: Persistence,
    /// How the close is counted when `persistence` closes.
    pub close_reason: CloseReason,
    /// The CORS origin to allow in the answer.
    pub origin: Option<Box<str>>,
    /// Set once the answer is written (maybe partly: the rest is pending), with what follows it.
    pub answered: Option<(Persistence, CloseReason)>,
}

/// Hands a connection back to the runtime: a new task runs the keep-alive loop from `idle`
/// (waiting for the next request, parking it if none comes within `park_after`). Given to the
/// parking lot and the push shards at start, so they do not depend on the connection loop.
pub(crate) type Resume =
    Arc<dyn Fn(std::net::TcpStream, crate::socket::ConnState, crate::socket::IdleDeadline) + Send + Sync>;

/// A heartbeat interval as [`StreamSetup::heartbeat_ms`] (saturating at about 49 days).
pub(crate) fn heartbeat_ms(interval: std::time::Duration) -> u32 {
    interval.as_millis().min(u128::from(u32::MAX)) as u32
}
