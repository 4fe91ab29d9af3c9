//! What a [`Subscriber`](crate::Subscriber) yields: messages, gaps, close notices and changes of
//! its link's state. Parsing the wire formats into these lives in `transport`.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A published message.
    Message(Message),
    /// Messages were lost before what follows: the cursor pointed at messages the server no
    /// longer keeps, or into another epoch (the server restarted, the channel was deleted or
    /// dropped, or the subscriber moved to another server). Always yielded, never swallowed.
    Gap(Gap),
    /// The server ended the subscription with a `holdfast.closed` notice (`reason` is its close
    /// reason: `shutdown`, `admin_disconnect`, `channel_deleted`, `slow_consumer`, …), or a poll
    /// answer listed the channel as deleted. The subscriber reconnects and resumes by itself; after
    /// `channel_deleted` the next connection starts with a [`Event::Gap`] for that channel.
    Closed {
        /// The channel concerned, or the subscription's channel list (`a,b`) for a close of the
        /// whole connection.
        channel: String,
        /// The server's close reason.
        reason: String,
    },
    /// The link changed state.
    State(State),
}

/// A published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it was published to. Server-Sent Events do not carry it: with several channels
    /// over SSE this is the subscription's channel list (`a,b`).
    pub channel: String,
    /// The publisher's event type (`message` unless set).
    pub event: String,
    /// The payload as published (a payload published as JSON comes as its JSON text).
    pub data: Bytes,
    /// The cursor right after this message: hand it to
    /// [`SubscriberBuilder::cursor`](crate::SubscriberBuilder::cursor) to resume after it.
    pub cursor: String,
}

impl Message {
    /// The payload as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.data).ok()
    }
}

/// Messages lost before the next ones (a `holdfast.gap` notice, or a poll answer's `gap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The channel that lost messages.
    pub channel: String,
    /// How many were lost; `None` when the epoch changed and the count is unknown.
    pub lost: Option<u64>,
    /// The first sequence number still available in the channel's (new) epoch.
    pub first_available: u64,
}

/// The state of a subscriber's link to the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// Connecting for the first time.
    Connecting,
    /// Connected (for poll transports: the first poll was answered).
    Connected {
        /// The server's base URL.
        server: String,
        /// The transport in use.
        transport: Transport,
        /// The heartbeat interval in force: the server's `Holdfast-Heartbeat` answer, or the
        /// configured value when the server did not send one. The link is declared dead after
        /// `heartbeat × k` without a byte.
        heartbeat: Duration,
    },
    /// The link was lost (or could not be made) and the next attempt starts after `after`.
    Reconnecting {
        /// Attempts since the last healthy connection, from 1.
        attempt: u32,
        /// The backoff delay before the next attempt.
        after: Duration,
        /// Why the link was lost, in plain words.
        cause: String,
    },
    /// The adaptive heartbeat settled on this interval and stops probing
    /// (see [`Heartbeat::Adaptive`](crate::Heartbeat::Adaptive)).
    HeartbeatSettled {
        /// The interval now held.
        interval: Duration,
    },
}

/// How a subscriber receives messages (see the protocol's transports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket (RFC 6455), one JSON envelope per text frame.
    Ws,
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// Long polling: each poll is held until there is a message (or `longpoll_timeout`).
    LongPoll,
    /// Short polling at a fixed period.
    Poll,
    /// Chunked NDJSON streaming: one JSON envelope per line.
    Stream,
}

impl Transport {
    /// The name used in `?transport=` and by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "longpoll",
            Transport::Poll => "poll",
            Transport::Stream => "stream",
        }
    }

    /// Whether the server holds one response (or socket) open and pushes on it, with heartbeats.
    pub fn is_streaming(self) -> bool {
        matches!(self, Transport::Ws | Transport::Sse | Transport::Stream)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ws" | "websocket" => Ok(Transport::Ws),
            "sse" => Ok(Transport::Sse),
            "longpoll" => Ok(Transport::LongPoll),
            "poll" => Ok(Transport::Poll),
            "stream" | "ndjson" => Ok(Transport::Stream),
            other => Err(format!("unknown transport {other:?} (ws, sse, longpoll, poll, stream)")),
        }
    }
}
