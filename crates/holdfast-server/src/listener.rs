//! The accept loop: socket options, the connection cap, and surviving fd exhaustion.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use holdfast_proto::http1::{Persistence, Version};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};

use crate::conn;
use crate::limits::{Admission, ClientLimit};
use crate::response::Response;
use crate::socket::{ConnState, IdleDeadline, TaskLink};
use crate::{CloseReason, Server};

/// Pause after EMFILE/ENFILE/ENOMEM before accepting again: the pending connection stays in the
/// backlog, and retrying at once would spin a core while nothing can change.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long a refused (503, 429) connection lingers for its request bytes before closing.
const REFUSE_LINGER: Duration = Duration::from_millis(500);

/// Accepts connections until `until` completes (in `run`: the end of the drain, so the listener
/// answers health checks with 503 while the node drains), then closes the listener.
pub(crate) async fn accept_loop(listener: TcpListener, server: &Arc<Server>, until: impl Future<Output = ()>) {
    configure_socket(SockRef::from(&listener), &server.config());
    tokio::pin!(until);
    let mut exhausted_since: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut until => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                if let Some(since) = exhausted_since.take() {
                    tracing::info!(after = ?since.elapsed(), "accepting again");
                }
                admit(stream, peer, server);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                if exhausted_since.is_none() {
                    tracing::warn!(error = %e, open = server.stats.connections_open(), "cannot accept: out of file descriptors or memory; backing off");
                    exhausted_since = Some(std::time::Instant::now());
                }
                tokio::select! {
                    biased;
                    _ = &mut until => return,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
            // ECONNABORTED and the like concern one connection, not the listener.
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

fn admit(stream: TcpStream, peer: SocketAddr, server: &Arc<Server>) {
    server.stats.connection_opened();
    let conn = ConnState::new(server.next_connection_id(), peer);
    if server.stats.connections_open() > server.max_connections as u64 {
        let response = Response::error(503, "over_capacity", "the server is at its connection limit; retry shortly")
            .with_header("Retry-After", "1");
        tokio::spawn(refuse(stream, server.clone(), conn, response, CloseReason::OverCapacity));
        return;
    }
    // The limits per client, on the TCP peer (a proxy's connections are its own): decided before
    // a byte is read, as a TLS handshake will be decided after it.
    let refusal = match server.client_limits.admit(peer.ip()) {
        Admission::Admitted => None,
        Admission::TooManyConnections => Some((
            ClientLimit::Connections,
            Response::error(
                429,
                "too_many_connections",
                "this address has as many connections open as it may (max_connections_per_ip); close one first",
            )
            .with_header("Retry-After", "1"),
            CloseReason::TooManyConnections,
        )),
        Admission::RateLimited(wait) => Some((
            ClientLimit::NewConnections,
            crate::limits::rate_limited(
                wait,
                "this address opens connections too fast (new_connections_per_ip_per_second)",
            ),
            CloseReason::RateLimited,
        )),
    };
    if let Some((limit, response, reason)) = refusal {
        server.stats.limited(limit);
        tokio::spawn(refuse(stream, server.clone(), conn, response, reason));
        return;
    }
    let tls = match &server.tls {
        None => None,
        Some(tls) => match tls.session() {
            Ok(session) => Some(session),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a TLS session");
                drop(stream);
                return server.connection_closed(conn.id, conn.peer(), conn.served, CloseReason::IoError);
            }
        },
    };
    let idle = IdleDeadline::first_request(&server.config());
    tokio::spawn(conn::serve(TaskLink::new(stream, tls), server.clone(), conn, idle));
}

/// TCP_NODELAY (responses are complete when written; Nagle would hold the tail) and TCP
/// keepalive probes, so a peer that vanished without a FIN is found even on a quiet connection.
/// Set on the listening socket: Linux copies all five options to every accepted socket (the test
/// below checks it), which saves five system calls per connection.
pub(crate) fn configure_socket(socket: SockRef<'_>, config: &crate::Config) {
    if let Err(e) = socket.set_nodelay(true) {
        tracing::warn!(error = %e, "TCP_NODELAY");
    }
    let keepalive = TcpKeepalive::new()
        .with_time(config.tcp_keepalive_idle)
        .with_interval(config.tcp_keepalive_interval)
        .with_retries(config.tcp_keepalive_count);
    if let Err(e) = socket.set_tcp_keepalive(&keepalive) {
        tracing::warn!(error = %e, "SO_KEEPALIVE");
    }
}

/// Beyond `max_connections` (503) or a limit per client (429): the answer, with `Retry-After`,
/// written before anything is read; then close.
///
/// On a TLS listener the connection is closed before the handshake instead: an answer would
/// need the handshake the refusal is there to spare.
async fn refuse(stream: TcpStream, server: Arc<Server>, conn: ConnState, response: Response, reason: CloseReason) {
    if server.tls.is_some() {
        drop(stream);
        return server.connection_refused(conn, reason);
    }
    let mut stream = TaskLink::new(stream, None);
    let mut out = BytesMut::new();
    response.encode_head(&mut out, Persistence::Close, Version::Http11, 0);
    out.extend_from_slice(&response.body);
    let deadline = tokio::time::Instant::now() + REFUSE_LINGER;
    let written = crate::socket::io::write_all(&mut stream, &[&out], deadline, &server.stats).await;
    if matches!(written, crate::socket::io::Write::Done) {
        server.stats.responded(response.status);
        crate::socket::io::lingering_close(&mut stream, REFUSE_LINGER, &server.stats).await;
    }
    drop(stream);
    server.connection_refused(conn, reason);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_and_the_keepalive_knobs_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = crate::Config {
            tcp_keepalive_idle: Duration::from_secs(42),
            tcp_keepalive_interval: Duration::from_secs(7),
            tcp_keepalive_count: 3,
            ..crate::Config::default()
        };
        configure_socket(SockRef::from(&listener), &config);
        let _client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let socket = SockRef::from(&stream);
        assert!(stream.nodelay().unwrap());
        assert!(socket.keepalive().unwrap());
        assert_eq!(socket.keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(socket.keepalive_interval().unwrap(), Duration::from_secs(7));
        assert_eq!(socket.keepalive_retries().unwrap(), 3);
    }
}
