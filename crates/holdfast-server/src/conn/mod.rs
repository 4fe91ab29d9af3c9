//! One connection: the HTTP/1.x keep-alive loop.
//!
//! A connection is in one of these phases:
//! - **idle** (no request bytes): waits for readability with no buffer. After `park_after` it
//!   leaves the runtime for the parking lot (`crate::park`), which hands it back to a new task
//!   when bytes arrive. The idle deadline is `header_timeout` for a new connection and
//!   `keepalive_timeout` between requests.
//! - **head**: bytes are read into a buffer until a head parses, within `header_timeout`; a slow
//!   sender gets 408.
//! - **body**: read (for handlers that take one), discarded (bounded), or left unread (then the
//!   connection closes), within `body_timeout` per read.
//! - **respond**: the response goes out with `Keep-Alive`/`Connection` fields from one
//!   persistence decision. Pipelined bytes already buffered start the next request at once.
//! - **closing**: after a response that closes, a lingering close; each close is counted and
//!   logged once with its reason.

mod body;

use std::sync::Arc;

use crate::socket::TaskLink;
use bytes::BytesMut;
use holdfast_proto::http1::{parse_request, Persistence, RequestHead, Version};
use holdfast_proto::ParseError;
use tokio::time::Instant;

use self::body::{Body, BodyError};
use crate::handover::StreamSetup;
use crate::limits::{ClientLimit, PublishCheck};
use crate::poll_answer;
use crate::response::Response;
use crate::router::Route;
use crate::socket::io::{lingering_close, read_more, write_all, Read, Write, READ_CHUNK};
use crate::socket::{io_close_reason, ConnState, IdleDeadline};
use crate::transport::{self, Transport};
use crate::wire::frame::Format;
use crate::{router, CloseReason, Server, LINGER_TIMEOUT};

/// How the loop ended.
enum End {
    /// Idle long enough: move to the parking lot.
    Park(IdleDeadline),
    /// A streaming response began: the socket goes to a push shard.
    Stream(StreamSetup),
    /// Close, lingering first if a response was sent and input may still be arriving.
    Close { reason: CloseReason, linger: bool },
}

/// Serves a connection until it closes or is parked.
pub(crate) async fn serve(mut stream: TaskLink, server: Arc<Server>, mut conn: ConnState, idle: IdleDeadline) {
    match drive(&mut stream, &server, &mut conn, idle).await {
        End::Park(idle) => {
            let parked = match stream.into_std() {
                Ok(link) => server.parking.park(link, conn, idle),
                Err(_) => return server.connection_closed(conn.id, conn.peer(), conn.served, CloseReason::IoError),
            };
            match parked {
                Ok(()) => server.stats.parked(),
                Err((std_stream, conn, reason)) => {
                    drop(std_stream);
                    server.connection_closed(conn.id, conn.peer(), conn.served, reason);
                }
            }
        }
        End::Stream(setup) => match stream.into_std() {
            Ok(link) => server.push.add(link, conn, setup),
            Err(_) => server.connection_closed(conn.id, conn.peer(), conn.served, CloseReason::IoError),
        },
        End::Close { reason, linger } => {
            if linger {
                Box::pin(lingering_close(&mut stream, LINGER_TIMEOUT, &server.stats)).await;
            }
            drop(stream);
            server.connection_closed(conn.id, conn.peer(), conn.served, reason);
        }
    }
}

