//! The graceful drain (issue 15, item 3), over real sockets: `/healthz` answers 503 at once and
//! the listener stays open to say so, new subscriptions get 503 with `Retry-After`, held long
//! polls are answered at once, and streaming subscribers are closed spread over `drain_seconds`,
//! each with its transport's reconnect signal; `run` returns when the last one is gone, even
//! while refused clients keep coming back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holdfast_testkit::{ws_upgrade_request, RawConn, TestServer};
use tokio::sync::Semaphore;

const SSE: usize = 800;
const WEBSOCKETS: usize = 800;
const LONG_POLLS: usize = 400;
const SPREAD: Duration = Duration::from_secs(4);
/// Connections being set up at once (the listen backlog stays far from full).
const SETUP_AT_ONCE: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sse,
    WebSocket,
    LongPoll,
}

/// What one subscriber saw of the drain: when its reconnect signal came.
struct Ended {
    kind: Kind,
    signal_at: Instant,
}

/// Subscribes, reports that it is set up, then waits for its transport's reconnect signal and
/// checks it: SSE a jittered `retry:`, the `holdfast.closed` notice (`shutdown`) and the last
/// chunk; WebSocket the notice then close 1012; a long poll its answer with a cursor.
async fn subscriber(server_addr: std::net::SocketAddr, kind: Kind, setup: Arc<Semaphore>) -> Ended {
    let permit = setup.acquire_owned().await.expect("semaphore");
    let mut conn = RawConn::connect(server_addr).await;
    match kind {
        Kind::Sse => {
            conn.send(b"GET /sub/drain?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n").await;
            let head = conn.stream_head().await;
            assert_eq!(head.status, 200, "{}", head.head);
            drop(permit);
            let mut seen = String::new();
            let mut signal_at = None;
            loop {
                let chunk = conn
                    .next_chunk_within(Duration::from_secs(12))
                    .await
                    .expect("the stream ended without its last chunk");
                if chunk.is_empty() {
                    break;
                }
                seen.push_str(&String::from_utf8_lossy(&chunk));
                if signal_at.is_none() && seen.contains("event: holdfast.closed") {
                    signal_at = Some(Instant::now());
                }
            }
            // The prelude's `retry: 2000`, then the drain's jittered one right before the notice.
            let notice = seen.find("event: holdfast.closed").expect("the closed notice");
            let retry = seen[..notice].rfind("retry: ").expect("a retry before the notice");
            assert!(retry > 0, "only the prelude's retry: {seen:?}");
            let millis: u64 = seen[retry + 7..].split('\n').next().unwrap().parse().expect("retry is a number");
            assert!((1000..3000).contains(&millis), "retry {millis} ms is not sse_retry (2 s) jittered by ±50 %");
            assert!(seen[notice..].contains("\"reason\":\"shutdown\""), "{seen:?}");
            assert!(conn.closes_within(Duration::from_secs(2)).await, "no FIN after the last chunk");
            Ended { kind, signal_at: signal_at.unwrap() }
        }
        Kind::WebSocket => {
            conn.send(ws_upgrade_request("/sub/drain", "").as_bytes()).await;
            let head = conn.stream_head().await;
            assert_eq!(head.status, 101, "{}", head.head);
            drop(permit);
            let mut notice = None;
            loop {
                let (_, opcode, payload) = conn.ws_frame_within(Duration::from_secs(12)).await.expect("no close frame");
                match opcode {
                    1 => notice = Some(String::from_utf8_lossy(&payload).into_owned()),
                    8 => {
                        let signal_at = Instant::now();
                        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1012, "close code");
                        let notice = notice.expect("the cursor notice before the close frame");
                        assert!(notice.contains("holdfast.closed") && notice.contains("shutdown"), "{notice}");
                        return Ended { kind, signal_at };
                    }
                    _ => {}
                }
            }
        }
        Kind::LongPoll => {
            conn.send(b"GET /sub/drain HTTP/1.1\r\nHost: t\r\n\r\n").await;
            drop(permit);
            let answer = conn.response().await;
            let signal_at = Instant::now();
            assert_eq!(answer.status, 200, "{}", answer.head);
            assert_eq!(answer.header("Connection"), Some("close"));
            let body = answer.json();
            assert!(body["cursor"].as_str().is_some_and(|c| !c.is_empty()), "{body}");
            Ended { kind, signal_at }
        }
    }
}

