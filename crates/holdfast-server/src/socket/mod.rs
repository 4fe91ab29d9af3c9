//! A connection as every part of the server sees it, whoever holds it (a runtime task, the
//! parking lot, a push shard): its small state ([`ConnState`]), its idle deadline, why it
//! closed ([`CloseReason`]), and the socket I/O helpers with deadlines (`io`).
//!
//! A leaf: it depends on the configuration only.

mod close;
pub(crate) mod io;
mod link;
pub(crate) mod tls;

use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

pub use self::close::CloseReason;
pub(crate) use self::link::{LinkMut, SessionsBySlot, StdLink, TaskLink};
use crate::config::Config;

/// What a connection carries between requests (and into the parking lot): kept small.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnState {
    pub id: u64,
    /// The peer's address and port, apart: a `SocketAddr` is 32 bytes (an IPv6 one carries flow
    /// info and a scope id, which nothing here uses); these are 20, which is what lets a push
    /// shard keep a one-channel subscriber's place in its slot instead of a box of its own.
    peer_ip: IpAddr,
    peer_port: u16,
    /// Requests answered so far on this connection.
    pub served: u32,
    /// Unix seconds at which the token of the subscription it serves expires (0 = none; access
    /// control off or a token without `exp`). Four bytes in what was padding: every subscriber
    /// slot has a `ConnState`, and this costs it nothing.
    pub token_deadline: u32,
}

impl ConnState {
    /// A new connection from `peer`.
    pub fn new(id: u64, peer: SocketAddr) -> ConnState {
        ConnState { id, peer_ip: peer.ip(), peer_port: peer.port(), served: 0, token_deadline: 0 }
    }

    /// The peer's address (an IPv6 one without its flow info and scope id).
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.peer_ip, self.peer_port)
    }
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
