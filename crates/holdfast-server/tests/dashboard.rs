//! The dashboard and its feed: `GET /admin/events` over a plain socket (the first `stats` event,
//! top channels and recent closes following subscribes, publishes and closes, the internal
//! channel refused by `/pub` and `/sub`, node-local with Redis), the extra `/admin/connections`
//! fields, the landing page, and the page itself in headless Chromium (`tests/interop/
//! dashboard.js`): live counts, the connections table, a disconnect, screenshots.
//!
//! Screenshots go to cargo's test temp directory; with `HOLDFAST_UPDATE_SCREENSHOTS=1` they
//! replace `docs/dashboard.png` and `docs/dashboard-phone.png` (the README's pictures).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use holdfast_testkit::interop::{browser_command, Client, Reports};
use holdfast_testkit::redis::{Persistence, RedisServer};
use holdfast_testkit::{RawConn, RawResponse, TestServer, IO_TIMEOUT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// The dashboard's feed read over a raw socket.
struct Feed {
    conn: RawConn,
    text: String,
}

impl Feed {
    /// `GET /admin/events`; asserts an SSE answer.
    async fn open(server: &TestServer) -> (Feed, RawResponse) {
        let mut conn = server.connect().await;
        conn.send(b"GET /admin/events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").await;
        let head = conn.stream_head().await;
        assert_eq!(head.status, 200, "{}", head.head);
        assert_eq!(head.header("content-type"), Some("text/event-stream; charset=utf-8"), "{}", head.head);
        (Feed { conn, text: String::new() }, head)
    }

    /// The next `stats` event's JSON, if one comes within `within`.
    async fn next_stats(&mut self, within: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.text.find("\n\n") {
                let event: String = self.text.drain(..end + 2).collect();
                let kind = event.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("message");
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                if kind == "stats" {
                    let json = data.join("\n");
                    return Some(
                        serde_json::from_str(&json).unwrap_or_else(|e| panic!("stats is not JSON ({e}): {json}")),
                    );
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let chunk = self.conn.next_chunk_within(left).await?;
            assert!(!chunk.is_empty(), "the feed ended");
            self.text.push_str(std::str::from_utf8(&chunk).expect("the feed is UTF-8"));
        }
    }

    /// Reads events until one satisfies `done`; panics, naming `what`, after [`IO_TIMEOUT`].
    async fn until(&mut self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            match self.next_stats(deadline.saturating_duration_since(Instant::now())).await {
                Some(stats) if done(&stats) => return stats,
                Some(stats) => last = stats,
                None => break,
            }
        }
        panic!("the feed never showed {what}; last event: {last}");
    }
}

/// An SSE subscriber of `channel` on a raw connection, its head read.
async fn sse(server: &TestServer, channel: &str) -> RawConn {
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/{channel} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 200, "subscribe to {channel}: {}", head.head);
    conn
}

/// A request on a fresh connection.
async fn request(server: &TestServer, head: &str) -> RawResponse {
    let mut conn = server.connect().await;
    conn.send(head.as_bytes()).await;
    conn.response().await
}

/// Publishes to `channel` every `every` over one keep-alive connection until aborted.
fn publisher(server: &TestServer, channel: &str, every: Duration) -> JoinHandle<()> {
    let addr = server.addr;
    let channel = channel.to_string();
    tokio::spawn(async move {
        let mut conn = RawConn::connect(addr).await;
        for i in 0u64.. {
            let body = format!("tick {i}");
            let head =
                format!("POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            conn.send(head.as_bytes()).await;
            assert_eq!(conn.response().await.status, 200);
            tokio::time::sleep(every).await;
        }
    })
}

fn entries<'a>(stats: &'a Value, list: &str) -> Vec<&'a Value> {
    stats["top_channels"][list]
        .as_array()
        .unwrap_or_else(|| panic!("top_channels.{list} missing: {stats}"))
        .iter()
        .collect()
}

fn top_entry<'a>(stats: &'a Value, list: &str, channel: &str) -> Option<&'a Value> {
    entries(stats, list).into_iter().find(|e| e["channel"] == channel)
}

