//! Memory on the publish side, over real sockets: channels whose history expired are dropped
//! (unless a subscriber holds them) and `/admin/stats` and `/metrics` show what channels cost;
//! `max_channels` refuses new channels with 503 and a reason.

use std::time::{Duration, Instant};

use holdfast_testkit::{RawConn, RawResponse, TestServer};

/// Publishes one small message on a keep-alive connection.
async fn publish_on(conn: &mut RawConn, channel: &str) -> RawResponse {
    conn.send(format!("POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx").as_bytes()).await;
    conn.response().await
}

/// Publishes one message to each of `count` channels named `{prefix}{i}`, over `connections`
/// keep-alive connections at once.
async fn publish_to_many(server: &TestServer, prefix: &str, count: usize, connections: usize) {
    let mut tasks = Vec::new();
    for worker in 0..connections {
        let mut conn = server.connect().await;
        let prefix = prefix.to_string();
        tasks.push(tokio::spawn(async move {
            for i in (worker..count).step_by(connections) {
                let response = publish_on(&mut conn, &format!("{prefix}{i}")).await;
                assert_eq!(response.status, 200, "{}", response.text());
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher panicked");
    }
}

fn stat(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap_or_else(|| panic!("no {name} in {stats}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_whose_history_expired_are_dropped_unless_subscribed() {
    const CHANNELS: usize = 20_000;
    let server = TestServer::start(|c| {
        c.history_seconds = Duration::from_secs(1);
        c.keepalive_requests = CHANNELS as u32;
    })
    .await;
    let empty = server.stats().await;
    assert_eq!(stat(&empty, "channels"), 0);
    let empty_bytes = stat(&empty, "channel_bytes");

    // A subscriber holds one channel: it stays while subscribed, whatever its history.
    let mut subscriber = server.connect().await;
    subscriber.send(b"GET /sub/kept HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").await;
    assert_eq!(subscriber.stream_head().await.status, 200);
    server.wait_for_subscribers("kept", 1).await;
    server.publish("kept", None, b"soon expired").await;

    publish_to_many(&server, "c", CHANNELS, 8).await;
    // The first channels may have expired already if publishing took more than a second.
    let full = server.stats().await;
    assert_eq!(stat(&full, "messages_published"), CHANNELS as u64 + 1);
    let channels = stat(&full, "channels");
    assert!(channels > 1, "{full}");
    let full_bytes = stat(&full, "channel_bytes");
    assert!(full_bytes > empty_bytes + channels * 100, "{full_bytes} B for {channels} channels");
    assert!(stat(&full, "history_bytes") > 0);

    // history_seconds = 1 and expiry every second: gone within about 2 s of the last publish.
    let deadline = Instant::now() + Duration::from_secs(6);
    let drained = loop {
        let stats = server.stats().await;
        if stat(&stats, "channels") <= 1 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stat(&drained, "channels"), 1, "only the subscribed channel is left: {drained}");
    assert_eq!(stat(&drained, "history_bytes"), 0);
    let left = stat(&drained, "channel_bytes");
    assert!(left < empty_bytes + 16 * 1024, "{left} B left of {full_bytes} (empty: {empty_bytes})");

    // The subscribed channel is still the same one: its subscriber hears the next publish.
    server.publish("kept", None, b"still here").await;
    let mut received = String::new();
    while !received.contains("data: still here") {
        received.push_str(&String::from_utf8(subscriber.next_chunk().await).unwrap());
    }

    // /metrics carries the same figures.
    let mut conn = server.connect().await;
    conn.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let metrics = conn.response().await.text();
    assert!(metrics.contains("\nholdfast_channels 1\n"), "{metrics}");
    assert!(metrics.contains("\nholdfast_channel_bytes "), "{metrics}");
}

#[tokio::test]
async fn beyond_max_channels_new_channels_get_503_with_a_reason() {
    let server = TestServer::start(|c| c.max_channels = 10).await;
    let mut conn = server.connect().await;
    for i in 0..10 {
        assert_eq!(publish_on(&mut conn, &format!("c{i}")).await.status, 200);
    }

    let refused = publish_on(&mut conn, "c10").await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    let body = refused.json();
    assert_eq!(body["error"], "too_many_channels");
    assert!(body["reason"].as_str().unwrap().contains("max_channels"), "{body}");

    // A subscribe to a new channel is refused the same way, before any stream starts.
    conn.send(b"GET /sub/c10 HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n").await;
    let refused = conn.response().await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.json()["error"], "too_many_channels");
    conn.send(b"GET /sub/c10?transport=poll HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 503);

    // Existing channels are served as before, on the same connection.
    assert_eq!(publish_on(&mut conn, "c3").await.status, 200);
    conn.send(b"GET /sub/c3?transport=poll HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(conn.response().await.status, 200);
    assert_eq!(stat(&server.stats().await, "channels"), 10);
}

/// The next text frame as JSON (server pings skipped).
async fn ws_json(conn: &mut RawConn) -> serde_json::Value {
    loop {
        let (_, opcode, payload) = conn.ws_frame().await;
        if opcode == 0x1 {
            return serde_json::from_slice(&payload).unwrap();
        }
    }
}

#[tokio::test]
async fn beyond_max_channels_websocket_ops_get_an_error_and_keep_their_subscription() {
    let server = TestServer::start(|c| {
        c.max_channels = 2;
        c.ws_client_publish = true;
    })
    .await;
    let mut conn = server.connect().await;
    conn.send(holdfast_testkit::ws_upgrade_request("/sub/a", "").as_bytes()).await;
    assert_eq!(conn.stream_head().await.status, 101);
    server.publish("b", None, b"x").await;

    let op = serde_json::json!({"op": "subscribe", "channels": ["b", "c"]});
    conn.ws_send(0x1, op.to_string().as_bytes()).await;
    let refused = ws_json(&mut conn).await;
    assert_eq!((refused["op"].as_str(), refused["code"].as_str()), (Some("error"), Some("too_many_channels")));
    let op = serde_json::json!({"op": "publish", "channel": "c", "data": "x"});
    conn.ws_send(0x1, op.to_string().as_bytes()).await;
    assert_eq!(ws_json(&mut conn).await["code"], "too_many_channels");

    // The refused op changed nothing: still subscribed to "a" alone.
    server.publish("b", None, b"not subscribed").await;
    server.publish("a", None, b"still here").await;
    assert_eq!(ws_json(&mut conn).await["data"], "still here");
}
