//! The heartbeat contract: every streaming response and the WebSocket 101 announce the interval
//! in `Holdfast-Heartbeat` (a long poll's answer announces `longpoll_timeout`), a subscriber may
//! ask for its own interval with `?heartbeat=SECONDS` (clamped to `[heartbeat_min,
//! heartbeat_max]`), and gets heartbeats at that interval; a WebSocket peer that only reads is
//! pinged even while messages keep the line busy, so it is not cut as silent.

use std::time::{Duration, Instant};

use holdfast_testkit::{ws_upgrade_request, RawConn, RawResponse, TestServer};

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

async fn stream_head(server: &TestServer, target: &str) -> (RawConn, RawResponse) {
    let mut conn = server.connect().await;
    conn.send(format!("GET {target} {GET}\r\n").as_bytes()).await;
    let head = conn.stream_head().await;
    (conn, head)
}

async fn upgrade(server: &TestServer, target: &str) -> (RawConn, RawResponse) {
    let mut conn = server.connect().await;
    conn.send(ws_upgrade_request(target, "").as_bytes()).await;
    let head = conn.stream_head().await;
    assert_eq!(head.status, 101, "{}", head.head);
    (conn, head)
}

#[tokio::test]
async fn streaming_heads_the_101_and_long_poll_answers_announce_the_heartbeat() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_secs(25);
        c.heartbeat_min = Duration::from_secs(5);
        c.heartbeat_max = Duration::from_secs(300);
        c.longpoll_timeout = Duration::from_secs(30);
    })
    .await;
    for target in ["/sub/a?transport=sse", "/sub/a?transport=stream", "/sub/a?transport=iframe&callback=cb"] {
        let (_, head) = stream_head(&server, target).await;
        assert_eq!(head.status, 200, "{target}");
        assert_eq!(head.header("holdfast-heartbeat"), Some("25"), "{target}: {}", head.head);
    }
    let (_, head) = upgrade(&server, "/sub/a").await;
    assert_eq!(head.header("holdfast-heartbeat"), Some("25"), "{}", head.head);

    // Asked-for intervals, clamped to [heartbeat_min, heartbeat_max].
    for (asked, announced) in [("60", "60"), ("7.5", "7.5"), ("1", "5"), ("86400", "300")] {
        let (_, head) = stream_head(&server, &format!("/sub/a?transport=sse&heartbeat={asked}")).await;
        assert_eq!(head.header("holdfast-heartbeat"), Some(announced), "asked {asked}");
        let (_, head) = upgrade(&server, &format!("/sub/a?heartbeat={asked}")).await;
        assert_eq!(head.header("holdfast-heartbeat"), Some(announced), "WebSocket asked {asked}");
    }
    for bad in ["0", "-1", "soon"] {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/a?transport=sse&heartbeat={bad} {GET}\r\n").as_bytes()).await;
        let head = conn.response().await;
        assert_eq!(head.status, 400, "heartbeat={bad}");
        assert_eq!(head.json()["error"], "bad_heartbeat", "{}", head.text());
    }

    // A long poll's answer (held in a shard, or answered at once) names its longest silence.
    server.publish("lp", None, b"m").await;
    let (_, head) = stream_head(&server, "/sub/lp?transport=longpoll&history=1").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("holdfast-heartbeat"), Some("30"), "{}", head.head);
    let (mut held, _) = {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/lp2?transport=longpoll {GET}\r\n").as_bytes()).await;
        (conn, ())
    };
    server.wait_for_subscribers("lp2", 1).await;
    server.publish("lp2", None, b"m").await;
    let head = held.response().await;
    assert_eq!(head.header("holdfast-heartbeat"), Some("30"), "{}", head.head);
    // A short poll is answered at once and announces nothing.
    let (_, head) = stream_head(&server, "/sub/lp?transport=poll").await;
    assert_eq!(head.header("holdfast-heartbeat"), None);
}