async fn drive(stream: &mut TaskLink, server: &Server, conn: &mut ConnState, mut idle: IdleDeadline) -> End {
    let mut buf = BytesMut::new();
    loop {
        if buf.is_empty() {
            // Give the buffer back while idle: an idle connection holds no read memory.
            buf = BytesMut::new();
            match wait_idle(stream, server, idle, &mut buf).await {
                // What the wait read is the request's first bytes (counted here: the wait's future
                // is part of every connection's, and stays smaller without it).
                Idle::Readable => server.stats.received(buf.len()),
                Idle::PeerClosed => return End::Close { reason: CloseReason::PeerClosed, linger: false },
                // Boxed, as the exchange is: the idle connection's future stays small.
                Idle::PlainHttp => return Box::pin(refuse_plain_http(stream, server)).await,
                Idle::Park => return End::Park(idle),
                Idle::Expired => return End::Close { reason: idle.expiry, linger: false },
                Idle::Draining => return End::Close { reason: CloseReason::Shutdown, linger: false },
            }
        }
        // Boxed: the exchange's state (head, body, response) is allocated per request, so a
        // connection idling in the runtime holds only the small idle-wait future.
        match Box::pin(exchange(stream, server, conn, &mut buf)).await {
            Next::Continue => idle = IdleDeadline::between_requests(&server.config()),
            Next::Stream(setup) => return End::Stream(setup),
            Next::Close { reason, linger } => return End::Close { reason, linger },
        }
    }
}

enum Idle {
    /// Bytes were read into the buffer.
    Readable,
    /// A plain HTTP request came to the TLS listener.
    PlainHttp,
    /// The peer closed (or reset) between requests.
    PeerClosed,
    Park,
    Expired,
    Draining,
}

/// Whether a drain closes this idle connection: a keep-alive connection between requests does,
/// one opened during the drain waits for its first request (a load balancer's health check must
/// hear the 503). Computed from `idle` rather than kept: the idle wait's future stays its size.
fn closes_on_drain(idle: &IdleDeadline) -> bool {
    !matches!(idle.expiry, CloseReason::HeaderTimeout)
}

/// Waits, without a buffer, for the next request's first bytes, and reads them into `buf`.
///
/// Readiness can be reported with nothing to read (tokio marks a newly registered socket
/// readable), so a wake-up is only believed once a read returns bytes: the buffer is allocated
/// for that read and given back if it finds nothing. That read is the request's first read, so
/// checking costs no extra system call.
async fn wait_idle(stream: &mut TaskLink, server: &Server, idle: IdleDeadline, buf: &mut BytesMut) -> Idle {
    let draining = server.drain_started.notified();
    tokio::pin!(draining);
    draining.as_mut().enable();
    if closes_on_drain(&idle) && server.is_draining() {
        return Idle::Draining;
    }
    let park_at = std::time::Instant::now() + server.config().park_after;
    let wake = tokio::time::sleep_until(Instant::from_std(park_at.min(idle.at)));
    tokio::pin!(wake);
    loop {
        tokio::select! {
            biased;
            _ = &mut draining, if closes_on_drain(&idle) => return Idle::Draining,
            // (`poll_read_ready` rather than `readable()`: an 8 B future instead of 152 B.)
            _ = std::future::poll_fn(|cx| stream.poll_read_ready(cx)) => {
                buf.reserve(READ_CHUNK);
                match stream.try_read_buf(buf) {
                    Ok(0) => return Idle::PeerClosed,
                    Ok(_) => return Idle::Readable,
                    // Nothing after all; tokio cleared its readiness, so the next wait waits.
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => *buf = BytesMut::new(),
                    Err(e) if crate::socket::tls::is_plain_http(&e) => return Idle::PlainHttp,
                    Err(e) => {
                        // A failed handshake (no common version or cipher, a client that does
                        // not trust the certificate) is worth a line when debugging a setup.
                        if stream.tls.is_some() {
                            tracing::debug!(error = %e, "TLS handshake or read failed");
                        }
                        return Idle::PeerClosed;
                    }
                }
            }
            _ = &mut wake => {
                return if std::time::Instant::now() >= idle.at { Idle::Expired } else { Idle::Park };
            }
        }
    }
}

