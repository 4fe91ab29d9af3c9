//! Scale-out through Redis, over real sockets: several Holdfast nodes in this process pointing at
//! one real `redis-server` (or a three-master Redis Cluster) act as one server. A publish on any
//! node reaches subscribers of every transport on every node; cursors, `Last-Event-ID` and
//! long-poll cursors resume on any node (no sticky sessions); an SDK subscriber fails over from a
//! stopped node without a gap; a Redis restart costs publishers a 503 while it lasts and
//! subscribers nothing but, when Redis lost its streams, a gap notice; `GET /pub/{channel}`
//! counts the subscribers of every node.
//!
//! Each test starts its own Redis (testkit `redis`) and returns early, after one printed line,
//! when `redis-server` is not installed (`scripts/setup.sh` installs it). Every wait is bounded.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use holdfast_client::{Event, Gap, Heartbeat, State, Subscriber, Transport};
use holdfast_proto::sse;
use holdfast_server::Config;
use holdfast_testkit::fast_pacing as fast;
use holdfast_testkit::redis::{Persistence, RedisCluster, RedisServer};
use holdfast_testkit::{ws_upgrade_request, RawConn, RawResponse, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// Longest wait for one expected event. Longer than the testkit's: cross-node work includes the
/// nodes' once-a-second refreshes and Redis reconnections.
const WAIT: Duration = Duration::from_secs(15);

// ---- Nodes ----

/// `n` nodes on `broker`, each with [`fast`] pacing changed by `configure`, each connected to
/// Redis (see [`wait_until_connected`]).
async fn nodes_with(broker: &str, n: usize, configure: impl Fn(&mut Config)) -> Vec<TestServer> {
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let node = TestServer::start(|c| {
            fast(c);
            c.broker = broker.to_string();
            configure(c);
        })
        .await;
        wait_until_connected(&node).await;
        nodes.push(node);
    }
    nodes
}

