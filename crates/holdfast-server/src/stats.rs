//! Server-wide counters: connections, requests, and why connections closed.
//!
//! Plain atomics, updated with relaxed ordering: they are statistics, read by `/admin/stats`, and
//! never used to synchronise anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a connection closed. One label per reason, shared by logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed between requests (the normal end of a keep-alive connection).
    PeerClosed,
    /// The peer closed or reset in the middle of a request or response.
    PeerAborted,
    /// No request within `keepalive_timeout` on an idle persistent connection.
    IdleTimeout,
    /// The request head did not arrive within `header_timeout` (408 if anything had arrived).
    HeaderTimeout,
    /// The body stalled for `body_timeout` (408).
    BodyTimeout,
    /// The peer did not take a response within `send_timeout`.
    SendTimeout,
    /// `keepalive_requests` reached: the last response said `Connection: close`.
    RequestCap,
    /// The client asked for close (`Connection: close`, or HTTP/1.0 without keep-alive).
    NotPersistent,
    /// A malformed or refused request was answered with 4xx/5xx and the connection closed.
    BadRequest,
    /// A request body was not read (too large to drain, or a 100-continue not honoured).
    BodyNotRead,
    /// Refused at accept time: `max_connections` reached (503).
    OverCapacity,
    /// Closed by a graceful shutdown.
    Shutdown,
    /// A socket error other than a reset.
    IoError,
    /// A streaming subscriber fell more than `max_pending_bytes` behind, or out of the history.
    SlowConsumer,
    /// The channel was deleted (`DELETE /pub/{channel}`).
    ChannelDeleted,
    /// WebSocket: nothing from the peer within `heartbeat_timeout`.
    HeartbeatTimeout,
    /// WebSocket: the peer broke the protocol (closed with 1002/1007/1009).
    ProtocolError,
    /// WebSocket: the close handshake completed.
    WsClosed,
    /// Closed by `POST /admin/disconnect`.
    AdminDisconnect,
    /// WebSocket: the peer sent frames (pings, ops) faster than it read their answers, until
    /// those answers passed `max_pending_bytes` (close 1008).
    Flooding,
}

impl CloseReason {
    /// Every reason, in the order `/admin/stats` lists them.
    pub const ALL: [CloseReason; 20] = [
        CloseReason::PeerClosed,
        CloseReason::PeerAborted,
        CloseReason::IdleTimeout,
        CloseReason::HeaderTimeout,
        CloseReason::BodyTimeout,
        CloseReason::SendTimeout,
        CloseReason::RequestCap,
        CloseReason::NotPersistent,
        CloseReason::BadRequest,
        CloseReason::BodyNotRead,
        CloseReason::OverCapacity,
        CloseReason::Shutdown,
        CloseReason::IoError,
        CloseReason::SlowConsumer,
        CloseReason::ChannelDeleted,
        CloseReason::HeartbeatTimeout,
        CloseReason::ProtocolError,
        CloseReason::WsClosed,
        CloseReason::AdminDisconnect,
        CloseReason::Flooding,
    ];

    /// The label used in logs and `/admin/stats`.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerAborted => "peer_aborted",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::RequestCap => "request_cap",
            CloseReason::NotPersistent => "not_persistent",
            CloseReason::BadRequest => "bad_request",
            CloseReason::BodyNotRead => "body_not_read",
            CloseReason::OverCapacity => "over_capacity",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::ChannelDeleted => "channel_deleted",
            CloseReason::AdminDisconnect => "admin_disconnect",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::WsClosed => "ws_closed",
            CloseReason::Flooding => "flooding",
        }
    }
}

/// The counters of one server.
#[derive(Debug, Default)]
pub struct Stats {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_parked: AtomicU64,
    requests: AtomicU64,
    requests_reused: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Open subscribers by format (sse, stream, iframe, websocket, held long polls).
    streaming: [AtomicU64; 5],
    messages_published: AtomicU64,
    messages_delivered: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now (active, idle in the runtime, or parked).
    pub connections_open: u64,
    /// Connections accepted since start (including those refused with 503).
    pub connections_accepted: u64,
    /// Idle connections parked outside the runtime now.
    pub connections_parked: u64,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered on a connection that had already served one (keep-alive reuse).
    pub requests_reused: u64,
    /// Closed connections by reason.
    pub closed: Vec<(&'static str, u64)>,
    /// Open subscribers by transport.
    pub subscribers: Vec<(&'static str, u64)>,
    /// Messages published.
    pub messages_published: u64,
    /// Message deliveries (one message to one subscriber).
    pub messages_delivered: u64,
}

impl Stats {
    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Relaxed);
        self.connections_open.fetch_add(1, Relaxed);
    }

    /// Counts a close; returns the number of connections still open.
    pub(crate) fn connection_closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason as usize].fetch_add(1, Relaxed);
        self.connections_open.fetch_sub(1, Relaxed) - 1
    }

    pub(crate) fn request_served(&self, reused: bool) {
        self.requests.fetch_add(1, Relaxed);
        if reused {
            self.requests_reused.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn subscriber_opened(&self, format: crate::push::frame::Format) {
        self.streaming[format.stats_index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn subscriber_closed(&self, format: crate::push::frame::Format) {
        self.streaming[format.stats_index()].fetch_sub(1, Relaxed);
    }

    pub(crate) fn published(&self) {
        self.messages_published.fetch_add(1, Relaxed);
    }

    pub(crate) fn delivered(&self, count: u64) {
        self.messages_delivered.fetch_add(count, Relaxed);
    }

    pub(crate) fn parked(&self) {
        self.connections_parked.fetch_add(1, Relaxed);
    }

    pub(crate) fn unparked(&self) {
        self.connections_parked.fetch_sub(1, Relaxed);
    }

    /// Connections open now.
    pub fn connections_open(&self) -> u64 {
        self.connections_open.load(Relaxed)
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections_open: self.connections_open.load(Relaxed),
            connections_accepted: self.connections_accepted.load(Relaxed),
            connections_parked: self.connections_parked.load(Relaxed),
            requests: self.requests.load(Relaxed),
            requests_reused: self.requests_reused.load(Relaxed),
            closed: CloseReason::ALL.iter().map(|r| (r.label(), self.closed[*r as usize].load(Relaxed))).collect(),
            subscribers: vec![
                ("sse", self.streaming[0].load(Relaxed)),
                ("stream", self.streaming[1].load(Relaxed)),
                ("iframe", self.streaming[2].load(Relaxed)),
                ("websocket", self.streaming[3].load(Relaxed)),
                ("longpoll", self.streaming[4].load(Relaxed)),
            ],
            messages_published: self.messages_published.load(Relaxed),
            messages_delivered: self.messages_delivered.load(Relaxed),
        }
    }
}

/// Resident set size of this process in bytes, from `/proc/self/statm` (0 where unavailable).
pub fn process_rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let resident_pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    resident_pages * u64::try_from(page_size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_index_their_own_counter() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*reason as usize, i);
        }
    }

    #[test]
    fn close_counts_by_reason() {
        let stats = Stats::default();
        stats.connection_opened();
        stats.connection_opened();
        assert_eq!(stats.connection_closed(CloseReason::IdleTimeout), 1);
        let snap = stats.snapshot();
        assert_eq!(snap.connections_open, 1);
        assert_eq!(snap.closed.iter().find(|(l, _)| *l == "idle_timeout").unwrap().1, 1);
    }

    #[test]
    fn rss_is_reported() {
        assert!(process_rss_bytes() > 1024 * 1024);
    }
}
