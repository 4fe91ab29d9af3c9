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