/// Waits until a short poll on `node` is answered 200: a node serves requests as soon as it
/// listens, but answers those that need Redis with 503 `broker_unavailable` until its connection
/// is up.
async fn wait_until_connected(node: &TestServer) {
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = get(node, "/sub/connected?transport=poll").await;
        if answer.status == 200 {
            return;
        }
        assert_eq!(answer.status, 503, "{}", answer.text());
        assert_eq!(answer.json()["error"], "broker_unavailable", "{}", answer.text());
        assert!(Instant::now() < deadline, "{}: not connected to Redis within {WAIT:?}", node.addr);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn nodes(broker: &str, n: usize) -> Vec<TestServer> {
    nodes_with(broker, n, |_| {}).await
}

// ---- Requests ----

async fn request_at(addr: SocketAddr, text: &str) -> RawResponse {
    let mut conn = RawConn::connect(addr).await;
    conn.send(text.as_bytes()).await;
    conn.response().await
}

async fn get(node: &TestServer, target: &str) -> RawResponse {
    request_at(node.addr, &format!("GET {target} {GET}\r\n")).await
}

/// `POST /pub/{channel}` with `body`; the answer, whatever it is.
async fn try_publish_at(addr: SocketAddr, channel: &str, body: &str) -> RawResponse {
    request_at(addr, &format!("POST /pub/{channel} {GET}Content-Length: {}\r\n\r\n{body}", body.len())).await
}

/// Publishes and gives the message's id; panics unless the answer is 200.
async fn publish_at(addr: SocketAddr, channel: &str, body: &str) -> String {
    let answer = try_publish_at(addr, channel, body).await;
    assert_eq!(answer.status, 200, "publish {body:?} to {channel} on {addr}: {}", answer.text());
    answer.json()["id"].as_str().expect("id").to_string()
}

/// The channel's position now, from a short poll on `node`.
async fn cursor_now(node: &TestServer, channel: &str) -> String {
    let answer = get(node, &format!("/sub/{channel}?transport=poll")).await;
    assert_eq!(answer.status, 200, "poll {channel}: {}", answer.text());
    answer.json()["cursor"].as_str().expect("cursor").to_string()
}

/// `subscribers` of `GET /pub/{channel}` on `node` (None on a non-200 answer).
async fn subscribers(node: &TestServer, channel: &str) -> (Option<u64>, String) {
    let answer = get(node, &format!("/pub/{channel}")).await;
    let count = (answer.status == 200).then(|| answer.json()["subscribers"].as_u64()).flatten();
    (count, format!("{} {}", answer.status, answer.text()))
}

/// Polls `GET /pub/{channel}` on `node` until it reports `n` subscribers within `within`
/// (cluster-wide counts are refreshed by each node, so this may take a few seconds).
async fn wait_for_cluster_subscribers(node: &TestServer, channel: &str, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let (count, answer) = subscribers(node, channel).await;
        if count == Some(n) {
            return;
        }
        assert!(Instant::now() < deadline, "{}: {channel} never had {n} subscribers; last answer {answer}", node.addr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `/admin/stats` on `node` counts `n` local subscribers of `transport`.
async fn wait_for_local(node: &TestServer, transport: &str, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = node.stats().await;
        if stats["subscribers"][transport] == n {
            return;
        }
        assert!(Instant::now() < deadline, "{}: never {n} {transport} subscribers: {stats}", node.addr);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- Raw subscribers ----

/// Opens a streaming subscription on `node`, checks its head and reads its prelude (`retry:`, the
/// NDJSON newline or the iframe padding).
async fn open_stream(node: &TestServer, target: &str, extra: &str) -> RawConn {
    let mut conn = node.connect().await;
    conn.send(format!("GET {target} {GET}{extra}\r\n").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 200, "{target}: {}", head.head);
    conn.next_chunk().await;
    conn
}

/// `future`'s output, or a panic naming `what` after `WAIT` (heartbeats keep a quiet stream busy,
/// so reads that skip them need a deadline of their own).
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future).await.unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// SSE events until `count` have arrived (heartbeat comments skipped by the parser).
async fn sse_events(conn: &mut RawConn, parser: &mut sse::Parser, count: usize) -> Vec<sse::Event> {
    let mut events = Vec::new();
    within(&format!("{count} SSE events"), async {
        while events.len() < count {
            events.extend(parser.feed(&conn.next_chunk().await));
        }
    })
    .await;
    events
}

/// The next NDJSON envelope (heartbeat lines skipped).
async fn ndjson(conn: &mut RawConn) -> Value {
    within("an NDJSON envelope", async {
        loop {
            let chunk = String::from_utf8(conn.next_chunk().await).unwrap();
            if let Some(line) = chunk.lines().find(|l| !l.is_empty()) {
                return serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            }
        }
    })
    .await
}

/// The next iframe envelope, from `<script>parent.cb(…);</script>` (heartbeat comments skipped).
async fn iframe(conn: &mut RawConn) -> Value {
    within("an iframe envelope", async {
        loop {
            let chunk = String::from_utf8(conn.next_chunk().await).unwrap();
            let Some(script) = chunk.trim().strip_prefix("<script>parent.cb(") else { continue };
            let json = script.strip_suffix(");</script>").unwrap_or_else(|| panic!("not an iframe message: {chunk:?}"));
            return serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
        }
    })
    .await
}

/// The next WebSocket text frame as JSON (pings skipped).
async fn ws_json(conn: &mut RawConn) -> Value {
    within("a WebSocket message", async {
        loop {
            let (_, opcode, payload) = conn.ws_frame().await;
            if opcode == PING {
                continue;
            }
            assert_eq!(opcode, TEXT, "payload {:?}", String::from_utf8_lossy(&payload));
            return serde_json::from_slice(&payload).unwrap();
        }
    })
    .await
}

/// Asserts an envelope: a message of `channel` with this id, event type and data.
fn assert_envelope(envelope: &Value, channel: &str, id: &str, event: &str, data: &str, what: &str) {
    assert_eq!(envelope["channel"], channel, "{what}: {envelope}");
    assert_eq!(envelope["event"], event, "{what}: {envelope}");
    assert_eq!(envelope["data"], data, "{what}: {envelope}");
    assert_eq!(envelope["id"], id, "{what}: the id the publishing node answered: {envelope}");
}

// ---- Delivery across nodes, every transport ----

/// Subscribers of every transport on node A; two publishes on node B reach each of them, with the
/// ids node B answered (positions come from Redis, so they are the same on every node).
async fn deliver_across_nodes_on_every_transport(broker: &str) {
    let nodes = nodes(broker, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let channel = "across";
    let mut sse = open_stream(a, "/sub/across", "Accept: text/event-stream\r\n").await;
    let mut stream = open_stream(a, "/sub/across?transport=stream", "").await;
    let mut frame = open_stream(a, "/sub/across?transport=iframe&callback=cb", "").await;
    let mut ws = a.upgrade("/sub/across").await;
    let cursor = cursor_now(a, channel).await;
    let mut poll = a.connect().await;
    poll.send(format!("GET /sub/across?cursor={cursor} {GET}\r\n").as_bytes()).await;
    for (transport, n) in [("sse", 1), ("stream", 1), ("iframe", 1), ("websocket", 1), ("longpoll", 1)] {
        wait_for_local(a, transport, n).await;
    }

    let first = publish_at(b.addr, &format!("{channel}?event=note"), "first from b").await;
    let second = publish_at(b.addr, channel, "second from b").await;

    let events = sse_events(&mut sse, &mut sse::Parser::default(), 2).await;
    assert_eq!(
        (events[0].id.as_str(), events[0].event.as_str(), events[0].data.as_str()),
        (&*first, "note", "first from b")
    );
    assert_eq!(
        (events[1].id.as_str(), events[1].event.as_str(), events[1].data.as_str()),
        (&*second, "message", "second from b")
    );
    for (what, one, two) in [
        ("stream", ndjson(&mut stream).await, ndjson(&mut stream).await),
        ("iframe", iframe(&mut frame).await, iframe(&mut frame).await),
        ("websocket", ws_json(&mut ws).await, ws_json(&mut ws).await),
    ] {
        assert_envelope(&one, channel, &first, "note", "first from b", what);
        assert_envelope(&two, channel, &second, "message", "second from b", what);
    }
    // The held long poll is answered with the first message (and the second, if it came in time).
    let answer = poll.response().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    let messages = body["messages"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert!(!messages.is_empty(), "the long poll on A was answered without B's message: {body}");
    assert_envelope(&messages[0], channel, &first, "note", "first from b", "longpoll");
    if let Some(next) = messages.get(1) {
        assert_envelope(next, channel, &second, "message", "second from b", "longpoll");
    }
    assert!(body.get("gap").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_every_transport_on_another_node() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    deliver_across_nodes_on_every_transport(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_publish_on_one_node_reaches_every_transport_on_another_node() {
    let Some(cluster) = RedisCluster::start().await else { return };
    deliver_across_nodes_on_every_transport(&cluster.url()).await;
}

// ---- Long polls across nodes ----

/// One long-poll cursor used alternately on A and B while a publisher alternates between them
/// too: every message exactly once, in publish order, and never a gap.
async fn alternate_long_polls_between_nodes(broker: &str) {
    const MESSAGES: u32 = 60;
    let nodes = nodes_with(broker, 2, |c| c.longpoll_timeout = Duration::from_secs(1)).await;
    let channel = "alternate";
    let mut cursor = cursor_now(&nodes[0], channel).await;
    let addrs = [nodes[0].addr, nodes[1].addr];
    let publisher = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..MESSAGES {
            let node = i as usize % 2;
            ids.push(format!("{i} on node {node}: {}", publish_at(addrs[node], channel, &i.to_string()).await));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ids
    });
    let last = (MESSAGES - 1).to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got: Vec<String> = Vec::new();
    // Each poll: which node, the cursor it was given, what it answered (data@id), the next cursor.
    let mut trace: Vec<String> = Vec::new();
    while !got.contains(&last) {
        assert!(Instant::now() < deadline, "after {} polls only {got:?}; polls:\n{}", trace.len(), trace.join("\n"));
        let n = trace.len() % 2;
        let answer = get(&nodes[n], &format!("/sub/{channel}?cursor={cursor}")).await;
        let what = format!("poll {} on node {n} with cursor {cursor}", trace.len());
        assert_eq!(answer.status, 200, "{what}: {}", answer.text());
        let body = answer.json();
        assert!(body.get("gap").is_none(), "{what}: a gap: {body}");
        let mut answered = Vec::new();
        for message in body["messages"].as_array().unwrap() {
            let data = message["data"].as_str().unwrap_or_default().to_string();
            answered.push(format!("{data}@{}", message["id"].as_str().unwrap_or_default()));
            got.push(data);
        }
        let next = body["cursor"].as_str().expect("cursor").to_string();
        trace.push(format!("{what}: [{}] -> {next}", answered.join(", ")));
        cursor = next;
    }
    let published = publisher.await.expect("publisher");
    let want: Vec<String> = (0..MESSAGES).map(|i| i.to_string()).collect();
    assert_eq!(
        got,
        want,
        "every message exactly once, in order, over {} polls:\n{}\npublished:\n{}",
        trace.len(),
        trace.join("\n"),
        published.join("\n")
    );
    for node in &nodes {
        let rest = get(node, &format!("/sub/{channel}?transport=poll&cursor={cursor}")).await.json();
        assert_eq!(rest["messages"], serde_json::json!([]), "{}: nothing after the last cursor: {rest}", node.addr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_alternating_between_nodes_gets_every_message_once_in_order() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    alternate_long_polls_between_nodes(&redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_long_poll_alternating_between_nodes_gets_every_message_once_in_order() {
    let Some(cluster) = RedisCluster::start().await else { return };
    alternate_long_polls_between_nodes(&cluster.url()).await;
}

/// A long poll held on one node is answered within a second of a publish on the other (both
/// ways), with that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_held_on_one_node_is_answered_promptly_by_a_publish_on_another() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let nodes = nodes_with(&redis.url(), 2, |c| c.longpoll_timeout = Duration::from_secs(10)).await;
    for (round, (held, publishing)) in [(0, 1), (1, 0), (0, 1)].into_iter().enumerate() {
        let (held, publishing) = (&nodes[held], &nodes[publishing]);
        let cursor = cursor_now(held, "prompt").await;
        let mut conn = held.connect().await;
        conn.send(format!("GET /sub/prompt?cursor={cursor} {GET}\r\n").as_bytes()).await;
        wait_for_local(held, "longpoll", 1).await;
        let body = format!("round {round}");
        let published = Instant::now();
        let id = publish_at(publishing.addr, "prompt", &body).await;
        let answer = conn.response().await;
        let took = published.elapsed();
        let json = answer.json();
        assert_eq!(json["messages"][0]["data"], body.as_str(), "round {round}: {json}");
        assert_eq!(json["cursor"], id.as_str(), "round {round}: {json}");
        assert!(took < Duration::from_secs(1), "round {round}: the held poll was answered after {took:?}");
    }
}

// ---- SSE resume across nodes ----

/// An SSE stream on A receives some messages and drops; the browser's reconnection lands on B
/// with `Last-Event-ID`: exactly the messages after that id, published on either node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_on_another_node_with_last_event_id() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let nodes = nodes(&redis.url(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut conn = open_stream(a, "/sub/resume", "Accept: text/event-stream\r\n").await;
    wait_for_local(a, "sse", 1).await;
    let mut ids = Vec::new();
    for i in 1..=5 {
        ids.push(publish_at(b.addr, "resume", &format!("m{i}")).await);
    }
    let seen = sse_events(&mut conn, &mut sse::Parser::default(), 3).await;
    let seen: Vec<(&str, &str)> = seen.iter().map(|e| (e.id.as_str(), e.data.as_str())).collect();
    assert_eq!(seen, [(&*ids[0], "m1"), (&*ids[1], "m2"), (&*ids[2], "m3")]);
    drop(conn);
    for i in 6..=8 {
        ids.push(publish_at(a.addr, "resume", &format!("m{i}")).await);
    }
    let last_event_id = format!("Accept: text/event-stream\r\nLast-Event-ID: {}\r\n", ids[2]);
    let mut conn = open_stream(b, "/sub/resume", &last_event_id).await;
    let events = sse_events(&mut conn, &mut sse::Parser::default(), 5).await;
    let got: Vec<(String, String, String)> = events.into_iter().map(|e| (e.id, e.event, e.data)).collect();
    let want: Vec<(String, String, String)> =
        (4..=8).map(|i| (ids[i - 1].clone(), "message".to_string(), format!("m{i}"))).collect();
    assert_eq!(got, want, "exactly the messages after Last-Event-ID, no gap notice");
    let more = conn.next_chunk_within(Duration::from_millis(300)).await;
    assert!(more.as_deref().is_none_or(|c| c == b":\n\n"), "more than published: {:?}", more.map(String::from_utf8));
}

// ---- SDK subscribers ----

/// What an SDK subscriber yielded, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A message whose payload is this number.
    Message(u32),
    Gap(Gap),
    Closed(String),
    Connected(String),
    Reconnecting(String),
    /// The subscriber yielded an error or ended (it should do neither here).
    Failed(String),
}

/// An SDK subscriber read in a task of its own; what it yields is kept for the test to check.
struct Watched {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Watched {
    fn spawn(mut sub: Subscriber) -> Watched {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let item = match sub.next().await {
                    Some(Ok(Event::Message(m))) => {
                        let text = m.text().unwrap_or_default();
                        match text.parse() {
                            Ok(n) => Seen::Message(n),
                            Err(_) => Seen::Failed(format!("unexpected payload {text:?}")),
                        }
                    }
                    Some(Ok(Event::Gap(gap))) => Seen::Gap(gap),
                    Some(Ok(Event::Closed { reason, .. })) => Seen::Closed(reason),
                    Some(Ok(Event::State(State::Connected { server, .. }))) => Seen::Connected(server),
                    Some(Ok(Event::State(State::Reconnecting { cause, .. }))) => Seen::Reconnecting(cause),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => Seen::Failed(format!("error: {e}")),
                    None => Seen::Failed("the subscriber ended".into()),
                };
                let stop = matches!(item, Seen::Failed(_));
                record.lock().unwrap().push(item);
                if stop {
                    return;
                }
            }
        });
        Watched { seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn numbers(&self) -> Vec<u32> {
        self.seen().iter().filter_map(|s| if let Seen::Message(n) = s { Some(*n) } else { None }).collect()
    }

    fn connections(&self) -> Vec<String> {
        self.seen()
            .iter()
            .filter_map(|s| if let Seen::Connected(server) = s { Some(server.clone()) } else { None })
            .collect()
    }

    /// Waits until `done` holds for what was seen; panics (with everything seen) after `WAIT` or
    /// when the subscriber failed.
    async fn wait(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.seen();
            if done(&seen) {
                return;
            }
            assert!(!seen.iter().any(|s| matches!(s, Seen::Failed(_))), "{what}: the subscriber failed: {seen:?}");
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}; seen {seen:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An SDK subscriber with test pacing (1 s heartbeats watched with k = 2, 50 ms backoff base).
fn sdk_subscriber(servers: &[String], channel: &str, transport: Transport) -> Watched {
    let sub = Subscriber::builder()
        .servers(servers.iter().cloned())
        .channel(channel)
        .transport(transport)
        .heartbeat(Heartbeat::Fixed(Duration::from_secs(1)))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .connect_timeout(Duration::from_secs(2))
        .poll_interval(Duration::from_millis(100))
        .build()
        .expect("subscriber");
    Watched::spawn(sub)
}

/// Publishes 0, 1, 2, … every 10 ms, round-robin over `addrs`, until stopped; counts what it did.
struct Publishing {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<PublishLog>>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default, Clone)]
struct PublishLog {
    /// Numbers whose publish was answered 200, in order.
    acked: Vec<u32>,
    /// Numbers whose publish was answered 503 `broker_unavailable`, in order.
    unavailable: Vec<u32>,
    /// Anything else (each fails the test).
    unexpected: Vec<String>,
}

impl Publishing {
    fn start(addrs: Vec<SocketAddr>, channel: &'static str) -> Publishing {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(PublishLog::default()));
        let (stopping, logging) = (stop.clone(), log.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u32;
            while !stopping.load(Ordering::Relaxed) {
                let addr = addrs[i as usize % addrs.len()];
                let answer = try_publish_at(addr, channel, &i.to_string()).await;
                {
                    let mut log = logging.lock().unwrap();
                    match answer.status {
                        200 => log.acked.push(i),
                        503 if answer.json()["error"] == "broker_unavailable" => log.unavailable.push(i),
                        _ => log.unexpected.push(format!("{i} on {addr}: {} {}", answer.status, answer.text())),
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Publishing { stop, log, task }
    }

    fn log(&self) -> PublishLog {
        let log = self.log.lock().unwrap().clone();
        assert!(log.unexpected.is_empty(), "unexpected publish answers: {:?}", log.unexpected);
        log
    }

    /// Waits until `done` holds for the log; panics after `within`.
    async fn wait(&self, what: &str, within: Duration, done: impl Fn(&PublishLog) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let log = self.log();
            if done(&log) {
                return;
            }
            assert!(!self.task.is_finished(), "{what}: the publisher stopped (panicked?)");
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; {} acked, {} unavailable",
                log.acked.len(),
                log.unavailable.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops publishing; gives the final log.
    async fn finish(self) -> PublishLog {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(WAIT, self.task).await.expect("the publisher stops").expect("the publisher panicked");
        let log = self.log.lock().unwrap().clone();
        assert!(log.unexpected.is_empty(), "unexpected publish answers: {:?}", log.unexpected);
        log
    }
}

/// Every acknowledged message arrived once and in order, except where a gap notice for `channel`
/// stands between the messages around the missing ones. Nothing else arrived, but for at most
/// one refused publish: the one in flight when Redis went away may have been applied there
/// although its answer was lost (a 503 cannot tell).
fn assert_every_message_or_a_gap(who: &str, seen: &[Seen], log: &PublishLog, channel: &str) {
    let acked = &log.acked;
    let refused_but_delivered: Vec<u32> = seen
        .iter()
        .filter_map(|s| if let Seen::Message(n) = s { Some(*n) } else { None })
        .filter(|n| log.unavailable.contains(n))
        .collect();
    let mut distinct = refused_but_delivered.clone();
    distinct.dedup();
    assert!(
        refused_but_delivered.len() <= 1 && distinct.len() == refused_but_delivered.len(),
        "{who}: refused publishes delivered (at most one, once): {refused_but_delivered:?}: {seen:?}"
    );
    if !refused_but_delivered.is_empty() {
        println!(
            "{who}: got {refused_but_delivered:?}, whose publish was answered 503 (in flight when Redis went away)"
        );
    }
    let mut previous: Option<u32> = None;
    let mut gap_since = false;
    for item in seen {
        match item {
            Seen::Gap(gap) => {
                assert_eq!(gap.channel, channel, "{who}: a gap for another channel: {seen:?}");
                gap_since = true;
            }
            Seen::Message(n) if refused_but_delivered.contains(n) => {
                // Its outcome was unknown when it was refused: Redis may apply it once its
                // connection is back, after publishes made meanwhile on other nodes. Once only
                // (checked above); its place in the order is Redis's.
            }
            Seen::Message(n) => {
                let known = acked.contains(n) || refused_but_delivered.contains(n);
                assert!(known, "{who}: got {n}, whose publish was not acknowledged: {seen:?}");
                assert!(previous.is_none_or(|p| p < *n), "{who}: {n} after {previous:?} (order, duplicates): {seen:?}");
                // The subscribers connect before publishing starts: every message is owed.
                let missing: Vec<u32> =
                    acked.iter().copied().filter(|a| previous.is_none_or(|p| *a > p) && a < n).collect();
                if !missing.is_empty() {
                    assert!(gap_since, "{who}: {missing:?} lost silently between {previous:?} and {n}: {seen:?}");
                }
                previous = Some(*n);
                gap_since = false;
            }
            Seen::Failed(what) => panic!("{who}: {what}: {seen:?}"),
            _ => {}
        }
    }
    assert_eq!(previous, acked.last().copied(), "{who}: did not get the last acknowledged message: {seen:?}");
}

/// SDK subscribers (SSE, WebSocket, long poll) on node A with B as their failover; node A stops
/// while B keeps publishing: each moves to B and resumes from its cursor, with no gap, every
/// message once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_subscribers_fail_over_to_another_node_without_a_gap() {
    sdk_subscribers_move_to_another_node(Leave::Stop).await;
}

/// The same when node A drains (`POST /admin/drain`, closes spread over `drain_seconds`): each
/// subscriber gets its transport's reconnect signal, finds A refusing new subscriptions (503)
/// and resumes on B without loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_subscribers_resume_on_another_node_when_one_drains() {
    sdk_subscribers_move_to_another_node(Leave::Drain).await;
}

/// How node A goes away.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Leave {
    /// Stopped at once (`drain_seconds = 0`).
    Stop,
    /// Drained over 2 s.
    Drain,
}

async fn sdk_subscribers_move_to_another_node(leave: Leave) {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let mut nodes = nodes_with(&redis.url(), 2, |c| {
        if leave == Leave::Drain {
            c.drain_seconds = Duration::from_secs(2);
            c.shutdown_timeout = Duration::from_secs(5);
        }
    })
    .await;
    let servers = [nodes[0].url(""), nodes[1].url("")];
    let channel = "failover";
    let subs: Vec<(Transport, Watched)> = [Transport::Sse, Transport::Ws, Transport::LongPoll]
        .into_iter()
        .map(|t| (t, sdk_subscriber(&servers, channel, t)))
        .collect();
    for (transport, sub) in &subs {
        sub.wait(&format!("{transport} connects"), |seen| seen.iter().any(|s| matches!(s, Seen::Connected(_)))).await;
        assert_eq!(sub.connections(), [servers[0].clone()], "{transport} starts on A");
    }
    let publishing = Publishing::start(vec![nodes[1].addr], channel);
    for (transport, sub) in &subs {
        sub.wait(&format!("{transport} gets 20 messages on A"), |_| sub.numbers().len() >= 20).await;
    }
    let took = match leave {
        Leave::Stop => nodes[0].stop().await,
        Leave::Drain => {
            let started = Instant::now();
            let answer = request_at(nodes[0].addr, &format!("POST /admin/drain {GET}Content-Length: 0\r\n\r\n")).await;
            assert_eq!(answer.status, 202, "{}", answer.text());
            started.elapsed()
        }
    };
    for (transport, sub) in &subs {
        // A draining node still serves its subscribers until their turn in the spread.
        sub.wait(&format!("{transport} moves to B"), |_| sub.connections().last() == Some(&servers[1])).await;
        let on_b = publishing.log().acked.len();
        let what = format!("{transport} gets 20 messages on B");
        sub.wait(&what, |_| sub.numbers().last().is_some_and(|n| *n as usize >= on_b + 20)).await;
        assert_eq!(sub.connections().last(), Some(&servers[1]), "{transport} stays on B: {:?}", sub.seen());
    }
    let log = publishing.finish().await;
    assert!(log.unavailable.is_empty(), "B kept publishing: {:?} refused", log.unavailable);
    let last = *log.acked.last().unwrap();
    for (transport, sub) in &subs {
        sub.wait(&format!("{transport} gets the last message"), |_| sub.numbers().last() == Some(&last)).await;
        let seen = sub.seen();
        assert!(!seen.iter().any(|s| matches!(s, Seen::Gap(_) | Seen::Failed(_))), "{transport}: {seen:?}");
        // Connected before the first publish: everything from 0 is owed.
        let want: Vec<u32> = (0..=last).collect();
        assert_eq!(
            sub.numbers(),
            want,
            "{transport}: every message once, in order, across the failover (A stopped in {took:?})"
        );
    }
}

/// Redis goes away while two nodes publish and serve SDK subscribers, then comes back on the same
/// port (with its data or without): while it is gone every publish is refused with 503
/// `broker_unavailable` and the subscribers stay connected; then publishes succeed again by
/// themselves, and each subscriber gets every message or, where messages were lost, a gap naming
/// the channel.
async fn restart_redis_while_publishing(persistence: Persistence) {
    let Some(mut redis) = RedisServer::start(persistence).await else { return };
    let nodes = nodes(&redis.url(), 2).await;
    let (a, b) = (nodes[0].url(""), nodes[1].url(""));
    let channel = "outage";
    let subs = [
        ("sse on A", sdk_subscriber(&[a.clone(), b.clone()], channel, Transport::Sse)),
        ("ws on B", sdk_subscriber(&[b, a], channel, Transport::Ws)),
    ];
    for (who, sub) in &subs {
        sub.wait(&format!("{who} connects"), |seen| seen.iter().any(|s| matches!(s, Seen::Connected(_)))).await;
    }
    let publishing = Publishing::start(nodes.iter().map(|n| n.addr).collect(), channel);
    for (who, sub) in &subs {
        sub.wait(&format!("{who} gets 10 messages"), |_| sub.numbers().len() >= 10).await;
    }

    let before_outage: Vec<usize> = subs.iter().map(|(_, sub)| sub.seen().len()).collect();
    redis.stop().await;
    let stopped = Instant::now();
    publishing.wait("publishes refused while Redis is down", WAIT, |log| log.unavailable.len() >= 5).await;
    tokio::time::sleep(Duration::from_secs(2).saturating_sub(stopped.elapsed())).await;
    let during = publishing.log();
    for ((who, sub), before) in subs.iter().zip(&before_outage) {
        let outage = sub.seen()[*before..].to_vec();
        assert!(
            !outage.iter().any(|s| matches!(s, Seen::Closed(_) | Seen::Reconnecting(_) | Seen::Failed(_))),
            "{who}: stays connected while Redis is down: {outage:?}"
        );
    }

    redis.restart().await;
    let restarted = Instant::now();
    let acked_at_restart = during.acked.len();
    publishing
        .wait("publishes succeed again after Redis came back", Duration::from_secs(20), |log| {
            log.acked.len() >= acked_at_restart + 30
        })
        .await;
    let recovered = restarted.elapsed();
    let log = publishing.finish().await;
    assert!(log.unavailable.len() >= 5, "{log:?}");
    for (who, sub) in &subs {
        let last = *log.acked.last().unwrap();
        sub.wait(&format!("{who} gets the last message"), |_| sub.numbers().last() == Some(&last)).await;
        let seen = sub.seen();
        assert_every_message_or_a_gap(who, &seen, &log, channel);
        let gaps = seen.iter().filter(|s| matches!(s, Seen::Gap(_))).count();
        match persistence {
            Persistence::AppendOnly => {
                assert_eq!(gaps, 0, "{who}: Redis kept its streams (appendonly), so nothing was lost: {seen:?}")
            }
            Persistence::None => {
                assert!(gaps >= 1, "{who}: Redis lost its streams: the old cursor gets a gap notice: {seen:?}")
            }
        }
    }
    println!("publishing recovered {recovered:?} after Redis restarted; {} refused", log.unavailable.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_appendonly_loses_nothing() {
    restart_redis_while_publishing(Persistence::AppendOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_yields_a_gap_never_silence() {
    restart_redis_while_publishing(Persistence::None).await;
}

// ---- Many subscribers over three nodes ----

/// A raw WebSocket subscriber (`?format=raw`: the payload is the frame) reading its own socket
/// with one buffer, cheap enough for a thousand in one test.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn connect(addr: SocketAddr, target: &str) -> RawWs {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(ws_upgrade_request(target, "").as_bytes()).await.expect("send the upgrade");
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("a 101 in time").expect("read");
            assert!(n > 0, "closed before the 101: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        };
        assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf[..head_end]));
        buf.drain(..head_end);
        RawWs { stream, buf }
    }

    /// Reads data frames (numbers) until `count` arrived; gives them in the order they came.
    async fn numbers(mut self, count: usize) -> Result<Vec<u32>, String> {
        let mut got = Vec::with_capacity(count);
        let mut chunk = vec![0u8; 16 * 1024];
        loop {
            let mut at = 0;
            while let Some((opcode, payload, len)) = frame_at(&self.buf[at..]) {
                match opcode {
                    TEXT | BINARY => {
                        let text = String::from_utf8_lossy(payload);
                        got.push(text.parse().map_err(|_| format!("got {text:?} after {} messages", got.len()))?);
                    }
                    CLOSE => {
                        return Err(format!(
                            "closed after {} messages: {:?}",
                            got.len(),
                            String::from_utf8_lossy(payload)
                        ))
                    }
                    _ => {}
                }
                at += len;
            }
            self.buf.drain(..at);
            if got.len() >= count {
                return Ok(got);
            }
            let n = self.stream.read(&mut chunk).await.map_err(|e| format!("after {} messages: {e}", got.len()))?;
            if n == 0 {
                return Err(format!("connection closed after {} messages", got.len()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The unmasked server frame at the start of `buf`: opcode, payload and its whole length.
fn frame_at(buf: &[u8]) -> Option<(u8, &[u8], usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, header) = match buf[1] & 0x7f {
        126 => (u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let payload = buf.get(header..header + len)?;
    Some((buf[0] & 0x0f, payload, header + len))
}

/// Three nodes, a thousand WebSocket subscribers spread over them, a thousand messages published
/// through the three nodes at once (each node's share in sequence): every subscriber gets every
/// message once, each node's share in its publish order, and all subscribers in the same order
/// (the order Redis gave them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_on_three_nodes_get_a_thousand_messages_in_order() {
    const SUBSCRIBERS: usize = 1000;
    const MESSAGES: u32 = 1000;
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let started = Instant::now();
    // Default heartbeats (these clients never answer a ping); history for every message.
    let nodes = nodes_with(&redis.url(), 3, |c| {
        c.heartbeat_interval = Duration::from_secs(25);
        c.history_messages = 5000;
    })
    .await;
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let ws = RawWs::connect(nodes[i % nodes.len()].addr, "/sub/many?format=raw").await;
        readers.push(tokio::spawn(ws.numbers(MESSAGES as usize)));
    }
    for (i, node) in nodes.iter().enumerate() {
        let local = (SUBSCRIBERS + nodes.len() - 1 - i) / nodes.len();
        wait_for_local(node, "websocket", local as u64).await;
    }
    let subscribed = started.elapsed();
    // Node k publishes k, k + 3, k + 6, … over one keep-alive connection, one after the other.
    let shares = nodes.len() as u32;
    let publishers: Vec<JoinHandle<()>> = (0..shares)
        .map(|k| {
            let addr = nodes[k as usize].addr;
            tokio::spawn(async move {
                let mut conn = RawConn::connect(addr).await;
                for i in (k..MESSAGES).step_by(shares as usize) {
                    let body = i.to_string();
                    let head = format!("POST /pub/many {GET}Content-Length: {}\r\n\r\n{body}", body.len());
                    conn.send(head.as_bytes()).await;
                    let answer = conn.response().await;
                    assert_eq!(answer.status, 200, "publish {i} on node {k}: {}", answer.text());
                    if answer.header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close")) {
                        conn = RawConn::connect(addr).await;
                    }
                }
            })
        })
        .collect();
    for publisher in publishers {
        tokio::time::timeout(Duration::from_secs(30), publisher).await.expect("publishing in time").expect("publisher");
    }
    let published = started.elapsed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut failures = Vec::new();
    let mut first_order: Option<Vec<u32>> = None;
    for (i, reader) in readers.into_iter().enumerate() {
        let node = i % nodes.len();
        let got = match tokio::time::timeout_at(deadline, reader).await {
            Ok(Ok(Ok(got))) => got,
            Ok(Ok(Err(e))) => {
                failures.push(format!("subscriber {i} (node {node}): {e}"));
                continue;
            }
            Ok(Err(e)) => panic!("subscriber {i}: {e}"),
            Err(_) => {
                failures.push(format!("subscriber {i} (node {node}): not all messages in time"));
                continue;
            }
        };
        let mut sorted = got.clone();
        sorted.sort_unstable();
        if sorted != (0..MESSAGES).collect::<Vec<_>>() {
            failures.push(format!("subscriber {i} (node {node}): not every message exactly once: {got:?}"));
            continue;
        }
        for k in 0..shares {
            let share: Vec<u32> = got.iter().copied().filter(|n| n % shares == k).collect();
            if share.windows(2).any(|w| w[0] > w[1]) {
                failures.push(format!("subscriber {i} (node {node}): node {k}'s messages out of order: {share:?}"));
            }
        }
        match &first_order {
            None => first_order = Some(got),
            Some(first) if *first != got => {
                let at = first.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(0);
                failures.push(format!(
                    "subscriber {i} (node {node}): another order than subscriber 0 from index {at}: {:?} vs {:?}",
                    &got[at..(at + 5).min(got.len())],
                    &first[at..(at + 5).min(first.len())]
                ));
            }
            Some(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {SUBSCRIBERS} subscribers failed; first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    println!(
        "{SUBSCRIBERS} subscribed in {subscribed:?}, {MESSAGES} published by {published:?}, all delivered by {:?}",
        started.elapsed()
    );
}

// ---- Subscriber counts ----

/// `GET /pub/{channel}` on any node counts the subscribers of every node, and follows them as they
/// leave and as a node goes away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_info_on_any_node_counts_the_subscribers_of_every_node() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let mut nodes = nodes(&redis.url(), 3).await;
    let channel = "counted";
    publish_at(nodes[2].addr, channel, "exists").await;
    let mut on_a = Vec::new();
    for _ in 0..2 {
        on_a.push(open_stream(&nodes[0], "/sub/counted", "Accept: text/event-stream\r\n").await);
    }
    let mut on_b = Vec::new();
    for _ in 0..3 {
        on_b.push(open_stream(&nodes[1], "/sub/counted?transport=stream", "").await);
    }
    let on_c = nodes[2].upgrade("/sub/counted").await;
    for node in &nodes {
        wait_for_cluster_subscribers(node, channel, 6, WAIT).await;
    }
    drop(on_b);
    for node in &nodes {
        wait_for_cluster_subscribers(node, channel, 3, WAIT).await;
    }
    // A node that goes away takes its count with it (its subscribers leave, or its refresh stops
    // and the count expires: allow for a TTL of several seconds).
    nodes[2].stop().await;
    drop(on_c);
    for node in &nodes[..2] {
        wait_for_cluster_subscribers(node, channel, 2, Duration::from_secs(25)).await;
    }
    drop(on_a);
    for node in &nodes[..2] {
        wait_for_cluster_subscribers(node, channel, 0, WAIT).await;
    }
}

// ---- WebSocket ops that wait on Redis ----

/// The WebSocket `subscribe` op for a channel its node does not hold yet (opened on the runtime,
/// answered back on the push shard) and the `publish` op (a round trip to Redis) work across
/// nodes, and a ping op sent behind them is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_subscribe_and_publish_ops_wait_on_redis_and_answer() {
    let Some(mut redis) = RedisServer::start(Persistence::None).await else { return };
    let nodes = nodes_with(&redis.url(), 2, |c| c.ws_client_publish = true).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Some history first, published on B: A has never held the channel.
    let earlier = publish_at(b.addr, "wsops", "earlier").await;

    let mut subscriber = a.upgrade("/sub").await;
    let op = r#"{"op":"subscribe","channels":["wsops"],"history":5}"#;
    subscriber.ws_send(TEXT, op.as_bytes()).await;
    subscriber.ws_send(TEXT, br#"{"op":"ping"}"#).await;
    let mut answers = Vec::new();
    while answers.len() < 3 {
        answers.push(ws_json(&mut subscriber).await);
    }
    // The ping may be answered first (the subscribe waited on Redis); the history comes after
    // the subscribe's answer.
    let position = |op: &str| answers.iter().position(|a| a["op"] == op).unwrap_or_else(|| panic!("{answers:?}"));
    let subscribed = position("subscribed");
    assert!(answers.iter().any(|a| a["op"] == "pong"), "{answers:?}");
    assert_eq!(answers[subscribed]["channels"], serde_json::json!(["wsops"]), "{answers:?}");
    let replay = answers.iter().position(|a| a["data"] == "earlier").unwrap_or_else(|| panic!("{answers:?}"));
    assert!(replay > subscribed, "history after the answer: {answers:?}");
    assert_envelope(&answers[replay], "wsops", &earlier, "message", "earlier", "replayed history");

    let mut publisher = b.upgrade("/sub").await;
    publisher.ws_send(TEXT, br#"{"op":"publish","channel":"wsops","data":"by op","event":"op"}"#).await;
    let published = ws_json(&mut publisher).await;
    assert_eq!(published["op"], "published", "{published}");
    let id = published["id"].as_str().expect("id").to_string();
    let delivered = ws_json(&mut subscriber).await;
    assert_envelope(&delivered, "wsops", &id, "op", "by op", "published by op on B, delivered on A");

    // With Redis gone, the publish op answers an error op with the reason, and the connection
    // stays up.
    redis.stop().await;
    publisher.ws_send(TEXT, br#"{"op":"publish","channel":"wsops","data":"lost"}"#).await;
    let refused = ws_json(&mut publisher).await;
    assert_eq!(refused["op"], "error", "{refused}");
    assert_eq!(refused["code"], "broker_unavailable", "{refused}");
    publisher.ws_send(TEXT, br#"{"op":"ping"}"#).await;
    assert_eq!(ws_json(&mut publisher).await["op"], "pong");
}

// ---- Delete across nodes ----

/// `DELETE /pub/{channel}` on one node ends the channel everywhere: a subscriber on another node
/// gets its `holdfast.closed` notice (`channel_deleted`) and the end of its stream, the answer
/// counts the subscribers of every node, the history is gone on every node, and a new publish
/// starts the channel again in a new epoch. The stats and metrics say which broker runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_node_ends_the_channel_on_every_node() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let nodes = nodes(&redis.url(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let old = publish_at(b.addr, "doomed", "before").await;
    let mut sse = open_stream(a, "/sub/doomed", "Accept: text/event-stream\r\n").await;
    wait_for_cluster_subscribers(b, "doomed", 1, WAIT).await;

    let answer = request_at(b.addr, &format!("DELETE /pub/doomed {GET}\r\n")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["deleted"], true, "{}", answer.text());
    assert_eq!(answer.json()["subscribers"], 1, "counted on every node: {}", answer.text());
    let events = sse_events(&mut sse, &mut sse::Parser::default(), 1).await;
    assert_eq!(events[0].event, "holdfast.closed", "{events:?}");
    assert!(events[0].data.contains("channel_deleted"), "{events:?}");
    let rest = within("the end of the deleted channel's stream", sse.read_to_close()).await;
    assert!(rest.ends_with(b"0\r\n\r\n"), "the last chunk, then the close: {:?}", String::from_utf8_lossy(&rest));

    for node in [a, b] {
        let info = get(node, "/pub/doomed").await;
        assert_eq!(info.status, 404, "gone on {}: {}", node.addr, info.text());
    }
    let again = request_at(a.addr, &format!("DELETE /pub/doomed {GET}\r\n")).await;
    assert_eq!(again.status, 404, "{}", again.text());
    // Published again: a new epoch, so the old cursor resumes with a gap, on either node.
    publish_at(a.addr, "doomed", "after").await;
    for node in [a, b] {
        let poll = get(node, &format!("/sub/doomed?transport=poll&cursor={old}")).await;
        let body = poll.json();
        assert!(body["gap"].is_array(), "the old epoch's cursor gets a gap on {}: {body}", node.addr);
        assert_eq!(body["messages"][0]["data"], "after", "{body}");
    }

    let stats = a.stats().await;
    assert_eq!((stats["broker"].as_str(), stats["broker_connected"].as_bool()), (Some("redis"), Some(true)));
    let metrics = get(a, "/metrics").await.text();
    assert!(metrics.contains("holdfast_broker_up 1"), "{metrics}");
}

// ---- Redis failover under Sentinel ----

/// Waits until `server` answers `command` with text containing `wanted`.
async fn wait_for_reply(server: &RedisServer, command: &str, wanted: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = server.command(command).await;
        if reply.contains(wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "{command} on {} never had {wanted:?}: {reply}", server.addr());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `broker = "redis-sentinel://…"`: the primary dies mid-stream, Sentinel promotes its replica,
/// the nodes follow it. Publishes answer 503 meanwhile and work again by themselves; a
/// subscriber on the other node gets every acknowledged message once, in order (or, had the
/// replica lacked some, a notice: never silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_is_followed_and_loses_nothing_acknowledged() {
    let Some(mut primary) = RedisServer::start(Persistence::None).await else { return };
    let port = primary.port().to_string();
    let replica = RedisServer::start_with(Persistence::None, &["--replicaof", "127.0.0.1", &port]).await.unwrap();
    wait_for_reply(&replica, "INFO replication", "master_link_status:up").await;
    let sentinel = RedisServer::start_sentinel("hf", primary.port()).await.unwrap();
    wait_for_reply(&sentinel, "INFO sentinel", "slaves=1").await;
    let url = format!("redis-sentinel://127.0.0.1:{}/0?sentinelServiceName=hf", sentinel.port());
    let nodes = nodes(&url, 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut sse = open_stream(a, "/sub/failover", "Accept: text/event-stream\r\n").await;
    wait_for_local(a, "sse", 1).await;

    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 1..=12 {
        if i == 6 {
            // Written to the replica already: replication of a few bytes takes microseconds.
            wait_for_reply(&replica, "INFO replication", "master_link_status:up").await;
            primary.kill();
        }
        let data = format!("m{i}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = try_publish_at(b.addr, "failover", &data).await;
            if answer.status == 200 {
                acked.push(data);
                break;
            }
            assert_eq!(answer.status, 503, "{}", answer.text());
            assert_eq!(answer.json()["error"], "broker_unavailable", "{}", answer.text());
            refused += 1;
            assert!(Instant::now() < deadline, "publishing did not come back after the failover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(refused > 0, "the primary's death was never seen: the test did not test a failover");
    wait_for_reply(&sentinel, "INFO sentinel", &format!("address=127.0.0.1:{}", replica.port())).await;

    let mut parser = sse::Parser::default();
    let mut delivered = Vec::new();
    let mut notice = None;
    within("every acknowledged message, or a notice", async {
        while delivered.len() < acked.len() && notice.is_none() {
            for event in parser.feed(&sse.next_chunk().await) {
                match event.event.as_str() {
                    "message" => delivered.push(event.data),
                    _ => notice = Some(event),
                }
            }
        }
    })
    .await;
    assert_eq!(delivered, acked[..delivered.len()], "once each, in order (notice: {notice:?})");
    if let Some(notice) = notice {
        assert!(
            notice.event == "holdfast.gap" || notice.data.contains("history_lost"),
            "only a gap or history_lost may cut the stream short: {notice:?}"
        );
    }
}

/// A Redis whose positions went back (a promoted replica that lacked acknowledged writes,
/// simulated here by rewinding a channel's sequence number and dropping the nodes' pub/sub
/// connections) is caught when the nodes read back after reconnecting: the channel moves to a
/// new epoch, the subscriber is told `history_lost` with its cursor, and resuming with that
/// cursor gives a gap and then the new messages, never one under a position already handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_that_went_back_in_redis_move_the_channel_to_a_new_epoch() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let nodes = nodes(&redis.url(), 2).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut sse = open_stream(a, "/sub/rewound", "Accept: text/event-stream\r\n").await;
    wait_for_local(a, "sse", 1).await;
    for i in 1..=3 {
        publish_at(b.addr, "rewound", &format!("m{i}")).await;
    }
    let mut parser = sse::Parser::default();
    let seen = sse_events(&mut sse, &mut parser, 3).await;
    let last = seen[2].id.clone();

    assert_eq!(redis.command("HSET hf:{rewound}:m seq 1").await, ":0");
    let killed = redis.command("CLIENT KILL TYPE pubsub").await;
    assert!(killed.starts_with(':') && killed != ":0", "{killed}");
    let closed = sse_events(&mut sse, &mut parser, 1).await;
    assert_eq!(closed[0].event, "holdfast.closed", "{closed:?}");
    assert!(closed[0].data.contains("history_lost"), "{closed:?}");
    assert!(closed[0].data.contains(&last), "the notice carries the cursor: {closed:?}");

    let after = publish_at(b.addr, "rewound", "m4").await;
    assert_ne!(after, last, "a new epoch: no id is handed out twice");
    // A short poll on A with the old cursor: a gap each time, and m4 once A has heard of it.
    let deadline = Instant::now() + WAIT;
    loop {
        let body = get(a, &format!("/sub/rewound?transport=poll&cursor={last}")).await.json();
        assert!(body["gap"].is_array(), "{body}");
        let messages = body["messages"].as_array().unwrap();
        if let Some(newest) = messages.last() {
            assert_eq!(newest["data"], "m4", "{body}");
            assert_eq!(newest["id"], after.as_str(), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "m4 never reached node A: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A peer that floods `publish` ops while Redis is stalled (`DEBUG SLEEP`): past the ops the
/// connection may have waiting on the broker its input is paused, not dropped; once Redis
/// answers, every op is answered, in order of the ids Redis gave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_publish_ops_while_redis_stalls_is_paused_then_answered() {
    let Some(redis) = RedisServer::start_with(Persistence::None, &["--enable-debug-command", "yes"]).await else {
        return;
    };
    let nodes = nodes_with(&redis.url(), 1, |c| c.ws_client_publish = true).await;
    let mut publisher = nodes[0].upgrade("/sub").await;
    let stall = tokio::spawn({
        let addr = redis.addr();
        async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.write_all(b"DEBUG SLEEP 1\r\n").await.unwrap();
            let mut reply = [0u8; 5];
            conn.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"+OK\r\n", "Redis stalled");
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    const OPS: usize = 300;
    let mut flood = Vec::new();
    for i in 0..OPS {
        let op = format!(r#"{{"op":"publish","channel":"flood","data":"{i}"}}"#);
        flood.extend(holdfast_testkit::ws_client_frame(true, TEXT, op.as_bytes()));
    }
    publisher.send(&flood).await;
    let mut published = 0;
    while published < OPS {
        let answer = ws_json(&mut publisher).await;
        assert_eq!(answer["op"], "published", "{answer}");
        published += 1;
    }
    stall.await.unwrap();
    let info = get(&nodes[0], "/pub/flood").await.json();
    assert_eq!(info["messages"], OPS, "{info}");
}