#[tokio::test]
async fn the_feed_sends_a_stats_event_within_a_second_and_a_half() {
    let server = TestServer::start(|_| {}).await;
    server.publish("warm", None, b"x").await;
    let started = Instant::now();
    let (mut feed, head) = Feed::open(&server).await;
    assert!(head.header("holdfast-heartbeat").is_some(), "{}", head.head);
    let stats = feed.next_stats(Duration::from_millis(1500)).await.expect("a stats event within 1.5 s");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Everything /admin/stats has, and the feed's own fields.
    let plain = server.stats().await;
    for key in plain.as_object().unwrap().keys() {
        assert!(stats.get(key).is_some(), "the feed lacks {key}: {stats}");
    }
    assert!(stats["at_ms"].as_u64().unwrap() > 1_600_000_000_000, "{stats}");
    assert!(stats["top_channels"]["by_subscribers"].is_array(), "{stats}");
    assert!(stats["top_channels"]["by_rate"].is_array(), "{stats}");
    assert!(stats["recent_closes"].is_array(), "{stats}");
    // The next snapshot comes a second later; the viewer is an SSE subscriber like any other.
    let second = feed.next_stats(Duration::from_millis(1500)).await.expect("a second event");
    let gap = second["at_ms"].as_u64().unwrap() - stats["at_ms"].as_u64().unwrap();
    assert!((700..=1500).contains(&gap), "events {gap} ms apart");
    assert_eq!(second["subscribers"]["sse"], 1, "{second}");
}

