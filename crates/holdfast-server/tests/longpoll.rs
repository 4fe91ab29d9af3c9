//! Held long polls, over real sockets: a long poll with nothing to answer waits in a push shard
//! (no task, no timer of its own) and is answered from there by a publish, by
//! `longpoll_timeout`, by a delete, by `POST /admin/disconnect` and by shutdown; its connection
//! then goes back to keep-alive (the parking lot) and serves the next request.

use std::time::{Duration, Instant};

use holdfast_testkit::{RawConn, TestServer};

const GET: &str = "HTTP/1.1\r\nHost: t\r\n";

/// Starts a long poll on `conn` and waits until the server holds it.
async fn hold(server: &TestServer, conn: &mut RawConn, target: &str, channel: &str, held: u64) {
    conn.send(format!("GET {target} {GET}\r\n").as_bytes()).await;
    server.wait_for_subscribers(channel, held).await;
}

async fn cursor_now(server: &TestServer, channel: &str) -> String {
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/{channel}?transport=poll {GET}\r\n").as_bytes()).await;
    conn.response().await.json()["cursor"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_publish_answers_a_held_poll_and_the_connection_serves_the_next_request() {
    let server = TestServer::start(|c| c.park_after = Duration::from_millis(50)).await;
    let cursor = cursor_now(&server, "p").await;
    let mut conn = server.connect().await;
    hold(&server, &mut conn, &format!("/sub/p?cursor={cursor}"), "p", 1).await;
    assert_eq!(server.stats().await["subscribers"]["longpoll"], 1);
    let id = server.publish("p", None, b"hello").await;
    let answer = conn.response().await;
    assert_eq!(answer.status, 200);
    assert!(answer.header("keep-alive").is_some(), "{:?}", answer.headers);
    assert_eq!(answer.json()["messages"][0]["data"], "hello");
    assert_eq!(answer.json()["cursor"], id.as_str());
    // Back to keep-alive: parked, then the next poll on the same connection is held again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().await["connections_parked"] != 1 {
        assert!(Instant::now() < deadline, "the answered connection was not parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hold(&server, &mut conn, &format!("/sub/p?cursor={id}"), "p", 1).await;
    server.publish("p", None, b"again").await;
    assert_eq!(conn.response().await.json()["messages"][0]["data"], "again");
    let stats = server.stats().await;
    assert_eq!(stats["subscribers"]["longpoll"], 0);
    assert_eq!(stats["requests_reused"], 1, "{stats}");
}

#[tokio::test]
async fn longpoll_timeout_answers_from_the_shard_on_time_and_keeps_the_connection() {
    let server = TestServer::start(|c| c.longpoll_timeout = Duration::from_millis(300)).await;
    let cursor = cursor_now(&server, "t").await;
    let mut conn = server.connect().await;
    let started = Instant::now();
    conn.send(format!("GET /sub/t?cursor={cursor} {GET}\r\n").as_bytes()).await;
    let answer = conn.response().await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(290) && waited < Duration::from_millis(1500), "{waited:?}");
    assert_eq!(answer.json()["messages"], serde_json::json!([]));
    assert_eq!(answer.json()["cursor"], cursor.as_str());
    conn.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn many_held_polls_time_out_in_order_and_a_publish_answers_the_rest() {
    let server = TestServer::start(|c| c.longpoll_timeout = Duration::from_millis(400)).await;
    let cursor = cursor_now(&server, "m").await;
    let mut early = Vec::new();
    for _ in 0..20 {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/m?cursor={cursor} {GET}\r\n").as_bytes()).await;
        early.push(conn);
    }
    server.wait_for_subscribers("m", 20).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = Vec::new();
    for _ in 0..20 {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/m?cursor={cursor} {GET}\r\n").as_bytes()).await;
        late.push(conn);
    }
    server.wait_for_subscribers("m", 40).await;
    for conn in &mut early {
        assert_eq!(conn.response().await.json()["messages"], serde_json::json!([]));
    }
    server.wait_for_subscribers("m", 20).await;
    server.publish("m", None, b"for the late ones").await;
    for conn in &mut late {
        assert_eq!(conn.response().await.json()["messages"][0]["data"], "for the late ones");
    }
}

#[tokio::test]
async fn a_delete_answers_held_polls_with_the_deleted_channel() {
    let server = TestServer::start(|_| {}).await;
    server.publish("d", None, b"x").await;
    let cursor = cursor_now(&server, "d").await;
    let mut conn = server.connect().await;
    hold(&server, &mut conn, &format!("/sub/d?cursor={cursor}"), "d", 1).await;
    let mut delete = server.connect().await;
    delete.send(format!("DELETE /pub/d {GET}\r\n").as_bytes()).await;
    assert_eq!(delete.response().await.status, 200);
    let answer = conn.response().await;
    assert_eq!(answer.json()["deleted"], serde_json::json!(["d"]));
    conn.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200);
}

#[tokio::test]
async fn admin_disconnect_answers_held_polls_and_closes_them() {
    let server = TestServer::start(|_| {}).await;
    let mut conn = server.connect().await;
    hold(&server, &mut conn, "/sub/a", "a", 1).await;
    let mut admin = server.connect().await;
    admin.send(format!("POST /admin/disconnect?channel=a {GET}Content-Length: 0\r\n\r\n").as_bytes()).await;
    assert_eq!(admin.response().await.status, 200);
    let answer = conn.response().await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.json()["messages"], serde_json::json!([]));
    conn.assert_closed().await;
}

#[tokio::test]
async fn shutdown_answers_held_polls_with_connection_close() {
    let mut server = TestServer::start(|_| {}).await;
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut conn = server.connect().await;
        conn.send(format!("GET /sub/s {GET}\r\n").as_bytes()).await;
        conns.push(conn);
    }
    server.wait_for_subscribers("s", 5).await;
    let took = server.stop().await;
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    for conn in &mut conns {
        let answer = conn.response().await;
        assert_eq!(answer.header("connection"), Some("close"));
        assert_eq!(answer.json()["messages"], serde_json::json!([]));
    }
}

