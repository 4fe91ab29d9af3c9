//! A connection as every part of the server sees it, whoever holds it (a runtime task, the
//! parking lot, a push shard): its small state ([`ConnState`]), its idle deadline, why it
//! closed ([`CloseReason`]), and the socket I/O helpers with deadlines (`io`).
//!
//! A leaf: it depends on the configuration only.

mod close;
pub(crate) mod io;
mod link;
pub(crate) mod tls;

use std::net::SocketAddr;

use tokio::net::TcpStream;

pub use self::close::CloseReason;
pub(crate) use self::link::{LinkMut, SessionsBySlot, StdLink, TaskLink};
use crate::config::Config;

/// What a connection carries between requests (and into the parking lot): kept small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnState {
    pub id: u64,
    pub peer: SocketAddr,
    /// Requests answered so far on this connection.
    pub served: u32,
    /// Unix seconds at which the token of the subscription it serves expires (0 = none; access
    /// control off or a token without `exp`). Four bytes in what was padding: every subscriber
    /// slot has a `ConnState`, and this costs it nothing.
    pub token_deadline: u32,
}

/// When an idle connection expires, and how that close is labelled.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleDeadline {
    pub at: std::time::Instant,
    pub expiry: CloseReason,
}

impl IdleDeadline {
    /// A new connection must start its first request within `header_timeout`.
    pub fn first_request(config: &Config) -> IdleDeadline {
        IdleDeadline { at: std::time::Instant::now() + config.header_timeout, expiry: CloseReason::HeaderTimeout }
    }

    /// Between two requests on a persistent connection: `keepalive_timeout`.
    pub fn between_requests(config: &Config) -> IdleDeadline {
        IdleDeadline { at: std::time::Instant::now() + config.keepalive_timeout, expiry: CloseReason::IdleTimeout }
    }
}

/// A one-byte `MSG_PEEK`: `Ok(0)` at EOF, `Ok(1)` with input waiting, `WouldBlock` with none (and
/// then tokio's readiness is cleared, so the next wait really waits).
pub(crate) fn peek(stream: &TcpStream) -> std::io::Result<usize> {
    stream.try_io(tokio::io::Interest::READABLE, || {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
        socket2::SockRef::from(stream).peek(&mut byte)
    })
}

/// The close reason for a socket error: the peer's doing (reset, broken pipe) or ours.
pub(crate) fn io_close_reason(error: &std::io::Error) -> CloseReason {
    use std::io::ErrorKind::*;
    match error.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => CloseReason::PeerAborted,
        _ => CloseReason::IoError,
    }
}