/// A plain HTTP request on the TLS listener: 400 in plain text, as nginx answers it, so the
/// mistake (`http://` for `https://`) is plain to see rather than a closed connection.
async fn refuse_plain_http(stream: &mut TaskLink, server: &Server) -> End {
    stream.tls = None;
    let response = Response::error(400, "plain_http_on_tls_port", "this port speaks TLS: use https:// (or wss://)");
    match send_final(stream, server, &response, CloseReason::BadRequest).await {
        Next::Close { reason, linger } => End::Close { reason, linger },
        _ => End::Close { reason: CloseReason::BadRequest, linger: false },
    }
}

/// What follows one request/response exchange.
enum Next {
    Continue,
    /// The response became a stream; the connection belongs to a push shard now.
    Stream(StreamSetup),
    Close {
        reason: CloseReason,
        linger: bool,
    },
}

impl Next {
    fn close(reason: CloseReason) -> Next {
        Next::Close { reason, linger: false }
    }
}

/// Reads one request, answers it, and says whether the connection goes on.
async fn exchange(stream: &mut TaskLink, server: &Server, conn: &mut ConnState, buf: &mut BytesMut) -> Next {
    let head = match read_head(stream, server, buf).await {
        Ok(head) => head,
        Err(next) => return next,
    };
    // Request and publish latency run from here to the response written.
    let head_read = std::time::Instant::now();
    conn.served = conn.served.saturating_add(1);
    let route = router::route(&head, server);

    // `publishes_per_ip_per_second`: decided before the body is read (then drained or not read).
    let limited = if matches!(route, Route::Publish) { publish_limited(server, conn, &head) } else { None };
    let wants_body = route.wants_body() && limited.is_none();
    let (body, body_fate) = match body::consume(stream, server, &head, wants_body, buf).await {
        Ok(Body::Read(bytes)) => (bytes, None),
        Ok(Body::Discarded) => (Default::default(), None),
        Ok(Body::Unread) => (Default::default(), Some(CloseReason::BodyNotRead)),
        Err(BodyError::Refuse(e)) => return refuse(stream, server, e).await,
        Err(BodyError::Timeout) => {
            let response = Response::error(408, "body_timeout", "the request body stalled");
            return send_final(stream, server, &response, CloseReason::BodyTimeout).await;
        }
        Err(BodyError::Aborted) => return Next::close(CloseReason::PeerAborted),
    };

    // Counted before responding, so /admin/stats includes the request asking for it.
    server.stats.request_served(conn.served > 1);
    // Access control (`auth`): 401/403 here, before any handler; what the token grants goes with
    // a subscription (its deadline in the connection, its rights to a WebSocket's ops).
    let admitted = crate::auth::admit(route, &head, server);
    let response = match admitted {
        Err(refusal) => crate::cors::decorate(refusal, crate::cors::allowed_origin(&head, &server.config()).as_deref()),
        Ok(grants) => {
            // The subscription this request may open ends when its token expires.
            conn.token_deadline = grants.as_ref().map_or(0, |g| g.deadline);
            match route {
                Route::EchoWebSocket => return echo_websocket(stream, server, &head, buf).await,
                // A draining node takes no new subscriber (any transport, WebSocket upgrades too):
                // 503 with `Retry-After`, so the client reconnects elsewhere.
                Route::Subscribe | Route::AdminEvents if server.is_draining() => crate::cors::decorate(
                    router::draining_refusal(
                        server,
                        "this node is draining; subscribe again (to another node) after Retry-After",
                    ),
                    crate::cors::allowed_origin(&head, &server.config()).as_deref(),
                ),
                Route::Subscribe | Route::AdminEvents => {
                    match subscribe(stream, server, &head, route, buf, conn.served, grants).await {
                        Subscribed::Answer(response) => response,
                        Subscribed::Streaming(setup) => {
                            // Behind a trusted proxy: the client it names, for the admin list, the logs
                            // and a WebSocket's publish limit.
                            if setup.framing.format != Format::LongPoll {
                                server.client_limits.remember_client(conn.id, conn.peer().ip(), &head);
                            }
                            return Next::Stream(setup);
                        }
                        Subscribed::Ended(next) => return next,
                    }
                }
                Route::AdminConnections => router::admin_connections(server).await,
                _ => match limited {
                    Some(refusal) => refusal,
                    None => router::respond(route, &head, body, server).await,
                },
            }
        }
    };
    let persistence = Persistence::decide(
        head.version(),
        &head.connection,
        conn.served,
        server.config().keepalive_requests,
        !server.is_draining() && body_fate.is_none(),
    );
    if let Err(next) = send(stream, server, &response, &head, persistence).await {
        return next;
    }
    observe_latency(server, route, head_read);
    match persistence {
        Persistence::KeepAlive { .. } => Next::Continue,
        Persistence::Close => {
            let reason = if let Some(reason) = body_fate {
                reason
            } else if !head.connection.wants_keep_alive(head.version()) {
                CloseReason::NotPersistent
            } else if server.is_draining() {
                CloseReason::Shutdown
            } else {
                CloseReason::RequestCap
            };
            // Linger (FIN, then drain input) only when more input may follow: pipelined bytes or
            // an unread body. Otherwise close at once, as nginx does: the client asked for close
            // or was told so, and has nothing more to send.
            Next::Close { reason, linger: !buf.is_empty() || body_fate.is_some() }
        }
    }
}