#[tokio::test]
async fn a_request_pipelined_behind_a_held_poll_is_served_after_its_answer() {
    let server = TestServer::start(|c| c.longpoll_timeout = Duration::from_millis(300)).await;
    let cursor = cursor_now(&server, "pp").await;
    let mut conn = server.connect().await;
    // Sent apart, so the poll is handed to the shard before the next request arrives.
    hold(&server, &mut conn, &format!("/sub/pp?cursor={cursor}"), "pp", 1).await;
    conn.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.publish("pp", None, b"first").await;
    assert_eq!(conn.response().await.json()["messages"][0]["data"], "first");
    assert_eq!(conn.response().await.text(), "ok\n");
}

#[tokio::test]
async fn a_held_poll_on_http10_without_keepalive_closes_after_its_answer() {
    let server = TestServer::start(|_| {}).await;
    let cursor = cursor_now(&server, "h10").await;
    let mut conn = server.connect().await;
    conn.send(format!("GET /sub/h10?cursor={cursor} HTTP/1.0\r\n\r\n").as_bytes()).await;
    server.wait_for_subscribers("h10", 1).await;
    server.publish("h10", None, b"old client").await;
    let answer = conn.response().await;
    assert_eq!(answer.json()["messages"][0]["data"], "old client");
    conn.assert_closed().await;
    assert!(server.stats().await["closed"]["not_persistent"].as_u64().unwrap() >= 1);
}

// ---- A long-poll client's next polls are served in the shard, on the same connection ----