async fn get(server: &TestServer, request: &str) -> holdfast_testkit::RawResponse {
    let mut conn = server.connect().await;
    conn.send(request.as_bytes()).await;
    conn.response().await
}

/// Checks what a draining node answers someone new: 503 on `/healthz` and on a subscription
/// (SSE, WebSocket), with `Retry-After` and a readable reason; anything else still answered.
async fn assert_draining_answers(server: &TestServer) {
    let health = get(server, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(health.status, 503, "{}", health.head);
    assert_eq!(health.json()["error"], "draining");
    assert!(health.header("Retry-After").is_some());
    for request in [
        "GET /sub/other?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
        "GET /sub/other HTTP/1.1\r\nHost: t\r\n\r\n".to_string(),
        ws_upgrade_request("/sub/other", ""),
    ] {
        let refused = get(server, &request).await;
        assert_eq!(refused.status, 503, "{request}: {}", refused.head);
        assert_eq!(refused.json()["error"], "draining");
        assert!(refused.json()["reason"].as_str().is_some_and(|r| r.contains("draining")));
        let retry_after: u64 = refused.header("Retry-After").expect("Retry-After").parse().unwrap();
        assert!((1..=SPREAD.as_secs()).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(refused.header("Connection"), Some("close"));
    }
    let stats = get(server, "GET /admin/stats HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json()["draining"], true);
    assert_eq!(stats.header("Connection"), Some("close"));
}

/// What starts the drain.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    AdminDrain,
    /// The shutdown future `run` was given: SIGTERM in `holdfast serve`.
    Shutdown,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_drain_spreads_2000_subscribers_over_drain_seconds_and_answers_503_meanwhile() {
    drain_2000_subscribers(Trigger::AdminDrain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_spreads_2000_subscribers_over_drain_seconds_and_answers_503_meanwhile() {
    drain_2000_subscribers(Trigger::Shutdown).await;
}

async fn drain_2000_subscribers(trigger: Trigger) {
    holdfast_server::raise_fd_limit();
    let mut server = TestServer::start(|c| {
        c.drain_seconds = SPREAD;
        c.shutdown_timeout = Duration::from_secs(10);
        // Held long polls would not time out in this test by themselves.
        c.longpoll_timeout = Duration::from_secs(30);
        c.push_threads = 2;
    })
    .await;
    let setup = Arc::new(Semaphore::new(SETUP_AT_ONCE));
    let kinds = std::iter::repeat_n(Kind::Sse, SSE)
        .chain(std::iter::repeat_n(Kind::WebSocket, WEBSOCKETS))
        .chain(std::iter::repeat_n(Kind::LongPoll, LONG_POLLS));
    let subscribers: Vec<_> = kinds.map(|kind| tokio::spawn(subscriber(server.addr, kind, setup.clone()))).collect();
    // Every one is held by a push shard before the drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = server.stats().await;
        let held = ["sse", "websocket", "longpoll"].map(|t| stats["subscribers"][t].as_u64().unwrap_or(0));
        if held == [SSE as u64, WEBSOCKETS as u64, LONG_POLLS as u64] {
            break;
        }
        assert!(Instant::now() < deadline, "subscribers never all held: {held:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let started = Instant::now();
    match trigger {
        Trigger::AdminDrain => {
            let asked = get(&server, "POST /admin/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").await;
            assert_eq!(asked.status, 202, "{}", asked.text());
            assert_eq!(asked.json()["drain_seconds"], SPREAD.as_secs_f64());
        }
        Trigger::Shutdown => server.begin_shutdown(),
    }

    // Early and late in the drain, the listener is open and says the node is draining.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_draining_answers(&server).await;
    tokio::time::sleep(SPREAD.saturating_sub(started.elapsed()).saturating_sub(Duration::from_millis(700))).await;
    assert_draining_answers(&server).await;

    let mut ended = Vec::new();
    for subscriber in subscribers {
        ended.push(subscriber.await.expect("a subscriber failed its checks"));
    }
    // `run` returns once the last connection is gone (polled: TestServer owns the task).
    while !server.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(10), "run did not return within shutdown_timeout");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err(), "listener open after run returned");

    let since = |e: &Ended| e.signal_at.saturating_duration_since(started);
    let polls: Vec<Duration> = ended.iter().filter(|e| e.kind == Kind::LongPoll).map(since).collect();
    assert_eq!(polls.len(), LONG_POLLS);
    let slowest_poll = polls.iter().max().unwrap();
    assert!(*slowest_poll < Duration::from_secs(1), "a held long poll was answered {slowest_poll:?} into the drain");

    let streams: Vec<Duration> = ended.iter().filter(|e| e.kind != Kind::LongPoll).map(since).collect();
    assert_eq!(streams.len(), SSE + WEBSOCKETS);
    let seconds = SPREAD.as_secs() as usize;
    let mut buckets = vec![0usize; seconds + 1];
    for at in &streams {
        buckets[(at.as_secs() as usize).min(seconds)] += 1;
    }
    let share = streams.len() / seconds;
    println!(
        "{trigger:?}: closes per second of the drain: {buckets:?} (share {share}); last long poll answered after {slowest_poll:?}; run returned after {took:?}"
    );
    assert!(buckets[..seconds].iter().all(|&n| n <= 2 * share), "a second holds over twice its share: {buckets:?}");
    // The spread ends on time (slack for the clients, which share two cores with the server).
    let last = streams.iter().max().unwrap();
    assert!(*last < SPREAD + Duration::from_millis(1500), "a close came {last:?} into a {SPREAD:?} drain");
    assert!(took < SPREAD + Duration::from_secs(2), "run returned {took:?} after the drain began");
}

/// `count` NDJSON stream subscribers of `channel`, held by the server.
async fn stream_subscribers(server: &TestServer, channel: &str, count: usize) -> Vec<RawConn> {
    let mut streams = Vec::new();
    for _ in 0..count {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/{channel}?transport=stream HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()).await;
        assert_eq!(conn.stream_head().await.status, 200);
        streams.push(conn);
    }
    server.wait_for_subscribers(channel, count as u64).await;
    streams
}

/// The shutdown future (SIGTERM in `holdfast serve`) starts the same spread drain.
#[tokio::test]
async fn the_shutdown_signal_drains_with_the_same_spread() {
    let mut server = TestServer::start(|c| {
        c.drain_seconds = Duration::from_secs(1);
        c.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    let streams = stream_subscribers(&server, "sig", 20).await;
    let took = server.stop().await;
    for mut conn in streams {
        let all = String::from_utf8_lossy(&conn.read_to_close().await).into_owned();
        assert!(all.contains("holdfast.closed") && all.contains("shutdown") && all.ends_with("0\r\n\r\n"), "{all:?}");
    }
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "drain took {took:?}");
}

/// What a client that keeps subscribing to a draining node saw of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// The whole 503 `draining` answer.
    Refused,
    /// No connection: the listener is closed.
    NoListener,
    /// Connected, then reset or closed before a byte of an answer: a connection still in the
    /// listen backlog when the listener closed (the kernel resets those).
    ResetUnanswered,
    /// Part of an answer, then the end: a request cut in the middle.
    Cut,
}

/// Connects, waits `pause` (a client on a slow link), asks for a subscription, reads to the end.
async fn subscribe_once(addr: std::net::SocketAddr, pause: Duration) -> Attempt {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else { return Attempt::NoListener };
    tokio::time::sleep(pause).await;
    if stream.write_all(b"GET /sub/again?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n").await.is_err() {
        return Attempt::ResetUnanswered;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer or a close");
    let text = String::from_utf8_lossy(&answer);
    // Whole: the body its Content-Length announces.
    let whole = text.split_once("\r\n\r\n").is_some_and(|(head, body)| {
        let length = head.lines().find_map(|line| line.strip_prefix("Content-Length: ")?.parse::<usize>().ok());
        length == Some(body.len())
    });
    match read {
        _ if answer.is_empty() => Attempt::ResetUnanswered,
        Ok(_) if whole && text.starts_with("HTTP/1.1 503") && text.contains("draining") => Attempt::Refused,
        _ => Attempt::Cut,
    }
}

/// Clients closed by a drain come back at once, to the same node (no load balancer, or one that
/// has not taken it out yet), and keep at it: some connection is always open. The drain still
/// ends with its spread, not at `shutdown_timeout`, and no request is cut: the listener closes
/// once no subscriber is left, then the requests in flight are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_ends_with_its_spread_while_refused_clients_keep_coming_back() {
    const RETRIERS: usize = 16;
    let mut server = TestServer::start(|c| {
        c.drain_seconds = Duration::from_secs(1);
        c.shutdown_timeout = Duration::from_secs(8);
    })
    .await;
    let streams = stream_subscribers(&server, "again", 20).await;
    let started = Instant::now();
    server.begin_shutdown();
    let addr = server.addr;
    let retriers: Vec<_> = (0..RETRIERS)
        .map(|i| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                // Staggered, each connection open 20 ms before its request: never all closed.
                tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                loop {
                    let attempt = subscribe_once(addr, Duration::from_millis(20)).await;
                    seen.push(attempt);
                    if attempt == Attempt::NoListener {
                        return seen;
                    }
                }
            })
        })
        .collect();
    while !server.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(8), "run did not return within shutdown_timeout");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = started.elapsed();
    server.stop().await;
    let mut seen = Vec::new();
    for retrier in retriers {
        seen.extend(retrier.await.unwrap());
    }
    let count = |kind: Attempt| seen.iter().filter(|a| **a == kind).count();
    println!(
        "run returned {took:?} into a 1 s drain; attempts: {} refused, {} reset unanswered, {} cut",
        count(Attempt::Refused),
        count(Attempt::ResetUnanswered),
        count(Attempt::Cut)
    );
    assert!(count(Attempt::Refused) > RETRIERS * 10, "the clients came back: {seen:?}");
    assert_eq!(count(Attempt::Cut), 0, "a request was cut in the middle");
    assert!(took < Duration::from_millis(2500), "run returned {took:?} after a 1 s drain began");
    for mut conn in streams {
        let all = String::from_utf8_lossy(&conn.read_to_close().await).into_owned();
        assert!(all.contains("holdfast.closed") && all.ends_with("0\r\n\r\n"), "{all:?}");
    }
}

/// `POST /admin/drain` is an admin action: the `admin` claim when access control is on, and
/// never for a page of another origin.
#[tokio::test]
async fn admin_drain_needs_the_admin_right_and_a_same_origin_request() {
    let server = TestServer::start(|c| c.jwt_secret = "drain-test-secret-of-enough-length".into()).await;
    let refused = get(&server, "POST /admin/drain HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let cross = "POST /admin/drain HTTP/1.1\r\nHost: t\r\nOrigin: https://evil.example\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(get(&server, cross).await.status, 403);
    let wrong_method = get(&server, "GET /admin/drain HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.header("Allow"), Some("POST"));
    let health = get(&server, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(health.status, 200, "a refused drain request started a drain");
}