/// `publishes_per_ip_per_second`: 429 `rate_limited` for a publish over its client's rate (the
/// client a trusted proxy names, else the peer).
fn publish_limited(server: &Server, conn: &ConnState, head: &RequestHead) -> Option<Response> {
    let limits = &server.client_limits;
    if !limits.limits_publishes() {
        return None;
    }
    let (PublishCheck::Limited(wait) | PublishCheck::Flooding(wait)) =
        limits.publish(limits.client_ip(conn.peer().ip(), head))
    else {
        return None;
    };
    server.stats.limited(ClientLimit::Publishes);
    let refusal = crate::limits::rate_limited(wait, "this address publishes too fast (publishes_per_ip_per_second)");
    Some(crate::cors::decorate(refusal, crate::cors::allowed_origin(head, &server.config()).as_deref()))
}

/// What a subscription request became.
enum Subscribed {
    /// A complete answer (poll, long poll, or a refusal).
    Answer(Response),
    /// A stream whose head is sent.
    Streaming(StreamSetup),
    /// The connection ends (client gone, or the head could not be sent).
    Ended(Next),
}

async fn subscribe(
    stream: &mut TaskLink,
    server: &Server,
    head: &RequestHead,
    route: Route,
    buf: &mut BytesMut,
    served: u32,
    grants: Option<crate::auth::Grants>,
) -> Subscribed {
    let parsed = match route {
        // The dashboard's feed: SSE on an internal channel of the node-local broker.
        Route::AdminEvents => crate::admin_feed::subscription(server),
        _ => {
            // Owned, not a guard: a network broker may make this wait (see `Server::config`).
            let config = server.config_owned();
            transport::parse(head, &*server.broker, &config).await
        }
    };
    let mut subscription = match parsed {
        Ok(subscription) => subscription,
        Err(refusal) => return Subscribed::Answer(refusal),
    };
    // A long poll with nothing to answer yet waits in a push shard, unless a pipelined request
    // is already buffered behind it (that rare case waits here, in this task).
    if subscription.transport == Transport::LongPoll && buf.is_empty() && !server.is_draining() {
        let messages = poll_answer::collect(&mut subscription.positions, &mut subscription.gaps);
        if poll_answer::is_due(&subscription.positions, &subscription.gaps, &messages) {
            server.stats.delivered(messages.len() as u64);
            let origin = subscription.origin.as_deref();
            return Subscribed::Answer(poll_answer::render(
                &mut subscription.positions,
                &subscription.gaps,
                &messages,
                origin,
                Some(server.config().longpoll_timeout),
            ));
        }
        return Subscribed::Streaming(crate::handover::held_longpoll(head, subscription, served, &server.config()));
    }
    let opened = match subscription.transport.clone() {
        Transport::Poll | Transport::LongPoll => {
            let hold = subscription.transport == Transport::LongPoll;
            let token_deadline = grants.as_ref().map_or(0, |g| g.deadline);
            return match transport::poll::answer(stream, server, subscription, hold, token_deadline).await {
                transport::poll::Answer::Respond(response) => Subscribed::Answer(response),
                transport::poll::Answer::ClientGone => Subscribed::Ended(Next::close(CloseReason::PeerClosed)),
            };
        }
        Transport::WebSocket { raw } => {
            match transport::websocket::open(head, &server.config(), subscription, raw, early_frames(buf)) {
                // Its ops are checked against what the token grants.
                Ok((bytes, mut setup)) => {
                    setup.extra = grants.map(|g| Box::new(crate::handover::Extra::Grants(Box::new(g))));
                    (bytes, setup)
                }
                Err(refusal) => return Subscribed::Answer(refusal),
            }
        }
        Transport::Sse => {
            transport::stream::open(server.config().sse_retry, head.version(), subscription, Format::Sse, None)
        }
        Transport::Stream => {
            transport::stream::open(server.config().sse_retry, head.version(), subscription, Format::Ndjson, None)
        }
        Transport::Iframe { callback } => transport::stream::open(
            server.config().sse_retry,
            head.version(),
            subscription,
            Format::Iframe,
            Some(callback),
        ),
    };
    let (bytes, setup) = opened;
    let deadline = Instant::now() + server.config().send_timeout;
    match write_all(stream, &[&bytes], deadline, &server.stats).await {
        Write::Done => {
            server.stats.responded(if setup.framing.format.is_websocket() { 101 } else { 200 });
            Subscribed::Streaming(setup)
        }
        Write::Timeout => Subscribed::Ended(Next::close(CloseReason::SendTimeout)),
        Write::Failed(e) => Subscribed::Ended(Next::close(io_close_reason(&e))),
    }
}