/// Sends a long poll on `conn` and reads its answer after `publish` (if any) is published.
async fn poll_once(server: &TestServer, conn: &mut RawConn, channel: &str, cursor: &str, publish: &[u8]) -> String {
    conn.send(format!("GET /sub/{channel}?cursor={cursor} {GET}\r\n").as_bytes()).await;
    if !publish.is_empty() {
        server.wait_for_subscribers(channel, 1).await;
        server.publish(channel, None, publish).await;
    }
    let answer = conn.response().await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    if !publish.is_empty() {
        assert_eq!(body["messages"][0]["data"], String::from_utf8_lossy(publish).as_ref(), "{body}");
    }
    body["cursor"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_long_poll_client_polls_again_and_again_on_one_connection_without_loss() {
    // park_after is long: between polls the connection waits in the shard, not the parking lot.
    let server = TestServer::start(|c| c.park_after = Duration::from_secs(5)).await;
    let mut cursor = cursor_now(&server, "cycle").await;
    let mut conn = server.connect().await;
    for i in 0..20 {
        cursor = poll_once(&server, &mut conn, "cycle", &cursor, format!("m{i}").as_bytes()).await;
        // Answered: it no longer counts as a held long poll.
        let stats = server.stats().await;
        assert_eq!(stats["subscribers"]["longpoll"], 0, "after answer {i}: {stats}");
    }
    // A cursor behind the history is answered at once (no hold), from the shard too.
    server.publish("cycle", None, b"x1").await;
    server.publish("cycle", None, b"x2").await;
    conn.send(format!("GET /sub/cycle?cursor={cursor} {GET}\r\n").as_bytes()).await;
    let body = conn.response().await.json();
    let data: Vec<_> = body["messages"].as_array().unwrap().iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, vec!["x1", "x2"], "{body}");
    let stats = server.stats().await;
    assert_eq!(stats["requests_reused"], 20, "every poll after the first (21 in all) reused the connection: {stats}");
    assert_eq!(stats["connections_parked"], 0, "{stats}");
}

#[tokio::test]
async fn after_a_long_poll_other_requests_and_pipelined_polls_are_served_in_order() {
    let server = TestServer::start(|c| c.park_after = Duration::from_secs(5)).await;
    let cursor = cursor_now(&server, "mix").await;
    let mut conn = server.connect().await;
    let cursor = poll_once(&server, &mut conn, "mix", &cursor, b"one").await;
    // Not a long poll: the runtime serves it (the shard hands the connection over unread).
    conn.send(format!("GET /healthz {GET}\r\n").as_bytes()).await;
    assert_eq!(conn.response().await.status, 200);
    // Back in the shard with a poll, then three pipelined: two polls answered at once (their
    // cursors are behind) and a publish, all in order.
    let cursor = poll_once(&server, &mut conn, "mix", &cursor, b"two").await;
    server.publish("mix", None, b"three").await;
    let pipelined = format!(
        "GET /sub/mix?cursor={cursor} {GET}\r\nGET /sub/mix?transport=poll {GET}\r\nPOST /pub/mix {GET}Content-Length: 4\r\n\r\nfour"
    );
    conn.send(pipelined.as_bytes()).await;
    // Promptly: the requests behind the first are in the socket already, no new readiness comes
    // for them (park_after is 5 s here; they must not wait for it).
    let prompt = Duration::from_secs(2);
    for expected in ["three", "[]", "mix"] {
        let body = tokio::time::timeout(prompt, conn.response()).await.expect("answered promptly").json();
        match expected {
            "three" => assert_eq!(body["messages"][0]["data"], "three"),
            "[]" => assert_eq!(body["messages"], serde_json::json!([])),
            _ => assert_eq!(body["channel"], "mix"),
        }
    }
    // A bad poll is refused by the runtime's full handling, with the reason.
    conn.send(format!("GET /sub/mix?cursor=%%% {GET}\r\n").as_bytes()).await;
    assert_eq!(conn.response().await.status, 400);
}

#[tokio::test]
async fn a_connection_waiting_for_its_next_poll_is_parked_after_park_after_and_closes_cleanly() {
    let server = TestServer::start(|c| c.park_after = Duration::from_millis(100)).await;
    let cursor = cursor_now(&server, "idle").await;
    let mut conn = server.connect().await;
    let cursor = poll_once(&server, &mut conn, "idle", &cursor, b"a").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().await["connections_parked"] != 1 {
        assert!(Instant::now() < deadline, "the waiting connection was not parked");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From the parking lot it comes back for the next poll, which the shard holds again.
    poll_once(&server, &mut conn, "idle", &cursor, b"b").await;
    // A client that leaves while its connection waits in the shard is closed and counted.
    let before = server.stats().await["connections_open"].as_u64().unwrap();
    let mut other = server.connect().await;
    let c2 = cursor_now(&server, "idle").await;
    poll_once(&server, &mut other, "idle", &c2, b"c").await;
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().await["connections_open"].as_u64().unwrap() > before {
        assert!(Instant::now() < deadline, "the closed client's connection is still counted open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_request_cap_closes_a_shard_served_long_poll_connection() {
    let server = TestServer::start(|c| {
        c.park_after = Duration::from_secs(5);
        c.keepalive_requests = 3;
    })
    .await;
    let mut cursor = cursor_now(&server, "cap").await;
    let mut conn = server.connect().await;
    for i in 0..3 {
        conn.send(format!("GET /sub/cap?cursor={cursor} {GET}\r\n").as_bytes()).await;
        server.wait_for_subscribers("cap", 1).await;
        server.publish("cap", None, b"m").await;
        let answer = conn.response().await;
        cursor = answer.json()["cursor"].as_str().unwrap().to_string();
        let closes = answer.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        assert_eq!(closes, i == 2, "request {}: {:?}", i + 1, answer.headers);
    }
    conn.assert_closed().await;
}

#[tokio::test]
async fn polls_answered_before_their_deadline_do_not_pile_up_in_the_shard() {
    // Each poll is answered by a publish long before its 60 s deadline, and its connection waits
    // in the shard for the next one: both leave a deadline behind each time. Before, every one
    // stayed queued until due (here 2 × 4 × 150 = 1,200), so the queues grew with the rate of
    // polls times the timeout; now they hold at most twice the subscribers plus 64 each.
    let server = TestServer::start(|c| {
        c.push_threads = 1;
        c.longpoll_timeout = Duration::from_secs(60);
        c.park_after = Duration::from_secs(60);
    })
    .await;
    let mut cursor = cursor_now(&server, "rate").await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(server.connect().await);
    }
    let mut most = 0;
    for round in 0..150 {
        for conn in conns.iter_mut() {
            conn.send(format!("GET /sub/rate?cursor={cursor} {GET}\r\n").as_bytes()).await;
        }
        server.wait_for_subscribers("rate", 4).await;
        let id = server.publish("rate", None, format!("m{round}").as_bytes()).await;
        for conn in conns.iter_mut() {
            let body = conn.response().await.json();
            assert_eq!(body["messages"][0]["data"], format!("m{round}"), "{body}");
        }
        cursor = id;
        if round % 10 == 9 {
            let queued = server.stats().await["push_deadlines"].as_u64().unwrap();
            most = most.max(queued);
        }
    }
    assert!(most > 0, "push_deadlines counts the queued deadlines");
    assert!(most <= 2 * (2 * 4 + 64), "{most} deadlines queued for 4 connections");
    // Held again: their deadlines are there, and the timeout still answers them.
    for conn in conns.iter_mut() {
        conn.send(format!("GET /sub/rate?cursor={cursor} {GET}\r\n").as_bytes()).await;
    }
    server.wait_for_subscribers("rate", 4).await;
    assert!(server.stats().await["push_deadlines"].as_u64().unwrap() >= 4);
}