#[tokio::test]
async fn top_channels_and_recent_closes_follow_subscribes_publishes_and_closes() {
    let server = TestServer::start(|_| {}).await;
    let (mut feed, _) = Feed::open(&server).await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(sse(&server, "busy-room").await);
    }
    let quiet = sse(&server, "quiet-room").await;
    let stats = feed
        .until("busy-room first by subscribers", |s| {
            top_entry(s, "by_subscribers", "busy-room").is_some_and(|e| e["subscribers"] == 3)
                && top_entry(s, "by_subscribers", "quiet-room").is_some_and(|e| e["subscribers"] == 1)
        })
        .await;
    assert_eq!(entries(&stats, "by_subscribers")[0]["channel"], "busy-room", "{stats}");
    assert!(
        entries(&stats, "by_subscribers").iter().all(|e| !e["channel"].as_str().unwrap().starts_with("_holdfast")),
        "the feed's own channel is not listed: {stats}"
    );

    // Publishing shows as a rate and a published count.
    let ticking = publisher(&server, "busy-room", Duration::from_millis(20));
    let stats = feed
        .until("busy-room by rate", |s| {
            top_entry(s, "by_rate", "busy-room").is_some_and(|e| e["messages_per_second"].as_f64().unwrap() > 5.0)
        })
        .await;
    let entry = top_entry(&stats, "by_rate", "busy-room").unwrap();
    assert!(entry["published"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(entry["subscribers"], 3, "{stats}");
    assert!(top_entry(&stats, "by_rate", "quiet-room").is_none(), "a channel without publishes has no rate: {stats}");
    ticking.abort();

    // Closes: a subscriber that leaves (its own peer address), and one closed by a delete.
    let mut leaving = TcpStream::connect(server.addr).await.unwrap();
    let leaving_peer = leaving.local_addr().unwrap().to_string();
    leaving.write_all(b"GET /sub/busy-room HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").await.unwrap();
    let mut first = [0u8; 64];
    let _ = leaving.read(&mut first).await.unwrap();
    server.wait_for_subscribers("busy-room", 4).await;
    // A FIN (a drop with unread bytes would be a reset, `peer_aborted`).
    leaving.shutdown().await.unwrap();
    let deleted = request(&server, "DELETE /pub/quiet-room HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(deleted.status, 200);
    let stats = feed
        .until("both closes", |s| {
            let closes = s["recent_closes"].as_array().unwrap();
            closes.iter().any(|c| c["peer"] == leaving_peer.as_str() && c["reason"] == "peer_closed")
                && closes.iter().any(|c| c["reason"] == "channel_deleted")
        })
        .await;
    let closes = stats["recent_closes"].as_array().unwrap();
    drop(leaving);
    let left = closes.iter().find(|c| c["peer"] == leaving_peer.as_str()).unwrap();
    assert_eq!(left["transport"], "sse", "{left}");
    let deleted = closes.iter().find(|c| c["reason"] == "channel_deleted").unwrap();
    assert_eq!(deleted["transport"], "sse", "{deleted}");
    let times: Vec<u64> = closes.iter().map(|c| c["at_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first: {times:?}");
    assert!(closes.len() <= 50);
    // The feed's deliveries are not the server's traffic.
    let delivered_before = stats["messages_delivered"].as_u64().unwrap();
    let later = feed.next_stats(IO_TIMEOUT).await.unwrap();
    assert_eq!(later["messages_delivered"].as_u64().unwrap(), delivered_before, "{later}");
    drop((busy, quiet));
}

#[tokio::test]
async fn the_feed_channel_is_refused_by_pub_and_sub() {
    let server = TestServer::start(|c| c.ws_client_publish = true).await;
    let (mut feed, _) = Feed::open(&server).await;
    feed.next_stats(IO_TIMEOUT).await.expect("a first event");
    let refusals = [
        "POST /pub/_holdfast.admin HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi",
        "GET /pub/_holdfast.admin HTTP/1.1\r\nHost: t\r\n\r\n",
        "DELETE /pub/_holdfast.admin HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /sub/_holdfast.admin?transport=poll HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /sub/room,_holdfast.admin HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
        "GET /sub/_holdfast.other HTTP/1.1\r\nHost: t\r\n\r\n",
    ];
    for head in refusals {
        let response = request(&server, head).await;
        assert_eq!(response.status, 403, "{head:?}: {}", response.text());
        assert_eq!(response.json()["error"], "reserved_channel", "{head:?}");
        assert!(response.json()["reason"].as_str().unwrap().contains("/admin/events"), "{}", response.text());
    }
    // WebSocket ops go through the same checks.
    let mut ws = server.upgrade("/sub").await;
    for op in [
        r#"{"op":"subscribe","channels":["_holdfast.admin"]}"#,
        r#"{"op":"publish","channel":"_holdfast.admin","data":"x"}"#,
    ] {
        ws.ws_send(0x1, op.as_bytes()).await;
        let (_, _, answer) = ws.ws_frame().await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["op"], "error", "{op}: {answer}");
        assert_eq!(answer["code"], "reserved_channel", "{op}: {answer}");
    }
    // The feed itself went on, untouched.
    assert!(feed.next_stats(IO_TIMEOUT).await.is_some());
}

#[tokio::test]
async fn admin_connections_show_bytes_heartbeat_activity_and_requests() {
    let server = TestServer::start(|c| c.heartbeat_min = Duration::from_secs(1)).await;
    let mut stream = sse(&server, "conn-room?heartbeat=7").await;
    let mut ws = server.upgrade("/sub/conn-ws").await;
    ws.ws_send(0x1, br#"{"op":"ping"}"#).await;
    let _ = ws.ws_frame().await;
    server.publish("conn-room", None, b"hello").await;
    while !String::from_utf8_lossy(&stream.next_chunk().await).contains("hello") {}
    let listing = request(&server, "GET /admin/connections HTTP/1.1\r\nHost: t\r\n\r\n").await.json();
    let list = listing["connections"].as_array().unwrap();
    let sse_entry = list.iter().find(|c| c["channels"][0] == "conn-room").expect("the SSE subscriber is listed");
    assert_eq!(sse_entry["transport"], "sse");
    assert_eq!(sse_entry["heartbeat_seconds"], 7.0, "{sse_entry}");
    assert_eq!(sse_entry["requests"], 1, "{sse_entry}");
    assert_eq!(sse_entry["bytes_in"], 0, "{sse_entry}");
    assert!(sse_entry["bytes_out"].as_u64().unwrap() > 0, "{sse_entry}");
    assert!(sse_entry["idle_seconds"].as_f64().unwrap() < 5.0, "{sse_entry}");
    for key in ["id", "peer", "state", "age_seconds", "pending_bytes"] {
        assert!(sse_entry.get(key).is_some(), "{key} kept: {sse_entry}");
    }
    let ws_entry = list.iter().find(|c| c["channels"][0] == "conn-ws").expect("the WebSocket is listed");
    assert_eq!(ws_entry["transport"], "websocket");
    // The ping op's frame: 13 bytes of payload, 6 of header and mask.
    assert!(ws_entry["bytes_in"].as_u64().unwrap() >= 19, "{ws_entry}");
    assert_eq!(ws_entry["heartbeat_seconds"], 25.0, "{ws_entry}");
}

#[tokio::test]
async fn the_feed_stays_on_its_node_with_redis() {
    let Some(redis) = RedisServer::start(Persistence::None).await else { return };
    let url = redis.url();
    let a = TestServer::start({
        let url = url.clone();
        move |c| c.broker = url
    })
    .await;
    let b = TestServer::start(move |c| c.broker = url).await;
    let (mut feed_a, _) = Feed::open(&a).await;
    let (mut feed_b, _) = Feed::open(&b).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(sse(&b, "spread").await);
    }
    let on_b = feed_b
        .until("node b's three subscribers", |s| {
            top_entry(s, "by_subscribers", "spread").is_some_and(|e| e["subscribers"] == 3)
        })
        .await;
    assert_eq!(on_b["subscribers"]["sse"], 4, "three and the viewer: {on_b}");
    // Node a's viewer sees node a: its own connection, no subscriber of `spread`, and no events
    // of node b's feed (each node's snapshot a second, not both).
    let on_a = feed_a.until("node a's own viewer", |s| s["subscribers"]["sse"] == 1).await;
    assert!(top_entry(&on_a, "by_subscribers", "spread").is_none(), "{on_a}");
    let started = Instant::now();
    let mut events = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        if feed_a.next_stats(Duration::from_millis(200)).await.is_some() {
            events += 1;
        }
    }
    assert!((1..=4).contains(&events), "{events} events in 2.5 s on node a");
    let refused = request(&a, "POST /pub/_holdfast.admin HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").await;
    assert_eq!(refused.status, 403);
    drop(held);
}

#[tokio::test]
async fn the_landing_page_links_to_the_dashboard_and_the_chat_and_every_page_file_is_served() {
    let server = TestServer::start(|_| {}).await;
    let landing = request(&server, "GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(landing.status, 200);
    let html = landing.text();
    assert!(html.contains(r#"href="/admin/""#), "{html}");
    assert!(html.contains(r#"href="/demo/chat""#), "{html}");
    let dashboard = request(&server, "GET /admin/ HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(dashboard.status, 200);
    assert!(dashboard.text().contains("/admin/admin.js") && dashboard.text().contains("/admin/admin.css"));
    for path in ["/admin/admin.js", "/admin/chart.js", "/admin/connections.js", "/admin/format.js", "/admin/admin.css"]
    {
        let file = request(&server, &format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n")).await;
        assert_eq!(file.status, 200, "{path}");
        assert!(file.body.len() > 500, "{path} is not a placeholder");
    }
    let chat = request(&server, "GET /demo/chat HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(chat.status, 200);
    assert!(chat.text().contains("'/holdfast.js'"), "the chat imports holdfast.js");
    let events = request(&server, "POST /admin/events HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(events.status, 405);
}

// ---- the page in a browser ------------------------------------------------------------------

/// The last `state` report of the dashboard script.
fn page_state(reports: &Reports) -> Option<&Value> {
    reports.seen.iter().rev().find(|r| r["type"] == "state")
}

/// Sends a command to the dashboard script and waits for its answer of type `answer`.
async fn ask(client: &mut Client, reports: &mut Reports, command: Value, answer: &str) -> Value {
    let from = reports.seen.len();
    client.command(command.clone());
    reports
        .until(client, answer, |r| r.seen[from..].iter().any(|x| x["type"] == answer || x["type"] == "failed"))
        .await;
    let reply = reports.seen[from..].iter().find(|x| x["type"] == answer || x["type"] == "failed").unwrap().clone();
    assert_ne!(reply["type"], "failed", "{command}: {reply}");
    reply
}

/// Where a screenshot goes: cargo's test temp directory, or `docs/` when updating them.
fn screenshot_path(name: &str) -> PathBuf {
    if std::env::var_os("HOLDFAST_UPDATE_SCREENSHOTS").is_some() {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs").join(name)
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)
    }
}

/// A PNG's width and height (from its IHDR chunk).
fn png_size(path: &PathBuf) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is a PNG", path.display());
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (word(16), word(20))
}

#[tokio::test]
async fn the_dashboard_follows_subscribers_lists_them_and_disconnects_a_channel() {
    let mut server = TestServer::start(|_| {}).await;
    for i in 0..5 {
        server.publish("dash-news", None, format!("early {i}").as_bytes()).await;
    }
    let mut client = Client::spawn({
        let mut node = browser_command("dashboard.js");
        node.arg(server.url(""));
        node
    });
    let mut reports = Reports::new();
    reports.until(&mut client, "ready", |r| r.seen.iter().any(|x| x["type"] == "ready")).await;
    reports.until(&mut client, "the page's own feed", |r| page_state(r).is_some_and(|s| s["sse"] == 1)).await;
    let baseline = page_state(&reports).unwrap()["open"].as_u64().unwrap();

    // Subscribers join a few at a time (the connections chart shows the ramp) while messages flow.
    let ticking = publisher(&server, "dash-room", Duration::from_millis(40));
    let mut room = Vec::new();
    let mut lobby = Vec::new();
    for i in 0..16 {
        if i % 4 == 3 {
            lobby.push(sse(&server, "dash-lobby").await);
        } else {
            room.push(sse(&server, "dash-room").await);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    reports
        .until(&mut client, "16 more SSE connections", |r| {
            page_state(r).is_some_and(|s| s["sse"] == 17 && s["open"].as_u64().unwrap() >= baseline + 16)
        })
        .await;
    reports
        .until(&mut client, "dash-room and dash-lobby in the top lists", |r| {
            page_state(r).is_some_and(|s| {
                s["top"][0] == "dash-room" && s["top"][1] == "dash-lobby" && s["rate"][0] == "dash-room"
            })
        })
        .await;

    // The table lists them: all 16, then the 12 of dash-room by filter, sortable.
    let table = ask(&mut client, &mut reports, serde_json::json!({"cmd": "table", "filter": "dash-"}), "table").await;
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 16, "{table}");
    let table =
        ask(&mut client, &mut reports, serde_json::json!({"cmd": "table", "filter": "dash-room"}), "table").await;
    let rows = table["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 12, "{table}");
    for row in rows {
        assert_eq!(row[1], "sse", "{row}");
        assert_eq!(row[2], "dash-room", "{row}");
        assert_eq!(row[7], "1", "one request each: {row}");
        assert_eq!(row[8], "25 s", "the default heartbeat: {row}");
    }
    assert!(table["info"].as_str().unwrap().starts_with("1–12 of 12"), "{table}");
    let sorted = ask(&mut client, &mut reports, serde_json::json!({"cmd": "sort", "column": "Peer"}), "sorted").await;
    let peers: Vec<&str> = sorted["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
    let mut expected = peers.clone();
    expected.sort();
    if sorted["sort"] == "descending" {
        expected.reverse();
    }
    assert_eq!(peers, expected, "{sorted}");
    let _ = ask(&mut client, &mut reports, serde_json::json!({"cmd": "table", "filter": ""}), "table").await;

    // Screenshots: desktop and phone.
    if std::env::var_os("HOLDFAST_UPDATE_SCREENSHOTS").is_some() {
        // Fill the charts a little more for the pictures: 15 more snapshots of the feed the
        // page draws them from (a second apart).
        let (mut feed, _) = Feed::open(&server).await;
        for _ in 0..15 {
            feed.next_stats(IO_TIMEOUT).await.expect("the feed's next snapshot");
        }
    }
    let desktop = screenshot_path("dashboard.png");
    let phone = screenshot_path("dashboard-phone.png");
    let shot = serde_json::json!({"cmd": "screenshot", "path": desktop, "width": 1280, "height": 800});
    ask(&mut client, &mut reports, shot, "screenshot").await;
    assert_eq!(png_size(&desktop), (1280, 800));
    let shot = serde_json::json!({"cmd": "screenshot", "path": phone, "width": 390, "height": 844});
    ask(&mut client, &mut reports, shot, "screenshot").await;
    assert_eq!(png_size(&phone).0, 390);

    // Disconnect dash-lobby from its row: its subscribers get the notice and the end of stream.
    let done = ask(
        &mut client,
        &mut reports,
        serde_json::json!({"cmd": "disconnect", "channel": "dash-lobby"}),
        "disconnected",
    )
    .await;
    assert!(done["dialog"].as_str().unwrap().contains("dash-lobby"), "a confirm names the channel: {done}");
    assert!(done["text"].as_str().unwrap().starts_with("Disconnected 4 subscribers"), "{done}");
    for conn in &mut lobby {
        let rest = tokio::time::timeout(IO_TIMEOUT, conn.read_to_close()).await.expect("closed");
        assert!(
            String::from_utf8_lossy(&rest).contains("admin_disconnect"),
            "notice: {}",
            String::from_utf8_lossy(&rest)
        );
    }
    reports.until(&mut client, "the lobby gone", |r| page_state(r).is_some_and(|s| s["sse"] == 13)).await;

    // The rest leave: back to the page's own feed.
    ticking.abort();
    drop(room);
    reports
        .until(&mut client, "everyone gone", |r| {
            page_state(r).is_some_and(|s| s["sse"] == 1 && s["open"].as_u64().unwrap() <= baseline + 1)
        })
        .await;

    // 20,000 connections (made up, as a server this test cannot open that many sockets for would
    // list them): one sort per change and one page of rows in the DOM, so nothing freezes.
    let big =
        ask(&mut client, &mut reports, serde_json::json!({"cmd": "big_table", "rows": 20_000}), "big_table").await;
    assert_eq!(big["dom_rows"], 100, "{big}");
    assert!(big["info"].as_str().unwrap().starts_with("101–200 of 20,000"), "{big}");
    assert_eq!(big["sorted"], true, "sorted by bytes out, largest first: {big}");
    // Generous bounds for a loaded 2-core machine (typically: load 0.5 s with the fetch and the
    // JSON parse, sort 20 ms, next page 10 ms).
    assert!(big["load_ms"].as_f64().unwrap() < 5000.0, "{big}");
    assert!(big["sort_ms"].as_f64().unwrap() < 1500.0, "{big}");
    assert!(big["page_ms"].as_f64().unwrap() < 1500.0, "{big}");
    eprintln!("20,000 rows: load {} ms, sort {} ms, next page {} ms", big["load_ms"], big["sort_ms"], big["page_ms"]);
    let errors = ask(&mut client, &mut reports, serde_json::json!({"cmd": "errors"}), "errors_so_far").await;
    assert_eq!(errors["errors"], serde_json::json!([]), "no console errors");

    // The server goes away: the page says the feed is reconnecting (its failed attempts are
    // console errors from here on, which is the browser reporting them).
    server.stop().await;
    reports
        .until(&mut client, "the feed reconnecting", |r| {
            page_state(r).is_some_and(|s| s["feed"] == "reconnecting" || s["feed"] == "offline")
        })
        .await;
    client.finish().await;
}

// ---- the chat demo in a browser -------------------------------------------------------------

/// The last report of chat page `page`.
fn chat_page<'a>(reports: &'a Reports, page: &str) -> Option<&'a Value> {
    reports.seen.iter().rev().find(|r| r["type"] == "page" && r["page"] == page)
}

/// Whether chat page `page` shows `message` (`nick|text`).
fn shows(reports: &Reports, page: &str, message: &str) -> bool {
    chat_page(reports, page).is_some_and(|p| p["messages"].as_array().unwrap().iter().any(|m| m == message))
}

fn online(reports: &Reports, page: &str) -> i64 {
    chat_page(reports, page).map_or(-1, |p| p["online"].as_i64().unwrap())
}

#[tokio::test]
async fn chat_pages_exchange_messages_see_history_and_count_who_is_online() {
    let server = TestServer::start(|_| {}).await;
    let mut client = Client::spawn({
        let mut node = browser_command("chat.js");
        node.args([server.url(""), "t1".to_string()]);
        node
    });
    let mut reports = Reports::new();
    reports.until(&mut client, "ready", |r| r.seen.iter().any(|x| x["type"] == "ready")).await;
    let open = |page: &str| serde_json::json!({"cmd": "open", "page": page});
    let send = |page: &str, text: &str| serde_json::json!({"cmd": "send", "page": page, "text": text});

    ask(&mut client, &mut reports, open("alice"), "opened").await;
    reports.until(&mut client, "alice alone online", |r| online(r, "alice") == 1).await;
    ask(&mut client, &mut reports, open("bob"), "opened").await;
    reports.until(&mut client, "two online", |r| online(r, "alice") == 2 && online(r, "bob") == 2).await;

    // Messages go both ways, as JSON {nick, text} through POST /pub.
    let sent = ask(&mut client, &mut reports, send("alice", "hello from alice"), "sent").await;
    assert_eq!(sent["error"], Value::Null, "{sent}");
    reports
        .until(&mut client, "alice's message on both pages", |r| {
            shows(r, "bob", "alice|hello from alice") && shows(r, "alice", "alice|hello from alice")
        })
        .await;
    let markup = r#"<img src=x onerror="document.title='pwned'"> <b>bold?</b>"#;
    ask(&mut client, &mut reports, send("bob", markup), "sent").await;
    ask(&mut client, &mut reports, send("bob", "hi alice"), "sent").await;
    let expected = format!("bob|{markup}");
    reports.until(&mut client, "bob's messages at alice", |r| shows(r, "alice", "bob|hi alice")).await;
    let alice = chat_page(&reports, "alice").unwrap();
    assert!(shows(&reports, "alice", &expected), "markup is shown as text: {alice}");
    assert_eq!(alice["elements"], 0, "no element came from a message: {alice}");
    // What was published over JSON is what the channel keeps.
    let info = request(&server, "GET /sub/chat:t1?transport=poll&history=10 HTTP/1.1\r\nHost: t\r\n\r\n").await.json();
    assert_eq!(info["messages"][0]["json"], serde_json::json!({"nick": "alice", "text": "hello from alice"}), "{info}");

    // A page that joins late gets the conversation from the history, in order.
    ask(&mut client, &mut reports, open("carol"), "opened").await;
    reports.until(&mut client, "carol sees the history", |r| shows(r, "carol", "bob|hi alice")).await;
    let carol = chat_page(&reports, "carol").unwrap();
    let history: Vec<&str> = carol["messages"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    assert_eq!(history, ["alice|hello from alice", expected.as_str(), "bob|hi alice"], "{carol}");
    reports.until(&mut client, "three online", |r| ["alice", "bob", "carol"].iter().all(|p| online(r, p) == 3)).await;

    // The server drops everyone: the pages say so, come back by themselves, and lose nothing.
    assert_eq!(server.disconnect("chat:t1").await, 3);
    server.publish("chat:t1", None, br#"plain text from curl"#).await;
    reports
        .until(&mut client, "everyone back with the message sent meanwhile", |r| {
            ["alice", "bob", "carol"].iter().all(|p| {
                chat_page(r, p).is_some_and(|page| page["state"] == "connected")
                    && shows(r, p, "?|plain text from curl")
            })
        })
        .await;
    for page in ["alice", "bob", "carol"] {
        let report = chat_page(&reports, page).unwrap();
        let states: Vec<&str> = report["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert!(states.contains(&"reconnecting"), "{page} showed it was reconnecting: {states:?}");
        let messages = report["messages"].as_array().unwrap();
        let unique: std::collections::HashSet<&Value> = messages.iter().collect();
        assert_eq!(unique.len(), messages.len(), "no message twice on {page}: {report}");
    }

    // Leaving lowers the count on the others.
    ask(&mut client, &mut reports, serde_json::json!({"cmd": "close", "page": "carol"}), "closed").await;
    reports.until(&mut client, "two online again", |r| online(r, "alice") == 2 && online(r, "bob") == 2).await;

    let rest = client.finish().await;
    let errors = rest.iter().find(|r| r["type"] == "errors").expect("the script reports console errors");
    assert_eq!(errors["errors"], serde_json::json!([]), "no console errors");
}