/// Frames a client sent right behind its upgrade request, in a buffer of their own size: the
/// read buffer (4 KiB) must not live on in an idle WebSocket subscriber.
fn early_frames(buf: &mut BytesMut) -> BytesMut {
    if buf.is_empty() {
        BytesMut::new()
    } else {
        BytesMut::from(&buf[..])
    }
}

/// `GET /_conformance/echo` upgraded to WebSocket (Autobahn).
async fn echo_websocket(stream: &mut TaskLink, server: &Server, head: &RequestHead, buf: &mut BytesMut) -> Next {
    let accept = match holdfast_proto::ws::handshake::validate(head) {
        Ok(accept) => accept,
        Err(e) => return send_final(stream, server, &transport::websocket::refusal(e), CloseReason::BadRequest).await,
    };
    let agreement = transport::websocket::negotiate_deflate(head, &server.config());
    let out = transport::websocket::switching_protocols(&accept, agreement, None, None);
    let deadline = Instant::now() + server.config().send_timeout;
    if !matches!(write_all(stream, &[&out], deadline, &server.stats).await, Write::Done) {
        return Next::close(CloseReason::PeerAborted);
    }
    server.stats.responded(101);
    let reason = transport::ws_echo::run(stream, server, std::mem::take(buf), agreement).await;
    Next::close(reason)
}

