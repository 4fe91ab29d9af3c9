//! The connection cap (503 with Retry-After beyond it, recovery when clients leave) and graceful
//! shutdown (idle connections closed at once, in-flight requests finished, a bounded drain).

use std::time::Duration;

use holdfast_testkit::{RawConn, TestServer};

async fn healthz_status(server: &TestServer) -> (u16, Option<String>) {
    let mut conn = server.connect().await;
    conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let response = conn.response().await;
    (response.status, response.header("retry-after").map(str::to_string))
}

#[tokio::test]
async fn beyond_max_connections_clients_get_503_and_the_server_recovers() {
    let server = TestServer::start(|c| c.max_connections = 5).await;
    let mut held: Vec<RawConn> = Vec::new();
    for _ in 0..5 {
        let mut conn = server.connect().await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(conn.response().await.status, 200);
        held.push(conn);
    }
    for _ in 0..3 {
        let (status, retry_after) = healthz_status(&server).await;
        assert_eq!(status, 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
    // The held connections are unaffected.
    for conn in &mut held {
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(conn.response().await.status, 200);
    }
    // Two clients leave: new ones are served again once their closes are counted.
    held.truncate(3);
    let deadline = std::time::Instant::now() + holdfast_testkit::IO_TIMEOUT;
    loop {
        let (status, _) = healthz_status(&server).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "server did not recover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = server.stats().await;
    assert!(stats["closed"]["over_capacity"].as_u64().unwrap() >= 3, "{stats}");
}

#[tokio::test]
async fn shutdown_closes_idle_connections_at_once_and_finishes_in_flight_requests() {
    let mut server = TestServer::start(|c| {
        c.enable_conformance_echo = true;
        c.park_after = Duration::from_millis(50);
        c.shutdown_timeout = Duration::from_secs(5);
    })
    .await;
    // Idle connections: some parked by now, one still in the runtime.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut conn = server.connect().await;
        conn.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        conn.response().await;
        idle.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fresh = server.connect().await;
    let mut in_flight = server.connect().await;
    send_head_of_upload(&mut in_flight).await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stop = tokio::spawn(async move {
        let took = server.stop().await;
        (server, took)
    });
    for conn in &mut idle {
        assert!(conn.closes_within(Duration::from_secs(1)).await, "idle connection not closed at once");
    }
    assert!(fresh.closes_within(Duration::from_secs(1)).await, "silent new connection not closed at once");
    // The request in flight completes, and its response says close.
    in_flight.send(b"lo").await;
    let response = in_flight.response().await;
    assert_eq!((response.status, response.text().as_str()), (200, "hello"));
    assert_eq!(response.header("connection"), Some("close"));
    in_flight.assert_closed().await;
    drop(in_flight);
    let (_server, took) = stop.await.unwrap();
    assert!(took < Duration::from_secs(4), "drain took {took:?}");
}

/// Starts a 5-byte upload and sends 3 bytes of it.
async fn send_head_of_upload(conn: &mut RawConn) {
    conn.send(b"POST /_conformance/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel").await;
}

#[tokio::test]
async fn shutdown_is_bounded_by_shutdown_timeout() {
    let mut server = TestServer::start(|c| {
        c.enable_conformance_echo = true;
        c.shutdown_timeout = Duration::from_millis(300);
        c.body_timeout = Duration::from_secs(60);
    })
    .await;
    // A body that never completes keeps its connection busy.
    let mut stuck = server.connect().await;
    send_head_of_upload(&mut stuck).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let took = server.stop().await;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(2), "drain took {took:?}");
}

#[tokio::test]
async fn no_new_connections_are_served_after_shutdown() {
    let mut server = TestServer::start(|_| {}).await;
    let addr = server.addr;
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener still accepting");
}
