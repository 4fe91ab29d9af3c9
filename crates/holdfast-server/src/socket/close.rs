//! Why a connection closed: one label per reason, shared by logs, `/admin/stats`, `/metrics`
//! and the `holdfast.closed` notices.

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
    /// The broker lost the channel's history (a Redis restarted without persistence): the
    /// channel goes on in a new epoch, and the subscriber resumes into it with a gap notice.
    HistoryLost,
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
    /// Refused at accept: its client has `max_connections_per_ip` open (429).
    TooManyConnections,
    /// Refused at accept (429), its client over `new_connections_per_ip_per_second`; or a
    /// WebSocket that kept publishing far over `publishes_per_ip_per_second` (close 1008).
    RateLimited,
    /// The token the subscription was opened with expired (`exp`): SSE, NDJSON and iframe get
    /// the `holdfast.closed` notice, WebSocket closes with 4003, a held long poll gets 401.
    TokenExpired,
}

impl CloseReason {
    /// Every reason, in the order `/admin/stats` lists them.
    pub const ALL: [CloseReason; 24] = [
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
        CloseReason::HistoryLost,
        CloseReason::HeartbeatTimeout,
        CloseReason::ProtocolError,
        CloseReason::WsClosed,
        CloseReason::AdminDisconnect,
        CloseReason::Flooding,
        CloseReason::TooManyConnections,
        CloseReason::RateLimited,
        CloseReason::TokenExpired,
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
            CloseReason::HistoryLost => "history_lost",
            CloseReason::AdminDisconnect => "admin_disconnect",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::ProtocolError => "protocol_error",
            CloseReason::WsClosed => "ws_closed",
            CloseReason::Flooding => "flooding",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::TokenExpired => "token_expired",
        }
    }
}