/// Reads until a whole request head is parsed, within `header_timeout`.
async fn read_head(stream: &mut TaskLink, server: &Server, buf: &mut BytesMut) -> Result<RequestHead, Next> {
    // Armed only when a read is needed: a request that arrived whole costs no clock read.
    let mut deadline = None;
    loop {
        let parsed = parse_request(buf, &server.limits());
        match parsed {
            Ok(Some(head)) => return Ok(head),
            Ok(None) => {}
            Err(e) => return Err(refuse(stream, server, e).await),
        }
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + server.config().header_timeout);
        match read_more(stream, buf, deadline, &server.stats).await {
            Read::Data => {}
            // Closing between requests is the normal end of a persistent connection.
            Read::Eof if buf.is_empty() => return Err(Next::close(CloseReason::PeerClosed)),
            Read::Eof => return Err(Next::close(CloseReason::PeerAborted)),
            Read::Failed(e) => return Err(Next::close(io_close_reason(&e))),
            Read::Timeout => {
                let response = Response::error(408, "header_timeout", "the request head was not received in time");
                return Err(send_final(stream, server, &response, CloseReason::HeaderTimeout).await);
            }
        }
    }
}

/// Answers a request that cannot be served, then closes (the byte stream can no longer be
/// trusted to hold a next request where we would look for it).
async fn refuse(stream: &mut TaskLink, server: &Server, error: ParseError) -> Next {
    let response = Response::error(error.status(), error.label(), error.reason());
    send_final(stream, server, &response, CloseReason::BadRequest).await
}

/// Sends a response that ends the connection.
async fn send_final(stream: &mut TaskLink, server: &Server, response: &Response, reason: CloseReason) -> Next {
    let mut head = BytesMut::new();
    response.encode_head(&mut head, Persistence::Close, Version::Http11, 0);
    let deadline = Instant::now() + server.config().send_timeout;
    match write_all(stream, &[&head, &response.body], deadline, &server.stats).await {
        Write::Done => {
            server.stats.responded(response.status);
            Next::Close { reason, linger: true }
        }
        Write::Timeout => Next::close(CloseReason::SendTimeout),
        Write::Failed(e) => Next::close(io_close_reason(&e)),
    }
}

/// Counts a plain request's latency (and a publish's) once its response is written: every
/// request but a subscription (whose answer may wait for messages by design).
fn observe_latency(server: &Server, route: Route, head_read: std::time::Instant) {
    if route == Route::Subscribe {
        return;
    }
    let took = head_read.elapsed();
    server.stats.latency.request.observe(took);
    if route == Route::Publish {
        server.stats.latency.publish.observe(took);
    }
}

/// Sends the response to a parsed request (counted by status once written). HEAD gets GET's
/// head and no body.
async fn send(
    stream: &mut TaskLink,
    server: &Server,
    response: &Response,
    head: &RequestHead,
    persistence: Persistence,
) -> Result<(), Next> {
    /// Bodies up to this size are copied behind the head and sent in one write.
    const COPY_BODY_MAX: usize = 8 * 1024;
    let mut out = BytesMut::new();
    response.encode_head(&mut out, persistence, head.version(), server.config().keepalive_timeout.as_secs());
    let with_body = head.method() != holdfast_proto::http1::Method::Head;
    if with_body && response.body.len() <= COPY_BODY_MAX {
        out.extend_from_slice(&response.body);
    }
    let body: &[u8] = if with_body && response.body.len() > COPY_BODY_MAX { &response.body } else { &[] };
    // Most responses fit the socket buffer: one try without arming the send timer.
    if body.is_empty() {
        match stream.try_write(&out) {
            Ok(n) if n == out.len() => {
                server.stats.sent(n);
                server.stats.responded(response.status);
                return Ok(());
            }
            Ok(n) => {
                server.stats.sent(n);
                let _ = out.split_to(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(Next::close(io_close_reason(&e))),
        }
    }
    let deadline = Instant::now() + server.config().send_timeout;
    let written = write_all(stream, &[&out, body], deadline, &server.stats).await;
    match written {
        Write::Done => {
            server.stats.responded(response.status);
            Ok(())
        }
        Write::Timeout => Err(Next::close(CloseReason::SendTimeout)),
        Write::Failed(e) => Err(Next::close(io_close_reason(&e))),
    }
}