#[tokio::test]
async fn a_subscriber_gets_heartbeats_at_the_interval_it_asked_for() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_secs(25);
        c.heartbeat_min = Duration::from_millis(200);
    })
    .await;
    let (mut fast, head) = stream_head(&server, "/sub/hb?transport=stream&heartbeat=0.3").await;
    assert_eq!(head.header("holdfast-heartbeat"), Some("0.3"));
    let (mut default, _) = stream_head(&server, "/sub/hb?transport=stream").await;
    fast.next_chunk().await; // the opening newline
    default.next_chunk().await;
    let started = Instant::now();
    let mut beats = Vec::new();
    while beats.len() < 4 {
        let chunk = fast.next_chunk_within(Duration::from_secs(2)).await.expect("a heartbeat within 2 s");
        assert_eq!(chunk, b"\n", "an NDJSON heartbeat is an empty line");
        beats.push(started.elapsed());
    }
    // One within 1.25 intervals of quiet (the scan runs at a quarter interval), and on average
    // one per interval, not per the 25 s default.
    assert!(beats[0] < Duration::from_millis(600), "first beat after {:?}", beats[0]);
    let spacing = (beats[3] - beats[0]) / 3;
    assert!(spacing >= Duration::from_millis(250) && spacing < Duration::from_millis(600), "spacing {spacing:?}");
    // The subscriber on the default interval got none meanwhile.
    assert_eq!(default.next_chunk_within(Duration::from_millis(100)).await, None);
}

#[tokio::test]
async fn a_websocket_that_only_reads_a_busy_line_is_pinged_and_kept() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(200);
        c.heartbeat_timeout = Duration::from_millis(600);
    })
    .await;
    let (mut conn, _) = upgrade(&server, "/sub/busy").await;
    server.wait_for_subscribers("busy", 1).await;
    // Messages every 50 ms for 2 s keep the line busy: the server's own quiet never reaches the
    // interval, yet the peer (which answers pings, nothing else) must be pinged and kept.
    let publish = async {
        for i in 0..40 {
            server.publish("busy", None, i.to_string().as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let read = async {
        let (mut messages, mut pings) = (0, 0);
        while messages < 40 {
            let (_, opcode, payload) =
                conn.ws_frame_within(Duration::from_secs(3)).await.expect("the connection stays and delivers");
            match opcode {
                TEXT => messages += 1,
                PING => {
                    pings += 1;
                    conn.ws_send(PONG, &payload).await;
                }
                CLOSE => panic!("closed after {messages} messages: {:?}", String::from_utf8_lossy(&payload)),
                other => panic!("unexpected opcode {other}"),
            }
        }
        pings
    };
    let ((), pings) = tokio::join!(publish, read);
    assert!(pings >= 2, "a reader that never speaks must be pinged on a busy line ({pings} pings)");
}

#[tokio::test]
async fn a_websocket_on_a_long_interval_is_not_cut_at_heartbeat_timeout() {
    let server = TestServer::start(|c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_min = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(300);
    })
    .await;
    // Pinged once a second, it answers only then: silent three times `heartbeat_timeout`.
    let (mut conn, _) = upgrade(&server, "/sub/slow?heartbeat=1").await;
    let (_, opcode, payload) = conn.ws_frame_within(Duration::from_secs(3)).await.expect("a ping");
    assert_eq!(opcode, PING);
    conn.ws_send(PONG, &payload).await;
    let (_, opcode, _) = conn.ws_frame_within(Duration::from_secs(3)).await.expect("a second ping");
    assert_eq!(opcode, PING, "kept for its own interval");
    // And a peer that stops answering is still cut, at two of its intervals.
    let started = Instant::now();
    loop {
        let (_, opcode, payload) = conn.ws_frame_within(Duration::from_secs(5)).await.expect("a close");
        if opcode == CLOSE {
            let text = String::from_utf8_lossy(&payload[2..]).to_string();
            assert!(text.contains("heartbeat_timeout"), "{text}");
            break;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}
